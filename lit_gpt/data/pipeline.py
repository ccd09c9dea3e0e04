"""The pipeline every `scripts/prepare_*.py` runs: read -> split -> tokenize with masks -> fit to max_seq_length ->
write the folder described in `lit_gpt/data/layout.py` (atomically) -> print the report card.

Every row read is either kept or dropped under a named reason, and the report card counts both.
"""
from __future__ import annotations

import hashlib
import json
import sys
import time
from itertools import islice
from pathlib import Path
from typing import Any, Iterable, Iterator, Literal, Sequence, TypeVar

import numpy as np
from tqdm import tqdm

from lit_gpt.data.formats import Example, Skip, Source, where
from lit_gpt.data.layout import (
    FORMAT,
    HISTOGRAM_NAME,
    META_NAME,
    SPLITS,
    STATS_NAME,
    Split,
    check_destination,
    replace_dir,
)
from lit_gpt.data.report import Tally, format_report, plot_lengths, stats
from lit_gpt.data.tokenize import IGNORE_INDEX, Sample, SegmentEncoder, truncate
from lit_gpt.prompts import PromptStyle, Segment, load_prompt_style
from lit_gpt.tokenizer import Tokenizer
from lit_gpt.utils import UserError, resolve_checkpoint_dir, sha256_file

CHUNK = 2048  # samples per tokenizer call: big enough for the batched Rust/C++ encoders, small enough for progress


