"""Estimated GPU memory of LoRA / QLoRA finetuning for a named model, from a formula (no GPU needed).

    python bench/memory_estimate.py --model_name Llama-2-7b-hf --max_seq_length 2048

An ESTIMATE, not a measurement: it adds up the tensors training must hold, in bytes, for micro-batch 1:

    weights       bf16: 2 B/param. nf4: the block linears at 4 bits + one fp32 absmax per 64 weights
                  (0.5625 B/param; -dq quantizes those scales again: ~0.52 B/param); embedding and head bf16.
    LoRA          adapter params x (4 B fp32 weight + 4 B grad + 8 B AdamW moments)
    activations   what backward needs per layer and token (Korthikanti et al. 2022, flash attention, so no
                  T x T scores), in bf16: ~(12 n_embd + 6 intermediate) x 2 B per token and layer for a SwiGLU
                  block; with activation checkpointing only each block's input (n_embd x 2 B) plus one block's
                  recompute is held
    logits        T x vocab fp32 for the loss, its gradient and the bf16 logits (10 B per entry);
                  with the default --lm_head_chunk_size 128 only 128 x vocab of them
    overhead      CUDA context and allocator slack, taken as 1 GiB

Measured figures replace these where a GPU was available (see the README's table).
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from lit_gpt.config import Config  # noqa: E402
from lit_gpt.lora import LoRAConfig, apply_lora, lora_state_dict  # noqa: E402
from lit_gpt.model import GPT  # noqa: E402
from lit_gpt.utils import cli  # noqa: E402

GiB = 2**30


def estimate(config: Config, max_seq_length: int, quantize: str | None, checkpointing: bool, chunked: bool,
             lora: LoRAConfig) -> dict[str, float]:
    """Bytes per component (see the module docstring), in GiB."""
    with torch.device("meta"):
        model = GPT(config)
        block_linear = sum(p.numel() for n, p in model.named_parameters() if n.startswith("blocks.") and p.ndim == 2)
        other = sum(p.numel() for p in model.parameters()) - block_linear
        adapter = sum(p.numel() for p in lora_state_dict(apply_lora(model, lora)).values())
    bytes_per_linear = {None: 2.0, "bnb.nf4": 0.5625, "bnb.nf4-dq": 0.52}[quantize]
    T, d, i, L, V = max_seq_length, config.n_embd, config.intermediate_size, config.n_layer, config.vocab_size
    per_layer = T * (12 * d + 6 * i) * 2
    activations = L * T * d * 2 + per_layer if checkpointing else L * per_layer
    logits = (min(T, 128) if chunked else T) * V * 10
    parts = {
        "weights": block_linear * bytes_per_linear + other * 2,
        "lora + optimizer": adapter * 16,
        "activations": activations,
        "logits": logits,
        "overhead": GiB,
    }
    return {k: v / GiB for k, v in parts.items()}


def main(model_name: str = "Llama-2-7b-hf", max_seq_length: int = 2048) -> None:
    """Print the estimated memory of LoRA (bf16-true) and QLoRA (nf4) runs of a named model.

    Each with full logits, with the default chunked head, and with activation checkpointing too.

    Args:
        model_name: A named config (`python scripts/download.py` lists them).
        max_seq_length: Tokens per row.
    """
    config = Config.from_name(model_name)
    lora = LoRAConfig(lora_r=8, lora_alpha=16, lora_query=True, lora_value=True)
    print(f"{model_name}, {max_seq_length} tokens, micro-batch 1, LoRA r=8 on query+value (ESTIMATE, GiB)")
    print("| run | weights | activations | logits | total |\n|---|---|---|---|---|")
    variants = {(False, False): ", --lm_head_chunk_size 0 (full logits)", (False, True): " (head in chunks: default)",
                (True, True): " + --activation_checkpointing true"}
    for quantize, label in ((None, "LoRA bf16-true"), ("bnb.nf4", "QLoRA nf4")):
        for (checkpointing, chunked), options in variants.items():
            parts = estimate(config, max_seq_length, quantize, checkpointing, chunked, lora)
            print(f"| {label}{options} | {parts['weights']:.1f} | {parts['activations']:.1f} | {parts['logits']:.2f} "
                  f"| {sum(parts.values()):.1f} |")


if __name__ == "__main__":
    cli(main)
