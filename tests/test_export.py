"""Merging and PEFT export reproduce the LoRA model: equal logits in lit_gpt, in transformers, and in peft.

Each case: a tiny random Hugging Face checkpoint -> convert -> LoRA with random non-zero A and B -> save_lora; then
(a) merge_lora_checkpoint -> load_model, and convert_lit_checkpoint of the merged folder -> transformers;
(b) export_peft -> PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(hf_dir), out);
every one compared with the unmerged LoRA model's logits.
"""
from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")

from safetensors import safe_open  # noqa: E402
from helpers import load_script  # noqa: E402
from test_convert import make_hf_checkpoint  # noqa: E402

from lit_gpt.checkpoint import load_model, load_weights  # noqa: E402
from lit_gpt.convert import convert_hf_checkpoint, convert_lit_checkpoint  # noqa: E402
from lit_gpt.export import PEFT_CONFIG_NAME, PEFT_WEIGHTS_NAME, export_peft, merge_lora_checkpoint  # noqa: E402
from lit_gpt.lora import LoRAConfig, apply_lora, save_lora  # noqa: E402
from lit_gpt.model import GPT  # noqa: E402
from lit_gpt.utils import LIT_CONFIG_NAME, LIT_WEIGHTS_NAME, UserError, cli  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
IDX = torch.randint(0, 96, (2, 11), generator=torch.Generator().manual_seed(1))
ALL = dict(lora_query=True, lora_key=True, lora_value=True, lora_projection=True, lora_mlp=True, lora_head=True)
TARGETS = {
    "q": dict(lora_query=True, lora_value=False),
    "qv": dict(lora_query=True, lora_value=True),
    "kv": dict(lora_query=False, lora_key=True, lora_value=True),
    "all": ALL,
}
# GQA Llama, GPT-NeoX MHA (fused QKV, untied head named embed_out on disk), Falcon 7B MQA and 40B GQA (fused, tied head)
EXPORT_LAYOUTS = ("llama_gqa_condensed", "gpt_neox_parallel", "falcon_7b_style", "falcon_40b_style")


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny matmuls gain nothing from threads, and on a busy machine OpenMP's waiting makes each one take
    milliseconds instead of microseconds; restored afterwards for the other test files."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def hf_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One converted tiny checkpoint per layout, shared by the tests (they only read it)."""
    root = tmp_path_factory.mktemp("hf")
    dirs = {}
    for layout in EXPORT_LAYOUTS:
        hf_dir, _ = make_hf_checkpoint(root, layout)
        convert_hf_checkpoint(hf_dir, dtype=torch.float32)
        dirs[layout] = hf_dir
    return dirs


def _lora_model(checkpoint_dir: Path, lora_config: LoRAConfig, seed: int = 0) -> GPT:
    """The base with LoRA applied and random B (a zero B would make any export trivially right)."""
    model = apply_lora(load_model(checkpoint_dir), lora_config).eval()
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(std=1.0)
    return model


def _hf_model(folder: Path) -> torch.nn.Module:
    return transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()


def _close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("targets", list(TARGETS))
@pytest.mark.parametrize("layout", EXPORT_LAYOUTS)
def test_merged_and_peft_match_the_lora_model(tmp_path: Path, hf_dirs: dict[str, Path], layout: str, targets: str) -> None:
    hf_dir = hf_dirs[layout]
    # alpha / r = 1.5: a scaling dropped or applied twice shows in the logits
    lora_config = LoRAConfig(lora_r=2, lora_alpha=3, lora_dropout=0.0, **TARGETS[targets])
    model = _lora_model(hf_dir, lora_config)
    lora_path = tmp_path / "lit_lora.safetensors"
    save_lora(model, lora_config, lora_path)
    with torch.no_grad():
        expected = model(IDX)
        base = load_model(hf_dir).eval()(IDX)
    assert (expected - base).abs().max() > 1e-3  # the adapter really changes the outputs

    # (a) merged: our model, then the Hugging Face folder made from it
    merged_dir = merge_lora_checkpoint(hf_dir, lora_path, tmp_path / "merged")
    for name in (LIT_CONFIG_NAME, LIT_WEIGHTS_NAME, "config.json", "generation_config.json"):
        assert (merged_dir / name).is_file(), name
    assert not any("lora_" in name for name in load_weights(merged_dir))
    with torch.no_grad():
        _close(load_model(merged_dir).eval()(IDX), expected)
        hf_merged = _hf_model(convert_lit_checkpoint(merged_dir, tmp_path / "merged_hf"))
        _close(hf_merged(IDX).logits, expected)

    # (b) PEFT adapter on the original Hugging Face model
    peft_dir = export_peft(hf_dir, lora_path, tmp_path / "peft")
    peft_model = peft.PeftModel.from_pretrained(_hf_model(hf_dir), peft_dir).eval()
    with torch.no_grad():
        _close(peft_model(IDX).logits, expected)
    # the file holds exactly the LoRA tensors peft itself would save for this model, under the same names
    with safe_open(str(peft_dir / PEFT_WEIGHTS_NAME), framework="pt") as f:
        ours = set(f.keys())
    theirs = {k for k in peft.get_peft_model_state_dict(peft_model, save_embedding_layers=False) if ".lora_" in k}
    assert ours == theirs


