"""LoRA finetuning of a converted checkpoint on data prepared by `scripts/prepare_*.py`.

    python finetune/lora.py --checkpoint_dir checkpoints/meta-llama/Llama-2-7b-hf --data_dir data/lima

Every hyperparameter below is the default of a command-line flag of the same name (`--help` lists them);
edit them here or override them with flags or a YAML file (`--config my.yaml`, keys as the flags).
"""
import dataclasses
import sys
import time
from functools import partial
from pathlib import Path
from typing import Literal

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a plain checkout, no install needed

import torch

from lit_gpt.batching import EpochStream, order_keys, step_batches
from lit_gpt.checkpoint import load_model
from lit_gpt.data.dataset import TokenizedDataset
from lit_gpt.fsdp import average_adapter_grads, fsdp_strategy, is_sharded, lockstep_batches
from lit_gpt.generate import generate_tokens
from lit_gpt.lora import LORA_WEIGHTS_NAME, LoRAConfig, apply_lora, base_fingerprint, lora_parameters, save_lora
from lit_gpt.prompts import load_prompt_style
from lit_gpt.quantize import quantize_model
from lit_gpt.tokenizer import Tokenizer
from lit_gpt.training import (
    STATE_NAME, EpochTracker, MetricsCSV, all_rng_states, chunked_loss_sum, effective_warmup, load_state, lr_at,
    masked_loss_sum, neftune_hook, read_dev_prompts, save_state, set_rank_rng_states, trainable_tokens,
)
from lit_gpt.utils import (
    UserError, cli, default_precision, peak_memory_mb, precision_dtype, require_dir, resolve_checkpoint_dir,
    resolve_data_dir,
)

# ------------------------------------------------------------------------------------ hyperparameters
learning_rate = 3e-4
batch_size = 16  # examples per optimizer step, over all devices
micro_batch_size = 1  # examples per forward/backward pass (packing: one row of this many x max_seq_length tokens)
epochs = 3  # passes over the training split
max_iters: int | None = None  # micro-batch iterations per device; replaces `epochs` when set (1000 ~ one pass over LIMA)
warmup_steps = 10  # optimizer steps of linear warm-up before the cosine decay
min_lr = 0.0  # the cosine decay ends here, exactly at the last optimizer step
weight_decay = 0.01
grad_clip = 1.0  # max gradient norm; 0 disables clipping
lora_r = 8
lora_alpha = 16
lora_dropout = 0.05
lora_query = True
lora_key = False
lora_value = True
lora_projection = False
lora_mlp = False
lora_head = False
override_max_seq_length: int | None = None  # None = the longest training example; 2048 bounds memory
eval_interval = 50  # optimizer steps between validation runs
eval_iters = 100  # at most this many validation micro-batches per run
save_interval = 100  # optimizer steps between checkpoints
activation_checkpointing = False  # recompute each block's activations in backward: less memory, ~30% slower
order = "shuffle"  # shuffle | none | length | source | category | score | length_grouped: each epoch's order
order_descending = False  # length/score/source/category: largest (or last) first
order_interleave = False  # source/category: spread the groups evenly through each epoch instead of one after another
order_score_column = "ifd"  # the column of scripts/score_dataset.py that `order = "score"` sorts by
neftune_alpha = 0.0  # NEFTune noise on the input embeddings while training (5 in the paper); 0 disables it
early_stopping_patience: int | None = None  # stop after this many epochs without a better validation loss
dev_prompts: Path | None = None  # instructions answered after every epoch, side by side in dev_generations.md
packing = False  # several examples per row (attention kept inside each): no compute spent on padding
lm_head_chunk_size = 128  # head + loss on this many trainable positions at a time; 0 = full logits at once
compile = False  # torch.compile the model: pays off on GPUs; on CPU it measured slower (see README)
# ------------------------------------------------------------------------------------


