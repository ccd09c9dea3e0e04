"""Merge a LoRA adapter into its base checkpoint: a full checkpoint folder that needs no adapter to run.

    python scripts/merge_lora.py --checkpoint_dir checkpoints/ORG/NAME --lora_path out/lora/lit_lora.safetensors \
        --out_dir out/lora/merged
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a plain checkout, no install needed

from lit_gpt.export import merge_lora_checkpoint
from lit_gpt.utils import cli, require_dir, resolve_checkpoint_dir


def main(checkpoint_dir: Path, lora_path: Path, out_dir: Path) -> None:
    """Write lit_config.json, lit_model.safetensors (adapter merged in) and the base's tokenizer files to `out_dir`.

    Args:
        checkpoint_dir: The converted base checkpoint the adapter was trained on (`checkpoints/ORG/NAME` or `ORG/NAME`).
        lora_path: The adapter file written by finetune/lora.py (`<its out_dir>/lit_lora.safetensors`).
        out_dir: A new folder for the merged checkpoint; use it like the base with generate/base.py, or turn it into
            a Hugging Face folder with scripts/convert_lit_checkpoint.py.
    """
    checkpoint_dir = require_dir(resolve_checkpoint_dir(checkpoint_dir), "checkpoint folder",
                                 "Pass the folder made by scripts/convert_hf_checkpoint.py that the adapter was trained on")
    out = merge_lora_checkpoint(checkpoint_dir, lora_path, out_dir)
    print(f"Wrote the merged checkpoint to {out}")


if __name__ == "__main__":
    cli(main)