def test_peft_names_and_config_for_fused_qkv(tmp_path: Path, hf_dirs: dict[str, Path]) -> None:
    """Query and value on GPT-NeoX: one rank-2r adapter on query_key_value, alpha doubled with it."""
    hf_dir = hf_dirs["gpt_neox_parallel"]
    lora_config = LoRAConfig(lora_r=2, lora_alpha=3, lora_dropout=0.0, lora_query=True, lora_value=True, lora_head=True)
    save_lora(_lora_model(hf_dir, lora_config), lora_config, tmp_path / "lit_lora.safetensors")
    out = export_peft(hf_dir, tmp_path / "lit_lora.safetensors", tmp_path / "peft")
    config = json.loads((out / PEFT_CONFIG_NAME).read_text())
    assert config["peft_type"] == "LORA" and config["r"] == 2 and config["lora_alpha"] == 3
    assert config["target_modules"] == ["attention.query_key_value", "lm_head"]
    assert config["rank_pattern"] == {"attention.query_key_value": 4}
    assert config["alpha_pattern"] == {"attention.query_key_value": 6}
    with safe_open(str(out / PEFT_WEIGHTS_NAME), framework="pt") as f:
        shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    assert shapes["base_model.model.gpt_neox.layers.1.attention.query_key_value.lora_A.weight"] == (4, 32)
    assert shapes["base_model.model.gpt_neox.layers.1.attention.query_key_value.lora_B.weight"] == (96, 4)
    assert shapes["base_model.model.lm_head.lora_B.weight"] == (96, 2)


def test_merging_a_tied_head_unties_it(tmp_path: Path, hf_dirs: dict[str, Path]) -> None:
    hf_dir = hf_dirs["falcon_7b_style"]
    lora_config = LoRAConfig(lora_r=2, lora_alpha=3, lora_dropout=0.0, lora_head=True)
    save_lora(_lora_model(hf_dir, lora_config), lora_config, tmp_path / "lit_lora.safetensors")
    merged = merge_lora_checkpoint(hf_dir, tmp_path / "lit_lora.safetensors", tmp_path / "merged")
    assert json.loads((merged / LIT_CONFIG_NAME).read_text())["tie_embeddings"] is False
    assert json.loads((merged / "config.json").read_text())["tie_word_embeddings"] is False
    # the embedding is the base's: only the head took the update
    torch.testing.assert_close(load_weights(merged)["embed.weight"], load_weights(hf_dir)["embed.weight"], rtol=0, atol=0)

    # without a head adapter the head stays tied and is stored once
    lora_config = LoRAConfig(lora_r=2, lora_alpha=3, lora_dropout=0.0)
    save_lora(_lora_model(hf_dir, lora_config), lora_config, tmp_path / "qv.safetensors")
    merged = merge_lora_checkpoint(hf_dir, tmp_path / "qv.safetensors", tmp_path / "merged_qv")
    assert "lm_head.weight" not in load_weights(merged)
    assert json.loads((merged / LIT_CONFIG_NAME).read_text())["tie_embeddings"] is True


def test_errors(tmp_path: Path, hf_dirs: dict[str, Path]) -> None:
    llama, neox = hf_dirs["llama_gqa_condensed"], hf_dirs["gpt_neox_parallel"]
    lora_config = LoRAConfig(lora_r=2, lora_dropout=0.0)
    lora_path = tmp_path / "lit_lora.safetensors"
    save_lora(_lora_model(llama, lora_config), lora_config, lora_path)
    for export in (merge_lora_checkpoint, export_peft):
        with pytest.raises(UserError, match="nope.safetensors not found"):
            export(llama, tmp_path / "nope.safetensors", tmp_path / "out")
        with pytest.raises(UserError, match="does not fit"):
            export(neox, lora_path, tmp_path / "out")
        with pytest.raises(UserError, match="not a converted checkpoint"):
            export(tmp_path / "missing", lora_path, tmp_path / "out")
    with pytest.raises(UserError, match="is the base checkpoint folder"):
        merge_lora_checkpoint(llama, lora_path, llama)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("script,out_file", [("merge_lora", LIT_WEIGHTS_NAME), ("export_peft", PEFT_CONFIG_NAME)])
def test_scripts_end_to_end(tmp_path: Path, hf_dirs: dict[str, Path], capsys: pytest.CaptureFixture[str],
                            script: str, out_file: str) -> None:
    """The command line as users type it: flags through `cli`, `--help`, and a mistake as one line with status 1."""
    hf_dir = hf_dirs["llama_gqa_condensed"]
    lora_config = LoRAConfig(lora_r=2, lora_dropout=0.0)
    save_lora(_lora_model(hf_dir, lora_config), lora_config, tmp_path / "lit_lora.safetensors")
    module = load_script(f"scripts/{script}.py")
    args = ["--checkpoint_dir", str(hf_dir), "--lora_path", str(tmp_path / "lit_lora.safetensors")]
    cli(module.main, args=[*args, "--out_dir", str(tmp_path / "out")])
    assert (tmp_path / "out" / out_file).is_file()
    assert str(tmp_path / "out") in capsys.readouterr().out

    with pytest.raises(SystemExit) as exit_info:
        cli(module.main, args=["--help"])
    assert exit_info.value.code == 0
    help_text = capsys.readouterr().out
    for flag in ("--checkpoint_dir", "--lora_path", "--out_dir", "lit_lora.safetensors"):
        assert flag in help_text

    # one real process: exit status 1 and a one-line message, no traceback
    command = [sys.executable, str(ROOT / "scripts" / f"{script}.py"), "--checkpoint_dir", str(hf_dir),
               "--lora_path", str(tmp_path / "nope.safetensors"), "--out_dir", str(tmp_path / "x")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert result.stderr.strip().startswith("error: ") and "nope.safetensors not found" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
