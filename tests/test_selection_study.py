"""bench/selection_study.py: the matrix as data, equal-token steps, the paired statistics, and a smoke run of a few
arms end to end with the toolkit's commands (tiny model), killed and resumed to the same results."""
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from helpers import finetune_workspace, load_script

study = load_script("bench/selection_study.py")


def test_arms_cover_the_issue_and_bring_their_baselines():
    names = set(study.ARM_NAMES)
    for arm in ("full", "random", "longest", "ifd", "loss_band", "judge", "diverse", "dedup", "lima", "mix_random",
                "order_length", "order_ifd", "lima_epochs1", "lima_epochs3", "lima_epochs5", "neftune"):
        assert arm in names
    assert [a.name for a in study._arms(["mix_ifd"])] == ["random", "mix_random", "mix_ifd"]
    with pytest.raises(study.UserError, match="--arms nope: not an arm"):
        study._arms(["nope"])


def _study(**overrides) -> "study.Study":
    return study.Study(**dict(checkpoint_dir=Path("x"), files={}, out_dir=Path("x"), results_dir=Path("x"), arms=[],
                              eval_sets=[], answer_sets=[], answer_instructions=None,
                              learning_rate=1e-3, mix_weights=[1, 1], token_budget=None, compute="both",
                              equal_steps_arms=None,
                              eval_batch_size=8, evaluate_base=False, precision=None, k=100, pool=None, seeds=[1],
                              budget_epochs=3,
                              batch_size=10, micro_batch_size=5, eval_instructions=None, max_new_tokens=8) | overrides)


def test_equal_tokens_steps_follow_each_arms_mean_tokens():
    s = _study()
    budget = s.budget(pool_mean_trainable=50.0)
    assert budget == 3 * 100 * 50
    arm = study.Arm("longest", "selection", policy="longest")
    long_steps = s._steps(arm, "tokens", 100, 150.0, budget)  # answers 3x the pool's mean: a third of the steps
    assert long_steps == 10 and long_steps * 10 * 150.0 == budget
    assert s._steps(arm, "steps", 100, 150.0, budget) == 30  # equal steps: 3 epochs of k whatever the lengths
    assert s._steps(study.Arm("e", "epochs", epochs=5), "epochs", 95, 1.0, budget) == 48  # ceil(5 x 95 / 10)
    assert s._modes(arm) == ["tokens", "steps"]
    assert _study(equal_steps_arms=["ifd"])._modes(arm) == ["tokens"]  # longest is not among them
    assert _study(equal_steps_arms=["longest"])._modes(arm) == ["tokens", "steps"]


def test_paired_statistics():
    out = study.paired([0.1, 0.2, 0.3])
    from scipy import stats

    half = stats.t.ppf(0.975, 2) * 0.1 / math.sqrt(3)
    assert out["mean_diff"] == pytest.approx(0.2)
    assert out["ci95"] == pytest.approx([0.2 - half, 0.2 + half])
    assert out["p_t"] == pytest.approx(stats.ttest_1samp([0.1, 0.2, 0.3], 0).pvalue)
    assert out["p_sign_flip"] == pytest.approx(2 / 8)  # only all-positive and all-negative are as extreme
    crossing = study.paired([0.1, -0.2, 0.05])
    assert crossing["ci95"][0] < 0 < crossing["ci95"][1]
    assert study.verdict("val_loss", {"vs_baseline": crossing}, "random") == "no difference at this scale"
    assert study.verdict("val_loss", {"vs_baseline": study.paired([-0.1, -0.11, -0.09])}, "random") == \
        "better than random"
    assert study.verdict("lima_win_rate", {"vs_baseline": study.paired([0.1, 0.11, 0.09])}, "random") == \
        "beats random"
    # a judge that always picks the answer shown first ties every pair (both orders): that is not "no difference"
    biased = {"vs_baseline": study.paired([0.0, 0.0, 0.0]), "first_shown_preferred": 1.0}
    assert study.verdict("lima_win_rate", biased, "random") == \
        "judge uninformative: it preferred the answer shown first in 100% of its verdicts"
    assert study.verdict("lima_win_rate", biased | {"first_shown_preferred": 0.6}, "random") == \
        "no difference at this scale"


def _raw_files(root: Path) -> dict[str, Path]:
    lima = [{"instruction": f"Explain idea {i} about bread and colors.", "input": "",
             "output": "Mix flour, water, salt and yeast. " * (1 + i % 3),
             "history": [["How do I bake bread?", "Knead, rest, shape and bake."]] if i % 4 == 0 else []}
            for i in range(60)]  # a test split of 3
    (root / "lima.json").write_text(json.dumps(lima))
    trees = [{"message_tree_id": f"t{i}", "tree_state": "ready_for_export",
              "prompt": {"message_id": f"p{i}", "role": "prompter", "lang": "en", "text": f"What is the capital {i}?",
                         "replies": [{"message_id": f"a{i}", "role": "assistant", "rank": 1, "text": "Rome."},
                                     {"message_id": f"b{i}", "role": "assistant", "rank": 0,
                                      "text": f"Paris is the capital of France, {i}."}]}} for i in range(5)]
    (root / "oasst.jsonl").write_text("\n".join(json.dumps(t) for t in trees) + "\n")
    return {"alpaca_file": root / "ws" / "alpaca.json", "lima_file": root / "lima.json",
            "oasst_file": root / "oasst.jsonl"}


