"""The one place batches are built: which examples each optimizer step sees, and how they become tensors.

Examples are drawn from a stream of epochs, each a fresh permutation under the seed; optimizer step s takes
stream[s * batch_size : (s + 1) * batch_size]. Every example is seen exactly once per epoch, and the data
position of a run is just its step count, so a resumed run sees exactly the batches it would have seen.

    epoch 0: 7 2 9 0 4 | 1 8 3 6 5      epoch 1: 3 0 8 ...      (batch_size 5: one row per optimizer step)
    step 0 -> 7 2 9 0 4; with 2 devices, rank 0 takes 7 9 4 and rank 1 takes 2 0, then micro-batches of those
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

from lit_gpt.data.tokenize import IGNORE_INDEX


class EpochStream:
    """Example indices for each optimizer step: `n` examples, reshuffled every epoch under `seed`."""

    def __init__(self, n: int, batch_size: int, seed: int) -> None:
        if n == 0:
            raise ValueError("cannot draw batches from an empty dataset")
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self._cached: tuple[int, list[int]] | None = None

    def epoch_order(self, epoch: int) -> list[int]:
        if self._cached is None or self._cached[0] != epoch:
            generator = torch.Generator().manual_seed(self.seed + epoch)
            self._cached = (epoch, torch.randperm(self.n, generator=generator).tolist())
        return self._cached[1]

    def step(self, step: int) -> list[int]:
        """The `batch_size` example indices of optimizer step `step` (0-based); may straddle two epochs."""
        start = step * self.batch_size
        return [self.epoch_order(i // self.n)[i % self.n] for i in range(start, start + self.batch_size)]

    def epoch_of(self, step: int) -> float:
        return step * self.batch_size / self.n


def micro_batches(indices: Sequence[int], rank: int, world_size: int, micro_batch_size: int) -> list[list[int]]:
    """This rank's share of one optimizer step's examples, cut into micro-batches."""
    mine = list(indices[rank::world_size])
    return [mine[i : i + micro_batch_size] for i in range(0, len(mine), micro_batch_size)]


def pad_collate(samples: Sequence[dict[str, torch.Tensor]], max_seq_length: int | None = None,
                pad_id: int = 0) -> dict[str, torch.Tensor]:
    """Right-pad to the longest sample (cut at `max_seq_length`): input_ids (B, T), labels (B, T), length (B,).

    Padded positions get IGNORE_INDEX labels, and with right padding and causal attention no real token ever
    attends to one, so padding changes neither the loss nor the logits of real tokens.
    """
    cut = [{k: v[:max_seq_length] for k, v in s.items()} for s in samples] if max_seq_length else samples
    T = max(len(s["input_ids"]) for s in cut)
    input_ids = torch.full((len(cut), T), pad_id, dtype=torch.long)
    labels = torch.full((len(cut), T), IGNORE_INDEX, dtype=torch.long)
    for row, s in enumerate(cut):
        input_ids[row, : len(s["input_ids"])] = s["input_ids"]
        labels[row, : len(s["labels"])] = s["labels"]
    length = torch.tensor([len(s["input_ids"]) for s in cut])
    return {"input_ids": input_ids, "labels": labels, "length": length}
