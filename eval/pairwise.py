"""Judge two answer files to the same instructions with a local instruction model, AlpacaEval-style.

    python eval/pairwise.py --answers_a out/eval/lima/epoch-3 --answers_b out/eval/base \
        --judge_checkpoint_dir checkpoints/HuggingFaceTB/SmolLM2-135M-Instruct --out_dir out/eval/epoch-3-vs-base

Every pair is judged in both orders; writes pairwise.md (numbers and examples side by side), pairwise.json and
verdicts.jsonl (resumable). See lit_gpt/eval/judge.py for the statistics.
"""
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a plain checkout, no install needed

from lit_gpt.eval.answers import model_identity
from lit_gpt.eval.instr_pairwise import (REPORT_NAME, VERDICTS_NAME, answers_path, build_report,
                                         check_same_instructions, judge_all, read_answers, verdict_settings,
                                         write_report)
from lit_gpt.eval.instructions import JsonlStore
from lit_gpt.eval.judge import PairwiseJudge
from lit_gpt.generate import require_chat_template
from lit_gpt.utils import cli, default_precision, precision_dtype, require_dir, resolve_checkpoint_dir


def main(
    answers_a: Path,
    answers_b: Path,
    judge_checkpoint_dir: Path,
    out_dir: Path = Path("out/eval/pairwise"),
    batch_size: int = 8,
    max_new_tokens: int = 16,
    bootstrap_samples: int = 2000,
    seed: int = 1234,
    examples: int = 5,
    precision: str | None = None,
) -> dict[str, Any]:
    """Win rate of answers a over answers b, judged by a local chat model in both orders.

    Args:
        answers_a: An answers.jsonl from eval/answer.py (or the folder holding it).
        answers_b: Another one, answering the same instructions.
        judge_checkpoint_dir: A converted instruction (chat) model; it must have a chat template.
        out_dir: Where pairwise.md, pairwise.json and verdicts.jsonl go.
        batch_size: Pairs judged together.
        max_new_tokens: Longest judge reply; the verdict comes first, so a few tokens suffice.
        bootstrap_samples: Resamples for the 95% intervals (0: none).
        seed: Seed of the bootstrap.
        examples: Instructions shown side by side in pairwise.md.
        precision: Lightning Fabric precision (default: bf16-true on a GPU that supports it, else 32-true).
    """
    import lightning as L

    from lit_gpt.checkpoint import load_model
    from lit_gpt.tokenizer import Tokenizer

    path_a, path_b = answers_path(answers_a), answers_path(answers_b)
    a, b = read_answers(path_a), read_answers(path_b)
    check_same_instructions(a, b, path_a, path_b)
    judge_dir = require_dir(resolve_checkpoint_dir(judge_checkpoint_dir), "judge checkpoint folder",
                            "Download and convert an instruction model first: python scripts/download.py --repo_id ...")
    tokenizer = Tokenizer(judge_dir)
    require_chat_template(tokenizer)
    precision = precision or default_precision()
    fabric = L.Fabric(devices=1, precision=precision)
    store = JsonlStore(out_dir / VERDICTS_NAME, verdict_settings(model_identity(judge_dir, None), precision,
                                                                 max_new_tokens, a, b), key_field="key")
    if any(f"{k}:{order}" not in store for k in a for order in ("ab", "ba")):
        model = load_model(judge_dir, device=fabric.device, dtype=precision_dtype(precision)).eval()
        judge = PairwiseJudge(model, tokenizer, max_new_tokens)
        with fabric.autocast():
            judge_all(judge, a, b, store, batch_size)
    report = build_report(a, b, path_a, path_b, store, judge_dir.name, bootstrap_samples, seed)
    write_report(out_dir, report, a, b, examples)
    s = report["summary"]
    wr = "n/a" if s["win_rate"] is None else f"{100 * s['win_rate']:.1f}%"
    print(f"win rate of a over b: {wr} ({s['judged']} of {s['instructions']} instructions judged, "
          f"{s['unparseable_verdicts']} of {s['verdicts']} verdicts unparseable) -> {out_dir / REPORT_NAME}",
          file=sys.stderr)
    return report


if __name__ == "__main__":
    cli(main)
