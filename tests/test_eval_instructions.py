"""Held-out instruction evaluation on a tiny random model: batched greedy decoding equals one prompt at a time,
answers and reference losses equal what the model gives by hand, a killed run resumes to the same file, the
pairwise statistics on verdicts with known answers, a random judge's unparseable verdicts counted, and refusals."""
from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lit_gpt.config import Config
from lit_gpt.eval.answers import ANSWERS_NAME, REFERENCE_LOSS_NAME
from lit_gpt.eval.instructions import JsonlStore, read_instruction_file
from lit_gpt.eval.judge import (bootstrap_interval, length_controlled_win_rate, parse_verdict, position_bias_warning,
                                preference, win_rate, win_rate_summary)
from lit_gpt.generate import generate_batch, generate_tokens, sample
from lit_gpt.model import GPT
from lit_gpt.tokenizer import Tokenizer
from lit_gpt.utils import UserError, cli

from prepare_helpers import CHATML, tiny_bpe_checkpoint

ROOT = Path(__file__).resolve().parents[1]
ROWS = [
    {"instruction": "Name three primary colors.", "output": "Red, blue and yellow."},
    {"instruction": "What is the capital of France?", "output": "Paris is the capital of France."},
    {"instruction": "How do I bake bread?", "input": "Use flour.", "output": "Mix flour, water, salt and yeast."},
    {"instruction": "Say 42.", "output": "42!"},
    {"instruction": "Describe the fox.", "output": "The quick brown fox jumps over the lazy dog."},
    {"instruction": "Count to three.", "output": "1, 2, 3."},
    {"instruction": "What is the sky?"},  # no reference: answered, not scored
]


