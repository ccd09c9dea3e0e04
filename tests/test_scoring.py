"""scripts/score_dataset.py on a tiny random model: IFD and both losses equal to the model's own losses computed by
hand, embeddings, resume without recomputation, the judge's parsing and bookkeeping, and one-line errors."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lit_gpt.data.dataset import TokenizedDataset
from lit_gpt.data.scores import (EMBEDDINGS_NAME, JUDGE_NAME, PARTIAL_NAME, SCORES_JSON_NAME, read_score_column,
                                 read_scores)
from lit_gpt.data.scoring import Judge, alone_sample, parse_judge_score, prompt_and_response_text, response_losses
from lit_gpt.data.tokenize import IGNORE_INDEX
from lit_gpt.tokenizer import Tokenizer
from lit_gpt.utils import UserError

from helpers import load_script
from prepare_helpers import CHATML, tiny_bpe_checkpoint

OUTPUTS = ["Red.", "Blue, yellow and green.", "Green and blue, or maybe red.", "Yellow", "The quick brown fox jumps."]


score_script = load_script("scripts/score_dataset.py")


def build_workspace(root: Path, bos: bool, chat: bool, rows: int = 40) -> dict[str, Path]:
    """A tiny random Llama-style checkpoint (byte-level BPE; with BOS or not; ChatML template or none, so the data
    gets the chat or the Alpaca prompt style) and Alpaca-format data prepared for it (train 32, test 8)."""
    from lit_gpt.checkpoint import save_weights
    from lit_gpt.config import Config
    from lit_gpt.data import ALPACA, prepare
    from lit_gpt.model import GPT
    from lit_gpt.utils import LIT_WEIGHTS_NAME

    checkpoint = tiny_bpe_checkpoint(root / "checkpoint", bos=bos, chat_template=CHATML if chat else None)
    config = Config(name="tiny", vocab_size=Tokenizer(checkpoint).vocab_size, n_layer=2, n_embd=32, n_head=4,
                    n_query_groups=2, intermediate_size=64, block_size=512)
    torch.manual_seed(0)
    save_weights(GPT(config).state_dict(), checkpoint / LIT_WEIGHTS_NAME)
    config.save(checkpoint)
    records = [{"instruction": f"Name color number {i}.", "input": "" if i % 3 else "The sky is blue.",
                "output": " ".join([OUTPUTS[i % 5]] * (1 + i % 4))} for i in range(rows)]
    (root / "alpaca.json").write_text(json.dumps(records))
    prepare(ALPACA, checkpoint_dir=checkpoint, destination_path=root / "data", data_file=root / "alpaca.json",
            test_split_fraction=0.2)
    return {"root": root, "checkpoint": checkpoint, "data": root / "data", "rows": records}


@pytest.fixture(scope="module")
def chat(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """No BOS, chat prompt style (like SmolLM2)."""
    return build_workspace(tmp_path_factory.mktemp("chat"), bos=False, chat=True)


@pytest.fixture(scope="module")
def alpaca_bos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """BOS added, Alpaca prompt style (like Llama 2)."""
    return build_workspace(tmp_path_factory.mktemp("alpaca"), bos=True, chat=False)


def _copy_data(workspace: dict, destination: Path) -> Path:
    shutil.copytree(workspace["data"], destination)
    return destination


def _load(checkpoint: Path):
    from lit_gpt.checkpoint import load_model

    return load_model(checkpoint).eval()


def _loss(model, ids: torch.Tensor, labels: torch.Tensor) -> float:
    """The mean next-token loss of one sequence, straight from `model(...)` logits."""
    with torch.no_grad():
        logits = model(ids[None])[0]
    return float(F.cross_entropy(logits[:-1], labels[1:], ignore_index=IGNORE_INDEX))


@pytest.mark.parametrize("name", ["chat", "alpaca_bos"])
def test_ifd_equals_the_ratio_of_the_models_losses_by_hand(name: str, request: pytest.FixtureRequest,
                                                           tmp_path: Path) -> None:
    workspace = request.getfixturevalue(name)
    data = _copy_data(workspace, tmp_path / "data")
    result = score_script.score_dataset(data, workspace["checkpoint"], batch_size=3)
    assert result["examples"] == 40 and (data / SCORES_JSON_NAME).is_file()
    assert result["tokens"] == sum(int(read_scores(data, split)["tokens"].sum()) for split in ("train", "test"))
    tokenizer = Tokenizer(workspace["checkpoint"])
    model = _load(workspace["checkpoint"])
    train = TokenizedDataset(data, "train", tokenizer)
    scores = read_scores(data, "train")
    provenance = train.provenance()
    for i in (0, 7, 19, 31):
        sample = train[i]
        with_prompt = _loss(model, sample["input_ids"], sample["labels"])
        # the response alone, from the source text: in the Alpaca style it is the output + EOS, BOS first if added
        response_text = workspace["rows"][provenance[i]["row"]]["output"]
        if name == "alpaca_bos":
            alone = torch.tensor(tokenizer.encode(response_text, bos=True, eos=True))
        else:  # ChatML: the assistant text and the end-of-turn token (EOS); the newline after it has no loss
            alone = torch.tensor(tokenizer.encode(response_text + "<|im_end|>", bos=False, eos=False))
        assert tokenizer.add_bos == (name == "alpaca_bos")
        without_prompt = _loss(model, alone, alone)  # with BOS its loss is on exactly the response tokens
        assert scores["loss_with_prompt"][i] == pytest.approx(with_prompt, rel=1e-5)
        assert scores["loss_alone"][i] == pytest.approx(without_prompt, rel=1e-5)
        assert scores["ifd"][i] == pytest.approx(with_prompt / without_prompt, rel=1e-5)
        assert scores["tokens"][i] == len(sample["input_ids"])
        assert scores["response_tokens"][i] == int((sample["labels"] != IGNORE_INDEX).sum())
        # loss_alone scores exactly the response tokens (BOS first when the tokenizer adds it)
        expected = ([tokenizer.bos_id] if tokenizer.add_bos else []) + sample["input_ids"][sample["labels"] != -100].tolist()
        assert alone_sample(sample, tokenizer.bos_id if tokenizer.add_bos else None, 256)["input_ids"].tolist() == expected
        assert expected == alone.tolist()
    assert read_score_column(train, "ifd").shape == (32,) and len(read_scores(data, "test")) == 8
    info = json.loads((data / SCORES_JSON_NAME).read_text())
    assert info["loss_alone_starts_with_bos"] == (name == "alpaca_bos") and "judge" not in info["columns"]
    assert info["splits"]["train"]["samples"] == 32


def test_embeddings_are_mean_final_hidden_states(chat: dict, tmp_path: Path) -> None:
    data = _copy_data(chat, tmp_path / "data")
    score_script.score_dataset(data, chat["checkpoint"], batch_size=5)
    model = _load(chat["checkpoint"])
    train = TokenizedDataset(data, "train", None)
    embeddings = np.load(data / "train" / EMBEDDINGS_NAME)
    assert embeddings.shape == (32, 32) and embeddings.dtype == np.float32
    for i in (0, 13):
        with torch.no_grad():
            expected = model(train[i]["input_ids"][None], head=False)[0].mean(0)
        np.testing.assert_allclose(embeddings[i], expected.numpy(), rtol=1e-4, atol=1e-5)


def test_a_response_with_nothing_to_predict_from_has_undefined_scores(chat: dict) -> None:
    model = _load(chat["checkpoint"])
    from lit_gpt.collate import pad_collate

    sample = {"input_ids": torch.tensor([5, 6, 7]), "labels": torch.tensor([IGNORE_INDEX, IGNORE_INDEX, 7])}
    alone = alone_sample(sample, None, 256)  # one response token, no BOS: nothing precedes it
    assert alone["input_ids"].tolist() == [7]
    loss_sum, count, _ = response_losses(model, pad_collate([alone]))
    assert count.tolist() == [0] and loss_sum.tolist() == [0.0]
    with_bos = alone_sample(sample, 1, 256)
    assert with_bos["input_ids"].tolist() == [1, 7] and with_bos["labels"].tolist() == [IGNORE_INDEX, 7]
    # the batched per-row losses equal masked_loss_sum row by row
    from lit_gpt.training import masked_loss_sum

    other = {"input_ids": torch.tensor([3, 9, 4, 8, 2]), "labels": torch.tensor([IGNORE_INDEX, 9, 4, 8, 2])}
    batch = pad_collate([with_bos, other])
    loss_sum, count, _ = response_losses(model, batch)
    with torch.no_grad():
        for row, s in enumerate((with_bos, other)):
            expected, n = masked_loss_sum(model(s["input_ids"][None]), s["labels"][None])
            assert int(count[row]) == n
            assert float(loss_sum[row]) == pytest.approx(float(expected), rel=1e-5)


def test_packed_and_padded_batches_score_every_example_alike(chat: dict) -> None:
    """Scoring packs a batch into one row (no padding); per example, that equals the padded batch."""
    from lit_gpt.collate import packed_collate, pad_collate

    model = _load(chat["checkpoint"])
    train = TokenizedDataset(chat["data"], "train", None)
    samples = [train[i] for i in range(5)]
    assert len({len(s["input_ids"]) for s in samples}) > 1  # padding would be needed
    padded = response_losses(model, pad_collate(samples), embeddings=True)
    total = sum(len(s["input_ids"]) for s in samples)
    for batch in (packed_collate(samples, total, total), packed_collate(samples, total, total // 2 + 1)):
        packed = response_losses(model, batch, embeddings=True)  # one row; then two rows, the second padded
        assert packed[1].tolist() == padded[1].tolist()
        torch.testing.assert_close(packed[0], padded[0], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(packed[2], padded[2], rtol=1e-5, atol=1e-5)


def test_an_interrupted_run_resumes_without_recomputing(chat: dict, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    import lit_gpt.checkpoint

    full = _copy_data(chat, tmp_path / "full")
    interrupted = _copy_data(chat, tmp_path / "interrupted")
    real_load = lit_gpt.checkpoint.load_model
    calls = {"n": 0, "limit": None}

    def counting_load(*args, **kwargs):
        model = real_load(*args, **kwargs)

        def hook(module, inputs):
            calls["n"] += 1
            if calls["limit"] is not None and calls["n"] == calls["limit"]:
                raise KeyboardInterrupt  # as if Ctrl-C during this forward pass

        model.register_forward_pre_hook(hook)
        return model

    monkeypatch.setattr(lit_gpt.checkpoint, "load_model", counting_load)
    score_script.score_dataset(full, chat["checkpoint"], batch_size=4, flush_every=2)
    total = calls["n"]
    assert total == 2 * (32 // 4 + 8 // 4)  # one forward with the prompt and one without, per batch

    calls.update(n=0, limit=7)  # dies on the first forward of the 4th batch of the train split
    with pytest.raises(KeyboardInterrupt):
        score_script.score_dataset(interrupted, chat["checkpoint"], batch_size=4, flush_every=2)
    partial = interrupted / "train" / PARTIAL_NAME
    # batches 1-2 flushed on schedule, batch 3 when the run stopped; nothing final written yet
    assert len(list(partial.glob("chunk-*.npz"))) == 2
    assert not (interrupted / "train" / "scores.npy").exists()

    calls.update(n=0, limit=None)
    result = score_script.score_dataset(interrupted, chat["checkpoint"], batch_size=4, flush_every=2)
    assert calls["n"] == total - 6  # the 3 finished batches (12 examples) were not recomputed
    assert result["examples"] == 40 - 12
    assert not partial.exists()
    for split in ("train", "test"):
        a, b = read_scores(full, split), read_scores(interrupted, split)
        for column in a.dtype.names:
            np.testing.assert_array_equal(a[column], b[column])  # identical, not just close
        np.testing.assert_array_equal(np.load(full / split / EMBEDDINGS_NAME),
                                      np.load(interrupted / split / EMBEDDINGS_NAME))

    # a partial run under other settings is not mixed with a new one
    calls.update(n=0, limit=3)
    with pytest.raises(KeyboardInterrupt):
        score_script.score_dataset(interrupted, chat["checkpoint"], batch_size=4)
    calls.update(n=0, limit=None)
    with pytest.raises(UserError, match="other settings"):
        score_script.score_dataset(interrupted, chat["checkpoint"], batch_size=4, max_seq_length=128)


@pytest.mark.parametrize("text, expected", [
    ("Score: 4", 4.0), ("Score:4.5/5", 4.5), ("score: **5**", 5.0), ("Rating - 2", 2.0), ("Score: five", 5.0),
    ("I would rate it 3 out of 5.", 3.0), ("The answer is good. 4", 4.0), ("Score: 3\n\nExplanation: 5 points", 3.0),
    ("Score: 2.", 2.0), ("Score: 10", None), ("Score: 0", None), ("8/10", None), ("Rating: 4 out of 10", None),
    ("Score: none", None), ("", None), ("Score: excellent", None), ("3.5", 3.5),
])
def test_judge_ratings_are_parsed_robustly(text: str, expected: float | None) -> None:
    assert parse_judge_score(text) == expected


def test_judge_column_and_unparseable_count(chat: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tokenizer = Tokenizer(chat["checkpoint"])
    train = TokenizedDataset(chat["data"], "train", tokenizer)
    prompt, response = prompt_and_response_text(train[0], tokenizer)
    row = chat["rows"][train.provenance()[0]["row"]]
    assert row["instruction"] in prompt and response.strip() == row["output"]

    # the real judge (a random model) decodes greedily: deterministic, and its column is the parse of its text
    judge = Judge(_load(chat["checkpoint"]), tokenizer, max_new_tokens=4)
    first = judge.rate(prompt, response)
    assert first == judge.rate(prompt, response) and first[1].startswith("Score:")
    assert first[0] == parse_judge_score(first[1])
    # a batch (left-padded, prompts of different lengths) rates each pair as it is rated alone
    pairs = [prompt_and_response_text(train[i], tokenizer) for i in range(min(5, len(train)))]
    assert len({len(p) for p, _ in pairs}) > 1
    assert judge.rate_batch(pairs) == [judge.rate(*pair) for pair in pairs]

    # a judge replying "Score: <instruction number mod 6>": 0 is out of range, so unparseable
    def rate(self, prompt: str, response: str) -> tuple[float | None, str]:
        reply = f"Score: {int(prompt.split('number ')[1].split('.')[0]) % 6}"
        return parse_judge_score(reply), reply

    monkeypatch.setattr(Judge, "rate_batch", lambda self, pairs: [rate(self, *pair) for pair in pairs])
    data = _copy_data(chat, tmp_path / "data")
    result = score_script.score_dataset(data, chat["checkpoint"], judge_checkpoint_dir=chat["checkpoint"], batch_size=8)
    rows = [chat["rows"][p["row"]] for p in TokenizedDataset(data, "train", None).provenance()]
    expected = [int(r["instruction"].split("number ")[1].rstrip(".")) % 6 for r in rows]
    judged = read_score_column(TokenizedDataset(data, "train", None), "judge")
    np.testing.assert_array_equal(judged, [float("nan") if e == 0 else e for e in expected])
    assert result["splits"]["train"]["judge_unparseable"] == expected.count(0) > 0
    timing = json.loads((data / SCORES_JSON_NAME).read_text())["timing"]
    assert timing["examples"] == sum(split["samples"] for split in result["splits"].values()) > len(rows)
    assert 0 < timing["judge_seconds"] < timing["seconds"]
    lines = [json.loads(line) for line in (data / "train" / JUDGE_NAME).read_text().splitlines()]
    assert [line["text"] for line in lines] == [f"Score: {e}" for e in expected]
    assert "judge" in json.loads((data / SCORES_JSON_NAME).read_text())["columns"]

    # scoring again without the judge drops the judge's files, which would no longer match
    score_script.score_dataset(data, chat["checkpoint"], embeddings=False)
    assert not (data / "train" / JUDGE_NAME).exists() and not (data / "train" / EMBEDDINGS_NAME).exists()
    with pytest.raises(UserError, match="judge_checkpoint_dir"):
        read_score_column(TokenizedDataset(data, "train", None), "judge")


def test_mistakes_are_one_line_errors(chat: dict, alpaca_bos: dict, tmp_path: Path,
                                      capsys: pytest.CaptureFixture) -> None:
    from lit_gpt.utils import cli

    cases = [
        (["--data_dir", str(chat["data"]), "--checkpoint_dir", str(alpaca_bos["checkpoint"])], "tokenizer"),
        (["--data_dir", str(tmp_path / "missing"), "--checkpoint_dir", str(chat["checkpoint"])], "prepare script"),
        (["--data_dir", str(chat["data"]), "--checkpoint_dir", str(tmp_path / "nope")], "does not exist"),
        (["--data_dir", str(chat["data"]), "--checkpoint_dir", str(chat["checkpoint"]), "--max_seq_length", "9999"],
         "exceeds the model's context"),
        (["--data_dir", str(chat["data"]), "--checkpoint_dir", str(chat["checkpoint"]), "--judge_checkpoint_dir",
          str(alpaca_bos["checkpoint"])], "no chat template"),
    ]
    for args, message in cases:
        with pytest.raises(SystemExit) as exit_info:
            cli(score_script.score_dataset, args=args)
        assert exit_info.value.code == 1
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
    with pytest.raises(UserError, match="score_dataset.py --data_dir"):
        read_score_column(TokenizedDataset(chat["data"], "train", None), "ifd")


def test_finetune_order_score_sorts_by_a_score_column_with_nan_last(chat: dict, tmp_path: Path) -> None:
    from lit_gpt.batching import epoch_order, order_keys
    from lit_gpt.data.scores import write_scores

    data = _copy_data(chat, tmp_path / "data")
    train = TokenizedDataset(data, "train", None)
    n = len(train)
    ifd = np.linspace(0.9, 0.1, n)
    ifd[3] = np.nan
    columns = {"loss_with_prompt": ifd, "loss_alone": np.ones(n), "ifd": ifd, "tokens": train.lengths,
               "response_tokens": train.lengths}
    for split in ("train", "test"):
        m = n if split == "train" else len(TokenizedDataset(data, "test", None))
        write_scores(data, split, {k: v[:m] if split == "test" else v for k, v in columns.items()})
    for descending in (False, True):
        keys = order_keys(train, "score", "ifd", descending)
        order = epoch_order(n, 0, 0, "score", keys, descending=descending)
        values = [ifd[i] for i in order]
        assert np.isnan(values[-1]) and values[:-1] == sorted(values[:-1], reverse=descending)
