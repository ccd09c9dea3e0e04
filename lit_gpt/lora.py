"""Low-rank adaptation (Hu et al. 2021, https://arxiv.org/abs/2106.09685) by swapping linear layers in place.

A `LoRALinear` keeps the base layer's `weight` and `bias` under the same names, so a base checkpoint loads into
a LoRA model unchanged, and adds `lora_A` (r, in) and `lora_B` (out, r):

    y = x W^T + b + (dropout(x) A^T B^T) * alpha / r          B starts at zero: the model starts as the base

Each target is its own linear (query, key and value are separate in `lit_gpt.model`), so "query and value only"
adapts exactly those rows: the fused-QKV bookkeeping that made Lit-GPT's partial targets wrong does not exist here.
The hyperparameters travel with the adapter weights (`lora_config` in the safetensors metadata), so generate,
merge and export read them instead of being told.
"""
from __future__ import annotations

import dataclasses
import json
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors import safe_open

from lit_gpt.utils import UserError, atomic_path

LORA_WEIGHTS_NAME = "lit_lora.safetensors"

# target flag -> the module names it adapts (suffixes of names in `lit_gpt.model.GPT`)
_TARGETS = {
    "lora_query": ("attn.query",),
    "lora_key": ("attn.key",),
    "lora_value": ("attn.value",),
    "lora_projection": ("attn.proj",),
    "lora_mlp": ("mlp.fc_1", "mlp.fc_2", "mlp.proj"),
    "lora_head": ("lm_head",),
}


@dataclass(frozen=True)
class LoRAConfig:
    lora_r: int = 8
    lora_alpha: float = 16
    lora_dropout: float = 0.05
    lora_query: bool = True
    lora_key: bool = False
    lora_value: bool = True
    lora_projection: bool = False
    lora_mlp: bool = False
    lora_head: bool = False

    def __post_init__(self) -> None:
        if self.lora_r < 1:
            raise UserError(f"lora_r must be at least 1, got {self.lora_r}")
        if not any(getattr(self, flag) for flag in _TARGETS):
            raise UserError(f"no LoRA target enabled: set at least one of {', '.join(_TARGETS)}")

    @property
    def scaling(self) -> float:
        return self.lora_alpha / self.lora_r

    def targets(self) -> tuple[str, ...]:
        return tuple(suffix for flag, suffixes in _TARGETS.items() if getattr(self, flag) for suffix in suffixes)


class LoRALinear(nn.Module):
    """An `nn.Linear` with a trainable low-rank update; `weight`/`bias` are the base layer's own parameters.

    The base may also be a bitsandbytes layer made by `lit_gpt.quantize.quantize_model` (QLoRA): a 4-bit `Params4bit`
    or an int8 `Int8Params` weight. Its product then goes through bitsandbytes as that layer computes it, the adapters
    stay float32, and `merge`/`unmerge` dequantize, add or subtract the update and quantize again. That re-rounds the
    whole weight: a merged quantized layer equals the unmerged one only up to the quantization error, and `unmerge`
    does not give back the original bits.
    """

    def __init__(self, base: nn.Linear, r: int, alpha: float, dropout: float) -> None:
        super().__init__()
        self.in_features, self.out_features = base.in_features, base.out_features
        self.weight = base.weight
        self.bias = base.bias
        device = base.weight.device
        # A gets the same init as nn.Linear's weight, B zeros, as in the paper and peft
        self.lora_A = nn.Parameter(torch.empty(r, self.in_features, device=device))
        self.lora_B = nn.Parameter(torch.zeros(self.out_features, r, device=device))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.scaling = alpha / r
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.merged = False
        # "4bit" | "int8" | None, told by the weight's class name: bitsandbytes is optional and imported only for its own
        self.quantized: str | None = {"Params4bit": "4bit", "Int8Params": "int8"}.get(type(base.weight).__name__)
        if self.quantized == "4bit":
            if getattr(base.weight.quant_state, "packing_format_for_cpu", False):
                # that layout only feeds bitsandbytes' CPU inference kernel, which has no backward
                raise UserError("this 4-bit layer was repacked for CPU inference; quantize the model with "
                                "lit_gpt.quantize.quantize_model before applying LoRA")
            self.compute_dtype: torch.dtype | None = base.compute_dtype
        elif self.quantized == "int8":
            if base.weight.CB is not None:  # what Linear8bitLt.forward does first: move CB/SCB into its matmul state
                base.init_8bit_state()
            self.int8_state = base.state

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self._quantized_base_forward(x) if self.quantized else F.linear(x, self.weight, self.bias)
        if self.merged:
            return out
        lora = F.linear(F.linear(self.dropout(x), self.lora_A.to(x.dtype)), self.lora_B.to(x.dtype))
        return out + lora * self.scaling

    def _quantized_base_forward(self, x: torch.Tensor) -> torch.Tensor:
        import bitsandbytes as bnb

        if self.quantized == "4bit":
            # as bnb.nn.Linear4bit.forward: compute in the layer's compute dtype, return the input's dtype
            dtype = self.compute_dtype or x.dtype
            bias = None if self.bias is None else self.bias.to(dtype)
            return bnb.matmul_4bit(x.to(dtype), self.weight, bias=bias, quant_state=self.weight.quant_state).to(x.dtype)
        # as bnb.nn.Linear8bitLt.forward: int8 x int8 in eval; in training on CPU, dequantize then matmul
        self.int8_state.is_training = self.training
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return bnb.matmul(x, self.weight, bias=bias, state=self.int8_state)

    def delta_weight(self) -> torch.Tensor:
        return (self.lora_B @ self.lora_A) * self.scaling  # (out, in)

    @torch.no_grad()
    def merge(self) -> None:
        if not self.merged:
            if self.quantized:
                self._requantize_with(self.delta_weight())
            else:
                self.weight.add_(self.delta_weight().to(self.weight.dtype))
            self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        if self.merged:
            if self.quantized:
                self._requantize_with(-self.delta_weight())
            else:
                self.weight.sub_(self.delta_weight().to(self.weight.dtype))
            self.merged = False

    def _requantize_with(self, delta: torch.Tensor) -> None:
        """Dequantize the base weight, add `delta` (out, in), quantize again with the same settings; in place."""
        import bitsandbytes.functional as bnbF

        w = self.weight
        if self.quantized == "4bit":
            dense = bnbF.dequantize_4bit(w.data, w.quant_state)  # (out, in) in the dtype it was quantized from
            dense += delta.to(dense.dtype)
            w.data, w.quant_state = bnbF.quantize_4bit(
                dense, blocksize=w.blocksize, compress_statistics=w.compress_statistics, quant_type=w.quant_type,
                quant_storage=w.quant_storage,
            )
        else:
            state = self.int8_state
            dense = bnbF.int8_vectorwise_dequant(state.CB, state.SCB) + delta  # (out, in) float32
            state.CB, state.SCB, _ = bnbF.int8_vectorwise_quant(dense.to(torch.float16))
            w.data = state.CB


