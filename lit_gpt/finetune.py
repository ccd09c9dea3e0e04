"""What finetune/lora.py and finetune/full.py share: their common flags and the pieces of their loop.

A finetune script reads top to bottom as one loop (setup, model, what trains, loop, save); what would be the same
in every such script lives here, once:

    FinetuneArgs           the flags both scripts take (each script adds its own and sets its hyperparameters)
    launch                 checks the flags, starts Lightning Fabric (one process per device)
    load_data              tokenizer, train/test splits, max_seq_length, prompt style, dev prompts
    plan_steps -> Plan     how many optimizer steps, which examples each one sees, its learning rate
    out_dir_lock           one run at a time in an out_dir
    load_resume_state      the state to resume, checked against this run; or a fresh start (never over a run)
    load_base_model        the converted checkpoint, on the device (or on CPU for FSDP to shard)
    train_step             one optimizer step's forwards and backwards over the micro-batches (no update)
    clip_gradients, check_finite    the gradient norm, and a clean stop on a NaN/inf loss or gradient
    validate, sample, dev_answers    evaluation and generation while training
    RunLog                 metrics to TensorBoard, metrics.csv and stdout; the summary and the loss plot at the end
    save_checkpoint        training state (optimizer, random states, position) for --resume
    save_model_folder      full finetuning's output: a checkpoint folder like the one it started from
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Literal

import torch

from lit_gpt.batching import EpochStream, Order, order_keys
from lit_gpt.collate import step_batches
from lit_gpt.data.dataset import TokenizedDataset
from lit_gpt.fsdp import is_sharded, lockstep_batches
from lit_gpt.prompts import PromptStyle, load_prompt_style, save_checkpoint_prompt_style
from lit_gpt.tokenizer import Tokenizer
from lit_gpt.training import (
    STATE_NAME, EpochTracker, MetricsCSV, all_rng_states, batch_loss, effective_warmup, load_state, lr_at,
    read_dev_prompts, save_state, trainable_tokens,
)
from lit_gpt.utils import (
    DOWNLOAD_HINT, UserError, default_precision, peak_memory_mb, precision_dtype, require_dir, resolve_checkpoint_dir,
    resolve_data_dir,
)


@dataclass(kw_only=True)
class FinetuneArgs:
    """The flags every finetune script takes. The hyperparameters have no default here: each script sets its own at
    its top, where users edit them."""

    checkpoint_dir: Path
    """A converted checkpoint (`checkpoints/ORG/NAME` or just `ORG/NAME`)."""
    data_dir: Path = Path("data/alpaca")
    """A folder written by a `scripts/prepare_*.py` script for this checkpoint's tokenizer."""
    out_dir: Path
    """Where the weights, training state, logs and loss plot go."""
    precision: str | None = None
    """Lightning Fabric precision: 32-true, bf16-true, 16-true, bf16-mixed or 16-mixed (default: bf16-true on a GPU
    that supports it, else 32-true)."""
    devices: int = 1
    """Number of devices (GPUs, or CPU processes) to train on."""
    strategy: str = "auto"
    """Fabric strategy: auto, ddp or fsdp (see each script's --help for what fsdp shards)."""
    resume: bool | Literal["auto"] = False
    """Continue from the training state in out_dir: true (it must exist) or auto (if it exists). The data, batch
    size, learning rate schedule and number of steps must be those the run started with."""
    overwrite: bool = False
    """Start a new run in an out_dir that holds one, deleting that run's weights, training state, logs and epoch
    folders (without it, such an out_dir is refused)."""
    seed: int = 1337
    """Seed for the initialization, the data order and dropout."""

    learning_rate: float
    """Peak learning rate of AdamW, reached after the warm-up."""
    batch_size: int
    """Examples per optimizer step, over all devices."""
    micro_batch_size: int
    """Examples per forward/backward pass on one device; with --packing, the step's examples go into rows of up to
    micro_batch_size x max_seq_length tokens, one row per pass, with no padding."""
    epochs: int
    """Passes over the training split (ignored when max_iters is set)."""
    max_iters: int | None
    """Micro-batch iterations per device to run instead of epochs."""
    warmup_steps: int
    """Optimizer steps of linear warm-up from 0 (capped at half the run)."""
    min_lr: float
    """Learning rate the cosine decay ends at, after the last optimizer step."""
    weight_decay: float
    """AdamW weight decay on the trained parameters."""
    grad_clip: float
    """Maximum gradient norm (0 disables clipping)."""
    override_max_seq_length: int | None
    """Cut training examples at this many tokens (None: the longest example); e.g. 2048 bounds memory."""

    eval_interval: int = 50
    """Optimizer steps between validation loss + sample generation."""
    eval_iters: int = 100
    """Validation micro-batches per evaluation (at most)."""
    save_interval: int = 100
    """Optimizer steps between checkpoints of the weights and training state."""
    activation_checkpointing: bool = False
    """Recompute block activations in the backward pass: less memory, one more forward's compute."""
    order: Order = "shuffle"
    """The order examples are seen in each epoch: shuffle (fresh every epoch), none (as in the data folder), length
    (tokens), score (a column of scripts/score_dataset.py), source or category (grouped), length_grouped (random,
    but each step's examples of similar length: little padding without --packing)."""
    order_descending: bool = False
    """Sort largest first (length, score) or groups in reverse name order."""
    order_interleave: bool = False
    """With source/category, spread the groups evenly through each epoch instead of in blocks."""
    order_score_column: str = "ifd"
    """The score column `--order score` sorts by (e.g. ifd, loss_with_prompt)."""
    neftune_alpha: float = 0.0
    """NEFTune (Jain et al. 2023): uniform noise of this scale on the input embeddings while training (5 in the
    paper); 0 disables it."""
    early_stopping_patience: int | None = None
    """Stop after this many epochs without a better validation loss (None: never)."""
    dev_prompts: Path | None = None
    """A JSON list (or one-per-line text file) of instructions answered with greedy decoding after every epoch,
    written side by side to out_dir/dev_generations.md to pick an epoch by reading answers."""
    packing: bool = True
    """Pack each micro-batch's examples into one row of up to micro_batch_size x max_seq_length tokens, with
    attention confined to each example and positions restarting: the same examples per step and the same loss as
    padded, with no padding tokens at all (false: pad each micro-batch to its longest example)."""
    lm_head_chunk_size: int = 128
    """Compute the output head and loss on this many trainable positions at a time (masked prompt tokens and padding
    skipped), so the full tokens x vocabulary logits are never held at once; 0 computes the full logits."""
    compile: bool = False
    """Wrap the model in torch.compile (dynamic shapes; the first steps pay for compilation, which pays off on GPUs
    and has not on CPUs)."""


