"""Reading prepared data for training: one split as a map-style PyTorch dataset over memory-mapped arrays."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lit_gpt.data.layout import (
    INPUT_IDS_NAME,
    LABELS_NAME,
    OFFSETS_NAME,
    PROVENANCE_NAME,
    SPLITS,
    check_tokenizer,
    read_meta,
)
from lit_gpt.tokenizer import Tokenizer
from lit_gpt.utils import UserError


class TokenizedDataset(torch.utils.data.Dataset):
    """Split `split` of the folder a prepare script wrote; item i is `{"input_ids", "labels"}` as int64 tensors.

    `tokenizer` is the one training uses: data prepared for another tokenizer is refused with a UserError. Pass
    None only to inspect data without training on it.
    """

    def __init__(self, data_dir: Path | str, split: str, tokenizer: Tokenizer | None) -> None:
        self.data_dir = Path(data_dir)
        self.meta: dict[str, Any] = read_meta(self.data_dir)
        if tokenizer is not None:
            check_tokenizer(self.data_dir, self.meta, tokenizer)
        if split not in SPLITS:
            raise UserError(f"split {split!r} is not one of {', '.join(SPLITS)}")
        self.folder = self.data_dir / split
        self.input_ids = np.load(self.folder / INPUT_IDS_NAME, mmap_mode="r")
        self.labels = np.load(self.folder / LABELS_NAME, mmap_mode="r")
        self.offsets = np.load(self.folder / OFFSETS_NAME)
        assert len(self.input_ids) == len(self.labels) == self.offsets[-1], f"{self.folder}: arrays disagree"

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        index = range(len(self))[index]  # negative indices count from the end; out of range raises IndexError
        start, end = self.offsets[index], self.offsets[index + 1]
        return {
            "input_ids": torch.from_numpy(self.input_ids[start:end].astype(np.int64)),
            "labels": torch.from_numpy(self.labels[start:end].astype(np.int64)),
        }

    @property
    def lengths(self) -> np.ndarray:
        """Tokens per sample (e.g. for the longest sequence or length-bucketed batching)."""
        return np.diff(self.offsets)

    def provenance(self) -> list[dict[str, Any]]:
        """Per sample, in order: source, row, category, turns, text_sha256, truncated."""
        with (self.folder / PROVENANCE_NAME).open(encoding="utf-8") as f:
            return [json.loads(line) for line in f]
