"""LoRA training throughput: our `finetune/lora.py` (padded, and with --packing) against litgpt 0.5.13
(`litgpt finetune_lora`) and transformers + peft, same model, data, sequence length, micro-batch, LoRA rank/targets and optimizer steps, each
tool in its own virtual environment, runs alternating, in one invocation.

How to run (from the project folder; needs ../shared, i.e. the shared harness ../shared/bench, the Llama 2
tokenizer in ../shared/models and the Alpaca rows in ../shared/data):

    .venv/bin/python bench/finetune_throughput.py --make_venvs          # the recorded protocol: 13 min of runs on 2 cores, plus the venvs once
    .venv/bin/python bench/finetune_throughput.py --size tiny --steps 8 --warmup 2 --repeats 1 --tag smoke
    .venv/bin/python bench/finetune_throughput.py --report_only --tag NAME   # the tables again, from disk

What it does:

1. Installs a writable working copy of the shared harness (`../shared/bench` is read-only and its `bench.py`
   hard-codes `runs/`, `peers/` and `.venvs/` next to itself): the harness' files are copied, at run time and
   never into this repo, to `~/.cache/lit_gpt/bench/harness/` (`--work`), next to a `shared` link to
   ../shared (so make_checkpoint.py / make_data.py find the tokenizer and data exactly as in the shared
   layout). Into that copy go our spec `bench/peers/team.json` (with {repo} filled in) and `.venvs/` links:
     - litgpt -> ~/.cache/lit_gpt/venvs/litgpt, hf -> ~/.cache/lit_gpt/venvs/hf (`--venvs`). Both are made
       with the commands of ../shared/bench/setup_venvs.sh (CPU torch 2.13.0 from the local wheel first,
       then the packages under the harness' lock files) when `--make_venvs` is given and they are missing;
     - team -> this repo's `.venv` (lit_gpt installed there in editable mode).
   A second spec, `team_packed`, is derived from team.json: the same command with `--packing true` (the 4
   examples of a step packed into one row of up to 4 x 512 tokens, attention kept inside each example).
2. `bench.py setup`: the random-weight Llama checkpoint (`small`: 58.5M, hidden 512, 8 layers, vocab 32000, with
   the real Llama 2 tokenizer), the 1k Alpaca training slice, and each tool's conversion of a copy of the HF
   folder (litgpt: `litgpt convert_to_litgpt`; ours: `scripts/convert_hf_checkpoint.py`), once.
3. Our data: `bench/team_adapter.py prep` = our `prepare()` (scripts/prepare_alpaca.py) on the same 1k rows,
   with test_split_fraction 0 (all 1000 rows are training rows), the Alpaca template + BOS / response + EOS,
   max_seq_length 512 and, by default, no prompt masking (`--mask_inputs` masks it), as the peers train. The
   rows are permuted first (`team_adapter.peer_order`) so that our sampler (EpochStream, our default
   --seed 1337) meets them in the peers' order (DataLoader(shuffle=True, generator=manual_seed(42))): every
   step of ours trains on the same 4 examples as the same step of litgpt and hf_peft.
   The token ids are not byte-identical: our prepare encodes the response as it reads after the prompt
   ("...### Response:\nNo" -> `No`), while litgpt and the HF run encode the response on its own, so
   SentencePiece adds its dummy-prefix space (`▁No`). Example lengths differ by 0 or 1 token (+29 tokens over
   the 1000 rows), so the step-1 loss differs slightly and per-step pairs are matched by examples, not by
   byte-identical batches (token counts within one token per example).
4. `bench.py train`: for each repeat, for each LoRA target set (qv, all), every tool once, the order rotating
   each repeat (litgpt, hf_peft, team / hf_peft, team, litgpt / ...). Each run is a fresh process under
   `/usr/bin/time -v` with OMP_NUM_THREADS=MKL_NUM_THREADS=2 (the harness' ENV), fp32, micro-batch 4, no
   accumulation, 25 optimizer steps of which the first 5 are excluded from timing, LoRA r 8 / alpha 16 /
   dropout 0.05, AdamW lr 1e-3 with 5 warm-up steps, no grad clipping. Before the first run it waits (polling
   every 60 s, at most --max_wait s) until no other finetune/pytest job runs and the 1-min load average is
   below --max_load; during the runs it samples the load and other heavy jobs every 15 s, and the report says
   which runs shared the machine (this VM is shared: absolute speed moves by up to 2x, use the paired ratios).
5. Prints (and writes to `<work>/harness/runs/finetune_throughput_<tag>.md`) the table below, then the
   harness' own report (`runs/report.md`) has the peers-vs-hf_peft view.

What is measured, per run (from each tool's per-step log, normalized by the harness to steps_normalized.jsonl):
- real tokens/s: non-padding tokens (template, BOS and EOS included) of the timed steps / their summed step time;
  and the per-step median of the same (steadier on this noisy shared VM);
- s/step: mean step time of the timed steps. Each tool's step time spans batch fetch/collate, forward, backward,
  optimizer step and reading the loss. Ours is `step_seconds` of finetune/lora.py's metrics.csv;
- peak RSS: `/usr/bin/time`'s maximum resident set size over the whole process (start-up, our initial/final
  validation, litgpt's post-training merge included); "RSS in training": the harness' 0.2 s samples between the
  first and last step line;
- loss at step 1 and final loss (random weights: a sanity check; LoRA B starts at 0, so step 1 is the frozen
  model's loss on the same examples: it must agree between tools up to the 1-token tokenization difference);
- ratios ours / peer, paired by repeat (same repeat index, neighbouring runs): tok/s real (>1: ours faster),
  s/step, peak RSS (<1: ours smaller); and the per-step paired speed ratio (our real tok/s / the peer's real
  tok/s on the same step, i.e. the same 4 examples), median and IQR over all timed steps of all repeats.

Our finetune/lora.py also runs, outside the timed steps: Fabric set-up, a TensorBoard logger, an initial
validation and a final validation at the last step (both empty here, since all 1000 rows are training rows,
so there is no sample generation either), the adapter + training-state save and the loss plot (matplotlib).
The litgpt spec turns its initial/final validation off; it merges the adapter into a full checkpoint at the end.
These show in wall s, start-up and peak RSS, not in the step times.

The same packed step as a fraction of this machine's measured fp32 matmul rate on the model's own GEMM shapes (one
run, docs/gpu.md): PYTHONPATH=. python bench/gpu_check.py --device cpu --model bench --phases throughput
--micro_batch_size 4 --max_seq_length 512 --examples_per_step 4 --steps 10 --budget_s 1800
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CACHE = Path.home() / ".cache" / "lit_gpt"
PEERS = ("litgpt", "hf_peft", "team", "team_packed")
OURS = ("team", "team_packed")
LABEL = {"team": "ours, padded", "team_packed": "ours, packed"}

# ../shared/bench/setup_venvs.sh, per venv: what goes in after `pip install torch==2.13.0` (the local CPU wheel)
VENV_PACKAGES = {
    "litgpt": ("litgpt.lock.txt", ["litgpt==0.5.13", "huggingface-hub<1.4", "requests", "sentencepiece", "psutil"]),
    "hf": ("hf.lock.txt", ["transformers", "peft", "datasets", "accelerate", "sentencepiece", "protobuf", "psutil"]),
}


# ----------------------------------------------------------------------------------------------- set-up


def ensure_venv(name: str, venvs: Path, shared_bench: Path, make: bool) -> Path:
    path = venvs / name
    if (path / "bin" / "python").is_file():
        return path
    if not make:
        raise SystemExit(f"no {name} venv at {path}: pass --make_venvs (runs ../shared/bench/setup_venvs.sh's "
                         f"commands there), or --venvs DIR holding litgpt/ and hf/")
    lock, packages = VENV_PACKAGES[name]
    print(f"making the {name} venv at {path}", flush=True)
    subprocess.run([os.environ.get("PYTHON", "python3"), "-m", "venv", str(path)], check=True)
    pip = str(path / "bin" / "pip")
    # torch first and alone, so pip takes the CPU wheel on disk instead of resolving a CUDA build
    subprocess.run([pip, "install", "-q", "torch==2.13.0"], check=True)
    subprocess.run([pip, "install", "-q", "-c", str(shared_bench / "requirements" / lock), *packages], check=True)
    out = subprocess.run([str(path / "bin" / "python"), "-c", "import torch; print(torch.__version__)"],
                         capture_output=True, text=True, check=True).stdout.strip()
    if "+cpu" not in out:
        raise SystemExit(f"{path} got torch {out}, not the CPU build")
    return path


def install_harness(args: argparse.Namespace) -> Path:
    """A writable copy of ../shared/bench under --work (code copied at run time; runs/ kept between runs)."""
    src = args.shared / "bench"
    if not (src / "bench.py").is_file():
        raise SystemExit(f"no harness at {src}; pass --shared")
    work = args.work
    harness = work / "harness"
    (harness / "peers").mkdir(parents=True, exist_ok=True)
    (harness / "requirements").mkdir(exist_ok=True)
    for pattern, dest in (("*.py", harness), ("*.sh", harness), ("README.md", harness),
                          ("peers/*", harness / "peers"), ("requirements/*", harness / "requirements")):
        for f in src.glob(pattern):
            target = dest / f.name
            if target.exists():
                target.chmod(0o644)
            shutil.copyfile(f, target)
    # the harness' scripts look for ../models and ../data, or ../shared/{models,data}
    link = work / "shared"
    if link.is_symlink() or link.exists():
        if link.resolve() != args.shared.resolve():
            link.unlink()
    if not link.exists():
        link.symlink_to(args.shared.resolve())
    spec = json.loads((ROOT / "bench" / "peers" / "team.json").read_text())
    spec["defaults"].update(repo=str(ROOT), team_seed=str(args.team_seed))
    (harness / "peers" / "team.json").write_text(json.dumps(spec, indent=2))
    # ours with --packing: the same converted checkpoint, data and examples per step, packed into one row
    packed = {k: v for k, v in spec.items() if k not in ("convert", "prepare")}
    packed.update(name="team_packed", description="finetune/lora.py --packing true; otherwise as team.json",
                  ckpt="{bench}/runs/ckpt/team/{model_name}",
                  finetune=spec["finetune"].replace("{work}/", "{bench}/runs/ckpt/team/")
                  .replace(" --packing false ", " --packing true "))
    assert "--packing true" in packed["finetune"], "team.json's finetune command changed: update team_packed"
    (harness / "peers" / "team_packed.json").write_text(json.dumps(packed, indent=2))
    venv_dir = harness / ".venvs"
    venv_dir.mkdir(exist_ok=True)
    targets = {"litgpt": ensure_venv("litgpt", args.venvs, src, args.make_venvs),
               "hf": ensure_venv("hf", args.venvs, src, args.make_venvs),
               "team": args.team_venv}
    for name, target in targets.items():
        if not (target / "bin" / "python").exists():
            raise SystemExit(f"venv {name}: {target}/bin/python not found")
        p = venv_dir / name
        if p.is_symlink() or p.exists():
            p.unlink()
        p.symlink_to(target.resolve() if name != "team" else target.absolute())
    return harness


def bench(harness: Path, *argv: str, capture: Path | None = None) -> None:
    cmd = [str(harness / ".venvs" / "hf" / "bin" / "python"), str(harness / "bench.py"), *argv]
    print("+ bench.py " + " ".join(argv), flush=True)
    if capture:
        with open(capture, "w") as f:
            subprocess.run(cmd, cwd=harness, check=True, stdout=f, stderr=subprocess.STDOUT)
    else:
        subprocess.run(cmd, cwd=harness, check=True)


def harness_env() -> dict:
    """The harness' ENV (bench.py), for the commands run here rather than through bench.py."""
    return {"OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2", "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "true", "TQDM_DISABLE": "1"}


def setup(harness: Path, args: argparse.Namespace) -> None:
    runs = harness / "runs"
    model = f"bench-llama-{args.size}"
    need = []
    if not (runs / "ckpt" / "litgpt" / model / "lit_model.pth").is_file():
        need.append("litgpt")
    if not (runs / "ckpt" / "team" / model / "lit_model.safetensors").is_file():
        need.append("team")
    have_base = (runs / "ckpt" / "hf" / model / "model.safetensors").is_file() and (runs / "data" / "meta.json").is_file()
    if need or not have_base or args.force_setup:
        bench(harness, "setup", "--sizes", args.size, "--peers", ",".join(need or ["hf_peft"]),
              *(["--force"] if args.force_setup else []))
    meta = json.loads((runs / "ckpt" / "hf" / model / "bench_meta.json").read_text())
    if "llama2" not in meta["tokenizer"]:
        raise SystemExit(f"the checkpoint was made without the Llama 2 tokenizer ({meta['tokenizer']}): is --shared right?")
    # our training data, prepared for this checkpoint (a few seconds; redone every invocation)
    out = runs / "ckpt" / "team" / "data_alpaca1k"
    cmd = [str(harness / ".venvs" / "team" / "bin" / "python"), str(ROOT / "bench" / "team_adapter.py"), "prep",
           "--checkpoint_dir", str(runs / "ckpt" / "team" / model), "--data_file",
           str(runs / "data" / "alpaca1k" / "train.json"), "--max_seq_length", str(args.seq),
           "--mask_inputs", str(args.mask_inputs).lower(), "--peer_order_seed", "42", "--team_seed",
           str(args.team_seed), "--out", str(out)]
    print("+ team_adapter.py prep (training data for finetune/lora.py)", flush=True)
    subprocess.run(cmd, check=True, env={**os.environ, **harness_env()}, stdout=subprocess.DEVNULL)
    ours = json.loads((out / "prep.json").read_text())
    print(f"  ours: {ours['n']} training examples, {ours['tokens_total']} tokens, ids sha256 {ours['ids_sha256'][:12]}",
          flush=True)


# ----------------------------------------------------------------------------------------------- machine load

BUSY = re.compile(r"finetune/lora\.py|pytest|bench\.py (train|prep)|litgpt finetune|run_hf_peft\.py")


def others_running() -> list[str]:
    mine = {os.getpid(), os.getppid()}
    out = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True).stdout
    found = []
    for line in out.splitlines():
        pid, _, cmd = line.strip().partition(" ")
        if int(pid) not in mine and BUSY.search(cmd) and "finetune_throughput.py" not in cmd:
            found.append(line.strip()[:160])
    return found


