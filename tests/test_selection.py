"""scripts/select_dataset.py: every policy keeps exactly k examples with the property it claims, deterministically
under the seed, written as a prepared dataset with a manifest; k-center covers planted clusters better than random."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from lit_gpt.data.dataset import TokenizedDataset
from lit_gpt.data.scores import EMBEDDINGS_NAME, read_scores, write_scores
from lit_gpt.data.scoring import response_tokens
from lit_gpt.data.selection import covering_radius, k_center_greedy
from lit_gpt.utils import UserError

from helpers import load_script
from test_scoring import build_workspace

select_script = load_script("scripts/select_dataset.py")


@pytest.fixture(scope="module")
def scored(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Tiny prepared data (train 32, test 8) scored with its tiny model, embeddings included."""
    from lit_gpt.data.scoring import score_dataset

    workspace = build_workspace(tmp_path_factory.mktemp("select"), bos=False, chat=True)
    score_dataset(workspace["data"], workspace["checkpoint"], batch_size=8)
    return workspace


@pytest.fixture()
def planted(scored: dict, tmp_path: Path) -> Path:
    """A copy of the scored data whose train scores are planted: IFD with values at and above 1 and NaN, a judge
    column with ties, and losses 0..31."""
    data = tmp_path / "planted"
    shutil.copytree(scored["data"], data)
    table = read_scores(data, "train")
    ifd = np.linspace(0.5, 1.5, 32)
    ifd[[3, 9]] = 1.0  # exactly 1: the prompt does not help; dropped
    ifd[5] = np.nan
    judge = np.array([5.0] * 10 + [4.0] * 10 + [np.nan] * 6 + [1.0, 2.0, 3.0, 2.0, 1.0, 3.0])
    columns = {name: table[name] for name in table.dtype.names}
    columns.update(ifd=ifd, judge=judge, loss_with_prompt=np.arange(32, dtype=np.float64))
    write_scores(data, "train", columns, judge_text=[f"Score: {v}" for v in judge])
    return data


def _select(data: Path, out: Path, policy: str, **kwargs) -> tuple[dict, list[int]]:
    manifest = select_script.select_dataset(data, policy, out, **{"k": 5, "seed": 0, **kwargs})
    assert json.loads((out / "manifest.json").read_text()) == json.loads(json.dumps(manifest))
    return manifest, [entry["index"] for entry in manifest["kept"]]


def test_the_selected_dataset_holds_exactly_the_kept_examples(scored: dict, tmp_path: Path) -> None:
    manifest, kept = _select(scored["data"], tmp_path / "out", "random", k=7, seed=3)
    source = TokenizedDataset(scored["data"], "train", None)
    out = TokenizedDataset(tmp_path / "out", "train", None)
    assert len(kept) == len(set(kept)) == len(out) == 7
    for position, i in enumerate(sorted(kept)):  # written in the original order
        assert out[position]["input_ids"].tolist() == source[i]["input_ids"].tolist()
        assert out[position]["labels"].tolist() == source[i]["labels"].tolist()
    assert out.provenance()[0]["row"] == source.provenance()[sorted(kept)[0]]["row"]
    assert len(TokenizedDataset(tmp_path / "out", "test", None)) == 8  # the test split, whole
    assert manifest["policy"] == "random" and manifest["parameters"]["seed"] == 3 and manifest["train"]["kept"] == 7
    assert len(manifest["source"]["sha256"]) == 64
    # the kept examples' scores came along, row for row, so the subset can be ordered or selected again
    np.testing.assert_array_equal(read_scores(tmp_path / "out", "train"), read_scores(scored["data"], "train")[sorted(kept)])
    np.testing.assert_array_equal(np.load(tmp_path / "out" / "train" / EMBEDDINGS_NAME),
                                  np.load(scored["data"] / "train" / EMBEDDINGS_NAME)[sorted(kept)])
    # the same seed gives byte-identical output; another seed another subset
    _, again = _select(scored["data"], tmp_path / "again", "random", k=7, seed=3)
    _, other = _select(scored["data"], tmp_path / "other", "random", k=7, seed=4)
    assert again == kept and other != kept
    for name in ("input_ids.npy", "labels.npy", "offsets.npy", "provenance.jsonl"):
        assert (tmp_path / "out" / "train" / name).read_bytes() == (tmp_path / "again" / "train" / name).read_bytes()
    # --fraction: the share of the train split, rounded
    manifest, kept = _select(scored["data"], tmp_path / "fraction", "random", k=None, fraction=0.25)
    assert len(kept) == 8 and manifest["parameters"]["fraction"] == 0.25


