"""lm-evaluation-harness throughput: our model (`lit_gpt.eval.lm.LitLM`) against lm-eval's own Hugging Face
backend (`--model hf`, transformers) on the same weights and the same requests, measured in one run.

How to run (from the project folder; needs the converted SmolLM2 checkpoint and ../shared's Alpaca rows):

    python bench/eval_throughput.py                                   # SmolLM2-135M-Instruct, float32, CPU
    python bench/eval_throughput.py --docs 50 --repeats 1             # a quick look
    python bench/eval_throughput.py --docs 16 --gen_docs 4 --threads 1   # steadier on a shared machine

What it does:

1. Converts our checkpoint back to a Hugging Face folder (`convert_lit_checkpoint`, into a temporary folder), so
   both backends hold the same float32 weights.
2. Builds three local lm-eval tasks from the first Alpaca rows (`--data_file`), written as YAML + JSON Lines into
   a temporary folder: `bench_mc` (multiple choice: the row's own output among 4 outputs of other rows, given
   its instruction; `--docs` documents, 4 loglikelihood requests each), `bench_ppl` (loglikelihood_rolling over
   the outputs, `--docs` documents) and `bench_gen` (greedy generation of at most 32 tokens, stop at a blank
   line, `--gen_docs` documents).
3. For each task and repeat, runs `lm_eval.simple_evaluate` with each backend (the order alternating each
   repeat) at the same `--batch_size`, and times only the backend's own request method (loglikelihood,
   loglikelihood_rolling or generate_until: tokenization, forwards and scoring), not lm-eval's task handling,
   which is the same for both. Reported: requests/s (median over repeats) and our speed-up, and whether both
   backends gave the same metrics (they must: a speed-up with other numbers would mean nothing).

Both run with the same torch threads (`--threads`) on the machine's CPUs, or on its GPU when there is one;
nothing else should run meanwhile.
"""
from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from lit_gpt.utils import cli

ROOT = Path(__file__).resolve().parents[1]
METHODS = {"bench_mc": "loglikelihood", "bench_ppl": "loglikelihood_rolling", "bench_gen": "generate_until"}


def write_tasks(rows: list[dict[str, str]], folder: Path, docs: int, gen_docs: int) -> None:
    """The three tasks of the module docstring, over the first `docs` rows (distractors: the next rows' outputs)."""
    import random

    rng = random.Random(0)
    mc, texts, gen = [], [], []
    for i, row in enumerate(rows[:docs]):
        prompt = row["instruction"] + (f"\n{row['input']}" if row.get("input") else "")
        others = [rows[(i + k) % len(rows)]["output"] for k in (docs, docs + 1, docs + 2)]
        answer = rng.randrange(4)
        choices = others[:answer] + [row["output"]] + others[answer:]
        mc.append({"prompt": prompt, "choices": choices, "answer": answer})
        texts.append({"text": row["output"]})
        if i < gen_docs:
            gen.append({"prompt": prompt, "answer": row["output"]})
    for name, records in (("mc", mc), ("ppl", texts), ("gen", gen)):
        (folder / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    common = f"dataset_path: json\ntest_split: test\nmetadata:\n  version: 1.0\n"
    (folder / "bench_mc.yaml").write_text(
        f"task: bench_mc\n{common}dataset_kwargs:\n  data_files:\n    test: {folder / 'mc.jsonl'}\n"
        "output_type: multiple_choice\ndoc_to_text: \"Instruction: {{prompt}}\\nResponse:\"\n"
        "doc_to_choice: \"{{choices}}\"\ndoc_to_target: answer\nmetric_list:\n"
        "  - metric: acc\n    aggregation: mean\n    higher_is_better: true\n")
    (folder / "bench_ppl.yaml").write_text(
        f"task: bench_ppl\n{common}dataset_kwargs:\n  data_files:\n    test: {folder / 'ppl.jsonl'}\n"
        "output_type: loglikelihood_rolling\ndoc_to_text: \"\"\ndoc_to_target: \"{{text}}\"\nmetric_list:\n"
        "  - metric: word_perplexity\n")
    (folder / "bench_gen.yaml").write_text(
        f"task: bench_gen\n{common}dataset_kwargs:\n  data_files:\n    test: {folder / 'gen.jsonl'}\n"
        "output_type: generate_until\ndoc_to_text: \"Instruction: {{prompt}}\\nResponse:\"\n"
        "doc_to_target: \"{{answer}}\"\ngeneration_kwargs:\n  until: [\"\\n\\n\"]\n  max_gen_toks: 32\n"
        "  do_sample: false\nmetric_list:\n  - metric: exact_match\n    aggregation: mean\n"
        "    higher_is_better: true\n")


def timed(lm: Any, method: str) -> list[float]:
    """Wrap `lm.method` so that each call's seconds are appended to the returned list."""
    seconds: list[float] = []
    original = getattr(lm, method)

    def wrapper(requests: list, *args: Any, **kwargs: Any) -> Any:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        out = original(requests, *args, **kwargs)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - start)
        return out

    setattr(lm, method, wrapper)
    return seconds


