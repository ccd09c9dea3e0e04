"""Token ids and loss masks (lit_gpt.prompts, lit_gpt.data.tokenize): decode what is trainable and compare it with
the text that should be, on tiny tokenizers built here and on the real SmolLM2 and Llama 2 tokenizers."""
from __future__ import annotations

from pathlib import Path

import pytest

from lit_gpt.data.tokenize import IGNORE_INDEX, Sample, SegmentEncoder, truncate
from lit_gpt.prompts import Alpaca, ChatTemplate, Segment, Turn, load_prompt_style
from lit_gpt.tokenizer import Tokenizer
from lit_gpt.utils import UserError
from prepare_helpers import (
    CHATML,
    SMOLLM2,
    llama2_checkpoint,
    needs_llama2,
    needs_smollm2,
    tiny_bpe_checkpoint,
    tiny_sentencepiece_checkpoint,
)

TURN = Turn("Name the capital of France.", "Paris is the capital of France.")
TURN_WITH_INPUT = Turn("Translate to French.", "Bonjour, Paris!", input="Good morning")
CONVERSATION = [
    Turn("Write a haiku.", "Quiet pond, a frog."),
    Turn("Another one?", "Snow on the pine."),
    Turn("Which do you like?", "The first one."),
]

_BUILDERS = {
    "bpe": lambda d: tiny_bpe_checkpoint(d),
    "sentencepiece": tiny_sentencepiece_checkpoint,
    "chatml": lambda d: tiny_bpe_checkpoint(d, bos=False, chat_template=CHATML),
    "smollm2": lambda d: SMOLLM2,
    "llama2": llama2_checkpoint,
}
_MARKS = {"smollm2": needs_smollm2, "llama2": needs_llama2}


@pytest.fixture(scope="module")
def tokenizers() -> dict[str, Tokenizer]:
    """Tokenizers built so far in this module, by name (building the tiny ones takes a few ms each)."""
    return {}


def _tokenizer(name: str, tokenizers: dict[str, Tokenizer], tmp_path_factory: pytest.TempPathFactory) -> Tokenizer:
    if name not in tokenizers:
        tokenizers[name] = Tokenizer(_BUILDERS[name](tmp_path_factory.mktemp(name)))
    return tokenizers[name]


def _params(*names: str) -> list:
    return [pytest.param(n, marks=_MARKS.get(n, ())) for n in names]


@pytest.fixture
def tokenizer(request: pytest.FixtureRequest, tokenizers: dict, tmp_path_factory: pytest.TempPathFactory) -> Tokenizer:
    return _tokenizer(request.param, tokenizers, tmp_path_factory)


def _sample(tokenizer: Tokenizer, style, turns, **kwargs) -> Sample:
    encoder = SegmentEncoder(tokenizer)
    segments = style.segments(turns)
    (ids,) = encoder.encode([segments])
    return encoder.build(segments, ids, style.bos, **kwargs)


def _trained_runs(sample: Sample) -> list[list[int]]:
    """The maximal runs of consecutive tokens that carry a label."""
    runs: list[list[int]] = []
    previous = IGNORE_INDEX
    for token, label in zip(sample.input_ids, sample.labels):
        if label != IGNORE_INDEX:
            assert label == token
            if previous == IGNORE_INDEX:
                runs.append([])
            runs[-1].append(token)
        previous = label
    return runs


@pytest.mark.parametrize("tokenizer", _params("bpe", "sentencepiece", "smollm2", "llama2"), indirect=True)
@pytest.mark.parametrize("turn", [TURN, TURN_WITH_INPUT], ids=["no-input", "input"])
def test_alpaca_trains_on_exactly_the_response_and_eos(tokenizer: Tokenizer, turn: Turn) -> None:
    style = Alpaca(tokenizer)
    sample = _sample(tokenizer, style, [turn])
    (trained,) = _trained_runs(sample)
    assert trained[-1] == tokenizer.eos_id
    assert tokenizer.decode(trained[:-1]) == turn.response
    # the prompt ids are exactly what generation feeds: the prompt text encoded on its own, BOS as the tokenizer adds it
    prompt_ids = sample.input_ids[: len(sample.input_ids) - len(trained)]
    assert prompt_ids == tokenizer.encode(style.prompt(turn.instruction, turn.input))
    assert (prompt_ids[0] == tokenizer.bos_id) == tokenizer.add_bos
    assert (sample.prompt_tokens, sample.response_tokens) == (len(prompt_ids), len(trained))


