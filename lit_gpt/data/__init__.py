"""Instruction data: read published formats, render prompts, tokenize with loss masks, write memory-mappable splits.

    formats.py   files -> Examples (Alpaca, Dolly, LIMA, CSV, any JSON/JSONL), with errors naming file/row/field
    oasst.py     OpenAssistant trees -> best-ranked conversations
    tokenize.py  segments -> input_ids + labels (IGNORE_INDEX where no loss), truncation that keeps the EOS
    layout.py    the on-disk folder (documented there), written atomically
    report.py    the report card: stats.json, the printed summary, lengths.png
    pipeline.py  prepare(): the pipeline every prepare script runs
    dataset.py   TokenizedDataset for training (imports torch; import it from lit_gpt.data.dataset)
"""
from lit_gpt.data.formats import (
    ALPACA,
    DOLLY,
    LIMA,
    Example,
    Fields,
    Record,
    Skip,
    Source,
    read_instructions,
    read_lima,
    read_records,
)
from lit_gpt.data.oasst import oasst_source, read_oasst
from lit_gpt.data.pipeline import prepare
from lit_gpt.data.tokenize import IGNORE_INDEX
from lit_gpt.prompts import Turn

__all__ = [
    "ALPACA", "DOLLY", "IGNORE_INDEX", "LIMA", "Example", "Fields", "Record", "Skip", "Source", "Turn", "oasst_source",
    "prepare", "read_instructions", "read_lima", "read_oasst", "read_records",
]
