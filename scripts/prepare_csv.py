"""Tokenize your own CSV file for one model, into data/csv.

    python scripts/prepare_csv.py --csv_dir MyDataset.csv --checkpoint_dir checkpoints/meta-llama/Llama-2-7b-hf

The first line names the columns: `instruction` and `output`, optionally `input`, in any order (other columns are
ignored). Cells may span lines when quoted, as spreadsheets write them; UTF-8 with or without a byte-order mark.
"""
import sys
from functools import partial
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a plain checkout, no install needed

from lit_gpt.data import Source, prepare, read_instructions
from lit_gpt.utils import UserError, cli


def prepare_csv(
    csv_dir: Path | None = None,
    data_file: Path | None = None,
    destination_path: Path = Path("data/csv"),
    **kwargs: Any,
) -> dict[str, Any]:
    """Tokenize a CSV file with columns instruction, output and optionally input for the model in --checkpoint_dir.

    Args:
        csv_dir: The CSV file (the walkthrough's spelling, the same as --data_file), or a folder holding one.
        data_file: The CSV file.
        destination_path: Output folder.
    """
    if csv_dir is not None and data_file is not None and Path(csv_dir) != Path(data_file):
        raise UserError(f"--csv_dir {csv_dir} and --data_file {data_file} name different files; pass one of them")
    path = Path(data_file or csv_dir or "")
    if data_file is None and csv_dir is None:
        raise UserError("pass your CSV file: --csv_dir MyDataset.csv (or --data_file MyDataset.csv)")
    if path.is_dir():
        found = sorted(path.glob("*.csv"))
        if len(found) != 1:
            raise UserError(f"--csv_dir {path} is a folder with {len(found)} .csv files; pass the CSV file itself")
        path = found[0]
    return prepare(Source(path.stem, partial(read_instructions, as_csv=True)), data_file=path,
                   destination_path=destination_path, **kwargs)


if __name__ == "__main__":
    cli(prepare_csv)
