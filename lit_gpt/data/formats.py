"""Reading instruction data files, exactly as published, into `Example`s.

`read_records` parses a JSON list, a JSON Lines or a CSV file (each optionally gzipped) into `Record`s that know
their row and line, so every error names file, row and field. `read_instructions` maps record fields onto an
instruction example (Alpaca, Dolly, CSV, LIMA's LLaMA-Factory layout, any JSON); `read_lima` also reads GAIR's
`conversations` layout. The OpenAssistant trees are read in `lit_gpt.data.oasst`.

Format errors (not UTF-8, invalid JSON, a missing field, a wrong type) always stop with a `UserError`. Content
defects in a row (an empty instruction, an unanswered last turn) are recorded in `Example.problem`, and the
`--incomplete_rows` policy decides whether they stop the run or are dropped and counted.
"""
from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Literal, Sequence

from lit_gpt.prompts import Turn
from lit_gpt.utils import UserError


_TEXT_JSON = json.JSONEncoder(ensure_ascii=False)  # json.dumps(..., ensure_ascii=False) without a new encoder per call


@dataclass(frozen=True)
class Example:
    """One training sample before tokenization: a conversation, and where it came from."""

    turns: tuple[Turn, ...]  # in order; the loss is on the responses
    row: int  # 0-based position of the record among the file's records (its provenance)
    line: int | None = None  # for messages: 1-based line (JSON Lines) or spreadsheet row (CSV, header = row 1)
    category: str | None = None  # Dolly `category`, LIMA `source`, OpenAssistant language
    problem: str | None = None  # why the row is incomplete, e.g. "empty 'output'"

    def text_sha256(self) -> str:
        """sha256 of the conversation text: equal for exact duplicates, whatever file or row they came from."""
        parts = [[t.instruction, t.input, t.response] for t in self.turns]
        return hashlib.sha256(_TEXT_JSON.encode(parts).encode()).hexdigest()


@dataclass(frozen=True)
class Skip:
    """A record a reader leaves out on purpose (e.g. another language); counted under `reason` in the report."""

    row: int
    reason: str


@dataclass(frozen=True)
class Source:
    """A dataset: its name (the `source` in provenance), its reader, the Hugging Face dataset repo file to
    download when no --data_file is given, and what to do with incomplete rows unless told otherwise."""

    name: str
    read: Callable[[Path], Iterable[Example | Skip]]
    hub_repo_id: str | None = None
    hub_filename: str | None = None
    # Your own file: an empty field is a mistake to fix. A published one: you cannot fix it, so drop and count.
    incomplete_rows: Literal["error", "drop"] = "error"


@dataclass(frozen=True)
class Record:
    """One record of a data file as a dict, with its position for error messages."""

    fields: dict[str, Any]
    path: Path
    row: int
    line: int | None = None

    def where(self) -> str:
        return where(self.path, self.row, self.line)

    def text(self, name: str, optional: bool = False) -> str:
        """The string in field `name`. An optional field may be missing or null (then ""); anything else must be a
        string, or this raises a UserError naming the file, row and field."""
        if name not in self.fields or (optional and self.fields[name] is None):
            if optional:
                return ""
            present = ", ".join(map(repr, self.fields)) or "none"
            raise UserError(f"{self.where()}: missing field {name!r} (fields present: {present})")
        return self.string(self.fields[name], name)

    def string(self, value: Any, field: str) -> str:
        """`value` (found in `field`, e.g. "history[0][1]") if it is a string, else a UserError naming the field."""
        if not isinstance(value, str):
            raise UserError(f"{self.where()}: field {field!r} must be a string, found {_describe(value)}")
        if not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError as e:  # JSON's "\ud800" escape parses, but is no character of any text
                raise UserError(
                    f"{self.where()}: field {field!r} holds a lone UTF-16 surrogate (\\u{ord(value[e.start]):04x} at "
                    f"character {e.start}), which is not text; fix that escape in the file"
                ) from None
        return value


def where(path: Path, row: int, line: int | None) -> str:
    """Where a record is, numbered as the user's own tools number it (the 0-based `row` stays in the provenance):
    `data.csv, row 6` is the spreadsheet's row 6 (the header is row 1), `data.jsonl, line 3` the editor's line 3,
    and `data.json, record 2` the second object of the list."""
    if line is None:
        return f"{path}, record {row + 1}"
    return f"{path}, {'row' if _is_csv(path) else 'line'} {line}"


def _is_csv(path: Path) -> bool:
    return path.name.lower().removesuffix(".gz").endswith(".csv")


