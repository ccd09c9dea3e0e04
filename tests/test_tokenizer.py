"""Tests for lit_gpt.tokenizer.

Tiny tokenizers trained here cover the config logic and errors without any shared files. Parity with
`transformers.AutoTokenizer` on real Llama 2 / Mistral / GPT-NeoX / SmolLM2 tokenizers runs when the shared models
folder (a sibling of the repository) is present and is skipped otherwise.
"""
from __future__ import annotations

import io
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import sentencepiece as spm
import torch
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, pre_tokenizers, processors, trainers

from lit_gpt.tokenizer import Tokenizer
from lit_gpt.utils import UserError

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
MODELS = SHARED / "models"
ALPACA = SHARED / "data" / "alpaca" / "alpaca_5000.json"

CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Hello world, hello tokenizer!",
    "Numbers: 1 2 3 42 1000.",
    "  spaces   and\ttabs\nnew lines",
    "def add(a, b):\n    return a + b",
    "Instruction: write a poem about the sea.",
    "Response: The sea is wide and blue.",
] * 10

# Texts chosen to hit the places where tokenizers disagree: whitespace runs, leading/trailing spaces, newlines, tabs,
# non-Latin scripts, emoji (byte fallback / byte-level), code, and special-token strings inside the text.
EDGE_TEXTS = [
    "Hello world",
    "Hello, world! How's it going?",
    "  Leading spaces",
    "trailing spaces   ",
    "a  b   c    d",
    " x",
    "x ",
    "\n",
    "\n\nTwo newlines\n",
    "tabs\tand\t\ttabs",
    "\r\nWindows line",
    "numbers 1234567890 3.14159 -42 1e10 0x1F",
    "punctuation: ;:!?()[]{}<>/\\|@#$%^&*_+=~`'\"",
    "你好，世界！这是一个测试。",
    "日本語のテキスト、한국어 텍스트",
    "emoji 🙂🚀👍🏽 and 👨‍👩‍👧",
    "Ünïcödé àccents café naïve",
    "def f(x):\n    return x ** 2  # square\n",
    "for (int i = 0; i < n; ++i) {\n\tsum += a[i];\n}",
    "",
    " ",
    "   ",
]
SPECIAL_TEXTS = ["<s>[INST] hi [/INST] ok</s>", "x<s>y", "a</s> b", "<unk>", "[INST]x", "x [INST]"]
CHATML_TEXTS = [
    "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n",
    "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n  two  spaces <|im_end|><|endoftext|>",
]


# -- helpers and tiny fixtures ----------------------------------------------------------------------------------


def write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj), encoding="utf-8")


@pytest.fixture(scope="module")
def tiny_hf_json() -> str:
    """A 392-token byte-level BPE with special tokens <s>=0, </s>=1, <pad>=2, <|user|>=3 and a BOS post-processor."""
    tok = HFTokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<s>", "</s>", "<pad>", "<|user|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 0)])
    return tok.to_str()


@pytest.fixture(scope="module")
def tiny_sp_model() -> bytes:
    """A 400-piece sentencepiece BPE: <unk>=0, <s>=1, </s>=2, control <|user|>=3 and <|user|>2=4, user-defined
    <pad>=5."""
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS),
        model_writer=buf,
        vocab_size=400,
        hard_vocab_limit=False,
        model_type="bpe",
        control_symbols=["<|user|>", "<|user|>2"],  # one a prefix of the other
        user_defined_symbols=["<pad>"],
        # Llama's settings: no normalization, spaces kept as they are, bytes for unknown characters.
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        byte_fallback=True,
        minloglevel=2,
    )
    return buf.getvalue()


def make_hf_dir(path: Path, tokenizer_json: str, config: dict | None = None, post_processor: Any = True) -> Path:
    """A folder with the tiny tokenizer.json; `post_processor`: True keeps its BOS template, else replaces it."""
    path.mkdir(parents=True, exist_ok=True)
    tok = HFTokenizer.from_str(tokenizer_json)
    if post_processor is not True:
        tok.post_processor = post_processor or None
    tok.save(str(path / "tokenizer.json"))
    if config is not None:
        write_json(path / "tokenizer_config.json", config)
    return path


def make_sp_dir(path: Path, model: bytes, config: dict | None = None) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "tokenizer.model").write_bytes(model)
    if config is not None:
        write_json(path / "tokenizer_config.json", config)
    return path


