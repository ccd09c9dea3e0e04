"""Tokenize Stanford Alpaca (a JSON list of instruction/input/output) for one model, into data/alpaca.

    python scripts/prepare_alpaca.py --checkpoint_dir checkpoints/meta-llama/Llama-2-7b-hf

Without --data_file it downloads `alpaca_data_cleaned.json` from the Hub dataset yahma/alpaca-cleaned: the cleaned
52k set that Lit-GPT trains on by default (tatsu-lab/alpaca on the Hub serves parquet only). For the original
`alpaca_data.json` from github.com/tatsu-lab/stanford_alpaca, pass it with --data_file.
"""
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a plain checkout, no install needed

from lit_gpt.data import ALPACA, prepare
from lit_gpt.utils import cli


def prepare_alpaca(destination_path: Path = Path("data/alpaca"), **kwargs: Any) -> dict[str, Any]:
    """Tokenize Alpaca (JSON list of instruction/input/output) for the model in --checkpoint_dir.

    Args:
        destination_path: Output folder.
    """
    return prepare(ALPACA, destination_path=destination_path, **kwargs)


if __name__ == "__main__":
    cli(prepare_alpaca)
