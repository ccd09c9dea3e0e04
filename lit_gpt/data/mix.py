"""Mixing prepared datasets by weights into a new prepared dataset, with a manifest of what each source gave.

    python scripts/mix_datasets.py --data_dirs data/lima data/dolly --weights 0.7 0.3 --destination_path data/mix

How a mix is drawn (`mix_datasets`):

- Weights are shares of the train split in a unit, `--by examples` or `--by tokens` (all tokens of an example,
  prompt and response: what a training step processes). They are normalised to sum to 1.
- The total (`--num_examples` or `--num_tokens`, in the same unit as `--by`) is cut into integer per-source
  targets by largest remainders, so the targets add up to the total exactly. Left out (without replacement), the
  total is the largest one whose targets every source can give: the scarcest source relative to its weight is
  used whole.
- Without replacement, a source's examples come from a permutation drawn under the seed; a target larger than the
  source is an error that names the largest total possible (never a silent cap, which would change the weights).
  With replacement (`--replacement true`), examples are drawn independently and uniformly, so a small source can
  be upsampled; a total must then be given. By tokens, a source gives the prefix of its draw whose tokens come
  closest to its target (within half an example).
- The test split (`--test_split`): `all` (default) keeps every test example of every source, so each source is
  still evaluated on all of its held-out data; `weighted` draws it by the same weights and unit, as large as
  possible without replacement, so validation loss reflects the training mixture.
- Output order: source by source in the given order, each source's picks in their original order (repeats side
  by side). The mix says which examples; finetuning's `--order` decides the order they are seen in.

The same inputs, options and seed give a byte-identical dataset. `manifest.json` records per source: the weight
asked and achieved, the examples and tokens available and taken, and the sha256 of the input dataset.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from lit_gpt.data.dataset import TokenizedDataset
from lit_gpt.data.derive import MANIFEST_NAME, Pick, check_same_tokenizer, dataset_sha256, write_derived
from lit_gpt.data.layout import SPLITS
from lit_gpt.utils import UserError

Unit = Literal["examples", "tokens"]


def allocate(total: int, weights: np.ndarray) -> np.ndarray:
    """`total * weights` rounded to integers that add up to `total` (largest remainders; ties: the earlier source)."""
    exact = total * weights
    counts = np.floor(exact).astype(np.int64)
    short = total - int(counts.sum())
    counts[np.argsort(-(exact - counts), kind="stable")[:short]] += 1
    return counts


def largest_total(available: np.ndarray, weights: np.ndarray) -> int:
    """The largest total whose `allocate`d targets no source's `available` amount falls short of."""
    total = int(np.floor(np.min(available / weights))) + len(weights)  # a bound, plus room for rounding luck
    while total > 0 and (allocate(total, weights) > available).any():
        total -= 1
    return total


def draw(sizes: np.ndarray, target: int, unit: Unit, replacement: bool, rng: np.random.Generator) -> np.ndarray:
    """Indices of one source's examples (`sizes`: tokens per example), sorted: `target` examples, or by tokens the
    prefix of a random draw whose tokens come closest to `target` (on a tie, the shorter prefix)."""
    n = len(sizes)
    if unit == "examples":
        picks = rng.integers(0, n, size=target) if replacement else rng.permutation(n)[:target]
        return np.sort(picks)
    if replacement:  # draw in rounds until the target is reached: any total is possible
        order = np.zeros(0, dtype=np.int64)
        while sizes[order].sum() < target:
            order = np.concatenate([order, rng.integers(0, n, size=max(1, n))])
    else:
        order = rng.permutation(n)
    cumulative = np.concatenate([[0], np.cumsum(sizes[order])])  # tokens of the first k picks, k = 0..len(order)
    k = int(np.searchsorted(cumulative, target))  # the first prefix with at least `target` tokens
    if k > 0 and (k == len(cumulative) or target - cumulative[k - 1] <= cumulative[k] - target):
        k -= 1
    return np.sort(order[:k])


