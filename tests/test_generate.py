"""generate/base.py and chat/base.py default to what a checkpoint was made for; merges carry the adapter's style
and write the dtype asked for; a misspelt flag gets the flag meant."""
from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

from lit_gpt.checkpoint import load_model, load_weights
from lit_gpt.convert import convert_hf_checkpoint, convert_lit_checkpoint
from lit_gpt.export import merge_lora_checkpoint, weights_dtype
from lit_gpt.lora import LoRAConfig, apply_lora, save_lora
from lit_gpt.prompts import PROMPT_STYLE_NAME, default_prompt_style
from lit_gpt.tiny import make_tiny_checkpoint
from lit_gpt.tokenizer import Tokenizer
from lit_gpt.utils import UserError, cli

from prepare_helpers import CHATML

ROOT = Path(__file__).resolve().parents[1]


def _load(path: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(Path(path).stem, ROOT / path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_checkpoint(ROOT / "examples" / "quickstart.json", tmp_path_factory.mktemp("ckpt") / "tiny")


@pytest.fixture(scope="module")
def tiny_chat(tiny: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny checkpoint with a chat template, as an instruction-tuned model has one."""
    folder = tmp_path_factory.mktemp("ckpt") / "tiny-chat"
    shutil.copytree(tiny, folder)
    (folder / "chat_template.jinja").write_text(CHATML)
    return folder


def _adapter(checkpoint_dir: Path, path: Path, prompt_style: str | None) -> Path:
    """An adapter with random B (a zero B would leave the model unchanged), saved as finetune/lora.py saves it."""
    config = LoRAConfig(lora_r=4, lora_alpha=8, lora_dropout=0.0, lora_mlp=True, lora_head=True)
    model = apply_lora(load_model(checkpoint_dir), config)
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.5)
    save_lora(model, config, path, prompt_style)
    return path


def test_default_prompt_style_is_what_the_checkpoint_was_made_for(tiny: Path, tiny_chat: Path, tmp_path: Path) -> None:
    assert default_prompt_style(tiny, Tokenizer(tiny))[0] == "raw"  # a base model continues text
    assert default_prompt_style(tiny, Tokenizer(tiny), fallback="alpaca")[0] == "alpaca"
    assert default_prompt_style(tiny_chat, Tokenizer(tiny_chat))[0] == "chat"
    adapter = _adapter(tiny_chat, tmp_path / "lit_lora.safetensors", "alpaca")
    assert default_prompt_style(tiny_chat, Tokenizer(tiny_chat), adapter)[0] == "alpaca"
    merged = merge_lora_checkpoint(tiny_chat, adapter, tmp_path / "merged")
    assert json.loads((merged / PROMPT_STYLE_NAME).read_text()) == {"prompt_style": "alpaca"}
    assert default_prompt_style(merged, Tokenizer(merged))[0] == "alpaca"  # despite the chat template it copied


def test_merged_checkpoint_generates_what_base_plus_adapter_does(tiny_chat: Path, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    generate = _load("generate/base.py").main
    adapter = _adapter(tiny_chat, tmp_path / "lit_lora.safetensors", "alpaca")
    merged = merge_lora_checkpoint(tiny_chat, adapter, tmp_path / "merged")
    settings = dict(prompt="What is the capital of France?", top_k=1, max_new_tokens=12)
    with_adapter = generate(checkpoint_dir=tiny_chat, lora_path=adapter, **settings)
    assert "Prompt style: alpaca (the style" in capsys.readouterr().err
    from_merged = generate(checkpoint_dir=merged, **settings)
    assert "Prompt style: alpaca (the style it was finetuned with" in capsys.readouterr().err
    assert from_merged == with_adapter and with_adapter != [""]
    # the style is what makes them equal: the merged weights in the chat template answer otherwise
    assert generate(checkpoint_dir=merged, prompt_style="chat", **settings) != from_merged
    # without an adapter or a record, the chat template's checkpoint is prompted in it
    assert generate(checkpoint_dir=tiny_chat, **settings) == generate(checkpoint_dir=tiny_chat, prompt_style="chat",
                                                                      **settings)
    assert "Prompt style: chat (the tokenizer's chat template" in capsys.readouterr().err


def test_export_dtype_is_chosen_and_said(tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    adapter = _adapter(tiny, tmp_path / "lit_lora.safetensors", "alpaca")
    cli(_load("scripts/merge_lora.py").main, args=["--checkpoint_dir", str(tiny), "--lora_path", str(adapter),
                                                    "--out_dir", str(tmp_path / "m16"), "--dtype", "bfloat16"])
    assert "(bfloat16 weights; --dtype chooses)" in capsys.readouterr().out
    assert {t.dtype for t in load_weights(tmp_path / "m16").values()} == {torch.bfloat16}
    merged = merge_lora_checkpoint(tiny, adapter, tmp_path / "m32")  # default: the base's float32
    assert weights_dtype(merged / "lit_model.safetensors") == "float32"
    # bfloat16 rounds the merged weights: not what float32 generation computes
    bf16 = load_weights(tmp_path / "m16")["blocks.0.attn.query.weight"]
    fp32 = load_weights(merged)["blocks.0.attn.query.weight"]
    assert not torch.equal(bf16.float(), fp32) and torch.allclose(bf16.float(), fp32, atol=1e-2)

    cli(_load("scripts/convert_lit_checkpoint.py").main, args=["--checkpoint_dir", str(tmp_path / "m16"),
                                                               "--output_dir", str(tmp_path / "hf"),
                                                               "--dtype", "float32"])
    assert "(float32 weights; --dtype chooses)" in capsys.readouterr().out
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["torch_dtype"] == "float32"
    convert_lit_checkpoint(tmp_path / "m16", tmp_path / "hf16")
    assert json.loads((tmp_path / "hf16" / "config.json").read_text())["torch_dtype"] == "bfloat16"


def test_generation_chat_and_finetune_samples_stop_at_any_listed_eos_id(tiny: Path, tmp_path: Path) -> None:
    """generation_config.json's `eos_token_id` list (Llama 3.1's <|eot_id|>, Gemma's <end_of_turn>) ends an answer
    wherever it is generated, and is not shown; the tokenizer (and so prepared data) is unchanged."""
    from lit_gpt.chat import stream_text
    from lit_gpt.finetune import sample
    from lit_gpt.generate import generate_tokens

    folder = tmp_path / "two-eos"
    shutil.copytree(tiny, folder)
    tokenizer, model = Tokenizer(folder), load_model(folder).eval()
    prompt = "The quick brown fox"
    ids = torch.tensor(tokenizer.encode(prompt))
    free = list(generate_tokens(model, ids, 12, top_k=1))
    assert tokenizer.eos_id not in free
    k = next(i for i in range(2, len(free)) if free[i] not in free[:i])  # a token first generated at position k
    (folder / "generation_config.json").write_text(json.dumps({"eos_token_id": [tokenizer.eos_id, free[k]]}))

    stopping = Tokenizer(folder)
    assert stopping.stop_ids == {tokenizer.eos_id, free[k]}
    assert (stopping.eos_id, stopping.fingerprint) == (tokenizer.eos_id, tokenizer.fingerprint)
    expected = tokenizer.decode(free[:k], skip_special_tokens=True)
    assert expected != tokenizer.decode(free, skip_special_tokens=True)
    generate = _load("generate/base.py")
    assert generate.main(folder, prompt=prompt, prompt_style="raw", top_k=1, max_new_tokens=12,
                         precision="32-true") == [expected]
    assert "".join(stream_text(iter(free), stopping)) == expected
    for lockstep in (False, True):
        assert sample(model, stopping, ids, "cpu", max_new_tokens=12, lockstep=lockstep) == expected

    (folder / "generation_config.json").write_text(json.dumps({"eos_token_id": [2, "<|eot_id|>"]}))
    with pytest.raises(UserError, match="generation_config.json: eos_token_id .* list of token ids"):
        Tokenizer(folder)


def test_misspelt_flag_names_the_flag_meant(tiny: Path) -> None:
    command = [sys.executable, str(ROOT / "generate" / "base.py"), "--checkpoint_dir", str(tiny), "--max_new_tokns",
               "5", "--prompt_stlye", "raw"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip() == ("error: unrecognized arguments: --max_new_tokns 5 --prompt_stlye raw; did you "
                                     "mean --max_new_tokens and --prompt_style? (--help lists the flags)")


def test_converting_a_folder_that_is_not_a_checkpoint(tmp_path: Path) -> None:
    (folder := tmp_path / "lima").mkdir()
    (folder / "lima.json").write_text("[]")
    with pytest.raises(UserError, match=r"lima is not a Hugging Face checkpoint: it has no config.json"):
        convert_hf_checkpoint(folder)
