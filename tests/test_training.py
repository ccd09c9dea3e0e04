"""What every finetune loop shares (lit_gpt/training.py): the masked loss, the schedule, NEFTune, early stopping."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from lit_gpt.collate import pad_collate
from lit_gpt.data.tokenize import IGNORE_INDEX
from lit_gpt.training import EpochTracker, effective_warmup, lr_at, masked_loss_sum, neftune_hook


def test_padding_and_masked_positions_do_not_change_the_loss() -> None:
    torch.manual_seed(0)
    from lit_gpt.config import Config
    from lit_gpt.model import GPT

    model = GPT(Config(vocab_size=50, n_layer=1, n_embd=16, n_head=2, intermediate_size=32, block_size=32)).eval()
    a = {"input_ids": torch.tensor([1, 5, 7, 9, 2]), "labels": torch.tensor([IGNORE_INDEX, IGNORE_INDEX, 7, 9, 2])}
    b = {"input_ids": torch.tensor([1, 8, 3, 2]), "labels": torch.tensor([IGNORE_INDEX, 8, 3, 2])}
    with torch.no_grad():
        separate = [masked_loss_sum(model(s["input_ids"][None]), s["labels"][None]) for s in (a, b)]
        batch = pad_collate([a, b], pad_id=0)
        together = masked_loss_sum(model(batch["input_ids"]), batch["labels"])
        # the pad token id changes nothing either
        batch_other_pad = pad_collate([a, b], pad_id=33)
        other = masked_loss_sum(model(batch_other_pad["input_ids"]), batch_other_pad["labels"])
    assert together[1] == separate[0][1] + separate[1][1] == 6
    torch.testing.assert_close(together[0], separate[0][0] + separate[1][0])
    torch.testing.assert_close(other[0], together[0])


def test_schedule_warms_up_and_decays_to_its_minimum_just_after_the_last_step() -> None:
    lrs = [lr_at(step, 50, 1e-3, 5, min_lr=1e-5) for step in range(1, 52)]
    assert lrs[0] == pytest.approx(2e-4) and lrs[4] == lrs[5] == pytest.approx(1e-3)
    assert all(x > y for x, y in zip(lrs[5:], lrs[6:]))  # strictly decaying after warm-up
    # step 51 is never taken: every step of the run trains, the last one at a small but real rate
    assert lrs[50] == 1e-5 and lrs[49] > 1e-5
    assert lrs[49] == pytest.approx(1e-5 + 0.5 * (1e-3 - 1e-5) * (1 + math.cos(math.pi * 44 / 45)))
    # a one-step run, with or without warm-up, trains at a learning rate above 0
    assert lr_at(1, 1, 1e-3, effective_warmup(10, 1)) == 1e-3
    assert effective_warmup(100, 8) == 4 and effective_warmup(10, 1000) == 10


def test_neftune_noise_only_while_training() -> None:
    embed = torch.nn.Embedding(10, 8)
    embed.register_forward_hook(neftune_hook(5.0))
    idx = torch.tensor([[1, 2, 3, 4]])
    clean = embed.eval()(idx)
    noisy = embed.train()(idx)
    noise = noisy - clean
    assert noise.abs().max() <= 5.0 / (4 * 8) ** 0.5 and noise.abs().max() > 0.1


def test_early_stopping_counts_epochs_since_the_best(tmp_path: Path) -> None:
    tracker = EpochTracker(tmp_path, patience=2)
    stops = []
    for epoch, loss in enumerate([3.0, 2.0, 2.5, 2.1, 2.6], 1):
        tracker.record(epoch, epoch * 10, loss, {})
        stops.append(tracker.should_stop())
    assert stops == [False, False, False, True, True] and tracker.best_epoch == 2
    restored = EpochTracker(tmp_path, patience=2)
    restored.load_state_dict(tracker.state_dict())
    assert restored.should_stop() and restored.best_epoch == 2
    assert not EpochTracker(tmp_path, patience=None).should_stop()
