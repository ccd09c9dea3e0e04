"""Convert one of our checkpoints back into a Hugging Face folder that `transformers` loads.

    python scripts/convert_lit_checkpoint.py --checkpoint_dir checkpoints/ORG/NAME --output_dir out/hf
"""
import sys
from pathlib import Path
from typing import Literal

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a plain checkout, no install needed

from lit_gpt.convert import convert_lit_checkpoint
from lit_gpt.export import weights_dtype
from lit_gpt.utils import cli, require_dir, resolve_checkpoint_dir


def main(checkpoint_dir: Path, output_dir: Path, dtype: Literal["float32", "bfloat16", "float16"] | None = None) -> None:
    """Write config.json, model.safetensors, tokenizer and generation files to `output_dir`.

    Args:
        checkpoint_dir: A converted (or merged) checkpoint folder holding lit_config.json and lit_model.safetensors.
        output_dir: Where to write the Hugging Face folder; load it with
            `transformers.AutoModelForCausalLM.from_pretrained(output_dir)`.
        dtype: Weights to write: float32, bfloat16 or float16 (default: as stored in checkpoint_dir). config.json's
            torch_dtype says which, and transformers loads that dtype by default; generate/base.py computes in
            float32 on a CPU, so float32 gives the same greedy text in transformers.
    """
    import torch

    checkpoint_dir = require_dir(resolve_checkpoint_dir(checkpoint_dir), "checkpoint folder",
                                 "Pass a folder made by scripts/convert_hf_checkpoint.py")
    out = convert_lit_checkpoint(checkpoint_dir, output_dir, dtype=getattr(torch, dtype) if dtype else None)
    print(f"Wrote a Hugging Face checkpoint to {out} ({weights_dtype(out / 'model.safetensors')} weights; "
          "--dtype chooses)")


if __name__ == "__main__":
    cli(main)