def prepare(
    source: Source,
    checkpoint_dir: Path,
    destination_path: Path,
    data_file: Path | None = None,
    test_split_fraction: float = 0.05,
    seed: int = 42,
    max_seq_length: int = 2048,
    mask_inputs: bool = True,
    last_turn_only: bool = False,
    prompt_style: Literal["auto", "alpaca", "chat"] = "auto",
    overlength: Literal["truncate", "drop", "error"] = "truncate",
    incomplete_rows: Literal["error", "drop"] | None = None,
    access_token: str | None = None,
) -> dict[str, Any]:
    """Tokenize an instruction dataset for one model's tokenizer into DESTINATION_PATH, ready for finetuning.

    Args:
        source: The dataset's name, reader and download location (set by the script).
        checkpoint_dir: The model's folder (checkpoints/ORG/NAME, or just ORG/NAME); its tokenizer and special
            tokens decide the token ids.
        destination_path: Output folder (replaced as a whole on success; nothing is left there on failure).
        data_file: The data file. Leave out to download the public file from the Hugging Face Hub.
        test_split_fraction: Share of rows held out as the test split, drawn at random under --seed.
        seed: Seed of the train/test split. The same texts and seed give the same split, whatever the tokenizer,
            and exact duplicates always land in the same split.
        max_seq_length: Longest sample, in tokens.
        mask_inputs: Train only on the responses (prompt tokens get no loss); false trains on every token.
        last_turn_only: In a multi-turn conversation, train only on the last response (earlier turns stay context).
        prompt_style: alpaca (Lit-GPT's template), chat (the model's own chat template), or auto: chat when the
            tokenizer has a chat template, alpaca otherwise.
        overlength: A sample longer than max_seq_length is truncated (ending in EOS still), dropped, or an error.
        incomplete_rows: A row with an empty instruction or response, or a last turn without a response, is an
            error or is dropped (and counted in the report card). Default: drop for published datasets (you
            cannot fix them), error for your own files.
        access_token: Hugging Face token for gated datasets such as LIMA. Defaults to the HF_TOKEN variable.

    Returns:
        The report card, as written to DESTINATION_PATH/stats.json.
    """
    start = time.perf_counter()
    incomplete_rows = incomplete_rows or source.incomplete_rows
    _check_options(test_split_fraction, max_seq_length, mask_inputs, last_turn_only)
    checkpoint_dir = resolve_checkpoint_dir(checkpoint_dir)
    tokenizer = Tokenizer(checkpoint_dir)
    style = load_prompt_style(prompt_style, tokenizer)
    encoder = SegmentEncoder(tokenizer)
    destination_path = Path(destination_path)
    # what the run reads must survive the folder's replacement
    check_destination(destination_path, [checkpoint_dir] + ([Path(data_file)] if data_file is not None else []))
    hub = None
    if data_file is None:
        data_file = download(source, access_token)
        hub = {"repo_id": source.hub_repo_id, "filename": source.hub_filename}
    data_file = Path(data_file)

    tally = Tally()
    examples = _read(source, data_file, tally)
    hashes = [example.text_sha256() for example in examples]
    tally.duplicates = len(hashes) - len(set(hashes))
    is_test = split_rows(hashes, test_split_fraction, seed)
    usable = []
    for example, text_hash, test in zip(examples, hashes, is_test):
        if example.problem is None:
            usable.append((example, text_hash, "test" if test else "train"))
        elif incomplete_rows == "error":
            raise UserError(
                f"{where(data_file, example.row, example.line)}: {example.problem}; fix the row, or pass "
                "--incomplete_rows drop to leave such rows out (they are counted in the report card)"
            )
        else:
            tally.dropped[example.problem] += 1

    kept = {split: Split() for split in SPLITS}
    with tqdm(total=len(usable), unit=" examples", desc=f"Tokenizing {data_file.name}", file=sys.stderr) as progress:
        for chunk in _batched(usable, CHUNK):
            all_segments = [_segments(style, example, last_turn_only, data_file) for example, _, _ in chunk]
            for (example, text_hash, split), segments, ids in zip(chunk, all_segments, encoder.encode(all_segments)):
                sample = encoder.build(segments, ids, style.bos, mask_inputs, last_turn_only)
                tally.prompt_lengths.append(sample.prompt_tokens)
                tally.response_lengths.append(sample.response_tokens)
                if len(sample.input_ids) > max_seq_length:
                    row = where(data_file, example.row, example.line)
                    if (sample := _fit(sample, max_seq_length, overlength, encoder.eos_id, tally, row)) is None:
                        continue
                untrained = sample.labels.count(IGNORE_INDEX)
                if untrained == len(sample.labels):
                    tally.dropped["no trainable token"] += 1
                    continue
                tally.kept[split] += 1
                tally.tokens[split] += len(sample.labels)
                tally.trainable_tokens[split] += len(sample.labels) - untrained
                tally.turns[len(example.turns)] += 1
                if example.category is not None:
                    tally.categories[example.category] += 1
                kept[split].add(sample, {
                    "source": source.name, "row": example.row, "category": example.category,
                    "turns": len(example.turns), "text_sha256": text_hash, "truncated": sample.truncated,
                })
            progress.update(len(chunk))
    if not tally.kept["train"]:
        dropped = ", ".join(f"{n} {reason}" for reason, n in tally.dropped.most_common()) or "none"
        raise UserError(f"{data_file}: no sample left to train on ({tally.rows_read} rows read; dropped: {dropped})")

    meta = {
        "format": FORMAT,
        "tokenizer": {
            "fingerprint": tokenizer.fingerprint, "checkpoint_dir": str(checkpoint_dir), "backend": tokenizer.backend,
            "vocab_size": tokenizer.vocab_size, "bos_id": tokenizer.bos_id, "eos_id": tokenizer.eos_id,
            "pad_id": tokenizer.pad_id,
        },
        "prompt_style": style.name,
        "chat_template_sha256": _sha256_text(tokenizer.chat_template) if style.name == "chat" else None,
        "bos": style.bos,
        "mask_inputs": mask_inputs,
        "last_turn_only": last_turn_only,
        "ignore_index": IGNORE_INDEX,
        "max_seq_length": max_seq_length,
        "overlength": overlength,
        "incomplete_rows": incomplete_rows,
        "test_split_fraction": test_split_fraction,
        "seed": seed,
        "source": {"name": source.name, "data_file": str(data_file), "sha256": sha256_file(data_file), "hub": hub},
        "samples": {split: tally.kept[split] for split in SPLITS},
    }
    with replace_dir(destination_path) as tmp:
        for split in SPLITS:
            kept[split].write(tmp / split)
        _write_json(tmp / META_NAME, meta)
        plotted = plot_lengths(tally, max_seq_length, tmp / HISTOGRAM_NAME, f"{source.name}: tokens per sample")
        report = stats(
            tally, time.perf_counter() - start, source=source.name, data_file=str(data_file),
            checkpoint_dir=str(checkpoint_dir), prompt_style=style.name, max_seq_length=max_seq_length,
            overlength=overlength,
        )
        _write_json(tmp / STATS_NAME, report)

    print(f"Report card for {destination_path} ({source.name}, prompt style {style.name}, {checkpoint_dir}):")
    print(format_report(report))
    if not plotted:
        print(f"  ({HISTOGRAM_NAME} not drawn: it needs Pillow 10.1 or newer; pip install -U pillow)")
    if encoder.fallbacks:
        print(f"  note: {encoder.fallbacks} responses start with a character this tokenizer merges with a newline; "
              "they were encoded with the tokenizer's leading space")
    print(
        f"Wrote {destination_path} in {report['seconds']:.2f} s: {report['examples_per_second']:,.0f} examples/s, "
        f"{report['tokens_per_second']:,.0f} tokens/s"
    )
    return report


def _read(source: Source, data_file: Path, tally: Tally) -> list[Example]:
    """The examples in `data_file`; the records the reader skips are counted as dropped, by reason."""
    examples = []
    for item in source.read(data_file):
        tally.rows_read += 1
        if isinstance(item, Skip):
            tally.dropped[item.reason] += 1
        else:
            examples.append(item)
    return examples