def _describe(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return f"{type(value).__name__} {text[:40]}{'...' if len(text) > 40 else ''}"


# -- files ----------------------------------------------------------------------------------------------------------


def read_records(path: Path, required_columns: Sequence[str] = (), as_csv: bool | None = None) -> Iterator[Record]:
    """The records of a JSON list (`[{...}, ...]`), JSON Lines or CSV file; `.gz` files are decompressed.

    CSV is chosen by the `.csv` suffix unless `as_csv` says (a spreadsheet saved as `.txt` is still CSV to
    prepare_csv); a JSON file whose first character is `[` is a list, otherwise JSON Lines. Text is UTF-8, with or
    without a byte-order mark. A CSV header must hold `required_columns`, in any order.
    """
    text = _read_text(path)
    if _is_csv(path) if as_csv is None else as_csv:
        yield from _csv_records(path, text, required_columns)
    elif text.lstrip().startswith("["):
        yield from _json_list_records(path, text)
    else:
        yield from _jsonl_records(path, text)


def _read_text(path: Path) -> str:
    if not path.is_file():
        raise UserError(f"data file {path} does not exist; check --data_file")
    data = path.read_bytes()
    if path.name.lower().endswith(".gz"):
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as e:
            raise UserError(f"{path}: not a valid gzip file ({e}); download it again") from None
    try:
        text = data.decode("utf-8-sig")  # "-sig": a leading byte-order mark (Excel's "CSV UTF-8") is dropped
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise UserError(
            f"{path}, line {line}: not UTF-8 text (byte 0x{data[e.start]:02x} at offset {e.start}); "
            "re-save the file as UTF-8 (in a spreadsheet: 'CSV UTF-8')"
        ) from None
    if not text.strip():
        raise UserError(f"{path} is empty; expected instruction data (a JSON list, JSON Lines or CSV with a header)")
    return text


def _json_list_records(path: Path, text: str) -> Iterator[Record]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise UserError(f"{path}, line {e.lineno}, column {e.colno}: invalid JSON: {e.msg}") from None
    except RecursionError:
        raise UserError(f"{path}: JSON nested too deeply to read; records are flat objects of strings") from None
    if not isinstance(data, list):
        raise UserError(f"{path}: expected a JSON list of objects, found {type(data).__name__}")
    if not data:
        raise UserError(f"{path} holds an empty list; expected at least one record")
    for row, item in enumerate(data):
        if not isinstance(item, dict):
            raise UserError(f"{where(path, row, None)}: expected a JSON object, found {_describe(item)}")
        yield Record(item, path, row)


def _jsonl_records(path: Path, text: str) -> Iterator[Record]:
    row = 0
    # split on "\n" only: str.splitlines() would also break at U+2028, which JSON strings may hold unescaped
    for line_number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as e:
            raise UserError(
                f"{path}, line {line_number}, column {e.colno}: invalid JSON: {e.msg} "
                "(JSON Lines needs one complete JSON object per line)"
            ) from None
        except RecursionError:
            raise UserError(f"{path}, line {line_number}: JSON nested too deeply to read; records are flat objects "
                            "of strings") from None
        if not isinstance(item, dict):
            raise UserError(f"{where(path, row, line_number)}: expected a JSON object, found {_describe(item)}")
        yield Record(item, path, row, line_number)
        row += 1


# The csv module refuses cells over 128 KiB by default; a long answer is a real answer (the whole file is in memory
# already, so a larger limit costs nothing)
_CSV_FIELD_LIMIT = 2**31 - 1


def _csv_records(path: Path, text: str, required_columns: Sequence[str]) -> Iterator[Record]:
    csv.field_size_limit(_CSV_FIELD_LIMIT)
    reader = csv.reader(io.StringIO(text, newline=""))  # newline="": quoted cells keep their own line breaks
    try:
        header = [name.strip() for name in next(reader)]
        missing = [name for name in required_columns if name not in header]
        if missing:
            raise UserError(
                f"{path}: the header has no {', '.join(map(repr, missing))} column (columns: {', '.join(header)}); "
                f"the first line must name the columns, e.g. {','.join(required_columns)}"
            )
        duplicated = sorted({name for name in header if header.count(name) > 1})
        if duplicated:
            raise UserError(f"{path}: the header names column {duplicated[0]!r} more than once")
        # a spreadsheet shows every CSV record, blank ones too, as one row, however many lines its cells span
        row = 0
        for sheet_row, cells in enumerate(reader, start=2):
            if cells:  # not a blank line
                if len(cells) != len(header):
                    raise UserError(
                        f"{where(path, row, sheet_row)}: {len(cells)} cells, but the header has {len(header)} "
                        "columns; quote cells that contain commas, quotes or line breaks"
                    )
                yield Record(dict(zip(header, cells)), path, row, sheet_row)
                row += 1
    except csv.Error as e:
        raise UserError(f"{path}, line {reader.line_num}: not valid CSV ({e})") from None


# -- record layouts -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fields:
    """Which record fields hold the parts of an instruction example (Alpaca's names by default)."""

    instruction: str = "instruction"
    output: str = "output"
    input: str | None = "input"  # optional in every record
    history: str | None = None  # earlier turns as [[instruction, response], ...] (LLaMA-Factory's layout)
    category: str | None = None  # optional in every record


ALPACA_FIELDS = Fields()
DOLLY_FIELDS = Fields(instruction="instruction", output="response", input="context", category="category")
# LLaMA-Factory's copy of LIMA (shared/data/lima/lima.json): last turn as instruction/output, earlier ones in history
LIMA_ALPACA_FIELDS = Fields(history="history")


def read_instructions(path: Path, fields: Fields = ALPACA_FIELDS, as_csv: bool | None = None) -> Iterator[Example]:
    """Examples from a file of instruction records (any format `read_records` reads), with `fields` naming the parts."""
    for record in read_records(path, required_columns=(fields.instruction, fields.output), as_csv=as_csv):
        yield instruction_example(record, fields)


def instruction_example(record: Record, fields: Fields) -> Example:
    history = _history(record, fields.history)
    turns = [
        Turn(record.string(first, f"{fields.history}[{i}][0]"), record.string(second, f"{fields.history}[{i}][1]"))
        for i, (first, second) in enumerate(history)
    ]
    names = [(f"{fields.history}[{i}][0]", f"{fields.history}[{i}][1]") for i in range(len(history))]
    input = record.text(fields.input, optional=True) if fields.input else ""
    turns.append(Turn(record.text(fields.instruction), record.text(fields.output), input))
    names.append((fields.instruction, fields.output))
    return Example(tuple(turns), record.row, record.line, _category(record, fields.category), _empty(turns, names))


def _history(record: Record, name: str | None) -> list[Any]:
    value = record.fields.get(name) if name else None
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(pair, list) and len(pair) == 2 for pair in value):
        raise UserError(
            f"{record.where()}: field {name!r} must be a list of [instruction, response] pairs, "
            f"found {_describe(value)}"
        )
    return value