def apply_lora(model: nn.Module, config: LoRAConfig) -> nn.Module:
    """Swap every targeted `nn.Linear` of `model` for a `LoRALinear`, freeze everything else. Returns `model`."""
    targets = config.targets()
    swapped = 0
    for parent_name, parent in list(model.named_modules()):
        for name, child in list(parent.named_children()):
            full_name = f"{parent_name}.{name}" if parent_name else name
            if isinstance(child, nn.Linear) and full_name.endswith(targets):
                setattr(parent, name, LoRALinear(child, config.lora_r, config.lora_alpha, config.lora_dropout))
                swapped += 1
    if swapped == 0:
        raise UserError(f"none of the LoRA targets {targets} exists in this model")
    for name, param in model.named_parameters():
        param.requires_grad = "lora_" in name
    return model


def lora_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    return {name: p for name, p in model.named_parameters() if "lora_" in name}


def lora_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach() for name, p in lora_parameters(model).items()}


def merge_lora(model: nn.Module) -> None:
    """Fold every adapter into its base weight (explicitly: never as a side effect of `.eval()`).

    A weight shared with another module (a head tied to the embedding) gets its own copy first, so the update
    does not leak into its twin; the model is then untied there.
    """
    owners = Counter(id(p) for m in model.modules() for p in m.parameters(recurse=False))
    for module in model.modules():
        if isinstance(module, LoRALinear) and not module.merged:
            if owners[id(module.weight)] > 1:
                module.weight = nn.Parameter(module.weight.detach().clone(), requires_grad=False)
            module.merge()


def save_lora(model: nn.Module | dict[str, torch.Tensor], config: LoRAConfig, path: Path,
              prompt_style: str | None = None) -> None:
    """Write the adapter weights of `model` (or the adapter tensors themselves, by name) with their hyperparameters
    (and the prompt style of the training data) in the file's metadata, atomically: generate, merge and export read
    them from there."""
    from safetensors.torch import save_file

    tensors = lora_state_dict(model) if isinstance(model, nn.Module) else model
    state = {k: v.detach().contiguous() for k, v in tensors.items()}
    metadata = {"lora_config": json.dumps(dataclasses.asdict(config))}
    if prompt_style is not None:
        metadata["prompt_style"] = prompt_style
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata=metadata)


def read_lora_metadata(path: Path) -> dict[str, str]:
    if not path.is_file():
        raise UserError(f"{path} not found: pass the adapter written by finetune/lora.py (its out_dir/{LORA_WEIGHTS_NAME})")
    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata() or {}
    if "lora_config" not in metadata:
        raise UserError(f"{path} has no LoRA hyperparameters in its metadata; was it written by finetune/lora.py?")
    return metadata


def load_lora(path: Path) -> tuple[LoRAConfig, dict[str, torch.Tensor]]:
    """The hyperparameters and weights of an adapter written by `save_lora`."""
    metadata = read_lora_metadata(path)
    with safe_open(str(path), framework="pt") as f:
        state = {name: f.get_tensor(name) for name in f.keys()}
    return LoRAConfig(**json.loads(metadata["lora_config"])), state


def load_lora_into(model: nn.Module, path: Path) -> LoRAConfig:
    """Apply the adapter at `path` to a base `model`; checks that the adapter's keys are exactly the LoRA keys."""
    config, state = load_lora(path)
    apply_lora(model, config)
    expected = set(lora_state_dict(model))
    if set(state) != expected:
        raise UserError(
            f"{path} does not fit this model: missing {sorted(expected - set(state))[:3]}, "
            f"unexpected {sorted(set(state) - expected)[:3]}; was it trained on another checkpoint?"
        )
    try:
        model.load_state_dict(state, strict=False)
    except RuntimeError as e:  # size mismatch: same names, another model size or rank
        raise UserError(f"{path} does not fit this model ({str(e).splitlines()[-1].strip()})") from None
    return config
