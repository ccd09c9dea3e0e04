"""LoRA finetuning of a converted checkpoint on data prepared by `scripts/prepare_*.py`.

    python finetune/lora.py --checkpoint_dir checkpoints/meta-llama/Llama-2-7b-hf --data_dir data/lima

The hyperparameters below are the defaults of the flags of the same name (`--help` explains every flag); edit them
here, or override them with flags or a YAML file (`--config my.yaml`, keys as the flags). The loop's pieces live
in lit_gpt/finetune.py; docs/finetuning.md describes the outputs and resuming.
"""
import dataclasses
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a plain checkout, no install needed

import torch

from lit_gpt.finetune import (
    FinetuneArgs, RunLog, check_finite, clip_gradients, dev_answers, early_stop, launch, load_base_model, load_data,
    load_resume_state, out_dir_lock, plan_steps, prompt_of, run_identity, sample, save_checkpoint, set_lr, step_metrics,
    train_step, validate,
)
from lit_gpt.fsdp import average_adapter_grads, fsdp_strategy, is_sharded
from lit_gpt.lora import LORA_WEIGHTS_NAME, LoRAConfig, apply_lora, base_fingerprint, lora_parameters, save_lora
from lit_gpt.quantize import Mode, quantize_model
from lit_gpt.training import EpochTracker, neftune_hook, set_rank_rng_states
from lit_gpt.utils import UserError, cli


@dataclass(kw_only=True)
class Settings(FinetuneArgs):
    """Finetune with LoRA: base weights frozen, low-rank adapters trained and saved with their hyperparameters.

    With --strategy fsdp the frozen base model is sharded over the devices (each transformer block its own unit)
    and the adapters are replicated (lit_gpt/fsdp.py)."""

    # ------------------------------------------------------------------------------------ hyperparameters
    learning_rate: float = 3e-4
    batch_size: int = 16  # examples per optimizer step, over all devices
    micro_batch_size: int = 1  # examples per forward/backward pass (packing: one row of this many x max_seq_length)
    epochs: int = 3
    max_iters: int | None = None  # micro-batches per device; replaces `epochs` when set
    warmup_steps: int = 10
    min_lr: float = 0.0
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    override_max_seq_length: int | None = None  # None: the longest training example; 2048 bounds memory
    lora_r: int = 8
    """Rank of the LoRA update."""
    lora_alpha: float = 16
    """LoRA scaling numerator (the update is scaled by alpha / r)."""
    lora_dropout: float = 0.05
    """Dropout on the LoRA branch's input."""
    lora_query: bool = True
    """Adapt the attention query projection."""
    lora_key: bool = False
    """Adapt the attention key projection."""
    lora_value: bool = True
    """Adapt the attention value projection."""
    lora_projection: bool = False
    """Adapt the attention output projection."""
    lora_mlp: bool = False
    """Adapt the MLP's linear layers."""
    lora_head: bool = False
    """Adapt the output head."""
    # ------------------------------------------------------------------------------------
    out_dir: Path = Path("out/lora")
    quantize: Mode | None = None
    """QLoRA: hold the frozen block weights in 4-bit (nf4/fp4, -dq = double quantization) or int8 through
    bitsandbytes (`pip install 'lit_gpt[quantize]'`)."""


def lora_config(args: Settings) -> LoRAConfig:
    return LoRAConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(LoRAConfig)})


def setup(args: Settings) -> dict:
    """Train; returns the per-step metrics (`history`) and the run's summary."""
    lora_config(args)  # a bad LoRA setting fails before any process starts
    if args.strategy == "fsdp" and args.quantize:
        raise UserError("--quantize does not work with --strategy fsdp (FSDP cannot flatten bitsandbytes' quantized "
                        "weights); use --strategy ddp or one device")
    fabric, args = launch(args, fsdp_strategy)
    with out_dir_lock(fabric, args.out_dir):
        return main(fabric, args)


def main(fabric, args: Settings) -> dict:
    out_dir, lora = args.out_dir, lora_config(args)
    data = load_data(fabric, args)
    plan = plan_steps(fabric, args, data)
    run = run_identity(args, plan, data) | dataclasses.asdict(lora)  # a resumed run must be this one
    state = load_resume_state(fabric, args, run, LORA_WEIGHTS_NAME)

    # ------------------------------------------------------------------ model and LoRA
    model = load_base_model(fabric, args, data.max_seq_length)
    if args.quantize:
        quantize_model(model, args.quantize, log=fabric.print)
    apply_lora(model, lora)
    # the adapter by name, taken before any wrapping (FSDP nests the module names); the same tensors, whole, on
    # every strategy, FSDP included (lit_gpt/fsdp.py): they are what gets saved, resumed and optimized
    adapter = lora_parameters(model)
    base = base_fingerprint(args.checkpoint_dir)  # saved with every adapter: loaders refuse another base
    if state is not None:
        missing, unexpected = model.load_state_dict(state["lora"], strict=False)
        assert not unexpected and not set(state["lora"]) & set(missing), "the saved adapter did not load"
    if args.neftune_alpha:
        model.embed.register_forward_hook(neftune_hook(args.neftune_alpha))
    fabric.print(f"LoRA: {sum(p.numel() for p in adapter.values()):,} trainable of "
                 f"{sum(p.numel() for p in model.parameters()):,} parameters")
    raw_model = model
    if args.compile:
        model = torch.compile(model, dynamic=True)  # packed and padded batches change shape every step
    # the model first, then the optimizer of its trainable parameters, as FSDP wants it
    model = fabric.setup_module(model)
    optimizer = fabric.setup_optimizers(
        torch.optim.AdamW(adapter.values(), lr=args.learning_rate, weight_decay=args.weight_decay)
    )
    # under FSDP each rank holds a shard of the base model: every rank generates, through the sharded model
    # (rank 0 keeps the text); otherwise rank 0 alone, on the plain model
    sharded = is_sharded(fabric)
    generator, generates = (model, True) if sharded else (raw_model, fabric.global_rank == 0)

    # ------------------------------------------------------------------ the loop
    epochs = EpochTracker(out_dir, args.early_stopping_patience)
    step = saved = 0
    if state is not None:  # the adapter weights went in before the model was set up
        optimizer.load_state_dict(state["optimizer"])
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
        average_adapter_grads(fabric, adapter.values())  # FSDP leaves them to us (lit_gpt/fsdp.py); else a no-op
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
            # every epoch's adapter, and its answers to the dev prompts, to choose an epoch by reading
            epoch = int(plan.epoch(step))
            answers = dev_answers(generator, data, fabric.device, lockstep=sharded) if generates else []
            if fabric.global_rank == 0:
                save_lora(adapter, lora, out_dir / f"epoch-{epoch}" / LORA_WEIGHTS_NAME, data.style.name, base)
                epochs.record(epoch, step, metrics["val_loss"], dict(zip(data.dev_prompts, answers)))
            stop = early_stop(fabric, epochs, args.early_stopping_patience)

        # ------------------------------------------------------------------ save
        if step % args.save_interval == 0 or step == plan.max_steps or stop:
            if fabric.global_rank == 0:
                save_lora(adapter, lora, out_dir / LORA_WEIGHTS_NAME, data.style.name, base)
            saved = save_checkpoint(fabric, out_dir, step, {
                "lora": {k: p.detach() for k, p in adapter.items()}, "lora_config": dataclasses.asdict(lora),
                "optimizer": optimizer.state_dict(), "epochs": epochs.state_dict(), "run": run})
        if stop:
            break

    return log.finish(step, out_dir / LORA_WEIGHTS_NAME)


if __name__ == "__main__":
    cli(Settings, run=setup)