# ------------------------------------------------------------------------------------ setup


def launch(args: FinetuneArgs, fsdp_strategy: Callable[[], Any] | None = None) -> tuple[Any, FinetuneArgs]:
    """Check the flags, resolve the folders and precision, and start Fabric: returns it and the resolved args.
    `fsdp_strategy` makes what `--strategy fsdp` means for this script (None: FSDP is not offered)."""
    import lightning as L
    from lightning.fabric.loggers import TensorBoardLogger

    checkpoint_dir = require_dir(resolve_checkpoint_dir(args.checkpoint_dir), "checkpoint folder", DOWNLOAD_HINT)
    data_dir = require_dir(resolve_data_dir(args.data_dir), "data folder",
                           "Prepare data first, e.g. python scripts/prepare_alpaca.py")
    if args.batch_size % (args.devices * args.micro_batch_size):
        raise UserError(f"batch_size {args.batch_size} must be a multiple of devices x micro_batch_size "
                        f"({args.devices} x {args.micro_batch_size})")
    if args.strategy.startswith("fsdp") and (args.strategy != "fsdp" or fsdp_strategy is None):
        supported = "use --strategy fsdp (see lit_gpt/fsdp.py)" if fsdp_strategy is not None else "use --strategy ddp"
        raise UserError(f"--strategy {args.strategy} is not supported here; {supported}")
    args = dataclasses.replace(args, checkpoint_dir=checkpoint_dir, data_dir=data_dir, out_dir=Path(args.out_dir),
                               precision=args.precision or default_precision())
    fabric = L.Fabric(devices=args.devices, strategy=fsdp_strategy() if args.strategy == "fsdp" else args.strategy,
                      precision=args.precision, loggers=TensorBoardLogger(args.out_dir, name="logs", version=""))
    fabric.launch()
    fabric.seed_everything(args.seed)
    return fabric, args


