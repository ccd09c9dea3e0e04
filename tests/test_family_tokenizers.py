"""Tokenizers of the newer families against `transformers.AutoTokenizer`, on tiny tokenizer files built here in each
family's format (the real files cannot be had offline): Llama 3's and Qwen's byte-level BPE with a regex pre-split
(tiktoken style), their special tokens, BOS rules and chat templates (Llama 3's headers, Qwen 3's thinking blocks).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from tokenizers import Regex
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, normalizers, pre_tokenizers, processors, trainers

from lit_gpt.tokenizer import Tokenizer

transformers = pytest.importorskip("transformers")

# the pre-tokenizer regexes of the real tokenizer.json files (Llama 3: digits in threes; Qwen 2/3: one by one)
LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
                r"\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
              r"\s*[\r\n]+|\s+(?!\S)|\s+")
LLAMA3_SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
QWEN_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
# Meta-Llama-3-8B-Instruct's template
LLAMA3_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + "
    "message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
    "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
# The thinking logic of Qwen 3's template (tools left out): the last answer keeps its <think> block, earlier ones
# lose it; `enable_thinking=false` pre-fills an empty block
QWEN3_TEMPLATE = """{%- if messages[0].role == 'system' %}
    {{- '<|im_start|>system\\n' + messages[0].content + '<|im_end|>\\n' }}
{%- endif %}
{%- set ns = namespace(last_query_index=messages|length - 1) %}
{%- for message in messages[::-1] %}
    {%- if message.role == "user" %}{%- set ns.last_query_index = (messages|length - 1) - loop.index0 %}{%- break %}{%- endif %}
{%- endfor %}
{%- for message in messages %}
    {%- if message.role == "user" or (message.role == "system" and not loop.first) %}
        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}
    {%- elif message.role == "assistant" %}
        {%- set content = message.content %}
        {%- set reasoning_content = '' %}
        {%- if '</think>' in content %}
            {%- set reasoning_content = content.split('</think>')[0].rstrip('\\n').split('<think>')[-1].lstrip('\\n') %}
            {%- set content = content.split('</think>')[-1].lstrip('\\n') %}
        {%- endif %}
        {%- if loop.index0 > ns.last_query_index and (loop.last or reasoning_content) %}
            {{- '<|im_start|>' + message.role + '\\n<think>\\n' + reasoning_content.strip('\\n') + '\\n</think>\\n\\n' + content.lstrip('\\n') }}
        {%- else %}
            {{- '<|im_start|>' + message.role + '\\n' + content }}
        {%- endif %}
        {{- '<|im_end|>\\n' }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\\n' }}
    {%- if enable_thinking is defined and enable_thinking is false %}
        {{- '<think>\\n\\n</think>\\n\\n' }}
    {%- endif %}
{%- endif %}"""
CORPUS = [
    "The quick brown fox jumps over the lazy dog. It's 2024, and we'll count 1234567 apples.",
    "def add(a, b):\n    return a + b\n\n\nprint(add(1, 2))",
    "Bonjour, ça va? Très bien! 你好，世界。 Привет, мир!",
    "<think>\nLet me add the numbers.\n</think>\n\nThe answer is 4.",
] * 20
TEXTS = [
    "Hello world", "  two  leading spaces", "trailing   ", "numbers 1234567890 and 3.14159", "tabs\tand\nnewlines\r\n",
    "I'M sure you'RE right, they'll see", "emoji 🙂🚀 and 你好", "naïve café", "", " ", "\n\n",
    "<|im_start|>user\nhi<|im_end|>", "x<|eot_id|>y<|begin_of_text|>", "<think>\nhmm\n</think>\n\nok",
]
CONVERSATIONS = [
    [{"role": "user", "content": "What is 2+2?"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": " What is 2+2? "},
     {"role": "assistant", "content": "<think>\nTwo and two.\n</think>\n\n4"}, {"role": "user", "content": "And 3+3?"}],
    [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "<think>\nA greeting.\n</think>\n\nHello!"}],
]


def _tokenizer_dir(tmp_path: Path, family: str) -> Path:
    """A folder with tokenizer.json + tokenizer_config.json in the family's format, trained on CORPUS."""
    llama3 = family == "llama3"
    tok = HFTokenizer(models.BPE(ignore_merges=True) if llama3 else models.BPE())
    if not llama3:
        tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_SPLIT if llama3 else QWEN_SPLIT), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=500, show_progress=False,
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    specials = LLAMA3_SPECIALS if llama3 else QWEN_SPECIALS
    tok.add_special_tokens(specials)
    if llama3:  # Llama 3 puts <|begin_of_text|> before every text; Qwen adds nothing
        bos = tok.token_to_id("<|begin_of_text|>")
        tok.post_processor = processors.TemplateProcessing(
            single="<|begin_of_text|> $A", pair="<|begin_of_text|> $A <|begin_of_text|> $B",
            special_tokens=[("<|begin_of_text|>", bos)])
        config = {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>", "chat_template": LLAMA3_TEMPLATE}
    else:
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
        tok.add_tokens(["<think>", "</think>"])  # Qwen 3: added, not special (they stay in decoded text)
        config = {"bos_token": None, "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>",
                  "chat_template": QWEN3_TEMPLATE}
    folder = tmp_path / family
    folder.mkdir()
    tok.save(str(folder / "tokenizer.json"))
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    config["added_tokens_decoder"] = {
        str(i): {"content": t.content, "special": t.special, "lstrip": False, "rstrip": False, "normalized": False,
                 "single_word": False} for i, t in tok.get_added_tokens_decoder().items()}
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    return folder


@pytest.mark.parametrize("family", ["llama3", "qwen3"])
def test_encode_decode_and_chat_template_match_transformers(tmp_path: Path, family: str) -> None:
    folder = _tokenizer_dir(tmp_path, family)
    ours, theirs = Tokenizer(folder), transformers.AutoTokenizer.from_pretrained(str(folder))
    assert (ours.bos_id, ours.eos_id, ours.pad_id) == (theirs.bos_token_id, theirs.eos_token_id, theirs.pad_token_id)
    assert ours.add_bos == (family == "llama3")
    for text in TEXTS:
        ids = ours.encode(text)
        assert ids == theirs.encode(text), text
        for skip in (False, True):
            assert ours.decode(ids, skip_special_tokens=skip) == theirs.decode(ids, skip_special_tokens=skip), text
    # the pre-split is what makes these tokenizers: digits in threes (Llama 3) or one by one (Qwen)
    digits = [ours.decode([i]) for i in ours.encode("1234567", bos=False)]
    assert digits == (["123", "456", "7"] if family == "llama3" else list("1234567"))

    for messages in CONVERSATIONS:
        for add_generation_prompt in (False, True):
            text = ours.apply_chat_template(messages, add_generation_prompt=add_generation_prompt)
            assert text == theirs.apply_chat_template(messages, tokenize=False,
                                                      add_generation_prompt=add_generation_prompt)
            assert ours.encode(text, bos=False) == theirs(text, add_special_tokens=False)["input_ids"]


def test_qwen3_thinking_blocks_in_the_template(tmp_path: Path) -> None:
    ours = Tokenizer(_tokenizer_dir(tmp_path, "qwen3"))
    text = ours.apply_chat_template(CONVERSATIONS[1], add_generation_prompt=True)
    # an earlier answer loses its reasoning; the prompt ends where the model starts thinking
    assert "Two and two" not in text and text.endswith("<|im_start|>assistant\n")
    last = ours.apply_chat_template(CONVERSATIONS[2])
    assert last.endswith("<|im_start|>assistant\n<think>\nA greeting.\n</think>\n\nHello!<|im_end|>\n")
    assert ours.token_to_id("<think>") != ours.token_to_id("</think>")


def test_qwen3_multi_turn_learns_the_last_answer_exactly_and_chat_prompts_as_the_template(tmp_path: Path) -> None:
    """Qwen 3 drops earlier answers' <think> blocks once a later turn follows: all answers of a conversation cannot
    be learned in one exact sample (refused, saying what to do), the last one can, and chat's prompt is the template's."""
    from lit_gpt.data.tokenize import IGNORE_INDEX, SegmentEncoder, conversation_prompt_ids
    from lit_gpt.prompts import Turn, load_prompt_style
    from lit_gpt.utils import UserError

    tokenizer = Tokenizer(_tokenizer_dir(tmp_path, "qwen3"))
    style = load_prompt_style("chat", tokenizer)
    turns = [Turn("What is 2+2?", "<think>\nTwo and two.\n</think>\n\n4"), Turn("And 3+3?", "6")]
    messages = [m for t in turns for m in ({"role": "user", "content": t.instruction},
                                            {"role": "assistant", "content": t.response})]
    with pytest.raises(UserError, match="--last_turn_only true"):
        style.segments(turns)

    segments = style.segments(turns, last_turn_only=True)
    prompt = tokenizer.apply_chat_template(messages[:3], add_generation_prompt=True)
    assert "Two and two" not in prompt  # the template's rendering of the earlier turn
    assert [(s.text, s.trainable) for s in segments] == [
        (prompt, False), (tokenizer.apply_chat_template(messages)[len(prompt):], True)]
    encoder = SegmentEncoder(tokenizer)
    sample = encoder.build(segments, encoder.encode([segments])[0], style.bos, last_turn_only=True)
    assert tokenizer.decode(sample.input_ids) == tokenizer.apply_chat_template(messages)
    learned = [i for i, label in zip(sample.input_ids, sample.labels) if label != IGNORE_INDEX]
    assert tokenizer.decode(learned) == "<think>\n\n</think>\n\n6<|im_end|>"

    # what chat feeds the model for the second turn: the template's own prompt, token for token
    history = style.segments([turns[0], Turn(turns[1].instruction, "")], last_turn_only=True)
    assert conversation_prompt_ids(encoder, history, style.bos) == tokenizer.encode(prompt, bos=False)


def test_qwen3_multi_turn_data_preparation_names_the_row_and_the_flag(tmp_path: Path) -> None:
    from lit_gpt.data import LIMA, prepare
    from lit_gpt.data.layout import META_NAME
    from lit_gpt.utils import UserError

    folder = _tokenizer_dir(tmp_path, "qwen3")
    data_file = tmp_path / "train.jsonl"
    rows = [{"conversations": ["Hi", "Hello!"]}, {"conversations": ["What is 2+2?", "4", "And 3+3?", "6"]}] * 4
    data_file.write_text("".join(json.dumps(row) + "\n" for row in rows))
    common = dict(checkpoint_dir=folder, data_file=data_file, test_split_fraction=0.0)
    with pytest.raises(UserError, match=r"train\.jsonl.*line 2.*--last_turn_only true"):
        prepare(LIMA, destination_path=tmp_path / "all", **common)
    prepare(LIMA, destination_path=tmp_path / "last", last_turn_only=True, **common)
    meta = json.loads((tmp_path / "last" / META_NAME).read_text())
    assert meta["samples"]["train"] == 8 and meta["last_turn_only"]
