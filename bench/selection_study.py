"""Does data selection help? The study of issue 16: selection, sources, order, epochs and NEFTune, at equal tokens.

    python bench/selection_study.py --dry_run true        # the plan and its compute, nothing run
    python bench/selection_study.py                       # the whole matrix (~40 h of training on 2 CPU cores)
    python bench/selection_study.py --scale smoke --checkpoint_dir checkpoints/tiny ...   # minutes, a few arms

Every step is one of the toolkit's own commands, run as a subprocess as a user would run it:
1. `scripts/prepare_alpaca.py` and `scripts/prepare_lima.py` (their test splits are never trained on);
2. the evaluation sets, written by this script as instruction files `eval/answer.py` reads: `val` (the Alpaca test
   split: its reference loss is the validation loss, one fixed split for every arm), `lima` (the LIMA test split) and
   `oasst` (each OpenAssistant tree's first prompt with its top-ranked human answer);
3. `scripts/dedup_dataset.py --eval_files` on each training source against every evaluation set (decontamination,
   with --threshold 0.95 so only near-identical copies count as duplicates here; the `dedup` arm dedups for real);
4. the pool (`select_dataset.py --policy random --k POOL`, or the whole clean Alpaca), `mix_datasets.py` (LIMA +
   pool by weight), `score_dataset.py` (IFD, losses, embeddings; the model as its own AlpaGasus judge);
5. every arm's data: `select_dataset.py` (a fresh random draw per seed) or `dedup_dataset.py` (the `dedup` arm);
6. `finetune/lora.py` per arm and seed, for the optimizer steps that give every arm the same trainable tokens
   (`--compute tokens`; `both` adds the equal-steps runs where their step count differs);
7. `eval/answer.py` per run: reference losses on every evaluation set (eval/SET/RUN), greedy answers to the first
   --answer_instructions of each --answer_sets (answers/SET/RUN); `eval/pairwise.py` of each arm's answers against
   its baseline's of the same seed, judged by the base model.

Resumable arm by arm and seed by seed: each finished command is recorded in OUT_DIR/ledger.json (command, host,
device, start and end, outputs) and not run again; a killed command is run again and resumes by itself (finetune
--resume auto, answer/pairwise/score append per batch, the data tools replace their folder whole).
Results: RESULTS_DIR/results.json, results.md (tables, verdicts, confounds), results.png and ledger.json.
"""
from __future__ import annotations

import csv
import hashlib
import itertools
import json
import math
import os
import platform
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lit_gpt.utils import UserError, atomic_write_json, atomic_write_text, cli, read_json  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path("../shared/data")  # as the docs name it, from the repository root
IGNORE_INDEX = -100  # lit_gpt.data.tokenize.IGNORE_INDEX, without importing the tokenizer stack for --dry_run


@dataclass(frozen=True)
class Arm:
    """One arm of the matrix: which data, how it is ordered, for how long, with what noise."""

    name: str
    group: str  # the question the arm answers; the table groups by it
    source: Literal["alpaca", "mix", "lima"] = "alpaca"  # the pool it selects from (lima: LIMA's clean train split)
    policy: str = "random"  # full (the source as is), dedup (dedup_dataset on it), or a select_dataset.py policy
    order: str = "shuffle"  # finetune --order: shuffle, length (short first) or score (IFD, easy first)
    epochs: int | None = None  # None: the common token budget; else this many passes (compute differs on purpose)
    neftune_alpha: float = 0.0
    baseline: str = "random"  # the arm its paired test and pairwise judge compare with, seed by seed


ARMS: list[Arm] = [
    Arm("full", "selection", policy="full"),
    Arm("random", "selection"),
    Arm("longest", "selection", policy="longest"),
    Arm("ifd", "selection", policy="ifd"),
    Arm("loss_band", "selection", policy="loss_band"),
    Arm("judge", "selection", policy="judge"),
    Arm("diverse", "selection", policy="diverse"),
    Arm("dedup", "selection", policy="dedup"),
    Arm("mix_full", "selection_mix", "mix", "full", baseline="mix_random"),
    Arm("mix_random", "selection_mix", "mix", baseline="random"),
    Arm("mix_longest", "selection_mix", "mix", "longest", baseline="mix_random"),
    Arm("mix_ifd", "selection_mix", "mix", "ifd", baseline="mix_random"),
    Arm("mix_loss_band", "selection_mix", "mix", "loss_band", baseline="mix_random"),
    Arm("mix_judge", "selection_mix", "mix", "judge", baseline="mix_random"),
    Arm("mix_diverse", "selection_mix", "mix", "diverse", baseline="mix_random"),
    Arm("mix_dedup", "selection_mix", "mix", "dedup", baseline="mix_random"),
    Arm("lima", "source", "lima", "full"),
    Arm("order_length", "order", order="length"),
    Arm("order_ifd", "order", order="score"),
    Arm("lima_epochs1", "epochs", "lima", "full", epochs=1),
    Arm("lima_epochs3", "epochs", "lima", "full", epochs=3),
    Arm("lima_epochs5", "epochs", "lima", "full", epochs=5),
    Arm("neftune", "neftune", neftune_alpha=5.0),
]
# `random` is the shuffle order, Alpaca alone and NEFTune off as well; `mix_random` is the mix by weight.
ARM_NAMES = [a.name for a in ARMS]
SCORED = {"ifd", "loss_band", "judge", "diverse"}
EVAL_SETS = ("val", "lima", "oasst")  # reference loss on each; val is never answered (see --answer_sets)

SCALES: dict[str, dict[str, Any]] = {
    # Issue 16's sizes: k = 1000 from the 5k Alpaca pool, 3 seeds, LIMA-like 3 epochs of k as the token budget.
    "full": dict(k=1000, pool=None, seeds=[1, 2, 3], budget_epochs=3.0, batch_size=16, micro_batch_size=4,
                 eval_instructions=None, max_new_tokens=256, alpaca_rows=None, lima_rows=None),
    # The test's: a tiny model, tens of rows, 1-2 optimizer steps per run.
    "smoke": dict(k=8, pool=None, seeds=[1, 2], budget_epochs=1.0, batch_size=4, micro_batch_size=2,
                  eval_instructions=4, max_new_tokens=8, alpaca_rows=None, lima_rows=None),
}