@dataclass
class Data:
    tokenizer: Tokenizer
    train: TokenizedDataset
    val: TokenizedDataset
    max_seq_length: int  # the row length: packing fills rows up to it even when every example is shorter
    style: PromptStyle  # how the data wrapped instructions, for the dev prompts and saved weights
    dev_prompts: list[str]
    fingerprint: str  # data_fingerprint(data_dir)


def load_data(fabric, args: FinetuneArgs) -> Data:
    tokenizer = Tokenizer(args.checkpoint_dir)
    train = TokenizedDataset(args.data_dir, "train", tokenizer)
    val = TokenizedDataset(args.data_dir, "test", tokenizer)
    if not len(train):
        raise UserError(f"{args.data_dir / 'train'} has no examples; prepare the data again with more rows")
    if not len(val):
        if args.early_stopping_patience is not None:
            raise UserError(f"--early_stopping_patience needs validation examples, and {args.data_dir / 'test'} has "
                            "none; prepare the data with --test_split_fraction above 0, or leave early stopping off")
        fabric.print(f"{args.data_dir / 'test'} has no examples: no validation, so no val_loss is reported")
    max_seq_length = args.override_max_seq_length or int(train.lengths.max())
    cut = int((train.lengths > max_seq_length).sum())
    fabric.print(f"{len(train):,} training / {len(val):,} validation examples; max_seq_length {max_seq_length} "
                 f"({cut} training examples longer than that are cut, losing their end and EOS)")
    style = load_prompt_style(train.meta.get("prompt_style", "auto"), tokenizer)
    dev = read_dev_prompts(args.dev_prompts) if args.dev_prompts else []
    return Data(tokenizer, train, val, max_seq_length, style, dev, data_fingerprint(args.data_dir))


def load_base_model(fabric, args: FinetuneArgs, max_seq_length: int):
    """The checkpoint's model in the run's precision: on the device, or on CPU when FSDP will shard it (FSDP moves
    it to the device one unit at a time as it shards it: the whole never sits on one device)."""
    from lit_gpt.checkpoint import load_model

    model = load_model(args.checkpoint_dir, device="cpu" if is_sharded(fabric) else fabric.device,
                       dtype=precision_dtype(args.precision))
    if max_seq_length > model.config.block_size:
        raise UserError(f"max_seq_length {max_seq_length} exceeds the model's context ({model.config.block_size} "
                        f"tokens); set --override_max_seq_length {model.config.block_size}")
    model.max_seq_length = max_seq_length
    model.activation_checkpointing = args.activation_checkpointing
    return model


LOCK_NAME = "finetune.lock"


@contextlib.contextmanager
def out_dir_lock(fabric, out_dir: Path) -> Iterator[None]:
    """Hold `out_dir/finetune.lock` for the run, so two runs never write one out_dir at once. Rank 0 creates it
    exclusively (O_EXCL) with its process id; a lock whose process is gone (a killed run) is stale and taken over."""
    error = _take_lock(out_dir / LOCK_NAME) if fabric.global_rank == 0 else None
    error = fabric.broadcast(error)
    if error:
        raise UserError(error)
    try:
        yield
    finally:
        if fabric.global_rank == 0 and _lock_pid(out_dir / LOCK_NAME) == os.getpid():
            (out_dir / LOCK_NAME).unlink(missing_ok=True)


def _take_lock(path: Path) -> str | None:
    """None when this process now holds the lock at `path`, else why not."""
    path.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(3):  # a stale lock removed by another starting run as well: try again
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            pid = _lock_pid(path)
            if pid is not None and _alive(pid):
                return (f"{path.parent} is in use by another finetune run (process {pid}, see {path}); wait for it to "
                        "end, or pass another --out_dir")
            path.unlink(missing_ok=True)  # stale: the run that took it is gone
            continue
        with os.fdopen(fd, "w") as f:
            f.write(f"{os.getpid()}\n")
        return None
    return f"could not take {path}: other runs keep starting in {path.parent}; pass another --out_dir"


def _lock_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):  # gone, or being written this instant
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only checks that the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


def data_fingerprint(data_dir: Path) -> str:
    """What identifies a prepared dataset for resuming, cheaply: its meta.json and, per split, the example
    boundaries and provenance (each example's text hash), never the token arrays themselves."""
    digest = hashlib.sha256()
    for name in ("meta.json", "train/offsets.npy", "train/provenance.jsonl", "test/offsets.npy",
                 "test/provenance.jsonl"):
        path = data_dir / name
        digest.update(name.encode() + (path.read_bytes() if path.is_file() else b"<missing>"))
    return digest.hexdigest()[:16]


