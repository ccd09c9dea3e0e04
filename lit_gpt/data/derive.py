"""New prepared datasets made of examples of existing ones: what mixing, dedup and selection write.

A derived dataset has the same layout as a prepared one (`lit_gpt.data.layout`), so training reads it unchanged.
Each example keeps its provenance (source dataset, row, category, text hash, and any score columns) and gains
`from`: the folder and split it was taken from. `manifest.json` beside it says what was done and why.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lit_gpt.data.dataset import TokenizedDataset
from lit_gpt.data.layout import (
    INPUT_IDS_NAME, LABELS_NAME, META_NAME, OFFSETS_NAME, PROVENANCE_NAME, SPLITS, check_destination, replace_dir,
)
from lit_gpt.utils import UserError, sha256_file

MANIFEST_NAME = "manifest.json"

Pick = tuple[TokenizedDataset, int]  # (dataset split, example index)


def check_same_tokenizer(datasets: Sequence[TokenizedDataset]) -> None:
    """Examples from datasets made for different tokenizers cannot be combined: their ids mean other tokens."""
    fingerprints = {d.meta["tokenizer"]["fingerprint"] for d in datasets}
    if len(fingerprints) > 1:
        names = ", ".join(f"{d.data_dir} ({d.meta['tokenizer']['fingerprint'][:12]})" for d in datasets)
        raise UserError(f"the datasets were prepared for different tokenizers: {names}; prepare them with the same "
                        "--checkpoint_dir")


def check_same_prompt_style(datasets: Sequence[TokenizedDataset]) -> None:
    """Combined datasets must share one prompt format: finetuning renders its dev prompts in the one `meta.json`
    names, and a model trained on two templates answers in either."""
    styles = {(d.meta.get("prompt_style"), d.meta.get("chat_template_sha256")) for d in datasets}
    if len(styles) > 1:
        names = ", ".join(f"{d.data_dir} ({d.meta.get('prompt_style')})" for d in datasets)
        raise UserError(f"the datasets were prepared with different prompt styles or chat templates: {names}; "
                        "prepare them again with the same --prompt_style")


def dataset_sha256(data_dir: Path) -> str:
    """A content hash of a prepared dataset (its arrays and provenance), for manifests."""
    digest = hashlib.sha256()
    for split in SPLITS:
        for name in (INPUT_IDS_NAME, LABELS_NAME, OFFSETS_NAME, PROVENANCE_NAME):
            path = Path(data_dir) / split / name
            digest.update(f"{split}/{name}".encode())
            sha256_file(path, digest)
    return digest.hexdigest()


def write_derived(destination: Path, splits: dict[str, Sequence[Pick]], manifest: dict[str, Any]) -> None:
    """Write `destination` with the picked examples of each split, in the given order, atomically.

    `meta.json` is the first source's with the sample counts updated and `derived: true`; `manifest` is written as
    `manifest.json`. All picks must come from datasets prepared for one tokenizer.
    """
    if set(splits) != set(SPLITS):
        raise ValueError(f"need picks for the splits {SPLITS}, got {sorted(splits)}")
    sources = list({id(d): d for picks in splits.values() for d, _ in picks}.values())
    if not sources:
        raise UserError("nothing to write: no example was selected")
    check_same_tokenizer(sources)
    check_same_prompt_style(sources)
    check_destination(destination, [d.data_dir for d in sources])
    provenance_of = {id(d): d.provenance() for d in sources}
    meta = {**sources[0].meta, "derived": True, "samples": {split: len(picks) for split, picks in splits.items()}}
    with replace_dir(destination) as tmp:
        for split, picks in splits.items():
            folder = tmp / split
            folder.mkdir()
            lengths = np.array([d.offsets[i + 1] - d.offsets[i] for d, i in picks], dtype=np.int64)
            offsets = np.zeros(len(picks) + 1, dtype=np.int64)
            np.cumsum(lengths, out=offsets[1:])
            for name, array in ((INPUT_IDS_NAME, "input_ids"), (LABELS_NAME, "labels")):
                parts = [getattr(d, array)[d.offsets[i]:d.offsets[i + 1]] for d, i in picks]
                np.save(folder / name, np.concatenate(parts).astype(np.int32) if parts else np.zeros(0, np.int32))
            np.save(folder / OFFSETS_NAME, offsets)
            with (folder / PROVENANCE_NAME).open("w", encoding="utf-8") as f:
                for d, i in picks:
                    record = {**provenance_of[id(d)][i], "from": f"{d.data_dir}/{d.folder.name}"}
                    f.write(json.dumps(record, ensure_ascii=False) + "\n")
        (tmp / META_NAME).write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        (tmp / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
