"""Two answer files to the same instructions, judged pair by pair in both orders; the report in Markdown and JSON.

Files (`eval/pairwise.py` writes them into its --out_dir):

    verdicts.jsonl     one line per instruction and order ("ab": a shown first, "ba": b first): the verdict ("A",
                       "B", "tie" or null when unparseable) and the judge's reply; appended per batch, so a killed
                       run resumes where it stopped
    pairwise.json      the numbers (see `lit_gpt.eval.judge.win_rate_summary`), per-instruction preferences, and the
                       reference loss of each side where eval/answer.py wrote one
    pairwise.md        the same numbers, and examples side by side
"""
from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lit_gpt.eval.answers import ANSWERS_NAME, REFERENCE_LOSS_NAME, SETTINGS_NAME
from lit_gpt.eval.instructions import JsonlStore, read_jsonl, sha256_json
from lit_gpt.eval.judge import (ORDERS, PAIRWISE_PROMPT, PairwiseJudge, position_bias_warning, preference,
                                win_rate_summary)
from lit_gpt.utils import UserError, atomic_write_json, atomic_write_text, read_json

VERDICTS_NAME = "verdicts.jsonl"
REPORT_NAME = "pairwise.md"
REPORT_JSON_NAME = "pairwise.json"


def answers_path(path: Path) -> Path:
    """An answers file, or a folder eval/answer.py wrote (holding answers.jsonl)."""
    return path / ANSWERS_NAME if path.is_dir() else path


def read_answers(path: Path) -> dict[str, dict[str, Any]]:
    """The answers of an answers.jsonl by instruction id, in file order; refuses a file that is not one, or mixes
    runs."""
    records = read_jsonl(path)
    if not records:
        raise UserError(f"{path} holds no answers; run eval/answer.py to finish it")
    missing = next((r for r in records if not {"id", "instruction", "output"} <= set(r)), None)
    if missing is not None:
        raise UserError(f"{path}: a record without id/instruction/output ({', '.join(missing)}); pass an "
                        "answers.jsonl written by eval/answer.py")
    if len({r.get("settings") for r in records}) > 1:
        raise UserError(f"{path} mixes answers made with different settings; regenerate it with eval/answer.py")
    return {r["id"]: r for r in records}


def check_same_instructions(a: dict[str, Any], b: dict[str, Any], path_a: Path, path_b: Path) -> None:
    """Refuse (one line) two answer files that do not answer exactly the same instructions."""
    only_a, only_b = [k for k in a if k not in b], [k for k in b if k not in a]
    if only_a or only_b:
        example = a[only_a[0]] if only_a else b[only_b[0]]
        raise UserError(
            f"{path_a} and {path_b} answer different instruction sets ({len(a)} and {len(b)} answers; "
            f"{len(only_a)} only in the first, {len(only_b)} only in the second, e.g. row {example.get('row')}: "
            f"{example['instruction'][:60]!r}); answer the same --data_file with both (is one unfinished?)"
        )


def judge_all(judge: PairwiseJudge, a: dict[str, dict], b: dict[str, dict], store: JsonlStore,
              batch_size: int = 8) -> None:
    """Judge every (instruction, order) not yet in `store`, a batch at a time."""
    todo = [(key, order) for key in a for order in ORDERS if f"{key}:{order}" not in store]
    for start in range(0, len(todo), batch_size):
        batch = todo[start : start + batch_size]
        pairs = []
        for key, order in batch:
            first, second = (a[key], b[key]) if order == "ab" else (b[key], a[key])
            pairs.append((_instruction_text(a[key]), first["output"], second["output"]))
        results = judge.judge(pairs)
        store.append({"key": f"{key}:{order}", "id": key, "order": order, "verdict": verdict, "text": text}
                     for (key, order), (verdict, text) in zip(batch, results))
        print(f"judged {len(store.records)}/{2 * len(a)}", file=sys.stderr)


def _instruction_text(record: dict[str, Any]) -> str:
    return f"{record['instruction']}\n\n{record['input']}" if record.get("input") else record["instruction"]


def verdict_settings(judge_identity: dict[str, Any], precision: str, max_new_tokens: int,
                     a: dict[str, dict], b: dict[str, dict]) -> str:
    """The sha of what decides a verdict: the judge, its prompt and decoding, and both sides' answers."""
    return sha256_json({"judge": judge_identity, "prompt": PAIRWISE_PROMPT, "precision": precision,
                        "max_new_tokens": max_new_tokens,
                        "answers": [{k: r["output"] for k, r in side.items()} for side in (a, b)]})[:16]