def run_identity(args: FinetuneArgs, plan: Plan, data: Data) -> dict[str, Any]:
    """What defines a run, saved in its training state: resuming with any of it changed would silently train
    another run (other examples per step, another schedule, or nothing at all), so it is refused."""
    return {"data": data.fingerprint, "batch_size": args.batch_size, "max_seq_length": data.max_seq_length,
            "max_steps": plan.max_steps, "learning_rate": args.learning_rate, "min_lr": args.min_lr,
            "warmup_steps": args.warmup_steps, "weight_decay": args.weight_decay, "order": args.order,
            "seed": args.seed}


def load_resume_state(fabric, args: FinetuneArgs, identity: dict[str, Any], weights_name: str) -> dict | None:
    """The training state to resume from (checked against this run's `identity`), or None for a fresh run. A fresh
    run never starts over a finished or resumable one in out_dir, unless --overwrite says so (it then removes it)."""
    out_dir, path = args.out_dir, args.out_dir / STATE_NAME
    if args.resume is True and not path.is_file():
        raise UserError(f"--resume true but {path} does not exist; use --resume auto to start fresh when absent")
    if args.resume and path.is_file():
        state = load_state(path)
        for key, value in identity.items():
            saved = state.get("run", {}).get(key, value)  # states written before this check have no "run"
            if saved != value:
                what = f"data ({args.data_dir} changed, or is another dataset)" if key == "data" else key
                raise UserError(f"--resume: {path} was trained with {what} {saved!r}, this run has {value!r}; resume "
                                f"with the same {key}, or start a new run with another --out_dir")
        return state
    existing = [name for name in (STATE_NAME, weights_name) if (out_dir / name).is_file()]
    if existing and not args.overwrite:
        raise UserError(f"{out_dir} already holds a run ({existing[0]}); pass --resume true (or auto) to continue "
                        "it, another --out_dir for a new run, or --overwrite true to replace it")
    if existing and fabric.global_rank == 0:
        _remove_run(out_dir, weights_name)
    fabric.barrier()
    return None


def _remove_run(out_dir: Path, weights_name: str) -> None:
    """What a finetune run writes into out_dir, and nothing else."""
    for name in (STATE_NAME, weights_name, "metrics.csv", "loss.png", "dev_generations.md", "dev_generations.jsonl"):
        (out_dir / name).unlink(missing_ok=True)
    for folder in [out_dir / "logs", *out_dir.glob("epoch-*")]:
        if folder.is_dir():
            shutil.rmtree(folder)


# ------------------------------------------------------------------------------------ the steps


@dataclass
class Plan:
    """The run's optimizer steps: which examples each sees (`stream`), how many, and the learning rate schedule."""

    stream: EpochStream
    max_steps: int
    warmup: int
    accumulation: int  # micro-batches per optimizer step on each device
    args: FinetuneArgs
    max_seq_length: int

    def lr(self, step: int) -> float:
        """The learning rate of optimizer step `step` (1-based)."""
        return lr_at(step, self.max_steps, self.args.learning_rate, self.warmup, self.args.min_lr)

    def batches(self, fabric, train: TokenizedDataset, step: int) -> list[dict[str, torch.Tensor]]:
        """This device's micro-batches for optimizer step `step` (0-based)."""
        mine = self.stream.step(step)[fabric.global_rank :: fabric.world_size]
        return step_batches([train[i] for i in mine], self.args.micro_batch_size, self.max_seq_length,
                            self.args.packing)

    def epoch(self, step: int) -> float:
        return self.stream.epoch_of(step)

    def ends_epoch(self, step: int) -> bool:
        """Whether optimizer step `step` (1-based) completes an epoch."""
        return int(self.stream.epoch_of(step)) > int(self.stream.epoch_of(step - 1))


