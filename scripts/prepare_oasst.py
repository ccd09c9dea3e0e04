"""Tokenize OpenAssistant (OASST1) conversation trees for one model, into data/oasst: one conversation per tree,
following the best-ranked reply at every level, in one language.

    python scripts/prepare_oasst.py --checkpoint_dir checkpoints/meta-llama/Llama-2-7b-hf --lang en

Without --data_file it downloads `2023-04-12_oasst_ready.trees.jsonl.gz` from the Hub dataset OpenAssistant/oasst1.
"""
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a plain checkout, no install needed

from lit_gpt.data import oasst_source, prepare
from lit_gpt.utils import cli


def prepare_oasst(
    destination_path: Path = Path("data/oasst"), lang: str | None = "en", **kwargs: Any
) -> dict[str, Any]:
    """Tokenize OpenAssistant trees (tree export or nested-message JSON Lines, optionally .gz) for --checkpoint_dir.

    Args:
        destination_path: Output folder.
        lang: Keep the trees whose first message is in this language (e.g. en, es, de); null keeps all of them.
    """
    return prepare(oasst_source(lang), destination_path=destination_path, **kwargs)


if __name__ == "__main__":
    cli(prepare_oasst)