class LoadSampler:
    """Every `interval` s during the timed runs: the load average and the other heavy jobs seen (for the report)."""

    def __init__(self, interval: float = 15.0) -> None:
        import threading

        self.samples: list[dict] = []
        self.stop = threading.Event()
        self.interval = interval
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set():
            self.samples.append({"t": time.time(), "load1": float(loadavg().split()[0]), "others": others_running()})
            self.stop.wait(self.interval)

    def __enter__(self) -> "LoadSampler":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def wait_until_quiet(max_wait: float, max_load: float) -> dict:
    """Wait (polling every 60 s, at most max_wait s) until no other training/test job runs and the 1-min load
    average is below max_load (we run nothing at this point, so that load is someone else's)."""
    start = time.monotonic()
    first = others_running()
    note = {"load_at_check": loadavg(), "others_at_check": first}
    while ((busy := others_running()) or float(loadavg().split()[0]) >= max_load) and time.monotonic() - start < max_wait:
        print(f"[{time.strftime('%H:%M:%S')}] waiting: load {loadavg()}, other jobs: {busy}", flush=True)
        time.sleep(60)
    note["waited_s"] = round(time.monotonic() - start)
    note["others_at_start"] = others_running()
    note["load_at_start"] = loadavg()
    return note


# ----------------------------------------------------------------------------------------------- report


