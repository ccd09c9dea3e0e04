"""Data-preparation throughput: our `prepare_alpaca` against litgpt 0.5.13's Alpaca data module, same file, same
tokenizer, measured in one run (runs alternate, each in a fresh process, so one-time costs count for both).

How to run (from the project folder; needs ../shared for the data and the SmolLM2 tokenizer):

    # once: litgpt 0.5.13 in its own venv, as ../shared/bench/setup_venvs.sh builds it (CPU torch from the local wheel)
    python -m venv ~/.cache/lit_gpt/venvs/litgpt
    ~/.cache/lit_gpt/venvs/litgpt/bin/pip install torch==2.13.0
    ~/.cache/lit_gpt/venvs/litgpt/bin/pip install -c ../shared/bench/requirements/litgpt.lock.txt litgpt==0.5.13 \
        'huggingface-hub<1.4' requests sentencepiece
    # then
    .venv/bin/python bench/prepare_throughput.py --repeats 5

The litgpt venv is looked for in ../shared/bench/.venvs/litgpt, then ~/.cache/lit_gpt/venvs/litgpt (or pass
--litgpt_python). What each side's timed span covers:

- litgpt: `Tokenizer(checkpoint)`, `Alpaca(...).connect/prepare_data/setup` (read + split), then one pass over
  train + val (`SFTDataset.__getitem__`: the prompt, the response and, for its token counts, the instruction are
  encoded one example at a time). This is the pass `litgpt finetune_lora` makes at start-up, and again every epoch.
- ours: the whole `prepare()` call with the same prompt style (alpaca) and max_seq_length: tokenizer, read, split,
  batched tokenization with masks, writing the memory-mapped arrays, meta.json, stats.json and the lengths.png
  report card. The "no PNG" row is the same run with the histogram skipped, to show what drawing it costs.

A second table times one more epoch of samples: litgpt tokenizes again in `__getitem__`, ours reads the arrays.
It also checks that both produce the same token ids for every row both keep (ours drops the 2 rows of
alpaca_5000 with an empty output; litgpt trains on them).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
LITGPT_VENVS = (SHARED / "bench" / ".venvs" / "litgpt", Path.home() / ".cache" / "lit_gpt" / "venvs" / "litgpt")


def _ids_digest(ids: list[int]) -> str:
    return hashlib.sha1(",".join(map(str, ids)).encode()).hexdigest()


def worker_litgpt(data_file: Path, checkpoint_dir: Path, max_seq_length: int) -> dict:
    import shutil

    from litgpt.data import Alpaca
    from litgpt.tokenizer import Tokenizer

    with tempfile.TemporaryDirectory() as tmp:
        shutil.copy(data_file, Path(tmp) / data_file.name)  # present, so prepare_data() downloads nothing
        start = time.perf_counter()
        tokenizer = Tokenizer(checkpoint_dir)
        data = Alpaca(download_dir=Path(tmp), file_name=data_file.name, num_workers=0)
        data.connect(tokenizer=tokenizer, batch_size=1, max_seq_length=max_seq_length)
        data.prepare_data()
        data.setup()
        items = [(d.data[i], d[i]) for d in (data.train_dataset, data.test_dataset) for i in range(len(d))]
        seconds = time.perf_counter() - start
        start = time.perf_counter()  # every later epoch tokenizes again
        for d in (data.train_dataset, data.test_dataset):
            for i in range(len(d)):
                d[i]
        epoch = time.perf_counter() - start
    return {
        "seconds": seconds,
        "epoch_seconds": epoch,
        "examples": len(items),
        "tokens": sum(len(item["input_ids"]) for _, item in items),
        "ids": {row["instruction"]: _ids_digest(item["input_ids"].tolist()) for row, item in items},
    }


def worker_ours(data_file: Path, checkpoint_dir: Path, max_seq_length: int, plot: bool) -> dict:
    sys.path.insert(0, str(ROOT))
    import contextlib
    import io

    from lit_gpt.data import ALPACA, pipeline, prepare
    from lit_gpt.data.dataset import TokenizedDataset

    if not plot:
        pipeline.plot_lengths = lambda *args, **kwargs: False
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(io.StringIO()):
        start = time.perf_counter()
        stats = prepare(ALPACA, checkpoint_dir=checkpoint_dir, data_file=data_file, destination_path=Path(tmp) / "out",
                        max_seq_length=max_seq_length, prompt_style="alpaca")
        seconds = time.perf_counter() - start
        rows = json.loads(data_file.read_text(encoding="utf-8"))
        start = time.perf_counter()  # an epoch reads the memory-mapped arrays
        datasets = [TokenizedDataset(Path(tmp) / "out", split, None) for split in ("train", "test")]
        for dataset in datasets:
            for i in range(len(dataset)):
                dataset[i]
        epoch = time.perf_counter() - start
        ids = {}
        for dataset in datasets:
            for i, p in enumerate(dataset.provenance()):
                ids[rows[p["row"]]["instruction"]] = _ids_digest(dataset[i]["input_ids"].tolist())
    return {"seconds": seconds, "epoch_seconds": epoch, "examples": sum(stats["samples"].values()),
            "tokens": sum(stats["tokens"].values()), "ids": ids}


def run(python: Path, peer: str, args: argparse.Namespace) -> dict:
    command = [str(python), __file__, "--worker", peer, "--data_file", str(args.data_file), "--checkpoint_dir",
               str(args.checkpoint_dir), "--max_seq_length", str(args.max_seq_length)]
    # the same thread budget for both: all cores (the Rust tokenizer parallelizes batches; litgpt encodes one by one)
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "true"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if result.returncode != 0:
        raise SystemExit(f"{peer} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data_file", type=Path, default=SHARED / "data" / "alpaca" / "alpaca_5000.json")
    parser.add_argument("--checkpoint_dir", type=Path, default=SHARED / "models" / "smollm2-135m-instruct-gguf")
    parser.add_argument("--max_seq_length", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--litgpt_python", type=Path, default=None)
    parser.add_argument("--worker", choices=["litgpt", "ours", "ours_no_png"], help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        if args.worker == "litgpt":
            result = worker_litgpt(args.data_file, args.checkpoint_dir, args.max_seq_length)
        else:
            result = worker_ours(args.data_file, args.checkpoint_dir, args.max_seq_length, args.worker == "ours")
        print(json.dumps(result))
        return

    found = [v / "bin" / "python" for v in LITGPT_VENVS if (v / "bin" / "python").is_file()]
    litgpt = args.litgpt_python or (found[0] if found else None)
    if litgpt is None:
        raise SystemExit("no litgpt venv: create one as the top of this file shows, or pass --litgpt_python")
    peers = {"litgpt 0.5.13 Alpaca": (litgpt, "litgpt"), "ours (prepare_alpaca)": (Path(sys.executable), "ours"),
             "ours, no PNG": (Path(sys.executable), "ours_no_png")}
    results: dict[str, list[dict]] = {name: [] for name in peers}
    for repeat in range(args.repeats):
        for name, (python, worker) in peers.items():
            results[name].append(run(python, worker, args))
            print(f"repeat {repeat + 1}/{args.repeats} {name}: {results[name][-1]['seconds']:.2f} s", file=sys.stderr)

    reference = statistics.median(r["seconds"] for r in results["litgpt 0.5.13 Alpaca"])
    print(f"\n{args.data_file.name}, tokenizer {args.checkpoint_dir.name}, {args.repeats} runs each, "
          f"{os.cpu_count()} cores\n")
    print("| tool | examples | tokens | seconds, median (min-max) | examples/s | tokens/s | speed-up vs litgpt |")
    print("|---|---|---|---|---|---|---|")
    for name, runs in results.items():
        seconds = [r["seconds"] for r in runs]
        median = statistics.median(seconds)
        print(f"| {name} | {runs[0]['examples']:,} | {runs[0]['tokens']:,} | {median:.2f} ({min(seconds):.2f}-"
              f"{max(seconds):.2f}) | {runs[0]['examples'] / median:,.0f} | {runs[0]['tokens'] / median:,.0f} | "
              f"{reference / median:.1f}x |")

    epoch_reference = statistics.median(r["epoch_seconds"] for r in results["litgpt 0.5.13 Alpaca"])
    print("\nEach later epoch (litgpt tokenizes in __getitem__ again; ours reads the prepared arrays):\n")
    print("| tool | seconds per epoch, median | speed-up vs litgpt |")
    print("|---|---|---|")
    for name, runs in list(results.items())[:2]:
        median = statistics.median(r["epoch_seconds"] for r in runs)
        print(f"| {name} | {median:.3f} | {epoch_reference / median:.0f}x |")

    theirs, ours = results["litgpt 0.5.13 Alpaca"][0]["ids"], results["ours (prepare_alpaca)"][0]["ids"]
    common = theirs.keys() & ours.keys()
    same = sum(theirs[k] == ours[k] for k in common)
    print(f"\nToken ids identical for {same:,} of the {len(common):,} rows both keep "
          f"(litgpt {len(theirs):,} rows, ours {len(ours):,}).")


if __name__ == "__main__":
    main()
