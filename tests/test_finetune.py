"""finetune/lora.py end to end on a tiny model (its pieces: test_batching.py, test_training.py, test_packing.py)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from helpers import (ROOT, assert_same_losses, csv_losses, finetune_settings, finetune_workspace, kill_at,
                     load_script, script_command)
from prepare_helpers import tiny_bpe_checkpoint

finetune = load_script("finetune/lora.py")
generate_script = load_script("generate/base.py")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return finetune_workspace(tmp_path_factory.mktemp("finetune"))


def _settings(workspace: dict[str, Path], out_dir: Path, **overrides) -> dict:
    return finetune_settings(workspace, out_dir, **({"lora_dropout": 0.1} | overrides))


def _train(workspace: dict[str, Path], out_dir: Path, **overrides) -> dict:
    return finetune.setup(finetune.Settings(**_settings(workspace, out_dir, **overrides)))


def _command(workspace: dict[str, Path], out_dir: Path, **overrides) -> list[str]:
    """`python finetune/lora.py ...` with the same settings, for runs in processes of their own."""
    return script_command("finetune/lora.py", _settings(workspace, out_dir, **overrides))


def test_finetune_end_to_end(workspace: dict[str, Path], tmp_path: Path) -> None:
    result = _train(workspace, tmp_path / "out", max_iters=40, lora_mlp=True, learning_rate=1e-2)
    history = [m for m in result["history"] if "train_loss" in m]
    assert len(history) == 20  # 40 micro-batch iterations / 2 accumulated per step
    assert history[-1]["train_loss"] < 0.9 * history[0]["train_loss"]
    assert result["final_val_loss"] < 0.9 * result["initial_val_loss"]
    for name in ("lit_lora.safetensors", "training_state.pt", "loss.png", "metrics.csv"):
        assert (tmp_path / "out" / name).is_file(), name
    assert list((tmp_path / "out" / "logs").glob("events.out.tfevents.*"))  # TensorBoard
    assert set(csv_losses(tmp_path / "out" / "metrics.csv")) == set(range(1, 21))
    # the schedule decayed towards its minimum (0), without spending the last step at it
    assert 0 < history[-1]["lr"] < 0.01 * max(m["lr"] for m in history)

    # generation with the adapter reads its hyperparameters and prompt style from the file, and applies the adapter:
    # the base model, given the same prompt in the same style, answers otherwise
    from lit_gpt.lora import read_lora_metadata

    adapter = tmp_path / "out" / "lit_lora.safetensors"
    common = dict(prompt="Name color number 3.", top_k=1, max_new_tokens=8, precision="32-true")
    tuned = generate_script.main(workspace["checkpoint"], lora_path=adapter, **common)
    base = generate_script.main(workspace["checkpoint"], prompt_style=read_lora_metadata(adapter)["prompt_style"],
                                **common)
    assert len(tuned) == len(base) == 1 and tuned != base, (tuned, base)


def test_kill_and_resume_equals_uninterrupted(workspace: dict[str, Path], tmp_path: Path) -> None:
    """SIGKILL a run after a checkpoint, resume it: every step's loss equals an uninterrupted run's (CPU, fp32)."""
    _train(workspace, tmp_path / "full", save_interval=1)
    expected = csv_losses(tmp_path / "full" / "metrics.csv")

    cmd = _command(workspace, tmp_path / "killed", save_interval=1)
    kill_at(cmd, "step 5 |")
    resumed = subprocess.run(cmd + ["--resume", "true"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert "Resumed from" in resumed.stdout
    actual = csv_losses(tmp_path / "killed" / "metrics.csv")
    assert actual.keys() == expected.keys()
    for step in expected:
        assert actual[step] == pytest.approx(expected[step], abs=1e-6), step


def test_ddp_two_processes_equals_one(workspace: dict[str, Path], tmp_path: Path) -> None:
    """2 CPU processes (gloo) with the same global batch give the per-step losses of 1 process."""
    _train(workspace, tmp_path / "one", max_iters=8, lora_dropout=0.0)
    cmd = _command(workspace, tmp_path / "two", micro_batch_size=1, max_iters=8, lora_dropout=0.0, devices=2,
                   strategy="ddp")
    # 2 devices x 2 micro-batches of 1 is the same 4-example global batch as 1 device x 2 micro-batches of 2
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert_same_losses(tmp_path / "one", tmp_path / "two", {"train_loss": 4})


def test_ddp_kill_and_resume_with_dropout_equals_uninterrupted(workspace: dict[str, Path], tmp_path: Path) -> None:
    """With dropout each rank draws its own masks, for batches of its own shapes: each resumes its own random
    state, so a killed and resumed 2-process run logs the losses of an uninterrupted one."""
    def cmd(out: str) -> list[str]:
        return _command(workspace, tmp_path / out, micro_batch_size=1, max_iters=8, lora_dropout=0.3,
                        eval_interval=100, eval_iters=1, save_interval=1, devices=2, strategy="ddp")

    full = subprocess.run(cmd("full"), cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert full.returncode == 0, full.stderr[-2000:]
    kill_at(cmd("killed"), "step 2 |")
    resumed = subprocess.run(cmd("killed") + ["--resume", "true"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert_same_losses(tmp_path / "full", tmp_path / "killed", {"train_loss": 4}, tolerance=1e-6)


def test_fsdp_two_processes_equals_one_and_resumes(workspace: dict[str, Path], tmp_path: Path) -> None:
    """FSDP over 2 CPU processes (gloo), killed after a checkpoint and resumed under FSDP: the per-step training and
    validation losses and the adapter of 1 process with the same global batch."""
    from lit_gpt.checkpoint import load_model
    from lit_gpt.lora import load_lora, load_lora_into, lora_state_dict

    _train(workspace, tmp_path / "one", max_iters=8, lora_dropout=0.0, eval_interval=2)
    cmd = _command(workspace, tmp_path / "two", micro_batch_size=1, max_iters=8, lora_dropout=0.0, eval_interval=2,
                   save_interval=1, devices=2, strategy="fsdp")
    # 4 steps: validation and a sample generated by both ranks at step 2, training on after it; killed after step 3
    # (resumed from step 2 or 3)
    kill_at(cmd, "step 3 |")
    resumed = subprocess.run(cmd + ["--resume", "true"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "Resumed from" in resumed.stdout
    assert_same_losses(tmp_path / "one", tmp_path / "two", {"train_loss": 4, "val_loss": 3})

    model = load_model(workspace["checkpoint"])
    load_lora_into(model, tmp_path / "two" / "lit_lora.safetensors")  # the names and shapes of this model's adapter
    expected = load_lora(tmp_path / "one" / "lit_lora.safetensors")[1]
    loaded = lora_state_dict(model)
    assert loaded.keys() == expected.keys()
    for name in expected:
        torch.testing.assert_close(loaded[name], expected[name], rtol=1e-4, atol=1e-6, msg=lambda m: f"{name}: {m}")


def test_qlora_nf4_trains_on_cpu(workspace: dict[str, Path], tmp_path: Path) -> None:
    pytest.importorskip("bitsandbytes")
    result = _train(workspace, tmp_path / "qlora", quantize="bnb.nf4", max_iters=40, learning_rate=1e-2,
                    lora_mlp=True, lora_dropout=0.0)
    losses = [m["train_loss"] for m in result["history"] if "train_loss" in m]
    assert losses[-1] < 0.9 * losses[0]
    assert result["final_val_loss"] < 0.9 * result["initial_val_loss"]


def test_bad_inputs_are_one_line_errors(workspace: dict[str, Path], tmp_path: Path) -> None:
    base = [sys.executable, "finetune/lora.py", "--checkpoint_dir", str(workspace["checkpoint"])]
    cases = [
        (["--data_dir", str(tmp_path / "missing")], "data folder"),
        (["--data_dir", str(workspace["data"]), "--batch_size", "3", "--micro_batch_size", "2"], "must be a multiple"),
        (["--data_dir", str(workspace["data"]), "--lora_query", "false", "--lora_value", "false"], "no LoRA target"),
        (["--data_dir", str(workspace["data"]), "--out_dir", str(tmp_path / "o"), "--resume", "true"],
         "does not exist"),
        (["--data_dir", str(workspace["data"]), "--strategy", "fsdp", "--quantize", "bnb.nf4"],
         "does not work with --strategy fsdp"),
        (["--data_dir", str(workspace["data"]), "--out_dir", str(tmp_path / "o"), "--max_iters", "5"],
         "--max_iters 5 is less than one optimizer step: max_iters x micro_batch_size x devices / batch_size = "
         "5 x 1 x 1 / 16 = 0.31 steps"),
    ]
    for args, message in cases:
        result = subprocess.run(base + args, cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert result.returncode == 1, result.stderr
        assert message in result.stderr and "Traceback" not in result.stderr


def test_data_for_another_tokenizer_is_refused(workspace: dict[str, Path], tmp_path: Path) -> None:
    other = tiny_bpe_checkpoint(tmp_path / "other", bos=True)
    for name in ("lit_config.json", "lit_model.safetensors"):
        (other / name).write_bytes((workspace["checkpoint"] / name).read_bytes())
    from lit_gpt.utils import UserError

    with pytest.raises(UserError, match="tokenizer"):
        _train({**workspace, "checkpoint": other}, tmp_path / "out")


def test_resume_refuses_other_lora_settings(workspace: dict[str, Path], tmp_path: Path) -> None:
    from lit_gpt.utils import UserError

    _train(workspace, tmp_path / "out", max_iters=4)
    with pytest.raises(UserError, match="trained with lora_r 8, this run has 4; resume with the same lora_r"):
        _train(workspace, tmp_path / "out", max_iters=4, lora_r=4, resume=True)


def test_every_epoch_saves_an_adapter_and_answers_the_dev_prompts(workspace: dict[str, Path], tmp_path: Path) -> None:
    prompts = tmp_path / "dev.json"
    prompts.write_text(json.dumps(["Name color number 3.", "Name color number 7."]))
    # 32 training examples, 8 per step: an epoch every 4 steps
    result = _train(workspace, tmp_path / "out", max_iters=None, epochs=3, batch_size=8, micro_batch_size=8,
                    eval_interval=1000, dev_prompts=prompts, order="length")
    out = tmp_path / "out"
    records = [json.loads(line) for line in (out / "dev_generations.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2, 3] and [r["step"] for r in records] == [4, 8, 12]
    assert all(set(r["answers"]) == {"Name color number 3.", "Name color number 7."} for r in records)
    assert all((out / f"epoch-{e}" / "lit_lora.safetensors").is_file() for e in (1, 2, 3))
    markdown = (out / "dev_generations.md").read_text()
    assert "## 2. Name color number 7." in markdown and markdown.count("| 3 |") == 3
    assert result["steps"] == 12


def test_epochs_end_exactly(workspace: dict[str, Path], tmp_path: Path) -> None:
    """2 epochs of 32 examples at 6 a step: 11 steps, the last of the 4 examples left; nothing from a third epoch."""
    from lit_gpt.data.dataset import TokenizedDataset

    result = _train(workspace, tmp_path / "out", max_iters=None, epochs=2, batch_size=6, micro_batch_size=2,
                    eval_interval=1000)
    train = TokenizedDataset(workspace["data"], "train", None)
    steps = [m for m in result["history"] if "tokens_real" in m]
    assert len(train) == 32 and result["steps"] == len(steps) == 11
    assert sum(m["tokens_real"] for m in steps) == 2 * int(train.lengths.sum())
    assert steps[-1]["epoch"] == 2.0 and 0 < steps[-1]["lr"] < steps[-2]["lr"]


def test_training_stops_early_when_validation_stops_improving(workspace: dict[str, Path], tmp_path: Path) -> None:
    # learning rate 0: every epoch's validation loss equals the first's, never better, so patience 1 stops the
    # 6-epoch run after epoch 2 (a high learning rate instead makes a chaotic, platform-dependent trajectory)
    result = _train(workspace, tmp_path / "out", max_iters=None, epochs=6, batch_size=8, micro_batch_size=8,
                    eval_interval=1000, learning_rate=0.0, warmup_steps=0, early_stopping_patience=1)
    records = [json.loads(line) for line in (tmp_path / "out" / "dev_generations.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2] and result["steps"] == 8
    assert records[0]["val_loss"] == records[1]["val_loss"]


@pytest.mark.parametrize("lora_head", [False, True], ids=["fused_head", "checkpointed_head"])
def test_packing_and_chunked_head_train_exactly_like_padding(workspace: dict[str, Path], tmp_path: Path,
                                                             lora_head: bool) -> None:
    """Same examples per step, packed and with the head applied in chunks: the same losses, step for step, as
    padded batches with the full logits."""
    common = dict(max_iters=None, epochs=1, eval_iters=8, lora_dropout=0.0, lora_head=lora_head)
    padded = _train(workspace, tmp_path / "padded", **common, packing=False, lm_head_chunk_size=0)
    # packed: micro-batches of one full row each, so no padding at all
    packed = _train(workspace, tmp_path / "packed", **common, packing=True, lm_head_chunk_size=16,
                    override_max_seq_length=128, micro_batch_size=1)
    for a, b in zip(padded["history"], packed["history"], strict=True):
        for key in ("train_loss", "val_loss"):
            if key in a:
                assert b[key] == pytest.approx(a[key], abs=1e-5), (a["step"], key)
        if "tokens_real" in a:
            assert b["tokens_real"] == a["tokens_real"]
    padding = [sum(m["tokens_padded"] - m["tokens_real"] for m in r["history"] if "tokens_real" in m)
               for r in (padded, packed)]
    assert padding[0] > 0 and padding[1] == 0


def test_compiled_model_trains_like_eager(workspace: dict[str, Path], tmp_path: Path) -> None:
    common = dict(max_iters=6, eval_interval=100, lora_dropout=0.0, packing=True, override_max_seq_length=128)
    _train(workspace, tmp_path / "eager", **common)
    _train(workspace, tmp_path / "compiled", **common, compile=True)
    eager, compiled = (csv_losses(tmp_path / name / "metrics.csv") for name in ("eager", "compiled"))
    assert len(eager) == 3 and compiled == pytest.approx(eager, abs=1e-5)


@pytest.mark.parametrize("activation_checkpointing", [False, True], ids=["plain", "checkpointed"])
def test_bf16_true_trains_close_to_float32(workspace: dict[str, Path], tmp_path: Path,
                                           activation_checkpointing: bool) -> None:
    """bf16 weights and activations (the GPU default), on CPU: the fused head takes the bf16 hidden states, and
    the losses follow the float32 run's to bf16 precision."""
    common = dict(max_iters=8, eval_interval=100, lora_dropout=0.0, activation_checkpointing=activation_checkpointing)
    _train(workspace, tmp_path / "fp32", **common)
    _train(workspace, tmp_path / "bf16", **common, precision="bf16-true")
    reference, bf16 = (csv_losses(tmp_path / name / "metrics.csv") for name in ("fp32", "bf16"))
    assert set(bf16) == set(reference) == {1, 2, 3, 4}
    assert bf16 == pytest.approx(reference, rel=2e-2)
    assert bf16 != reference  # it did run in bf16
    from safetensors import safe_open

    with safe_open(tmp_path / "bf16" / "lit_lora.safetensors", "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.bfloat16}
