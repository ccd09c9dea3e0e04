"""Tokenize your own JSON file (a list of objects) or JSON Lines file for one model, into data/json.

    python scripts/prepare_json.py --data_file qa.jsonl --output_field answer --checkpoint_dir checkpoints/ORG/NAME

Each record holds an instruction, an output and optionally an input (Alpaca's field names by default; map others
with the --*_field options), plus optional earlier turns as [[instruction, response], ...] and a category.
"""
import sys
from functools import partial
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a plain checkout, no install needed

from lit_gpt.data import Fields, Source, prepare, read_instructions
from lit_gpt.utils import cli


def prepare_json(
    data_file: Path,
    destination_path: Path = Path("data/json"),
    instruction_field: str = "instruction",
    input_field: str | None = "input",
    output_field: str = "output",
    history_field: str | None = None,
    category_field: str | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """Tokenize a JSON list or JSON Lines file of instruction records for the model in --checkpoint_dir.

    Args:
        data_file: The .json or .jsonl file (.gz accepted).
        destination_path: Output folder.
        instruction_field: Field holding the instruction.
        input_field: Optional field with extra context for the instruction (Alpaca's "input"); null for none.
        output_field: Field holding the response to learn.
        history_field: Optional field with earlier turns as [[instruction, response], ...].
        category_field: Optional field kept as each sample's category in the provenance (e.g. a task name).
    """
    fields = Fields(instruction_field, output_field, input_field, history_field, category_field)
    source = Source(Path(data_file).stem, partial(read_instructions, fields=fields))
    return prepare(source, data_file=data_file, destination_path=destination_path, **kwargs)


if __name__ == "__main__":
    cli(prepare_json)
