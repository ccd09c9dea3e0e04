"""Does data selection help? Full pool vs random-k vs longest-k vs IFD-k, at equal compute, over seeds.

    python bench/selection_experiment.py --checkpoint_dir checkpoints/HuggingFaceTB/SmolLM2-135M-Instruct \
        --data_dir data/alpaca --pool 400 --k 100 --steps 24 --seeds 1 2 3

Every step is the toolkit's own command line, as a user would run it:
1. the pool: `select_dataset.py --policy random --k POOL` from the prepared data (its whole test split comes along
   and is the common validation set of every arm);
2. `score_dataset.py` on the pool with the same local model (IFD, losses; resumable);
3. the arms, each a `select_dataset.py` run on the scored pool: `random` (a fresh draw per seed), `longest`
   (longest responses, "Long Is More") and `ifd` (highest IFD below 1, Cherry LLM / Superfiltering); `full` is the
   pool itself;
4. `finetune/lora.py` on every arm and seed with the same optimizer steps and batch size (equal examples seen:
   `steps x batch_size`; the full pool is then seen fewer times than a k-subset), validation loss on the pool's
   test split before and after; then `generate/base.py` with each seed-1 adapter on `--dev_prompts`.

The defaults are sized to finish on 2 CPU cores in under an hour with SmolLM2-135M (scoring 400 + the test
split, then 12 short runs); scale `--pool`, `--k` and `--steps` up on a GPU.

Results go to `--out_dir` (default out/selection): results.json, results.md (the table) and results.png (final
validation loss per arm, one dot per seed). Finished runs are kept and skipped when the command is run again.
Validation loss is a proxy only (LIMA found it a poor guide to answer quality): read the answers in results.md too.
"""
import csv
import json
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lit_gpt.training import read_dev_prompts  # noqa: E402
from lit_gpt.utils import cli, resolve_checkpoint_dir  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ARMS = ("full", "random", "longest", "ifd")


def run(*args: str, log: Path) -> str:
    cmd = [sys.executable, *args]
    print("+ " + " ".join(args), flush=True)
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text(result.stdout + result.stderr)
    if result.returncode:
        raise SystemExit(f"{args[0]} failed (exit {result.returncode}); see {log}:\n{result.stderr[-2000:]}")
    return result.stdout


def val_losses(metrics: Path) -> tuple[float, float, int]:
    """Validation loss before training, after the last step, and real tokens trained on, from metrics.csv."""
    with metrics.open(newline="") as f:
        rows = list(csv.DictReader(f))
    val = [(int(r["step"]), float(r["val_loss"])) for r in rows if r.get("val_loss")]
    tokens = sum(int(r["tokens_real"]) for r in rows if r.get("tokens_real"))
    return val[0][1], val[-1][1], tokens


