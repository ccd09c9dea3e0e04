"""Quantize a model's block linears with bitsandbytes, for QLoRA (Dettmers et al. 2023, https://arxiv.org/abs/2305.14314).

    quantize_model(model, "bnb.nf4")    then    apply_lora(model, lora_config)

Every `nn.Linear` inside `model.blocks` becomes a `bnb.nn.Linear4bit` (nf4/fp4, "-dq" = double quantization of the
block scales) or a `bnb.nn.Linear8bitLt` (LLM.int8(), Dettmers et al. 2022) holding the same weights under the same
`weight`/`bias` names. The embedding and `lm_head` stay in their float dtype, as in QLoRA: they are a small share of a
large model and the most sensitive to rounding. `LoRALinear` (lit_gpt/lora.py) adapts these layers like float ones.

bitsandbytes is an optional dependency (`pip install 'bitsandbytes>=0.50'`); from 0.50 every mode also runs on CPU.
"""
from __future__ import annotations

from types import ModuleType
from typing import Callable, Literal, get_args

import torch
import torch.nn as nn

from lit_gpt.lora import LoRALinear
from lit_gpt.model import GPT
from lit_gpt.utils import UserError

Mode = Literal["bnb.nf4", "bnb.nf4-dq", "bnb.fp4", "bnb.fp4-dq", "bnb.int8"]  # the `--quantize` choices
# mode -> (quant_type, double quantization) for 4-bit; None for int8
MODES: dict[str, tuple[str, bool] | None] = {
    "bnb.nf4": ("nf4", False),
    "bnb.nf4-dq": ("nf4", True),
    "bnb.fp4": ("fp4", False),
    "bnb.fp4-dq": ("fp4", True),
    "bnb.int8": None,
}
assert tuple(MODES) == get_args(Mode)


def quantize_model(model: GPT, mode: str, log: Callable[[str], None] = print) -> GPT:
    """Replace every `nn.Linear` in `model.blocks` by its bitsandbytes counterpart for `mode`, in place; returns `model`.

    Quantizes on the device the weights are on (load the model onto the GPU first there); a 4-bit layer computes in
    the dtype its float weight had. Quantize before `apply_lora`: LoRA then wraps the quantized layers. `log` receives
    one line with the memory of the quantized weights before and after (pass `fabric.print` to log on rank 0 only).
    """
    if mode not in MODES:
        raise UserError(f"unknown quantization {mode!r}: choose one of {', '.join(MODES)}")
    try:
        import bitsandbytes as bnb
    except ImportError:
        raise UserError(f"{mode} quantization needs bitsandbytes: pip install 'bitsandbytes>=0.50'") from None

    if any(isinstance(m, LoRALinear) for m in model.modules()):
        raise UserError("quantize the model before applying LoRA (quantize_model, then apply_lora)")

    before = after = count = 0
    for parent in model.blocks.modules():
        for name, child in list(parent.named_children()):
            # exactly nn.Linear: the bnb layers subclass it, and an already quantized layer stays as it is
            if type(child) is nn.Linear:
                quantized = _quantized_linear(bnb, child, MODES[mode])
                before, after, count = before + _weight_bytes(child), after + _weight_bytes(quantized), count + 1
                setattr(parent, name, quantized)
    log(f"Quantized {count} linear layers to {mode}: their weights take {after / 2**20:,.1f} MiB instead of "
        f"{before / 2**20:,.1f} MiB ({before / max(after, 1):.2f}x less)")
    return model


def _quantized_linear(bnb: ModuleType, linear: nn.Linear, quant: tuple[str, bool] | None) -> nn.Linear:
    """A bitsandbytes layer with `linear`'s weights, quantized on their device; its `bias` is `linear.bias` itself."""
    weight, has_bias = linear.weight.detach(), linear.bias is not None
    if quant is None:
        # LLM.int8(): one int8 row per output feature with its absmax scale (SCB), from the fp16 weight
        layer = bnb.nn.Linear8bitLt(linear.in_features, linear.out_features, bias=has_bias,
                                    has_fp16_weights=False, device="meta")
        CB, SCB, _ = bnb.functional.int8_vectorwise_quant(weight.to(torch.float16))
        layer.weight = bnb.nn.Int8Params(CB, requires_grad=False, has_fp16_weights=False, CB=CB, SCB=SCB)
    else:
        quant_type, double = quant
        layer = bnb.nn.Linear4bit(linear.in_features, linear.out_features, bias=has_bias, compute_dtype=weight.dtype,
                                  compress_statistics=double, quant_type=quant_type, device="meta")
        params = bnb.nn.Params4bit(weight, requires_grad=False, compress_statistics=double, quant_type=quant_type,
                                   module=layer)
        layer.weight = params.to(weight.device)  # a not yet quantized Params4bit quantizes when moved to a device
        # On CPUs with AVX512-BF16, Linear4bit repacks its weight in place on the first eval no-grad forward, for a
        # bf16 kernel that has no backward and rounds the scales to bf16; keep one layout and float math instead.
        layer.support_avx512bf16_for_cpu = False
    layer.bias = linear.bias
    layer.train(linear.training)  # a new module starts in training mode; int8 computes differently in each
    return layer


def _weight_bytes(layer: nn.Module) -> int:
    """Bytes of a linear's weight with its quantization statistics (everything in its state dict but the bias)."""
    return sum(t.numel() * t.element_size() for k, t in layer.state_dict().items() if k != "bias")
