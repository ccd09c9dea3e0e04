"""Merge a LoRA adapter into its base checkpoint: a full checkpoint folder that needs no adapter to run.

    python scripts/merge_lora.py --checkpoint_dir checkpoints/ORG/NAME --lora_path out/lora/lit_lora.safetensors \
        --out_dir out/lora/merged
"""
import sys
from pathlib import Path
from typing import Literal

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a plain checkout, no install needed

from lit_gpt.export import merge_lora_checkpoint, weights_dtype
from lit_gpt.utils import LIT_WEIGHTS_NAME, cli, require_dir, resolve_checkpoint_dir


def main(checkpoint_dir: Path, lora_path: Path, out_dir: Path,
         dtype: Literal["float32", "bfloat16", "float16"] | None = None) -> None:
    """Write the base checkpoint with the adapter merged in to `out_dir`, as a checkpoint folder of its own.

    It holds lit_config.json, lit_model.safetensors, the base's tokenizer files and lit_prompt_style.json (the
    adapter's prompt style, which generate/base.py and chat/base.py then use by default).

    Args:
        checkpoint_dir: The converted base checkpoint the adapter was trained on (`checkpoints/ORG/NAME` or `ORG/NAME`).
        lora_path: The adapter file written by finetune/lora.py (`<its out_dir>/lit_lora.safetensors`).
        out_dir: A new folder for the merged checkpoint; use it like the base with generate/base.py, or turn it into
            a Hugging Face folder with scripts/convert_lit_checkpoint.py.
        dtype: Weights to write: float32, bfloat16 or float16 (default: the base checkpoint's). generate/base.py
            computes in float32 on a CPU, so float32 gives the same greedy text elsewhere; bfloat16 halves the size.
    """
    import torch

    checkpoint_dir = require_dir(resolve_checkpoint_dir(checkpoint_dir), "checkpoint folder",
                                 "Pass the folder made by scripts/convert_hf_checkpoint.py that the adapter was trained on")
    out = merge_lora_checkpoint(checkpoint_dir, lora_path, out_dir, dtype=getattr(torch, dtype) if dtype else None)
    print(f"Wrote the merged checkpoint to {out} ({weights_dtype(out / LIT_WEIGHTS_NAME)} weights; --dtype chooses)")


if __name__ == "__main__":
    cli(main)
