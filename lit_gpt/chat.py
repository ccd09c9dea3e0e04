"""A multi-turn conversation with a model: every turn re-encodes the whole conversation exactly as training does,
then streams the answer token by token."""
from __future__ import annotations

from collections.abc import Callable, Iterator

import torch

from lit_gpt.data.tokenize import SegmentEncoder, conversation_prompt_ids
from lit_gpt.generate import generate_tokens
from lit_gpt.model import GPT
from lit_gpt.prompts import PromptStyle, Turn
from lit_gpt.tokenizer import Tokenizer


def stream_text(tokens: Iterator[int], tokenizer: Tokenizer) -> Iterator[str]:
    """Text pieces as tokens arrive; together they are the decoded answer. A piece is held back while it ends inside
    a multi-byte character (a token can carry half of an emoji); the stop token (EOS, end of turn) is not shown."""
    ids: list[int] = []
    shown = ""
    for token in tokens:
        if token in tokenizer.stop_ids:
            break
        ids.append(token)
        text = tokenizer.decode(ids, skip_special_tokens=True)
        if not text.endswith("\ufffd") and len(text) > len(shown):
            yield text[len(shown):]
            shown = text
    text = tokenizer.decode(ids, skip_special_tokens=True)
    if len(text) > len(shown):  # the answer ended inside a character: show what there is
        yield text[len(shown):]


def chat_loop(
    model: GPT,
    tokenizer: Tokenizer,
    style: PromptStyle,
    read: Callable[[], str | None],
    write: Callable[[str], None],
    max_new_tokens: int = 256,
    temperature: float = 0.7,
    top_k: int | None = 50,
) -> list[Turn]:
    """Alternate `read()` (a user message; None or empty ends the chat) and a streamed answer through `write`.

    The context is the whole conversation so far; when it no longer fits the model, the oldest turns are dropped.
    Returns the conversation.
    """
    encoder = SegmentEncoder(tokenizer)
    device = model.embed.weight.device
    turns: list[Turn] = []
    while message := read():
        history = turns + [Turn(message, "")]
        # only the prompt of the last turn is read: templates that rewrite earlier turns (Qwen 3) render it exactly
        ids = conversation_prompt_ids(encoder, style.segments(history, last_turn_only=True), style.bos)
        while len(ids) + max_new_tokens > model.config.block_size and len(history) > 1:
            history = history[1:]  # forget the oldest turn rather than fail
            ids = conversation_prompt_ids(encoder, style.segments(history, last_turn_only=True), style.bos)
        if len(ids) + max_new_tokens > model.config.block_size:
            write(f"(that message is {len(ids)} tokens, too long for the model's context of "
                  f"{model.config.block_size} with {max_new_tokens} tokens of answer; send a shorter one)\n")
            continue
        tokens = generate_tokens(model, torch.tensor(ids, device=device), max_new_tokens, temperature=temperature,
                                 top_k=top_k, stop_ids=tokenizer.stop_ids)
        answer = ""
        for piece in stream_text(tokens, tokenizer):
            write(piece)
            answer += piece
        write("\n")
        turns.append(Turn(message, answer))
    return turns
