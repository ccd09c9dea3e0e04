"""Per-example quality columns computed with a local model, stored beside a prepared dataset.

`scripts/score_dataset.py` runs `score_dataset`; the files it writes, and how they are read back, are in
`lit_gpt.data.scores`.

Why the two losses: a response the model predicts about as well without the instruction (IFD near or above 1)
teaches little about following instructions; Cherry LLM keeps the highest-IFD examples below 1 and Superfiltering
(Li et al. 2024) showed a small model's IFD ranks examples about as well as a large one's.
"""
from __future__ import annotations

import json
import re
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from lit_gpt.collate import packed_collate
from lit_gpt.data.dataset import TokenizedDataset
from lit_gpt.data.layout import SPLITS
from lit_gpt.data.scores import (COLUMNS, EMBEDDINGS_NAME, FORMAT, JUDGE_NAME, PARTIAL_NAME, SCORES_JSON_NAME,
                                 write_scores)
from lit_gpt.data.tokenize import IGNORE_INDEX
from lit_gpt.generate import judge_replies, require_chat_template
from lit_gpt.model import GPT
from lit_gpt.tokenizer import Tokenizer
from lit_gpt.utils import LIT_WEIGHTS_NAME, UserError, atomic_path, atomic_write_json, peak_memory_mb, read_json

# ------------------------------------------------------------------------------------------------ losses


def cut(sample: dict[str, torch.Tensor], max_seq_length: int) -> dict[str, torch.Tensor]:
    return {k: v[:max_seq_length] for k, v in sample.items()}


def alone_sample(sample: dict[str, torch.Tensor], bos_id: int | None, max_seq_length: int) -> dict[str, torch.Tensor]:
    """The response tokens of `sample` (labels != IGNORE_INDEX, in order) with no prompt: `[BOS] + response` when
    `bos_id` is given (BOS gets no loss), else the response alone (its first token then gets no loss either: the
    loss shifts by one and nothing precedes it)."""
    response = sample["input_ids"][sample["labels"] != IGNORE_INDEX]
    if bos_id is None:
        return cut({"input_ids": response, "labels": response.clone()}, max_seq_length)
    bos = torch.tensor([bos_id], dtype=response.dtype)
    return cut({"input_ids": torch.cat((bos, response)),
                "labels": torch.cat((torch.tensor([IGNORE_INDEX], dtype=response.dtype), response))}, max_seq_length)


