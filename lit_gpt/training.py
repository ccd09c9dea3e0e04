"""What every finetune loop shares: the learning-rate schedule, the masked loss, and resumable training state."""
from __future__ import annotations

import csv
import math
import os
import random
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from lit_gpt.data.tokenize import IGNORE_INDEX

STATE_NAME = "training_state.pt"


def effective_warmup(warmup_steps: int, max_steps: int) -> int:
    """Warm-up capped at half the run, so a short run still decays to its minimum instead of ending mid-ramp."""
    return min(warmup_steps, max_steps // 2)


def lr_at(step: int, max_steps: int, learning_rate: float, warmup_steps: int, min_lr: float = 0.0) -> float:
    """Learning rate for optimizer step `step` (1-based): linear warm-up from 0 over `warmup_steps`, then cosine
    decay that reaches `min_lr` exactly at `max_steps`, the real number of optimizer steps of the run."""
    if step <= warmup_steps:
        return learning_rate * step / warmup_steps
    progress = (step - warmup_steps) / max(1, max_steps - warmup_steps)
    return min_lr + 0.5 * (learning_rate - min_lr) * (1 + math.cos(math.pi * min(progress, 1.0)))


def masked_loss_sum(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Summed next-token cross-entropy over the trainable positions, and how many there were.

    logits (B, T, V) predict labels shifted by one. Summing (not averaging) per micro-batch lets the caller
    divide by the trainable tokens of the whole global batch, so every token weighs the same however the
    tokens fall into micro-batches, devices and padding.
    """
    targets = labels[:, 1:]  # (B, T - 1)
    loss = F.cross_entropy(
        logits[:, :-1].reshape(-1, logits.size(-1)).float(), targets.reshape(-1),
        ignore_index=IGNORE_INDEX, reduction="sum",
    )
    return loss, int((targets != IGNORE_INDEX).sum())


def trainable_tokens(labels: torch.Tensor) -> int:
    return int((labels[:, 1:] != IGNORE_INDEX).sum())


def rng_states() -> dict[str, Any]:
    return {"torch": torch.get_rng_state(), "python": random.getstate()}


def set_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    random.setstate(states["python"])


def save_state(path: Path, state: dict[str, Any]) -> None:
    """Write the training state atomically (temp file + rename): a kill mid-write leaves the previous one intact."""
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_state(path: Path) -> dict[str, Any]:
    # weights_only: tensors, numbers, strings and containers only; never arbitrary pickled objects
    return torch.load(path, map_location="cpu", weights_only=True)


class MetricsCSV:
    """Per-step metrics appended to `out_dir/metrics.csv`, one row per log call, flushed as they come.

    Fabric's CSVLogger starts a fresh file on every launch; a resumed run must keep the steps before its checkpoint
    instead, and drop the ones after it (a killed run logged them but their updates were lost): those are re-run.
    """

    FIELDS = ("step", "epoch", "train_loss", "val_loss", "lr", "step_seconds", "tokens_padded", "tokens_real",
              "tokens_trainable", "real_tokens_per_s", "trainable_tokens_per_s", "peak_memory_mb")

    def __init__(self, path: Path, resume_step: int | None = None) -> None:
        self.path = path
        kept = [r for r in self.rows() if int(r["step"]) <= resume_step] if resume_step is not None else []
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        with tmp.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.FIELDS)
            writer.writeheader()
            writer.writerows(kept)
        os.replace(tmp, path)

    def log(self, metrics: dict[str, Any]) -> None:
        with self.path.open("a", newline="") as f:
            csv.DictWriter(f, fieldnames=self.FIELDS, extrasaction="ignore").writerow(metrics)

    def rows(self) -> list[dict[str, str]]:
        if not self.path.is_file():
            return []
        with self.path.open(newline="") as f:
            return list(csv.DictReader(f))
