"""Keep k examples of a prepared dataset by a policy and write them as a new prepared dataset with a manifest.

    python scripts/select_dataset.py --data_dir data/alpaca --policy ifd --k 1000 --destination_path data/alpaca-ifd-1k
    python scripts/select_dataset.py --data_dir data/alpaca --policy random --fraction 0.05 --seed 1 --destination_path ...

Policies: random, longest (no model needed), ifd, loss_band, judge, diverse (need scripts/score_dataset.py first);
see lit_gpt/data/selection.py. The test split is copied whole.
The flags are `select_dataset`'s arguments (lit_gpt/data/selection.py); `--help` lists them.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a plain checkout, no install needed

from lit_gpt.data.selection import select_dataset
from lit_gpt.utils import cli

if __name__ == "__main__":
    cli(select_dataset)