def setup(
    checkpoint_dir: Path,
    data_dir: Path = Path("data/alpaca"),
    out_dir: Path = Path("out/lora"),
    precision: str | None = None,
    devices: int = 1,
    strategy: str = "auto",
    quantize: Literal["bnb.nf4", "bnb.nf4-dq", "bnb.fp4", "bnb.fp4-dq", "bnb.int8"] | None = None,
    resume: bool | Literal["auto"] = False,
    seed: int = 1337,
    learning_rate: float = learning_rate,
    batch_size: int = batch_size,
    micro_batch_size: int = micro_batch_size,
    epochs: int = epochs,
    max_iters: int | None = max_iters,
    warmup_steps: int = warmup_steps,
    min_lr: float = min_lr,
    weight_decay: float = weight_decay,
    grad_clip: float = grad_clip,
    lora_r: int = lora_r,
    lora_alpha: float = lora_alpha,
    lora_dropout: float = lora_dropout,
    lora_query: bool = lora_query,
    lora_key: bool = lora_key,
    lora_value: bool = lora_value,
    lora_projection: bool = lora_projection,
    lora_mlp: bool = lora_mlp,
    lora_head: bool = lora_head,
    override_max_seq_length: int | None = override_max_seq_length,
    eval_interval: int = eval_interval,
    eval_iters: int = eval_iters,
    save_interval: int = save_interval,
    activation_checkpointing: bool = activation_checkpointing,
    order: Literal["shuffle", "none", "length", "source", "category", "score", "length_grouped"] = order,
    order_descending: bool = order_descending,
    order_interleave: bool = order_interleave,
    order_score_column: str = order_score_column,
    neftune_alpha: float = neftune_alpha,
    early_stopping_patience: int | None = early_stopping_patience,
    dev_prompts: Path | None = dev_prompts,
    packing: bool = packing,
    lm_head_chunk_size: int = lm_head_chunk_size,
    compile: bool = compile,
) -> dict:
    """Finetune with LoRA: base weights frozen, low-rank adapters trained, saved with their hyperparameters.

    Args:
        checkpoint_dir: A converted checkpoint (`checkpoints/ORG/NAME` or just `ORG/NAME`).
        data_dir: A folder written by a `scripts/prepare_*.py` script for this checkpoint's tokenizer.
        out_dir: Where the adapter (`lit_lora.safetensors`), training state, logs and loss plot go.
        precision: Lightning Fabric precision: 32-true, bf16-true, 16-true, bf16-mixed or 16-mixed
            (default: bf16-true on a GPU that supports it, else 32-true).
        devices: Number of devices (GPUs, or CPU processes) to train on.
        strategy: Fabric strategy: auto, ddp or fsdp (the frozen base model sharded over the devices, each
            transformer block its own unit; the adapters replicated, see lit_gpt/fsdp.py).
        quantize: QLoRA: hold the frozen block weights in 4-bit (nf4/fp4, -dq = double quantization) or int8
            through bitsandbytes (`pip install 'lit_gpt[quantize]'`).
        resume: Continue from the training state in out_dir: true (it must exist) or auto (if it exists).
        seed: Seed for the LoRA init, the data order and dropout.
        learning_rate: Peak learning rate of AdamW, reached after the warm-up.
        batch_size: Examples per optimizer step, over all devices.
        micro_batch_size: Examples per forward/backward pass on one device; with --packing, the step's examples
            go into rows of up to micro_batch_size x max_seq_length tokens, one row per pass, with no padding.
        epochs: Passes over the training split (ignored when max_iters is set).
        max_iters: Micro-batch iterations per device to run instead of epochs.
        warmup_steps: Optimizer steps of linear warm-up from 0.
        min_lr: Learning rate at the last optimizer step (cosine decay).
        weight_decay: AdamW weight decay on the LoRA parameters.
        grad_clip: Maximum gradient norm (0 disables clipping).
        lora_r: Rank of the LoRA update.
        lora_alpha: LoRA scaling numerator (the update is scaled by alpha / r).
        lora_dropout: Dropout on the LoRA branch's input.
        lora_query: Adapt the attention query projection.
        lora_key: Adapt the attention key projection.
        lora_value: Adapt the attention value projection.
        lora_projection: Adapt the attention output projection.
        lora_mlp: Adapt the MLP's linear layers.
        lora_head: Adapt the output head.
        override_max_seq_length: Cut training examples at this many tokens (None: the longest example).
        eval_interval: Optimizer steps between validation loss + sample generation.
        eval_iters: Validation micro-batches per evaluation (at most).
        save_interval: Optimizer steps between checkpoints of adapter and training state.
        activation_checkpointing: Recompute block activations in the backward pass to save memory.
        order: The order examples are seen in each epoch: shuffle (fresh every epoch), none (as in the data
            folder), length (tokens), score (a column of scripts/score_dataset.py), source or category (grouped),
            length_grouped (random, but each step's examples of similar length: little padding without --packing).
        order_descending: Sort largest first (length, score) or groups in reverse name order.
        order_interleave: With source/category, spread the groups evenly through each epoch instead of in blocks.
        order_score_column: The score column `--order score` sorts by (e.g. ifd, loss_with_prompt).
        neftune_alpha: NEFTune (Jain et al. 2023): uniform noise of this scale on the input embeddings while
            training; 0 disables it.
        early_stopping_patience: Stop after this many epochs without a better validation loss (None: never).
        dev_prompts: A JSON list (or one-per-line text file) of instructions answered with greedy decoding after
            every epoch, written side by side to out_dir/dev_generations.md to pick an epoch by reading answers.
        packing: Pack each micro-batch's examples into one row of up to micro_batch_size x max_seq_length tokens,
            with attention confined to each example and positions restarting: the loss is the same as padded,
            with no padding tokens at all.
        lm_head_chunk_size: Compute the output head and loss on this many trainable positions at a time (masked
            prompt tokens and padding skipped), so the full tokens x vocabulary logits are never held at once;
            0 computes the full logits, as the model's plain forward does.
        compile: Wrap the model in torch.compile (dynamic shapes; the first steps pay for compilation).
    """
    import lightning as L
    from lightning.fabric.loggers import TensorBoardLogger

    hparams = {k: v for k, v in locals().items() if k not in ("L", "TensorBoardLogger")}
    checkpoint_dir = require_dir(resolve_checkpoint_dir(checkpoint_dir), "checkpoint folder",
                                 "Download and convert a model first: python scripts/download.py --repo_id ORG/NAME")
    data_dir = require_dir(resolve_data_dir(data_dir), "data folder", "Prepare data first, e.g. python scripts/prepare_alpaca.py")
    if batch_size % (devices * micro_batch_size):
        raise UserError(f"batch_size {batch_size} must be a multiple of devices x micro_batch_size "
                        f"({devices} x {micro_batch_size})")
    lora_config = LoRAConfig(**{k: v for k, v in hparams.items() if k.startswith("lora_")})
    if strategy.startswith("fsdp") and strategy != "fsdp":  # Lightning's other FSDP variants would shard the adapter
        raise UserError(f"--strategy {strategy} is not supported; use --strategy fsdp (see lit_gpt/fsdp.py)")
    if strategy == "fsdp" and quantize:
        raise UserError("--quantize does not work with --strategy fsdp (FSDP cannot flatten bitsandbytes' quantized "
                        "weights); use --strategy ddp or one device")
    precision = precision or default_precision()
    fabric = L.Fabric(devices=devices, strategy=fsdp_strategy() if strategy == "fsdp" else strategy,
                      precision=precision, loggers=TensorBoardLogger(out_dir, name="logs", version=""))
    fabric.launch()
    return main(fabric, checkpoint_dir, data_dir, Path(out_dir), lora_config, precision, hparams)


