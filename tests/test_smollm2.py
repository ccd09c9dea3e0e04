"""End to end on a real pretrained model: SmolLM2-135M-Instruct from ../shared, through the scripts users run.

Skipped when ../shared (or the packages its checkpoint tool needs) is missing.
"""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
TOOL = SHARED / "tools" / "smollm2_checkpoint.py"

pytestmark = pytest.mark.skipif(not TOOL.is_file(), reason="../shared/tools/smollm2_checkpoint.py not available")


def run_script(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_generate_answers_paris(smollm2: Path) -> None:
    result = run_script("generate/base.py", "--checkpoint_dir", str(smollm2), "--prompt",
                        "What is the capital of France?", "--prompt_style", "chat", "--top_k", "1", "--max_new_tokens", "20")
    assert result.returncode == 0, result.stderr
    assert "Paris" in result.stdout
    # stopped at EOS (<|im_end|>) well before the token limit of 20
    generated = re.search(r"Generated (\d+) tokens", result.stderr)
    assert generated and int(generated.group(1)) < 20, result.stderr


def test_real_model_logits_match_transformers_both_ways(smollm2: Path, tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    from lit_gpt.checkpoint import load_model
    from lit_gpt.tokenizer import Tokenizer

    tokenizer = Tokenizer(smollm2)
    ids = torch.tensor([tokenizer.encode("The quick brown fox jumps over the lazy dog. Paris is the capital of")])
    hf = transformers.AutoModelForCausalLM.from_pretrained(smollm2, dtype=torch.float32).eval()
    ours = load_model(smollm2).eval()
    with torch.no_grad():
        expected = hf(ids).logits
        torch.testing.assert_close(ours(ids), expected, rtol=1e-4, atol=1e-4)

    back = run_script("scripts/convert_lit_checkpoint.py", "--checkpoint_dir", str(smollm2),
                      "--output_dir", str(tmp_path / "hf"))
    assert back.returncode == 0, back.stderr
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf", dtype=torch.float32).eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(ids).logits, expected, rtol=0, atol=0)
    for name in ("tokenizer.json", "tokenizer_config.json", "generation_config.json"):
        assert (tmp_path / "hf" / name).read_bytes() == (smollm2 / name).read_bytes()


def test_bare_repo_id_resolves_under_checkpoints(smollm2: Path) -> None:
    """The walkthrough passes `--checkpoint_dir ORG/NAME` right after downloading into checkpoints/ORG/NAME."""
    workdir = smollm2.parents[2]  # the folder that holds checkpoints/
    result = subprocess.run(
        [sys.executable, str(ROOT / "generate/base.py"), "--checkpoint_dir", "HuggingFaceTB/SmolLM2-135M-Instruct",
         "--prompt", "Hello", "--max_new_tokens", "3"],
        cwd=workdir, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr
    assert "Generated 3 tokens" in result.stderr