@pytest.mark.parametrize("tokenizer", _params("sentencepiece", "llama2"), indirect=True)
def test_sentencepiece_responses_get_no_leading_space(tokenizer: Tokenizer) -> None:
    """Encoded alone, "Paris" would become "▁Paris": the response would start with a space no prompt ends with."""
    style = Alpaca(tokenizer)
    sample = _sample(tokenizer, style, [TURN])
    text = tokenizer.decode(sample.input_ids[1:-1])  # without BOS and EOS
    assert text == style.prompt(TURN.instruction) + TURN.response
    assert sample.input_ids[1:-1] != tokenizer.encode(style.prompt(TURN.instruction), bos=False) + tokenizer.encode(
        TURN.response, bos=False
    )


@pytest.mark.parametrize("tokenizer", _params("chatml", "smollm2"), indirect=True)
def test_chat_template_trains_on_the_response_and_its_end_token(tokenizer: Tokenizer) -> None:
    style = load_prompt_style("auto", tokenizer)
    assert isinstance(style, ChatTemplate)
    sample = _sample(tokenizer, style, [TURN])
    (trained,) = _trained_runs(sample)
    assert tokenizer.decode(trained) == TURN.response + "<|im_end|>"
    messages = [{"role": "user", "content": TURN.instruction}, {"role": "assistant", "content": TURN.response}]
    rendered = tokenizer.apply_chat_template(messages)
    assert tokenizer.decode(sample.input_ids) == rendered  # the template's text, untouched
    assert sample.input_ids == tokenizer.encode(rendered, bos=False)  # byte-level BPE: parts join to the whole
    assert tokenizer.decode(sample.input_ids[-1:]) == "\n" and sample.labels[-1] == IGNORE_INDEX  # never generated


@pytest.mark.parametrize("tokenizer", _params("bpe", "sentencepiece", "chatml", "smollm2", "llama2"), indirect=True)
def test_a_conversation_is_one_sample_with_loss_on_every_response(tokenizer: Tokenizer) -> None:
    style = load_prompt_style("auto", tokenizer)
    eos_text = "<|im_end|>" if style.name == "chat" else ""
    sample = _sample(tokenizer, style, CONVERSATION)
    runs = _trained_runs(sample)
    assert [r[-1] for r in runs] == [tokenizer.eos_id] * 3
    assert [tokenizer.decode(r if eos_text else r[:-1]) for r in runs] == [t.response + eos_text for t in CONVERSATION]
    assert len(sample.responses) == 3

    last_only = _sample(tokenizer, style, CONVERSATION, last_turn_only=True)
    assert last_only.input_ids == sample.input_ids  # earlier turns stay as context
    assert _trained_runs(last_only) == runs[-1:]


def test_alpaca_conversation_layout(tmp_path: Path) -> None:
    segments = Alpaca(Tokenizer(tiny_bpe_checkpoint(tmp_path))).segments(CONVERSATION[:2])
    assert [(s.text, s.trainable, s.eos) for s in segments] == [
        (Alpaca.HEADER + "### Instruction:\nWrite a haiku.\n\n### Response:\n", False, False),
        ("Quiet pond, a frog.", True, True),
        ("\n\n### Instruction:\nAnother one?\n\n### Response:\n", False, False),
        ("Snow on the pine.", True, True),
    ]


@pytest.mark.parametrize("tokenizer", _params("bpe", "chatml"), indirect=True)
def test_without_mask_inputs_every_token_is_trained(tokenizer: Tokenizer) -> None:
    sample = _sample(tokenizer, load_prompt_style("auto", tokenizer), CONVERSATION, mask_inputs=False)
    assert sample.labels == sample.input_ids


def test_chat_style_needs_a_template(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="has no chat template.*use --prompt_style alpaca"):
        load_prompt_style("chat", Tokenizer(tiny_bpe_checkpoint(tmp_path)))


def test_a_template_whose_answer_does_not_extend_its_prompt_is_refused(tmp_path: Path) -> None:
    # renders only the last message: the answer's turn does not start with the prompt given for it
    template = "{{ messages[-1]['content'] }}{% if add_generation_prompt %}>{% endif %}"
    style = load_prompt_style("chat", Tokenizer(tiny_bpe_checkpoint(tmp_path, bos=False, chat_template=template)))
    for last_turn_only in (False, True):
        with pytest.raises(UserError, match="renders an answer's own turn differently"):
            style.segments([TURN], last_turn_only)


# -- fitting into max_seq_length ---------------------------------------------------------------------------------


