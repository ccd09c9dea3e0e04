"""The quickstart's embedded default model is a real checkpoint folder every tool accepts."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lit_gpt.checkpoint import load_model
from lit_gpt.convert import convert_lit_checkpoint
from lit_gpt.tiny import make_tiny_checkpoint
from lit_gpt.tokenizer import Tokenizer

ROOT = Path(__file__).resolve().parents[1]


def test_tiny_checkpoint_loads_everywhere(tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    folder = make_tiny_checkpoint(ROOT / "examples" / "quickstart.json", tmp_path / "tiny-random")
    tokenizer = Tokenizer(folder)
    ids = tokenizer.encode("What is the capital of France?")
    assert tokenizer.decode(ids) == "What is the capital of France?"
    assert len(ids) < 12  # the tokenizer learned the data's words, not just bytes
    model = load_model(folder).eval()
    assert model.config.vocab_size == tokenizer.vocab_size
    convert_lit_checkpoint(folder, tmp_path / "hf")
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf", dtype=torch.float32).eval()
    with torch.no_grad():
        torch.testing.assert_close(model(torch.tensor([ids])), hf(torch.tensor([ids])).logits, rtol=1e-5, atol=1e-5)
