"""How one device's examples for an optimizer step become tensors: padded rows, or several examples packed to a row.

Used by training (`lit_gpt.batching` picks the examples, these functions collate them) and by scoring.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

from lit_gpt.data.tokenize import IGNORE_INDEX


def step_batches(samples: Sequence[dict[str, torch.Tensor]], micro_batch_size: int, max_seq_length: int,
                 packing: bool = False) -> list[dict[str, torch.Tensor]]:
    """One device's micro-batches for one optimizer step: `micro_batch_size` padded examples each, or with
    `packing`, one row each of packed examples, up to `micro_batch_size x max_seq_length` tokens.

    A packed micro-batch is a single row rather than `micro_batch_size` rows of `max_seq_length`: several rows
    would each be padded to the fullest one (a step's examples rarely fill rows evenly), one row has no padding at
    all, under the same token bound. Examples are still cut at `max_seq_length` and never split across rows.
    """
    if not samples:  # e.g. validation when every example went to training
        return []
    if not packing:
        return [pad_collate(samples[i : i + micro_batch_size], max_seq_length)
                for i in range(0, len(samples), micro_batch_size)]
    row_length = micro_batch_size * max_seq_length
    rows = pack_rows([min(len(s["input_ids"]), max_seq_length) for s in samples], row_length)
    return [packed_collate([samples[i] for i in row], max_seq_length, row_length) for row in rows]


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


def pack_rows(lengths: Sequence[int], max_seq_length: int) -> list[list[int]]:
    """Group examples, in order, into rows of at most `max_seq_length` tokens: each row takes the next examples
    until one does not fit (so the order the dataset tools chose survives packing)."""
    rows: list[list[int]] = []
    used = max_seq_length  # forces a first row
    for i, length in enumerate(lengths):
        length = min(length, max_seq_length)
        if used + length > max_seq_length:
            rows.append([])
            used = 0
        rows[-1].append(i)
        used += length
    return rows


def packed_collate(samples: Sequence[dict[str, torch.Tensor]], max_seq_length: int, row_length: int | None = None,
                   pad_id: int = 0) -> dict[str, torch.Tensor]:
    """Examples cut at `max_seq_length`, several per row of at most `row_length` tokens (default: max_seq_length;
    see `pack_rows`): input_ids, labels and positions (R, T), length (R,).

    Positions restart at 0 for every example; the model turns them into block-diagonal attention, so nothing
    attends across examples. Each example's first label is IGNORE_INDEX: the token before it belongs to another
    example, so it has nothing to be predicted from, exactly as the first token of an unpacked row. The summed
    loss of a packed batch therefore equals that of the same examples padded one per row.

        input_ids  a0 a1 a2 b0 b1 c0 c1 c2 pad
        positions   0  1  2  0  1  0  1  2   0
        labels      -  .  .  -  .  -  .  .   -      (- = IGNORE_INDEX, . = the example's own label)
    """
    cut = [{k: v[:max_seq_length] for k, v in s.items()} for s in samples]
    rows = pack_rows([len(s["input_ids"]) for s in cut], row_length or max_seq_length)
    T = max(sum(len(cut[i]["input_ids"]) for i in row) for row in rows)
    input_ids = torch.full((len(rows), T), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), T), IGNORE_INDEX, dtype=torch.long)
    positions = torch.zeros((len(rows), T), dtype=torch.long)
    length = torch.zeros(len(rows), dtype=torch.long)
    for r, row in enumerate(rows):
        start = 0
        for i in row:
            n = len(cut[i]["input_ids"])
            input_ids[r, start : start + n] = cut[i]["input_ids"]
            labels[r, start + 1 : start + n] = cut[i]["labels"][1:]
            positions[r, start : start + n] = torch.arange(n)
            start += n
        length[r] = start
    return {"input_ids": input_ids, "labels": labels, "positions": positions, "length": length}