def main(
    checkpoint_dir: Path = ROOT / "checkpoints" / "HuggingFaceTB" / "SmolLM2-135M-Instruct",
    data_file: Path = ROOT.parent / "shared" / "data" / "alpaca" / "alpaca_5000.json",
    docs: int = 100,
    gen_docs: int = 16,
    batch_size: int = 32,
    repeats: int = 3,
    threads: int | None = None,
) -> dict[str, Any]:
    """Requests/s of our lm-eval backend against lm-eval's hf backend, same model and requests, in one run.

    Args:
        checkpoint_dir: A converted checkpoint (float32 here: the comparison is at equal numbers).
        data_file: Alpaca-style rows (instruction/input/output) to build the local tasks from.
        docs: Documents of the multiple-choice and perplexity tasks.
        gen_docs: Documents of the generation task.
        batch_size: Requests per forward, for both backends.
        repeats: Timed runs per task and backend (alternating); the median is reported.
        threads: torch's CPU threads (default: torch's own choice); 1 is steadier on a machine others share.
    """
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    from lit_gpt.checkpoint import load_model
    from lit_gpt.convert import convert_lit_checkpoint
    from lit_gpt.eval.lm import LitLM
    from lit_gpt.tokenizer import Tokenizer
    from lit_gpt.utils import read_json

    if threads is not None:
        torch.set_num_threads(threads)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        hf_dir = convert_lit_checkpoint(checkpoint_dir, tmp / "hf")
        (tmp / "tasks").mkdir()
        write_tasks(read_json(data_file), tmp / "tasks", docs, gen_docs)
        manager = TaskManager(include_path=str(tmp / "tasks"), include_defaults=False)
        backends = {
            "ours": LitLM(load_model(checkpoint_dir, device=device), Tokenizer(checkpoint_dir), batch_size=batch_size),
            "hf": HFLM(pretrained=str(hf_dir), dtype="float32", device=device, batch_size=batch_size),
        }
        report: dict[str, Any] = {"device": device, "threads": torch.get_num_threads(), "batch_size": batch_size,
                                  "checkpoint_dir": str(checkpoint_dir), "tasks": {}}
        for task, method in METHODS.items():
            seconds = {name: timed(lm, method) for name, lm in backends.items()}
            metrics, requests = {}, 0
            for repeat in range(repeats):
                order = list(backends) if repeat % 2 == 0 else list(reversed(backends))
                for name in order:
                    results = lm_eval.simple_evaluate(model=backends[name], tasks=[task], task_manager=manager,
                                                      bootstrap_iters=0, log_samples=True)
                    requests = sum(len(s["resps"]) for s in results["samples"][task])
                    metrics[name] = {k: v for k, v in results["results"][task].items()
                                     if "," in k and "stderr" not in k}
            for lm in backends.values():  # unwrap for the next task
                del lm.__dict__[method]
            rate = {name: requests / statistics.median(s) for name, s in seconds.items()}
            report["tasks"][task] = {"method": method, "requests": requests, "requests_per_s": rate,
                                     "speedup": rate["ours"] / rate["hf"], "metrics": metrics,
                                     "same_metrics": _same(metrics["ours"], metrics["hf"])}
    print(f"| task ({device}, batch {batch_size}) | requests | ours req/s | hf req/s | ours / hf | same metrics |")
    print("|---|---:|---:|---:|---:|---|")
    for task, r in report["tasks"].items():
        print(f"| {task} ({r['method']}) | {r['requests']} | {r['requests_per_s']['ours']:.1f} | "
              f"{r['requests_per_s']['hf']:.1f} | {r['speedup']:.2f}x | {r['same_metrics']} |")
    return report


def _same(ours: dict[str, float], theirs: dict[str, float]) -> bool:
    """Equal accuracies and exact matches; perplexities to 1e-4 relative (float32 sums in another order)."""
    return ours.keys() == theirs.keys() and all(
        abs(ours[k] - v) <= 1e-4 * abs(v) if "perplexity" in k else ours[k] == v for k, v in theirs.items())


if __name__ == "__main__":
    cli(main)
