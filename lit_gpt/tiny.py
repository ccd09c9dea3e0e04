"""A tiny checkpoint made from nothing but a data file: the quickstart's embedded default, no download needed.

It is a real checkpoint folder (byte-level BPE `tokenizer.json` trained on the data, Llama-architecture weights with
a random init, `config.json` for transformers), so every script runs on it as on a downloaded model. Its weights
are random: finetuning shows the pipeline working and the loss falling, not a useful assistant.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from lit_gpt.checkpoint import save_weights
from lit_gpt.config import Config
from lit_gpt.model import GPT
from lit_gpt.utils import LIT_WEIGHTS_NAME, UserError, atomic_write_json, read_json

SPECIAL_TOKENS = ("<|endoftext|>", "<s>", "</s>")


def make_tiny_checkpoint(data_file: Path, checkpoint_dir: Path, vocab_size: int = 512, seed: int = 42) -> Path:
    """Train a tokenizer on the texts of `data_file` (JSON list of instruction/input/output) and write a small
    random Llama-style model for it into `checkpoint_dir`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    rows = read_json(data_file)
    if not isinstance(rows, list) or not rows:
        raise UserError(f"{data_file}: expected a non-empty JSON list of instruction/input/output records")
    texts = [" ".join(str(row.get(k, "")) for k in ("instruction", "input", "output")) for row in rows]
    # the Alpaca template's words too, so prompts tokenize into a few tokens rather than bytes
    texts.append("Below is an instruction that describes a task, paired with an input that provides further "
                 "context. Write a response that appropriately completes the request. ### Instruction: ### Input: "
                 "### Response:")
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS), show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(texts, trainer)
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(checkpoint_dir / "tokenizer.json"))
    atomic_write_json(checkpoint_dir / "tokenizer_config.json",
                      {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<|endoftext|>"})

    config = Config(name=checkpoint_dir.name, vocab_size=tokenizer.get_vocab_size(), n_layer=4, n_embd=128, n_head=4,
                    n_query_groups=2, intermediate_size=352, block_size=512)
    torch.manual_seed(seed)
    model = GPT(config)
    save_weights(model.state_dict(), checkpoint_dir / LIT_WEIGHTS_NAME)
    config.save(checkpoint_dir)
    atomic_write_json(checkpoint_dir / "config.json", config.to_hf_config())
    (checkpoint_dir / "generation_config.json").write_text(json.dumps({"bos_token_id": 1, "eos_token_id": 2}) + "\n")
    return checkpoint_dir
