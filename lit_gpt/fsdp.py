"""LoRA with the frozen base model sharded over the processes (FSDP, Zhao et al. 2023,
https://arxiv.org/abs/2304.11277) and the adapters whole on every process: `finetune/lora.py --strategy fsdp`.

    rank 0: [embed, norm, head: shard 0] [block 0: shard 0] [block 1: shard 0] ...  + all adapters (replicated)
    rank 1: [embed, norm, head: shard 1] [block 0: shard 1] [block 1: shard 1] ...  + all adapters (replicated)

Each `Block` is one FSDP unit, gathered for its forward (and again for its backward) and freed after; the root unit
holds the embedding, the final norm and the head. The adapters are FSDP's `ignored_states`: never flattened or
sharded, so

- a unit's flat parameter is frozen base weights only and gets no gradient buffer (a unit mixing frozen and trainable
  weights gets one for all of them: torch warns of "gradient memory usage ... higher than expected");
- the adapter tensors, their names and their optimizer state are exactly those of one device: saving and resuming
  need no FSDP state dicts or `summon_full_params`, and a run may resume on another number of devices or strategy;
- FSDP does not reduce their gradients: `average_adapter_grads` does, as DDP would. The adapters are small (LoRA
  on a 7B model: a few million parameters), so holding them on every rank costs little.

What runs the base model (training, validation, generation) must run on every rank, through the wrapped module,
and in lockstep: each forward and backward gathers every unit from all ranks (`lockstep_batches`).
"""
from __future__ import annotations

from collections.abc import Iterable

import torch

from lit_gpt.data.tokenize import IGNORE_INDEX
from lit_gpt.model import Block


def fsdp_strategy(shard_trainable: bool = False):
    """A Lightning Fabric `FSDPStrategy`: each `Block` its own unit, `use_orig_params=True` (modules keep their own
    parameters, so names survive wrapping). For LoRA the trainable parameters are ignored (above); with
    `shard_trainable` (full finetuning, `finetune/full.py`) every weight is sharded, its gradients reduced and its
    optimizer state kept by FSDP (`full_state_dicts` gathers them whole). Also on CPU processes (gloo), as the tests
    run it."""
    from lightning.fabric.strategies import FSDPStrategy
    from torch.distributed.fsdp import FullyShardedDataParallel
    from torch.distributed.fsdp.wrap import ModuleWrapPolicy

    class LoRAFSDPStrategy(FSDPStrategy):
        # Lightning refuses its own FSDPStrategy off GPUs (a check meant for that class only: subclasses pass,
        # Lightning PR #19781) and wraps with device_id=None on CPU, which torch's FSDP rejects; given the device,
        # torch's FSDP runs on CPU. So the module is wrapped here and Lightning's setup only finishes the job.
        def setup_module(self, module: torch.nn.Module) -> torch.nn.Module:
            adapters = [] if shard_trainable else [p for p in module.parameters() if p.requires_grad]
            module = FullyShardedDataParallel(
                module, device_id=self.root_device, auto_wrap_policy=ModuleWrapPolicy({Block}),
                ignored_states=adapters, use_orig_params=True, sharding_strategy=self.sharding_strategy,
                mixed_precision=self.mixed_precision_config, cpu_offload=self.cpu_offload,
            )
            # FSDP moves what it shards to the device, one unit at a time; what it ignores stays where it was
            for p in adapters:
                p.data = p.data.to(self.root_device)
            return super().setup_module(module)

    return LoRAFSDPStrategy()


def is_sharded(fabric) -> bool:
    from lightning.fabric.strategies import FSDPStrategy

    return isinstance(fabric.strategy, FSDPStrategy)


def average_adapter_grads(fabric, params: Iterable[torch.nn.Parameter]) -> None:
    """Under FSDP: average the (unsharded, ignored) adapters' gradients over the ranks, in one all-reduce, as DDP
    does during backward. Call after the step's last backward, before clipping. Elsewhere a no-op."""
    if not is_sharded(fabric):
        return
    grads = [p.grad for p in params if p.grad is not None]
    flat = torch.cat([g.flatten() for g in grads])  # (total adapter elements,)
    torch.distributed.all_reduce(flat)  # sum
    flat /= fabric.world_size
    for g, averaged in zip(grads, flat.split([g.numel() for g in grads])):
        g.copy_(averaged.view_as(g))


def lockstep_batches(fabric, batches: list[dict[str, torch.Tensor]]) -> list[dict[str, torch.Tensor]]:
    """`batches` padded with one-token micro-batches that carry no loss. Under FSDP to as many as the rank with the
    most has: every forward and backward gathers each unit from all ranks, so all must run the same number (packed
    rows, or an uneven validation split, differ between ranks). Under DDP to at least one: every rank's backward
    joins the gradient all-reduce, and the last step of an epoch run may leave a rank no example. On one device:
    `batches` unchanged."""
    if fabric.world_size == 1:
        return batches
    most = 1
    if is_sharded(fabric):
        most = int(fabric.all_reduce(torch.tensor(len(batches), device=fabric.device), reduce_op="max"))
    idle = {"input_ids": torch.zeros(1, 1, dtype=torch.long), "labels": torch.full((1, 1), IGNORE_INDEX),
            "length": torch.zeros(1, dtype=torch.long)}
    return batches + [idle] * max(0, most - len(batches))


def full_state_dicts(fabric, model, raw_model: torch.nn.Module, optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """The whole model's and optimizer's state dicts, as one device would hold them (parameter names, full tensors),
    on rank 0 (the other ranks get empty dicts); call on every rank. Under FSDP they are gathered from the shards of
    the set-up `model` (full finetuning); elsewhere they are `raw_model`'s (the module before any wrapping) and the
    optimizer's own."""
    if not is_sharded(fabric):
        return raw_model.state_dict(), optimizer.state_dict()
    from torch.distributed.fsdp import FullOptimStateDictConfig, FullStateDictConfig, StateDictType
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

    root = model._forward_module  # Fabric's wrapper around the FSDP root
    offload = fabric.device.type != "cpu"  # gathering on CPU with an offload to CPU crashes torch (2.13, gloo)
    with FSDP.state_dict_type(root, StateDictType.FULL_STATE_DICT,
                              FullStateDictConfig(offload_to_cpu=offload, rank0_only=True),
                              FullOptimStateDictConfig(offload_to_cpu=offload, rank0_only=True)):
        return root.state_dict(), FSDP.optim_state_dict(root, optimizer.optimizer)


def load_full_optimizer_state(fabric, model, optimizer, state: dict) -> None:
    """Load an optimizer state dict from `full_state_dicts` into `optimizer` (under FSDP: this rank's shard of it)."""
    if not is_sharded(fabric):
        optimizer.load_state_dict(state)
        return
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

    root = model._forward_module
    optimizer.optimizer.load_state_dict(FSDP.optim_state_dict_to_load(root, optimizer.optimizer, state))
