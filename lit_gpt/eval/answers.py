"""A model's answers to held-out instructions, and its loss on their reference answers.

Both see an instruction exactly as finetuning and generation do: the conversation rendered in the prompt style,
each segment tokenized on its own (`lit_gpt.data.tokenize`), so the prompt ids are those the adapter was trained
to answer after.

Files (`eval/answer.py` writes them into its --out_dir, one folder per adapter when given several):

    answers.jsonl          one line per instruction, in file order once complete:
                             id, row, instruction, input, output (the answer), reference (if the file has one),
                             generator (checkpoint + adapter), new_tokens, finished (ended at EOS rather than at
                             max_new_tokens), settings (sha of settings.json)
    settings.json          what made the answers: checkpoint and adapter identity, prompt style, decoding settings
    reference_loss.json    per instruction with a reference: mean negative log-likelihood (nats/token) of the
                           reference tokens (EOS included, as training scores them) given the prompt; and the summary
"""
from __future__ import annotations

import hashlib
import math
import struct
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from lit_gpt.data.tokenize import IGNORE_INDEX, SegmentEncoder, conversation_prompt_ids, truncate
from lit_gpt.eval.instructions import Instruction, JsonlStore, sha256_json
from lit_gpt.model import GPT
from lit_gpt.prompts import PromptStyle
from lit_gpt.tokenizer import Tokenizer
from lit_gpt.utils import LIT_CONFIG_NAME, LIT_WEIGHTS_NAME, UserError

ANSWERS_NAME = "answers.jsonl"
SETTINGS_NAME = "settings.json"
REFERENCE_LOSS_NAME = "reference_loss.json"


def load_for_eval(checkpoint_dir: Path, lora_path: Path | None, prompt_style: str | None, device: torch.device | str,
                  dtype: torch.dtype | None) -> tuple[GPT, Tokenizer, PromptStyle]:
    """The model in eval mode (with the adapter applied), its tokenizer, and the prompt style: the one asked for, else
    the adapter's training style (recorded in its metadata), else `auto` (as generate/base.py and chat/base.py)."""
    from lit_gpt.checkpoint import load_model
    from lit_gpt.lora import load_lora_into, read_lora_metadata
    from lit_gpt.prompts import load_prompt_style

    tokenizer = Tokenizer(checkpoint_dir)
    model = load_model(checkpoint_dir, device=device, dtype=dtype)
    if lora_path is not None:
        load_lora_into(model, lora_path)
        prompt_style = prompt_style or read_lora_metadata(lora_path).get("prompt_style")
    return model.eval(), tokenizer, load_prompt_style(prompt_style or "auto", tokenizer)


def model_identity(checkpoint_dir: Path, lora_path: Path | None) -> dict[str, Any]:
    """What tells one model apart from another without reading gigabytes: the config, the weights file's tensor
    layout, size and modification time (a rewritten file counts as another model), and the adapter's full sha256."""
    weights = Path(checkpoint_dir) / LIT_WEIGHTS_NAME
    if not weights.is_file():
        raise UserError(f"{weights} not found. Convert the checkpoint first: "
                        f"python scripts/convert_hf_checkpoint.py --checkpoint_dir {checkpoint_dir}")
    with weights.open("rb") as f:
        (header_size,) = struct.unpack("<Q", f.read(8))  # safetensors: u64 header length, then the JSON header
        header = f.read(header_size)
    stat = weights.stat()
    identity = {
        "checkpoint_dir": str(checkpoint_dir),
        "config_sha256": hashlib.sha256((Path(checkpoint_dir) / LIT_CONFIG_NAME).read_bytes()).hexdigest(),
        "weights": {"header_sha256": hashlib.sha256(header).hexdigest(), "bytes": stat.st_size,
                    "mtime_ns": stat.st_mtime_ns},
        "lora_path": None if lora_path is None else str(lora_path),
    }
    if lora_path is not None:
        identity["lora_sha256"] = hashlib.sha256(Path(lora_path).read_bytes()).hexdigest()
    return identity


def generator_name(checkpoint_dir: Path, lora_path: Path | None) -> str:
    """`SmolLM2-135M-Instruct` or `SmolLM2-135M-Instruct+epoch-2`: the AlpacaEval `generator` field."""
    name = Path(checkpoint_dir).name
    return name if lora_path is None else f"{name}+{Path(lora_path).parent.name or Path(lora_path).stem}"


def prompt_ids(encoder: SegmentEncoder, style: PromptStyle, instruction: Instruction) -> list[int]:
    return conversation_prompt_ids(encoder, style.segments(instruction.turns()), style.bos)