@pytest.fixture(scope="module")
def AutoTokenizer() -> Any:
    # The reference is transformers 5 (v4 has other BOS rules and no TokenizersBackend).
    return pytest.importorskip("transformers", minversion="5.0").AutoTokenizer


def shared(*parts: str) -> Path:
    path = MODELS.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} not found (shared test models)")
    return path


def alpaca_texts(n: int = 300) -> list[str]:
    if not ALPACA.is_file():
        pytest.skip(f"{ALPACA} not found (shared test data)")
    rows = json.loads(ALPACA.read_text(encoding="utf-8"))[:n]
    return ["\n\n".join(v for v in (r["instruction"], r["input"], r["output"]) if v) for r in rows]


# -- errors -----------------------------------------------------------------------------------------------------


def test_folder_without_tokenizer_files(tmp_path: Path) -> None:
    write_json(tmp_path / "lit_config.json", {"name": "x"})
    with pytest.raises(UserError) as e:
        Tokenizer(tmp_path)
    message = str(e.value)
    assert str(tmp_path) in message and "\n" not in message
    assert "tokenizer.json" in message and "tokenizer.model" in message
    assert "python scripts/download.py --repo_id ORG/NAME" in message


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="does not exist.*download.py"):
        Tokenizer(tmp_path / "nope")


def test_invalid_config_json_names_the_file(tmp_path: Path, tiny_sp_model: bytes) -> None:
    make_sp_dir(tmp_path, tiny_sp_model)
    (tmp_path / "tokenizer_config.json").write_text('{"add_bos_token": tru}')
    with pytest.raises(UserError, match="tokenizer_config.json: invalid JSON at line 1"):
        Tokenizer(tmp_path)


def test_special_token_missing_from_vocab(tmp_path: Path, tiny_hf_json: str, tiny_sp_model: bytes) -> None:
    make_hf_dir(tmp_path / "hf", tiny_hf_json, {"eos_token": "<|eot|>"})
    with pytest.raises(UserError, match=r"eos_token '<\|eot\|>' is not in the tokenizer's vocabulary"):
        Tokenizer(tmp_path / "hf")
    make_sp_dir(tmp_path / "sp", tiny_sp_model, {"pad_token": "<PAD>"})
    with pytest.raises(UserError, match="pad_token '<PAD>' is not in"):
        Tokenizer(tmp_path / "sp")


def test_token_to_id(tmp_path: Path, tiny_hf_json: str, tiny_sp_model: bytes) -> None:
    hf = Tokenizer(make_hf_dir(tmp_path / "hf", tiny_hf_json))
    sp = Tokenizer(make_sp_dir(tmp_path / "sp", tiny_sp_model))
    assert (hf.token_to_id("</s>"), hf.token_to_id("<|user|>")) == (1, 3)
    assert (sp.token_to_id("</s>"), sp.token_to_id("<|user|>"), sp.token_to_id("<pad>")) == (2, 3, 5)
    for tok in (hf, sp):
        with pytest.raises(UserError, match="token '<nope>' is not in the tokenizer's vocabulary"):
            tok.token_to_id("<nope>")
    # sentencepiece maps unknown pieces to <unk> (0); that must not pass for a real id.
    with pytest.raises(UserError):
        sp.token_to_id("▁zzzzzz")


# -- special tokens and config logic (tiny, compared with transformers) --------------------------------------------

HF_CASES = {
    # transformers 5 ignores add_bos_token/add_eos_token when there is a tokenizer.json: the post-processor decides.
    "post_processor_wins": ({"bos_token": "<s>", "eos_token": "</s>", "add_bos_token": False, "add_eos_token": True},
                            None, True, dict(bos_id=0, eos_id=1, pad_id=None, add_bos=True, add_eos=False)),
    # AddedToken dicts; special_tokens_map.json overrides the config when it has no added_tokens_decoder.
    "added_token_dicts": ({"bos_token": {"__type": "AddedToken", "content": "<s>", "lstrip": False, "normalized": False,
                                         "rstrip": False, "single_word": False, "special": True},
                           "eos_token": "</s>"},
                          {"pad_token": "<pad>", "eos_token": {"content": "<|user|>", "special": True}}, True,
                          dict(bos_id=0, eos_id=3, pad_id=2, add_bos=True, add_eos=False)),
    "no_post_processor": ({"bos_token": "<s>", "eos_token": "</s>", "add_bos_token": True},
                          None, False, dict(bos_id=0, eos_id=1, pad_id=None, add_bos=False, add_eos=False)),
    # Llama 3 style: ByteLevel then a template, in a Sequence; here with EOS too.
    "sequence_bos_eos": ({"bos_token": "<s>", "eos_token": "</s>", "add_eos_token": False}, None,
                         processors.Sequence([
                             processors.ByteLevel(trim_offsets=False),
                             processors.TemplateProcessing(single="<s> $A </s>", special_tokens=[("<s>", 0), ("</s>", 1)]),
                         ]),
                         dict(bos_id=0, eos_id=1, pad_id=None, add_bos=True, add_eos=True)),
    # A named special token that is an ordinary vocabulary entry becomes a special added token (skipped by decode).
    "vocab_token_as_eos": ({"bos_token": "<s>", "eos_token": "Ġsea"}, None, True,
                           dict(bos_id=0, eos_id=282, pad_id=None, add_bos=True, add_eos=False)),
}