def mmm(vals, f="{:.2f}") -> str:
    vals = [x for x in vals if x is not None]
    if not vals:
        return "-"
    return f"{f.format(min(vals))} / {f.format(statistics.median(vals))} / {f.format(max(vals))}"


def read_steps(harness: Path, rec: dict) -> list[dict]:
    path = harness / rec["dir"] / "steps_normalized.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.is_file() else []


def stepmed_real(harness: Path, rec: dict) -> float | None:
    meas = [s for s in read_steps(harness, rec) if s["step"] > rec["warmup_steps"] and s.get("tokens_real")]
    return statistics.median(s["tokens_real"] / s["time_s"] for s in meas) if meas else None


def versions(harness: Path) -> dict:
    code = ("import importlib.metadata as m, json, torch\n"
            "out={'torch': torch.__version__, 'threads_default': torch.get_num_threads()}\n"
            "for p in ('litgpt','lightning','transformers','peft','datasets','lit_gpt'):\n"
            "    try: out[p]=m.version(p)\n"
            "    except Exception: pass\n"
            "print(json.dumps(out))")
    res = {}
    for v in ("litgpt", "hf", "team"):
        r = subprocess.run([str(harness / ".venvs" / v / "bin" / "python"), "-c", code], capture_output=True,
                           text=True, env={**os.environ, **harness_env()})
        res[v] = json.loads(r.stdout) if r.returncode == 0 else {"error": r.stderr[-200:]}
    return res


