"""The prepare scripts end to end (entry functions on tmp_path, and the CLI as users run it): output layout,
report card, policies, split determinism, atomic output, the tokenizer check, downloads and the real data."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import torch

from hub_server import FakeHub, hub  # noqa: F401  (`hub` is a pytest fixture)
from lit_gpt.data.dataset import TokenizedDataset
from lit_gpt.data.tokenize import IGNORE_INDEX
from lit_gpt.tokenizer import Tokenizer
from lit_gpt.utils import UserError
from helpers import load_script
from prepare_helpers import (
    ALPACA_5000,
    ALPACA_ROWS,
    CHATML,
    DOLLY_ROWS,
    LIMA_CONVERSATIONS,
    LIMA_JSON,
    ROOT,
    SMOLLM2,
    lima_alpaca_layout,
    needs_smollm2,
    oasst_trees,
    tiny_bpe_checkpoint,
    write_json,
    write_jsonl,
)


def entry(name: str) -> Callable[..., dict[str, Any]]:
    return getattr(load_script(f"scripts/{name}.py"), name)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_bpe_checkpoint(tmp_path_factory.mktemp("ckpt"))


@pytest.fixture(scope="module")
def chat_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_bpe_checkpoint(tmp_path_factory.mktemp("chat"), bos=False, chat_template=CHATML)


def _csv(path: Path, rows: list[dict[str, str]]) -> Path:
    import csv

    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["output", "instruction", "input"])  # not Alpaca's order, on purpose
        writer.writeheader()
        writer.writerows(rows)
    return path


def _check_folder(out: Path, checkpoint: Path, stats: dict[str, Any]) -> dict[str, Any]:
    """The documented layout is there and consistent; returns meta.json."""
    meta = json.loads((out / "meta.json").read_text())
    assert meta["tokenizer"]["fingerprint"] == Tokenizer(checkpoint).fingerprint
    assert meta["mask_inputs"] is True and meta["max_seq_length"] == 2048 and meta["ignore_index"] == IGNORE_INDEX
    assert len(meta["source"]["sha256"]) == 64
    assert json.loads((out / "stats.json").read_text()) == stats
    if importlib.util.find_spec("PIL"):  # the histogram is skipped without Pillow
        assert (out / "lengths.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for split in ("train", "test"):
        dataset = TokenizedDataset(out, split, Tokenizer(checkpoint))
        assert len(dataset) == stats["samples"][split] == meta["samples"][split]
        assert dataset.input_ids.dtype == np.int32 and dataset.offsets.dtype == np.int64
        for i in range(len(dataset)):
            item = dataset[i]
            assert item["input_ids"].dtype == item["labels"].dtype == torch.int64
            assert item["input_ids"].shape == item["labels"].shape
            assert (item["labels"] != IGNORE_INDEX).any()
        provenance = dataset.provenance()
        assert len(provenance) == len(dataset) and all(p["source"] == meta["source"]["name"] for p in provenance)
    kept = sum(stats["samples"].values())
    assert kept + sum(stats["dropped"].values()) == stats["rows_read"]
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temporary folder left
    return meta


def test_prepare_alpaca(tmp_path: Path, checkpoint: Path) -> None:
    data = write_json(tmp_path / "alpaca.json", ALPACA_ROWS)
    stats = entry("prepare_alpaca")(checkpoint_dir=checkpoint, data_file=data, destination_path=tmp_path / "out")
    meta = _check_folder(tmp_path / "out", checkpoint, stats)
    assert meta["prompt_style"] == "alpaca" and meta["bos"] is True  # no chat template: auto picks alpaca
    assert stats["rows_read"] == 6 and stats["exact_duplicates"] == 1
    assert stats["samples"] == {"train": 6, "test": 0}  # round(6 * 0.05) = 0 held out


def test_prepare_dolly_keeps_categories(tmp_path: Path, chat_checkpoint: Path) -> None:
    data = write_jsonl(tmp_path / "dolly.jsonl", DOLLY_ROWS)
    stats = entry("prepare_dolly")(checkpoint_dir=chat_checkpoint, data_file=data, destination_path=tmp_path / "out",
                                   test_split_fraction=0.25)
    meta = _check_folder(tmp_path / "out", chat_checkpoint, stats)
    assert meta["prompt_style"] == "chat" and meta["chat_template_sha256"]
    assert stats["samples"] == {"train": 3, "test": 1}
    assert sorted(stats["categories"]) == ["brainstorming", "classification", "closed_qa", "open_qa"]
    provenance = TokenizedDataset(tmp_path / "out", "train", None).provenance()
    assert {p["category"] for p in provenance} <= set(stats["categories"]) and len(provenance[0]["text_sha256"]) == 64


@pytest.mark.parametrize("layout", ["conversations", "history"])
def test_prepare_lima_keeps_conversations_whole(tmp_path: Path, checkpoint: Path, layout: str) -> None:
    if layout == "conversations":
        data = write_jsonl(tmp_path / "train.jsonl", LIMA_CONVERSATIONS)
    else:
        data = write_json(tmp_path / "lima.json", lima_alpaca_layout(LIMA_CONVERSATIONS))
    stats = entry("prepare_lima")(checkpoint_dir=checkpoint, data_file=data, destination_path=tmp_path / "out")
    _check_folder(tmp_path / "out", checkpoint, stats)
    assert stats["turns"] == {"1": 2, "2": 1}
    dataset = TokenizedDataset(tmp_path / "out", "train", None)
    (row,) = [i for i, p in enumerate(dataset.provenance()) if p["turns"] == 2]
    labels = dataset[row]["labels"]
    assert int((labels == Tokenizer(checkpoint).eos_id).sum()) == 2  # both responses end in a trained EOS


def test_prepare_csv_with_the_walkthrough_spelling(tmp_path: Path, checkpoint: Path) -> None:
    data = _csv(tmp_path / "MyDataset.csv", ALPACA_ROWS)
    stats = entry("prepare_csv")(csv_dir=data, checkpoint_dir=checkpoint, destination_path=tmp_path / "out")
    meta = _check_folder(tmp_path / "out", checkpoint, stats)
    assert meta["source"]["name"] == "MyDataset" and stats["rows_read"] == 6


def test_prepare_json_maps_field_names(tmp_path: Path, checkpoint: Path) -> None:
    rows = [{"question": r["instruction"], "answer": r["output"], "topic": "t"} for r in ALPACA_ROWS]
    stats = entry("prepare_json")(data_file=write_jsonl(tmp_path / "qa.jsonl", rows), checkpoint_dir=checkpoint,
                                  destination_path=tmp_path / "out", instruction_field="question",
                                  output_field="answer", input_field=None, category_field="topic")
    _check_folder(tmp_path / "out", checkpoint, stats)
    assert stats["categories"] == {"t": 6}


def test_prepare_oasst_counts_every_tree_left_out(tmp_path: Path, checkpoint: Path) -> None:
    data = write_jsonl(tmp_path / "trees.jsonl", oasst_trees())
    stats = entry("prepare_oasst")(checkpoint_dir=checkpoint, data_file=data, destination_path=tmp_path / "out")
    _check_folder(tmp_path / "out", checkpoint, stats)
    assert stats["samples"]["train"] == 1 and stats["turns"] == {"2": 1}
    assert stats["dropped"] == {"language de": 1, "no assistant reply": 1}


# -- policies ----------------------------------------------------------------------------------------------------


def test_incomplete_rows_stop_your_own_file_but_are_dropped_from_published_data(tmp_path: Path, checkpoint: Path):
    rows = [*ALPACA_ROWS[:3], {"instruction": "Convert 20 inches to centimetres", "input": "", "output": ""}]
    csv_file = _csv(tmp_path / "d.csv", rows)
    with pytest.raises(UserError, match=r"d\.csv, row 5: empty 'output'; fix the row, or pass "
                                        r"--incomplete_rows drop"):
        entry("prepare_csv")(data_file=csv_file, checkpoint_dir=checkpoint, destination_path=tmp_path / "csv")
    stats = entry("prepare_alpaca")(checkpoint_dir=checkpoint, data_file=write_json(tmp_path / "a.json", rows),
                                    destination_path=tmp_path / "alpaca")
    assert stats["dropped"] == {"empty 'output'": 1} and sum(stats["samples"].values()) == 3
    assert not (tmp_path / "csv").exists()


def test_overlength_policies(tmp_path: Path, checkpoint: Path) -> None:
    data = write_json(tmp_path / "a.json", ALPACA_ROWS)
    prepare = entry("prepare_alpaca")
    lengths = TokenizedDataset(_prepare_default(prepare, checkpoint, data, tmp_path / "full"), "train", None).lengths
    limit = int(np.sort(lengths)[2])  # the 3 longest samples are over it
    over = int((lengths > limit).sum())

    with pytest.raises(UserError, match=rf"a\.json, record \d+: \d+ tokens, more than --max_seq_length {limit}; raise it"):
        prepare(checkpoint_dir=checkpoint, data_file=data, destination_path=tmp_path / "e", max_seq_length=limit,
                overlength="error")
    assert not (tmp_path / "e").exists()

    dropped = prepare(checkpoint_dir=checkpoint, data_file=data, destination_path=tmp_path / "d",
                      max_seq_length=limit, overlength="drop")
    assert dropped["dropped"] == {"longer than max_seq_length": over}

    truncated = prepare(checkpoint_dir=checkpoint, data_file=data, destination_path=tmp_path / "t",
                        max_seq_length=limit, overlength="truncate")
    assert truncated["truncated"]["samples"] + sum(truncated["dropped"].values()) == over
    dataset = TokenizedDataset(tmp_path / "t", "train", None)
    eos = Tokenizer(checkpoint).eos_id
    assert max(dataset.lengths) == limit
    for i in range(len(dataset)):
        assert dataset[i]["input_ids"][-1] == eos == dataset[i]["labels"][-1]  # every sample still ends in EOS


def test_a_prompt_that_fills_max_seq_length_is_dropped_and_counted(tmp_path: Path, checkpoint: Path) -> None:
    """Truncation cuts the response, never the prompt: a prompt with no room left for one response token and EOS
    leaves nothing to train on, so the sample goes, under its own reason."""
    long_prompt = {"instruction": "Summarise this text. " + "word " * 60, "input": "", "output": "Short."}
    data = write_json(tmp_path / "a.json", [*ALPACA_ROWS, long_prompt])
    prepare = entry("prepare_alpaca")
    lengths = TokenizedDataset(_prepare_default(prepare, checkpoint, data, tmp_path / "full", test_split_fraction=0),
                               "train", None).lengths
    limit = int(np.sort(lengths)[-2]) + 2  # above every other sample, below the long prompt
    stats = prepare(checkpoint_dir=checkpoint, data_file=data, destination_path=tmp_path / "t", max_seq_length=limit,
                    overlength="truncate", test_split_fraction=0)
    assert stats["dropped"] == {"prompt fills max_seq_length": 1}
    assert stats["truncated"]["samples"] == 0 and stats["samples"]["train"] == len(ALPACA_ROWS)
    only = write_json(tmp_path / "only.json", [long_prompt])
    with pytest.raises(UserError, match=r"no sample left to train on \(1 rows read; dropped: 1 prompt fills"):
        prepare(checkpoint_dir=checkpoint, data_file=only, destination_path=tmp_path / "none", max_seq_length=limit)


def test_prepare_csv_reads_csv_whatever_the_file_is_called(tmp_path: Path, checkpoint: Path) -> None:
    """A spreadsheet saved as `.txt` is still CSV to prepare_csv (other readers go by the suffix)."""
    data = _csv(tmp_path / "MyDataset.csv", ALPACA_ROWS).rename(tmp_path / "MyDataset.txt")
    stats = entry("prepare_csv")(csv_dir=data, checkpoint_dir=checkpoint, destination_path=tmp_path / "out")
    assert stats["rows_read"] == len(ALPACA_ROWS) and not stats["dropped"]


def _prepare_default(prepare: Callable, checkpoint: Path, data: Path, out: Path, **kwargs: Any) -> Path:
    prepare(checkpoint_dir=checkpoint, data_file=data, destination_path=out, **kwargs)
    return out


def test_split_is_deterministic_under_a_seed_and_independent_of_the_tokenizer(
    tmp_path: Path, checkpoint: Path, chat_checkpoint: Path
) -> None:
    rows = [{"instruction": f"Count to {i}.", "output": " ".join(map(str, range(i + 1)))} for i in range(40)]
    data = write_json(tmp_path / "a.json", rows)
    prepare = entry("prepare_alpaca")

    def test_rows(ckpt: Path, seed: int, name: str) -> list[int]:
        out = _prepare_default(prepare, ckpt, data, tmp_path / name, seed=seed, test_split_fraction=0.25)
        return [p["row"] for p in TokenizedDataset(out, "test", None).provenance()]

    first = test_rows(checkpoint, 1, "a")
    assert len(first) == 10 and first == sorted(first)
    assert test_rows(checkpoint, 1, "b") == first
    assert test_rows(chat_checkpoint, 1, "c") == first
    assert test_rows(checkpoint, 2, "d") != first
    # row order does not matter, and copies of a text stay together
    write_json(data, rows[::-1] + rows[:5])
    reordered = test_rows(checkpoint, 1, "e")
    texts = sorted(rows[::-1][r]["instruction"] for r in reordered if r < 40)
    assert texts == sorted(rows[r]["instruction"] for r in first)
    assert all(r - 40 in {39 - i for i in reordered if i < 40} for r in reordered if r >= 40)


def test_last_turn_only_and_no_masking_are_recorded(tmp_path: Path, checkpoint: Path) -> None:
    data = write_jsonl(tmp_path / "train.jsonl", LIMA_CONVERSATIONS)
    stats = entry("prepare_lima")(checkpoint_dir=checkpoint, data_file=data, destination_path=tmp_path / "a",
                                  mask_inputs=False)
    assert stats["trainable_fraction"] == 1.0
    entry("prepare_lima")(checkpoint_dir=checkpoint, data_file=data, destination_path=tmp_path / "b",
                          last_turn_only=True)
    assert json.loads((tmp_path / "b" / "meta.json").read_text())["last_turn_only"] is True
    with pytest.raises(UserError, match="--last_turn_only masks earlier responses"):
        entry("prepare_lima")(checkpoint_dir=checkpoint, data_file=data, destination_path=tmp_path / "c",
                              last_turn_only=True, mask_inputs=False)


# -- nothing partial, and the tokenizer check ------------------------------------------------------------------


def test_a_failing_run_leaves_the_previous_data_untouched(tmp_path: Path, checkpoint: Path) -> None:
    prepare = entry("prepare_alpaca")
    out = _prepare_default(prepare, checkpoint, write_json(tmp_path / "a.json", ALPACA_ROWS), tmp_path / "out")
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    bad = write_json(tmp_path / "bad.json", [*ALPACA_ROWS, {"instruction": "x", "output": 3}])
    with pytest.raises(UserError, match="must be a string"):
        prepare(checkpoint_dir=checkpoint, data_file=bad, destination_path=out)
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_a_failure_while_writing_removes_the_temporary_folder(tmp_path: Path, checkpoint: Path, monkeypatch) -> None:
    from lit_gpt.data import layout

    def fail(self, folder: Path) -> None:
        folder.mkdir()
        (folder / "input_ids.npy").write_bytes(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(layout.Split, "write", fail)
    with pytest.raises(UserError, match=r"/out: the disk is full; free some space"):
        _prepare_default(entry("prepare_alpaca"), checkpoint, write_json(tmp_path / "a.json", ALPACA_ROWS),
                         tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


def test_the_length_histogram_is_a_png_and_is_skipped_without_pillow(tmp_path: Path, monkeypatch) -> None:
    pytest.importorskip("PIL")
    from lit_gpt.data.report import Tally, plot_lengths

    tally = Tally(prompt_lengths=[30, 40, 41, 300], response_lengths=[5, 500, 20, 1])
    assert plot_lengths(tally, 256, tmp_path / "lengths.png", "alpaca: tokens per sample")
    assert (tmp_path / "lengths.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    monkeypatch.setitem(sys.modules, "PIL", None)  # as if Pillow were not installed
    assert not plot_lengths(tally, 256, tmp_path / "none.png", "alpaca: tokens per sample")
    assert not (tmp_path / "none.png").exists()


def test_destination_with_other_files_is_refused(tmp_path: Path, checkpoint: Path) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="already holds files that are not prepared data"):
        _prepare_default(entry("prepare_alpaca"), checkpoint, write_json(tmp_path / "a.json", ALPACA_ROWS),
                         tmp_path / "out")
    assert (tmp_path / "out" / "notes.txt").read_text() == "mine"


def test_checkpoint_folder_without_tokenizer(tmp_path: Path) -> None:
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "config.json").write_text("{}")
    with pytest.raises(UserError, match="no tokenizer found"):
        _prepare_default(entry("prepare_alpaca"), tmp_path / "ckpt", write_json(tmp_path / "a.json", ALPACA_ROWS),
                         tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_data_prepared_for_another_tokenizer_is_refused(tmp_path: Path, checkpoint: Path, chat_checkpoint: Path):
    data = write_json(tmp_path / "a.json", ALPACA_ROWS)
    out = _prepare_default(entry("prepare_alpaca"), checkpoint, data, tmp_path / "out")
    expected = rf"was prepared for the tokenizer of {checkpoint}.*--checkpoint_dir {chat_checkpoint}"
    with pytest.raises(UserError, match=expected):
        TokenizedDataset(out, "train", Tokenizer(chat_checkpoint))
    with pytest.raises(UserError, match="is not prepared data"):
        TokenizedDataset(tmp_path, "train", None)


def test_no_sample_left_is_an_error(tmp_path: Path, checkpoint: Path) -> None:
    expected = r"no sample left to train on \(6 rows read; dropped: 6 longer than max_seq_length\)"
    with pytest.raises(UserError, match=expected):
        _prepare_default(entry("prepare_alpaca"), checkpoint, write_json(tmp_path / "a.json", ALPACA_ROWS),
                         tmp_path / "out", max_seq_length=8, overlength="drop")


# -- the command line as users type it ---------------------------------------------------------------------------


def _run(script: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, str(ROOT / "scripts" / f"{script}.py"), *args]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=120)


def test_prepare_csv_help_lists_the_seed_and_split_options(tmp_path: Path) -> None:
    result = _run("prepare_csv", "--help", cwd=tmp_path)
    assert result.returncode == 0
    for option in ("--csv_dir", "--data_file", "--checkpoint_dir", "--seed", "--test_split_fraction", "--mask_inputs",
                   "--max_seq_length", "--overlength", "--prompt_style", "--destination_path"):
        assert option in result.stdout


def test_walkthrough_csv_command_writes_data_csv(tmp_path: Path, checkpoint: Path) -> None:
    """`python scripts/prepare_csv.py --csv_dir MyDataset.csv --checkpoint_dir ORG/NAME` from the project folder."""
    import shutil

    shutil.copytree(checkpoint, tmp_path / "checkpoints" / "org" / "model")
    _csv(tmp_path / "MyDataset.csv", ALPACA_ROWS)
    result = _run("prepare_csv", "--csv_dir", "MyDataset.csv", "--checkpoint_dir", "org/model", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Report card for data/csv" in result.stdout and "examples/s" in result.stdout
    assert TokenizedDataset(tmp_path / "data" / "csv", "train", Tokenizer(checkpoint))[0]["input_ids"].numel() > 0

    (tmp_path / "Bad.csv").write_text("instruction,answer\nHi,Hello\n")
    result = _run("prepare_csv", "--csv_dir", "Bad.csv", "--checkpoint_dir", "org/model",
                  "--destination_path", "data/bad", cwd=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        "error: Bad.csv: the header has no 'output' column (columns: instruction, answer); the first line must "
        "name the columns, e.g. instruction,output"
    )
    assert not (tmp_path / "data" / "bad").exists()


# -- downloads through the loopback Hub ---------------------------------------------------------------------------


def test_dolly_is_downloaded_when_no_data_file_is_given(hub: FakeHub, tmp_path: Path, checkpoint: Path) -> None:
    content = "".join(json.dumps(r) + "\n" for r in DOLLY_ROWS).encode()
    hub.add_repo("databricks/databricks-dolly-15k", {"databricks-dolly-15k.jsonl": content, "README.md": b"#"},
                 repo_type="dataset")
    stats = entry("prepare_dolly")(checkpoint_dir=checkpoint, destination_path=tmp_path / "out")
    assert stats["rows_read"] == 4
    meta = json.loads((tmp_path / "out" / "meta.json").read_text())
    hub_file = {"repo_id": "databricks/databricks-dolly-15k", "filename": "databricks-dolly-15k.jsonl"}
    assert meta["source"]["hub"] == hub_file
    assert hub.fetched("databricks/databricks-dolly-15k") == ["databricks-dolly-15k.jsonl"]


def test_gated_lima_needs_a_token(hub: FakeHub, tmp_path: Path, checkpoint: Path, monkeypatch) -> None:
    content = "".join(json.dumps(r) + "\n" for r in LIMA_CONVERSATIONS).encode()
    hub.add_repo("GAIR/lima", {"train.jsonl": content}, repo_type="dataset", gated=True, access=("hf_ok",))
    prepare = entry("prepare_lima")
    with pytest.raises(UserError, match=r"GAIR/lima is gated: accept its terms at .*/datasets/GAIR/lima .* pass "
                                        r"--access_token or set HF_TOKEN"):
        prepare(checkpoint_dir=checkpoint, destination_path=tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert prepare(checkpoint_dir=checkpoint, destination_path=tmp_path / "out", access_token="hf_ok")["rows_read"] == 3
    monkeypatch.setenv("HF_TOKEN", "hf_ok")
    assert prepare(checkpoint_dir=checkpoint, destination_path=tmp_path / "out2")["rows_read"] == 3


def test_missing_hub_file_and_own_data_without_a_file(hub: FakeHub, tmp_path: Path, checkpoint: Path) -> None:
    hub.add_repo("yahma/alpaca-cleaned", {"README.md": b"#"}, repo_type="dataset")
    with pytest.raises(UserError, match="has no file 'alpaca_data_cleaned.json'"):
        entry("prepare_alpaca")(checkpoint_dir=checkpoint, destination_path=tmp_path / "out")
    with pytest.raises(UserError, match="pass your CSV file: --csv_dir MyDataset.csv"):
        entry("prepare_csv")(checkpoint_dir=checkpoint, destination_path=tmp_path / "out")


# -- the real files in ../shared with the real SmolLM2 tokenizer ----------------------------------------------------


@needs_smollm2
@pytest.mark.skipif(not ALPACA_5000.is_file(), reason="../shared/data/alpaca missing")
def test_real_alpaca_5000_with_smollm2(tmp_path: Path) -> None:
    stats = entry("prepare_alpaca")(checkpoint_dir=SMOLLM2, data_file=ALPACA_5000, destination_path=tmp_path / "out")
    assert stats["rows_read"] == 5000 and stats["dropped"] == {"empty 'output'": 2}  # rows 2335 and 4658
    assert stats["samples"] == {"train": 4748, "test": 250} and stats["exact_duplicates"] == 0
    assert stats["truncated"]["samples"] == 0 and stats["prompt_style"] == "chat"


@needs_smollm2
@pytest.mark.skipif(not LIMA_JSON.is_file(), reason="../shared/data/lima missing")
def test_real_lima_with_smollm2(tmp_path: Path) -> None:
    stats = entry("prepare_lima")(checkpoint_dir=SMOLLM2, data_file=LIMA_JSON, destination_path=tmp_path / "out")
    assert stats["rows_read"] == 1029 and sum(stats["samples"].values()) == 1029 and stats["dropped"] == {}
    assert sum(n for turns, n in stats["turns"].items() if turns != "1") == 29  # the multi-turn rows stay whole
    assert stats["truncated"]["samples"] > 0 and stats["length_percentiles"]["total"]["max"] > 2048
    dataset = TokenizedDataset(tmp_path / "out", "train", Tokenizer(SMOLLM2))
    assert max(dataset.lengths) == 2048
