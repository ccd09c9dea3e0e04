"""finetune/full.py end to end on a tiny model: every weight trains, the output is a checkpoint folder the other
scripts take, a killed run resumes exactly, and 2 DDP or FSDP processes equal 1."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import torch

from helpers import (ROOT, assert_same_losses, csv_losses, finetune_settings, finetune_workspace, kill_at,
                     load_script, script_command)
from lit_gpt.prompts import PROMPT_STYLE_NAME
from lit_gpt.utils import LIT_CONFIG_NAME, LIT_WEIGHTS_NAME

full = load_script("finetune/full.py")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return finetune_workspace(tmp_path_factory.mktemp("full"))


def _settings(workspace: dict[str, Path], out_dir: Path, **overrides) -> dict:
    return finetune_settings(workspace, out_dir, **({"learning_rate": 1e-3} | overrides))


def _train(workspace: dict[str, Path], out_dir: Path, **overrides) -> dict:
    return full.setup(full.Settings(**_settings(workspace, out_dir, **overrides)))


def test_full_finetuning_trains_every_weight_into_a_checkpoint_folder(workspace: dict[str, Path],
                                                                      tmp_path: Path) -> None:
    from lit_gpt.checkpoint import load_model

    out = tmp_path / "out"
    result = _train(workspace, out, max_iters=24)
    history = [m for m in result["history"] if "train_loss" in m]
    assert len(history) == 12 and history[-1]["train_loss"] < 0.9 * history[0]["train_loss"]
    assert result["final_val_loss"] < 0.9 * result["initial_val_loss"]
    for name in (LIT_WEIGHTS_NAME, LIT_CONFIG_NAME, "tokenizer.json", "tokenizer_config.json", PROMPT_STYLE_NAME,
                 "training_state.pt", "metrics.csv", "loss.png"):
        assert (out / name).is_file(), name
    assert json.loads((out / PROMPT_STYLE_NAME).read_text()) == {"prompt_style": "chat"}  # the data's style
    # every weight moved (a tied head is stored once, as the embedding), and the folder loads as a checkpoint
    base, tuned = load_model(workspace["checkpoint"]), load_model(out)
    for (name, before), after in zip(base.state_dict().items(), tuned.state_dict().values(), strict=True):
        assert not torch.equal(before, after), name

    # the folder is a checkpoint for generation, and converts back to Hugging Face with the same logits
    generate = load_script("generate/base.py")
    common = dict(prompt="Name color number 3.", top_k=1, max_new_tokens=8, precision="32-true", prompt_style="chat")
    assert generate.main(out, **common) != generate.main(workspace["checkpoint"], **common)
    transformers = pytest.importorskip("transformers")
    from lit_gpt.convert import convert_lit_checkpoint

    hf_dir = convert_lit_checkpoint(out, tmp_path / "hf")
    hf_model = transformers.AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).eval()
    idx = torch.tensor([[5, 17, 42, 9, 101]])
    with torch.no_grad():
        torch.testing.assert_close(hf_model(idx).logits, tuned.eval()(idx), rtol=1e-4, atol=1e-4)


def test_a_saved_model_folder_makes_generation_and_chat_default_to_its_training_style(
        workspace: dict[str, Path], tmp_path: Path) -> None:
    """The folder full.py writes records the data's prompt style where generate/base.py and chat/base.py look for it,
    and wins over the tokenizer's chat template."""
    from lit_gpt.checkpoint import load_model
    from lit_gpt.finetune import save_model_folder
    from lit_gpt.prompts import default_prompt_style
    from lit_gpt.tokenizer import Tokenizer

    model = load_model(workspace["checkpoint"])
    folder = tmp_path / "tuned"
    save_model_folder(model.state_dict(), model.config, workspace["checkpoint"], folder, "alpaca")
    tokenizer = Tokenizer(folder)
    assert tokenizer.has_chat_template
    assert default_prompt_style(folder, tokenizer, fallback="alpaca")[0] == "alpaca"
    assert default_prompt_style(workspace["checkpoint"], tokenizer)[0] == "chat"

    generate = load_script("generate/base.py")
    common = dict(prompt="Name color number 3.", top_k=1, max_new_tokens=8, precision="32-true")
    assert generate.main(folder, **common) == generate.main(folder, prompt_style="alpaca", **common)
    assert generate.main(folder, prompt_style="chat", **common) == generate.main(workspace["checkpoint"], **common)


def test_full_finetuning_kill_and_resume_equals_uninterrupted(workspace: dict[str, Path], tmp_path: Path) -> None:
    _train(workspace, tmp_path / "whole", max_iters=8, save_interval=1)
    expected = csv_losses(tmp_path / "whole" / "metrics.csv")
    cmd = script_command("finetune/full.py", _settings(workspace, tmp_path / "killed", max_iters=8, save_interval=1))
    kill_at(cmd, "step 2 |")
    resumed = subprocess.run(cmd + ["--resume", "true"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "Resumed from" in resumed.stdout
    actual = csv_losses(tmp_path / "killed" / "metrics.csv")
    assert len(expected) == 4 and actual.keys() == expected.keys()
    for step in expected:
        assert actual[step] == pytest.approx(expected[step], abs=1e-6), step
    from safetensors.torch import load_file

    whole, killed = (load_file(tmp_path / run / LIT_WEIGHTS_NAME) for run in ("whole", "killed"))
    for name in whole:
        torch.testing.assert_close(killed[name], whole[name], rtol=0, atol=1e-6)


def test_full_finetuning_ddp_two_processes_equals_one(workspace: dict[str, Path], tmp_path: Path) -> None:
    """Unlike LoRA's adapters, every weight is synchronised by DDP here: the same per-step losses as 1 process."""
    _train(workspace, tmp_path / "one", max_iters=8)
    cmd = script_command("finetune/full.py", _settings(workspace, tmp_path / "two", micro_batch_size=1, max_iters=8,
                                                       devices=2, strategy="ddp"))
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert_same_losses(tmp_path / "one", tmp_path / "two", {"train_loss": 4})


def test_full_finetuning_fsdp_two_processes_equals_one_and_resumes(workspace: dict[str, Path], tmp_path: Path) -> None:
    """Every weight sharded over 2 CPU processes (gloo), killed after a checkpoint and resumed under FSDP: the per-step
    losses and final weights of 1 process with the same global batch."""
    from safetensors.torch import load_file

    _train(workspace, tmp_path / "one", max_iters=8, eval_interval=2)
    cmd = script_command("finetune/full.py", _settings(workspace, tmp_path / "two", micro_batch_size=1, max_iters=8,
                                                       eval_interval=2, save_interval=1, devices=2, strategy="fsdp"))
    kill_at(cmd, "step 3 |")
    resumed = subprocess.run(cmd + ["--resume", "true"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "Resumed from" in resumed.stdout
    assert_same_losses(tmp_path / "one", tmp_path / "two", {"train_loss": 4, "val_loss": 3})
    one, two = (load_file(tmp_path / run / LIT_WEIGHTS_NAME) for run in ("one", "two"))
    assert one.keys() == two.keys()
    for name in one:
        torch.testing.assert_close(two[name], one[name], rtol=1e-4, atol=1e-6, msg=lambda m: f"{name}: {m}")