def _category(record: Record, name: str | None) -> str | None:
    return (record.text(name, optional=True) or None) if name else None


def _empty(turns: Sequence[Turn], names: Sequence[tuple[str, str]]) -> str | None:
    """`empty 'FIELD'` for the first empty (or all-whitespace) instruction or response; `names` are their fields."""
    for turn, (instruction, response) in zip(turns, names):
        if not turn.instruction.strip():
            return f"empty {instruction!r}"
        if not turn.response.strip():
            return f"empty {response!r}"
    return None


def read_lima(path: Path) -> Iterator[Example]:
    """LIMA in either published layout, decided per record.

    - GAIR/lima `train.jsonl`: `{"conversations": [user, assistant, user, assistant, ...], "source": ...}`;
      `source` (stackexchange, wikihow, ...) becomes the category.
    - LLaMA-Factory's `lima.json`: instruction/input/output for the last turn and `history` for earlier ones.
    """
    for record in read_records(path):
        if "conversations" in record.fields:
            yield conversation_example(record)
        else:
            yield instruction_example(record, LIMA_ALPACA_FIELDS)


def conversation_example(record: Record) -> Example:
    """An Example from `{"conversations": [user, assistant, ...]}`: turns pair up in order."""
    conversation = record.fields["conversations"]
    if not isinstance(conversation, list) or not conversation:
        raise UserError(
            f"{record.where()}: field 'conversations' must be a non-empty list, found {_describe(conversation)}"
        )
    texts = [record.string(text, f"conversations[{i}]") for i, text in enumerate(conversation)]
    turns = tuple(Turn(texts[i], texts[i + 1]) for i in range(0, len(texts) - 1, 2))
    names = [(f"conversations[{i}]", f"conversations[{i + 1}]") for i in range(0, len(texts) - 1, 2)]
    problem = _empty(turns, names)
    if len(texts) % 2:
        problem = problem or "'conversations' ends with a user turn"
    return Example(turns, record.row, record.line, _category(record, "source"), problem)


# The published datasets. Alpaca: tatsu-lab/alpaca serves parquet only; yahma/alpaca-cleaned serves the JSON of
# gururise/AlpacaDataCleaned, the cleaned 52k set Lit-GPT also downloads by default. Pass the original
# alpaca_data.json (github.com/tatsu-lab/stanford_alpaca) with --data_file to train on it instead.
ALPACA = Source("alpaca", read_instructions, "yahma/alpaca-cleaned", "alpaca_data_cleaned.json", "drop")
DOLLY = Source("dolly", partial(read_instructions, fields=DOLLY_FIELDS), "databricks/databricks-dolly-15k",
               "databricks-dolly-15k.jsonl", "drop")
LIMA = Source("lima", read_lima, "GAIR/lima", "train.jsonl", "drop")  # gated: accept the terms on its page first
