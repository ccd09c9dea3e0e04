"""Convert a downloaded Hugging Face checkpoint into ours, in the same folder.

    python scripts/convert_hf_checkpoint.py --checkpoint_dir meta-llama/Llama-2-7b-hf
"""
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a plain checkout, no install needed

from lit_gpt.convert import convert_hf_checkpoint
from lit_gpt.utils import UserError, cli, peak_rss_mb, resolve_checkpoint_dir


def main(checkpoint_dir: Path, model_name: str | None = None, dtype: str | None = None) -> None:
    """Write `lit_config.json` and `lit_model.safetensors` next to the Hugging Face files, shard by shard.

    Args:
        checkpoint_dir: The downloaded folder (`checkpoints/ORG/NAME` or just `ORG/NAME`).
        model_name: A named config to use instead of deriving one from the folder's `config.json`.
        dtype: Store the weights as float32, bfloat16 or float16 (default: as in the checkpoint).
    """
    import torch

    torch_dtype = None
    if dtype is not None:
        if dtype not in ("float32", "bfloat16", "float16"):
            raise UserError(f"--dtype {dtype!r}: choose float32, bfloat16 or float16")
        torch_dtype = getattr(torch, dtype)
    t0 = time.perf_counter()
    out = convert_hf_checkpoint(resolve_checkpoint_dir(checkpoint_dir), model_name=model_name, dtype=torch_dtype)
    size = out.stat().st_size / 1e6
    print(f"Wrote {out} ({size:,.0f} MB) in {time.perf_counter() - t0:.1f}s, peak RSS {peak_rss_mb():,.0f} MB")


if __name__ == "__main__":
    cli(main)
