"""Tokenize Databricks Dolly 15k (JSON Lines of instruction/context/response/category) for one model, into data/dolly.

    python scripts/prepare_dolly.py --checkpoint_dir checkpoints/meta-llama/Llama-2-7b-hf

`context` is the Alpaca template's input and `category` (open_qa, summarization, ...) is kept in the provenance.
Without --data_file it downloads `databricks-dolly-15k.jsonl` from the Hub dataset databricks/databricks-dolly-15k.
"""
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a plain checkout, no install needed

from lit_gpt.data import DOLLY, prepare
from lit_gpt.utils import cli


def prepare_dolly(destination_path: Path = Path("data/dolly"), **kwargs: Any) -> dict[str, Any]:
    """Tokenize Dolly 15k (JSON Lines of instruction/context/response/category) for the model in --checkpoint_dir.

    Args:
        destination_path: Output folder.
    """
    return prepare(DOLLY, destination_path=destination_path, **kwargs)


if __name__ == "__main__":
    cli(prepare_dolly)