def main(
    checkpoint_dir: Path = Path("checkpoints/HuggingFaceTB/SmolLM2-135M-Instruct"),
    alpaca_file: Path = SHARED / "alpaca" / "alpaca_5000.json",
    lima_file: Path = SHARED / "lima" / "lima.json",
    oasst_file: Path = SHARED / "oasst" / "en_100_tree.jsonl",
    out_dir: Path = Path("out/selection_study"),
    results_dir: Path = Path("bench/results/selection_study"),
    scale: Literal["full", "smoke"] = "full",
    arms: list[str] | None = None,
    seeds: list[int] | None = None,
    k: int | None = None,
    pool: int | None = None,
    budget_epochs: float | None = None,
    token_budget: int | None = None,
    compute: Literal["tokens", "steps", "both"] = "both",
    equal_steps_arms: list[str] | None = None,
    batch_size: int | None = None,
    micro_batch_size: int | None = None,
    learning_rate: float = 3e-4,
    mix_weights: list[float] = [0.5, 0.5],
    eval_sets: list[str] = list(EVAL_SETS),
    eval_instructions: int | None = None,
    answer_sets: list[str] = ["lima", "oasst"],
    answer_instructions: int | None = None,
    max_new_tokens: int | None = None,
    eval_batch_size: int = 8,
    evaluate_base: bool = True,
    precision: str | None = None,
    train_tokens_per_s: float = 250.0,
    dry_run: bool = False,
) -> dict[str, Any] | None:
    """Run the study (see the module docstring), or with --dry_run print its plan and compute.

    Args:
        checkpoint_dir: The base model: it is finetuned, scores the data, judges it and judges the answers.
        alpaca_file: Alpaca records (the pool's source; its test split is the validation set).
        lima_file: LIMA in LLaMA-Factory's layout (the LIMA arms; its test split is the `lima` evaluation set).
        oasst_file: OpenAssistant trees (the `oasst` evaluation set: first prompts, top-ranked answers).
        out_dir: The work: data, runs, evaluations, logs and ledger.json (gigabytes at full scale; out/ is ignored
            by git).
        results_dir: results.json, results.md, results.png and a copy of ledger.json (small; committed).
        scale: Preset sizes: full (issue 16's) or smoke (the test's); the flags below override it.
        arms: Arms to run (default all): full random longest ifd loss_band judge diverse dedup, mix_* of each,
            lima, order_length, order_ifd, lima_epochs1/3/5, neftune. Each arm's baseline is added.
        seeds: Training seeds (and the random arms' draws); at least 3 for the statistics to mean much.
        k: Examples each selection keeps.
        pool: Clean Alpaca train examples drawn at random as the pool (None: all of them).
        budget_epochs: The common token budget is this many passes over k examples of the pool's mean trainable
            tokens (LIMA trained 3 epochs... 15; 3 is the toolkit's default).
        token_budget: The common budget in trainable (loss-carrying) tokens, instead of --budget_epochs.
        compute: tokens (every arm the same trainable tokens), steps (every arm budget_epochs x k / batch_size
            steps), or both (the equal-steps runs where their step count differs from the equal-token one).
        equal_steps_arms: With --compute both, the arms that also get equal-steps rows (default: every arm); the
            others run at equal tokens only.
        batch_size: Examples per optimizer step.
        micro_batch_size: Examples per forward/backward pass (packed).
        learning_rate: Peak learning rate of every run.
        mix_weights: LIMA and Alpaca shares of the mix, in examples.
        eval_sets: Which of val, lima, oasst to evaluate on.
        eval_instructions: Instructions kept per evaluation set (None: all).
        answer_sets: Which of lima, oasst are also answered (greedy) and judged pairwise against the baseline.
        answer_instructions: Instructions answered and judged per answer set, the first of the set (None: all);
            the reference losses use every instruction. Generation and judging cost most of the evaluation on a CPU.
        max_new_tokens: Longest answer.
        eval_batch_size: Instructions answered, and pairs judged, together (raise it on a GPU: 64 or more).
        evaluate_base: Also evaluate the base model without an adapter (a reference row).
        precision: Precision of every command (default: each command's own).
        train_tokens_per_s: Real training tokens per second for the time estimate (SmolLM2-135M LoRA on 2 CPU
            cores, measured: ~250 in float32, ~500 with --precision bf16-true on a CPU with AMX).
        dry_run: Print the plan and its compute, run nothing.
    """
    preset = SCALES[scale]
    sizes = {name: value if value is not None else preset[name] for name, value in
             dict(k=k, pool=pool, seeds=seeds, budget_epochs=budget_epochs, batch_size=batch_size,
                  micro_batch_size=micro_batch_size, eval_instructions=eval_instructions,
                  max_new_tokens=max_new_tokens).items()}
    chosen = _arms(arms)
    stray = sorted(set(equal_steps_arms or []) - {a.name for a in chosen})
    if stray:
        raise UserError(f"--equal_steps_arms {stray[0]}: not among the arms run; choose from "
                        f"{' '.join(a.name for a in chosen)}")
    unknown = sorted(set(eval_sets) - set(EVAL_SETS))
    if unknown:
        raise UserError(f"--eval_sets {unknown[0]}: choose from {', '.join(EVAL_SETS)}")
    unanswerable = sorted(set(answer_sets) - set(eval_sets) - {"val"}) or sorted(set(answer_sets) & {"val"})
    if unanswerable:
        raise UserError(f"--answer_sets {unanswerable[0]}: answer sets are among --eval_sets, and val (Alpaca's own "
                        "test split) is not answered; choose from lima, oasst")
    if len(mix_weights) != 2:
        raise UserError(f"--mix_weights {mix_weights}: pass two shares, LIMA's and Alpaca's (e.g. 0.5 0.5)")
    if sizes["batch_size"] % sizes["micro_batch_size"]:
        raise UserError(f"--batch_size {sizes['batch_size']} is not a multiple of --micro_batch_size "
                        f"{sizes['micro_batch_size']}")
    files = {name: Path(path).resolve() for name, path in
             (("alpaca", alpaca_file), ("lima", lima_file), ("oasst", oasst_file))}
    study = Study(checkpoint_dir=Path(checkpoint_dir), files=files, out_dir=Path(out_dir).resolve(),
                  results_dir=Path(results_dir).resolve(), arms=chosen,
                  eval_sets=list(eval_sets), answer_sets=list(answer_sets), answer_instructions=answer_instructions,
                  learning_rate=learning_rate, mix_weights=list(mix_weights), token_budget=token_budget,
                  compute=compute, equal_steps_arms=equal_steps_arms, eval_batch_size=eval_batch_size, evaluate_base=evaluate_base, precision=precision,
                  **sizes)
    plan = study.plan()
    print(format_plan(plan, train_tokens_per_s), flush=True)
    if dry_run:
        return None
    return study.run()


def _arms(names: Sequence[str] | None) -> list[Arm]:
    if names is None:
        return list(ARMS)
    by_name = {a.name: a for a in ARMS}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise UserError(f"--arms {unknown[0]}: not an arm of the study; choose from {' '.join(ARM_NAMES)}")
    wanted = list(dict.fromkeys(names))
    while True:  # every arm's baseline runs too, or nothing can be paired
        missing = [by_name[n].baseline for n in wanted if by_name[n].baseline not in wanted]
        if not missing:
            return [a for a in ARMS if a.name in wanted]
        wanted += missing


class Ledger:
    """OUT_DIR/ledger.json: every command that finished, with where and when it ran. Written after each one."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.entries: dict[str, dict[str, Any]] = read_json(path)["steps"] if path.is_file() else {}
        self.ran = 0

    def run(self, step: str, args: Sequence[str], outputs: Sequence[Path]) -> dict[str, Any]:
        """Run `python ARGS` from the repository root unless `step` is recorded as done with its outputs present."""
        done = self.entries.get(step)
        if done is not None and all(Path(p).exists() for p in done["outputs"]):
            return done
        log = self.path.parent / "logs" / f"{step}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        command = [str(a).lower() if isinstance(a, bool) else str(a) for a in args]
        print(f"+ [{step}] python {' '.join(command)}", flush=True)
        start = time.time()
        with log.open("w") as f:
            rc = subprocess.run([sys.executable, *command], cwd=ROOT, stdout=f, stderr=subprocess.STDOUT).returncode
        if rc:
            tail = log.read_text(errors="replace")[-1500:]
            raise UserError(f"step {step} failed (exit {rc}); its output is in {log}; rerun the same command to "
                            f"continue from there. Last lines:\n{tail}")
        missing = [str(p) for p in outputs if not Path(p).exists()]
        if missing:
            raise UserError(f"step {step} exited 0 but did not write {missing[0]}; see {log}")
        self.entries[step] = {"command": ["python", *command], "host": socket.gethostname(), "device": _device(),
                              "start": _iso(start), "end": _iso(time.time()), "seconds": round(time.time() - start, 1),
                              "outputs": [str(p) for p in outputs], "log": str(log)}
        atomic_write_json(self.path, {"steps": self.entries})
        self.ran += 1
        return self.entries[step]


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(t))


def _device() -> str:
    """What the commands ran on: the GPU's name, else the CPU and its cores."""
    import torch

    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)} x{torch.cuda.device_count()}"
    return f"cpu {platform.processor() or platform.machine()} ({os.cpu_count()} cores)"


