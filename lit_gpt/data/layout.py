"""The folder a prepare script writes, read back by training. No pickle: numpy arrays and JSON only.

    DESTINATION/
      meta.json               what the data was made for: tokenizer fingerprint, prompt style, mask policy,
                              max_seq_length, source file and its sha256, counts (checked before training)
      stats.json              the report card
      lengths.png             histogram of prompt and response token lengths
      train/ and test/
        input_ids.npy         int32, all samples of the split concatenated
        labels.npy            int32, the same length; IGNORE_INDEX (-100) where there is no loss
        offsets.npy           int64, n + 1 entries: sample i is [offsets[i], offsets[i + 1])
        provenance.jsonl      one line per sample, in order: source, row (0-based record index in the source
                              file), category, turns, text_sha256, truncated (tokens cut off)

The arrays are memory-mapped by `lit_gpt.data.dataset.TokenizedDataset`, so a split of any size opens instantly.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

import numpy as np

from lit_gpt.data.tokenize import Sample
from lit_gpt.tokenizer import Tokenizer
from lit_gpt.utils import UserError, read_json, remove_stale_temps, stale_temps, temp_name, umask, write_errors

FORMAT = "lit_gpt.tokenized.v1"
META_NAME = "meta.json"
STATS_NAME = "stats.json"
HISTOGRAM_NAME = "lengths.png"
SPLITS = ("train", "test")
INPUT_IDS_NAME = "input_ids.npy"
LABELS_NAME = "labels.npy"
OFFSETS_NAME = "offsets.npy"
PROVENANCE_NAME = "provenance.jsonl"


@dataclass
class Split:
    """The samples of one split, gathered flat (list.extend runs at C speed) and written by `write`."""

    input_ids: list[int] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)
    provenance: list[dict[str, Any]] = field(default_factory=list)

    def add(self, sample: Sample, provenance: dict[str, Any]) -> None:
        self.input_ids += sample.input_ids
        self.labels += sample.labels
        self.lengths.append(len(sample.input_ids))
        self.provenance.append(provenance)

    def write(self, folder: Path) -> None:
        folder.mkdir(parents=True)
        offsets = np.zeros(len(self.lengths) + 1, dtype=np.int64)
        np.cumsum(self.lengths, out=offsets[1:])
        np.save(folder / INPUT_IDS_NAME, np.array(self.input_ids, dtype=np.int32))
        np.save(folder / LABELS_NAME, np.array(self.labels, dtype=np.int32))
        np.save(folder / OFFSETS_NAME, offsets)
        with (folder / PROVENANCE_NAME).open("w", encoding="utf-8") as f:
            encode = json.JSONEncoder(ensure_ascii=False).encode  # one encoder for all lines, unlike json.dumps
            f.writelines(encode(p) + "\n" for p in self.provenance)


# What our writers put in a data folder: prepare (layout above), mix/dedup/select (manifest.json), score (scores.json).
# Anything else there is the user's, and replacing the folder would delete it.
_OURS = {META_NAME, STATS_NAME, HISTOGRAM_NAME, *SPLITS, "manifest.json", "scores.json"}


def check_destination(destination: Path, inputs: Sequence[Path] = ()) -> None:
    """Refuse to replace anything but a folder we wrote before (or an empty one): it is deleted on success.

    `inputs` are the files and folders the run reads: none may lie inside the destination (or be it), since
    replacing the folder would delete them. A missing destination that a killed run had moved aside is put back first.
    """
    destination = Path(destination)
    if not destination.exists():
        _restore_moved_aside(destination)
    for path in inputs:
        if Path(path).resolve().is_relative_to(destination.resolve()):
            raise UserError(
                f"{path} lies inside --destination_path {destination}, which is replaced as a whole; pass another "
                f"--destination_path (e.g. {destination.parent / (destination.name + '-prepared')})"
            )
    if destination.exists() and not destination.is_dir():
        raise UserError(f"--destination_path {destination} is a file; pass a folder path")
    if not destination.is_dir() or not any(destination.iterdir()):
        return
    if not (destination / META_NAME).is_file():
        raise UserError(
            f"--destination_path {destination} already holds files that are not prepared data (no {META_NAME}); "
            "pass a new or empty folder"
        )
    foreign = sorted(entry.name for entry in destination.iterdir() if entry.name not in _OURS)
    if foreign:
        raise UserError(
            f"--destination_path {destination} holds {destination / foreign[0]}"
            f"{f' and {len(foreign) - 1} more' if len(foreign) > 1 else ''}, which we did not write and replacing the "
            "folder would delete; move it out, or pass another --destination_path"
        )


@contextlib.contextmanager
def replace_dir(destination: Path) -> Iterator[Path]:
    """Yield a new folder beside `destination`. On success it takes `destination`'s place (the old one is deleted),
    on failure it is removed: a failing or killed run never leaves a half-written dataset under the final name.

    What a killed run left beside it is cleaned first (see `lit_gpt.utils.remove_stale_temps`); a previous dataset
    moved aside by a run killed between its two renames is put back.
    """
    destination = Path(destination)
    with write_errors(destination):
        destination.parent.mkdir(parents=True, exist_ok=True)
        if not destination.exists():
            _restore_moved_aside(destination)
        remove_stale_temps(destination)
        tmp = Path(tempfile.mkdtemp(prefix=temp_name(destination), suffix=".tmp", dir=destination.parent))
        tmp.chmod(0o777 & ~umask())  # mkdtemp makes it private (0700); the data folder is as readable as any other
        try:
            yield tmp
            old = None
            if destination.exists():
                old = Path(tempfile.mkdtemp(prefix=temp_name(destination), suffix=".old.tmp", dir=destination.parent))
                os.replace(destination, old)
            os.replace(tmp, destination)
            if old is not None:
                shutil.rmtree(old)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def _restore_moved_aside(destination: Path) -> None:
    """Put back the newest previous dataset that `replace_dir` moved aside (`.old.tmp`) before it was killed."""
    olds = [p for p in stale_temps(destination) if p.name.endswith(".old.tmp") and (p / META_NAME).is_file()]
    olds.sort(key=lambda p: p.stat().st_mtime)
    if olds:
        os.replace(olds[-1], destination)


def read_meta(data_dir: Path) -> dict[str, Any]:
    path = Path(data_dir) / META_NAME
    if not path.is_file():
        raise UserError(
            f"{data_dir} is not prepared data (no {META_NAME}); make it with a prepare script, e.g. "
            "python scripts/prepare_lima.py --checkpoint_dir checkpoints/ORG/NAME"
        )
    meta = read_json(path)
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else None
        raise UserError(f"{path}: format {found!r}, expected {FORMAT!r}; prepare the data again with this version")
    return meta


def check_tokenizer(data_dir: Path, meta: dict[str, Any], tokenizer: Tokenizer) -> None:
    """Refuse data tokenized for another tokenizer: its ids would mean other tokens to this model."""
    prepared = meta["tokenizer"]
    if prepared["fingerprint"] != tokenizer.fingerprint:
        raise UserError(
            f"{data_dir} was prepared for the tokenizer of {prepared['checkpoint_dir']} (fingerprint "
            f"{prepared['fingerprint'][:12]}), not for {tokenizer.checkpoint_dir} ({tokenizer.fingerprint[:12]}); "
            f"prepare it again with --checkpoint_dir {tokenizer.checkpoint_dir}"
        )
