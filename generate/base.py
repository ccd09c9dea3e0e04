"""Generate text from a converted checkpoint: the smallest end-to-end use of a model.

    python generate/base.py --checkpoint_dir checkpoints/HuggingFaceTB/SmolLM2-135M-Instruct \
        --prompt "What is the capital of France?" --prompt_style chat --top_k 1
    python generate/base.py --checkpoint_dir ... --lora_path out/lora/lit_lora.safetensors --prompt "..."
"""
import sys
import time
from pathlib import Path
from typing import Literal

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a plain checkout, no install needed

import torch

from lit_gpt.checkpoint import load_model
from lit_gpt.generate import generate_tokens, until_stop
from lit_gpt.lora import load_lora_into
from lit_gpt.prompts import default_prompt_style, load_prompt_style
from lit_gpt.tokenizer import Tokenizer
from lit_gpt.utils import DOWNLOAD_HINT, UserError, cli, default_precision, precision_dtype, require_dir, resolve_checkpoint_dir


def main(
    checkpoint_dir: Path,
    prompt: str = "What food do llamas eat?",
    lora_path: Path | None = None,
    prompt_style: Literal["raw", "alpaca", "chat", "auto"] | None = None,
    max_new_tokens: int = 50,
    temperature: float = 0.8,
    top_k: int | None = 200,
    num_samples: int = 1,
    precision: str | None = None,
    seed: int = 1234,
) -> list[str]:
    """Sample continuations of a prompt with the KV cache, stopping at any of the tokenizer's stop tokens (EOS).

    The stop tokens are EOS and the ids generation_config.json lists in `eos_token_id` (Llama 3.1's <|eot_id|>).

    Args:
        checkpoint_dir: A converted checkpoint (`checkpoints/ORG/NAME` or just `ORG/NAME`).
        prompt: The text to continue, or the instruction to answer (with a prompt style).
        lora_path: A LoRA adapter from finetune/lora.py (`lit_lora.safetensors`) to apply to the checkpoint;
            its rank, alpha and targets are read from the file.
        prompt_style: How to wrap the prompt: raw (as is), alpaca (Lit-GPT's template), chat (the tokenizer's
            chat template) or auto (chat if the tokenizer has one, else alpaca). Default: what the checkpoint was
            made for: the adapter's training style with --lora_path, the style a finetuned (merged or full)
            checkpoint records, the chat template when the tokenizer has one, else raw.
        max_new_tokens: How many tokens to generate at most.
        temperature: Sampling temperature; 0 is greedy.
        top_k: Sample among the k most likely tokens only; 1 is greedy.
        num_samples: How many independent samples to draw.
        precision: Lightning Fabric precision: 32-true, bf16-true, 16-true, bf16-mixed or 16-mixed
            (default: bf16-true on a GPU that supports it, else 32-true).
        seed: Random seed for sampling.
    """
    import lightning as L

    checkpoint_dir = require_dir(resolve_checkpoint_dir(checkpoint_dir), "checkpoint folder", DOWNLOAD_HINT)
    precision = precision or default_precision()
    fabric = L.Fabric(devices=1, precision=precision)
    fabric.seed_everything(seed, verbose=False)
    tokenizer = Tokenizer(checkpoint_dir)
    t0 = time.perf_counter()
    model = load_model(checkpoint_dir, device=fabric.device, dtype=precision_dtype(precision))
    if lora_path is not None:
        load_lora_into(model, lora_path, checkpoint_dir)
    model.eval()
    print(f"Loaded {checkpoint_dir}{f' + {lora_path}' if lora_path else ''} in {time.perf_counter() - t0:.1f}s",
          file=sys.stderr)
    if prompt_style is None:
        prompt_style, why = default_prompt_style(checkpoint_dir, tokenizer, lora_path)
        print(f"Prompt style: {prompt_style} ({why}; --prompt_style chooses another)", file=sys.stderr)

    if prompt_style in (None, "raw"):
        ids = tokenizer.encode(prompt)
    else:
        style = load_prompt_style(prompt_style, tokenizer)  # the same text the training data was made with
        ids = tokenizer.encode(style.prompt(prompt), bos=style.bos)
    room = model.config.block_size - max_new_tokens
    if len(ids) > room:
        raise UserError(f"--prompt is {len(ids)} tokens, and with --max_new_tokens {max_new_tokens} the model's context "
                        f"of {model.config.block_size} tokens leaves room for {max(room, 0)}; shorten the prompt or "
                        "lower --max_new_tokens")
    ids = torch.tensor(ids, device=fabric.device)
    outputs = []
    for _ in range(num_samples):
        t0 = time.perf_counter()
        with fabric.autocast():  # a no-op except for the "-mixed" precisions
            new = list(generate_tokens(model, ids, max_new_tokens, temperature=temperature, top_k=top_k,
                                       stop_ids=tokenizer.stop_ids))
        elapsed = time.perf_counter() - t0
        new = until_stop(new, tokenizer.stop_ids)
        outputs.append(tokenizer.decode(new, skip_special_tokens=True))
        print(outputs[-1])
        print(f"Generated {len(new)} tokens in {elapsed:.2f}s ({len(new) / elapsed:.1f} tokens/s)", file=sys.stderr)
    if fabric.device.type == "cuda":
        print(f"Peak GPU memory: {torch.cuda.max_memory_allocated() / 1e9:.2f} GB", file=sys.stderr)
    return outputs


if __name__ == "__main__":
    cli(main)