def test_longest_keeps_the_longest_responses(scored: dict, tmp_path: Path) -> None:
    manifest, kept = _select(scored["data"], tmp_path / "out", "longest", k=6)
    lengths = response_tokens(TokenizedDataset(scored["data"], "train", None))
    dropped = np.delete(lengths, kept)
    assert len(kept) == 6 and lengths[kept].min() >= dropped.max()
    assert [e["value"] for e in manifest["kept"]] == sorted(lengths[kept].tolist(), reverse=True)
    # response_tokens from the labels equals the scoring column
    np.testing.assert_array_equal(lengths, read_scores(scored["data"], "train")["response_tokens"])


def test_ifd_keeps_the_highest_below_one(planted: Path, tmp_path: Path) -> None:
    manifest, kept = _select(planted, tmp_path / "out", "ifd", k=8)
    ifd = read_scores(planted, "train")["ifd"]
    eligible = np.flatnonzero(np.isfinite(ifd) & (ifd < 1))
    assert len(kept) == 8 and all(ifd[i] < 1 for i in kept)
    assert ifd[kept].min() >= np.delete(ifd, kept)[np.isin(np.delete(np.arange(32), kept), eligible)].max()
    assert manifest["train"]["dropped_ifd_at_least_1"] == int((ifd >= 1).sum()) and 3 not in kept and 9 not in kept
    assert manifest["value"] == "ifd" and [e["value"] for e in manifest["kept"]] == sorted(ifd[kept], reverse=True)
    with pytest.raises(UserError, match=f"only {len(eligible)} examples have IFD < 1"):
        select_script.select_dataset(planted, "ifd", tmp_path / "too_many", k=len(eligible) + 1)


def test_loss_band_keeps_k_inside_the_band(planted: Path, tmp_path: Path) -> None:
    manifest, kept = _select(planted, tmp_path / "out", "loss_band", k=10, low=0.25, high=0.75)
    loss = read_scores(planted, "train")["loss_with_prompt"]
    lo, hi = np.quantile(loss, [0.25, 0.75])
    assert len(kept) == 10 and all(lo <= loss[i] <= hi for i in kept)
    assert manifest["train"]["band"] == [lo, hi] and manifest["parameters"]["low"] == 0.25
    _, again = _select(planted, tmp_path / "again", "loss_band", k=10, low=0.25, high=0.75)
    assert again == kept
    with pytest.raises(UserError, match="low < high"):
        select_script.select_dataset(planted, "loss_band", tmp_path / "bad", k=3, low=0.8, high=0.2)


def test_judge_keeps_the_highest_ratings_ties_by_seed(planted: Path, tmp_path: Path) -> None:
    judge = read_scores(planted, "train")["judge"]
    subsets = set()
    for seed in range(4):
        _, kept = _select(planted, tmp_path / f"out{seed}", "judge", k=5, seed=seed)
        assert len(kept) == 5 and all(judge[i] == 5 for i in kept)  # 10 examples tie at 5
        subsets.add(tuple(kept))
        assert _select(planted, tmp_path / f"again{seed}", "judge", k=5, seed=seed)[1] == kept
    assert len(subsets) > 1  # the seed decides among ties
    _, kept = _select(planted, tmp_path / "more", "judge", k=15)
    assert sorted(judge[kept].tolist(), reverse=True) == [5.0] * 10 + [4.0] * 5
    with pytest.raises(UserError, match="only 26 examples have a parseable judge rating"):
        select_script.select_dataset(planted, "judge", tmp_path / "too_many", k=27)
    # the judge's texts of the kept examples came along
    lines = (tmp_path / "more" / "train" / "judge.jsonl").read_text().splitlines()
    assert sorted(json.loads(line)["judge"] for line in lines) == sorted(judge[kept].tolist())


