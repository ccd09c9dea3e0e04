"""A local instruction model as a pairwise judge, and the statistics of its verdicts.

AlpacaEval-style (Li et al. 2023; Dubois et al. 2024, arXiv:2404.04475): the judge sees one instruction and two
answers and names the better one. Every pair is judged in both orders, since judges prefer whichever answer is
shown first (Zheng et al. 2023, MT-Bench, arXiv:2306.05685); the two verdicts, seen from answer a, are averaged:

    order "ab": a shown as A        A -> a wins (1)    B -> a loses (0)    tie -> 0.5
    order "ba": b shown as A        A -> a loses (0)   B -> a wins (1)     tie -> 0.5
    preference(a over b) = mean over the parseable ones; none parseable -> not counted (NaN), reported

A judge that always answers "A" thus scores every pair 0.5, not a win. The win rate is the mean preference (ties
count half, as in AlpacaEval), with a bootstrap 95% interval over instructions. Judges also reward length
(AlpacaEval 2's known flaw), so beside it: both answers' lengths, the win rate per length bucket, and a
length-controlled win rate, AlpacaEval 2's idea in its smallest form: a logistic regression of the preference on
tanh(length difference / its standard deviation), read at a length difference of zero.
"""
from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from lit_gpt.generate import judge_replies, require_chat_template
from lit_gpt.model import GPT
from lit_gpt.tokenizer import Tokenizer

PAIRWISE_PROMPT = (
    "Compare two responses to the instruction below and decide which one is better: more helpful, accurate and "
    "relevant to the instruction. Judge the content, not the length; a longer response is not better for being "
    "longer.\n\n"
    "[Instruction]\n{instruction}\n\n[Response A]\n{first}\n\n[Response B]\n{second}\n\n"
    "Reply with your verdict first, as \"Verdict: A\" if Response A is better, \"Verdict: B\" if Response B is "
    "better, or \"Verdict: tie\" if they are equally good; then explain."
)
PRIMER = "Verdict:"  # written after the assistant header: even a small model's next token is then the verdict

_TIE = r"tie|tied|both|neither|equal|equally"
# "Verdict: A", "Winner: **Response B**", "better response is: [[A]]"; the letter must stand alone
_KEYWORD_RE = re.compile(r"\b(?:verdict|winner|better(?:\s+response)?(?:\s+is)?|prefer(?:red)?)\b[\s:*\-\[\]\"'()]*"
                         r"(?:(?:response|output|assistant)\s*)?\(?\[{0,2}(a\s+tie|A|B|" + _TIE + r")(?![\w'])", re.I)
_BRACKETS_RE = re.compile(r"\[\[\s*(A|B|C|tie)\s*\]\]")  # MT-Bench's format; its [[C]] is a tie
_SENTENCE_RE = re.compile(r"\b(?:response|output|assistant)\s+(A|B)\s+is\s+(?:better|preferred|superior|more)",
                          re.I)

# the preference of answer a in each order, per verdict
ORDERS = ("ab", "ba")
_PREFERENCE = {"ab": {"A": 1.0, "B": 0.0, "tie": 0.5}, "ba": {"A": 0.0, "B": 1.0, "tie": 0.5}}


def parse_verdict(text: str) -> str | None:
    """"A", "B" or "tie" from a judge's reply, or None when it names no verdict. The first of these that matches: a
    verdict keyword ("Verdict: A", "Winner: Response B", "prefer A"), MT-Bench's [[A]]/[[B]]/[[C]], or a sentence
    "Response A is better". The letter must stand alone ("Verdict: Apples" is not A)."""
    for pattern in (_KEYWORD_RE, _BRACKETS_RE, _SENTENCE_RE):
        match = pattern.search(text)
        if match:
            word = match.group(1)
            return word.upper() if word.upper() in ("A", "B") else "tie"
    return None


def preference(verdicts: dict[str, str | None]) -> float:
    """How much answer a is preferred (1 win, 0.5 tie, 0 loss), averaged over the orders with a verdict; NaN if none."""
    values = [_PREFERENCE[order][v] for order, v in verdicts.items() if v is not None]
    return sum(values) / len(values) if values else float("nan")


@dataclass
class PairwiseJudge:
    """An instruction (chat) model judging pairs with `PAIRWISE_PROMPT` in its chat template: greedy decoding of a
    short reply after "Verdict:", parsed by `parse_verdict` (as `lit_gpt.data.scoring.Judge` rates single answers)."""

    model: GPT
    tokenizer: Tokenizer
    max_new_tokens: int = 16

    def __post_init__(self) -> None:
        require_chat_template(self.tokenizer)

    def judge(self, pairs: Sequence[tuple[str, str, str]]) -> list[tuple[str | None, str]]:
        """Per (instruction, first answer, second answer): the verdict ("A" = the first is better) or None, and the
        reply text, primer included. A pair too long for the judge's context gets None and says so."""
        messages = [PAIRWISE_PROMPT.format(instruction=instruction.strip(), first=first.strip(), second=second.strip())
                    for instruction, first, second in pairs]
        return [(parse_verdict(text) if judged else None, text) for text, judged in
                judge_replies(self.model, self.tokenizer, messages, PRIMER, self.max_new_tokens)]


# ------------------------------------------------------------------------------------------------ statistics


def win_rate(prefs: np.ndarray) -> float | None:
    """Mean preference over the judged instructions (NaN = unjudged, left out); None when none was judged."""
    judged = prefs[~np.isnan(prefs)]
    return float(judged.mean()) if len(judged) else None


