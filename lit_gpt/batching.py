"""The one place batches are built: which examples each optimizer step sees, and how they become tensors.

Examples are drawn from a stream of epochs, each an ordering of all examples (`epoch_order`); optimizer step s takes
stream[s * batch_size : (s + 1) * batch_size]. Every example is seen exactly once per epoch, and the data
position of a run is just its step count, so a resumed run sees exactly the batches it would have seen.

    epoch 0: 7 2 9 0 4 | 1 8 3 6 5      epoch 1: 3 0 8 ...      (batch_size 5: one row per optimizer step)
    step 0 -> 7 2 9 0 4; with 2 devices, rank 0 takes 7 9 4 and rank 1 takes 2 0, then micro-batches of those

Orders (`--order` in finetune/lora.py), all deterministic under the seed:

    shuffle    a fresh permutation every epoch (the default)
    none       the order of the data folder, every epoch
    length / score            sorted by the key (ascending, or descending), e.g. a curriculum from short to long;
                              examples with equal keys come in a fresh random order each epoch
    source / category         blocked: all examples of one group, then the next (groups sorted by name);
                              interleaved: groups spread evenly through the epoch, in proportion to their sizes
                              (A A B A A B ...); within a group, a fresh random order each epoch
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

from lit_gpt.data.tokenize import IGNORE_INDEX


ORDERS = ("shuffle", "none", "length", "source", "category", "score")
GROUP_ORDERS = ("source", "category")


def epoch_order(n: int, seed: int, epoch: int, order: str = "shuffle", keys: Sequence | None = None,
                descending: bool = False, interleave: bool = False) -> list[int]:
    """The order in which epoch `epoch` visits examples 0..n-1; `keys[i]` is example i's length, score or group."""
    shuffled = torch.randperm(n, generator=torch.Generator().manual_seed(seed + epoch)).tolist()
    if order == "shuffle":
        return shuffled
    if order == "none":
        return list(range(n))
    assert keys is not None and len(keys) == n, f"order {order!r} needs one key per example"
    if order in GROUP_ORDERS and interleave:
        groups: dict = {}
        for i in shuffled:
            groups.setdefault(keys[i], []).append(i)
        # member j of a group of size m sits at (j + 0.5) / m of the epoch: every group spreads out evenly
        slots = [((j + 0.5) / len(members), str(key), i) for key, members in groups.items()
                 for j, i in enumerate(members)]
        return [i for _, _, i in sorted(slots)]
    # a stable sort of the shuffled order: equal keys keep a fresh random order each epoch
    return sorted(shuffled, key=lambda i: keys[i] if order not in GROUP_ORDERS else str(keys[i]), reverse=descending)


def order_keys(dataset, order: str, score_column: str = "ifd") -> list | None:
    """The per-example keys `order` sorts or groups `dataset` (a TokenizedDataset) by; None for shuffle/none."""
    if order in ("shuffle", "none"):
        return None
    if order == "length":
        return dataset.lengths.tolist()
    if order in GROUP_ORDERS:
        return [str(p.get(order) or "") for p in dataset.provenance()]
    from lit_gpt.data.scoring import read_score_column

    return read_score_column(dataset, score_column).tolist()


class EpochStream:
    """Example indices for each optimizer step: `n` examples in epochs ordered by `epoch_order`."""

    def __init__(self, n: int, batch_size: int, seed: int, order: str = "shuffle", keys: Sequence | None = None,
                 descending: bool = False, interleave: bool = False) -> None:
        if n == 0:
            raise ValueError("cannot draw batches from an empty dataset")
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self._order = dict(order=order, keys=keys, descending=descending, interleave=interleave)
        self._cached: tuple[int, list[int]] | None = None

    def epoch_order(self, epoch: int) -> list[int]:
        if self._cached is None or self._cached[0] != epoch:
            self._cached = (epoch, epoch_order(self.n, self.seed, epoch, **self._order))
        return self._cached[1]

    def step(self, step: int) -> list[int]:
        """The `batch_size` example indices of optimizer step `step` (0-based); may straddle two epochs."""
        start = step * self.batch_size
        return [self.epoch_order(i // self.n)[i % self.n] for i in range(start, start + self.batch_size)]

    def epoch_of(self, step: int) -> float:
        """Epochs completed after `step` optimizer steps."""
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
