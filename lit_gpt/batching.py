"""The one place batches are built: which examples each optimizer step sees, and how they become tensors.

Examples are drawn from a stream of epochs, each an ordering of all examples (`epoch_order`); optimizer step s takes
stream[s * batch_size : (s + 1) * batch_size]. Every example is seen exactly once per epoch, and the data
position of a run is just its step count, so a resumed run sees exactly the batches it would have seen.

    epoch 0: 7 2 9 0 4 | 1 8 3 6 5      epoch 1: 3 0 8 ...      (batch_size 5: one row per optimizer step)
    step 0 -> 7 2 9 0 4; with 2 devices, rank 0 takes 7 9 4 and rank 1 takes 2 0 (`indices[rank::world_size]`),
    then micro-batches of those (lit_gpt/collate.py): padded to the longest example, or packed several to a row

Orders (`--order` in finetune/lora.py), all deterministic under the seed:

    shuffle    a fresh permutation every epoch (the default)
    none       the order of the data folder, every epoch
    length / score            sorted by the key (ascending, or descending), e.g. a curriculum from short to long;
                              examples with equal keys come in a fresh random order each epoch
    source / category         blocked: all examples of one group, then the next (groups sorted by name);
                              interleaved: groups spread evenly through the epoch, in proportion to their sizes
                              (A A B A A B ...); within a group, a fresh random order each epoch
    length_grouped            random, but each optimizer step's examples of similar length (little padding):
                              a fresh shuffle cut into windows of GROUP_WINDOW steps, each window sorted by
                              length and cut into steps, the steps of a window shuffled (transformers'
                              `group_by_length`, with the steps shuffled too); no curriculum
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal, get_args

import torch

from lit_gpt.data.scores import read_score_column


Order = Literal["shuffle", "none", "length", "source", "category", "score", "length_grouped"]  # the `--order` choices
ORDERS: tuple[str, ...] = get_args(Order)
GROUP_ORDERS = ("source", "category")
GROUP_WINDOW = 50  # optimizer steps per sorting window of `length_grouped`, as transformers' megabatches


def epoch_order(n: int, seed: int, epoch: int, order: str = "shuffle", keys: Sequence | None = None,
                descending: bool = False, interleave: bool = False, batch_size: int = 1) -> list[int]:
    """The order in which epoch `epoch` visits examples 0..n-1; `keys[i]` is example i's length, score or group;
    `batch_size` (examples per optimizer step) sizes the steps `length_grouped` forms."""
    generator = torch.Generator().manual_seed(seed + epoch)
    shuffled = torch.randperm(n, generator=generator).tolist()
    if order == "shuffle":
        return shuffled
    if order == "none":
        return list(range(n))
    assert keys is not None and len(keys) == n, f"order {order!r} needs one key per example"
    if order == "length_grouped":
        window = GROUP_WINDOW * batch_size
        out = []
        for start in range(0, n, window):
            ranked = sorted(shuffled[start : start + window], key=lambda i: keys[i], reverse=True)
            steps = [ranked[i : i + batch_size] for i in range(0, len(ranked), batch_size)]
            out += [i for j in torch.randperm(len(steps), generator=generator).tolist() for i in steps[j]]
        return out
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


def order_keys(dataset, order: str, score_column: str = "ifd", descending: bool = False) -> list | None:
    """The per-example keys `order` sorts or groups `dataset` (a TokenizedDataset) by; None for shuffle/none.
    Examples without a score (NaN: nothing to score, or an unparseable judge reply) come last either way."""
    if order in ("shuffle", "none"):
        return None
    if order in ("length", "length_grouped"):
        return dataset.lengths.tolist()
    if order in GROUP_ORDERS:
        return [str(p.get(order) or "") for p in dataset.provenance()]
    last = float("-inf") if descending else float("inf")
    return [last if math.isnan(v) else v for v in read_score_column(dataset, score_column).tolist()]


class EpochStream:
    """Example indices for each optimizer step: `n` examples in epochs ordered by `epoch_order`, ending after
    `total` examples when given (`epochs x n`: the last step takes only what is left of the last epoch)."""

    def __init__(self, n: int, batch_size: int, seed: int, order: str = "shuffle", keys: Sequence | None = None,
                 descending: bool = False, interleave: bool = False, total: int | None = None) -> None:
        if n == 0:
            raise ValueError("cannot draw batches from an empty dataset")
        self.n, self.batch_size, self.seed, self.total = n, batch_size, seed, total
        self._order = dict(order=order, keys=keys, descending=descending, interleave=interleave,
                           batch_size=batch_size)
        self._cached: tuple[int, list[int]] | None = None

    def epoch_order(self, epoch: int) -> list[int]:
        if self._cached is None or self._cached[0] != epoch:
            self._cached = (epoch, epoch_order(self.n, self.seed, epoch, **self._order))
        return self._cached[1]

    def steps(self) -> int:
        """Optimizer steps until `total` examples are seen (the last one maybe partial)."""
        if self.total is None:
            raise ValueError("an endless stream has no number of steps")
        return -(-self.total // self.batch_size)

    def step(self, step: int) -> list[int]:
        """The example indices of optimizer step `step` (0-based): `batch_size` of them, fewer only at the end of
        `total`; a step may straddle two epochs."""
        start = step * self.batch_size
        end = start + self.batch_size if self.total is None else min(start + self.batch_size, self.total)
        return [self.epoch_order(i // self.n)[i % self.n] for i in range(start, end)]

    def epoch_of(self, step: int) -> float:
        """Epochs completed after `step` optimizer steps."""
        seen = step * self.batch_size
        return (seen if self.total is None else min(seen, self.total)) / self.n