def _segments(style: PromptStyle, example: Example, last_turn_only: bool, data_file: Path) -> list[Segment]:
    try:
        return style.segments(example.turns, last_turn_only)
    except UserError as e:  # the template's refusal, said at the first row it applies to
        raise UserError(f"{where(data_file, example.row, example.line)}: {e}") from None


def _fit(sample: Sample, max_seq_length: int, overlength: str, eos_id: int, tally: Tally, where: str) -> Sample | None:
    """Apply the --overlength policy to a sample longer than max_seq_length; None (counted) when it is dropped."""
    if overlength == "error":
        raise UserError(
            f"{where}: {len(sample.input_ids)} tokens, more than --max_seq_length {max_seq_length}; raise it, or "
            "pass --overlength truncate or drop"
        )
    cut = truncate(sample, max_seq_length, eos_id) if overlength == "truncate" else None
    if cut is None:
        tally.dropped["longer than max_seq_length" if overlength == "drop" else "prompt fills max_seq_length"] += 1
        return None
    tally.truncated_samples += 1
    tally.truncated_tokens += cut.truncated
    return cut


def split_rows(text_hashes: Sequence[str], test_split_fraction: float, seed: int) -> np.ndarray:
    """Which rows are test rows: the `round(fraction * distinct texts)` texts that rank first under a seeded hash,
    with every copy of each.

    It depends only on the texts and the seed (not on row order, the tokenizer or the length policy), so data
    prepared for different models holds out the same rows, and exact duplicates never straddle the split.
    """
    ranked = sorted(set(text_hashes), key=lambda h: hashlib.sha256(f"{seed}:{h}".encode()).digest())
    test = set(ranked[: round(len(ranked) * test_split_fraction)])
    return np.fromiter((h in test for h in text_hashes), dtype=bool, count=len(text_hashes))


def download(source: Source, access_token: str | None) -> Path:
    """The source's public file from the Hugging Face Hub, kept in HF_HOME/lit_gpt/datasets/ORG/NAME (a second run
    fetches it again only when it changed, and uses it as it is without a connection)."""
    if source.hub_repo_id is None or source.hub_filename is None:
        raise UserError(f"pass --data_file with your {source.name} data file")
    import httpx2
    from huggingface_hub import constants
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        OfflineModeIsEnabled,
        RemoteEntryNotFoundError,
        RepositoryNotFoundError,
    )

    from lit_gpt.download import download_file

    repo, name = source.hub_repo_id, source.hub_filename
    page = f"{constants.ENDPOINT}/datasets/{repo}"
    local = "or download it yourself and pass --data_file"
    print(f"Downloading {name} from {page} (pass --data_file to use a local copy)", file=sys.stderr)
    try:
        local_dir = Path(constants.HF_HOME) / "lit_gpt" / "datasets" / repo
        return download_file(repo, name, local_dir, repo_type="dataset", token=access_token)
    except GatedRepoError:  # before RepositoryNotFoundError, its parent class
        raise UserError(
            f"the dataset {repo} is gated: accept its terms at {page} while logged in, then pass --access_token or "
            f"set HF_TOKEN; {local}"
        ) from None
    except RepositoryNotFoundError:
        raise UserError(f"the dataset {repo} was not found at {page} (a private repo needs a token); {local}") from None
    except RemoteEntryNotFoundError:
        raise UserError(f"the dataset {repo} has no file {name!r} (see {page}); {local}") from None
    except HfHubHTTPError as e:
        status = e.response.status_code
        raise UserError(f"the Hub answered HTTP {status} for {repo}/{name}; try again later, {local}") from None
    except (httpx2.TransportError, OfflineModeIsEnabled):  # no connection (or offline mode) and no earlier copy
        raise UserError(f"cannot reach the Hub at {constants.ENDPOINT} to download {repo}/{name}; {local}") from None


def _check_options(test_split_fraction: float, max_seq_length: int, mask_inputs: bool, last_turn_only: bool) -> None:
    if not 0 <= test_split_fraction < 1:
        raise UserError(f"--test_split_fraction {test_split_fraction} must be at least 0 and below 1")
    if max_seq_length < 2:
        raise UserError(f"--max_seq_length {max_seq_length} leaves no room for a response and its EOS")
    if last_turn_only and not mask_inputs:
        raise UserError("--last_turn_only masks earlier responses, which --mask_inputs false would train on; pick one")


T = TypeVar("T")


def _batched(items: Iterable[T], n: int) -> Iterator[list[T]]:
    iterator = iter(items)
    while chunk := list(islice(iterator, n)):
        yield chunk


def _write_json(path: Path, obj: Any) -> None:
    # plain writes: the whole folder is renamed into place at the end, which is what makes the output atomic
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _sha256_text(text: str | None) -> str | None:
    return hashlib.sha256(text.encode()).hexdigest() if text is not None else None
