"""Full finetuning of a converted checkpoint: every weight trained, the result saved as a new checkpoint folder.

    python finetune/full.py --checkpoint_dir checkpoints/HuggingFaceTB/SmolLM2-135M-Instruct --data_dir data/lima

Natural for small models (135M-1B), where the weights, their gradients and AdamW's two moments (4x the weights)
fit on one device (or, with --strategy fsdp, sharded over several); larger models want finetune/lora.py. The flags, data options, resuming and logs are those of
finetune/lora.py (lit_gpt/finetune.py holds both loops' pieces; docs/finetuning.md); out_dir becomes a checkpoint
folder that generate/base.py, chat/base.py and scripts/convert_lit_checkpoint.py take as --checkpoint_dir.
"""
import sys
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a plain checkout, no install needed

import torch

from lit_gpt.finetune import (
    FinetuneArgs, RunLog, check_finite, clip_gradients, dev_answers, early_stop, launch, load_base_model, load_data,
    load_resume_state, out_dir_lock, plan_steps, prompt_of, run_identity, sample, save_checkpoint, save_model_folder,
    set_lr, step_metrics, train_step, validate,
)
from lit_gpt.fsdp import fsdp_strategy, full_state_dicts, is_sharded, load_full_optimizer_state
from lit_gpt.training import EpochTracker, neftune_hook, set_rank_rng_states
from lit_gpt.utils import LIT_WEIGHTS_NAME, cli


@dataclass(kw_only=True)
class Settings(FinetuneArgs):
    """Finetune every weight of a model and save it as a new checkpoint folder.

    On several devices, --strategy ddp holds the whole model, its gradients and optimizer state on each device;
    --strategy fsdp shards all three over the devices (each transformer block its own unit)."""

    # ------------------------------------------------------------------------------------ hyperparameters
    learning_rate: float = 2e-5  # all weights move: far below LoRA's 3e-4
    batch_size: int = 16  # examples per optimizer step, over all devices
    micro_batch_size: int = 1  # examples per forward/backward pass (packing: one row of this many x max_seq_length)
    epochs: int = 3
    max_iters: int | None = None  # micro-batches per device; replaces `epochs` when set
    warmup_steps: int = 10
    min_lr: float = 0.0
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    override_max_seq_length: int | None = None  # None: the longest training example; 2048 bounds memory
    # ------------------------------------------------------------------------------------
    out_dir: Path = Path("out/full")


def setup(args: Settings) -> dict:
    """Train; returns the per-step metrics (`history`) and the run's summary."""
    fabric, args = launch(args, partial(fsdp_strategy, shard_trainable=True))
    with out_dir_lock(fabric, args.out_dir):
        return main(fabric, args)


def main(fabric, args: Settings) -> dict:
    out_dir = args.out_dir
    data = load_data(fabric, args)
    plan = plan_steps(fabric, args, data)
    run = run_identity(args, plan, data)
    state = load_resume_state(fabric, args, run, LIT_WEIGHTS_NAME)

    # ------------------------------------------------------------------ model: every weight trains
    model = load_base_model(fabric, args, data.max_seq_length)
    if state is not None:
        model.load_state_dict(state["model"])
    if args.neftune_alpha:
        model.embed.register_forward_hook(neftune_hook(args.neftune_alpha))
    fabric.print(f"Full finetuning: {sum(p.numel() for p in model.parameters()):,} trainable parameters")
    raw_model = model
    if args.compile:
        model = torch.compile(model, dynamic=True)  # packed and padded batches change shape every step
    # the model first, then the optimizer of its (under FSDP: sharded) parameters
    model = fabric.setup_module(model)
    optimizer = fabric.setup_optimizers(
        torch.optim.AdamW(model.parameters(), lr=args.learning_rate, weight_decay=args.weight_decay)
    )
    # under FSDP every rank generates through the sharded model (rank 0 keeps the text); under DDP rank 0 alone
    sharded = is_sharded(fabric)
    generator, generates = (model, True) if sharded else (raw_model, fabric.global_rank == 0)

    # ------------------------------------------------------------------ the loop
    epochs = EpochTracker(out_dir, args.early_stopping_patience)
    step = saved = 0
    if state is not None:
        load_full_optimizer_state(fabric, model, optimizer, state["optimizer"])
        set_rank_rng_states(fabric, state["rng"])
        epochs.load_state_dict(state["epochs"])
        step = saved = state["step"]
        fabric.print(f"Resumed from {out_dir} at step {step}")
    log = RunLog(fabric, out_dir, resumed_step=step)
    val_prompt = prompt_of(data.val[0]) if len(data.val) else None
    if step == 0:
        log.initial(validate(fabric, model, data.val, args, data.max_seq_length))

    while step < plan.max_steps:
        t0 = time.perf_counter()
        lr = set_lr(optimizer, plan.lr(step + 1))
        stats = train_step(fabric, model, plan.batches(fabric, data.train, step), args.lm_head_chunk_size)
        grad_norm = clip_gradients(fabric, model, optimizer, args.grad_clip)
        check_finite(step + 1, stats["train_loss"], grad_norm, saved, out_dir)  # NaN/inf: stop before the update
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1

        metrics = step_metrics(step, plan, lr, stats, time.perf_counter() - t0, fabric.device)
        if step % args.eval_interval == 0 or step == plan.max_steps or plan.ends_epoch(step):
            metrics["val_loss"] = validate(fabric, model, data.val, args, data.max_seq_length)
            if val_prompt is not None and generates:
                text = sample(generator, data.tokenizer, val_prompt, fabric.device, lockstep=sharded)
                fabric.print(f"step {step} sample: {text!r}")
        log.step(metrics)
        stop = False
        if plan.ends_epoch(step):
            # every epoch's model, and its answers to the dev prompts, to choose an epoch by reading
            epoch = int(plan.epoch(step))
            answers = dev_answers(generator, data, fabric.device, lockstep=sharded) if generates else []
            weights, _ = full_state_dicts(fabric, model, raw_model, optimizer)
            if fabric.global_rank == 0:
                save_model_folder(weights, raw_model.config, args.checkpoint_dir, out_dir / f"epoch-{epoch}",
                                  data.style.name)
                epochs.record(epoch, step, metrics["val_loss"], dict(zip(data.dev_prompts, answers)))
            stop = early_stop(fabric, epochs, args.early_stopping_patience)

        # ------------------------------------------------------------------ save
        if step % args.save_interval == 0 or step == plan.max_steps or stop:
            weights, optimizer_state = full_state_dicts(fabric, model, raw_model, optimizer)  # whole, on rank 0
            if fabric.global_rank == 0:
                save_model_folder(weights, raw_model.config, args.checkpoint_dir, out_dir, data.style.name)
            # the weights again in the state: a kill between the two writes leaves a state that matches its weights
            saved = save_checkpoint(fabric, out_dir, step, {
                "model": weights, "optimizer": optimizer_state, "epochs": epochs.state_dict(), "run": run})
        if stop:
            break

    return log.finish(step, out_dir / LIT_WEIGHTS_NAME)


if __name__ == "__main__":
    cli(Settings, run=setup)