@torch.inference_mode()
def response_losses(model: GPT, batch: dict[str, torch.Tensor], embeddings: bool = False,
                    chunk_size: int = 1024) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Per example of a `pad_collate` or `packed_collate` batch, in order: the summed next-token loss over its
    labelled positions (E,) float32, how many there were (E,), and with `embeddings` the mean final hidden state
    over its tokens (E, n_embd).

    Example by example this is `masked_loss_sum(model(input_ids), labels)`. The head runs only on labelled
    positions, in chunks of `chunk_size`, so prompt tokens cost no vocabulary projection and the (B, T, vocab)
    logits never exist.
    """
    positions = batch.get("positions")
    hidden = model(batch["input_ids"], positions=positions, head=False)  # (R, T, n_embd)
    R, T = batch["input_ids"].shape
    real = torch.arange(T, device=hidden.device)[None, :] < batch["length"].to(hidden.device)[:, None]  # (R, T)
    if positions is None:  # padded: one example per row
        starts = torch.zeros_like(real)
        starts[:, 0] = True
    else:  # packed: an example starts at every position 0 (padding at a row's end has position 0 too)
        starts = (positions == 0) & real
    example = (starts.flatten().cumsum(0) - 1).view(R, T)  # (R, T): the example each position belongs to
    E = int(starts.sum())
    targets = batch["labels"][:, 1:].to(hidden.device)  # (R, T - 1): position t predicts label t + 1
    rows, cols = (targets != IGNORE_INDEX).nonzero(as_tuple=True)  # (N,), (N,)
    picked = hidden[:, :-1][rows, cols]  # (N, n_embd)
    losses = torch.cat([
        F.cross_entropy(model.logits(picked[i : i + chunk_size]).float(), targets[rows, cols][i : i + chunk_size],
                        reduction="none")
        for i in range(0, len(rows), chunk_size)
    ]) if len(rows) else hidden.new_zeros(0, dtype=torch.float32)
    owner = example[rows, cols + 1]  # (N,): a label never crosses examples (each one's first label is ignored)
    loss_sum = torch.zeros(E, dtype=torch.float32, device=hidden.device).index_add_(0, owner, losses)
    count = torch.bincount(owner, minlength=E)
    mean_hidden = None
    if embeddings:
        ids = example[real]  # (n_real,)
        totals = torch.zeros(E, hidden.size(-1), dtype=torch.float32, device=hidden.device)
        mean_hidden = totals.index_add_(0, ids, hidden[real].float()) / torch.bincount(ids, minlength=E)[:, None]
    return loss_sum.cpu(), count.cpu(), None if mean_hidden is None else mean_hidden.cpu()


def response_tokens(dataset: TokenizedDataset) -> np.ndarray:
    """Tokens with a loss per example (label != IGNORE_INDEX), straight from the memory-mapped labels."""
    trainable = np.concatenate([[0], np.cumsum(np.asarray(dataset.labels) != IGNORE_INDEX)])
    return trainable[dataset.offsets[1:]] - trainable[dataset.offsets[:-1]]


def _mean(loss_sum: float, count: int) -> float:
    return loss_sum / count if count else float("nan")


# ------------------------------------------------------------------------------------------------ the judge


JUDGE_PROMPT = (
    "We would like to request your feedback on the performance of an AI assistant in response to the instruction "
    "displayed below.\n\n"
    "[Instruction]\n{prompt}\n\n[Response]\n{response}\n\n"
    "Please rate the accuracy of the response to the instruction on a scale of 1 to 5, where a higher score "
    "indicates a more accurate and helpful response. Reply with \"Score:\" and a number from 1 to 5 first, then "
    "explain."
)
# No placeholder in the format: asked for "Score: N", SmolLM2-135M wrote the letter N in 49 of 64 Alpaca examples
# (unparseable); with this wording, 19 of the pool's 4,748 (the selection study's, bf16, greedy).
JUDGE_PRIMER = "Score:"  # written after the assistant header: even a small model's next token is then the rating

_NUMBER = r"(\d+(?:\.\d+)?|one|two|three|four|five)"
_OUT_OF = r"(?:\s*(?:/|out of)\s*(\d+(?:\.\d+)?))?"
_KEYWORD_RE = re.compile(r"\b(?:score|rating|rated|rate|grade)\b[^\d\n]{0,12}?\b" + _NUMBER + r"\b" + _OUT_OF, re.I)
_FIRST_RE = re.compile(r"(?<![\w.])(\d+(?:\.\d+)?)(?![\d])" + _OUT_OF)
_WORDS = {"one": 1.0, "two": 2.0, "three": 3.0, "four": 4.0, "five": 5.0}


def parse_judge_score(text: str) -> float | None:
    """The 1-5 rating in a judge's reply, or None when there is none.

    The first number after "Score"/"Rating"/"rate"... wins (digits, or a word one..five); without such a keyword,
    the first number in the text. "4/5", "4 out of 5" and "4.5" are read; a rating on another scale ("8/10") or
    outside 1-5 is not a 1-5 rating and gives None (AlpaGasus' 0-5 scale puts 0 out of range too).
    """
    match = _KEYWORD_RE.search(text) or _FIRST_RE.search(text)
    if match is None:
        return None
    number, scale = match.group(1).lower(), match.group(2)
    value = _WORDS.get(number) or float(number)
    if scale is not None and float(scale) != 5:
        return None
    return value if 1 <= value <= 5 else None


@dataclass
class Judge:
    """An instruction model that rates examples AlpaGasus-style (Chen et al. 2023, arXiv:2307.08701): the example
    in its chat template, greedy decoding of a short reply after "Score:", parsed by `parse_judge_score`."""

    model: GPT
    tokenizer: Tokenizer
    max_new_tokens: int = 8

    def __post_init__(self) -> None:
        require_chat_template(self.tokenizer)

    def rate(self, prompt: str, response: str) -> tuple[float | None, str]:
        """The rating (None if unparseable) and the reply text, primer included."""
        return self.rate_batch([(prompt, response)])[0]

    def rate_batch(self, pairs: Sequence[tuple[str, str]]) -> list[tuple[float | None, str]]:
        """`rate` for many (prompt, response) pairs, generated together (left-padded; greedy, so each row's reply is
        the one it gets alone, up to float rounding in near-ties). The batch shares each decoding step: on a 2-core
        CPU, where the ~300-token prompts are most of the work, that was 1.2x one at a time; more on a GPU."""
        messages = [JUDGE_PROMPT.format(prompt=prompt.strip(), response=response.strip()) for prompt, response in pairs]
        return [(parse_judge_score(text) if judged else None, text) for text, judged in
                judge_replies(self.model, self.tokenizer, messages, JUDGE_PRIMER, self.max_new_tokens)]


def prompt_and_response_text(sample: dict[str, torch.Tensor], tokenizer: Tokenizer) -> tuple[str, str]:
    """The text the judge rates: the last response (the last run of labelled tokens) and everything before it,
    decoded without special tokens. Single-turn, that is the rendered prompt and the response."""
    trainable = (sample["labels"] != IGNORE_INDEX).tolist()
    if not any(trainable):
        return tokenizer.decode(sample["input_ids"], skip_special_tokens=True), ""
    end = len(trainable) - trainable[::-1].index(True)
    start = end
    while start > 0 and trainable[start - 1]:
        start -= 1
    ids = sample["input_ids"]
    return tokenizer.decode(ids[:start], skip_special_tokens=True), tokenizer.decode(ids[start:end], skip_special_tokens=True)


# ------------------------------------------------------------------------------------------------ one split


def scoring_order(lengths: Sequence[int], max_seq_length: int) -> list[int]:
    """Longest first (a batch that does not fit in memory fails at once, not after an hour), ties by index: batches
    of neighbours in this order need almost no padding. Deterministic, so a resumed run forms the same batches."""
    return sorted(range(len(lengths)), key=lambda i: (-min(int(lengths[i]), max_seq_length), i))


def _read_partial(partial: Path) -> dict[str, np.ndarray]:
    chunks = sorted(partial.glob("chunk-*.npz"))
    if not chunks:
        return {}
    loaded = [dict(np.load(path, allow_pickle=False)) for path in chunks]
    return {key: np.concatenate([c[key] for c in loaded]) for key in loaded[0]}


def _write_chunk(partial: Path, rows: list[dict[str, Any]]) -> None:
    number = len(list(partial.glob("chunk-*.npz")))
    with atomic_path(partial / f"chunk-{number:06d}.npz") as tmp:
        with tmp.open("wb") as f:  # a file object: np.savez would append ".npz" to the temporary name
            np.savez(f, **{key: np.array([r[key] for r in rows]) for key in rows[0]})


def _one_row(samples: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The batch as one packed row: no padding (the responses alone vary in length even when the examples do not),
    and each example attends only to itself, through SDPA's fused causal kernel on its own slice."""
    total = sum(len(s["input_ids"]) for s in samples)
    return packed_collate(samples, max_seq_length=total, row_length=total)


def score_split(
    model: GPT,
    dataset: TokenizedDataset,
    partial: Path,
    batch_size: int = 32,
    max_seq_length: int | None = None,
    bos_id: int | None = None,
    embeddings: bool = False,
    judge: Judge | None = None,
    tokenizer: Tokenizer | None = None,
    flush_every: int = 20,
) -> tuple[dict[str, np.ndarray], int, int, float]:
    """Score every example of `dataset`; returns per-example arrays in split order (the COLUMNS, plus `embedding`
    and `judge_text` when asked for), how many examples and tokens (as cut to max_seq_length) this call computed,
    and the seconds of it the judge took.

    Finished batches are saved to the folder `partial` every `flush_every` batches and when the run stops on an
    exception (Ctrl-C included); a later call skips the examples found there. With the same batch size the resumed
    run forms exactly the batches the uninterrupted run would have, so its results are identical; a different one
    (say, smaller after running out of memory) is allowed and agrees to float rounding.
    """
    if judge is not None and tokenizer is None:
        raise ValueError("the judge needs the data's tokenizer to decode examples")
    max_seq_length = max_seq_length or model.max_seq_length
    partial.mkdir(parents=True, exist_ok=True)
    done = _read_partial(partial)
    done_set = set(done.get("index", np.zeros(0, np.int64)).tolist())
    lengths, responses = dataset.lengths, response_tokens(dataset)
    if len(dataset) == 0:
        empty = {"index": np.zeros(0, np.int64), **{name: np.zeros(0) for name in COLUMNS if name != "judge"}}
        if embeddings:
            empty["embedding"] = np.zeros((0, model.config.n_embd), np.float32)
        if judge is not None:
            empty.update(judge=np.zeros(0), judge_text=np.zeros(0, str))
        return empty, 0, 0, 0.0
    pending = [i for i in scoring_order(lengths, max_seq_length) if i not in done_set]
    batches = [pending[s : s + batch_size] for s in range(0, len(pending), batch_size)]
    device = model.embed.weight.device

    from tqdm import tqdm

    rows: list[dict[str, Any]] = []
    judge_seconds = 0.0
    try:
        with tqdm(total=len(dataset), initial=len(done_set), unit=" examples", file=sys.stderr,
                  desc=f"Scoring {dataset.folder.name}", dynamic_ncols=True) as progress:
            for number, indices in enumerate(batches, 1):
                samples = [cut(dataset[i], max_seq_length) for i in indices]
                with_prompt = _one_row(samples)
                alone = _one_row([alone_sample(s, bos_id, max_seq_length) for s in samples])
                sum_p, n_p, hidden = response_losses(model, {k: v.to(device) for k, v in with_prompt.items()},
                                                     embeddings)
                sum_a, n_a, _ = response_losses(model, {k: v.to(device) for k, v in alone.items()})
                batch_rows = []
                for j, i in enumerate(indices):
                    loss_p, loss_a = _mean(float(sum_p[j]), int(n_p[j])), _mean(float(sum_a[j]), int(n_a[j]))
                    row = {
                        "index": i, "loss_with_prompt": loss_p, "loss_alone": loss_a,
                        "ifd": loss_p / loss_a if loss_a > 0 else float("nan"),  # NaN stays NaN
                        "tokens": int(lengths[i]),
                        "response_tokens": int(responses[i]),
                    }
                    if hidden is not None:
                        row["embedding"] = hidden[j].numpy()
                    batch_rows.append(row)
                if judge is not None:
                    judge_start = time.perf_counter()
                    ratings = judge.rate_batch([prompt_and_response_text(s, tokenizer) for s in samples])
                    for row, (rating, reply) in zip(batch_rows, ratings):
                        row["judge"] = float("nan") if rating is None else rating
                        row["judge_text"] = reply
                    judge_seconds += time.perf_counter() - judge_start
                rows += batch_rows  # a batch joins the results only once all of it is computed
                progress.update(len(indices))
                if number % flush_every == 0:
                    _write_chunk(partial, rows)
                    rows = []
    finally:
        if rows:
            _write_chunk(partial, rows)
    results = _read_partial(partial)
    order = np.argsort(results["index"], kind="stable")
    results = {key: value[order] for key, value in results.items()}
    assert results["index"].tolist() == list(range(len(dataset))), f"{partial}: chunks do not cover the split once"
    computed_tokens = int(np.minimum(lengths[pending], max_seq_length).sum()) if pending else 0
    return results, len(pending), computed_tokens, judge_seconds


# ------------------------------------------------------------------------------------------------ the pipeline


def _identity(checkpoint_dir: Path) -> list[Any]:
    """Which weights: the folder, and the size and modification time of its weights file (hashing a 7B model's
    weights would take longer than many scoring runs)."""
    stat = (checkpoint_dir / LIT_WEIGHTS_NAME).stat()
    return [str(checkpoint_dir.resolve()), stat.st_size, stat.st_mtime_ns]


def score_dataset(
    data_dir: Path,
    checkpoint_dir: Path,
    judge_checkpoint_dir: Path | None = None,
    batch_size: int = 32,
    max_seq_length: int | None = None,
    embeddings: bool = True,
    judge_max_new_tokens: int = 8,
    flush_every: int = 20,
    precision: str | None = None,
) -> dict[str, Any]:
    """Score both splits of a prepared dataset with a local model and store the columns with the data.

    Writes the columns beside DATA_DIR's examples and prints a summary per split. Returns scores.json's content plus
    this run's `examples` and `tokens` (computed now), `seconds`, `examples_per_s`, `tokens_per_s` and
    `peak_memory_mb`.

    Args:
        data_dir: A prepared dataset (from a prepare script, or a mixed/deduplicated/selected one).
        checkpoint_dir: The scoring model; the data must have been prepared with its tokenizer. A small model is
            enough: Superfiltering found GPT-2's IFD ranks data like a 7B model's.
        judge_checkpoint_dir: An instruction model with a chat template that also rates each example 1-5,
            AlpaGasus-style (the `judge` column; slow: one generation per example).
        batch_size: Examples per forward pass, packed into one row (no padding); longest first.
        max_seq_length: Cut examples to this many tokens (default: the model's context).
        embeddings: Also save each example's mean final hidden state (`embeddings.npy`, for --policy diverse).
        judge_max_new_tokens: Tokens the judge may write after "Score:".
        flush_every: Save finished results every this many batches; a restarted run skips them.
        precision: 32-true, bf16-true or 16-true (default: bf16-true on a GPU that supports it, else 32-true).
    """
    from lit_gpt.checkpoint import load_model
    from lit_gpt.utils import DOWNLOAD_HINT, default_precision, precision_dtype, require_dir, resolve_checkpoint_dir

    data_dir = Path(data_dir)
    checkpoint_dir = require_dir(resolve_checkpoint_dir(checkpoint_dir), "--checkpoint_dir", DOWNLOAD_HINT)
    if batch_size < 1 or flush_every < 1:
        raise UserError("--batch_size and --flush_every must be at least 1")
    tokenizer = Tokenizer(checkpoint_dir)
    datasets = {split: TokenizedDataset(data_dir, split, tokenizer) for split in SPLITS}  # refuses other tokenizers
    precision = precision or default_precision()
    dtype = precision_dtype(precision)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = load_model(checkpoint_dir, device=device, dtype=dtype).eval()
    block_size = model.config.block_size
    if max_seq_length is not None and max_seq_length > block_size:
        raise UserError(f"--max_seq_length {max_seq_length} exceeds the model's context of {block_size} tokens")
    max_seq_length = max_seq_length or block_size
    longest = max(int(d.lengths.max(initial=0)) for d in datasets.values())
    model.max_seq_length = min(max_seq_length, longest + 1)  # RoPE tables no longer than needed (+1: BOS alone)
    bos_id = tokenizer.bos_id if tokenizer.add_bos else None

    judge = None
    if judge_checkpoint_dir is not None:
        judge_checkpoint_dir = require_dir(resolve_checkpoint_dir(judge_checkpoint_dir), "--judge_checkpoint_dir",
                                           DOWNLOAD_HINT)
        judge = Judge(load_model(judge_checkpoint_dir, device=device, dtype=dtype).eval(),
                      Tokenizer(judge_checkpoint_dir), judge_max_new_tokens)

    # what decides the numbers: a partial run resumes only under the same settings (the batch size may change)
    settings = {
        "checkpoint": _identity(checkpoint_dir), "max_seq_length": max_seq_length, "precision": precision,
        "embeddings": embeddings, "judge": None if judge is None else _identity(judge_checkpoint_dir),
        "judge_max_new_tokens": judge_max_new_tokens if judge else None,
    }
    info: dict[str, Any] = {
        "format": FORMAT,
        "checkpoint_dir": str(checkpoint_dir),
        "judge_checkpoint_dir": None if judge is None else str(judge_checkpoint_dir),
        "judge_prompt": None if judge is None else JUDGE_PROMPT,
        "judge_max_new_tokens": judge_max_new_tokens if judge else None,
        "tokenizer_fingerprint": tokenizer.fingerprint,
        "max_seq_length": max_seq_length,
        "precision": precision,
        "loss_alone_starts_with_bos": bos_id is not None,
        "columns": {name: text for name, text in COLUMNS.items() if name != "judge" or judge is not None},
        "embeddings": {"file": EMBEDDINGS_NAME, "dim": model.config.n_embd,
                       "what": "mean final (normed) hidden state over the example's tokens"} if embeddings else None,
        "splits": {},
    }
    computed, tokens, judge_seconds, start = 0, 0, 0.0, time.perf_counter()
    for split, dataset in datasets.items():
        partial = dataset.folder / PARTIAL_NAME
        settings_path = partial / "settings.json"
        if settings_path.is_file() and read_json(settings_path) != json.loads(json.dumps(settings)):
            raise UserError(f"{partial} holds an unfinished run with other settings ({read_json(settings_path)}); "
                            f"rerun with those to resume it, or delete {partial} to start over")
        partial.mkdir(exist_ok=True)
        atomic_write_json(settings_path, settings)
        results, n, n_tokens, n_seconds = score_split(model, dataset, partial, batch_size, max_seq_length, bos_id,
                                                      embeddings, judge, tokenizer, flush_every)
        computed, tokens, judge_seconds = computed + n, tokens + n_tokens, judge_seconds + n_seconds
        for name, made in ((EMBEDDINGS_NAME, embeddings), (JUDGE_NAME, judge is not None)):
            if not made:  # an earlier run's file would no longer match this run's scores
                (dataset.folder / name).unlink(missing_ok=True)
        write_scores(data_dir, split, {name: results[name] for name in COLUMNS if name in results},
                     results.get("embedding"), results.get("judge_text"))
        shutil.rmtree(partial)
        info["splits"][split] = _summary(results)
    seconds = time.perf_counter() - start
    # this call's work only: a resumed run's earlier calls are not in it
    info["timing"] = {"examples": computed, "tokens": tokens, "seconds": seconds,
                      "examples_per_s": computed / seconds if seconds else 0.0,
                      "tokens_per_s": tokens / seconds if seconds else 0.0, "peak_memory_mb": peak_memory_mb(device),
                      "judge_seconds": judge_seconds if judge is not None else None}
    atomic_write_json(data_dir / SCORES_JSON_NAME, info)
    result = {**info, **info["timing"]}
    _print_report(result, data_dir)
    return result


def _print_report(result: dict[str, Any], data_dir: Path) -> None:
    for split, summary in result["splits"].items():
        line = (f"{split}: {summary['samples']} examples, mean IFD {summary['ifd_mean']}, "
                f"IFD >= 1: {summary['ifd_at_least_1']}, IFD undefined: {summary['ifd_undefined']}")
        if "judge_unparseable" in summary:
            line += f", judge ratings {summary['judge_counts']}, unparseable: {summary['judge_unparseable']}"
        print(line)
    print(f"Scored {result['examples']:,} examples ({result['tokens']:,} tokens) in {result['seconds']:.1f} s: "
          f"{result['examples_per_s']:.2f} examples/s, {result['tokens_per_s']:,.0f} tokens/s, peak memory "
          f"{result['peak_memory_mb']:,.0f} MB; wrote {data_dir / SCORES_JSON_NAME}")
    if result["judge_seconds"] is not None and result["examples"]:
        judged = result["judge_seconds"]
        print(f"  of which the judge: {judged:.1f} s ({result['examples'] / judged:.2f} examples/s); IFD, losses and "
              f"embeddings: {result['seconds'] - judged:.1f} s")


def _summary(results: dict[str, np.ndarray]) -> dict[str, Any]:
    ifd = results["ifd"]
    finite = ifd[np.isfinite(ifd)]
    summary: dict[str, Any] = {
        "samples": len(ifd),
        "ifd_undefined": int(len(ifd) - len(finite)),
        "ifd_mean": round(float(finite.mean()), 4) if len(finite) else None,
        "ifd_at_least_1": int((finite >= 1).sum()),
        "loss_with_prompt_mean": round(float(np.nanmean(results["loss_with_prompt"])), 4) if len(finite) else None,
    }
    if "judge" in results:
        judged = results["judge"]
        summary["judge_unparseable"] = int(np.isnan(judged).sum())
        summary["judge_counts"] = {str(v): int((judged == v).sum()) for v in sorted(set(judged[~np.isnan(judged)]))}
    return summary
