"""Held-out instructions and the files evaluation writes about them, resumably.

An instruction file is any file `lit_gpt.data.read_records` reads (a JSON list such as AlpacaEval's, JSON Lines,
CSV): per record an `instruction`, optionally an `input` (Alpaca's context), a reference `output` and a `history`
of earlier [instruction, response] turns (LLaMA-Factory's layout, as in shared LIMA). Each instruction gets an `id`,
the sha256 of its text, so two answer files made from the same instruction set pair up by id whatever the order.

Results are JSON Lines appended batch by batch (`JsonlStore`): a killed run loses at most its unfinished batch,
and the line a kill cut short is detected and dropped. Every line carries the sha of the settings that made it,
so a rerun with other settings refuses the file instead of mixing two models' answers in it.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lit_gpt.data.formats import Fields, Record, read_records
from lit_gpt.prompts import Turn
from lit_gpt.utils import UserError, atomic_path

FIELDS = Fields(instruction="instruction", output="output", input="input", history="history")


@dataclass(frozen=True)
class Instruction:
    """One held-out instruction: the turns before it (if any), its text and input, and the reference answer."""

    id: str  # sha256 of the conversation up to the instruction (not of the reference): the key answers pair up by
    row: int  # 0-based record index in the file
    instruction: str
    input: str = ""
    history: tuple[Turn, ...] = ()
    reference: str | None = None

    def turns(self, response: str = "") -> list[Turn]:
        """The conversation with `response` as the last answer: empty for a prompt, the reference for its loss."""
        return [*self.history, Turn(self.instruction, response, self.input)]


def sha256_json(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, ensure_ascii=False, sort_keys=True).encode()).hexdigest()


def read_instruction_file(path: Path, fields: Fields = FIELDS) -> list[Instruction]:
    """The instructions of `path`, in file order. Refuses (one line, naming file, row and field) a record without
    the instruction field, an empty instruction, and an instruction that occurs twice (answers pair up by text)."""
    out: list[Instruction] = []
    seen: dict[str, str] = {}
    for record in read_records(path, required_columns=(fields.instruction,)):
        if fields.instruction not in record.fields:
            present = ", ".join(map(repr, record.fields)) or "none"
            raise UserError(f"{record.where()}: no {fields.instruction!r} field (fields present: {present}); every "
                            "record needs the instruction to answer (--instruction_field names another field)")
        instruction = record.text(fields.instruction)
        if not instruction.strip():
            raise UserError(f"{record.where()}: empty {fields.instruction!r}; remove the row or write the instruction")
        input = record.text(fields.input, optional=True) if fields.input else ""
        reference = record.text(fields.output, optional=True) if fields.output else ""
        history = _history(record, fields.history)
        key = sha256_json([[t.instruction, t.input, t.response] for t in history] + [[instruction, input]])
        if key in seen:
            raise UserError(f"{record.where()}: the same instruction as {seen[key]}; answers are paired by "
                            "instruction text, so remove the duplicate")
        seen[key] = record.where().rsplit(", ", 1)[-1]  # "record 1", "line 2": as the user's tools number it
        out.append(Instruction(key, record.row, instruction, input, history, reference if reference.strip() else None))
    return out


def _history(record: Record, name: str | None) -> tuple[Turn, ...]:
    value = record.fields.get(name) if name else None
    if not value:
        return ()
    if not isinstance(value, list) or not all(isinstance(pair, list) and len(pair) == 2 for pair in value):
        raise UserError(f"{record.where()}: field {name!r} must be a list of [instruction, response] pairs")
    return tuple(Turn(record.string(a, f"{name}[{i}][0]"), record.string(b, f"{name}[{i}][1]"))
                 for i, (a, b) in enumerate(value))


class JsonlStore:
    """Records keyed by `key_field`, appended to a JSON Lines file per finished batch, all made with one setting.

    Reading tolerates exactly one defect, the one a kill leaves: a last line without its newline (cut mid-write),
    which is dropped from the file so that the next append starts on a fresh line. Any other unreadable line, or a
    line made with other settings, is refused: the file is not ours to repair.
    """

    def __init__(self, path: Path, settings_sha: str, key_field: str = "id") -> None:
        self.path, self.settings_sha, self.key_field = Path(path), settings_sha, key_field
        self.records: dict[str, dict[str, Any]] = {}
        self.dropped_torn_line = False
        if self.path.is_file():
            self._read()

    def _read(self) -> None:
        data = self.path.read_bytes()
        complete, _, torn = data.rpartition(b"\n")
        if torn.strip():
            # a kill between write() and the newline's flush; rewrite the file without it (atomically)
            self.dropped_torn_line = True
            with atomic_path(self.path) as tmp:
                tmp.write_bytes(complete + b"\n" if complete else b"")
        for number, line in enumerate(complete.decode("utf-8").split("\n"), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                raise UserError(f"{self.path}, line {number}: not a JSON record; the file is damaged in the middle "
                                "(not by a kill), so move it away and run again") from None
            if record.get("settings") != self.settings_sha:
                raise UserError(
                    f"{self.path}, line {number}: made with other settings (settings {record.get('settings')}, now "
                    f"{self.settings_sha}); pass another --out_dir rather than mixing two runs in one file"
                )
            self.records[record[self.key_field]] = record

    def __contains__(self, key: str) -> bool:
        return key in self.records

    def append(self, records: Iterable[dict[str, Any]]) -> None:
        """Add `records` as complete lines, flushed to disk before returning."""
        records = [{**r, "settings": self.settings_sha} for r in records]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as f:
            f.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
            f.flush()
            os.fsync(f.fileno())
        self.records.update((r[self.key_field], r) for r in records)

    def rewrite_in_order(self, keys: Sequence[str]) -> None:
        """Rewrite the file with its records in the order of `keys` (batches finish longest-prompt first)."""
        with atomic_path(self.path) as tmp:
            tmp.write_text("".join(json.dumps(self.records[k], ensure_ascii=False) + "\n" for k in keys),
                           encoding="utf-8")


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Every complete line of a JSON Lines file we wrote; a line a kill cut short is left out."""
    if not path.is_file():
        raise UserError(f"{path} does not exist; write it with eval/answer.py")
    data = path.read_text(encoding="utf-8")
    records = []
    for number, line in enumerate(data[: data.rfind("\n") + 1].split("\n"), start=1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                raise UserError(f"{path}, line {number}: not a JSON record; is it an answers.jsonl of eval/answer.py?") \
                    from None
    return records