@pytest.mark.parametrize("case", HF_CASES)
def test_huggingface_special_tokens_match_transformers(tmp_path: Path, tiny_hf_json: str, AutoTokenizer: Any,
                                                       case: str) -> None:
    config, special_map, post_processor, expected = HF_CASES[case]
    path = make_hf_dir(tmp_path, tiny_hf_json, config, post_processor)
    if special_map is not None:
        write_json(path / "special_tokens_map.json", special_map)
    ours, theirs = Tokenizer(path), AutoTokenizer.from_pretrained(str(path))
    assert ours.backend == "huggingface"
    assert {k: getattr(ours, k) for k in expected} == expected
    assert (ours.bos_id, ours.eos_id, ours.pad_id) == (theirs.bos_token_id, theirs.eos_token_id, theirs.pad_token_id)
    assert ours.vocab_size == len(theirs) == 392
    for text in CORPUS[:7] + ["Hello <|user|> world</s>", "the Ġsea", ""]:
        ids = ours.encode(text)
        assert ids == theirs.encode(text), text
        assert ours.decode(ids, skip_special_tokens=True) == theirs.decode(ids, skip_special_tokens=True), text


SP_CASES = {
    # No config: BOS like Meta's code and transformers 4 (transformers 5 alone would add none here).
    "default": (None, dict(add_bos=True, add_eos=False)),
    "no_bos_with_eos": ({"add_bos_token": False, "add_eos_token": True}, dict(add_bos=False, add_eos=True)),
    "explicit": ({"add_bos_token": True, "add_eos_token": False, "bos_token": "<s>", "eos_token": "</s>",
                  "unk_token": "<unk>", "pad_token": {"__type": "AddedToken", "content": "<pad>", "special": True}},
                 dict(add_bos=True, add_eos=False, pad_id=5)),
}


@pytest.mark.parametrize("case", SP_CASES)
def test_sentencepiece_special_tokens_match_transformers(tmp_path: Path, tiny_sp_model: bytes, AutoTokenizer: Any,
                                                         case: str) -> None:
    config, expected = SP_CASES[case]
    ours = Tokenizer(make_sp_dir(tmp_path / "ours", tiny_sp_model, config))
    assert ours.backend == "sentencepiece"
    assert (ours.bos_id, ours.eos_id, ours.vocab_size) == (1, 2, 400)
    assert {k: getattr(ours, k) for k in expected} == expected
    # transformers' sentencepiece-faithful class, with our defaults spelled out (its own add_bos default is False).
    their_config = {"add_bos_token": True, **(config or {}), "tokenizer_class": "TokenizersBackend"}
    theirs = AutoTokenizer.from_pretrained(str(make_sp_dir(tmp_path / "theirs", tiny_sp_model, their_config)))
    sp = spm.SentencePieceProcessor(model_proto=tiny_sp_model)
    for text in CORPUS[:7] + EDGE_TEXTS + ["Hello <|user|> world <pad></s>", "<s>x", "<|user|>2<|user|>"]:
        ids = ours.encode(text)
        assert ids == theirs.encode(text), text
        if "<" not in text:
            assert ids == [1] * ours.add_bos + sp.encode(text) + [2] * ours.add_eos


