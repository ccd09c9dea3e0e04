"""Shared pieces of the data-preparation tests: tiny real tokenizers built in-process, fixture files in each
published format, and the real tokenizers/data in ../shared when it is there."""
from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
SMOLLM2 = SHARED / "models" / "smollm2-135m-instruct-gguf"
LLAMA2_MODEL = SHARED / "models" / "tokenizers" / "llama2" / "tokenizer.model"
ALPACA_5000 = SHARED / "data" / "alpaca" / "alpaca_5000.json"
LIMA_JSON = SHARED / "data" / "lima" / "lima.json"
OASST_DIR = SHARED / "data" / "oasst"

needs_smollm2 = pytest.mark.skipif(not SMOLLM2.is_dir(), reason="../shared/models/smollm2-135m-instruct-gguf missing")
needs_llama2 = pytest.mark.skipif(not LLAMA2_MODEL.is_file(), reason="../shared Llama 2 tokenizer.model missing")

CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
CORPUS = [
    "Below is an instruction that describes a task. Write a response that appropriately completes the request.",
    "### Instruction:\nName three primary colors.\n\n### Input:\nThe sky is blue.\n\n### Response:\nRed, blue, yellow.",
    "The quick brown fox jumps over the lazy dog. Paris is the capital of France. 1, 2, 3, 42!",
    "How do I bake bread? Mix flour, water, salt and yeast; knead, rest, shape and bake at 230 degrees.",
] * 4


def tiny_bpe_checkpoint(folder: Path, bos: bool = True, chat_template: str | None = None) -> Path:
    """A byte-level BPE `tokenizer.json` (GPT-2 style, like SmolLM2) trained on CORPUS, with <s>/</s> specials."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<s>", "</s>", "<|im_start|>", "<|im_end|>"]
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer)
    if bos:
        tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 0)])
    folder.mkdir(parents=True, exist_ok=True)
    tok.save(str(folder / "tokenizer.json"))
    config: dict[str, Any] = {"bos_token": "<s>", "eos_token": "<|im_end|>" if chat_template else "</s>"}
    if chat_template:
        config["chat_template"] = chat_template
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    return folder


def tiny_sentencepiece_checkpoint(folder: Path) -> Path:
    """A sentencepiece BPE `tokenizer.model` with byte fallback (like Llama 2's): it adds a "▁" before every text."""
    import sentencepiece

    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS), model_writer=model, vocab_size=400, model_type="bpe", byte_fallback=True,
        hard_vocab_limit=False, minloglevel=2, normalization_rule_name="identity", remove_extra_whitespaces=False,
    )
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tokenizer.model").write_bytes(model.getvalue())
    config = {"add_bos_token": True, "bos_token": "<s>", "eos_token": "</s>"}
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    return folder


def llama2_checkpoint(folder: Path) -> Path:
    """The real Llama 2 sentencepiece model with a tokenizer_config.json like the Hub's meta-llama/Llama-2-7b-hf."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tokenizer.model").write_bytes(LLAMA2_MODEL.read_bytes())
    config = {"add_bos_token": True, "add_eos_token": False, "bos_token": "<s>", "eos_token": "</s>",
              "unk_token": "<unk>", "pad_token": None, "tokenizer_class": "LlamaTokenizer", "legacy": False}
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    return folder


# -- fixture files in each published format ---------------------------------------------------------------------

ALPACA_ROWS = [
    {"instruction": "Name three primary colors.", "input": "", "output": "Red, blue and yellow."},
    {"instruction": "Translate to French.", "input": "Good morning", "output": "Bonjour"},
    {"instruction": "What is 2 + 2?", "input": "", "output": "4"},
    {"instruction": "Name the capital of France.", "input": "", "output": "Paris is the capital of France."},
    {"instruction": "Give a synonym for quick.", "input": "", "output": "Fast."},
    {"instruction": "Name three primary colors.", "input": "", "output": "Red, blue and yellow."},  # a duplicate
]

DOLLY_ROWS = [
    {"instruction": "When did Virgin Australia start operating?", "context": "Virgin Australia commenced services "
     "on 31 August 2000.", "response": "On 31 August 2000.", "category": "closed_qa"},
    {"instruction": "Which is a species of fish? Tope or Rope", "context": "", "response": "Tope",
     "category": "classification"},
    {"instruction": "Why can camels survive for long without water?", "context": "", "response": "They store fat in "
     "their humps.", "category": "open_qa"},
    {"instruction": "Name a brown animal.", "context": "", "response": "A bear.", "category": "brainstorming"},
]

LIMA_CONVERSATIONS = [
    {"conversations": ["Can brain cells move?", "Yes, some of them migrate."], "source": "stackexchange"},
    {"conversations": ["Write a haiku.", "Quiet pond, a frog.", "Another one?", "Snow on the pine."],
     "source": "wikihow"},
    {"conversations": ["How do I bake bread?", "Mix flour, water, salt and yeast."], "source": "reddit"},
]


def write_json(path: Path, obj: Any) -> Path:
    path.write_text(json.dumps(obj, ensure_ascii=False, indent=2), encoding="utf-8")
    return path


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    return path


def lima_alpaca_layout(conversations: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The LLaMA-Factory layout of shared/data/lima/lima.json, from GAIR's conversations layout."""
    rows = []
    for c in conversations:
        turns = c["conversations"]
        history = [[turns[i], turns[i + 1]] for i in range(0, len(turns) - 2, 2)]
        rows.append({"instruction": turns[-2], "input": "", "output": turns[-1], "history": history})
    return rows


def oasst_message(message_id: str, role: str, text: str, replies: list[dict[str, Any]] = (), rank: int | None = None,
                  lang: str = "en", deleted: bool = False) -> dict[str, Any]:
    return {"message_id": message_id, "parent_id": None, "text": text, "role": role, "lang": lang,
            "review_count": 3, "review_result": True, "deleted": deleted, "rank": rank, "synthetic": False,
            "model_name": None, "emojis": None, "replies": list(replies), "labels": None}


def oasst_trees() -> list[dict[str, Any]]:
    """Three nested-message trees: a ranked two-level conversation, a German one, and an unanswered prompt."""
    best = oasst_message("a1", "assistant", "Use a 401k with low fees.", rank=0, replies=[
        oasst_message("p2", "prompter", "What about index funds?", replies=[
            oasst_message("a3", "assistant", "Index funds are cheap.", rank=1),
            oasst_message("a4", "assistant", "They track the market at low cost.", rank=0),
        ]),
    ])
    worse = oasst_message("a2", "assistant", "Ask your employer.", rank=1)
    deleted = oasst_message("a0", "assistant", "spam", rank=None, deleted=True)
    return [
        oasst_message("p1", "prompter", "How do I save for retirement?", replies=[worse, deleted, best]),
        oasst_message("d1", "prompter", "Wie spät ist es?", lang="de", replies=[
            oasst_message("d2", "assistant", "Es ist Mittag.", rank=0, lang="de")]),
        oasst_message("u1", "prompter", "Is anyone there?"),
    ]
