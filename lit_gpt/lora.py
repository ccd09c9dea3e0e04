"""Low-rank adaptation (Hu et al. 2021, https://arxiv.org/abs/2106.09685) by swapping linear layers in place.

A `LoRALinear` keeps the base layer's `weight` and `bias` under the same names, so a base checkpoint loads into
a LoRA model unchanged, and adds `lora_A` (r, in) and `lora_B` (out, r):

    y = x W^T + b + (dropout(x) A^T B^T) * alpha / r          B starts at zero: the model starts as the base

Each target is its own linear (query, key and value are separate in `lit_gpt.model`), so "query and value only"
adapts exactly those rows: the fused-QKV bookkeeping that made Lit-GPT's partial targets wrong does not exist here.
The hyperparameters travel with the adapter weights (`lora_config` in the safetensors metadata), so generate,
merge and export read them instead of being told; so does a fingerprint of the base checkpoint (`base_checkpoint`),
so they refuse a base the adapter was not trained on, even one of the same shape.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from lit_gpt.utils import LIT_CONFIG_NAME, LIT_WEIGHTS_NAME, UserError, atomic_path, read_json, read_safetensors_file

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
              prompt_style: str | None = None, base: str | None = None) -> None:
    """Write the adapter weights of `model` (or the adapter tensors themselves, by name) with their hyperparameters,
    the prompt style of the training data and the base checkpoint's `base_fingerprint` in the file's metadata,
    atomically: generate, merge and export read them from there."""
    from safetensors.torch import save_file

    tensors = lora_state_dict(model) if isinstance(model, nn.Module) else model
    state = {k: v.detach().contiguous() for k, v in tensors.items()}
    metadata = {"lora_config": json.dumps(dataclasses.asdict(config))}
    if prompt_style is not None:
        metadata["prompt_style"] = prompt_style
    if base is not None:
        metadata["base_checkpoint"] = base
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata=metadata)


# Sampled weights of the base compare equal across dtypes up to this relative difference (bf16 keeps 8 bits)
_FINGERPRINT_RTOL = 1e-2


def base_fingerprint(checkpoint_dir: Path) -> str:
    """What identifies a base checkpoint, as JSON: its config (without its name) and 32 weights sampled from 4 of its
    matrices. Cheap (32 reads) and the same whatever dtype the checkpoint was converted to; two checkpoints of one
    shape (a base model and its finetune) differ in the samples."""
    from safetensors import SafetensorError, safe_open

    config = read_json(Path(checkpoint_dir) / LIT_CONFIG_NAME)
    shape = {k: v for k, v in config.items() if k not in ("name", "hf_repo_id")}
    samples = {}
    weights = Path(checkpoint_dir) / LIT_WEIGHTS_NAME
    try:
        with safe_open(str(weights), framework="pt") as f:
            matrices = [name for name in sorted(f.keys()) if len(f.get_slice(name).get_shape()) == 2]
            for name in (matrices[i * (len(matrices) - 1) // 3] for i in range(4)) if matrices else ():
                tensor = f.get_slice(name)
                rows, cols = tensor.get_shape()
                picks = sorted({(i * rows // 8, (i * 7919 + 13) % cols) for i in range(8)})
                samples[name] = [float(tensor[r:r + 1, c:c + 1].float().item()) for r, c in picks]
    except (SafetensorError, OSError) as e:
        raise UserError(f"{weights} is not a readable safetensors file ({e}); convert the checkpoint again: "
                        f"python scripts/convert_hf_checkpoint.py --checkpoint_dir {checkpoint_dir}") from None
    return json.dumps({"checkpoint_dir": str(checkpoint_dir),
                       "config_sha256": hashlib.sha256(json.dumps(shape, sort_keys=True).encode()).hexdigest(),
                       "samples": samples})


def check_base(path: Path, metadata: dict[str, str], checkpoint_dir: Path) -> None:
    """Refuse `checkpoint_dir` when the adapter at `path` records another base; warn when it records none."""
    if not (Path(checkpoint_dir) / LIT_WEIGHTS_NAME).is_file():
        print(f"warning: {checkpoint_dir} has no {LIT_WEIGHTS_NAME}, so whether {path} was trained on it is not "
              "checked", file=sys.stderr)
        return
    if "base_checkpoint" not in metadata:
        print(f"warning: {path} does not record the checkpoint it was trained on (written by an older lit_gpt); make "
              f"sure it was {checkpoint_dir}: on another one it computes something else", file=sys.stderr)
        return
    try:
        recorded = json.loads(metadata["base_checkpoint"])
        trained_on, config_hash, samples = recorded["checkpoint_dir"], recorded["config_sha256"], recorded["samples"]
    except (ValueError, TypeError, KeyError, RecursionError):
        raise UserError(f"{path}: its base_checkpoint metadata is damaged; write the adapter again with "
                        "finetune/lora.py") from None
    current = json.loads(base_fingerprint(checkpoint_dir))
    same = config_hash == current["config_sha256"] and samples.keys() == current["samples"].keys() and all(
        math.isclose(a, b, rel_tol=_FINGERPRINT_RTOL, abs_tol=1e-6)
        for name, values in samples.items() for a, b in zip(values, current["samples"][name], strict=True))
    if not same:
        raise UserError(f"{path} was trained on {trained_on}, and {checkpoint_dir} is another checkpoint (other "
                        f"config or weights); pass --checkpoint_dir {trained_on}, the base it was trained on")


def read_lora_metadata(path: Path) -> dict[str, str]:
    return _read_lora(path, tensors=False)[1]


def _read_lora(path: Path, tensors: bool = True) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    if not Path(path).is_file():
        raise UserError(f"{path} not found: pass the adapter written by finetune/lora.py (its out_dir/{LORA_WEIGHTS_NAME})")
    state, metadata = read_safetensors_file(path, "pass the adapter written by finetune/lora.py, or train it again",
                                            tensors)
    if "lora_config" not in metadata:
        raise UserError(f"{path} has no LoRA hyperparameters in its metadata; was it written by finetune/lora.py?")
    return state, metadata


def _lora_config(path: Path, text: str) -> LoRAConfig:
    """The LoRAConfig in an adapter's metadata; anything but the fields of a LoRAConfig with values of their types
    is one UserError."""
    try:
        fields = json.loads(text)
    except (ValueError, RecursionError):
        fields = None
    if not isinstance(fields, dict):
        raise UserError(f"{path}: its lora_config metadata is not a JSON object; write the adapter again with "
                        "finetune/lora.py")
    types = {f.name: f.type for f in dataclasses.fields(LoRAConfig)}
    unknown = sorted(set(fields) - set(types))
    if unknown:
        raise UserError(f"{path}: unknown LoRA settings {unknown[:3]} in its metadata (known: {', '.join(types)}); "
                        "was it written by a newer lit_gpt?")
    for name, value in fields.items():
        kind = {"int": (int,), "float": (int, float), "bool": (bool,)}[types[name]]
        if not isinstance(value, kind) or (types[name] != "bool" and isinstance(value, bool)):
            raise UserError(f"{path}: LoRA setting {name} is {value!r}, expected a {types[name]}; write the adapter "
                            "again with finetune/lora.py")
    return LoRAConfig(**fields)


def load_lora(path: Path, checkpoint_dir: Path | None = None) -> tuple[LoRAConfig, dict[str, torch.Tensor]]:
    """The hyperparameters and weights of an adapter written by `save_lora`; with `checkpoint_dir`, refuses a base
    the adapter was not trained on (`check_base`)."""
    state, metadata = _read_lora(path)
    config = _lora_config(path, metadata["lora_config"])
    if checkpoint_dir is not None:
        check_base(path, metadata, checkpoint_dir)
    return config, state


def load_lora_into(model: nn.Module, path: Path, checkpoint_dir: Path | None = None) -> LoRAConfig:
    """Apply the adapter at `path` to a base `model` (loaded from `checkpoint_dir`, checked against the adapter's
    record when given); checks that the adapter's keys are exactly the LoRA keys."""
    config, state = load_lora(path, checkpoint_dir)
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
