"""Choosing k training examples by a policy, written as a new prepared dataset with a manifest of what was kept and why.

Policies (`--policy`), each returning exactly k examples of the train split (the test split is copied whole):

    random      k drawn uniformly under the seed: the baseline every other policy has to beat
    longest     the k longest responses in tokens ("Long Is More", Zhao et al. 2024, arXiv:2402.04833)
    ifd         the k highest IFD among examples with IFD < 1 (Cherry LLM, Li et al. 2023, arXiv:2308.12032):
                a high IFD means the instruction helps but the response is still hard; IFD >= 1 means the
                instruction does not help predict the response at all, so those are dropped
    loss_band   k drawn under the seed from the examples whose loss_with_prompt lies between its `low` and `high`
                quantiles: neither already known (lowest loss) nor likely noise (highest)
    judge       the k highest judge ratings (AlpaGasus, Chen et al. 2023, arXiv:2307.08701); unrated ones dropped
    diverse     k-center greedy (Sener & Savarese 2018) on the examples' embeddings: each pick is the example
                farthest (cosine) from those already picked, so the subset covers the embedding space

Ties are broken by a permutation drawn from the seed, so the same data, scores and seed always give the same
subset. ifd, loss_band and judge read `scores.npy` and diverse reads `embeddings.npy` of the train split
(`lit_gpt.data.scores`, made by scripts/score_dataset.py); random and longest need no model at all.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np

from lit_gpt.data.dataset import TokenizedDataset
from lit_gpt.utils import UserError

Policy = Literal["random", "longest", "ifd", "loss_band", "judge", "diverse"]
POLICIES: tuple[str, ...] = get_args(Policy)


@dataclass
class Selection:
    """The kept examples in rank order (best first, or pick order), each with the value that decided it."""

    indices: list[int]
    values: list[float | None]
    value_name: str | None  # what `values` are, e.g. "ifd"; None for random
    rule: str  # one sentence: why these
    details: dict[str, Any] = field(default_factory=dict)  # eligible count, thresholds


def top_k(values: np.ndarray, k: int, rng: np.random.Generator, eligible: np.ndarray | None = None) -> list[int]:
    """Indices of the k highest `values` among `eligible`, highest first; equal values in the seed's order."""
    candidates = rng.permutation(len(values))
    if eligible is not None:
        candidates = candidates[eligible[candidates]]
    order = np.argsort(-values[candidates], kind="stable")  # stable: ties keep the random order
    return candidates[order][:k].tolist()


def k_center_greedy(points: np.ndarray, k: int, first: int) -> tuple[list[int], list[float]]:
    """k centers picked greedily from `points` (n, d), starting at `first`: each next one is the point farthest
    from all picked so far (ties: the lowest index). Returns the picks and each one's distance at pick time (0 for
    the first). Its covering radius is within 2x of the best possible (Gonzalez 1985)."""
    distance = np.linalg.norm(points - points[first], axis=1)
    distance[first] = -np.inf  # never picked twice, even once every point left is a copy of a picked one
    picks, gains = [first], [0.0]
    for _ in range(k - 1):
        nxt = int(np.argmax(distance))
        picks.append(nxt)
        gains.append(float(distance[nxt]))
        distance = np.minimum(distance, np.linalg.norm(points - points[nxt], axis=1))
        distance[nxt] = -np.inf
    return picks, gains


def covering_radius(points: np.ndarray, centers: list[int]) -> float:
    """The largest distance from any point to its nearest center: how badly the subset covers the set."""
    c = points[centers]  # (k, d)
    squared = (points**2).sum(1)[:, None] + (c**2).sum(1)[None, :] - 2 * points @ c.T  # (n, k), never (n, k, d)
    return float(np.sqrt(np.maximum(squared.min(axis=1), 0)).max())


