"""Tokenize LIMA (1,000 curated conversations) for one model, into data/lima.

    python scripts/prepare_lima.py --checkpoint_dir checkpoints/meta-llama/Llama-2-7b-hf --max_seq_length 2048

Multi-turn conversations stay whole: one sample each, earlier turns as context, loss on every response (or only
the last with --last_turn_only). Reads GAIR/lima's `train.jsonl` (conversations + source) and LLaMA-Factory's
`lima.json` (instruction/output + history). Without --data_file it downloads `train.jsonl` from the Hub dataset
GAIR/lima, which is gated: accept its terms on the dataset page, then pass --access_token or set HF_TOKEN.
"""
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a plain checkout, no install needed

from lit_gpt.data import LIMA, prepare
from lit_gpt.utils import cli


def prepare_lima(destination_path: Path = Path("data/lima"), **kwargs: Any) -> dict[str, Any]:
    """Tokenize LIMA (whole conversations, `source` as the category) for the model in --checkpoint_dir.

    Args:
        destination_path: Output folder.
    """
    return prepare(LIMA, destination_path=destination_path, **kwargs)


if __name__ == "__main__":
    cli(prepare_lima)