def mix_split(
    datasets: Sequence[TokenizedDataset], weights: np.ndarray, unit: Unit, replacement: bool, total: int | None,
    seed: int, split: str,
) -> tuple[list[np.ndarray], dict[str, Any]]:
    """The picks of each source for one split, and what the manifest says about the split as a whole."""
    sizes = [d.lengths for d in datasets]
    available = np.array([len(s) if unit == "examples" else int(s.sum()) for s in sizes], dtype=np.int64)
    flag = f"--num_{unit}"
    if total is None:
        if replacement:
            raise UserError(f"with --replacement true a mix can be any size; pass {flag}")
        total = largest_total(available, weights)
    targets = allocate(total, weights)
    if not replacement:
        for d, target, have in zip(datasets, targets, available):
            if target > have:
                raise UserError(
                    f"{flag} {total} asks {target} {unit} of {d.data_dir} ({split} split), which has {have}; ask for "
                    f"at most {flag} {largest_total(available, weights)}, or pass --replacement true to repeat "
                    "examples"
                )
    split_code = SPLITS.index(split)  # train and test draw from separate streams of the seed
    picks = [draw(s, int(t), unit, replacement, np.random.default_rng([seed, i, split_code]))
             for i, (s, t) in enumerate(zip(sizes, targets))]
    return picks, {"total": int(total), "targets": targets.tolist()}


def mix_datasets(
    data_dirs: list[Path],
    destination_path: Path,
    weights: list[float] | None = None,
    by: Unit = "examples",
    replacement: bool = False,
    num_examples: int | None = None,
    num_tokens: int | None = None,
    test_split: Literal["all", "weighted"] = "all",
    seed: int = 42,
) -> dict[str, Any]:
    """Mix prepared datasets by weights into DESTINATION_PATH, with manifest.json (examples and tokens per source).

    How sizes, weights, replacement and the test split work: see the module docstring. Returns the manifest.

    Args:
        data_dirs: Prepared datasets, all made for the same tokenizer and prompt style.
        destination_path: The mix's folder (replaced as a whole on success).
        weights: One per dataset, normalised to sum to 1 (default: equal).
        by: What the weights are shares of: examples, or tokens (prompt and response).
        replacement: Draw examples with replacement, so a source can give more than it has (needs a size).
        num_examples: Train examples in the mix (with --by examples). Default: as many as possible without
            replacement at these weights.
        num_tokens: Train tokens in the mix (with --by tokens). Default: as many as possible without replacement.
        test_split: all: every test example of every source; weighted: drawn by the same weights.
        seed: Decides which examples are drawn; the same inputs and seed give a byte-identical mix.
    """
    data_dirs, destination_path = [Path(d) for d in data_dirs], Path(destination_path)
    weights_array = _check_options(data_dirs, destination_path, weights, by, num_examples, num_tokens, test_split)
    if seed < 0:
        raise UserError(f"--seed {seed}: pass a non-negative integer")
    splits = {split: [TokenizedDataset(d, split, None) for d in data_dirs] for split in SPLITS}
    check_same_tokenizer(splits["train"])
    empty = [d.data_dir for d in splits["train"] if len(d) == 0]
    if empty:
        raise UserError(f"{empty[0]} has no train examples; leave it out of --data_dirs")

    total = num_examples if by == "examples" else num_tokens
    picks = {"train": mix_split(splits["train"], weights_array, by, replacement, total, seed, "train")}
    if test_split == "weighted":
        empty = [d.data_dir for d in splits["test"] if len(d) == 0]
        if empty:
            raise UserError(f"--test_split weighted: {empty[0]} has no test examples, so the test split cannot follow "
                            "the weights; pass --test_split all")
        picks["test"] = mix_split(splits["test"], weights_array, by, False, None, seed, "test")
    else:
        picks["test"] = ([np.arange(len(d)) for d in splits["test"]], {"rule": "every test example of every source"})

    manifest: dict[str, Any] = {
        "tool": "mix_datasets",
        "parameters": {"by": by, "replacement": replacement, "num_examples": num_examples, "num_tokens": num_tokens,
                       "test_split": test_split, "seed": seed, "weights": list(weights) if weights else None},
        "sources": [{"data_dir": str(d), "sha256": dataset_sha256(d), "weight_asked": float(w)}
                    for d, w in zip(data_dirs, weights_array)],
    }
    for split in SPLITS:
        source_picks, about = picks[split]
        manifest[split] = {**about, **_taken(splits[split], source_picks, by, manifest["sources"], split)}
    write_derived(destination_path, {split: _flat(splits[split], picks[split][0]) for split in SPLITS}, manifest)
    _print_summary(manifest, destination_path)
    return manifest