def build_report(a: dict[str, dict], b: dict[str, dict], path_a: Path, path_b: Path, store: JsonlStore,
                 judge_name: str, bootstrap_samples: int = 2000, seed: int = 1234) -> dict[str, Any]:
    """The numbers of pairwise.json: the summary, each side's description, and every instruction's verdicts."""
    keys = list(a)
    verdicts = [{order: store.records[f"{k}:{order}"]["verdict"] for order in ORDERS} for k in keys]
    length_a = [len(a[k]["output"]) for k in keys]
    length_b = [len(b[k]["output"]) for k in keys]
    summary = win_rate_summary(verdicts, length_a, length_b, bootstrap_samples, seed)
    sides = {}
    for name, side, path in (("a", a, path_a), ("b", b, path_b)):
        first = next(iter(side.values()))
        losses, settings = path.parent / REFERENCE_LOSS_NAME, path.parent / SETTINGS_NAME
        sides[name] = {
            "answers": str(path), "generator": first.get("generator"),
            "prompt_style": read_json(settings).get("prompt_style") if settings.is_file() else None,
            "mean_words": sum(len(r["output"].split()) for r in side.values()) / len(side),
            "finished_at_eos": sum(bool(r.get("finished")) for r in side.values()),
            "reference_loss": read_json(losses)["summary"] if losses.is_file() else None,
        }
    rows = [{"id": k, "row": a[k].get("row"), "preference_a": _none_if_nan(preference(v)), "verdicts": v,
             "judge_text": {order: store.records[f"{k}:{order}"]["text"] for order in ORDERS},
             "length_a": la, "length_b": lb}
            for k, v, la, lb in zip(keys, verdicts, length_a, length_b)]
    return {"a": sides["a"], "b": sides["b"], "judge": judge_name, "summary": summary, "instructions": rows}


def _none_if_nan(x: float) -> float | None:
    return None if x != x else x


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _interval(ci: Sequence[float] | None) -> str:
    return "" if ci is None else f" [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]"


def _cell(text: str, limit: int) -> str:
    text = text if len(text) <= limit else text[:limit] + " ..."
    return text.replace("|", "\\|").replace("\n", "<br>") or "(empty)"


def render_markdown(report: dict[str, Any], a: dict[str, dict], b: dict[str, dict], examples: int = 5) -> str:
    s, ga, gb = report["summary"], report["a"], report["b"]
    name_a, name_b = (f"{g['generator']}" + (f" ({g['prompt_style']} prompt style)" if g["prompt_style"] else "")
                      for g in (ga, gb))
    lines = [
        f"# Pairwise: a = {name_a} vs b = {name_b}", "",
        f"- a: `{ga['answers']}`", f"- b: `{gb['answers']}`",
        f"- judge: `{report['judge']}`, every pair in both orders; {s['instructions']} instructions", "",
        "| | |", "|---|---|",
        f"| win rate of a over b (ties half), 95% bootstrap CI | {_pct(s['win_rate'])}{_interval(s['win_rate_ci95'])} |",
        f"| length-controlled win rate, 95% CI | {_pct(s['length_controlled_win_rate'])}"
        f"{_interval(s['length_controlled_win_rate_ci95'])} |",
        f"| a wins / ties / b wins (instructions) | {s['wins']} / {s['ties']} / {s['losses']} |",
        f"| unparseable verdicts | {s['unparseable_verdicts']} of {s['verdicts']} |",
        f"| instructions without any verdict (not counted) | {s['unjudged_instructions']} |",
        f"| judge picked the answer shown first | {_pct(s['first_shown_preferred'])} of parsed verdicts |",
        f"| same verdict in both orders | {_pct(s['consistent_in_both_orders'])} of "
        f"{s['judged_in_both_orders']} judged twice |",
        f"| mean answer length, characters (a / b) | {s['mean_length_a']:.0f} / {s['mean_length_b']:.0f} |",
        f"| mean answer length, words (a / b) | {ga['mean_words']:.0f} / {gb['mean_words']:.0f} |",
        f"| answers ended at EOS (a / b) | {ga['finished_at_eos']} / {gb['finished_at_eos']} |",
    ]
    if ga["reference_loss"] or gb["reference_loss"]:
        def loss(side: dict) -> str:
            r = side["reference_loss"]
            return "n/a" if not r or r["loss_per_token"] is None else f"{r['loss_per_token']:.4f}"
        lines.append(f"| reference loss, nats/token (a / b) | {loss(ga)} / {loss(gb)} |")
    warning = position_bias_warning(s)
    if warning:
        lines += ["", f"**Warning: {warning}.**"]
    lines += ["", "Win rate by length (characters; relative difference (len a - len b) / longer):", "",
              "| bucket | instructions | judged | win rate of a |", "|---|---|---|---|"]
    lines += [f"| {x['bucket']} | {x['instructions']} | {x['judged']} | {_pct(x['win_rate'])} |" for x in s["by_length"]]
    rows = report["instructions"]
    picked = [rows[round(i * (len(rows) - 1) / max(examples - 1, 1))] for i in range(min(examples, len(rows)))]
    lines += ["", f"## Examples ({len(picked)} of {len(rows)}, spread over the file)"]
    for row in picked:
        k = row["id"]
        preferred = "n/a (no verdict)" if row["preference_a"] is None else row["preference_a"]
        lines += ["", f"### Row {row['row']}: preference of a {preferred}",
                  "", _cell(a[k]["instruction"], 400).replace("<br>", " "), "",
                  f"| a: {ga['generator']} | b: {gb['generator']} |", "|---|---|",
                  f"| {_cell(a[k]['output'], 700)} | {_cell(b[k]['output'], 700)} |", ""]
        for order, shown in (("ab", "a shown first"), ("ba", "b shown first")):
            lines.append(f"- {shown}: verdict {row['verdicts'][order] or 'unparseable'}; judge wrote: "
                         f"`{_cell(row['judge_text'][order], 200).replace('`', '')}`")
    return "\n".join(lines) + "\n"


def write_report(out_dir: Path, report: dict[str, Any], a: dict[str, dict], b: dict[str, dict],
                 examples: int = 5) -> None:
    atomic_write_json(out_dir / REPORT_JSON_NAME, report)
    atomic_write_text(out_dir / REPORT_NAME, render_markdown(report, a, b, examples))
