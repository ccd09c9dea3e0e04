"""The report card of a preparation run: what was read, kept, cut and dropped, and how long the samples are.

Written as `stats.json` beside the data, printed at the end of the run, and drawn as `lengths.png`.
"""
from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

PERCENTILES = (50, 90, 95, 99)


@dataclass
class Tally:
    """Counts gathered while preparing; every row read ends up in exactly one of `kept` or `dropped`."""

    rows_read: int = 0
    dropped: Counter[str] = field(default_factory=Counter)  # reason -> rows
    kept: Counter[str] = field(default_factory=Counter)  # split -> samples
    tokens: Counter[str] = field(default_factory=Counter)  # split -> tokens stored
    trainable_tokens: Counter[str] = field(default_factory=Counter)  # split -> tokens with a label
    truncated_samples: int = 0
    truncated_tokens: int = 0
    duplicates: int = 0  # examples whose exact text appeared in an earlier row
    categories: Counter[str] = field(default_factory=Counter)  # of kept samples
    turns: Counter[int] = field(default_factory=Counter)  # of kept samples
    # lengths of every tokenized sample before any cut, for the percentiles and the histogram
    prompt_lengths: list[int] = field(default_factory=list)
    response_lengths: list[int] = field(default_factory=list)


def stats(tally: Tally, seconds: float, **context: Any) -> dict[str, Any]:
    """The report card as JSON-ready data; `context` (source, data file, ...) goes first."""
    prompt = np.asarray(tally.prompt_lengths, dtype=np.int64)
    response = np.asarray(tally.response_lengths, dtype=np.int64)
    tokenized = int(prompt.sum() + response.sum())
    stored = sum(tally.tokens.values())
    return {
        **context,
        "rows_read": tally.rows_read,
        "samples": {split: tally.kept[split] for split in ("train", "test")},
        "dropped": dict(tally.dropped.most_common()),
        "truncated": {"samples": tally.truncated_samples, "tokens": tally.truncated_tokens},
        "exact_duplicates": tally.duplicates,
        "tokens": {split: tally.tokens[split] for split in ("train", "test")},
        "trainable_tokens": {split: tally.trainable_tokens[split] for split in ("train", "test")},
        "trainable_fraction": round(sum(tally.trainable_tokens.values()) / stored, 4) if stored else 0.0,
        "length_percentiles": {  # tokens per sample as tokenized, before truncation
            "total": _percentiles(prompt + response),
            "prompt": _percentiles(prompt),
            "response": _percentiles(response),
        },
        "categories": dict(tally.categories.most_common()),
        "turns": {str(n): count for n, count in sorted(tally.turns.items())},
        "seconds": round(seconds, 3),
        "examples_per_second": round(len(prompt) / seconds, 1),  # examples tokenized
        "tokens_per_second": round(tokenized / seconds, 1),
    }


def _percentiles(lengths: np.ndarray) -> dict[str, int]:
    if not len(lengths):
        return {}
    values = np.percentile(lengths, PERCENTILES, method="higher")
    return {**{f"p{p}": int(v) for p, v in zip(PERCENTILES, values)}, "max": int(lengths.max())}


def format_report(s: dict[str, Any]) -> str:
    """The report card as the lines printed at the end of a run."""
    lengths = s["length_percentiles"]
    rows = [
        ("rows read", f"{s['rows_read']:,}"),
        ("samples", f"train {s['samples']['train']:,} · test {s['samples']['test']:,}"),
        ("dropped", _counts(s["dropped"]) or "none"),
        ("truncated", f"{s['truncated']['samples']:,} samples, {s['truncated']['tokens']:,} tokens cut "
                      f"(max_seq_length {s['max_seq_length']}, --overlength {s['overlength']})"),
        ("exact duplicates", f"{s['exact_duplicates']:,} (kept, each in the same split as its original)"),
        ("trainable tokens", f"{s['trainable_fraction']:.1%} of {sum(s['tokens'].values()):,}"),
    ]
    for part in ("total", "prompt", "response"):
        rows.append((f"{part} tokens", " · ".join(f"{k} {v:,}" for k, v in lengths[part].items())))
    if s["categories"]:
        rows.append(("categories", _counts(s["categories"], top=8)))
    rows.append(("turns per sample", _counts(s["turns"])))
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"  {name:<{width}}  {value}" for name, value in rows)


def _counts(counts: dict[str, int], top: int | None = None) -> str:
    items = list(counts.items())
    text = " · ".join(f"{name}: {n:,}" for name, n in items[:top])
    return text + (f" · {len(items) - top} more" if top is not None and len(items) > top else "")


class LengthsPlot:
    """Draws the histogram of `plot_lengths`. Importing matplotlib takes about 0.4 s, so a thread started with the
    object imports it meanwhile; started before tokenizing, it runs while the batched tokenizer calls (which release
    the GIL) work, instead of after them."""

    def __init__(self) -> None:
        self._import = threading.Thread(target=_import_matplotlib, name="import matplotlib")
        self._import.start()

    def draw(self, tally: Tally, max_seq_length: int, path: Path, title: str) -> bool:
        self._import.join()
        return plot_lengths(tally, max_seq_length, path, title)


def _import_matplotlib() -> None:
    try:
        import matplotlib.figure  # noqa: F401
    except ImportError:
        pass  # plot_lengths says so


def plot_lengths(tally: Tally, max_seq_length: int, path: Path, title: str) -> bool:
    """Histogram of prompt and response token lengths; False (and nothing written) without matplotlib."""
    try:
        # the object API, not pyplot: no global backend switch in a caller's process, no display needed
        from matplotlib.figure import Figure
    except ImportError:
        return False
    prompt, response = np.asarray(tally.prompt_lengths), np.asarray(tally.response_lengths)
    top = max(int(prompt.max(initial=1)), int(response.max(initial=1)), int((prompt + response).max(initial=1)))
    bins = np.linspace(0, top, 61)
    fig = Figure(figsize=(8, 4.5), dpi=100)
    # fixed margins: a layout engine ("constrained") draws the figure once more to measure its labels
    fig.subplots_adjust(left=0.11, right=0.98, bottom=0.12, top=0.93)
    ax = fig.subplots()
    # one filled outline per histogram ("stepfilled") draws far faster than 60 bar patches each
    for lengths, name in ((prompt, "prompt"), (response, "response")):
        label = f"{name} (median {np.median(lengths):.0f})"
        ax.hist(lengths, bins=bins, histtype="stepfilled", alpha=0.55, label=label)
    ax.hist(prompt + response, bins=bins, histtype="step", color="0.3", label="prompt + response")
    if max_seq_length <= top:
        ax.axvline(max_seq_length, color="black", linestyle="--", label=f"max_seq_length {max_seq_length}")
    ax.set(xlabel="tokens per sample (before truncation)", ylabel="samples", title=title)
    ax.legend()
    fig.savefig(path)
    return True