def _load_script(path: str):
    spec = importlib.util.spec_from_file_location(Path(path).stem + "_eval_script", ROOT / path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


answer_script = _load_script("eval/answer.py")
pairwise_script = _load_script("eval/pairwise.py")


def _tiny_model(vocab_size: int, sliding_window: int | None = None) -> GPT:
    config = Config(name="tiny", vocab_size=vocab_size, n_layer=2, n_embd=32, n_head=4, n_query_groups=2,
                    intermediate_size=64, block_size=512, sliding_window=sliding_window)
    torch.manual_seed(0)
    return GPT(config).eval()


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny random chat checkpoint (ChatML, EOS <|im_end|>), one without a chat template, and the instructions
    as a JSON list."""
    from lit_gpt.checkpoint import save_weights
    from lit_gpt.utils import LIT_WEIGHTS_NAME

    root = tmp_path_factory.mktemp("evalinst")
    paths = {"root": root}
    for name, template in (("chat", CHATML), ("plain", None)):
        checkpoint = tiny_bpe_checkpoint(root / name, bos=False, chat_template=template)
        model = _tiny_model(Tokenizer(checkpoint).vocab_size)
        save_weights(model.state_dict(), checkpoint / LIT_WEIGHTS_NAME)
        model.config.save(checkpoint)
        paths[name] = checkpoint
    (root / "heldout.json").write_text(json.dumps(ROWS))
    paths["data"] = root / "heldout.json"
    return paths


def _answer(workspace: dict, out_dir: Path, **kwargs):
    kwargs = {"max_new_tokens": 12, "batch_size": 3, **kwargs}
    return answer_script.main(workspace["chat"], kwargs.pop("data_file", workspace["data"]), out_dir=out_dir,
                              **kwargs)


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# ------------------------------------------------------------------------------------------------ generation


@pytest.mark.parametrize("sliding_window", [None, 4])
def test_batched_greedy_equals_one_prompt_at_a_time(sliding_window: int | None) -> None:
    model = _tiny_model(100, sliding_window)
    g = torch.Generator().manual_seed(1)
    prompts = [torch.randint(0, 100, (n,), generator=g).tolist() for n in (3, 11, 7, 1, 5)]
    alone = [list(generate_tokens(model, torch.tensor(p), 15, top_k=1)) for p in prompts]
    assert generate_batch(model, prompts, 15) == alone
    # a row that reaches EOS stops there (EOS included) while the others go on
    eos = alone[1][3]
    alone = [list(generate_tokens(model, torch.tensor(p), 15, top_k=1, eos_id=eos)) for p in prompts]
    assert generate_batch(model, prompts, 15, eos_id=eos) == alone
    assert len(alone[1]) == alone[1].index(eos) + 1 <= 4 and max(map(len, alone)) == 15


def test_sampling_a_batch_stays_within_each_rows_top_k() -> None:
    logits = torch.randn(4, 50, generator=torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(0)
    drawn = torch.cat([sample(logits, temperature=1.0, top_k=3, generator=g) for _ in range(50)], dim=1)  # (4, 50)
    top3 = logits.topk(3).indices
    assert all(set(drawn[row].tolist()) <= set(top3[row].tolist()) for row in range(4))
    assert sample(logits, temperature=0.0).flatten().tolist() == logits.argmax(-1).tolist()
    assert sample(logits[0], temperature=1.0, top_k=1).shape == (1,)  # one row as before


# ------------------------------------------------------------------------------------------------ reading


def test_json_jsonl_and_csv_give_the_same_instructions(tmp_path: Path) -> None:
    import csv

    alpaca_eval = [{**r, "dataset": "mine", "generator": "gpt4"} for r in ROWS]  # AlpacaEval's extra fields
    (tmp_path / "a.json").write_text(json.dumps(alpaca_eval))
    (tmp_path / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    with (tmp_path / "a.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, ["instruction", "input", "output"])
        writer.writeheader()
        writer.writerows(ROWS)
    read = [read_instruction_file(tmp_path / name) for name in ("a.json", "a.jsonl", "a.csv")]
    assert read[0] == read[1] == read[2]
    assert [i.reference for i in read[0]] == [r.get("output") for r in ROWS]
    assert read[0][2].input == "Use flour." and len({i.id for i in read[0]}) == len(ROWS)


@pytest.mark.parametrize("content, suffix, message", [
    ([{"prompt": "Hi", "output": "Hello"}], ".json", "record 1: no 'instruction' field (fields present: 'prompt'"),
    ("prompt,output\nHi,Hello\n", ".csv", "the header has no 'instruction' column"),
    ([{"instruction": " ", "output": "x"}], ".json", "record 1: empty 'instruction'"),
    ([{"instruction": "Hi"}, {"instruction": "Hi"}], ".json", "record 2: the same instruction as record 1"),
])
def test_bad_instruction_files_are_refused_in_one_line(workspace: dict, tmp_path: Path, capsys, content, suffix,
                                                       message) -> None:
    path = tmp_path / f"bad{suffix}"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    with pytest.raises(SystemExit) as exit_info:
        cli(answer_script.main, args=["--checkpoint_dir", str(workspace["chat"]), "--data_file", str(path),
                                      "--out_dir", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert exit_info.value.code == 1 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------------------ answers


def test_answers_are_the_models_greedy_answers_in_file_order(workspace: dict, tmp_path: Path) -> None:
    from lit_gpt.checkpoint import load_model
    from lit_gpt.prompts import load_prompt_style

    result = _answer(workspace, tmp_path / "out")
    lines = _lines(tmp_path / "out" / ANSWERS_NAME)
    assert [r["row"] for r in lines] == list(range(len(ROWS))) and set(result) == {"chat"}
    tokenizer = Tokenizer(workspace["chat"])
    model = load_model(workspace["chat"]).eval()
    style = load_prompt_style("auto", tokenizer)
    assert style.name == "chat"
    for row, line in zip(ROWS, lines):
        user = f"{row['instruction']}\n\n{row['input']}" if row.get("input") else row["instruction"]
        prompt = tokenizer.apply_chat_template([{"role": "user", "content": user}], add_generation_prompt=True)
        new = list(generate_tokens(model, torch.tensor(tokenizer.encode(prompt)), 12, top_k=1,
                                   eos_id=tokenizer.eos_id))
        assert line["output"] == tokenizer.decode(new, skip_special_tokens=True).strip()
        assert line["finished"] == (new[-1] == tokenizer.eos_id) and line["new_tokens"] == len(new) - line["finished"]
        assert line["reference"] if "output" in row else "reference" not in line
        assert line["generator"] == "chat" and line["instruction"] == row["instruction"]
    settings = json.loads((tmp_path / "out" / "settings.json").read_text())
    assert {line["settings"] for line in lines} == {settings["sha"]} and settings["prompt_style"] == "chat"


def test_reference_loss_is_the_models_loss_on_the_reference_tokens(workspace: dict, tmp_path: Path) -> None:
    from lit_gpt.checkpoint import load_model

    _answer(workspace, tmp_path / "out", generate=False)
    assert not (tmp_path / "out" / ANSWERS_NAME).exists()
    losses = json.loads((tmp_path / "out" / REFERENCE_LOSS_NAME).read_text())
    tokenizer = Tokenizer(workspace["chat"])
    model = load_model(workspace["chat"]).eval()
    total, tokens, by_row = 0.0, 0, {r["row"]: r for r in losses["instructions"]}
    for i, row in enumerate(ROWS[:-1]):
        user = f"{row['instruction']}\n\n{row['input']}" if row.get("input") else row["instruction"]
        prompt = tokenizer.encode(tokenizer.apply_chat_template([{"role": "user", "content": user}],
                                                                add_generation_prompt=True))
        # ChatML: the reference and its end-of-turn token (EOS) carry the loss, as in training
        response = tokenizer.encode(row["output"] + "<|im_end|>")
        ids = torch.tensor(prompt + response)
        with torch.no_grad():
            logits = model(ids[None])[0]
        nll = F.cross_entropy(logits[len(prompt) - 1 : -1], ids[len(prompt):], reduction="sum").item()
        assert by_row[i]["loss"] == pytest.approx(nll / len(response), rel=1e-5)
        assert by_row[i]["tokens"] == len(response)
        total, tokens = total + nll, tokens + len(response)
    summary = losses["summary"]
    assert summary["with_reference"] == len(ROWS) - 1 and summary["reference_tokens"] == tokens
    assert summary["loss_per_token"] == pytest.approx(total / tokens, rel=1e-5)
    assert summary["perplexity"] == pytest.approx(math.exp(total / tokens), rel=1e-5)


def test_references_longer_than_the_context_are_cut_and_counted(workspace: dict) -> None:
    from lit_gpt.checkpoint import load_model
    from lit_gpt.eval.answers import reference_losses
    from lit_gpt.eval.instructions import Instruction
    from lit_gpt.prompts import load_prompt_style

    tokenizer = Tokenizer(workspace["chat"])
    model = load_model(workspace["chat"]).eval()
    style = load_prompt_style("chat", tokenizer)
    long_answer = Instruction("a", 0, "Say 42.", reference="42 " * 1000)
    long_prompt = Instruction("b", 1, "fox " * 600, reference="ok")
    fits = Instruction("c", 2, "Say 42.", reference="42!")
    result = reference_losses(model, tokenizer, style, [long_answer, long_prompt, fits], batch_size=2)
    rows = {r["id"]: r for r in result["instructions"]}
    prompt = tokenizer.encode(style.prompt("Say 42."))
    reference = tokenizer.encode("42 " * 1000 + "<|im_end|>")
    assert rows["a"]["tokens"] == 512 - len(prompt) and rows["a"]["truncated_reference_tokens"] == len(reference) - rows["a"]["tokens"]
    assert rows["b"]["loss"] is None and rows["b"]["tokens"] == 0 and rows["b"]["truncated_reference_tokens"] > 0
    assert rows["c"]["truncated_reference_tokens"] == 0 and rows["c"]["loss"] > 0
    assert result["summary"]["truncated"] == 2 and result["summary"]["with_reference"] == 3


def test_a_killed_run_resumes_to_the_same_file(workspace: dict, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    import lit_gpt.generate

    _answer(workspace, tmp_path / "whole")
    whole = (tmp_path / "whole" / ANSWERS_NAME).read_text()
    real, calls = lit_gpt.generate.generate_batch, []

    def killed_after_two_batches(model, prompts, *args, **kwargs):
        calls.append(len(prompts))
        if len(calls) == 3:
            raise KeyboardInterrupt  # the kill, while the third batch is being generated
        return real(model, prompts, *args, **kwargs)

    monkeypatch.setattr(lit_gpt.generate, "generate_batch", killed_after_two_batches)
    with pytest.raises(KeyboardInterrupt):
        _answer(workspace, tmp_path / "killed")
    path = tmp_path / "killed" / ANSWERS_NAME
    assert len(_lines(path)) == 6
    # a kill in the middle of a write leaves a line without its end: it is dropped and answered again
    first = path.read_text().splitlines()[0]
    with path.open("a") as f:
        f.write(first[: len(first) // 2])
    calls.clear()
    monkeypatch.setattr(lit_gpt.generate, "generate_batch", killed_after_two_batches)
    result = _answer(workspace, tmp_path / "killed")
    assert calls == [1] and result["chat"]["answers"]["already_done"] == 6
    assert path.read_text() == whole
    # done: a rerun answers nothing
    calls.clear()
    assert _answer(workspace, tmp_path / "killed")["chat"]["answers"]["answered"] == 0 and calls == []


def test_a_sigkilled_process_resumes_to_the_same_file(workspace: dict, tmp_path: Path) -> None:
    """The real thing: eval/answer.py killed with SIGKILL once it has written answers, then run again."""
    import os
    import signal
    import subprocess
    import sys
    import time

    rows = [{"instruction": f"Count to {i} and name a color."} for i in range(12)]
    data = tmp_path / "many.json"
    data.write_text(json.dumps(rows))
    args = ["--checkpoint_dir", str(workspace["chat"]), "--data_file", str(data), "--max_new_tokens", "60",
            "--batch_size", "1", "--reference_loss", "false"]
    path = tmp_path / "killed" / ANSWERS_NAME
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    child = subprocess.Popen([sys.executable, str(ROOT / "eval" / "answer.py"), *args, "--out_dir", str(path.parent)],
                             cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while child.poll() is None and time.monotonic() < deadline:
        if path.is_file() and path.read_text().count("\n") >= 2:
            os.kill(child.pid, signal.SIGKILL)
            break
        time.sleep(0.01)
    child.wait()
    done = path.read_text().count("\n")
    assert child.returncode == -signal.SIGKILL and 2 <= done < len(rows)
    result = cli(answer_script.main, args=[*args, "--out_dir", str(path.parent)])
    assert result["chat"]["answers"]["already_done"] == done
    cli(answer_script.main, args=[*args, "--out_dir", str(tmp_path / "whole"), "--batch_size", "4"])
    assert path.read_text() == (tmp_path / "whole" / ANSWERS_NAME).read_text()


def test_one_file_never_mixes_settings_or_instruction_sets(workspace: dict, tmp_path: Path) -> None:
    _answer(workspace, tmp_path / "out")
    with pytest.raises(UserError, match="other settings \\(changed: max_new_tokens\\)"):
        _answer(workspace, tmp_path / "out", max_new_tokens=13)
    other = tmp_path / "other.json"
    other.write_text(json.dumps(ROWS[:2] + [{"instruction": "Something else."}]))
    with pytest.raises(UserError, match="answers to 5 instructions that are not in this instruction file"):
        _answer(workspace, tmp_path / "out", data_file=other)
    # a line written under other settings is refused too, even without settings.json
    store_path = tmp_path / "mixed.jsonl"
    store_path.write_text(json.dumps({"id": "x", "settings": "aaaa"}) + "\n")
    with pytest.raises(UserError, match="line 1: made with other settings"):
        JsonlStore(store_path, "bbbb")


def test_several_adapters_each_get_a_folder_and_their_prompt_style(workspace: dict, tmp_path: Path) -> None:
    from lit_gpt.checkpoint import load_model
    from lit_gpt.lora import LoRAConfig, apply_lora, lora_state_dict, save_lora

    config = LoRAConfig(lora_r=2)
    for epoch, style in ((1, "alpaca"), (2, "chat")):
        model = apply_lora(load_model(workspace["chat"]), config)
        torch.manual_seed(epoch)
        state = {k: torch.randn_like(v) for k, v in lora_state_dict(model).items()}  # B != 0: not the base
        save_lora(state, config, tmp_path / "lora" / f"epoch-{epoch}" / "lit_lora.safetensors", style)
    adapters = [tmp_path / "lora" / f"epoch-{e}" / "lit_lora.safetensors" for e in (1, 2)]
    result = answer_script.main(workspace["chat"], workspace["data"], lora_path=adapters, out_dir=tmp_path / "eval",
                                max_new_tokens=8, batch_size=4)
    assert set(result) == {"chat+epoch-1", "chat+epoch-2"}
    assert json.loads((tmp_path / "eval" / "summary.json").read_text()) == result
    single = answer_script.main(workspace["chat"], workspace["data"], lora_path=adapters[:1],
                                out_dir=tmp_path / "single", max_new_tokens=8, batch_size=4)
    assert (tmp_path / "eval" / "epoch-1" / ANSWERS_NAME).read_text() == (tmp_path / "single" / ANSWERS_NAME).read_text()
    styles = [json.loads((tmp_path / "eval" / f"epoch-{e}" / "settings.json").read_text())["prompt_style"]
              for e in (1, 2)]
    assert styles == ["alpaca", "chat"]
    losses = [result[f"chat+epoch-{e}"]["reference_loss"]["loss_per_token"] for e in (1, 2)]
    assert losses[0] != losses[1] and single["chat+epoch-1"]["reference_loss"]["loss_per_token"] == losses[0]


# ------------------------------------------------------------------------------------------------ the judge


@pytest.mark.parametrize("text, expected", [
    ("Verdict: A", "A"), ("Verdict: B\nResponse B lists all three.", "B"), ("Verdict: tie", "tie"),
    ("Verdict: a tie, both are fine", "tie"), ("Verdict: **Response B** is better", "B"),
    ("Winner: [[A]]", "A"), ("[[C]]", "tie"), ("Response A is better because", "A"), ("I prefer B.", "B"),
    ("Verdict: Apples are red", None), ("Verdict:", None), ("Verdict: 4", None), ("", None),
])
def test_verdicts_are_parsed(text: str, expected: str | None) -> None:
    assert parse_verdict(text) == expected


def test_win_rate_counts_both_orders_ties_and_unparseable() -> None:
    a_wins = {"ab": "A", "ba": "B"}
    b_wins = {"ab": "B", "ba": "A"}
    first_shown = {"ab": "A", "ba": "A"}  # pure position bias: a tie
    one_order = {"ab": None, "ba": "B"}  # the other order unparseable: its one verdict counts
    unjudged = {"ab": None, "ba": None}
    verdicts = [a_wins] * 5 + [b_wins] * 2 + [first_shown] * 2 + [one_order, unjudged]
    assert [preference(v) for v in (a_wins, b_wins, first_shown, one_order)] == [1.0, 0.0, 0.5, 1.0]
    s = win_rate_summary(verdicts, [10] * 11, [10] * 11, bootstrap_samples=200)
    assert s["win_rate"] == pytest.approx((5 + 1 + 1) / 10)  # 5 + one_order wins, 2 ties count half
    assert (s["wins"], s["ties"], s["losses"], s["judged"], s["unjudged_instructions"]) == (6, 2, 2, 10, 1)
    assert (s["verdicts"], s["unparseable_verdicts"], s["judged_in_both_orders"]) == (22, 3, 9)
    assert s["first_shown_preferred"] == pytest.approx(11 / 19)
    assert s["consistent_in_both_orders"] == pytest.approx(7 / 9)
    assert s["second_shown_preferred"] == pytest.approx(8 / 19) and position_bias_warning(s) is None
    biased = win_rate_summary([first_shown] * 9 + [a_wins], [10] * 10, [10] * 10, bootstrap_samples=0)
    assert biased["win_rate"] == pytest.approx(0.55) and biased["first_shown_preferred"] == pytest.approx(0.95)
    assert "picked the answer shown first in 95% of its verdicts" in position_bias_warning(biased)
    nothing = win_rate_summary([unjudged] * 3, [1, 2, 3], [3, 2, 1], bootstrap_samples=50)
    assert nothing["win_rate"] is None and nothing["win_rate_ci95"] is None and nothing["unparseable_verdicts"] == 6


def test_bootstrap_interval_matches_the_normal_approximation() -> None:
    rng = np.random.default_rng(0)
    prefs = (rng.random(400) < 0.6).astype(float)
    low, high = bootstrap_interval(win_rate, [prefs], samples=2000, seed=0)
    half = 1.96 * math.sqrt(prefs.mean() * (1 - prefs.mean()) / len(prefs))
    assert low < prefs.mean() < high and (high - low) / 2 == pytest.approx(half, rel=0.15)
    assert bootstrap_interval(win_rate, [np.ones(30)], samples=100) == (1.0, 1.0)


@pytest.mark.parametrize("theta", [0.0, 1.0])
def test_length_control_removes_a_preference_for_length(theta: float) -> None:
    """Verdicts drawn from P(a preferred) = sigmoid(theta + 2 tanh(d / std d)) with a mostly longer: the raw win
    rate is inflated by length, the length-controlled one recovers sigmoid(theta)."""
    rng = np.random.default_rng(0)
    d = rng.normal(100, 100, 4000)
    p = 1 / (1 + np.exp(-(theta + 2 * np.tanh(d / d.std()))))
    prefs = (rng.random(len(d)) < p).astype(float)
    expected = 1 / (1 + math.exp(-theta))
    assert win_rate(prefs) > expected + 0.1
    assert length_controlled_win_rate(prefs, 500 + d, np.full(len(d), 500.0)) == pytest.approx(expected, abs=0.03)


def test_win_rate_by_length_bucket() -> None:
    verdicts = [{"ab": "A", "ba": "B"}] * 3 + [{"ab": "B", "ba": "A"}] * 2 + [{"ab": "tie", "ba": "tie"}]
    length_a, length_b = [200, 200, 100, 50, 50, 100], [100, 100, 95, 100, 100, 100]
    buckets = {b["bucket"]: b for b in win_rate_summary(verdicts, length_a, length_b, 0)["by_length"]}
    assert buckets["a longer by over 20%"]["win_rate"] == 1.0 and buckets["a longer by over 20%"]["instructions"] == 2
    assert buckets["a shorter by over 20%"]["win_rate"] == 0.0
    assert buckets["within 20%"]["win_rate"] == 0.75 and buckets["within 20%"]["instructions"] == 2


def test_pairwise_with_a_random_judge_counts_unparseable_verdicts(workspace: dict, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    _answer(workspace, tmp_path / "a")
    _answer(workspace, tmp_path / "b", prompt_style="alpaca")
    report = pairwise_script.main(tmp_path / "a", tmp_path / "b" / ANSWERS_NAME, workspace["chat"],
                                  out_dir=tmp_path / "pw", batch_size=4, bootstrap_samples=100)
    s = report["summary"]
    assert s["instructions"] == len(ROWS) and s["verdicts"] == 2 * len(ROWS)
    verdicts = _lines(tmp_path / "pw" / "verdicts.jsonl")
    parsed = [v for v in verdicts if v["verdict"] is not None]
    assert s["unparseable_verdicts"] == len(verdicts) - len(parsed) > 0  # a random judge writes no verdict
    assert all(v["text"].startswith("Verdict:") for v in verdicts)  # all fit the judge's context
    assert s["judged"] + s["unjudged_instructions"] == len(ROWS)
    assert report["a"]["reference_loss"]["with_reference"] == len(ROWS) - 1
    saved = json.loads((tmp_path / "pw" / "pairwise.json").read_text())
    assert saved["summary"]["verdicts"] == 2 * len(ROWS) and len(saved["instructions"]) == len(ROWS)
    markdown = (tmp_path / "pw" / "pairwise.md").read_text()
    assert f"| unparseable verdicts | {s['unparseable_verdicts']} of {2 * len(ROWS)} |" in markdown
    assert markdown.count("### Row") == 5 and ROWS[0]["instruction"] in markdown
    # a rerun finds every verdict in verdicts.jsonl and loads no judge
    import lit_gpt.checkpoint

    monkeypatch.setattr(lit_gpt.checkpoint, "load_model", lambda *a, **k: pytest.fail("judge loaded again"))
    again = pairwise_script.main(tmp_path / "a", tmp_path / "b", workspace["chat"], out_dir=tmp_path / "pw",
                                 bootstrap_samples=100)
    assert again["summary"] == s


def test_a_pair_too_long_for_the_judge_is_counted_not_judged(workspace: dict) -> None:
    from lit_gpt.checkpoint import load_model
    from lit_gpt.eval.judge import PairwiseJudge

    judge = PairwiseJudge(load_model(workspace["chat"]).eval(), Tokenizer(workspace["chat"]), max_new_tokens=4)
    short, long = ("Say 42.", "42", "42!"), ("Say 42.", "42 " * 300, "42!")
    results = judge.judge([short, long])
    assert results[0][1].startswith("Verdict:") and results[1][0] is None
    assert results[1][1].startswith("(not judged: ") and "exceed the judge's context" in results[1][1]


def test_pairwise_refusals_are_one_line(workspace: dict, tmp_path: Path, capsys) -> None:
    _answer(workspace, tmp_path / "a")
    subset = tmp_path / "subset.json"
    subset.write_text(json.dumps(ROWS[:4]))
    _answer(workspace, tmp_path / "b", data_file=subset)
    capsys.readouterr()
    cases = [
        ([tmp_path / "a", tmp_path / "b", workspace["chat"]], "answer different instruction sets (7 and 4 answers; "
                                                              "3 only in the first, 0 only in the second"),
        ([tmp_path / "a", tmp_path / "a", workspace["plain"]], "has no chat template; the judge must be"),
        ([tmp_path / "missing", tmp_path / "a", workspace["chat"]], "does not exist; write it with eval/answer.py"),
    ]
    for (a, b, judge), message in cases:
        with pytest.raises(SystemExit) as exit_info:
            cli(pairwise_script.main, args=["--answers_a", str(a), "--answers_b", str(b), "--judge_checkpoint_dir",
                                            str(judge), "--out_dir", str(tmp_path / "pw")])
        err = capsys.readouterr().err
        assert exit_info.value.code == 1 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "pw").exists()
