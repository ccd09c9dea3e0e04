"""chat: the conversation is encoded as training encodes it, and answers stream as the same text."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lit_gpt.chat import chat_loop, stream_text
from lit_gpt.config import Config
from lit_gpt.data.tokenize import SegmentEncoder, conversation_prompt_ids
from lit_gpt.generate import generate_tokens, until_stop
from lit_gpt.model import GPT
from lit_gpt.prompts import Turn, load_prompt_style
from lit_gpt.tokenizer import Tokenizer

from prepare_helpers import CHATML, tiny_bpe_checkpoint, tiny_sentencepiece_checkpoint


@pytest.fixture(params=["chat", "alpaca_bpe", "alpaca_sentencepiece"])
def setup(request, tmp_path: Path):
    if request.param == "alpaca_sentencepiece":
        tokenizer = Tokenizer(tiny_sentencepiece_checkpoint(tmp_path / "tok"))
    else:
        tokenizer = Tokenizer(tiny_bpe_checkpoint(tmp_path / "tok", bos=False, chat_template=CHATML))
    style = load_prompt_style(request.param.split("_")[0], tokenizer)
    torch.manual_seed(0)
    model = GPT(Config(vocab_size=tokenizer.vocab_size, n_layer=2, n_embd=32, n_head=4, intermediate_size=64,
                       block_size=512)).eval()
    return tokenizer, style, model


def test_conversation_prompt_equals_the_training_sample_up_to_the_answer(setup) -> None:
    tokenizer, style, _ = setup
    encoder = SegmentEncoder(tokenizer)
    turns = [Turn("Name three primary colors.", "Red, blue, yellow."), Turn("How do I bake bread?", "Knead, bake.")]
    segments = style.segments(turns)
    sample = encoder.build(segments, encoder.encode([segments])[0], bos=style.bos)
    answer_start = sample.responses[-1][0]
    prompt = conversation_prompt_ids(encoder, style.segments([turns[0], Turn(turns[1].instruction, "")]), style.bos)
    assert prompt == sample.input_ids[:answer_start]


def test_chat_loop_streams_greedy_answers_with_history(setup) -> None:
    tokenizer, style, model = setup
    inputs = iter(["Name three primary colors.", "How do I bake bread?", ""])
    written: list[str] = []
    turns = chat_loop(model, tokenizer, style, lambda: next(inputs), written.append, max_new_tokens=12, top_k=1)
    assert [t.instruction for t in turns] == ["Name three primary colors.", "How do I bake bread?"]
    # the second answer is what greedy generation gives for the conversation including the first answer
    encoder = SegmentEncoder(tokenizer)
    ids = conversation_prompt_ids(encoder, style.segments([turns[0], Turn(turns[1].instruction, "")]), style.bos)
    new = until_stop(list(generate_tokens(model, torch.tensor(ids), 12, top_k=1, stop_ids=tokenizer.stop_ids)),
                     tokenizer.stop_ids)
    assert turns[1].response == tokenizer.decode(new, skip_special_tokens=True)
    assert "".join(written) == turns[0].response + "\n" + turns[1].response + "\n"


def test_stream_text_never_shows_half_a_character(tmp_path: Path) -> None:
    tokenizer = Tokenizer(tiny_bpe_checkpoint(tmp_path / "tok", bos=False))
    text = "Paris 🙂 café 東京 done"
    ids = tokenizer.encode(text, bos=False)
    assert len(ids) > len(text.split())  # multi-byte characters span several byte-level tokens
    pieces = list(stream_text(iter(ids + [tokenizer.eos_id, 5, 6]), tokenizer))
    assert "".join(pieces) == text
    assert not any("\ufffd" in piece for piece in pieces)