def length_controlled_win_rate(prefs: np.ndarray, length_a: np.ndarray, length_b: np.ndarray,
                               ridge: float = 1e-2) -> float | None:
    """The win rate at equal lengths: fit P(a preferred) = sigmoid(theta + phi * tanh(d / std(d))), d = length_a -
    length_b, to the preferences (ties as 0.5: a soft label) by Newton's method with a small ridge (a judge that
    always picks the longer answer separates the data perfectly), and return sigmoid(theta). AlpacaEval 2's GLM
    also has an instruction-difficulty term, which needs many models' answers; with two it drops out."""
    keep = ~np.isnan(prefs)
    if not keep.any():
        return None
    y, d = prefs[keep], (length_a - length_b)[keep].astype(float)
    x = np.tanh(d / d.std()) if d.std() > 0 else np.zeros_like(d)
    X = np.stack([np.ones_like(x), x], axis=1)  # (n, 2): intercept, length term
    w = np.zeros(2)
    for _ in range(50):
        p = 1 / (1 + np.exp(-X @ w))
        gradient = X.T @ (p - y) + ridge * w
        hessian = (X * (p * (1 - p))[:, None]).T @ X + ridge * np.eye(2)
        step = np.linalg.solve(hessian, gradient)
        w -= step
        if np.abs(step).max() < 1e-10:
            break
    return float(1 / (1 + math.exp(-w[0])))


def bootstrap_interval(statistic, arrays: Sequence[np.ndarray], samples: int = 2000, seed: int = 1234,
                       level: float = 0.95) -> tuple[float, float] | None:
    """The percentile bootstrap interval of `statistic(*arrays)`: instructions resampled with replacement."""
    n = len(arrays[0])
    if n == 0 or samples < 1:
        return None
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(samples):
        pick = rng.integers(0, n, n)
        value = statistic(*(a[pick] for a in arrays))
        if value is not None:
            values.append(value)
    if not values:
        return None
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


# by the relative length difference (len_a - len_b) / max(len_a, len_b)
LENGTH_BUCKETS = ("a shorter by over 20%", "within 20%", "a longer by over 20%")


def win_rate_summary(verdicts: Sequence[dict[str, str | None]], length_a: Sequence[int], length_b: Sequence[int],
                     bootstrap_samples: int = 2000, seed: int = 1234) -> dict[str, Any]:
    """Everything the report shows about a's preference over b, from each instruction's verdicts per order and the
    answers' lengths (characters). Unparseable verdicts are counted, never fatal."""
    prefs = np.array([preference(v) for v in verdicts], dtype=float)
    la, lb = np.asarray(length_a, dtype=float), np.asarray(length_b, dtype=float)
    judged = ~np.isnan(prefs)
    both = [v for v in verdicts if all(v.get(o) is not None for o in ORDERS)]
    all_verdicts = [x for v in verdicts for x in v.values()]
    parsed = [x for x in all_verdicts if x is not None]
    relative = (la - lb) / np.maximum(np.maximum(la, lb), 1)
    bucket = np.where(relative < -0.2, 0, np.where(relative > 0.2, 2, 1))
    buckets = [{"bucket": name, "instructions": int((bucket == b).sum()), "judged": int(((bucket == b) & judged).sum()),
                "win_rate": win_rate(prefs[bucket == b])} for b, name in enumerate(LENGTH_BUCKETS)]
    return {
        "instructions": len(prefs),
        "judged": int(judged.sum()),
        "win_rate": win_rate(prefs),
        "win_rate_ci95": bootstrap_interval(win_rate, [prefs], bootstrap_samples, seed),
        "length_controlled_win_rate": length_controlled_win_rate(prefs, la, lb),
        "length_controlled_win_rate_ci95": bootstrap_interval(length_controlled_win_rate, [prefs, la, lb],
                                                              bootstrap_samples, seed),
        "wins": int((prefs[judged] > 0.5).sum()),
        "ties": int((prefs[judged] == 0.5).sum()),
        "losses": int((prefs[judged] < 0.5).sum()),
        "verdicts": len(all_verdicts),
        "unparseable_verdicts": len(all_verdicts) - len(parsed),
        "unjudged_instructions": int((~judged).sum()),
        # position bias: how often the judge picks whichever answer it sees first, and agrees with itself
        "first_shown_preferred": sum(x == "A" for x in parsed) / len(parsed) if parsed else None,
        "second_shown_preferred": sum(x == "B" for x in parsed) / len(parsed) if parsed else None,
        "ties_declared": sum(x == "tie" for x in parsed),
        "consistent_in_both_orders": (sum(preference({"ab": v["ab"]}) == preference({"ba": v["ba"]}) for v in both)
                                      / len(both) if both else None),
        "judged_in_both_orders": len(both),
        "mean_length_a": float(la.mean()) if len(la) else None,
        "mean_length_b": float(lb.mean()) if len(lb) else None,
        "a_longer": int((la > lb).sum()),
        "by_length": buckets,
    }


def position_bias_warning(summary: dict[str, Any], threshold: float = 0.8) -> str | None:
    """A warning when the judge picks by position rather than content: the answer shown first (or second) in over
    `threshold` of its parsed verdicts. Both orders turn such verdicts into ties, so the win rate stays near 50%
    with a narrow interval that measures the judge, not the answers."""
    shares = {"first": summary["first_shown_preferred"], "second": summary["second_shown_preferred"]}
    if shares["first"] is None:
        return None
    position = max(shares, key=shares.get)
    if shares[position] <= threshold:
        return None
    return (f"the judge picked the answer shown {position} in {100 * shares[position]:.0f}% of its verdicts: it "
            "judges by position, not content, so these numbers say little about the answers; use a stronger judge")
