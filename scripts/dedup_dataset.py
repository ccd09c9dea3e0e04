"""Remove exact and near-duplicate training examples, and those that overlap evaluation data, into a new prepared
dataset with a manifest of every removal.

    python scripts/dedup_dataset.py --data_dirs data/alpaca --destination_path data/alpaca-dedup
    python scripts/dedup_dataset.py --data_dirs data/lima data/dolly --eval_files eval/mmlu.jsonl eval/prompts.txt \
        --threshold 0.7 --destination_path data/lima-dolly-dedup

What is compared and in which order: lit_gpt/data/dedup.py. Needs datasketch (pip install datasketch).
"""
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a plain checkout, no install needed

from lit_gpt.data.dedup import dedup_dataset
from lit_gpt.utils import cli


def main(
    data_dirs: list[Path],
    destination_path: Path,
    checkpoint_dir: Path | None = None,
    eval_files: list[Path] | None = None,
    threshold: float = 0.8,
    shingle_size: int = 3,
    num_perm: int = 128,
    overlap_ngram: int = 13,
    report_examples: int = 5,
    min_overlap_words: int = 8,
) -> dict[str, Any]:
    """Keep the training examples of DATA_DIRS that are neither duplicates nor overlap evaluation data, in order,
    and every test example; write them to DESTINATION_PATH with manifest.json.

    Args:
        data_dirs: Prepared datasets (same tokenizer and prompt style); of equal texts, the first in this order stays.
        destination_path: The new dataset's folder (replaced as a whole on success).
        checkpoint_dir: The model whose tokenizer decodes the examples. Default: the one in meta.json.
        eval_files: Evaluation texts no training example may share an --overlap_ngram with: JSON/JSONL/CSV records
            (all their strings) or a JSON list of strings, or a text file with one text per line.
        threshold: Near-duplicates: word-shingle Jaccard similarity at which the later example goes.
        shingle_size: Words per shingle for the near-duplicate similarity.
        num_perm: MinHash permutations (more: fewer pairs near the threshold missed, slower).
        overlap_ngram: Words in the n-grams that count as overlap with the test split or --eval_files.
        report_examples: Removals of each reason shown in full (removed and matched text) in manifest.json.
        min_overlap_words: A test or eval text shorter than --overlap_ngram words but at least this long overlaps a
            training example that contains all of it, word for word; shorter ones are not checked (counted).
    """
    return dedup_dataset(data_dirs, destination_path, checkpoint_dir, eval_files or (), threshold, shingle_size,
                         num_perm, overlap_ngram, report_examples, min_overlap_words)


if __name__ == "__main__":
    cli(main)