@dataclass
class Study:
    checkpoint_dir: Path
    files: dict[str, Path]
    out_dir: Path
    results_dir: Path
    arms: list[Arm]
    eval_sets: list[str]
    answer_sets: list[str]
    answer_instructions: int | None
    learning_rate: float
    mix_weights: list[float]
    token_budget: int | None
    compute: str
    equal_steps_arms: list[str] | None
    eval_batch_size: int
    evaluate_base: bool
    precision: str | None
    k: int
    pool: int | None
    seeds: list[int]
    budget_epochs: float
    batch_size: int
    micro_batch_size: int
    eval_instructions: int | None
    max_new_tokens: int

    # ------------------------------------------------------------------------------------ the plan
    def plan(self) -> dict[str, Any]:
        """Runs and their estimated tokens, from the prepared data where it exists, else from the raw files."""
        stats = {s: self._source_stats(s) for s in ("alpaca", "lima")}
        pool_n = stats["alpaca"]["train"] if self.pool is None else min(self.pool, stats["alpaca"]["train"])
        mix_n = _mix_size(stats["lima"]["train"], pool_n, self.mix_weights)
        mix_mean = {key: (stats["lima"][key] * self.mix_weights[0] + stats["alpaca"][key] * self.mix_weights[1])
                    / sum(self.mix_weights) for key in ("trainable", "real")}
        budget = self.budget(stats["alpaca"]["trainable"])
        runs, scored = [], set()
        for arm in self.arms:
            mean = mix_mean if arm.source == "mix" else stats[arm.source]
            if arm.policy == "longest" and arm.source == "alpaca":
                mean = stats["alpaca"]["longest"]  # the other policies' picks are unknown before scoring: pool mean
            n = {"alpaca": pool_n, "mix": mix_n, "lima": stats["lima"]["train"]}[arm.source]
            n = n if arm.policy in ("full", "dedup") else min(self.k, n)
            if arm.policy in SCORED or arm.order == "score":
                scored.add(arm.source)
            planned = {mode: self._steps(arm, mode, n, mean["trainable"], budget) for mode in self._modes(arm)}
            for mode, steps in planned.items():
                if mode == "steps" and planned.get("tokens") == steps:
                    continue  # as run(): the equal-steps run is the equal-token one
                # the run's identity, as _train names its folder: arms that make the same run share it
                runs += [{"arm": arm.name, "compute": mode, "seed": seed, "steps": steps,
                          "key": (arm.source, arm.policy, seed if arm.policy == "random" else None, arm.order, steps,
                                  arm.neftune_alpha, seed),
                          "trainable_tokens": steps * self.batch_size * mean["trainable"],
                          "real_tokens": steps * self.batch_size * mean["real"]} for seed in self.seeds]
        generated = self.answer_sets
        instructions = {s: self._eval_size(s, stats) for s in self.eval_sets}
        distinct = {r["key"]: r for r in runs}
        answered = len(distinct) + self.evaluate_base
        judged = len(distinct) - len({r["key"] for r in runs if r["arm"] == "random"})
        return {
            "budget_trainable_tokens": budget, "exact": all(s["exact"] for s in stats.values()),
            "sources": stats, "pool": pool_n, "mix": mix_n, "runs": runs, "distinct_runs": list(distinct.values()),
            "scoring": {s: (pool_n if s == "alpaca" else mix_n) for s in sorted(scored)},
            "judge_scoring": sum(pool_n if a.source == "alpaca" else mix_n for a in self.arms if a.policy == "judge"),
            "answers": {s: answered * self._answered(instructions[s]) for s in generated},
            "reference_losses": {s: answered * instructions[s] for s in self.eval_sets},
            "judge_calls": {s: 2 * judged * self._answered(instructions[s]) for s in generated},
            "max_new_tokens": self.max_new_tokens,
        }

    def budget(self, pool_mean_trainable: float) -> int:
        if self.token_budget is not None:
            return self.token_budget
        return round(self.budget_epochs * self.k * pool_mean_trainable)

    def _modes(self, arm: Arm) -> list[str]:
        if arm.epochs is not None:
            return ["epochs"]
        if self.compute == "both" and self.equal_steps_arms is not None and arm.name not in self.equal_steps_arms:
            return ["tokens"]
        return {"tokens": ["tokens"], "steps": ["steps"], "both": ["tokens", "steps"]}[self.compute]

    def _steps(self, arm: Arm, mode: str, n: int, mean_trainable: float, budget: int) -> int:
        """Optimizer steps of one run: the token budget over this data's mean trainable tokens per step, the common
        step count, or the arm's own epochs."""
        if mode == "epochs":
            return max(1, math.ceil(arm.epochs * n / self.batch_size))
        if mode == "steps":
            return max(1, round(self.budget_epochs * self.k / self.batch_size))
        return max(1, round(budget / (mean_trainable * self.batch_size)))

    def _source_stats(self, source: str) -> dict[str, Any]:
        """Train/test counts and mean trainable and real tokens per train example: exact from the prepared
        (decontaminated) data once it exists, else estimated from the raw file with the tokenizer."""
        clean = self.out_dir / "data" / f"{source}-clean"
        prepared = clean if (clean / "meta.json").is_file() else self.out_dir / "data" / source
        if (prepared / "meta.json").is_file():
            trainable, real = _token_counts(prepared, "train")
            stats = {"test": len(_token_counts(prepared, "test")[0]), "exact": True, "from": str(prepared)}
        else:
            trainable, real, test = _estimate_tokens(self.files[source], self.checkpoint_dir, source)
            stats = {"test": test, "exact": False, "from": f"{self.files[source]} (estimated)"}
        longest = np.argsort(-trainable, kind="stable")[:self.k]  # --policy longest: the longest responses
        return stats | {"train": len(trainable), "trainable": float(trainable.mean()), "real": float(real.mean()),
                        "longest": {"trainable": float(trainable[longest].mean()), "real": float(real[longest].mean())}}

    def _eval_size(self, name: str, stats: dict[str, Any]) -> int:
        n = {"val": stats["alpaca"]["test"], "lima": stats["lima"]["test"], "oasst": 100}[name]
        return n if self.eval_instructions is None else min(n, self.eval_instructions)

    def _answered(self, n: int) -> int:
        return n if self.answer_instructions is None else min(n, self.answer_instructions)

    # ------------------------------------------------------------------------------------ running it
    def run(self) -> dict[str, Any]:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        ledger = Ledger(self.out_dir / "ledger.json")
        data = self.out_dir / "data"
        ckpt = ["--checkpoint_dir", self.checkpoint_dir]
        prec = ["--precision", self.precision] if self.precision else []
        sources = {a.source for a in self.arms}
        need_lima = "lima" in self.eval_sets or sources & {"lima", "mix"}
        prepare = {"alpaca": "scripts/prepare_alpaca.py", "lima": "scripts/prepare_lima.py"}
        for name in ["alpaca"] + (["lima"] if need_lima else []):
            ledger.run(f"prepare-{name}", [prepare[name], *ckpt, "--data_file", self.files[name],
                                           "--destination_path", data / name], [data / name / "meta.json"])

        eval_files, answer_files = self._write_eval_sets(data)
        decontamination = {}
        for name in ["alpaca"] + (["lima"] if sources & {"lima", "mix"} else []):
            clean = data / f"{name}-clean"
            ledger.run(f"decontaminate-{name}", ["scripts/dedup_dataset.py", "--data_dirs", data / name,
                                                 "--eval_files", *eval_files.values(), "--threshold", "0.95",
                                                 "--destination_path", clean], [clean / "manifest.json"])
            decontamination[name] = _removed(clean / "manifest.json")

        pool = data / "pool"
        if self.pool is None:
            pool = data / "alpaca-clean"
        else:
            ledger.run("pool", ["scripts/select_dataset.py", "--data_dir", data / "alpaca-clean", "--policy", "random",
                                "--k", self.pool, "--seed", 0, "--destination_path", pool], [pool / "meta.json"])
        source_dirs = {"alpaca": pool, "lima": data / "lima-clean", "mix": data / "mix"}
        if "mix" in sources:
            ledger.run("mix", ["scripts/mix_datasets.py", "--data_dirs", data / "lima-clean", pool, "--weights",
                               *self.mix_weights, "--seed", 0, "--destination_path", data / "mix"],
                       [data / "mix" / "meta.json"])
        for source in sorted({a.source for a in self.arms if a.policy in SCORED or a.order == "score"}):
            judge = ["--judge_checkpoint_dir", self.checkpoint_dir] if any(
                a.policy == "judge" and a.source == source for a in self.arms) else []
            ledger.run(f"score-{source}", ["scripts/score_dataset.py", "--data_dir", source_dirs[source], *ckpt,
                                           *judge, *prec], [source_dirs[source] / "train" / "scores.npy"])

        budget = self.budget(float(np.mean(_token_counts(pool, "train")[0])))
        runs: list[dict[str, Any]] = []
        for arm in self.arms:
            for seed in self.seeds:
                arm_data = self._arm_data(arm, seed, source_dirs[arm.source], ledger)
                trainable = _token_counts(arm_data, "train")[0]
                planned = {mode: self._steps(arm, mode, len(trainable), float(np.mean(trainable)), budget)
                           for mode in self._modes(arm)}
                for mode, steps in planned.items():
                    if mode == "steps" and planned.get("tokens") == steps:
                        continue  # the equal-steps run is the equal-token run: shown once, as tokens
                    runs.append(self._train(arm, mode, seed, steps, arm_data, ledger, ckpt, prec))
        self._evaluate(runs, eval_files, answer_files, ledger, ckpt, prec)
        results = collect(runs, self.out_dir, self.eval_sets, budget)
        results["decontamination"] = decontamination
        results["overlaps"] = selection_overlaps({r["arm"]: Path(r["data"]) for r in runs if r["seed"] == self.seeds[0]})
        results["settings"] = {key: value for key, value in asdict(self).items() if key != "arms"} | {
            "arms": [asdict(a) for a in self.arms], "budget_trainable_tokens": budget}
        results["settings"] = json.loads(json.dumps(results["settings"], default=str))
        results["where"] = sorted({(e["host"], e["device"]) for e in ledger.entries.values()})
        results["data_tool_seconds"] = {step: e["seconds"] for step, e in ledger.entries.items()
                                        if step.split("-")[0] in ("prepare", "decontaminate", "pool", "mix", "score")}
        # score_dataset's own clock, judge apart (its last call only: a resumed scoring shows the rest)
        results["scoring"] = {source: read_json(source_dirs[source] / "scores.json").get("timing")
                              for source in sorted({a.source for a in self.arms
                                                    if a.policy in SCORED or a.order == "score"})}
        self.results_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.results_dir / "results.json", results)
        atomic_write_json(self.results_dir / "ledger.json", {"steps": ledger.entries})  # what ran where, kept
        atomic_write_text(self.results_dir / "results.md", format_results(results))
        plot(results, self.results_dir / "results.png")
        print((self.results_dir / "results.md").read_text())
        return results

    def _write_eval_sets(self, data: Path) -> tuple[dict[str, Path], dict[str, Path]]:
        """The evaluation instruction files (instruction, input, output, history), from the splits no arm trains
        on, and the answer sets' first --answer_instructions of them. Rewritten each run from the same inputs, so
        they are byte-identical."""
        from lit_gpt.data import ALPACA, LIMA, read_oasst

        folder = self.out_dir / "eval_sets"
        folder.mkdir(parents=True, exist_ok=True)
        files, answer_files = {}, {}
        for name in self.eval_sets:
            if name == "oasst":
                examples = [e for e in read_oasst(self.files["oasst"]) if hasattr(e, "turns")]
                records = [{"instruction": e.turns[0].instruction, "input": e.turns[0].input,
                            "output": e.turns[0].response} for e in examples]  # the top-ranked first answer
            else:
                source, reader = {"val": ("alpaca", ALPACA), "lima": ("lima", LIMA)}[name]
                by_row = {e.row: e for e in reader.read(self.files[source]) if hasattr(e, "turns")}
                provenance = (data / source / "test" / "provenance.jsonl").read_text().splitlines()
                records = [_record(by_row[json.loads(line)["row"]]) for line in provenance]
            files[name] = folder / f"{name}.json"
            records = records[:self.eval_instructions]
            atomic_write_json(files[name], records)
            if name in self.answer_sets:
                answer_files[name] = folder / f"{name}-answers.json"
                atomic_write_json(answer_files[name], records[:self.answer_instructions])
        return files, answer_files

    def _arm_data(self, arm: Arm, seed: int, source_dir: Path, ledger: Ledger) -> Path:
        if arm.policy == "full":
            return source_dir
        data = self.out_dir / "data"
        if arm.policy == "dedup":
            dest = data / f"{arm.source}-dedup"
            ledger.run(f"data-{dest.name}", ["scripts/dedup_dataset.py", "--data_dirs", source_dir,
                                             "--destination_path", dest], [dest / "meta.json"])
            return dest
        drawn = arm.policy == "random"  # the only policy whose pick depends on the seed beyond ties
        dest = data / (f"{arm.source}-random-{self.k}-s{seed}" if drawn else f"{arm.source}-{arm.policy}-{self.k}")
        ledger.run(f"data-{dest.name}", ["scripts/select_dataset.py", "--data_dir", source_dir, "--policy",
                                         arm.policy, "--k", self.k, "--seed", seed if drawn else 0,
                                         "--destination_path", dest], [dest / "meta.json"])
        return dest

    def _train(self, arm: Arm, mode: str, seed: int, steps: int, arm_data: Path, ledger: Ledger,
               ckpt: list, prec: list) -> dict[str, Any]:
        """One finetune run. Its folder is named by what makes it, so arms that make the same run share it (random
        is also the shuffle order, Alpaca alone and NEFTune off)."""
        order = {"shuffle": [], "length": ["--order", "length"],
                 "score": ["--order", "score", "--order_score_column", "ifd"]}[arm.order]
        name = f"{arm_data.name}-{arm.order}-{steps}steps-nef{arm.neftune_alpha:g}-s{seed}"
        run_dir = self.out_dir / "runs" / name
        micro = steps * self.batch_size // self.micro_batch_size
        ledger.run(f"finetune-{name}", [
            "finetune/lora.py", *ckpt, "--data_dir", arm_data, "--out_dir", run_dir, "--seed", seed, *prec,
            "--batch_size", self.batch_size, "--micro_batch_size", self.micro_batch_size, "--max_iters", micro,
            "--learning_rate", self.learning_rate, "--warmup_steps", max(1, min(10, steps // 10)), *order,
            "--neftune_alpha", arm.neftune_alpha, "--eval_interval", 10 * steps, "--eval_iters", 1,
            "--save_interval", 10 * steps, "--resume", "auto"], [run_dir / "lit_lora.safetensors"])
        return {"arm": arm.name, "group": arm.group, "baseline": arm.baseline, "compute": mode, "seed": seed,
                "steps": steps, "data": str(arm_data), "examples": len(_token_counts(arm_data, "train")[0]),
                "run": str(run_dir)}

    def _evaluate(self, runs: list[dict[str, Any]], eval_files: dict[str, Path], answer_files: dict[str, Path],
                  ledger: Ledger, ckpt: list, prec: list) -> None:
        """Reference losses per run and set (eval/SET/RUN), answers per run and answer set (answers/SET/RUN), then
        each arm's answers against its baseline's of the same seed and compute mode (tokens runs against random's
        tokens run, and so on)."""
        adapters = {Path(r["run"]).name: Path(r["run"]) / "lit_lora.safetensors" for r in runs}
        passes = [("eval", set_name, file, ["--generate", False], REFERENCE_LOSS)
                  for set_name, file in eval_files.items()]
        passes += [("answers", set_name, file, ["--generate", True, "--reference_loss", False,
                                                "--max_new_tokens", self.max_new_tokens], ANSWERS)
                   for set_name, file in answer_files.items()]
        for kind, set_name, file, what, done_file in passes:
            folder = self.out_dir / kind / set_name
            flags = ["eval/answer.py", *ckpt, "--data_file", file, *what, "--batch_size", self.eval_batch_size, *prec]
            if self.evaluate_base:
                ledger.run(f"{kind}-{set_name}-base", [*flags, "--out_dir", folder / "base"],
                           [folder / "base" / done_file])
            # every adapter not yet evaluated in one command: the base model is loaded once, each adapter is applied
            # to a fresh copy, and each gets folder/<run name>/
            pending = [name for name in adapters if not (folder / name / done_file).is_file()]
            if not pending:
                continue
            step = f"{kind}-{set_name}-{len(pending)}runs-{_sha8(pending)}"
            out = folder / pending[0] if len(pending) == 1 else folder  # answer.py nests only several adapters
            ledger.run(step, [*flags, "--lora_path", *(adapters[n] for n in pending), "--out_dir", out],
                       [folder / name / done_file for name in pending])
        by_key = {(r["arm"], r["compute"], r["seed"]): r for r in runs}
        for r, set_name in itertools.product(runs, answer_files):
            base = baseline_run(by_key, r)
            r.setdefault("pairwise", {})
            if base is None or base["run"] == r["run"]:
                continue
            a, b = (self.out_dir / "answers" / set_name / Path(x["run"]).name for x in (r, base))
            dest = self.out_dir / "pairwise" / set_name / f"{a.name}--vs--{b.name}"
            ledger.run(f"pairwise-{set_name}-{dest.name}", ["eval/pairwise.py", "--answers_a", a, "--answers_b", b,
                                                            "--judge_checkpoint_dir", self.checkpoint_dir,
                                                            "--out_dir", dest, "--batch_size", self.eval_batch_size,
                                                            *prec], [dest / "pairwise.json"])
            r["pairwise"][set_name] = str(dest / "pairwise.json")


REFERENCE_LOSS, ANSWERS = "reference_loss.json", "answers.jsonl"  # what eval/answer.py writes last, per pass


def _sha8(names: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(names).encode()).hexdigest()[:8]


def _record(example: Any) -> dict[str, Any]:
    """An eval/answer.py instruction record: the last turn, earlier turns as history."""
    last = example.turns[-1]
    return {"instruction": last.instruction, "input": last.input, "output": last.response,
            "history": [[t.instruction if not t.input else f"{t.instruction}\n\n{t.input}", t.response]
                        for t in example.turns[:-1]]}


def _token_counts(data_dir: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Trainable (loss-carrying) and real tokens of every example of a prepared split."""
    folder = Path(data_dir) / split
    labels = np.load(folder / "labels.npy", mmap_mode="r")
    offsets = np.load(folder / "offsets.npy")
    carrying = np.concatenate([[0], np.cumsum(labels != IGNORE_INDEX)])
    return carrying[offsets[1:]] - carrying[offsets[:-1]], np.diff(offsets)


def _estimate_tokens(path: Path, checkpoint_dir: Path, source: str) -> tuple[np.ndarray, np.ndarray, int]:
    """Before anything is prepared: counts from the raw file, tokens of the response (+ EOS) and of the whole
    text (+ a ChatML template's ~30 tokens, SmolLM2's system line included), with prepare's 5% test split."""
    from lit_gpt.data import ALPACA, LIMA
    from lit_gpt.tokenizer import Tokenizer
    from lit_gpt.utils import resolve_checkpoint_dir

    if not path.is_file():
        raise UserError(f"--{source}_file {path} does not exist; pass the file (e.g. ../shared/data/{source}/)")
    tokenizer = Tokenizer(resolve_checkpoint_dir(checkpoint_dir))
    examples = [e for e in {"alpaca": ALPACA, "lima": LIMA}[source].read(path) if hasattr(e, "turns")]
    trainable = [sum(len(tokenizer.encode(t.response)) + 1 for t in e.turns) for e in examples]
    real = [sum(len(tokenizer.encode(f"{t.instruction}\n{t.input}\n{t.response}")) + 30 for t in e.turns)
            for e in examples]
    test = round(0.05 * len(examples))
    return np.array(trainable[test:]), np.array(real[test:]), test


def _mix_size(lima: int, alpaca: int, weights: Sequence[float]) -> int:
    """mix_datasets.py's default size: as large as it can be without repeating an example."""
    shares = np.asarray(weights, dtype=float) / sum(weights)
    return int(min(n / s for n, s in zip((lima, alpaca), shares) if s > 0))


def selection_overlaps(data_dirs: dict[str, Path]) -> dict[str, Any]:
    """Examples two selections share, for every pair of select_dataset.py folders of the same source (e.g. how many
    IFD picks are also among the longest), and what two random k-subsets of that pool share on average."""
    kept, pools = {}, {}
    for arm, folder in data_dirs.items():
        manifest = folder / "manifest.json"
        if manifest.is_file() and (m := read_json(manifest)).get("tool") == "select_dataset":
            if folder.name not in {f.name for f, _ in kept.values()}:
                kept[arm] = (folder, {k["index"] for k in m["kept"]})
                pools[arm] = (m["source"]["data_dir"], m["train"]["examples"])
    arms = list(kept)
    shared = {a: {b: len(kept[a][1] & kept[b][1]) for b in arms if pools[b][0] == pools[a][0]} for a in arms}
    chance = {a: round(len(kept[a][1]) ** 2 / pools[a][1], 1) for a in arms}
    return {"arms": arms, "shared": shared, "chance": chance}


def _removed(manifest_path: Path) -> dict[str, Any]:
    """What decontamination removed from a source: train examples before and kept, removals by reason, and the
    evaluation texts too short to check (from dedup_dataset's manifest.json)."""
    manifest = read_json(manifest_path)
    return {"examples": manifest["train"]["examples"], "kept": manifest["train"]["kept"],
            "removed": manifest["train"]["removed"],
            "eval_texts_not_checked": {Path(e["path"]).stem: e["not_checked"] for e in manifest["eval_files"]},
            "manifest": str(manifest_path)}


# ------------------------------------------------------------------------------------ results
MEASURES = {  # name: (label, lower is better)
    "val_loss": ("validation loss (Alpaca test split)", True),
    "lima_ref_loss": ("reference loss, LIMA test", True),
    "oasst_ref_loss": ("reference loss, OpenAssistant top answers", True),
    "lima_win_rate": ("win rate vs baseline, LIMA test (judge: base model)", False),
    "oasst_win_rate": ("win rate vs baseline, OpenAssistant", False),
    "lima_lc_win_rate": ("length-controlled win rate vs baseline, LIMA test", False),
    "oasst_lc_win_rate": ("length-controlled win rate vs baseline, OpenAssistant", False),
    "lima_answer_words": ("answer length (words), LIMA test", None),
    "oasst_answer_words": ("answer length (words), OpenAssistant", None),
}


def collect(runs: list[dict[str, Any]], out_dir: Path, eval_sets: Sequence[str], budget: int) -> dict[str, Any]:
    """Every run's measures, then per arm and compute mode: mean ± sd over seeds and the paired comparison."""
    for r in runs:
        name = Path(r["run"]).name
        r["trainable_tokens"], r["real_tokens"] = _trained_tokens(Path(r["run"]) / "metrics.csv")
        for set_name in eval_sets:
            folder = out_dir / "eval" / set_name / name
            loss = read_json(folder / "reference_loss.json")["summary"]["loss_per_token"]
            r["val_loss" if set_name == "val" else f"{set_name}_ref_loss"] = loss
            answered = out_dir / "answers" / set_name / name / ANSWERS
            if answered.is_file():
                answers = [json.loads(line) for line in answered.read_text().splitlines() if line]
                r[f"{set_name}_answer_words"] = float(np.mean([len(a["output"].split()) for a in answers]))
                if set_name in r.get("pairwise", {}):
                    summary = read_json(Path(r["pairwise"][set_name]))["summary"]
                    r[f"{set_name}_win_rate"] = summary["win_rate"]
                    r[f"{set_name}_lc_win_rate"] = summary["length_controlled_win_rate"]
                    r[f"{set_name}_judge"] = {key: summary[key] for key in (
                        "win_rate", "length_controlled_win_rate", "judged", "instructions", "unparseable_verdicts",
                        "verdicts", "mean_length_a", "mean_length_b", "first_shown_preferred")}
    base = {}  # the base model without an adapter, where it was evaluated (--evaluate_base)
    for set_name in eval_sets:
        losses = out_dir / "eval" / set_name / "base" / REFERENCE_LOSS
        answered = out_dir / "answers" / set_name / "base" / ANSWERS
        if losses.is_file():
            key = "val_loss" if set_name == "val" else f"{set_name}_ref_loss"
            base[key] = read_json(losses)["summary"]["loss_per_token"]
        if answered.is_file():
            words = [len(json.loads(line)["output"].split()) for line in answered.read_text().splitlines() if line]
            base[f"{set_name}_answer_words"] = float(np.mean(words))
    rows = []
    keys = list(dict.fromkeys((r["arm"], r["compute"]) for r in runs))
    by = {(r["arm"], r["compute"], r["seed"]): r for r in runs}
    for arm, mode in keys:
        mine = [r for r in runs if (r["arm"], r["compute"]) == (arm, mode)]
        row = {"arm": arm, "group": mine[0]["group"], "baseline": mine[0]["baseline"], "compute": mode,
               "seeds": [r["seed"] for r in mine], "examples": float(np.mean([r["examples"] for r in mine])),
               "steps": float(np.mean([r["steps"] for r in mine])),
               "trainable_tokens": float(np.mean([r["trainable_tokens"] for r in mine])),
               "real_tokens": float(np.mean([r["real_tokens"] for r in mine])), "measures": {}}
        for measure in MEASURES:
            values = [r[measure] for r in mine if r.get(measure) is not None]
            if not values:
                continue
            entry = {"values": values, "mean": float(np.mean(values)),
                     "sd": float(np.std(values, ddof=1)) if len(values) > 1 else None}
            if measure.endswith("win_rate"):  # already a comparison with the baseline: test it against 0.5
                entry["vs_baseline"] = paired([v - 0.5 for v in values])
                judge = f"{measure.split('_')[0]}_judge"
                judged = [r[judge]["first_shown_preferred"] for r in mine if r.get(judge)]
                entry["first_shown_preferred"] = float(np.mean([j for j in judged if j is not None] or [np.nan]))
            else:
                pairs = [(r[measure], b[measure]) for r in mine if (b := baseline_run(by, r)) is not None
                         and r.get(measure) is not None and b.get(measure) is not None and b["run"] != r["run"]]
                if pairs:
                    entry["vs_baseline"] = paired([a - b for a, b in pairs])
            row["measures"][measure] = entry
        rows.append(row)
    return {"budget_trainable_tokens": budget, "base": base, "rows": rows, "runs": runs}


def baseline_run(by_key: dict[tuple, dict[str, Any]], run: dict[str, Any]) -> dict[str, Any] | None:
    """The run an arm's run is compared with: its baseline arm, same seed, same compute mode where the baseline has
    that mode (it lacks `steps` when its equal-steps run is its equal-token run; `epochs` arms compare with tokens)."""
    return by_key.get((run["baseline"], run["compute"], run["seed"])) or by_key.get(
        (run["baseline"], "tokens", run["seed"]))


def _trained_tokens(metrics: Path) -> tuple[int, int]:
    """Trainable and real tokens of a run from metrics.csv (a resumed run re-logs some steps: the last wins)."""
    steps: dict[int, tuple[int, int]] = {}
    with metrics.open(newline="") as f:
        for row in csv.DictReader(f):
            if row.get("tokens_trainable"):
                steps[int(row["step"])] = (int(row["tokens_trainable"]), int(row["tokens_real"]))
    return sum(t for t, _ in steps.values()), sum(r for _, r in steps.values())


def paired(diffs: Sequence[float]) -> dict[str, Any]:
    """Mean of paired differences (arm minus baseline, seed by seed) with a 95% t interval, the paired t-test's
    p-value and the exact sign-flip permutation test's (all 2^n sign patterns; n is the number of seeds)."""
    d = np.asarray(diffs, dtype=float)
    n = len(d)
    out: dict[str, Any] = {"n": n, "mean_diff": float(d.mean()), "ci95": None, "p_t": None, "p_sign_flip": None}
    if n < 2:
        return out
    sd = float(d.std(ddof=1))
    try:
        from scipy import stats

        t = float(stats.t.ppf(0.975, n - 1))
        p_t = float(stats.ttest_1samp(d, 0.0).pvalue) if sd > 0 else (1.0 if d.mean() == 0 else 0.0)
    except ImportError:  # the normal quantile: a narrower interval than t's for few seeds, said in the table
        t, p_t = 1.959964, None
    half = t * sd / math.sqrt(n)
    signs = np.array(list(itertools.product((1, -1), repeat=n)))  # (2^n, n)
    flipped = np.abs((signs * d).mean(axis=1))
    out.update(ci95=[float(d.mean() - half), float(d.mean() + half)], p_t=p_t,
               p_sign_flip=float((flipped >= abs(d.mean()) - 1e-12).mean()))
    return out


POSITION_BIAS = 0.9  # a judge preferring the first-shown answer this often decides by position, not content


def verdict(measure: str, entry: dict[str, Any], baseline: str) -> str:
    test = entry.get("vs_baseline")
    if entry.get("first_shown_preferred", 0.0) >= POSITION_BIAS:  # NaN (nothing parsed) compares False: tested below
        return (f"judge uninformative: it preferred the answer shown first in {entry['first_shown_preferred']:.0%} "
                "of its verdicts")
    if test is None or test["ci95"] is None:
        return "no comparison (fewer than 2 paired seeds)"
    low, high = test["ci95"]
    if low <= 0 <= high:
        return "no difference at this scale"
    better = MEASURES[measure][1]
    if measure.endswith("win_rate"):
        return f"{'beats' if low > 0 else 'loses to'} {baseline}"
    if better is None:
        return f"{'longer' if low > 0 else 'shorter'} than {baseline}"
    return f"{'better' if (high < 0) == better else 'worse'} than {baseline}"


def format_results(results: dict[str, Any]) -> str:
    settings = results["settings"]
    lines = ["# Does selection help? The study", "",
             f"Base model `{settings['checkpoint_dir']}`; k = {settings['k']}; seeds {settings['seeds']}; batch "
             f"{settings['batch_size']}; common budget {results['budget_trainable_tokens']:,} trainable tokens per run "
             f"(`compute = tokens`); `steps` rows: every arm {settings['budget_epochs']:g} x k / batch optimizer "
             "steps; "
             "`epochs` rows: the arm's own epochs (compute differs on purpose).", "",
             f"Every run: learning rate {settings['learning_rate']:g}, micro-batch {settings['micro_batch_size']} "
             f"(packed), precision {settings['precision'] or 'each command' + chr(39) + 's default'}, LoRA as "
             "finetune/lora.py sets it. Evaluation: reference losses on up to "
             f"{settings['eval_instructions'] or 'all'} instructions of each of {', '.join(settings['eval_sets'])}; "
             f"greedy answers (up to {settings['max_new_tokens']} tokens) to the first "
             f"{settings['answer_instructions'] or 'all'} of {', '.join(settings['answer_sets']) or 'none'}.", "",
             "Ran on: " + "; ".join(f"{h} ({d})" for h, d in results["where"]), "", "## Decontamination", ""]
    for source, d in results["decontamination"].items():
        reasons = ", ".join(f"{n} {why.replace('_', ' ')}" for why, n in d["removed"].items())
        lines.append(f"- {source}: {d['examples']} train examples, {d['kept']} kept; removed: {reasons}; evaluation "
                     f"texts too short to check: {d['eval_texts_not_checked']} (`{d['manifest']}`)")
    if results["base"]:
        lines += ["", "Base model (no adapter): " + ", ".join(f"{k} {v:.4f}" for k, v in results["base"].items())]
    lines += ["", "## Summary", "", *summary_table(results)]
    overlaps = results.get("overlaps", {})
    if len(overlaps.get("arms", [])) > 1:
        arms = overlaps["arms"]
        lines += ["", "## How much the selections share", "",
                  f"Examples two selections have in common (two random draws of k share "
                  f"{next(iter(overlaps['chance'].values())):g} on average):", "",
                  "| | " + " | ".join(arms) + " |", "|---" * (len(arms) + 1) + "|"]
        lines += [f"| {a} | " + " | ".join(str(overlaps["shared"][a].get(b, "")) for b in arms) + " |" for a in arms]
    for measure, (label, _) in MEASURES.items():
        shown = [r for r in results["rows"] if measure in r["measures"]]
        if not shown:
            continue
        lines += ["", f"## {label}", "",
                  "| arm | compute | examples | steps | trainable tokens | real tokens | mean ± sd (per seed) | "
                  "vs baseline: mean diff [95% CI], p (t / sign-flip) | verdict |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for r in shown:
            e = r["measures"][measure]
            sd = f"{e['sd']:.4f}" if e["sd"] is not None else "n/a"
            per_seed = ", ".join(f"{v:.4f}" for v in e["values"])
            test = e.get("vs_baseline")
            cmp = "(baseline)" if test is None else _test_text(test)
            lines.append(f"| {r['arm']} | {r['compute']} | {r['examples']:.0f} | {r['steps']:.0f} | "
                         f"{r['trainable_tokens']:,.0f} | {r['real_tokens']:,.0f} | {e['mean']:.4f} ± {sd} "
                         f"({per_seed}) | {cmp} | {verdict(measure, e, r['baseline']) if test else ''} |")
    lines += ["", "## The pairwise judge, run by run", "",
              "| arm | compute | seed | set | win rate | length-controlled | judged / instructions | unparseable / "
              "verdicts | mean length arm / baseline (chars) | first shown preferred |", "|---" * 10 + "|"]
    for r in results["runs"]:
        for set_name in ("lima", "oasst"):
            j = r.get(f"{set_name}_judge")
            if j:
                lines.append(f"| {r['arm']} | {r['compute']} | {r['seed']} | {set_name} | {_num(j['win_rate'])} | "
                             f"{_num(j['length_controlled_win_rate'])} | {j['judged']} / {j['instructions']} | "
                             f"{j['unparseable_verdicts']} / {j['verdicts']} | {_num(j['mean_length_a'], 0)} / "
                             f"{_num(j['mean_length_b'], 0)} | {_num(j['first_shown_preferred'])} |")
    lines += ["", "## Verdicts", ""]
    for r in results["rows"]:
        said = [f"{m}: {verdict(m, e, r['baseline'])}" for m, e in r["measures"].items() if e.get("vs_baseline")]
        if said:
            lines.append(f"- **{r['arm']}** ({r['compute']}): " + "; ".join(said))
    lines += ["", "## The data tools at this scale", "",
              "Seconds per command, from ledger.json (score-*: IFD, losses and embeddings of every example, plus one "
              "judge generation each where a judge arm runs; the pool's size is in the plan):", ""]
    lines += [f"- {step}: {seconds:,.0f} s" for step, seconds in results["data_tool_seconds"].items()]
    for source, t in results.get("scoring", {}).items():
        if not t or not t["examples"]:
            continue
        judged = t["judge_seconds"]
        line = (f"- score-{source}, by score_dataset's clock: {t['examples']:,} examples ({t['tokens']:,} tokens) in "
                f"{t['seconds']:,.0f} s ({t['examples_per_s']:.2f} examples/s, {t['tokens_per_s']:,.0f} tokens/s, "
                f"peak {t['peak_memory_mb']:,.0f} MB)")
        if judged:
            line += (f"; the judge {judged:,.0f} s of it ({t['examples'] / judged:.2f} examples/s), IFD + losses + "
                     f"embeddings {t['seconds'] - judged:,.0f} s ({t['examples'] / (t['seconds'] - judged):.2f} "
                     "examples/s)")
        lines.append(line)
    lines += ["", "## Confounds", "", *CONFOUNDS]
    return "\n".join(lines) + "\n"


SUMMARY_MEASURES = {  # the summary's columns: measure, header, digits
    "val_loss": ("val loss", 4), "lima_ref_loss": ("LIMA ref loss", 4), "oasst_ref_loss": ("OASST ref loss", 4),
    "lima_answer_words": ("LIMA answer words", 1), "lima_win_rate": ("LIMA win rate", 3),
}


def summary_table(results: dict[str, Any]) -> list[str]:
    """One row per arm and compute mode: each measure's mean over seeds and, below the baseline's, the paired
    difference with its 95% interval; the base model first where it was evaluated. The table the README quotes."""
    shown = [m for m in SUMMARY_MEASURES if any(m in r["measures"] for r in results["rows"])]
    lines = ["| arm | compute | steps | trainable tokens | " + " | ".join(SUMMARY_MEASURES[m][0] for m in shown) + " |",
             "|---" * (4 + len(shown)) + "|"]
    if results["base"]:
        cells = [_num(results["base"].get(m), SUMMARY_MEASURES[m][1]) if "win_rate" not in m else "" for m in shown]
        lines.append("| base model (no adapter) | | 0 | 0 | " + " | ".join(cells) + " |")
    for r in results["rows"]:
        cells = []
        for m in shown:
            e, digits = r["measures"].get(m), SUMMARY_MEASURES[m][1]
            if e is None:
                cells.append("")
                continue
            cell = f"{e['mean']:.{digits}f}"
            test = e.get("vs_baseline")
            if test is not None and test["ci95"] is not None:
                low, high = test["ci95"]
                marker = "" if low <= 0 <= high else " *"
                what = "vs 0.5" if m.endswith("win_rate") else "Δ"
                cell += f" ({what} {test['mean_diff']:+.{digits}f} [{low:+.{digits}f}, {high:+.{digits}f}]{marker})"
            if e.get("first_shown_preferred", 0.0) >= POSITION_BIAS:
                cell += f" (judge chose the first shown {e['first_shown_preferred']:.0%})"
            cells.append(cell)
        lines.append(f"| {r['arm']} | {r['compute']} | {r['steps']:.0f} | {r['trainable_tokens']:,.0f} | "
                     + " | ".join(cells) + " |")
    lines += ["", "Means over seeds; in brackets the mean paired difference from the row's baseline (same seed) with "
              "its 95% t interval, * where the interval excludes 0; win rates are against the baseline, tested "
              "against 0.5."]
    return lines


def _num(x: float | None, digits: int = 3) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def _test_text(test: dict[str, Any]) -> str:
    if test["ci95"] is None:
        return f"{test['mean_diff']:+.4f} (1 seed)"
    p_t = "n/a" if test["p_t"] is None else f"{test['p_t']:.3f}"
    return (f"{test['mean_diff']:+.4f} [{test['ci95'][0]:+.4f}, {test['ci95'][1]:+.4f}], "
            f"p {p_t} / {test['p_sign_flip']:.3f}")


CONFOUNDS = [
    "- Equal trainable tokens are not equal real tokens: arms with long prompts process more prompt tokens per "
    "trainable token (the real-token column says how many).",
    "- Equal tokens means unequal steps and unequal passes: the full pool is seen less than once, a k-subset of "
    "short answers several times; the `steps` rows show the other choice.",
    "- The judge is the base model itself (135M): a weak, position- and length-biased judge. The win rates carry "
    "the answer lengths beside them; read pairwise.md's examples before trusting a win rate.",
    "- The model judged its own training data for `judge` and scored it for IFD: selection by the same model that is "
    "trained.",
    "- Reference loss rewards answers that look like the references (LIMA's and OpenAssistant's style), not quality.",
    "- With 3 seeds, the sign-flip test cannot go below p = 0.25 and the t interval is wide: 'no difference at this "
    "scale' is the honest reading of many rows.",
    "- Only LoRA (r=8, query/value), one learning rate and one model size: a selection effect may depend on all three.",
]


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    measures = [m for m in MEASURES if any(m in r["measures"] for r in results["rows"])]
    fig, axes = plt.subplots(len(measures), 1, figsize=(max(6, 0.5 * len(results["rows"])), 2.6 * len(measures)),
                             squeeze=False)
    labels = [f"{r['arm']}/{r['compute'][0]}" for r in results["rows"]]
    for ax, measure in zip(axes[:, 0], measures):
        for i, r in enumerate(results["rows"]):
            e = r["measures"].get(measure)
            if e:
                ax.scatter([i] * len(e["values"]), e["values"], s=12, color="C0")
                ax.hlines(e["mean"], i - 0.3, i + 0.3, color="C1")
        ax.set_ylabel(measure, fontsize=8)
        ax.set_xticks(range(len(labels)), labels if ax is axes[-1, 0] else [], rotation=60, fontsize=7)
    axes[0, 0].set_title("One dot per seed, bar = mean (t: equal tokens, s: equal steps, e: own epochs)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def format_plan(plan: dict[str, Any], train_tokens_per_s: float) -> str:
    runs, distinct = plan["runs"], plan["distinct_runs"]
    trainable = sum(r["trainable_tokens"] for r in distinct)
    src = plan["sources"]
    lines = [
        "Plan" + ("" if plan["exact"] else " (token counts estimated from the raw files: nothing prepared yet)") + ":",
        f"  alpaca train {src['alpaca']['train']} (mean {src['alpaca']['trainable']:.0f} trainable / "
        f"{src['alpaca']['real']:.0f} real tokens), lima train {src['lima']['train']} (mean "
        f"{src['lima']['trainable']:.0f} / {src['lima']['real']:.0f}); pool {plan['pool']}, mix {plan['mix']}",
        f"  common budget: {plan['budget_trainable_tokens']:,} trainable tokens per run",
    ]
    per_arm: dict[tuple[str, str], list[dict]] = {}
    for r in runs:
        per_arm.setdefault((r["arm"], r["compute"]), []).append(r)
    for (arm, mode), rs in per_arm.items():
        lines.append(f"  {arm:14s} {mode:6s} {len(rs)} seeds x {rs[0]['steps']:5d} steps ~ "
                     f"{rs[0]['trainable_tokens']:>10,.0f} trainable, {rs[0]['real_tokens']:>10,.0f} real tokens")
    real_distinct = sum(r["real_tokens"] for r in distinct)
    lines += [
        f"  finetune runs: {len(distinct)} (random-k is also the shuffle order, Alpaca alone and NEFTune off; an "
        f"equal-steps run equal to the equal-token one is run once): {trainable:,.0f} trainable / "
        f"{real_distinct:,.0f} real tokens",
        f"  training time at {train_tokens_per_s:g} real tokens/s: ~{real_distinct / train_tokens_per_s / 3600:.1f} h",
        f"  scoring: {plan['scoring']} examples (+ {plan['judge_scoring']} judge generations)",
        f"  answers to generate (up to {plan['max_new_tokens']} tokens): {plan['answers']}; reference losses: "
        f"{plan['reference_losses']}; judge calls: {plan['judge_calls']}",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    cli(main)