def test_oasst_set_is_each_first_prompt_with_its_top_ranked_answer(tmp_path):
    files = _raw_files(tmp_path)
    s = _study(files={"oasst": files["oasst_file"]}, out_dir=tmp_path / "study", eval_sets=["oasst"],
               eval_instructions=3, answer_sets=["oasst"], answer_instructions=2)
    losses, answers = s._write_eval_sets(tmp_path / "data")
    written = json.loads(losses["oasst"].read_text())
    assert written == [{"instruction": f"What is the capital {i}?", "input": "",
                        "output": f"Paris is the capital of France, {i}."} for i in range(3)]
    assert json.loads(answers["oasst"].read_text()) == written[:2]  # answered and judged: the first 2 only


def test_smoke_run_end_to_end_then_resumed(tmp_path, capsys):
    ws = finetune_workspace(tmp_path / "ws")
    out = tmp_path / "study"
    flags = dict(checkpoint_dir=ws["checkpoint"], out_dir=out, results_dir=out / "results", scale="smoke",
                 arms=["random", "longest"],
                 eval_sets=["val", "lima"], answer_sets=["lima"], answer_instructions=2, evaluate_base=False,
                 compute="tokens", seeds=[1, 2],
                 **_raw_files(tmp_path))
    study.main(**flags, dry_run=True)
    assert not out.exists()  # the plan only
    assert "finetune runs: 4 (random-k is also" in capsys.readouterr().out

    results = study.main(**flags)
    ledger = json.loads((out / "ledger.json").read_text())["steps"]
    assert {"prepare-alpaca", "prepare-lima", "decontaminate-alpaca"} <= set(ledger)
    entry = ledger["finetune-" + Path(results["runs"][0]["run"]).name]
    assert entry["command"][:2] == ["python", "finetune/lora.py"] and entry["host"] and entry["device"]
    assert entry["start"] <= entry["end"]

    # equal tokens: every run's steps are the budget over its own data's mean trainable tokens per step
    budget = results["budget_trainable_tokens"]
    for r in results["runs"]:
        trainable = study._token_counts(Path(r["data"]), "train")[0]
        assert r["steps"] == max(1, round(budget / (trainable.mean() * 4)))
        assert r["trainable_tokens"] > 0
    longest = study._token_counts(out / "data" / "alpaca-longest-8", "train")[0]
    drawn = study._token_counts(out / "data" / "alpaca-random-8-s1", "train")[0]
    assert longest.mean() > drawn.mean()

    # the evaluation sets are the held-out splits, and no training arm holds one of their texts
    val = json.loads((out / "eval_sets" / "val.json").read_text())
    assert len(val) == len(study._token_counts(out / "data" / "alpaca", "test")[0])
    lima = json.loads((out / "eval_sets" / "lima.json").read_text())
    assert len(lima) == len(study._token_counts(out / "data" / "lima", "test")[0])
    assert "alpaca" in results["decontamination"]
    # reference losses over the whole set, answers (and judging) over its first --answer_instructions
    run_name = Path(results["runs"][0]["run"]).name
    scored = json.loads((out / "eval" / "lima" / run_name / "reference_loss.json").read_text())["summary"]
    assert scored["with_reference"] == min(4, len(lima)) > 2
    assert len((out / "answers" / "lima" / run_name / "answers.jsonl").read_text().splitlines()) == 2

    rows = {(r["arm"], r["compute"]): r for r in results["rows"]}
    longest_row = rows[("longest", "tokens")]
    assert set(longest_row["measures"]) >= {"val_loss", "lima_ref_loss", "lima_answer_words"}
    for r in results["runs"]:  # each longest run judged against random of its seed (a tiny judge may not parse)
        assert set(r["pairwise"]) == ({"lima"} if r["arm"] == "longest" else set())
        for path in r["pairwise"].values():
            pair = json.loads(Path(path).read_text())
            assert pair["a"]["answers"].endswith(f"s{r['seed']}/answers.jsonl")
            assert f"random-8-s{r['seed']}" in pair["b"]["answers"]
    val_loss = longest_row["measures"]["val_loss"]
    assert len(val_loss["values"]) == 2 and val_loss["vs_baseline"]["n"] == 2
    random_val = rows[("random", "tokens")]["measures"]["val_loss"]["values"]
    assert val_loss["vs_baseline"]["mean_diff"] == pytest.approx(np.mean(np.subtract(val_loss["values"], random_val)))
    md = (out / "results" / "results.md").read_text()
    shared = results["overlaps"]["shared"]
    assert results["overlaps"]["arms"] == ["random", "longest"] and shared["longest"]["longest"] == 8
    def kept(run: dict) -> set[int]:
        return {k["index"] for k in json.loads((Path(run["data"]) / "manifest.json").read_text())["kept"]}

    assert shared["random"]["longest"] == shared["longest"]["random"] == len(kept(results["runs"][0]) &
                                                                             kept(results["runs"][-1]))
    assert "## How much the selections share" in md
    assert "## Confounds" in md and "**longest** (tokens)" in md and "| longest | tokens |" in md
    assert (out / "results" / "results.png").stat().st_size > 0
    assert json.loads((out / "results" / "ledger.json").read_text())["steps"] == ledger

    # a run killed before it was recorded: its ledger entry and folder gone, the rerun makes it again, same numbers
    last = list(ledger)[-1]
    for path in ledger[last]["outputs"]:
        shutil.rmtree(Path(path).parent)
    del ledger[last]
    (out / "ledger.json").write_text(json.dumps({"steps": ledger}))
    again = study.main(**flags)
    assert json.loads((out / "ledger.json").read_text())["steps"].keys() == set(ledger) | {last}
    assert [r["measures"] for r in again["rows"]] == [r["measures"] for r in results["rows"]]