def report(harness: Path, tag: str, notes: dict | None = None) -> str:
    results = harness / "runs" / "results.jsonl"
    recs = [json.loads(x) for x in results.read_text().splitlines() if x.strip()] if results.is_file() else []
    tr = [r for r in recs if r["kind"] == "train" and r.get("tag") == tag]
    ok = [r for r in tr if r["rc"] == 0 and "s_per_step" in r]
    failed = [r for r in tr if r not in ok]
    lines = [f"## LoRA training throughput, tag `{tag}`", ""]
    if ok:
        r0 = ok[0]
        lines += [f"Model `{r0['size']}`, micro-batch {r0['mbs']}, max length {r0['seq']}, fp32, 2 threads, "
                  f"{r0['steps_cfg']} optimizer steps of which the first {r0['warmup_steps']} are not timed, "
                  f"LoRA r {r0['lora_r']}. Values are min / median / max over repeats.", ""]
    targets_order = [t for t in ("qv", "all") if any(r["targets"] == t for r in ok)]
    peers = [p for p in PEERS if any(r["peer"] == p for r in ok)]
    lines += ["| LoRA | tool | n | tok/s real | tok/s real, per-step median | s/step | peak RSS MB | RSS in training MB "
              "| loss step 1 | final loss | start-up s | wall s |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for t in targets_order:
        for p in peers:
            g = [r for r in ok if (r["targets"], r["peer"]) == (t, p)]
            if not g:
                continue
            lines.append(f"| {t} | {f'**{LABEL[p]}**' if p in LABEL else p} | {len(g)} "
                         f"| {mmm([r.get('tok_s_real') for r in g], '{:.0f}')} "
                         f"| {mmm([stepmed_real(harness, r) for r in g], '{:.0f}')} "
                         f"| {mmm([r['s_per_step'] for r in g], '{:.3f}')} "
                         f"| {mmm([r['maxrss_mb'] for r in g], '{:.0f}')} "
                         f"| {mmm([r.get('rss_train_peak_mb') for r in g], '{:.0f}')} "
                         f"| {mmm([r['loss_step1'] for r in g], '{:.4f}')} "
                         f"| {mmm([r['final_loss'] for r in g], '{:.4f}')} "
                         f"| {mmm([r.get('startup_s') for r in g], '{:.1f}')} "
                         f"| {mmm([r['wall_s'] for r in g], '{:.0f}')} |")
    lines += ["", "### Ours / peer, paired by repeat (min / median / max over repeats)", "",
              "tok/s real ratio > 1: ours faster. s/step and peak RSS ratios < 1: ours shorter / smaller. "
              "Per-step paired: median (IQR) over all timed steps of all repeats of our real tok/s / the peer's on the same "
              "step (same examples; token counts within 1 per example, see the script's docstring).", "",
              "| LoRA | ours | vs | pairs | tok/s real ratio | s/step ratio | peak RSS ratio | RSS in training ratio "
              "| per-step paired speed ratio (IQR) | steps paired |", "|---|---|---|---|---|---|---|---|---|---|"]
    comparisons = [(o, p) for o in OURS for p in peers if p != o and not (o == "team" and p == "team_packed")]
    for t in targets_order:
        for o, p in comparisons:
            pairs = []
            for r in ok:
                if (r["targets"], r["peer"]) != (t, o):
                    continue
                m = [q for q in ok if (q["targets"], q["peer"], q["repeat"]) == (t, p, r["repeat"])]
                if m:
                    pairs.append((r, m[0]))
            if not pairs:
                continue
            step_ratios, matched, total = [], 0, 0
            for r, q in pairs:
                sq = {s["step"]: s for s in read_steps(harness, q)}
                for s in read_steps(harness, r):
                    if s["step"] <= r["warmup_steps"] or s["step"] not in sq:
                        continue
                    total += 1
                    y = sq[s["step"]]
                    # the same examples: real token counts within one token per example (docstring, item 3);
                    # padded counts are not compared, packing changes them by design
                    if abs(s["tokens_real"] - y["tokens_real"]) <= r["mbs"]:
                        matched += 1
                        step_ratios.append((s["tokens_real"] / s["time_s"]) / (y["tokens_real"] / y["time_s"]))
            if len(step_ratios) > 1:
                qs = statistics.quantiles(step_ratios, n=4)
                per_step = f"{statistics.median(step_ratios):.2f} ({qs[0]:.2f}-{qs[2]:.2f})"
            else:
                per_step = "-"
            rt = [(a["rss_train_peak_mb"] / b["rss_train_peak_mb"]) for a, b in pairs
                  if a.get("rss_train_peak_mb") and b.get("rss_train_peak_mb")]
            lines.append(f"| {t} | {LABEL[o]} | {LABEL.get(p, p)} | {len(pairs)} "
                         f"| {mmm([a['tok_s_real'] / b['tok_s_real'] for a, b in pairs])} "
                         f"| {mmm([a['s_per_step'] / b['s_per_step'] for a, b in pairs])} "
                         f"| {mmm([a['maxrss_mb'] / b['maxrss_mb'] for a, b in pairs if a['maxrss_mb'] and b['maxrss_mb']])} "
                         f"| {mmm(rt)} | {per_step} | {matched}/{total} steps |")
    if failed:
        lines += ["", "### Failed runs", ""]
        lines += [f"- {r['peer']} {r['targets']} rep{r['repeat']} rc={r['rc']} ({r['dir']}): "
                  f"{(r.get('tail') or r.get('parse_error') or '')[-300:]!r}" for r in failed]
    if ok:
        order = sorted(ok, key=lambda r: r["time"])
        lines += ["", "Run order: " + ", ".join(f"{r['peer']}/{r['targets']}/{r['repeat']}" for r in order)]
    samples = (notes or {}).get("load_samples", [])
    if ok and samples:
        lines += ["", "### Machine load during each run (sampled every 15 s; our own run adds ~2)", "",
                  "| run | load1 min / median / max | other heavy jobs seen |", "|---|---|---|"]
        for r in sorted(ok, key=lambda r: r["time"]):
            during = [x for x in samples if r["time"] - r["wall_s"] <= x["t"] <= r["time"]]
            others = sorted({o.split(" ", 1)[1][:70] for x in during for o in x["others"]})
            lines.append(f"| {r['peer']}/{r['targets']}/{r['repeat']} | {mmm([x['load1'] for x in during])} "
                         f"| {'; '.join(others) or 'none'} |")
    if notes:
        env = {k: v for k, v in notes.items() if k != "load_samples"}
        lines += ["", "### Environment", "", "```", json.dumps(env, indent=1), "```"]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------------- main


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shared", type=Path, default=ROOT.parent / "shared", help="the shared folder (has bench/)")
    p.add_argument("--work", type=Path, default=CACHE / "bench", help="where the harness copy and its runs/ live")
    p.add_argument("--venvs", type=Path, default=CACHE / "venvs", help="holds the peers' venvs litgpt/ and hf/")
    p.add_argument("--team_venv", type=Path, default=ROOT / ".venv", help="venv with lit_gpt installed")
    p.add_argument("--make_venvs", action="store_true", help="create missing peer venvs (setup_venvs.sh's commands)")
    p.add_argument("--peers", default=",".join(PEERS))
    p.add_argument("--targets", default="qv,all")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--first_repeat", type=int, default=0, help="add repeats to an existing tag")
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--warmup", type=int, default=5, help="first N steps not timed")
    p.add_argument("--size", default="small", choices=["small", "tiny"])
    p.add_argument("--seq", type=int, default=512)
    p.add_argument("--team_seed", type=int, default=1337, help="our --seed (LoRA init, dropout, data order)")
    p.add_argument("--mask_inputs", action="store_true", help="mask the prompt in our data (our default elsewhere)")
    p.add_argument("--tag", default=None)
    p.add_argument("--max_wait", type=float, default=900, help="seconds to wait for other heavy jobs to end")
    p.add_argument("--max_load", type=float, default=1.5, help="wait while the 1-min load average is above this")
    p.add_argument("--force_setup", action="store_true")
    p.add_argument("--report_only", action="store_true")
    args = p.parse_args()
    tag = args.tag or time.strftime("team-%Y%m%d-%H%M%S")

    harness = install_harness(args)
    out_md = harness / "runs" / f"finetune_throughput_{tag}.md"
    notes_path = harness / "runs" / f"finetune_throughput_{tag}.env.json"
    if args.report_only:
        notes = json.loads(notes_path.read_text()) if notes_path.is_file() else None
        text = report(harness, tag, notes)
        out_md.write_text(text)
        print(text)
        return

    setup(harness, args)
    notes = json.loads(notes_path.read_text()) if notes_path.is_file() else {"sessions": []}
    session = {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "targets": args.targets, "repeats": args.repeats,
               "first_repeat": args.first_repeat, **wait_until_quiet(args.max_wait, args.max_load)}
    t0 = time.monotonic()
    sampler = LoadSampler()
    with sampler:
        bench(harness, "train", "--tag", tag, "--peers", args.peers, "--targets", args.targets, "--repeats",
          str(args.repeats), "--first-repeat", str(args.first_repeat), "--steps", str(args.steps), "--warmup",
          str(args.warmup), "--size", args.size, "--seq", str(args.seq))
    session.update(minutes=round((time.monotonic() - t0) / 60, 1), load_at_end=loadavg(),
                   others_at_end=others_running())
    notes["sessions"].append(session)
    notes.setdefault("load_samples", []).extend(sampler.samples)
    notes.update(machine=f"{os.cpu_count()} CPUs, {platform.processor() or platform.machine()}, "
                         f"{_cpu_model()}, {_mem_gb()} GiB, Python {platform.python_version()}",
                 versions=versions(harness), harness=str(harness), shared=str(args.shared.resolve()),
                 lit_gpt_commit=_git_head(), team_seed=args.team_seed, mask_inputs=args.mask_inputs)
    notes_path.write_text(json.dumps(notes, indent=1))
    bench(harness, "report", "--tag", tag, capture=harness / "runs" / f"harness_report_{tag}.log")
    text = report(harness, tag, notes)
    out_md.write_text(text)
    print(text)
    print(f"(written to {out_md}; the harness' own report, ratios vs hf_peft: {harness / 'runs' / 'report.md'})")


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "?"


def _mem_gb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal"):
            return round(int(line.split()[1]) / 2**20)
    return 0


def _git_head() -> str:
    r = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--", "lit_gpt", "finetune", "scripts"],
                           capture_output=True, text=True).stdout.strip()
    return r.stdout.strip() + (" (+ uncommitted changes in lit_gpt/finetune/scripts)" if dirty else "")


if __name__ == "__main__":
    main()
