"""Score every example of a prepared dataset with a local model: IFD, both losses, lengths, optionally a judge rating.

    python scripts/score_dataset.py --data_dir data/alpaca --checkpoint_dir checkpoints/HuggingFaceTB/SmolLM2-135M-Instruct
    python scripts/score_dataset.py --data_dir data/alpaca --checkpoint_dir ... --judge_checkpoint_dir checkpoints/ORG/INSTRUCT

The columns land beside the data (`train/scores.npy`, `scores.json`; see lit_gpt/data/scoring.py) for
scripts/select_dataset.py and `finetune/lora.py --order score`. An interrupted run picks up where it stopped.
"""
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a plain checkout, no install needed

from lit_gpt.data.scoring import score_dataset
from lit_gpt.utils import cli


def main(
    data_dir: Path,
    checkpoint_dir: Path,
    judge_checkpoint_dir: Path | None = None,
    batch_size: int = 32,
    max_seq_length: int | None = None,
    embeddings: bool = True,
    judge_max_new_tokens: int = 8,
    flush_every: int = 20,
    precision: str | None = None,
) -> dict[str, Any]:
    """Score both splits of a prepared dataset with a local model and store the columns with the data.

    Args:
        data_dir: A prepared dataset (from a prepare script, or a mixed/deduplicated/selected one).
        checkpoint_dir: The scoring model; the data must have been prepared with its tokenizer. A small model is
            enough: Superfiltering found GPT-2's IFD ranks data like a 7B model's.
        judge_checkpoint_dir: An instruction model with a chat template that also rates each example 1-5,
            AlpaGasus-style (the `judge` column; slow: one generation per example).
        batch_size: Examples per forward pass, packed into one row (no padding); longest first.
        max_seq_length: Cut examples to this many tokens (default: the model's context).
        embeddings: Also save each example's mean final hidden state (`embeddings.npy`, for --policy diverse).
        judge_max_new_tokens: Tokens the judge may write after "Score:".
        flush_every: Save finished results every this many batches; a restarted run skips them.
        precision: 32-true, bf16-true or 16-true (default: bf16-true on a GPU that supports it, else 32-true).
    """
    result = score_dataset(data_dir, checkpoint_dir, judge_checkpoint_dir, batch_size, max_seq_length, embeddings,
                           judge_max_new_tokens, flush_every, precision)
    for split, summary in result["splits"].items():
        line = (f"{split}: {summary['samples']} examples, mean IFD {summary['ifd_mean']}, "
                f"IFD >= 1: {summary['ifd_at_least_1']}, IFD undefined: {summary['ifd_undefined']}")
        if "judge_unparseable" in summary:
            line += f", judge ratings {summary['judge_counts']}, unparseable: {summary['judge_unparseable']}"
        print(line)
    print(f"Scored {result['examples']:,} examples ({result['tokens']:,} tokens) in {result['seconds']:.1f} s: "
          f"{result['examples_per_s']:.2f} examples/s, {result['tokens_per_s']:,.0f} tokens/s, peak memory "
          f"{result['peak_memory_mb']:,.0f} MB; wrote {Path(data_dir) / 'scores.json'}")
    return result


if __name__ == "__main__":
    cli(main)
