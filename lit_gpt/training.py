"""What every finetune loop shares: the learning-rate schedule, the masked loss, and resumable training state."""
from __future__ import annotations

import csv
import json
import math
import random
from pathlib import Path
from typing import Any

from functools import partial

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from lit_gpt.data.tokenize import IGNORE_INDEX
from lit_gpt.utils import UserError, atomic_path, atomic_write_text, read_json

STATE_NAME = "training_state.pt"


def effective_warmup(warmup_steps: int, max_steps: int) -> int:
    """Warm-up capped at half the run, so a short run still decays to its minimum instead of ending mid-ramp."""
    return min(warmup_steps, max_steps // 2)


def lr_at(step: int, max_steps: int, learning_rate: float, warmup_steps: int, min_lr: float = 0.0) -> float:
    """Learning rate for optimizer step `step` (1-based): linear warm-up from 0 over `warmup_steps`, then cosine
    decay from `learning_rate` at the first step after the warm-up to `min_lr` one step after the last one,
    `max_steps` being the real number of optimizer steps of the run. So no step is taken at `min_lr`: with the
    default 0 that step would change nothing, and a one-step run would train nothing at all."""
    if step <= warmup_steps:
        return learning_rate * step / warmup_steps
    progress = (step - warmup_steps - 1) / max(1, max_steps - warmup_steps)
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


# eager even when a compiled model calls it as its head (`GPT.forward(head=...)`): keeping only the trainable
# positions gives data-dependent shapes, which would recompile at every step
@torch.compiler.disable
def chunked_loss_sum(hidden: torch.Tensor, head: torch.nn.Module, labels: torch.Tensor,
                     chunk_size: int) -> tuple[torch.Tensor, int]:
    """`masked_loss_sum(head(hidden), labels)` without ever holding the full (B, T, vocab) logits, and with the
    head applied to trainable positions only (masked prompt tokens and padding never reach the vocabulary).

    The head and the cross-entropy run on `chunk_size` positions at a time. A frozen bias-free `nn.Linear` head
    (every family here, unless LoRA targets the head) takes the fused path, `_LinearCrossEntropy`: each chunk's
    gradient is computed right away, so no chunk's logits outlive it and the head's matmul is not repeated in
    backward. Any other head runs each chunk under activation checkpointing (recomputed in backward). Either way
    memory holds one chunk's logits (chunk_size x vocab floats) instead of all of them: for a 32k vocabulary at
    2048 tokens that is 256 MB of float32 logits (and as much again for their gradient) down to 16 MB at 128.
    """
    hidden, targets = hidden[:, :-1], labels[:, 1:]  # position t predicts label t + 1
    keep = targets != IGNORE_INDEX  # (B, T - 1)
    hidden, targets = hidden[keep], targets[keep]  # (N, n_embd), (N,): the trainable positions, in order
    if type(head) is torch.nn.Linear and head.bias is None and not head.weight.requires_grad:
        return _LinearCrossEntropy.apply(hidden, head.weight, targets, chunk_size), targets.numel()

    def chunk_loss(h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(head(h).float(), y, reduction="sum")

    # 0, but part of the graph: with no trainable position at all, backward still runs through the model (ranks of
    # a sharded model must all take part in it)
    total = hidden[:0].float().sum()
    for start in range(0, hidden.size(0), chunk_size):
        h, y = hidden[start : start + chunk_size], targets[start : start + chunk_size]
        total = total + checkpoint(chunk_loss, h, y, use_reentrant=False)
    return total, targets.numel()


class _LinearCrossEntropy(torch.autograd.Function):
    """sum_i CE(hidden_i @ weight.T, target_i) for a frozen weight, chunk by chunk, with d/d hidden computed during
    the forward pass (softmax - one-hot, times the weight): the logits and their gradient exist one chunk at a
    time, and backward only scales the stored gradient. Logits, softmax and loss in float32 as in
    `masked_loss_sum`."""

    @staticmethod
    def forward(ctx, hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                chunk_size: int) -> torch.Tensor:
        need_grad = ctx.needs_input_grad[0]
        grad_hidden = torch.empty_like(hidden) if need_grad else None
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        for start in range(0, hidden.size(0), chunk_size):
            h, y = hidden[start : start + chunk_size], targets[start : start + chunk_size]
            logits = (h @ weight.T).float()  # (n, vocab)
            lse = torch.logsumexp(logits, dim=-1)  # (n,)
            total += (lse - logits.gather(1, y[:, None]).squeeze(1)).sum()
            if need_grad:
                probs = logits.sub_(lse[:, None]).exp_()  # softmax, in place of the logits
                probs[torch.arange(len(y), device=y.device), y] -= 1
                grad_hidden[start : start + chunk_size] = probs.to(weight.dtype) @ weight
        ctx.save_for_backward(grad_hidden)
        return total

    @staticmethod
    def backward(ctx, grad_total: torch.Tensor):
        (grad_hidden,) = ctx.saved_tensors
        return grad_hidden * grad_total.to(grad_hidden.dtype), None, None, None


def batch_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor], device: torch.device | str,
               chunk_size: int = 128) -> tuple[torch.Tensor, int]:
    """Summed loss and trainable-token count of one micro-batch (padded or packed, `lit_gpt.collate`); with a
    `chunk_size` the head and loss run in chunks (`chunked_loss_sum`), else on the full logits."""
    input_ids, labels = batch["input_ids"].to(device), batch["labels"].to(device)
    positions = batch["positions"].to(device) if "positions" in batch else None
    if not chunk_size:
        return masked_loss_sum(model(input_ids, positions=positions), labels)
    # the head applied inside the model's forward, where FSDP has its weight gathered
    return model(input_ids, positions=positions, head=partial(chunked_loss_sum, labels=labels, chunk_size=chunk_size))


