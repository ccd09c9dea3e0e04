"""Which examples each optimizer step sees (lit_gpt/batching.py): epochs, orders, resumable positions."""
from __future__ import annotations

import math

import pytest
import torch

from lit_gpt.batching import EpochStream, epoch_order
from lit_gpt.collate import pad_collate, step_batches


def test_epoch_stream_sees_every_example_once_per_epoch_and_resumes() -> None:
    stream = EpochStream(n=10, batch_size=4, seed=7)
    seen = [i for step in range(5) for i in stream.step(step)]  # 20 examples = 2 epochs
    assert sorted(seen[:10]) == list(range(10)) and sorted(seen[10:]) == list(range(10))
    assert seen[:10] != seen[10:]  # reshuffled
    assert EpochStream(n=10, batch_size=4, seed=7).step(3) == stream.step(3)  # the position is the step
    samples = [{"input_ids": torch.arange(n), "labels": torch.arange(n)} for n in (3, 5, 2)]
    assert [b["input_ids"].shape for b in step_batches(samples, 2, max_seq_length=4)] == [(2, 4), (1, 2)]
    assert math.isclose(stream.epoch_of(5), 2.0)
    # epochs end exactly: 3 epochs of 10 at 4 a step are 8 steps, the last one of the 2 examples left
    bounded = EpochStream(n=10, batch_size=4, seed=7, total=30)
    steps = [bounded.step(step) for step in range(bounded.steps())]
    assert bounded.steps() == 8 and [len(s) for s in steps] == [4] * 7 + [2]
    seen = [i for s in steps for i in s]
    assert all(sorted(seen[e * 10 : (e + 1) * 10]) == list(range(10)) for e in range(3))
    assert steps[:5] == [stream.step(step) for step in range(5)]
    assert math.isclose(bounded.epoch_of(8), 3.0) and math.isclose(bounded.epoch_of(7), 2.8)


@pytest.mark.parametrize("order", ["none", "length", "source", "category"])
def test_orders_are_deterministic_and_respect_their_key(order: str) -> None:
    keys = {"none": None, "length": [5, 1, 9, 1, 3, 7], "source": list("aabbba"), "category": list("xyxyxz")}[order]
    first, again, later = (epoch_order(6, 3, e, order, keys) for e in (0, 0, 1))
    assert first == again and sorted(first) == list(range(6))
    if order == "none":
        assert first == later == list(range(6))
    elif order == "length":
        assert [keys[i] for i in first] == sorted(keys)
        assert [keys[i] for i in epoch_order(6, 3, 0, order, keys, descending=True)] == sorted(keys, reverse=True)
    else:
        assert [keys[i] for i in first] == sorted(keys)  # blocked, groups by name
        assert first != later  # reshuffled within groups per epoch


def test_length_grouped_order_cuts_padding_and_stays_random() -> None:
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(5, 400, (1000,), generator=g).tolist()
    samples = [{"input_ids": torch.zeros(n, dtype=torch.long), "labels": torch.zeros(n, dtype=torch.long)}
               for n in lengths]

    def padding(order: str, epoch: int = 0) -> tuple[float, list[int]]:
        stream = EpochStream(1000, batch_size=8, seed=3, order=order, keys=lengths)
        steps = [stream.step(s) for s in range(epoch * 125, (epoch + 1) * 125)]
        padded = sum(pad_collate([samples[i] for i in step])["input_ids"].numel() for step in steps)
        return 1 - sum(lengths) / padded, [i for step in steps for i in step]

    shuffled, _ = padding("shuffle")
    grouped, first = padding("length_grouped")
    _, second = padding("length_grouped", epoch=1)
    assert sorted(first) == sorted(second) == list(range(1000))  # every example once per epoch
    assert shuffled > 0.4 and grouped < 0.05  # padding share of the padded batches
    assert first != second and first == padding("length_grouped")[1]  # reshuffled per epoch, deterministic
    # no curriculum: the first and last 100 steps of the epoch are about equally long on average
    mean = [sum(lengths[i] for i in part) / len(part) for part in (first[:400], first[-400:])]
    assert abs(mean[0] - mean[1]) < 40


def test_interleaved_groups_spread_evenly() -> None:
    keys = ["lima"] * 8 + ["dolly"] * 4
    order = epoch_order(12, 0, 0, "source", keys, interleave=True)
    assert "".join("D" if keys[i] == "dolly" else "L" for i in order) in ("LDLLDLLDLLDL", "DLLDLLDLLDLL", "LLDLLDLLDLLD")