def normalize(embeddings: np.ndarray) -> np.ndarray:
    """Unit rows: distances between them follow cosine similarity, not the magnitude of the hidden states (a few
    huge channels of LLM hidden states would otherwise decide every distance)."""
    x = embeddings.astype(np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def select(dataset: TokenizedDataset, policy: str, k: int, seed: int, low: float = 0.1,
           high: float = 0.9) -> Selection:
    """Exactly `k` examples of `dataset` (a train split) by `policy` (one of POLICIES)."""
    from lit_gpt.data.scores import read_embeddings, read_score_column
    from lit_gpt.data.scoring import response_tokens

    n = len(dataset)
    if not 1 <= k <= n:
        raise UserError(f"--k {k}: the train split has {n} examples; pick between 1 and {n}")
    rng = np.random.default_rng(seed)

    if policy == "random":
        picks = rng.permutation(n)[:k].tolist()
        return Selection(picks, [None] * k, None, f"{k} of {n} drawn uniformly at random with seed {seed}")
    if policy == "longest":
        lengths = response_tokens(dataset).astype(np.float64)
        picks = top_k(lengths, k, rng)
        return Selection(picks, lengths[picks].tolist(), "response_tokens",
                         f"the {k} longest responses (in tokens) of {n}", {"shortest_kept": float(lengths[picks[-1]])})
    if policy == "ifd":
        ifd = read_score_column(dataset, "ifd")
        eligible = np.isfinite(ifd) & (ifd < 1)
        _enough(int(eligible.sum()), k, "have IFD < 1")
        picks = top_k(ifd, k, rng, eligible)
        return Selection(picks, ifd[picks].tolist(), "ifd",
                         f"the {k} highest IFD among the {int(eligible.sum())} of {n} with IFD < 1 (IFD >= 1: the "
                         "prompt does not help predict the response)",
                         {"eligible": int(eligible.sum()), "dropped_ifd_at_least_1": int((ifd >= 1).sum()),
                          "lowest_kept": float(ifd[picks[-1]])})
    if policy == "loss_band":
        if not 0 <= low < high <= 1:
            raise UserError(f"--low {low} and --high {high}: need 0 <= low < high <= 1 (quantiles)")
        loss = read_score_column(dataset, "loss_with_prompt")
        finite = np.isfinite(loss)
        if not finite.any():
            raise UserError(f"{dataset.data_dir}: no example has a defined loss_with_prompt; score it again")
        lo, hi = np.quantile(loss[finite], [low, high])
        eligible = finite & (loss >= lo) & (loss <= hi)
        _enough(int(eligible.sum()), k, f"have loss_with_prompt in [{lo:.4f}, {hi:.4f}] (quantiles {low}-{high})")
        candidates = np.flatnonzero(eligible)
        picks = rng.permutation(candidates)[:k].tolist()
        return Selection(picks, loss[picks].tolist(), "loss_with_prompt",
                         f"{k} drawn with seed {seed} from the {len(candidates)} of {n} whose loss_with_prompt lies "
                         f"between its {low} and {high} quantiles",
                         {"eligible": len(candidates), "band": [float(lo), float(hi)], "quantiles": [low, high]})
    if policy == "judge":
        rating = read_score_column(dataset, "judge")
        eligible = ~np.isnan(rating)
        _enough(int(eligible.sum()), k, "have a parseable judge rating")
        picks = top_k(rating, k, rng, eligible)
        return Selection(picks, rating[picks].tolist(), "judge",
                         f"the {k} highest judge ratings of the {int(eligible.sum())} rated examples of {n}, ties "
                         f"in an order drawn with seed {seed}",
                         {"eligible": int(eligible.sum()), "lowest_kept": float(rating[picks[-1]])})
    if policy == "diverse":
        points = normalize(read_embeddings(dataset))
        picks, gains = k_center_greedy(points, k, first=int(rng.integers(n)))
        return Selection(picks, gains, "distance_to_nearest_earlier_pick",
                         f"k-center greedy on unit-normalised embeddings from a first pick drawn with seed {seed}: "
                         "each next example is the farthest from those already picked",
                         {"covering_radius": covering_radius(points, picks)})
    raise UserError(f"--policy {policy!r} is not one of {', '.join(POLICIES)}")


def _enough(eligible: int, k: int, what: str) -> None:
    if eligible < k:
        raise UserError(f"only {eligible} examples {what}, fewer than --k {k}; ask for --k {eligible} or fewer")


def select_dataset(
    data_dir: Path,
    policy: Policy,
    destination_path: Path,
    k: int | None = None,
    fraction: float | None = None,
    seed: int = 42,
    low: float = 0.1,
    high: float = 0.9,
) -> dict[str, Any]:
    """Select training examples by a policy into a new prepared dataset (train: the kept ones; test: all).

    Writes DESTINATION_PATH: the `policy`'s k train examples of DATA_DIR (in their original order) and its whole
    test split, with `manifest.json` (the kept examples in rank order, each with the value that decided it) and
    the kept examples' score rows. Returns the manifest.

    Args:
        data_dir: A prepared dataset; ifd/loss_band/judge/diverse need its scores (scripts/score_dataset.py).
        policy: random | longest (longest responses) | ifd (highest IFD below 1) | loss_band (random within the
            loss quantile band) | judge (highest judge ratings) | diverse (k-center greedy on embeddings).
        destination_path: The new dataset's folder (replaced as a whole on success).
        k: How many train examples to keep.
        fraction: Or: which share of the train split to keep.
        seed: Decides random draws and the order of ties.
        low: loss_band: the lower quantile of loss_with_prompt.
        high: loss_band: the upper quantile of loss_with_prompt.
    """
    from lit_gpt.data.derive import MANIFEST_NAME, dataset_sha256, write_derived
    from lit_gpt.data.scores import SCORES_JSON_NAME, copy_scores

    data_dir, destination_path = Path(data_dir), Path(destination_path)
    if policy not in POLICIES:
        raise UserError(f"--policy {policy!r} is not one of {', '.join(POLICIES)}")
    if destination_path.resolve() == data_dir.resolve():
        raise UserError(f"--destination_path is --data_dir {data_dir}; write the selection to a new folder")
    train, test = (TokenizedDataset(data_dir, split, None) for split in ("train", "test"))
    n = len(train)
    if (k is None) == (fraction is None):
        raise UserError("pass exactly one of --k (examples) and --fraction (of the train split)")
    if fraction is not None:
        if not 0 < fraction <= 1:
            raise UserError(f"--fraction {fraction}: pass a share in (0, 1]")
        k = max(1, round(fraction * n))
    selection = select(train, policy, k, seed, low, high)
    assert len(selection.indices) == len(set(selection.indices)) == k, "a policy must return k distinct examples"

    kept = sorted(selection.indices)  # the original order: the selection says which, finetuning decides the order
    manifest: dict[str, Any] = {
        "tool": "select_dataset",
        "policy": policy,
        "parameters": {"k": k, "fraction": fraction, "seed": seed,
                       **({"low": low, "high": high} if policy == "loss_band" else {})},
        "rule": selection.rule,
        "source": {"data_dir": str(data_dir), "sha256": dataset_sha256(data_dir)},
        "train": {"examples": n, "kept": k, **selection.details},
        "test": {"examples": len(test), "kept": len(test), "rule": "copied whole"},
        "value": selection.value_name,
        "scores_copied": (data_dir / SCORES_JSON_NAME).is_file(),  # the kept examples' rows of scores.npy etc.
        "kept": [{"rank": rank, "index": i, "value": value}
                 for rank, (i, value) in enumerate(zip(selection.indices, selection.values))],
    }
    write_derived(destination_path, {"train": [(train, i) for i in kept],
                                     "test": [(test, i) for i in range(len(test))]}, manifest)
    copy_scores(data_dir, destination_path, {"train": kept, "test": list(range(len(test)))})
    print(f"{policy}: kept {k} of {n} train examples: {selection.rule}.\nWrote {destination_path}; "
          f"{MANIFEST_NAME} lists them with their {selection.value_name or 'rank'}")
    return manifest