def trainable_tokens(labels: torch.Tensor) -> int:
    return int((labels[:, 1:] != IGNORE_INDEX).sum())


def rng_states() -> dict[str, Any]:
    """This process' random states: torch's (CPU, and every CUDA device when there are any) and Python's."""
    states = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    random.setstate(states["python"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def all_rng_states(fabric) -> list[dict[str, Any]]:
    """Every rank's `rng_states()`, by rank; call on all ranks. They drift apart (each rank draws dropout masks for
    batches of its own shapes), so each resumes from its own."""
    if fabric.world_size == 1:
        return [rng_states()]
    gathered: list[Any] = [None] * fabric.world_size
    torch.distributed.all_gather_object(gathered, rng_states())
    return gathered


def set_rank_rng_states(fabric, saved: list[dict[str, Any]] | dict[str, Any]) -> None:
    """Resume this rank's random states from `all_rng_states()` (or one rank's dict, as older states hold); on
    another number of ranks than saved, rank 0's go to the ranks that have none."""
    saved = saved if isinstance(saved, list) else [saved]
    set_rng_states(saved[fabric.global_rank] if fabric.global_rank < len(saved) else saved[0])


def save_state(path: Path, state: dict[str, Any]) -> None:
    """Write the training state atomically (temp file + rename): a kill mid-write leaves the previous one intact."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


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
        with atomic_path(path) as tmp, tmp.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.FIELDS)
            writer.writeheader()
            writer.writerows(kept)

    def log(self, metrics: dict[str, Any]) -> None:
        with self.path.open("a", newline="") as f:
            csv.DictWriter(f, fieldnames=self.FIELDS, extrasaction="ignore").writerow(metrics)

    def rows(self) -> list[dict[str, str]]:
        if not self.path.is_file():
            return []
        with self.path.open(newline="") as f:
            return list(csv.DictReader(f))


def neftune_hook(alpha: float):
    """A forward hook for the embedding that adds NEFTune noise while training (Jain et al. 2023,
    https://arxiv.org/abs/2310.05914): uniform in [-1, 1] scaled by alpha / sqrt(sequence length x n_embd)."""

    def hook(module: torch.nn.Module, inputs: Any, output: torch.Tensor) -> torch.Tensor | None:
        if not module.training:
            return None
        scale = alpha / math.sqrt(output.size(1) * output.size(2))  # output (B, T, n_embd)
        return output + torch.empty_like(output).uniform_(-scale, scale)

    return hook


def read_dev_prompts(path: Path) -> list[str]:
    """Instructions to answer after every epoch: a JSON list of strings (or of records with an `instruction`),
    or a text file with one per line."""
    if not path.is_file():
        raise UserError(f"--dev_prompts {path} does not exist; pass a JSON list of instructions or a text file")
    if path.suffix == ".json":
        items = read_json(path)
        if not isinstance(items, list):
            raise UserError(f"{path}: expected a JSON list of instructions")
        prompts = [item["instruction"] if isinstance(item, dict) and "instruction" in item else item for item in items]
        bad = [i for i, p in enumerate(prompts) if not isinstance(p, str) or not p.strip()]
        if bad:
            raise UserError(f"{path}: item {bad[0]} is not an instruction string (or a record with `instruction`)")
        return prompts
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


class EpochTracker:
    """What each epoch ended with: validation loss and the answers to the dev prompts, written side by side to
    `dev_generations.md` (and `.jsonl`) so a user can pick an epoch by reading; and early stopping on the loss."""

    def __init__(self, out_dir: Path, patience: int | None) -> None:
        self.out_dir, self.patience = out_dir, patience
        self.records: list[dict[str, Any]] = []

    def record(self, epoch: int, step: int, val_loss: float | None, answers: dict[str, str]) -> None:
        """`val_loss` None: no validation examples (early stopping then never stops)."""
        self.records.append({"epoch": epoch, "step": step, "val_loss": val_loss, "answers": answers})
        self.out_dir.mkdir(parents=True, exist_ok=True)
        lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in self.records)
        atomic_write_text(self.out_dir / "dev_generations.jsonl", lines)
        atomic_write_text(self.out_dir / "dev_generations.md", self.markdown())

    @property
    def best_epoch(self) -> int | None:
        scored = [r for r in self.records if r["val_loss"] is not None]
        return min(scored, key=lambda r: r["val_loss"])["epoch"] if scored else None

    def should_stop(self) -> bool:
        if self.patience is None or self.best_epoch is None:
            return False
        return self.records[-1]["epoch"] - self.best_epoch >= self.patience

    def markdown(self) -> str:
        cell = lambda text: text.replace("|", "\\|").replace("\n", "<br>")  # noqa: E731
        out = ["# After each epoch\n", "| epoch | step | validation loss |", "|---|---|---|"]
        loss = lambda value: "none" if value is None else f"{value:.4f}"  # noqa: E731
        out += [f"| {r['epoch']} | {r['step']} | {loss(r['val_loss'])} |" for r in self.records]
        prompts = list(self.records[-1]["answers"]) if self.records else []
        for i, prompt in enumerate(prompts, 1):
            out += [f"\n## {i}. {cell(prompt)}\n", "| epoch | answer |", "|---|---|"]
            out += [f"| {r['epoch']} | {cell(r['answers'].get(prompt, ''))} |" for r in self.records]
        return "\n".join(out) + "\n"

    def state_dict(self) -> dict[str, Any]:
        return {"records": self.records}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.records = list(state["records"])