def main(fabric, checkpoint_dir: Path, data_dir: Path, out_dir: Path, lora_config: LoRAConfig, precision: str,
         h: dict) -> dict:
    fabric.seed_everything(h["seed"])
    tokenizer = Tokenizer(checkpoint_dir)
    train, val = TokenizedDataset(data_dir, "train", tokenizer), TokenizedDataset(data_dir, "test", tokenizer)
    longest = int(train.lengths.max())
    # the row length: packing fills rows up to it even when every example is shorter
    max_seq_length = h["override_max_seq_length"] or longest
    cut = int((train.lengths > max_seq_length).sum())
    fabric.print(f"{len(train):,} training / {len(val):,} validation examples; max_seq_length {max_seq_length} "
                 f"({cut} training examples longer than that are cut, losing their end and EOS)")

    state_path = out_dir / STATE_NAME
    if h["resume"] is True and not state_path.is_file():
        raise UserError(f"--resume true but {state_path} does not exist; use --resume auto to start fresh when absent")
    state = load_state(state_path) if h["resume"] and state_path.is_file() else None
    if state is not None and state["lora_config"] != dataclasses.asdict(lora_config):
        raise UserError(f"{state_path} was trained with {state['lora_config']}; resume with the same LoRA settings "
                        "or pass another --out_dir")

    sharded = is_sharded(fabric)
    # FSDP moves the model to the device one unit at a time as it shards it: the whole never sits on one device
    model = load_model(checkpoint_dir, device="cpu" if sharded else fabric.device, dtype=precision_dtype(precision))
    if max_seq_length > model.config.block_size:
        raise UserError(f"max_seq_length {max_seq_length} exceeds the model's context ({model.config.block_size} "
                        f"tokens); set --override_max_seq_length {model.config.block_size}")
    model.max_seq_length = max_seq_length
    if h["quantize"]:
        quantize_model(model, h["quantize"], log=fabric.print)
    apply_lora(model, lora_config)
    # the adapter by name, taken before any wrapping (FSDP nests the module names); the same tensors, whole, on
    # every strategy, FSDP included (lit_gpt/fsdp.py): they are what gets saved, resumed and optimized
    adapter = lora_parameters(model)
    if state is not None:
        missing, unexpected = model.load_state_dict(state["lora"], strict=False)
        assert not unexpected and not set(state["lora"]) & set(missing), "the saved adapter did not load"
    model.activation_checkpointing = h["activation_checkpointing"]
    if h["neftune_alpha"]:
        model.embed.register_forward_hook(neftune_hook(h["neftune_alpha"]))
    trainable = sum(p.numel() for p in adapter.values())
    fabric.print(f"LoRA: {trainable:,} trainable of {sum(p.numel() for p in model.parameters()):,} parameters")
    raw_model = model
    if h["compile"]:
        model = torch.compile(model, dynamic=True)  # packed and padded batches change shape every step
    # the model first, then the optimizer of its trainable parameters, as FSDP wants it
    model = fabric.setup_module(model)
    optimizer = fabric.setup_optimizers(
        torch.optim.AdamW(adapter.values(), lr=h["learning_rate"], weight_decay=h["weight_decay"])
    )
    # under FSDP each rank holds a shard of the base model: every rank generates, through the sharded model
    # (rank 0 keeps the text); otherwise rank 0 alone, on the plain model
    generator = model if sharded else raw_model
    generates = sharded or fabric.global_rank == 0

    world = fabric.world_size
    accumulation = h["batch_size"] // (world * h["micro_batch_size"])
    stream = EpochStream(len(train), h["batch_size"], seed=h["seed"], order=h["order"],
                         keys=order_keys(train, h["order"], h["order_score_column"], h["order_descending"]),
                         descending=h["order_descending"], interleave=h["order_interleave"],
                         total=None if h["max_iters"] is not None else h["epochs"] * len(train))
    # max_iters counts micro-batches; epochs end exactly, the last step taking what is left of the last epoch
    max_steps = max(1, h["max_iters"] // accumulation) if h["max_iters"] is not None else stream.steps()
    warmup = effective_warmup(h["warmup_steps"], max_steps)
    fabric.print(f"{max_steps} optimizer steps of {h['batch_size']} examples ({accumulation} accumulated "
                 f"micro-batches of {h['micro_batch_size']} on each of {world} device(s)), "
                 f"{stream.epoch_of(max_steps):.2f} epochs; {warmup} warm-up steps"
                 + (f" (warmup_steps {h['warmup_steps']} capped at half the run)" if warmup < h["warmup_steps"] else ""))

    dev = read_dev_prompts(h["dev_prompts"]) if h["dev_prompts"] else []
    style = load_prompt_style(train.meta.get("prompt_style", "auto"), tokenizer)
    epochs_tracker = EpochTracker(out_dir, h["early_stopping_patience"])
    step = 0
    if state is not None:  # the adapter weights went in before the model was set up
        optimizer.load_state_dict(state["optimizer"])
        set_rank_rng_states(fabric, state["rng"])
        epochs_tracker.load_state_dict(state["epochs"])
        step = state["step"]
        fabric.print(f"Resumed from {state_path} at step {step}")

    resumed_at = step if step > 0 else None
    metrics_csv = MetricsCSV(out_dir / "metrics.csv", resume_step=resumed_at) if fabric.global_rank == 0 else None
    history: list[dict] = []
    val_prompt = _prompt_of(val[0]) if len(val) else None
    if step == 0:
        initial = {"step": 0, "val_loss": validate(fabric, model, val, max_seq_length, h)}
        fabric.log_dict(initial, step=0)
        if metrics_csv:
            metrics_csv.log(initial)
        history.append(initial)
        fabric.print(f"step 0 | val_loss {initial['val_loss']:.4g} (before finetuning)")
    t_start = time.perf_counter()
    while step < max_steps:
        t0 = time.perf_counter()
        mine = stream.step(step)[fabric.global_rank :: world]
        batches = step_batches([train[i] for i in mine], h["micro_batch_size"], max_seq_length, h["packing"])
        # the loss is a mean over the trainable tokens of the whole global batch, on every device
        local_tokens = sum(trainable_tokens(b["labels"]) for b in batches)
        global_tokens = int(fabric.all_reduce(torch.tensor(local_tokens, device=fabric.device), reduce_op="sum"))
        # padded: what was computed; real: tokens of the examples (prompt, BOS, EOS); trainable: carrying loss
        counts = torch.tensor([sum(b["input_ids"].numel() for b in batches),
                               sum(b["length"].sum() for b in batches)], device=fabric.device)
        lr = lr_at(step + 1, max_steps, h["learning_rate"], warmup, h["min_lr"])
        for group in optimizer.param_groups:
            group["lr"] = lr
        loss_sum = torch.zeros((), device=fabric.device)
        batches = lockstep_batches(fabric, batches)  # several devices: no rank without a pass (FSDP: as many)
        for i, batch in enumerate(batches):
            with fabric.no_backward_sync(model, enabled=i < len(batches) - 1):
                loss, _ = batch_loss(fabric, model, batch, h["lm_head_chunk_size"])
                # gradients get averaged over devices (by DDP in backward, FSDP's adapters just below); scaling by
                # world size turns that into the global mean
                fabric.backward(loss * world / max(global_tokens, 1))
            loss_sum += loss.detach()
        average_adapter_grads(fabric, adapter.values())  # FSDP leaves them to us (lit_gpt/fsdp.py); else a no-op
        if h["grad_clip"]:
            fabric.clip_gradients(model, optimizer, max_norm=h["grad_clip"])
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1

        train_loss = float(fabric.all_reduce(loss_sum, reduce_op="sum")) / max(global_tokens, 1)
        elapsed = time.perf_counter() - t0
        padded, real = (int(c) for c in fabric.all_reduce(counts, reduce_op="sum"))
        metrics = {"step": step, "epoch": stream.epoch_of(step), "train_loss": train_loss, "lr": lr,
                   "step_seconds": elapsed, "tokens_padded": padded, "tokens_real": real,
                   "tokens_trainable": global_tokens, "real_tokens_per_s": real / elapsed,
                   "trainable_tokens_per_s": global_tokens / elapsed, "peak_memory_mb": peak_memory_mb(fabric.device)}
        epoch_end = int(stream.epoch_of(step)) > int(stream.epoch_of(step - 1))
        if step % h["eval_interval"] == 0 or step == max_steps or epoch_end:
            metrics["val_loss"] = validate(fabric, model, val, max_seq_length, h)
            if val_prompt is not None and generates:
                sample = _sample(generator, tokenizer, val_prompt, fabric.device, lockstep=sharded)
                fabric.print(f"step {step} sample: {sample!r}")
        fabric.log_dict(metrics, step=step)
        if metrics_csv:
            metrics_csv.log(metrics)
        history.append(metrics)
        fabric.print(" | ".join(_fmt(k, v) for k, v in metrics.items()))
        stop = False
        if epoch_end:
            epoch = int(stream.epoch_of(step))
            # every epoch's adapter, and its answers to the dev prompts, to choose an epoch by reading
            answers = [_answer(generator, tokenizer, style, p, fabric.device, sharded) for p in dev] if generates else []
            if fabric.global_rank == 0:
                save_lora(adapter, lora_config, out_dir / f"epoch-{epoch}" / LORA_WEIGHTS_NAME, style.name,
                          base_fingerprint(checkpoint_dir))
                epochs_tracker.record(epoch, step, metrics["val_loss"], dict(zip(dev, answers)))
            stop = fabric.broadcast(epochs_tracker.should_stop())
            if stop:
                fabric.print(f"Early stopping after epoch {epoch}: no better validation loss for "
                             f"{h['early_stopping_patience']} epochs (best: epoch {epochs_tracker.best_epoch})")
        if step % h["save_interval"] == 0 or step == max_steps or stop:
            _save(fabric, adapter, optimizer, lora_config, out_dir, step, style.name, epochs_tracker,
                  base_fingerprint(checkpoint_dir))
        if stop:
            break

    for logger in fabric.loggers:
        logger.finalize("success")
    summary = {"steps": step, "seconds": time.perf_counter() - t_start, "peak_memory_mb": peak_memory_mb(fabric.device),
               "initial_val_loss": history[0].get("val_loss") if history and history[0]["step"] == 0 else None,
               "final_train_loss": history[-1].get("train_loss") if history else None,
               "final_val_loss": history[-1].get("val_loss") if history else None}
    fabric.print(f"Done: {summary}. Adapter: {out_dir / LORA_WEIGHTS_NAME}")
    if metrics_csv:
        _plot(metrics_csv.rows(), out_dir / "loss.png")
    return {"history": history, **summary}


def batch_loss(fabric, model, batch: dict, chunk_size: int) -> tuple[torch.Tensor, int]:
    """Summed loss and trainable-token count of one micro-batch (padded or packed)."""
    input_ids, labels = batch["input_ids"].to(fabric.device), batch["labels"].to(fabric.device)
    positions = batch["positions"].to(fabric.device) if "positions" in batch else None
    if not chunk_size:
        return masked_loss_sum(model(input_ids, positions=positions), labels)
    # the head applied inside the model's forward, where FSDP has its weight gathered
    return model(input_ids, positions=positions, head=partial(chunked_loss_sum, labels=labels, chunk_size=chunk_size))


@torch.no_grad()
def validate(fabric, model, val: TokenizedDataset, max_seq_length: int, h: dict) -> float:
    """Mean loss per trainable token over the first `eval_iters` x `micro_batch_size` validation examples."""
    model.eval()
    total, tokens = torch.zeros((), device=fabric.device), 0
    # the same examples whether packed or not, so validation losses compare across runs
    mine = list(range(len(val)))[fabric.global_rank :: fabric.world_size][: h["eval_iters"] * h["micro_batch_size"]]
    batches = step_batches([val[i] for i in mine], h["micro_batch_size"], max_seq_length, h["packing"])
    for batch in lockstep_batches(fabric, batches):
        loss, n = batch_loss(fabric, model, batch, h["lm_head_chunk_size"])
        total += loss
        tokens += n
    model.train()
    tokens = int(fabric.all_reduce(torch.tensor(tokens, device=fabric.device), reduce_op="sum"))
    return float(fabric.all_reduce(total, reduce_op="sum")) / max(tokens, 1)


def _prompt_of(example: dict) -> torch.Tensor:
    """The tokens before the first trainable one: the prompt the model should answer."""
    trainable = (example["labels"] != -100).nonzero()
    return example["input_ids"][: int(trainable[0]) if len(trainable) else len(example["input_ids"])]


def _answer(model, tokenizer: Tokenizer, style, instruction: str, device, lockstep: bool) -> str:
    prompt = torch.tensor(tokenizer.encode(style.prompt(instruction), bos=style.bos))
    return _sample(model, tokenizer, prompt, device, max_new_tokens=128, lockstep=lockstep)


def _sample(model, tokenizer: Tokenizer, prompt: torch.Tensor, device, max_new_tokens: int = 40,
            lockstep: bool = False) -> str:
    """Greedy continuation of `prompt`, up to its EOS. In `lockstep` (ranks generating through a sharded model,
    which must all run the same forwards) all `max_new_tokens` are computed, EOS or not, and cut after."""
    model.eval()
    new = list(generate_tokens(model, prompt.to(device), max_new_tokens=max_new_tokens, top_k=1,
                               eos_id=None if lockstep else tokenizer.eos_id))
    model.train()
    if tokenizer.eos_id in new:
        new = new[: new.index(tokenizer.eos_id) + 1]
    return tokenizer.decode(new, skip_special_tokens=True)


def _save(fabric, adapter: dict[str, torch.nn.Parameter], optimizer, lora_config: LoRAConfig, out_dir: Path,
          step: int, prompt_style: str, epochs_tracker: EpochTracker, base: str) -> None:
    rng = all_rng_states(fabric)  # on every rank, before rank 0 writes them all
    if fabric.global_rank == 0:
        out_dir.mkdir(parents=True, exist_ok=True)
        save_lora(adapter, lora_config, out_dir / LORA_WEIGHTS_NAME, prompt_style, base)
        save_state(out_dir / STATE_NAME, {"step": step, "lora": {k: p.detach() for k, p in adapter.items()},
                                          "lora_config": dataclasses.asdict(lora_config),
                                          "optimizer": optimizer.state_dict(), "rng": rng,
                                          "epochs": epochs_tracker.state_dict()})
    fabric.barrier()


def _fmt(key: str, value) -> str:
    return f"{key} {value:.4g}" if isinstance(value, float) else f"{key} {value}"


def _plot(rows: list[dict[str, str]], path: Path) -> None:
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


if __name__ == "__main__":
    cli(setup)
