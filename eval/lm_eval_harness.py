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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a plain checkout, no install needed

from lit_gpt.eval.harness import evaluate
from lit_gpt.utils import cli

if __name__ == "__main__":
    cli(evaluate)