def test_sentencepiece_special_strings_and_decode(tmp_path: Path, tiny_sp_model: bytes) -> None:
    tok = Tokenizer(make_sp_dir(tmp_path, tiny_sp_model))
    sp = spm.SentencePieceProcessor(model_proto=tiny_sp_model)
    text = "<|user|>Hello world</s><s> tail<|user|>2"
    ids = tok.encode(text, bos=False)
    # Each piece between special tokens is encoded on its own (with its own dummy prefix); the longest token wins.
    assert ids == [3, *sp.encode("Hello world"), 2, 1, *sp.encode(" tail"), 4]
    assert tok.decode(ids) == text
    assert tok.decode(ids, skip_special_tokens=True) == sp.decode(ids) == "Hello world  tail"
    assert tok.decode(torch.tensor([1, *sp.encode("emoji 🙂")])) == "<s>emoji 🙂"  # byte fallback, tensor input
    assert tok.decode(torch.tensor(2)) == "</s>"


def test_encode_overrides_and_batch(tmp_path: Path, tiny_hf_json: str, tiny_sp_model: bytes) -> None:
    hf = Tokenizer(make_hf_dir(tmp_path / "hf", tiny_hf_json, {"bos_token": "<s>", "eos_token": "</s>"}))
    sp = Tokenizer(make_sp_dir(tmp_path / "sp", tiny_sp_model))
    for tok in (hf, sp):
        plain = tok.encode("Hello world", bos=False)
        assert plain and tok.bos_id not in plain and tok.eos_id not in plain
        assert tok.encode("Hello world") == [tok.bos_id, *plain]
        assert tok.encode("Hello world", bos=False, eos=True) == [*plain, tok.eos_id]
        assert tok.encode("Hello world", bos=True, eos=True) == [tok.bos_id, *plain, tok.eos_id]
        assert tok.decode(plain) == "Hello world"
        texts = CORPUS[:7] + ["", "x<|user|>y", "<s>"]
        assert tok.encode_batch(texts, eos=True) == [tok.encode(t, eos=True) for t in texts]
        assert tok.encode_batch([]) == []
    no_eos = Tokenizer(make_hf_dir(tmp_path / "hf_no_eos", tiny_hf_json, {}, post_processor=False))
    assert (no_eos.bos_id, no_eos.eos_id) == (None, None)
    with pytest.raises(UserError, match="has no EOS token"):
        no_eos.encode("x", eos=True)


def test_ids_fall_back_to_generation_config(tmp_path: Path, tiny_hf_json: str) -> None:
    path = make_hf_dir(tmp_path, tiny_hf_json, {}, post_processor=False)
    write_json(path / "config.json", {"bos_token_id": 0, "eos_token_id": 1, "pad_token_id": 2})
    write_json(path / "generation_config.json", {"eos_token_id": [3, 1]})
    tok = Tokenizer(path)
    assert (tok.bos_id, tok.eos_id, tok.pad_id, tok.add_bos, tok.add_eos) == (0, 3, 2, False, False)


def test_fingerprint(tmp_path: Path, tiny_hf_json: str, tiny_sp_model: bytes) -> None:
    config = {"add_bos_token": True, "bos_token": "<s>", "eos_token": "</s>", "model_max_length": 4096}
    original = make_sp_dir(tmp_path / "a", tiny_sp_model, config)
    fingerprint = Tokenizer(original).fingerprint
    assert len(fingerprint) == 64 and int(fingerprint, 16) >= 0
    # A copy that is also a converted checkpoint, with a setting that does not change ids, agrees.
    copy = Path(shutil.copytree(original, tmp_path / "b"))
    write_json(copy / "lit_config.json", {"name": "tiny"})
    (copy / "lit_model.safetensors").write_bytes(b"not read")
    write_json(copy / "tokenizer_config.json", {**config, "model_max_length": 8})
    assert Tokenizer(copy).fingerprint == fingerprint
    # Anything that changes the ids changes the fingerprint.
    write_json(copy / "tokenizer_config.json", {**config, "add_bos_token": False})
    assert Tokenizer(copy).fingerprint != fingerprint
    write_json(copy / "tokenizer_config.json", {**config, "eos_token": "<|user|>"})
    assert Tokenizer(copy).fingerprint != fingerprint
    hf = Tokenizer(make_hf_dir(tmp_path / "hf", tiny_hf_json, {"bos_token": "<s>", "eos_token": "</s>"}))
    assert hf.fingerprint != fingerprint


# -- chat templates (tiny, compared with transformers) ------------------------------------------------------------

