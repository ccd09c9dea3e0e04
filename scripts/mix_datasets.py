"""Mix prepared datasets (same tokenizer) by weights into a new prepared dataset with a manifest.

    python scripts/mix_datasets.py --data_dirs data/lima data/dolly --weights 0.7 0.3 --destination_path data/mix
    python scripts/mix_datasets.py --data_dirs data/lima data/dolly --weights 1 1 --by tokens --num_tokens 2000000 \
        --replacement true --seed 1 --destination_path data/mix-tokens

How sizes, weights, replacement and the test split work: lit_gpt/data/mix.py.
"""
import sys
from pathlib import Path
from typing import Any, Literal

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a plain checkout, no install needed

from lit_gpt.data.mix import mix_datasets
from lit_gpt.utils import cli


def main(
    data_dirs: list[Path],
    destination_path: Path,
    weights: list[float] | None = None,
    by: Literal["examples", "tokens"] = "examples",
    replacement: bool = False,
    num_examples: int | None = None,
    num_tokens: int | None = None,
    test_split: Literal["all", "weighted"] = "all",
    seed: int = 42,
) -> dict[str, Any]:
    """Mix prepared datasets by weights into DESTINATION_PATH, with manifest.json (examples and tokens per source).

    Args:
        data_dirs: Prepared datasets, all made for the same tokenizer and prompt style.
        destination_path: The mix's folder (replaced as a whole on success).
        weights: One per dataset, normalised to sum to 1 (default: equal).
        by: What the weights are shares of: examples, or tokens (prompt and response).
        replacement: Draw examples with replacement, so a source can give more than it has (needs a size).
        num_examples: Train examples in the mix (with --by examples). Default: as many as possible without
            replacement at these weights.
        num_tokens: Train tokens in the mix (with --by tokens). Default: as many as possible without replacement.
        test_split: all: every test example of every source; weighted: drawn by the same weights.
        seed: Decides which examples are drawn; the same inputs and seed give a byte-identical mix.
    """
    return mix_datasets(data_dirs, destination_path, weights, by, replacement, num_examples, num_tokens, test_split,
                        seed)


if __name__ == "__main__":
    cli(main)
