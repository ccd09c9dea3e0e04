"""Autoregressive sampling with the KV cache: one prefill pass over the prompt, then one token per step."""
from __future__ import annotations

from collections.abc import Collection, Iterator, Sequence
from typing import TYPE_CHECKING

import torch

from lit_gpt.model import GPT
from lit_gpt.utils import UserError

if TYPE_CHECKING:
    from lit_gpt.tokenizer import Tokenizer


def sample(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None,
           generator: torch.Generator | None = None) -> torch.Tensor:
    """One token id from the last-position `logits` (vocab_size,), or one per row of (B, vocab_size) as (B, 1).
    `temperature=0` or `top_k=1` is greedy."""
    if temperature == 0 or top_k == 1:
        return torch.argmax(logits, dim=-1, keepdim=True)
    logits = logits.float() / temperature
    if top_k is not None and top_k < logits.size(-1):
        kth = torch.topk(logits, top_k).values[..., -1:]
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


@torch.inference_mode()
def generate_batch(
    model: GPT,
    prompts: Sequence[Sequence[int]],
    max_new_tokens: int,
    temperature: float = 0.0,
    top_k: int | None = None,
    stop_ids: Collection[int] = (),
    generator: torch.Generator | None = None,
) -> list[list[int]]:
    """The new token ids after each of `prompts` (the stop token included where one came), generated together with
    the KV cache.

    Prompts are left-padded to the longest, so every row writes its next token into the same cache slot:

        slot       0   1   2   3   4 | 5   6        row 0's positions: 0 1 2 3 4 5 6
        row 0      a   a   a   a   a | n   n        row 1's positions: - - 0 1 2 3 4
        row 1      .   .   b   b   b | n   n        (. = padding: no real token ever attends to it)

    Each row's RoPE positions start at 0 where its prompt starts, so a row computes what it would alone: greedy
    decoding gives the tokens of `generate_tokens` one prompt at a time (tested), up to float rounding in near-ties.
    A row that stopped keeps being computed until all have (or `max_new_tokens`), its extra tokens discarded.
    """
    B, T = len(prompts), max(len(p) for p in prompts)
    total = T + max_new_tokens
    if total > model.config.block_size:
        raise ValueError(f"prompt ({T} tokens) + max_new_tokens ({max_new_tokens}) exceeds the model's context of "
                         f"{model.config.block_size} tokens")
    if total > model.max_seq_length:
        model.max_seq_length = total
    device = model.embed.weight.device
    stale_at = model.kv_cache_stale_at
    if stale_at is not None and total > stale_at:
        # LongRoPE recomputes the whole cache when a row passes its original context, at another step in every row
        return [list(generate_tokens(model, torch.as_tensor(p, device=device), max_new_tokens, temperature, top_k,
                                     stop_ids, generator=generator)) for p in prompts]
    pad = torch.tensor([T - len(p) for p in prompts], device=device)  # (B,)
    idx = torch.zeros((B, T), dtype=torch.long, device=device)
    for row, prompt in enumerate(prompts):
        idx[row, T - len(prompt):] = torch.as_tensor(prompt, dtype=torch.long, device=device)
    slots = torch.arange(total, device=device)
    positions = (slots[None, :] - pad[:, None]).clamp(min=0)  # (B, total): a row's own positions, from its prompt
    real = slots[None, :] >= pad[:, None]  # (B, total): key slots holding a real token of the row
    stops = torch.tensor(sorted(stop_ids), dtype=torch.long, device=device)
    out: list[list[int]] = [[] for _ in range(B)]
    done = torch.zeros(B, dtype=torch.bool, device=device)
    model.set_kv_cache(batch_size=B, max_seq_length=total)
    try:
        input_pos, step = torch.arange(T, device=device), idx
        for _ in range(max_new_tokens):
            logits = model(step, input_pos=input_pos, positions=positions[:, input_pos], key_mask=real,
                           head=lambda hidden, head: head(hidden[:, -1]))  # (B, vocab): the last position only
            next_tokens = sample(logits, temperature, top_k, generator)  # (B, 1)
            for row in (~done).nonzero().flatten().tolist():
                out[row].append(int(next_tokens[row]))
            done |= torch.isin(next_tokens[:, 0], stops)
            if bool(done.all()):
                break
            step, input_pos = next_tokens, input_pos[-1:] + 1
    finally:
        model.clear_kv_cache()
    return out


# ------------------------------------------------------------------------------------------------ local judges


def require_chat_template(tokenizer: Tokenizer) -> None:
    """A judge must be an instruction (chat) model: refuse one whose tokenizer has no chat template."""
    if not tokenizer.has_chat_template:
        raise UserError(f"--judge_checkpoint_dir {tokenizer.checkpoint_dir} has no chat template; the judge must be "
                        "an instruction (chat) model")


def judge_replies(model: GPT, tokenizer: Tokenizer, messages: Sequence[str], primer: str,
                  max_new_tokens: int) -> list[tuple[str, bool]]:
    """A judge's greedy replies to single-turn user `messages`, generated together: each message in the chat
    template with the assistant's reply begun by `primer` (so even a small model's next token is the rating or
    verdict). Per message: (the reply, primer included, True), or (why it was not judged, False) when the prompt
    and `max_new_tokens` exceed the model's context."""
    out: list[tuple[str, bool]] = []
    prompts, rows = [], []
    for row, message in enumerate(messages):
        text = tokenizer.apply_chat_template([{"role": "user", "content": message}], add_generation_prompt=True)
        # the rendered template holds its own BOS text, if any (see Tokenizer.apply_chat_template)
        ids = tokenizer.encode(text + primer, bos=False, eos=False)
        out.append((f"(not judged: {len(ids)} prompt tokens exceed the judge's context)", False))
        if len(ids) + max_new_tokens <= model.config.block_size:
            prompts.append(ids)
            rows.append(row)
    if prompts:
        replies = generate_batch(model, prompts, max_new_tokens, temperature=0.0, stop_ids=tokenizer.stop_ids)
        for row, new in zip(rows, replies):
            out[row] = primer + tokenizer.decode(until_stop(new, tokenizer.stop_ids), skip_special_tokens=True), True
    return out