def plan_steps(fabric, args: FinetuneArgs, data: Data) -> Plan:
    world = fabric.world_size
    accumulation = args.batch_size // (world * args.micro_batch_size)
    stream = EpochStream(len(data.train), args.batch_size, seed=args.seed, order=args.order,
                         keys=order_keys(data.train, args.order, args.order_score_column, args.order_descending),
                         descending=args.order_descending, interleave=args.order_interleave,
                         total=None if args.max_iters is not None else args.epochs * len(data.train))
    # max_iters counts micro-batches; epochs end exactly, the last step taking what is left of the last epoch
    if args.max_iters is not None and args.max_iters < accumulation:
        raise UserError(f"--max_iters {args.max_iters} is less than one optimizer step: max_iters x micro_batch_size "
                        f"x devices / batch_size = {args.max_iters} x {args.micro_batch_size} x {world} / "
                        f"{args.batch_size} = {args.max_iters * args.micro_batch_size * world / args.batch_size:.2f} "
                        f"steps; pass --max_iters {accumulation} or more, or a smaller --batch_size")
    max_steps = args.max_iters // accumulation if args.max_iters is not None else stream.steps()
    warmup = effective_warmup(args.warmup_steps, max_steps)
    fabric.print(f"{max_steps} optimizer steps of {args.batch_size} examples ({accumulation} accumulated "
                 f"micro-batches of {args.micro_batch_size} on each of {world} device(s)), "
                 f"{stream.epoch_of(max_steps):.2f} epochs; {warmup} warm-up steps"
                 + (f" (warmup_steps {args.warmup_steps} capped at half the run)" if warmup < args.warmup_steps else "")
                 + (f"; the last {args.max_iters % accumulation} of --max_iters {args.max_iters} do not fill a step "
                    "and are not run" if args.max_iters is not None and args.max_iters % accumulation else ""))
    return Plan(stream, max_steps, warmup, accumulation, args, data.max_seq_length)


def set_lr(optimizer, lr: float) -> float:
    for group in optimizer.param_groups:
        group["lr"] = lr
    return lr


def train_step(fabric, model, batches: list[dict[str, torch.Tensor]], chunk_size: int) -> dict[str, Any]:
    """Forward and backward over this device's micro-batches of one optimizer step, gradients accumulated (the
    optimizer update is the caller's). Returns the step's numbers over all devices: `train_loss` (mean per
    trainable token), `tokens_padded` (computed), `tokens_real` (of the examples: prompt, BOS, EOS),
    `tokens_trainable` (carrying loss)."""
    world = fabric.world_size
    # the loss is a mean over the trainable tokens of the whole global batch, on every device
    local_tokens = sum(trainable_tokens(b["labels"]) for b in batches)
    global_tokens = int(fabric.all_reduce(torch.tensor(local_tokens, device=fabric.device), reduce_op="sum"))
    counts = torch.tensor([sum(b["input_ids"].numel() for b in batches),
                           sum(b["length"].sum() for b in batches)], device=fabric.device)
    loss_sum = torch.zeros((), device=fabric.device)
    batches = lockstep_batches(fabric, batches)  # several devices: no rank without a pass (FSDP: as many)
    for i, batch in enumerate(batches):
        with fabric.no_backward_sync(model, enabled=i < len(batches) - 1):
            loss, _ = batch_loss(model, batch, fabric.device, chunk_size)
            # gradients get averaged over devices (by DDP or FSDP in backward, LoRA's replicated adapters under FSDP
            # by lit_gpt/fsdp.py); scaling by world size turns that into the global mean
            fabric.backward(loss * world / max(global_tokens, 1))
        loss_sum += loss.detach()
    padded, real = (int(c) for c in fabric.all_reduce(counts, reduce_op="sum"))
    train_loss = float(fabric.all_reduce(loss_sum, reduce_op="sum")) / max(global_tokens, 1)
    return {"train_loss": train_loss, "tokens_padded": padded, "tokens_real": real, "tokens_trainable": global_tokens}


def clip_gradients(fabric, model, optimizer, grad_clip: float) -> float:
    """Clip the gradients to norm `grad_clip` (0: no clipping) and return their norm before clipping, over all
    devices: measured either way, so that `check_finite` sees a NaN or inf gradient before the update."""
    norm = fabric.clip_gradients(model, optimizer, max_norm=grad_clip or math.inf, error_if_nonfinite=False)
    return float(norm)


def check_finite(step: int, train_loss: float, grad_norm: float, saved_step: int | None, out_dir: Path) -> None:
    """Stop the run (one line, exit status 1) before the update of optimizer step `step` when its loss or gradient
    is not finite: the weights are still the last finite ones, and nothing non-finite is ever saved."""
    bad = [f"{name} is {value}" for name, value in (("training loss", train_loss), ("gradient norm", grad_norm))
           if not math.isfinite(value)]
    if bad:
        kept = (f"the checkpoint of step {saved_step} in {out_dir} is kept (--resume true continues from it)"
                if saved_step else "nothing was saved")
        raise UserError(f"step {step}: the {bad[0]}, so the run stopped before updating the weights; {kept}. Lower "
                        "--learning_rate, and keep --grad_clip above 0")


