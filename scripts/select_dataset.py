"""Keep k examples of a prepared dataset by a policy and write them as a new prepared dataset with a manifest.

    python scripts/select_dataset.py --data_dir data/alpaca --policy ifd --k 1000 --destination_path data/alpaca-ifd-1k
    python scripts/select_dataset.py --data_dir data/alpaca --policy random --fraction 0.05 --seed 1 --destination_path ...

Policies: random, longest (no model needed), ifd, loss_band, judge, diverse (need scripts/score_dataset.py first);
see lit_gpt/data/selection.py. The test split is copied whole.
"""
import sys
from pathlib import Path
from typing import Any, Literal

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a plain checkout, no install needed

from lit_gpt.data.selection import select_dataset
from lit_gpt.utils import cli


def main(
    data_dir: Path,
    policy: Literal["random", "longest", "ifd", "loss_band", "judge", "diverse"],
    destination_path: Path,
    k: int | None = None,
    fraction: float | None = None,
    seed: int = 42,
    low: float = 0.1,
    high: float = 0.9,
) -> dict[str, Any]:
    """Select training examples by a policy into a new prepared dataset (train: the kept ones; test: all).

    Args:
        data_dir: A prepared dataset; ifd/loss_band/judge/diverse need its scores (scripts/score_dataset.py).
        policy: random | longest (longest responses) | ifd (highest IFD below 1) | loss_band (random within the
            loss quantile band) | judge (highest judge ratings) | diverse (k-center greedy on embeddings).
        destination_path: The new dataset's folder (replaced as a whole on success).
        k: How many train examples to keep.
        fraction: Or: which share of the train split to keep.
        seed: Decides random draws and the order of ties.
        low: loss_band: the lower quantile of loss_with_prompt.
        high: loss_band: the upper quantile of loss_with_prompt.
    """
    return select_dataset(data_dir, policy, destination_path, k, fraction, seed, low, high)


if __name__ == "__main__":
    cli(main)