def main(checkpoint_dir: Path, data_dir: Path, out_dir: Path = Path("out/selection"), pool: int = 400,
         k: int = 100, steps: int = 24, batch_size: int = 8, micro_batch_size: int = 4,
         learning_rate: float = 3e-4, seeds: list[int] = [1, 2, 3], arms: list[str] = list(ARMS),
         eval_iters: int = 25, dev_prompts: Path = ROOT / "examples" / "dev_prompts.json",
         max_new_tokens: int = 80) -> None:
    """Run the experiment (see the module docstring) and write the table and plot.

    Args:
        checkpoint_dir: The model to score with and to finetune.
        data_dir: A prepared dataset for that model's tokenizer (e.g. scripts/prepare_alpaca.py output).
        out_dir: Where the pool, arms, runs and results go.
        pool: Train examples drawn at random as the pool every arm selects from.
        k: Train examples each selection keeps.
        steps: Optimizer steps per run, the same for every arm.
        batch_size: Examples per optimizer step.
        micro_batch_size: Examples per forward/backward pass.
        learning_rate: Peak learning rate (warm-up then cosine, as finetune/lora.py does).
        seeds: Training seeds (and the random arm's draw) per arm.
        arms: Which arms to run: full, random, longest, ifd.
        eval_iters: Validation micro-batches: the first eval_iters x micro_batch_size test examples, the same
            ones for every arm.
        dev_prompts: Instructions every arm's first-seed adapter answers (greedy), as finetune/lora.py's
            --dev_prompts reads them.
        max_new_tokens: Length of the dev-prompt answers.
    """
    prompts = read_dev_prompts(dev_prompts)
    checkpoint_dir = resolve_checkpoint_dir(checkpoint_dir)
    out_dir = out_dir.resolve()
    logs = out_dir / "logs"
    pool_dir = out_dir / "data" / "pool"
    if not (pool_dir / "meta.json").is_file():
        run("scripts/select_dataset.py", "--data_dir", str(data_dir), "--policy", "random", "--k", str(pool),
            "--seed", "0", "--destination_path", str(pool_dir), log=logs / "pool.log")
    if not (pool_dir / "train" / "scores.npy").is_file():
        run("scripts/score_dataset.py", "--data_dir", str(pool_dir), "--checkpoint_dir", str(checkpoint_dir),
            "--embeddings", "false", log=logs / "score.log")

    results = []
    for arm in arms:
        for seed in seeds:
            arm_dir = pool_dir if arm == "full" else out_dir / "data" / (f"{arm}-{seed}" if arm == "random" else arm)
            if not (arm_dir / "meta.json").is_file():
                run("scripts/select_dataset.py", "--data_dir", str(pool_dir), "--policy", arm, "--k", str(k),
                    "--seed", str(seed), "--destination_path", str(arm_dir), log=logs / f"select-{arm_dir.name}.log")
            run_dir = out_dir / "runs" / f"{arm}-{seed}"
            if not (run_dir / "lit_lora.safetensors").is_file():
                run("finetune/lora.py", "--checkpoint_dir", str(checkpoint_dir), "--data_dir", str(arm_dir),
                    "--out_dir", str(run_dir), "--precision", "32-true", "--seed", str(seed),
                    "--batch_size", str(batch_size), "--micro_batch_size", str(micro_batch_size),
                    "--max_iters", str(steps * batch_size // micro_batch_size), "--learning_rate", str(learning_rate),
                    "--eval_interval", str(10 * steps), "--eval_iters", str(eval_iters),
                    "--save_interval", str(10 * steps), log=logs / f"finetune-{arm}-{seed}.log")
            before, after, tokens = val_losses(run_dir / "metrics.csv")
            results.append({"arm": arm, "seed": seed, "examples": _train_count(arm_dir), "val_before": before,
                            "val_after": after, "tokens_trained": tokens})
            print(f"  {arm} seed {seed}: val {before:.4f} -> {after:.4f} ({tokens:,} tokens trained)", flush=True)

    answers = {}
    style = ["--prompt_style", json.loads((pool_dir / "meta.json").read_text())["prompt_style"]]
    for arm in ["base", *arms]:  # base: the model before finetuning, in the data's prompt style
        adapter = out_dir / "runs" / f"{arm}-{seeds[0]}" / "lit_lora.safetensors"
        adapter = [] if arm == "base" else ["--lora_path", str(adapter)]
        answers[arm] = [run("generate/base.py", "--checkpoint_dir", str(checkpoint_dir), *adapter, *style,
                            "--prompt", prompt, "--top_k", "1", "--max_new_tokens", str(max_new_tokens),
                            log=logs / f"generate-{arm}.log").strip() for prompt in prompts]
    (out_dir / "results.json").write_text(json.dumps({"results": results, "answers": answers}, indent=1))
    table = _table(results, arms, pool, k, steps, batch_size, prompts, answers)
    (out_dir / "results.md").write_text(table)
    _plot(results, arms, out_dir / "results.png")
    print(table)


def _train_count(data_dir: Path) -> int:
    return int(json.loads((data_dir / "meta.json").read_text())["samples"]["train"])


def _table(results: list[dict], arms: list[str], pool: int, k: int, steps: int, batch_size: int,
           prompts: list[str], answers: dict[str, list[str]]) -> str:
    lines = [f"Pool {pool} examples, k = {k}, {steps} optimizer steps x {batch_size} examples for every arm.", "",
             "| arm | train examples | seeds | val loss before | val loss after (mean ± sd; per seed) | tokens trained |",
             "|---|---|---|---|---|---|"]
    for arm in arms:
        g = [r for r in results if r["arm"] == arm]
        after = [r["val_after"] for r in g]
        sd = statistics.stdev(after) if len(after) > 1 else 0.0
        lines.append(f"| {arm} | {g[0]['examples']} | {len(g)} | {g[0]['val_before']:.4f} | "
                     f"{statistics.fmean(after):.4f} ± {sd:.4f} ({', '.join(f'{x:.4f}' for x in after)}) | "
                     f"{statistics.fmean(r['tokens_trained'] for r in g):,.0f} |")
    lines += ["", "Greedy answers of the base model and of each arm's first-seed adapter:", ""]
    for i, prompt in enumerate(prompts):
        lines += [f"**{prompt}**", ""] + [f"- *{arm}*: {text[i][:600]!r}" for arm, text in answers.items()] + [""]
    return "\n".join(lines) + "\n"


def _plot(results: list[dict], arms: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for i, arm in enumerate(arms):
        ys = [r["val_after"] for r in results if r["arm"] == arm]
        ax.scatter([i] * len(ys), ys, color="C0")
        ax.hlines(statistics.fmean(ys), i - 0.2, i + 0.2, color="C1")
    ax.set_xticks(range(len(arms)), arms)
    ax.set_ylabel("validation loss after finetuning")
    ax.set_title("Equal steps x examples: one dot per seed, bar = mean")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    cli(main)
