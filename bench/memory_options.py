"""What each memory option of `finetune/lora.py` saves, measured: peak RSS and step time of short real runs.

    python bench/memory_options.py --checkpoint_dir checkpoints/HuggingFaceTB/SmolLM2-135M-Instruct \
        --data_dir data/lima --max_seq_length 2048

Each option set runs `finetune/lora.py` in a fresh process for `--steps` optimizer steps of one example each,
longest examples first (`--order length --order_descending true`), so every run meets the same, longest rows and
the peak is the one a full run would reach at that length. The peak RSS is the child's own (os.wait4); the first
row (full logits, no checkpointing, 32-true) is the baseline the others are divided by, measured in the same
invocation. On a GPU, Fabric's peak CUDA memory in `metrics.csv` (`peak_memory_mb`) is the figure to read instead.
"""
import csv
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lit_gpt.utils import child_peak_rss_mb, cli, resolve_checkpoint_dir  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

OPTIONS = {
    "full logits (--lm_head_chunk_size 0)": ["--lm_head_chunk_size", "0"],
    "head + loss in chunks of 128 (default)": [],
    "+ --activation_checkpointing true": ["--activation_checkpointing", "true"],
    "+ activation checkpointing + --precision bf16-true": ["--activation_checkpointing", "true",
                                                           "--precision", "bf16-true"],
    "+ activation checkpointing + --quantize bnb.nf4": ["--activation_checkpointing", "true",
                                                        "--quantize", "bnb.nf4"],
}


def main(checkpoint_dir: Path, data_dir: Path, max_seq_length: int = 2048, steps: int = 4,
         options: str | None = None) -> None:
    """Run each option set and print peak RSS and median step time against the full-logits baseline.

    Args:
        checkpoint_dir: A converted checkpoint.
        data_dir: Prepared data for it (long examples show the differences best, e.g. LIMA).
        max_seq_length: Rows are cut at this many tokens (`--override_max_seq_length`).
        steps: Optimizer steps per run (one example each; the first is not timed).
        options: Comma-separated indices into the option sets (default: all).
    """
    checkpoint_dir = resolve_checkpoint_dir(checkpoint_dir)
    chosen = list(OPTIONS.items())
    if options:
        chosen = [chosen[int(i)] for i in options.split(",")]
    rows = []
    for label, flags in chosen:
        with tempfile.TemporaryDirectory() as out:
            cmd = [sys.executable, "finetune/lora.py", "--checkpoint_dir", str(checkpoint_dir), "--data_dir",
                   str(data_dir), "--out_dir", out, "--precision", "32-true", "--batch_size", "1",
                   "--micro_batch_size", "1", "--max_iters", str(steps), "--eval_interval", "100000",
                   "--eval_iters", "1", "--save_interval", "100000", "--order", "length", "--order_descending",
                   "true", "--override_max_seq_length", str(max_seq_length), *flags]  # later flags win
            peak = child_peak_rss_mb(cmd, ROOT)
            with open(Path(out) / "metrics.csv", newline="") as f:
                seconds = [float(r["step_seconds"]) for r in csv.DictReader(f) if r.get("step_seconds")]
        rows.append((label, peak, statistics.median(seconds[1:] or seconds)))
        print(f"{label}: peak RSS {peak:,.0f} MB, {rows[-1][2]:.2f} s/step", flush=True)
    base_peak, base_s = rows[0][1], rows[0][2]
    print(f"\n{checkpoint_dir.name}, {max_seq_length} tokens per row, micro-batch 1, {steps} steps, CPU\n")
    print("| options | peak RSS MB | vs first row | s/step | vs first row |\n|---|---|---|---|---|")
    for label, peak, s in rows:
        print(f"| {label} | {peak:,.0f} | {peak / base_peak:.2f}x | {s:.2f} | {s / base_s:.2f}x |")


if __name__ == "__main__":
    cli(main)