@pytest.fixture
def bpe(tokenizers: dict, tmp_path_factory: pytest.TempPathFactory) -> Tokenizer:
    return _tokenizer("bpe", tokenizers, tmp_path_factory)


def test_a_response_is_learned_up_to_its_last_eos(bpe: Tokenizer) -> None:
    encoder = SegmentEncoder(bpe)
    eos, ignored = encoder.eos_id, IGNORE_INDEX
    segments = [Segment("prompt", trainable=False), Segment("response", trainable=True)]
    # ids given directly: build only joins and labels them; what follows the last EOS (ChatML's newline) is context
    sample = encoder.build(segments, [[5, 6], [7, eos, 8, eos, 9]], bos=False)
    assert sample.labels == [ignored, ignored, 7, eos, 8, eos, ignored] and sample.responses == [(2, 6)]
    sample = encoder.build(segments, [[5, 6], [7, 8]], bos=False)  # no EOS at all: the whole response
    assert sample.labels == [ignored, ignored, 7, 8] and sample.responses == [(2, 4)]


def test_truncation_inside_a_response_keeps_the_eos(bpe: Tokenizer) -> None:
    sample = _sample(bpe, Alpaca(bpe), [TURN])
    limit = sample.prompt_tokens + 3
    cut = truncate(sample, limit, bpe.eos_id)
    assert cut is not None and len(cut.input_ids) == limit == len(cut.labels)
    assert cut.input_ids[:-1] == sample.input_ids[: limit - 1] and cut.input_ids[-1] == bpe.eos_id
    assert _trained_runs(cut) == [sample.input_ids[sample.prompt_tokens : limit - 1] + [bpe.eos_id]]
    assert cut.truncated == len(sample.input_ids) - limit


def test_truncation_in_a_later_prompt_ends_after_the_last_whole_response(bpe: Tokenizer) -> None:
    sample = _sample(bpe, Alpaca(bpe), CONVERSATION)
    first_end = sample.responses[0][1]
    cut = truncate(sample, first_end + 3, bpe.eos_id)  # 3 tokens into the second prompt
    assert cut is not None and cut.input_ids == sample.input_ids[:first_end]
    assert cut.input_ids[-1] == bpe.eos_id and len(_trained_runs(cut)) == 1


def test_truncation_leaving_no_response_token_gives_none(bpe: Tokenizer) -> None:
    sample = _sample(bpe, Alpaca(bpe), [TURN])
    assert truncate(sample, sample.prompt_tokens, bpe.eos_id) is None
    assert truncate(sample, sample.prompt_tokens + 1, bpe.eos_id) is None  # only room for a bare EOS


def test_a_response_that_ends_exactly_at_the_limit_is_kept_whole(bpe: Tokenizer) -> None:
    sample = _sample(bpe, Alpaca(bpe), CONVERSATION)
    limit = sample.responses[1][1]
    cut = truncate(sample, limit, bpe.eos_id)
    assert cut is not None and cut.input_ids == sample.input_ids[:limit] and cut.labels == sample.labels[:limit]
    shorter = truncate(sample, limit - 1, bpe.eos_id)  # one token short: the second response loses its last token
    assert shorter is not None and shorter.input_ids == sample.input_ids[: limit - 2] + [bpe.eos_id]


@needs_smollm2
def test_ids_equal_transformers_for_the_alpaca_prompt_and_the_chat_template() -> None:
    """The reference: transformers' AutoTokenizer on the same folder encodes the prompt and renders the chat."""
    transformers = pytest.importorskip("transformers")
    reference = transformers.AutoTokenizer.from_pretrained(SMOLLM2)
    tokenizer = Tokenizer(SMOLLM2)
    alpaca = _sample(tokenizer, Alpaca(tokenizer), [TURN_WITH_INPUT])
    prompt = Alpaca(tokenizer).prompt(TURN_WITH_INPUT.instruction, TURN_WITH_INPUT.input)
    assert alpaca.input_ids[: alpaca.prompt_tokens] == reference(prompt)["input_ids"]

    chat = _sample(tokenizer, ChatTemplate(tokenizer), CONVERSATION)
    messages = []
    for turn in CONVERSATION:
        messages += [{"role": "user", "content": turn.instruction}, {"role": "assistant", "content": turn.response}]
    expected = reference.apply_chat_template(messages, tokenize=True)
    expected = expected["input_ids"] if hasattr(expected, "keys") else expected
    assert chat.input_ids == list(expected)