def answer_instructions(
    model: GPT,
    tokenizer: Tokenizer,
    style: PromptStyle,
    instructions: Sequence[Instruction],
    store: JsonlStore,
    generator: str,
    batch_size: int = 8,
    max_new_tokens: int = 256,
    temperature: float = 0.0,
    top_k: int | None = None,
    rng: torch.Generator | None = None,
) -> dict[str, Any]:
    """Answer every instruction not yet in `store`, a batch at a time (each batch appended when done), then put the
    file in instruction order. Returns counts and timing of this call."""
    from lit_gpt.generate import generate_batch

    unknown = sorted(set(store.records) - {i.id for i in instructions})
    if unknown:
        raise UserError(f"{store.path} holds answers to {len(unknown)} instructions that are not in this instruction "
                        "file: it was made from another one; pass another --out_dir")
    encoder = SegmentEncoder(tokenizer)
    todo = [i for i in instructions if i.id not in store]
    prompts = {i.id: prompt_ids(encoder, style, i) for i in todo}
    for i in todo:
        if len(prompts[i.id]) + max_new_tokens > model.config.block_size:
            raise UserError(f"row {i.row}: its prompt of {len(prompts[i.id])} tokens + --max_new_tokens "
                            f"{max_new_tokens} exceed the model's context of {model.config.block_size} tokens; lower "
                            "--max_new_tokens or leave the row out")
    # longest prompts first: a batch that does not fit in memory fails at once, and neighbours need little padding
    todo.sort(key=lambda i: (-len(prompts[i.id]), i.row))
    t0, new_tokens = time.perf_counter(), 0
    for start in range(0, len(todo), batch_size):
        batch = todo[start : start + batch_size]
        outputs = generate_batch(model, [prompts[i.id] for i in batch], max_new_tokens, temperature=temperature,
                                 top_k=top_k, eos_id=tokenizer.eos_id, generator=rng)
        records = []
        for instruction, new in zip(batch, outputs):
            finished = bool(new) and new[-1] == tokenizer.eos_id
            records.append({
                "id": instruction.id, "row": instruction.row, "instruction": instruction.instruction,
                "input": instruction.input, "output": tokenizer.decode(new, skip_special_tokens=True).strip(),
                **({"reference": instruction.reference} if instruction.reference is not None else {}),
                "generator": generator, "new_tokens": len(new) - finished, "finished": finished,
            })
            new_tokens += len(new)
        store.append(records)
        print(f"answered {len(store.records)}/{len(instructions)} ({time.perf_counter() - t0:.1f}s)", file=sys.stderr)
    order = [i.id for i in instructions]
    if list(store.records) != order:
        store.rewrite_in_order(order)
    elapsed = time.perf_counter() - t0
    return {"answered": len(todo), "already_done": len(instructions) - len(todo), "new_tokens": new_tokens,
            "seconds": round(elapsed, 2), "tokens_per_second": round(new_tokens / elapsed, 1) if todo else None}


def reference_losses(model: GPT, tokenizer: Tokenizer, style: PromptStyle, instructions: Sequence[Instruction],
                     batch_size: int = 8) -> dict[str, Any]:
    """The mean negative log-likelihood (nats per token) of each reference answer given its prompt, and the summary.

    The reference is tokenized and labelled as finetuning labels it (the response and its EOS; earlier turns of a
    conversation are context), so this is the validation loss the model would have on these rows as training data.
    A sample longer than the model's context is cut as `prepare` cuts it (keeping the EOS) and counted.
    """
    from lit_gpt.collate import packed_collate
    from lit_gpt.data.scoring import response_losses

    encoder = SegmentEncoder(tokenizer)
    scored = [i for i in instructions if i.reference is not None]
    samples, truncated = [], []
    for instruction in scored:
        segments = style.segments(instruction.turns(instruction.reference))
        sample = encoder.build(segments, encoder.encode([segments])[0], style.bos, last_turn_only=True)
        ids, labels, cut = sample.input_ids, sample.labels, 0
        if len(ids) > model.config.block_size:
            shorter = truncate(sample, model.config.block_size, encoder.eos_id)
            # None: the prompt alone fills the context; nothing of the reference is scored (its loss is None)
            ids, labels = (shorter.input_ids, shorter.labels) if shorter else (
                ids[: model.config.block_size], [IGNORE_INDEX] * model.config.block_size)
            cut = sum(x != IGNORE_INDEX for x in sample.labels) - sum(x != IGNORE_INDEX for x in labels)
        samples.append({"input_ids": torch.tensor(ids), "labels": torch.tensor(labels)})
        truncated.append(cut)
    if samples:
        model.max_seq_length = max(model.max_seq_length, min(model.config.block_size,
                                                               max(len(s["input_ids"]) for s in samples)))
    rows = []
    for start in range(0, len(samples), batch_size):
        chunk = samples[start : start + batch_size]
        total = sum(len(s["input_ids"]) for s in chunk)
        # one packed row: no padding, each example attending only to itself
        loss_sum, count, _ = response_losses(model, packed_collate(chunk, max_seq_length=total, row_length=total))
        for instruction, s, c, cut in zip(scored[start:], loss_sum.tolist(), count.tolist(), truncated[start:]):
            rows.append({"id": instruction.id, "row": instruction.row, "loss": s / c if c else None,
                         "loss_sum": s, "tokens": int(c), "truncated_reference_tokens": cut})
    total_loss, total_tokens = sum(r["loss_sum"] for r in rows), sum(r["tokens"] for r in rows)
    means = [r["loss"] for r in rows if r["loss"] is not None]
    token_mean = total_loss / total_tokens if total_tokens else None
    summary = {
        "instructions": len(instructions), "with_reference": len(rows), "reference_tokens": total_tokens,
        "loss_per_token": token_mean, "perplexity": math.exp(token_mean) if token_mean is not None else None,
        "mean_of_instruction_losses": sum(means) / len(means) if means else None,
        "truncated": sum(1 for r in rows if r["truncated_reference_tokens"]),
    }
    return {"summary": summary, "instructions": rows}


def settings_for(identity: dict[str, Any], style: PromptStyle, precision: str, max_new_tokens: int,
                 temperature: float, top_k: int | None, seed: int, batch_size: int) -> dict[str, Any]:
    """Everything that decides the answers. Greedy decoding ignores the seed and the batch size, so neither is part
    of it then (a rerun with another batch size resumes the same file); sampling draws from one random stream
    through the batches in order, so both are."""
    greedy = temperature == 0 or top_k == 1
    decoding = {"greedy": True} if greedy else {"temperature": temperature, "top_k": top_k, "seed": seed,
                                                  "batch_size": batch_size}
    settings = {"model": identity, "prompt_style": style.name, "precision": precision,
                "max_new_tokens": max_new_tokens, "decoding": decoding}
    return {**settings, "sha": sha256_json(settings)[:16]}