# Indented block tags and newlines after them exercise trim_blocks/lstrip_blocks.
TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}\n"
    "  {% if m['role'] not in ['system', 'user', 'assistant'] %}{{ raise_exception('Unknown role: ' + m['role']) }}"
    "{% endif %}\n"
    "<|{{ m['role'] }}|>\n"
    "{% if m['role'] == 'assistant' %}{% generation %}{{ m['content'] }}{% endgeneration %}"
    "{% else %}{{ m['content'] | trim }}{% endif %}{{ eos_token }}\n"
    "  {% if m.meta is defined %}{{ m.meta | tojson }}{% endif %}\n"
    "  {% if m.tool_calls is defined %}[tool calls]{% endif %}\n"
    "{% endfor %}\n"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
CONVERSATIONS = [
    [{"role": "user", "content": "Hi!"}],
    [{"role": "system", "content": " Be brief. "}, {"role": "user", "content": "2+2?", "meta": {"html": "<b>&</b>"}},
     {"role": "assistant", "content": "4", "tool_calls": None}, {"role": "user", "content": "Thanks"}],
]


def test_chat_template_matches_transformers(tmp_path: Path, tiny_hf_json: str, AutoTokenizer: Any) -> None:
    path = make_hf_dir(tmp_path, tiny_hf_json, {"bos_token": "<s>", "eos_token": "</s>", "chat_template": TEMPLATE})
    ours, theirs = Tokenizer(path), AutoTokenizer.from_pretrained(str(path))
    assert ours.has_chat_template and ours.chat_template == TEMPLATE
    for messages in CONVERSATIONS:
        for add_generation_prompt in (False, True):
            expected = theirs.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
            assert ours.apply_chat_template(messages, add_generation_prompt=add_generation_prompt) == expected
    assert ours.apply_chat_template(CONVERSATIONS[0]) == "<s><|user|>\nHi!</s>\n"
    assert '{"html": "<b>&</b>"}' in ours.apply_chat_template(CONVERSATIONS[1])  # tojson does not escape HTML
    with pytest.raises(UserError, match="Unknown role: tool"):
        ours.apply_chat_template([{"role": "tool", "content": "x"}])

    # A chat_template.jinja file wins over the config entry, as in transformers.
    (path / "chat_template.jinja").write_text("{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}")
    ours, theirs = Tokenizer(path), AutoTokenizer.from_pretrained(str(path))
    messages = CONVERSATIONS[1]
    assert ours.apply_chat_template(messages) == theirs.apply_chat_template(messages, tokenize=False)
    assert ours.apply_chat_template(messages).startswith("[system]  Be brief. \n[user] 2+2?\n")


def test_without_chat_template(tmp_path: Path, tiny_sp_model: bytes) -> None:
    tok = Tokenizer(make_sp_dir(tmp_path, tiny_sp_model))
    assert not tok.has_chat_template and tok.chat_template is None
    with pytest.raises(UserError, match="no chat template"):
        tok.apply_chat_template([{"role": "user", "content": "hi"}])
    write_json(tmp_path / "tokenizer_config.json", {"chat_template": "{% for m in messages %}{{ m.content }"})
    with pytest.raises(UserError, match="chat template line 1"):
        Tokenizer(tmp_path).apply_chat_template([{"role": "user", "content": "hi"}])


# -- parity with transformers on the real tokenizers in ../shared ----------------------------------------------------

SENTENCEPIECE_EXPECTED = {"llama2": (32000, 15043), "mistral-v1": (32000, 22557), "mistral-v3": (32768, 23325)}