# ------------------------------------------------------------------------------------ evaluation


@torch.no_grad()
def validate(fabric, model, val: TokenizedDataset, args: FinetuneArgs, max_seq_length: int) -> float | None:
    """Mean loss per trainable token over the first `eval_iters` x `micro_batch_size` validation examples; None when
    there is nothing to validate on (never a loss of 0)."""
    model.eval()
    total, tokens = torch.zeros((), device=fabric.device), 0
    # the same examples whether packed or not, so validation losses compare across runs
    mine = list(range(len(val)))[fabric.global_rank :: fabric.world_size][: args.eval_iters * args.micro_batch_size]
    batches = step_batches([val[i] for i in mine], args.micro_batch_size, max_seq_length, args.packing)
    for batch in lockstep_batches(fabric, batches):
        loss, n = batch_loss(model, batch, fabric.device, args.lm_head_chunk_size)
        total += loss
        tokens += n
    model.train()
    tokens = int(fabric.all_reduce(torch.tensor(tokens, device=fabric.device), reduce_op="sum"))
    total = float(fabric.all_reduce(total, reduce_op="sum"))
    return total / tokens if tokens else None


def prompt_of(example: dict) -> torch.Tensor:
    """The tokens before the first trainable one: the prompt the model should answer."""
    trainable = (example["labels"] != -100).nonzero()
    return example["input_ids"][: int(trainable[0]) if len(trainable) else len(example["input_ids"])]


def sample(model, tokenizer: Tokenizer, prompt: torch.Tensor, device, max_new_tokens: int = 40,
           lockstep: bool = False) -> str:
    """Greedy continuation of `prompt`, up to its first stop token (EOS, end of turn), which is cut off. In `lockstep`
    (ranks generating through a sharded model, which must all run the same forwards) all `max_new_tokens` are
    computed, stop token or not, and cut after."""
    from lit_gpt.generate import generate_tokens, until_stop

    model.eval()
    new = list(generate_tokens(model, prompt.to(device), max_new_tokens=max_new_tokens, top_k=1,
                               stop_ids=() if lockstep else tokenizer.stop_ids))
    model.train()
    new = until_stop(new, tokenizer.stop_ids)
    return tokenizer.decode(new, skip_special_tokens=True)


def dev_answers(model, data: Data, device, lockstep: bool) -> list[str]:
    """Greedy answers to the dev prompts, each wrapped in the data's prompt style."""
    answers = []
    for instruction in data.dev_prompts:
        prompt = torch.tensor(data.tokenizer.encode(data.style.prompt(instruction), bos=data.style.bos))
        answers.append(sample(model, data.tokenizer, prompt, device, max_new_tokens=128, lockstep=lockstep))
    return answers


# ------------------------------------------------------------------------------------ logs and checkpoints


class RunLog:
    """Each step's metrics to TensorBoard, out_dir/metrics.csv (rank 0) and one printed line; the run's summary and
    loss plot at the end."""

    def __init__(self, fabric, out_dir: Path, resumed_step: int) -> None:
        self.fabric, self.out_dir = fabric, out_dir
        resume_step = resumed_step if resumed_step > 0 else None
        self.csv = MetricsCSV(out_dir / "metrics.csv", resume_step=resume_step) if fabric.global_rank == 0 else None
        self.history: list[dict[str, Any]] = []
        self.start = time.perf_counter()

    def initial(self, val_loss: float | None) -> None:
        """The validation loss before finetuning (step 0), when there is validation data."""
        if val_loss is not None:
            self.log({"step": 0, "val_loss": val_loss})
            self.fabric.print(f"step 0 | val_loss {val_loss:.4g} (before finetuning)")

    def log(self, metrics: dict[str, Any]) -> None:
        metrics = {k: v for k, v in metrics.items() if v is not None}  # e.g. no val_loss without validation data
        self.fabric.log_dict(metrics, step=metrics["step"])
        if self.csv:
            self.csv.log(metrics)
        self.history.append(metrics)

    def step(self, metrics: dict[str, Any]) -> None:
        self.log(metrics)
        self.fabric.print(" | ".join(_fmt(k, v) for k, v in metrics.items() if v is not None))

    def finish(self, steps: int, weights: Path) -> dict[str, Any]:
        for logger in self.fabric.loggers:
            logger.finalize("success")
        history = self.history
        summary = {"steps": steps, "seconds": time.perf_counter() - self.start,
                   "peak_memory_mb": peak_memory_mb(self.fabric.device),
                   "initial_val_loss": history[0].get("val_loss") if history and history[0]["step"] == 0 else None,
                   "final_train_loss": history[-1].get("train_loss") if history else None,
                   "final_val_loss": history[-1].get("val_loss") if history else None}
        self.fabric.print(f"Done: {summary}. Weights: {weights}")
        if self.csv:
            plot_losses(self.csv.rows(), self.out_dir / "loss.png")
        return {"history": history, **summary}