def _taken(datasets: Sequence[TokenizedDataset], picks: Sequence[np.ndarray], unit: Unit,
           sources: list[dict[str, Any]], split: str) -> dict[str, int]:
    """Adds to each source's manifest entry what it gave to `split`; returns the split's totals."""
    examples = np.array([len(p) for p in picks], dtype=np.int64)
    tokens = np.array([int(d.lengths[p].sum()) for d, p in zip(datasets, picks)], dtype=np.int64)
    for entry, d, p, n, t in zip(sources, datasets, picks, examples, tokens):
        share = {"examples": _share(n, examples.sum()), "tokens": _share(t, tokens.sum())}
        entry[split] = {
            "available": {"examples": len(d), "tokens": int(d.lengths.sum())},
            "examples": int(n), "distinct_examples": len(np.unique(p)), "tokens": int(t),
            "weight_achieved": share[unit], "share": share,
        }
    return {"examples": int(examples.sum()), "tokens": int(tokens.sum())}


def _share(part: int, whole: int) -> float:
    return float(part / whole) if whole else 0.0


def _flat(datasets: Sequence[TokenizedDataset], picks: Sequence[np.ndarray]) -> list[Pick]:
    return [(d, int(i)) for d, p in zip(datasets, picks) for i in p]


def _check_options(data_dirs: list[Path], destination_path: Path, weights: Sequence[float] | None, by: str,
                   num_examples: int | None, num_tokens: int | None, test_split: str) -> np.ndarray:
    """The normalised weights, after refusing options that cannot go together."""
    if not data_dirs:
        raise UserError("pass the prepared datasets to mix with --data_dirs, e.g. --data_dirs data/lima data/dolly")
    if any(destination_path.resolve() == d.resolve() for d in data_dirs):
        raise UserError(f"--destination_path {destination_path} is one of --data_dirs; write the mix to a new folder")
    if by not in ("examples", "tokens"):
        raise UserError(f"--by {by!r} is not one of examples, tokens")
    if test_split not in ("all", "weighted"):
        raise UserError(f"--test_split {test_split!r} is not one of all, weighted")
    other = {"examples": ("num_tokens", num_tokens), "tokens": ("num_examples", num_examples)}[by]
    if other[1] is not None:
        raise UserError(f"--{other[0]} sets the size in another unit than --by {by}; pass --num_{by} instead")
    total = num_examples if by == "examples" else num_tokens
    if total is not None and total < 1:
        raise UserError(f"--num_{by} {total}: pass a positive number")
    weights = [1.0] * len(data_dirs) if weights is None else list(weights)
    if len(weights) != len(data_dirs):
        raise UserError(f"{len(weights)} --weights for {len(data_dirs)} --data_dirs; pass one weight per dataset")
    if not all(w > 0 for w in weights):  # also catches NaN
        raise UserError(f"--weights {' '.join(map(str, weights))}: every weight must be positive; leave a dataset out "
                        "instead of giving it weight 0")
    array = np.array(weights, dtype=np.float64)
    return array / array.sum()


def _print_summary(manifest: dict[str, Any], destination_path: Path) -> None:
    by, test_split = manifest["parameters"]["by"], manifest["parameters"]["test_split"]
    for split in SPLITS:
        m = manifest[split]
        print(f"{split}: {m['examples']:,} examples, {m['tokens']:,} tokens")
        for source in manifest["sources"]:
            s = source[split]
            weighted = split == "train" or test_split == "weighted"
            print(f"  {source['data_dir']}: {s['examples']:,} of {s['available']['examples']:,} examples "
                  f"({s['distinct_examples']:,} distinct), {s['tokens']:,} tokens"
                  + (f"; weight by {by} asked {source['weight_asked']:.3f}, achieved {s['weight_achieved']:.3f}"
                     if weighted else ""))
    print(f"Wrote {destination_path} ({MANIFEST_NAME} says what each source gave)")
