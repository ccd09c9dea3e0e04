"""Benchmarks through EleutherAI's lm-evaluation-harness, on a converted checkpoint and its LoRA adapters.

    python eval/lm_eval_harness.py --checkpoint_dir checkpoints/HuggingFaceTB/SmolLM2-135M-Instruct \
        --tasks hellaswag,arc_easy,truthfulqa_mc2,mmlu --out_dir out/eval/smollm2
    python eval/lm_eval_harness.py --checkpoint_dir ... --lora_path 'out/lora/epoch-*/lit_lora.safetensors' \
        --tasks arc_easy --out_dir out/eval/epochs          # the base model, then each epoch's adapter
    python eval/lm_eval_harness.py --checkpoint_dir ... --include_path my_tasks/ --tasks my_task   # offline

Needs `pip install -e ".[eval]"`. Writes OUT_DIR/results.json (lm-eval's schema plus a "lit_gpt" entry with the
model, adapter, data files and versions) and OUT_DIR/results.md, and prints the table (docs/evaluation.md).
"""
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a plain checkout, no install needed

from lit_gpt.utils import cli


def main(
    checkpoint_dir: Path,
    tasks: str,
    out_dir: Path = Path("out/eval"),
    lora_path: list[str] | None = None,
    num_fewshot: int | None = None,
    batch_size: int = 32,
    limit: float | None = None,
    precision: str | None = None,
    include_path: Path | None = None,
    max_length: int | None = None,
    bootstrap_iters: int = 100000,
    log_samples: bool = False,
    apply_chat_template: bool = False,
) -> list[tuple[str, dict[str, Any]]]:
    """Evaluate a checkpoint, with or without LoRA adapters, on lm-evaluation-harness tasks.

    Args:
        checkpoint_dir: A converted checkpoint (`checkpoints/ORG/NAME` or just `ORG/NAME`).
        tasks: lm-eval task, group or tag names, comma-separated (hellaswag,arc_easy,truthfulqa_mc2,mmlu).
        out_dir: Where results.json and results.md go (one subfolder per model when there are several).
        lora_path: Adapters from finetune/lora.py, applied in memory: files, folders holding lit_lora.safetensors,
            or quoted glob patterns ('out/lora/epoch-*/lit_lora.safetensors'). Several: the base model is
            evaluated first, then each adapter; the table has a row per model.
        num_fewshot: Examples in each prompt (default: each task's own setting).
        batch_size: Loglikelihood requests per forward pass, packed into one row (no padding); longest first.
        limit: Evaluate only this many documents per task (a fraction below 1.0: that share); for quick checks.
        precision: 32-true, bf16-true, 16-true, bf16-mixed or 16-mixed (default: bf16-true on a GPU that supports
            it, else 32-true).
        include_path: A folder (or YAML file) of your own task definitions, e.g. over local JSON Lines files.
        max_length: Context requests are cut to, from the left (default: the model's block_size).
        bootstrap_iters: Bootstrap resamples for the stderr of metrics without a closed form (0: no stderr).
        log_samples: Also write each document's requests and answers to samples_TASK.jsonl.
        apply_chat_template: Wrap each prompt in the checkpoint's chat template (for instruction-tuned models;
            few-shot examples become earlier turns, as lm-eval does it).
    """
    from lit_gpt.eval.harness import evaluate

    names = [name.strip() for name in tasks.split(",") if name.strip()]
    return evaluate(checkpoint_dir, names, out_dir, lora_paths=lora_path, num_fewshot=num_fewshot,
                    batch_size=batch_size, limit=limit, precision=precision, include_path=include_path,
                    max_length=max_length, bootstrap_iters=bootstrap_iters, log_samples=log_samples,
                    apply_chat_template=apply_chat_template)


if __name__ == "__main__":
    cli(main)