@pytest.mark.parametrize("name", SENTENCEPIECE_EXPECTED)
def test_sentencepiece_parity(tmp_path: Path, AutoTokenizer: Any, name: str) -> None:
    model = shared("tokenizers", name, "tokenizer.model")
    texts = EDGE_TEXTS + SPECIAL_TEXTS + alpaca_texts()
    config = {"add_bos_token": True, "add_eos_token": False, "bos_token": "<s>", "eos_token": "</s>",
              "unk_token": "<unk>"}
    ours = Tokenizer(make_sp_dir(tmp_path / "ours", model.read_bytes(), {**config, "tokenizer_class": "LlamaTokenizer"}))
    # Finding (transformers 5.24): it has no sentencepiece-backed Llama class any more; `use_fast=False` is ignored.
    # The Hub's `"tokenizer_class": "LlamaTokenizer"` rebuilds a BPE from the model that differs from sentencepiece
    # on leading and repeated spaces (" x", "a  b", code indentation). Its generic `TokenizersBackend` follows the
    # model's normalizer spec and equals sentencepiece on all these texts, so that is the path we compare with, and
    # we check raw sentencepiece separately.
    theirs = AutoTokenizer.from_pretrained(
        str(make_sp_dir(tmp_path / "theirs", model.read_bytes(), {**config, "tokenizer_class": "TokenizersBackend"}))
    )
    vocab_size, hello = SENTENCEPIECE_EXPECTED[name]
    assert (ours.vocab_size, ours.bos_id, ours.eos_id, ours.pad_id) == (vocab_size, 1, 2, None)
    assert (ours.add_bos, ours.add_eos, ours.backend) == (True, False, "sentencepiece")
    assert (theirs.bos_token_id, theirs.eos_token_id, len(theirs)) == (1, 2, vocab_size)
    assert ours.encode("Hello") == [1, hello]

    batch = ours.encode_batch(texts)
    sp = spm.SentencePieceProcessor(model_file=str(model))
    for text, ids in zip(texts, batch):
        assert ids == theirs.encode(text), text
        if text not in SPECIAL_TEXTS:  # raw sentencepiece spells special-token strings out
            assert ids == [1, *sp.encode(text)], text
            assert ours.decode(ids, skip_special_tokens=True) == text
        assert ours.decode(ids, skip_special_tokens=True) == theirs.decode(ids, skip_special_tokens=True), text
        assert ours.decode(ids[1:]) == text  # round trip, special-token strings included


@pytest.mark.parametrize(
    "folder, expected",
    [
        (("tokenizers", "gpt-neox-20b"), dict(vocab_size=50277, bos_id=0, eos_id=0, pad_id=None, add_bos=False,
                                              add_eos=False, chat_template=None)),
        (("smollm2-135m-instruct-gguf",), dict(vocab_size=49152, bos_id=1, eos_id=2, pad_id=2, add_bos=False,
                                                 add_eos=False)),
    ],
)
def test_huggingface_parity(AutoTokenizer: Any, folder: tuple[str, ...], expected: dict) -> None:
    path = shared(*folder)
    texts = EDGE_TEXTS + CHATML_TEXTS + ["<|endoftext|>x"] + alpaca_texts()
    ours, theirs = Tokenizer(path), AutoTokenizer.from_pretrained(str(path))
    assert ours.backend == "huggingface"
    assert {k: getattr(ours, k) for k in expected} == expected
    assert (ours.bos_id, ours.eos_id, ours.vocab_size) == (theirs.bos_token_id, theirs.eos_token_id, len(theirs))
    for text, ids in zip(texts, ours.encode_batch(texts)):
        assert ids == theirs.encode(text), text
        for skip in (False, True):
            assert ours.decode(ids, skip_special_tokens=skip) == theirs.decode(ids, skip_special_tokens=skip), text
        assert ours.decode(ids) == text  # byte-level BPE round-trips exactly
    assert ours.encode_batch(texts[:20], bos=True, eos=True)[3] == [ours.bos_id, *theirs.encode(texts[3]), ours.eos_id]


def test_smollm2_chat_template_parity(AutoTokenizer: Any) -> None:
    path = shared("smollm2-135m-instruct-gguf")
    ours, theirs = Tokenizer(path), AutoTokenizer.from_pretrained(str(path))
    assert ours.chat_template == (path / "chat_template.jinja").read_text(encoding="utf-8")
    conversations = [
        [{"role": "user", "content": "What is the capital of France?"}],
        [{"role": "system", "content": "You are a pirate."}, {"role": "user", "content": "Hi!"},
         {"role": "assistant", "content": "Arr, ahoy!"}, {"role": "user", "content": "Tell me a  joke.\n"}],
    ]
    for messages in conversations:
        for add_generation_prompt in (False, True):
            text = ours.apply_chat_template(messages, add_generation_prompt=add_generation_prompt)
            assert text == theirs.apply_chat_template(messages, tokenize=False,
                                                      add_generation_prompt=add_generation_prompt)
            # transformers tokenizes a rendered chat without adding special tokens.
            assert ours.encode(text, bos=False) == theirs(text, add_special_tokens=False)["input_ids"]
    assert ours.apply_chat_template(conversations[0], add_generation_prompt=True) == (
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
        "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
    )
    assert ours.encode("<|im_start|>user\n")[:1] == [ours.token_to_id("<|im_start|>")] == [1]
