"""Remove exact and near-duplicate training examples, and those that overlap evaluation data, into a new prepared
dataset with a manifest of every removal.

    python scripts/dedup_dataset.py --data_dirs data/alpaca --destination_path data/alpaca-dedup
    python scripts/dedup_dataset.py --data_dirs data/lima data/dolly --eval_files eval/mmlu.jsonl eval/prompts.txt \
        --threshold 0.7 --destination_path data/lima-dolly-dedup

What is compared and in which order: lit_gpt/data/dedup.py. Needs datasketch (pip install datasketch).
The flags are `dedup_dataset`'s arguments (lit_gpt/data/dedup.py); `--help` lists them.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a plain checkout, no install needed

from lit_gpt.data.dedup import dedup_dataset
from lit_gpt.utils import cli

if __name__ == "__main__":
    cli(dedup_dataset)