def test_k_center_covers_planted_clusters_better_than_random() -> None:
    """One big cluster and four small far ones: k-center puts a center in each, random draws mostly miss them."""
    rng = np.random.default_rng(0)
    centers = np.eye(8)[:5] * 10
    sizes = [200, 5, 5, 5, 5]
    points = np.concatenate([c + 0.1 * rng.standard_normal((size, 8)) for c, size in zip(centers, sizes)])
    for seed in range(5):
        first = int(np.random.default_rng(seed).integers(len(points)))
        picks, gains = k_center_greedy(points, 5, first)
        random_picks = np.random.default_rng(seed).permutation(len(points))[:5].tolist()
        assert len(set(picks)) == 5
        assert covering_radius(points, picks) <= covering_radius(points, random_picks)
        assert covering_radius(points, picks) < 1.0  # every cluster got a center
        assert gains[0] == 0 and all(g > 5 for g in gains[1:])  # each later pick opened a new cluster


def test_k_center_picks_k_distinct_examples_when_there_are_fewer_distinct_points() -> None:
    """Exact duplicates (the same text twice) embed identically: once every distinct point has a center, the
    rest are copies at distance 0, and each is still picked once."""
    points = np.repeat(np.eye(3), [3, 2, 2], axis=0)  # 7 points, 3 distinct
    picks, gains = k_center_greedy(points, 6, first=0)
    assert len(set(picks)) == 6
    assert sorted({tuple(points[i]) for i in picks[:3]}) == sorted({tuple(r) for r in np.eye(3)})
    assert gains[1:3] == [pytest.approx(2**0.5)] * 2 and gains[3:] == [0.0, 0.0, 0.0]


def test_diverse_on_the_models_embeddings(scored: dict, tmp_path: Path) -> None:
    manifest, kept = _select(scored["data"], tmp_path / "out", "diverse", k=6, seed=1)
    assert len(set(kept)) == 6 and manifest["value"] == "distance_to_nearest_earlier_pick"
    gains = [e["value"] for e in manifest["kept"]]
    assert all(a >= b for a, b in zip(gains[1:], gains[2:]))  # greedy gains never grow
    assert _select(scored["data"], tmp_path / "again", "diverse", k=6, seed=1)[1] == kept


def test_policies_without_their_scores_say_which_command_makes_them(scored: dict, tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture) -> None:
    from lit_gpt.utils import cli

    bare = tmp_path / "bare"
    shutil.copytree(scored["data"], bare)
    (bare / "train" / EMBEDDINGS_NAME).unlink()
    unscored = tmp_path / "unscored"
    shutil.copytree(scored["data"], unscored, ignore=shutil.ignore_patterns("scores.*", "embeddings.npy"))
    out = str(tmp_path / "out")
    cases = [
        ([str(unscored), "ifd", "--k", "3"], "scripts/score_dataset.py --data_dir"),
        ([str(unscored), "loss_band", "--k", "3"], "scripts/score_dataset.py --data_dir"),
        ([str(bare), "diverse", "--k", "3"], "--embeddings true"),
        ([str(bare), "judge", "--k", "3"], "--judge_checkpoint_dir"),
        ([str(bare), "random", "--k", "99"], "between 1 and 32"),
        ([str(bare), "random", "--k", "3", "--fraction", "0.5"], "exactly one of --k"),
        ([str(bare), "random"], "exactly one of --k"),
        ([str(bare), "random", "--fraction", "1.5"], "(0, 1]"),
    ]
    for (data, policy, *rest), message in cases:
        with pytest.raises(SystemExit) as exit_info:
            cli(select_script.select_dataset, args=["--data_dir", data, "--policy", policy, "--destination_path", out, *rest])
        assert exit_info.value.code == 1
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
    with pytest.raises(UserError, match="new folder"):
        select_script.select_dataset(bare, "random", bare, k=3)
    # random and longest need no scores at all
    assert len(_select(unscored, tmp_path / "plain", "longest", k=3)[1]) == 3
    assert not (tmp_path / "plain" / "scores.json").exists()