def step_metrics(step: int, plan: Plan, lr: float, stats: dict[str, Any], seconds: float, device) -> dict[str, Any]:
    """The numbers logged for optimizer step `step` (1-based), in the order of metrics.csv."""
    return {"step": step, "epoch": plan.epoch(step), "train_loss": stats["train_loss"], "lr": lr,
            "step_seconds": seconds, "tokens_padded": stats["tokens_padded"], "tokens_real": stats["tokens_real"],
            "tokens_trainable": stats["tokens_trainable"], "real_tokens_per_s": stats["tokens_real"] / seconds,
            "trainable_tokens_per_s": stats["tokens_trainable"] / seconds, "peak_memory_mb": peak_memory_mb(device)}


def _fmt(key: str, value) -> str:
    return f"{key} {value:.4g}" if isinstance(value, float) else f"{key} {value}"


def early_stop(fabric, tracker: EpochTracker, patience: int | None) -> bool:
    """Whether the run stops after this epoch (rank 0 decides, every rank follows)."""
    stop = fabric.broadcast(tracker.should_stop())
    if stop:
        fabric.print(f"Early stopping after epoch {tracker.records[-1]['epoch']}: no better validation loss for "
                     f"{patience} epochs (best: epoch {tracker.best_epoch})")
    return stop


def save_checkpoint(fabric, out_dir: Path, step: int, state: dict[str, Any]) -> int:
    """Write the training state (`state` plus `step` and every rank's random states) atomically on rank 0; call on
    every rank after the weights are written, so the state never points past the weights beside it. Returns `step`."""
    rng = all_rng_states(fabric)  # on every rank, before rank 0 writes them all
    if fabric.global_rank == 0:
        out_dir.mkdir(parents=True, exist_ok=True)
        save_state(out_dir / STATE_NAME, {"step": step, "rng": rng, **state})
    fabric.barrier()
    return step


def save_model_folder(state: dict[str, torch.Tensor], config, base_dir: Path, folder: Path, prompt_style: str) -> None:
    """Write a checkpoint folder of the model weights `state` (a `GPT.state_dict()` for `config`) that every script takes as --checkpoint_dir (generate, chat,
    finetune again, convert_lit_checkpoint): lit_model.safetensors (a tied head stored once, as the embedding),
    lit_config.json, the base folder's tokenizer, generation and Hugging Face config files, and the prompt style the
    model was finetuned with (`lit_prompt_style.json`, which generation and chat then default to)."""
    from lit_gpt.checkpoint import save_weights
    from lit_gpt.convert import check_state_dict
    from lit_gpt.export import _copy_base_files
    from lit_gpt.utils import LIT_WEIGHTS_NAME

    state = {name: t.detach() for name, t in state.items()}
    if config.tie_embeddings:
        state.pop("lm_head.weight", None)  # the same tensor as embed.weight
    check_state_dict(state, config)
    folder.mkdir(parents=True, exist_ok=True)
    save_weights(state, folder / LIT_WEIGHTS_NAME)
    config.save(folder)
    _copy_base_files(base_dir, folder, untie=False)
    save_checkpoint_prompt_style(folder, prompt_style)


def plot_losses(rows: list[dict[str, str]], path: Path) -> None:
    """Training and validation loss over the whole run, resumed parts included (from metrics.csv)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for key, style, label in (("train_loss", "-", "train"), ("val_loss", "o-", "validation")):
        points = [(int(r["step"]), float(r[key])) for r in rows if r.get(key)]
        ax.plot([s for s, _ in points], [v for _, v in points], style, label=label)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss per trainable token")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
