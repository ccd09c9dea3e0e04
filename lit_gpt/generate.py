"""Autoregressive sampling with the KV cache: one prefill pass over the prompt, then one token per step."""
from __future__ import annotations

from collections.abc import Collection, Iterator, Sequence

import torch

from lit_gpt.model import GPT


def sample(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None,
           generator: torch.Generator | None = None) -> torch.Tensor:
    """One token id from the last-position `logits` (vocab_size,). `temperature=0` or `top_k=1` is greedy."""
    if temperature == 0 or top_k == 1:
        return torch.argmax(logits, dim=-1, keepdim=True)
    logits = logits.float() / temperature
    if top_k is not None and top_k < logits.size(-1):
        kth = torch.topk(logits, top_k).values[-1]
        logits = torch.where(logits < kth, float("-inf"), logits)
    probs = torch.softmax(logits, dim=-1)
    return torch.multinomial(probs, num_samples=1, generator=generator)


@torch.inference_mode()
def generate_tokens(
    model: GPT,
    prompt: torch.Tensor,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    stop_ids: Collection[int] = (),
    use_kv_cache: bool = True,
    generator: torch.Generator | None = None,
) -> Iterator[int]:
    """Yield up to `max_new_tokens` new token ids after `prompt` (T,), stopping after the first of `stop_ids` (which
    is yielded; `until_stop` cuts it off). Pass `tokenizer.stop_ids`: EOS and the model's end-of-turn tokens.

    Without the KV cache every step recomputes the whole sequence; that path exists to check the cached one.
    """
    T = prompt.size(0)
    total = T + max_new_tokens
    if total > model.config.block_size:
        raise ValueError(
            f"prompt ({T} tokens) + max_new_tokens ({max_new_tokens}) exceeds the model's context of "
            f"{model.config.block_size} tokens"
        )
    if total > model.max_seq_length:
        model.max_seq_length = total
    tokens = prompt
    stale_at = model.kv_cache_stale_at
    if use_kv_cache:
        model.set_kv_cache(batch_size=1, max_seq_length=total)
    try:
        input_pos = torch.arange(T, device=prompt.device)
        step_input = prompt
        for _ in range(max_new_tokens):
            if use_kv_cache and stale_at is not None and int(input_pos[0]) == stale_at:
                # every key is recomputed with the long LongRoPE factors: one full pass, then cached steps again
                logits = model(tokens[None], torch.arange(tokens.size(0), device=tokens.device))[0, -1]
            elif use_kv_cache:
                logits = model(step_input[None], input_pos)[0, -1]
            else:
                logits = model(tokens[None])[0, -1]
            next_token = sample(logits, temperature, top_k, generator)
            yield int(next_token)
            if int(next_token) in stop_ids:
                return
            tokens = torch.cat((tokens, next_token))
            step_input = next_token
            input_pos = input_pos[-1:] + 1
    finally:
        if use_kv_cache:
            model.clear_kv_cache()


def until_stop(ids: Sequence[int], stop_ids: Collection[int]) -> list[int]:
    """`ids` up to, not including, the first stop token: the answer's own tokens."""
    return next((list(ids[:i]) for i, token in enumerate(ids) if token in stop_ids), list(ids))


def generate(model: GPT, prompt: torch.Tensor, max_new_tokens: int, **kwargs) -> torch.Tensor:
    """The prompt followed by the generated tokens, as one 1-D tensor."""
    new = list(generate_tokens(model, prompt, max_new_tokens, **kwargs))
    return torch.cat((prompt, torch.tensor(new, dtype=prompt.dtype, device=prompt.device)))
