"""scripts/dedup_dataset.py on tiny prepared datasets with planted duplicates and overlaps: each is removed for its
reason with the first occurrence kept, distinct texts stay, kept examples are untouched, and the CLI runs."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lit_gpt.data import ALPACA, prepare
from lit_gpt.data.dataset import TokenizedDataset
from lit_gpt.data.dedup import ContentReader, dedup_dataset, read_eval_texts, words
from lit_gpt.data.mix import mix_datasets
from lit_gpt.prompts import load_prompt_style
from lit_gpt.tokenizer import Tokenizer
from lit_gpt.utils import UserError
from prepare_helpers import CHATML, ROOT, tiny_bpe_checkpoint, write_json, write_jsonl
from test_mix import prepared

PHOTOSYNTHESIS = ("Plants take in sunlight, water from the soil and carbon dioxide from the air, and with the green "
                  "pigment in their leaves they turn these into sugar that feeds them and oxygen that they release "
                  "back into the air for animals and people to breathe every day.")
WATER_CYCLE = ("Water evaporates from oceans and lakes, rises as vapour, cools high in the sky into clouds, falls "
               "back as rain or snow, and flows through rivers and the ground to the sea again.")
PASSAGE = ("The committee met on a cold Tuesday morning in the old library to decide the future of the village "
           "school and its small garden.")  # an eval text

A_TRAIN = [
    {"instruction": "Explain photosynthesis in simple words.", "input": "", "output": PHOTOSYNTHESIS},  # 0 kept
    {"instruction": "Name three primary colors.", "input": "", "output": "Red, blue and yellow."},  # 1 kept
    # 2: near-duplicate of 0 (one word changed, other case and punctuation)
    {"instruction": "EXPLAIN photosynthesis in simple words!", "input": "",
     "output": PHOTOSYNTHESIS.replace("every day", "each day").replace(",", "")},
    # 3: exact duplicate of 1 once normalised
    {"instruction": "name three primary colors", "input": "", "output": "red blue and yellow"},
    # 4: shares 13 words with the test example (and nothing else)
    {"instruction": "Write a sentence about weather.", "input": "",
     "output": "My teacher said that water evaporates from oceans and lakes, rises as vapour, cools high in the sky "
               "into clouds, she said."},
    # 5: shares 13 words with the eval passage
    {"instruction": "Continue the story.", "input": "", "output": "Yesterday the committee met on a cold Tuesday "
     "morning in the old library to decide the future of the bakery."},
    # 6: the same topic as 0 in other words: kept
    {"instruction": "Explain photosynthesis to a child.", "input": "", "output": "Leaves catch sunlight and use it "
     "to make food for the plant out of water and air, giving off the oxygen we breathe."},
    # 7: 12 words of the test example in a row: one short of an overlap, kept
    {"instruction": "Describe clouds.", "input": "", "output": "Some say water evaporates from oceans and lakes, "
     "rises as vapour, cools high in winter."},
    # 8: the test example itself, in other case and punctuation
    {"instruction": "describe the water cycle", "input": "", "output": WATER_CYCLE.lower().replace(",", "")},
]
A_TEST = [{"instruction": "Describe the water cycle.", "input": "", "output": WATER_CYCLE}]
B_TRAIN = [
    {"instruction": "Name three primary colors.", "input": "", "output": "Red, blue and yellow."},  # 0: = A's 1
    {"instruction": "Translate to French.", "input": "Good morning", "output": "Bonjour"},  # 1 kept
]
B_TEST = [{"instruction": "What is 2 + 2?", "input": "", "output": "4"}]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_bpe_checkpoint(tmp_path_factory.mktemp("ckpt"))


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory, checkpoint: Path) -> tuple[Path, Path, Path]:
    root = tmp_path_factory.mktemp("sources")
    eval_file = write_jsonl(root / "eval.jsonl", [{"question": "Who met?", "passage": PASSAGE, "answer": "x"},
                                                  {"question": "Short one.", "answer": "y"}])
    return (prepared(root / "a", checkpoint, A_TRAIN, A_TEST), prepared(root / "b", checkpoint, B_TRAIN, B_TEST),
            eval_file)


def test_short_eval_prompts_are_matched_whole(tmp_path: Path, sources: tuple, checkpoint: Path) -> None:
    """Eval prompts are often shorter than 13 words: one of 8-12 words overlaps a training example containing all
    of it, in order; one word out of place, or a shorter prompt, does not."""
    a, _, _ = sources
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("Rises as vapour, cools high in the sky.\n"  # 8 words, inside A's train #4 (and the test)
                       "Leaves catch sunlight and use it to make FOOD!\n"  # 9 words, inside A's train #6
                       "Leaves catch sunlight and use it to make lunch\n"  # 9 words, in no example
                       "Name three primary colors.\n")  # 4 words: not checked
    manifest = dedup_dataset([a], tmp_path / "out", eval_files=[prompts], report_examples=10)
    assert manifest["eval_files"][0] | {"sha256": None} == {
        "path": str(prompts), "sha256": None, "texts": 4, "checked_whole": 3, "not_checked": 1}
    removed = {(r["removed"], r["reason"], r["matched"]) for r in manifest["removed"]}
    assert (f"{a}/train #6", "eval_overlap", f"{prompts} #1") in removed
    (record,) = [r for r in manifest["examples"]["eval_overlap"] if r["removed"]["where"] == f"{a}/train #6"]
    assert record["ngram"] == "leaves catch sunlight and use it to make food"
    assert f"{a}/train #1" not in {r[0] for r in removed}  # "Name three primary colors." was too short to check
    assert manifest["parameters"]["min_overlap_words"] == 8
    assert dedup_dataset([a], tmp_path / "off", eval_files=[prompts], min_overlap_words=13)["eval_files"][0][
        "checked_whole"] == 0
    with pytest.raises(UserError, match="--min_overlap_words 20"):
        dedup_dataset([a], tmp_path / "bad", eval_files=[prompts], min_overlap_words=20)


def test_planted_duplicates_and_overlaps_are_removed(tmp_path: Path, sources: tuple) -> None:
    a, b, eval_file = sources
    out = tmp_path / "out"
    manifest = dedup_dataset([a, b], out, eval_files=[eval_file], report_examples=10)

    assert manifest["train"] == {"examples": 11, "kept": 5, "removed": {
        "test_overlap": 2, "eval_overlap": 1, "exact_duplicate": 2, "near_duplicate": 1}}
    assert manifest["sources"][0]["train"]["removed"] == {
        "test_overlap": 2, "eval_overlap": 1, "exact_duplicate": 1, "near_duplicate": 1}
    assert manifest["sources"][1]["train"]["removed"]["exact_duplicate"] == 1
    removed = {(r["removed"], r["reason"], r["matched"]) for r in manifest["removed"]}
    assert removed == {
        (f"{a}/train #2", "near_duplicate", f"{a}/train #0"),
        (f"{a}/train #3", "exact_duplicate", f"{a}/train #1"),
        (f"{a}/train #4", "test_overlap", f"{a}/test #0"),
        (f"{a}/train #5", "eval_overlap", f"{eval_file} #0"),
        (f"{a}/train #8", "test_overlap", f"{a}/test #0"),
        (f"{b}/train #0", "exact_duplicate", f"{a}/train #1"),  # across sources: the first given is kept
    }
    (near,) = manifest["examples"]["near_duplicate"]
    assert 0.8 <= near["similarity"] < 1 and near["removed"]["text"].startswith("EXPLAIN photosynthesis")
    assert near["matched"]["text"].startswith("Explain photosynthesis in simple words. Plants take in sunlight")
    overlap, same = manifest["examples"]["test_overlap"]
    assert overlap["ngram"] == "water evaporates from oceans and lakes rises as vapour cools high in the"
    assert same["similarity"] == 1.0 and same["ngram"] is None
    assert manifest["eval_files"][0]["texts"] == 2
    assert manifest["eval_files"][0]["checked_whole"] == 0 and manifest["eval_files"][0]["not_checked"] == 1
    assert manifest["template_not_found"] == {"train": 0, "test": 0}  # the Alpaca template was cut out of every example

    # the kept examples are the originals, untouched and in order; the test splits are copied whole
    train = TokenizedDataset(out, "train", None)
    originals = [(a, 0), (a, 1), (a, 6), (a, 7), (b, 1)]
    assert len(train) == len(originals)
    for j, (source, i) in enumerate(originals):
        d = TokenizedDataset(source, "train", None)
        assert np.array_equal(train[j]["input_ids"], d[i]["input_ids"])
        assert np.array_equal(train[j]["labels"], d[i]["labels"])
        assert train.provenance()[j]["from"] == f"{source}/train"
    test = TokenizedDataset(out, "test", None)
    assert len(test) == 2 and [p["from"] for p in test.provenance()] == [f"{a}/test", f"{b}/test"]
    assert json.loads((out / "manifest.json").read_text()) == json.loads(json.dumps(manifest))


def test_threshold_and_ngram_are_honoured(tmp_path: Path, sources: tuple) -> None:
    a, _, _ = sources
    strict = dedup_dataset([a], tmp_path / "strict", threshold=0.95, overlap_ngram=20)
    # 4 shares only 16 words with the test example, and 2 is 0.92 similar to 0: both stay
    assert strict["train"]["removed"] == {"test_overlap": 1, "eval_overlap": 0, "exact_duplicate": 1,
                                          "near_duplicate": 0}
    loose = dedup_dataset([a], tmp_path / "loose", overlap_ngram=12)
    assert loose["train"]["removed"]["test_overlap"] == 3  # now also example 7, 12 words in a row


def test_repeats_of_one_row_from_a_mix_stay_together(tmp_path: Path, sources: tuple) -> None:
    _, b, _ = sources
    mix_datasets([b], tmp_path / "mix", num_examples=8, replacement=True, seed=0)
    manifest = dedup_dataset([tmp_path / "mix"], tmp_path / "out")
    # B's two rows are distinct texts: every repeat the mix drew is kept
    assert manifest["train"]["kept"] == 8 and sum(manifest["train"]["removed"].values()) == 0


@pytest.mark.parametrize("chat", [False, True])
def test_content_is_the_conversation_without_the_template(tmp_path: Path, chat: bool) -> None:
    checkpoint = tiny_bpe_checkpoint(tmp_path / "ckpt", bos=not chat, chat_template=CHATML if chat else None)
    row = {"instruction": "Name three primary colors.", "input": "The sky is blue.", "output": "Red, blue, yellow."}
    prepare(ALPACA, checkpoint_dir=checkpoint, destination_path=tmp_path / "data", test_split_fraction=0,
            data_file=write_json(tmp_path / "rows.json", [row]))
    d = TokenizedDataset(tmp_path / "data", "train", None)
    assert d.meta["prompt_style"] == ("chat" if chat else "alpaca")
    tokenizer = Tokenizer(checkpoint)
    text, found = ContentReader(tokenizer, load_prompt_style(d.meta["prompt_style"], tokenizer))(d[0]["input_ids"])
    assert found and words(text) == words("Name three primary colors. The sky is blue. Red, blue, yellow.")


def test_normalisation() -> None:
    assert words("  Hello,   WORLD!\n it's_a  test-case (ok) ") == ["hello", "world", "itsa", "testcase", "ok"]


def test_eval_file_formats(tmp_path: Path) -> None:
    text = tmp_path / "prompts.txt"
    text.write_text("first prompt\n\nsecond prompt\n", encoding="utf-8")
    assert read_eval_texts(text) == ["first prompt", "second prompt"]
    assert read_eval_texts(write_json(tmp_path / "list.json", ["one", "two"])) == ["one", "two"]
    records = write_json(tmp_path / "records.json", [{"q": "a question", "choices": ["x", "y"], "n": 3}])
    assert read_eval_texts(records) == ["a question\nx\ny"]
    with pytest.raises(UserError, match=r"--eval_files .*missing\.jsonl does not exist"):
        read_eval_texts(tmp_path / "missing.jsonl")


def test_refusals(tmp_path: Path, sources: tuple) -> None:
    a, _, _ = sources
    other = prepared(tmp_path / "other", tiny_bpe_checkpoint(tmp_path / "ckpt", bos=False), B_TRAIN)
    with pytest.raises(UserError, match="prepared for different tokenizers"):
        dedup_dataset([a, other], tmp_path / "out")
    with pytest.raises(UserError, match=r"was prepared for the tokenizer of .*; prepare it again"):
        dedup_dataset([a], tmp_path / "out", checkpoint_dir=tmp_path / "ckpt")
    with pytest.raises(UserError, match="--threshold 1.5"):
        dedup_dataset([a], tmp_path / "out", threshold=1.5)
    with pytest.raises(UserError, match="--threshold 0.99 with --num_perm 128: no LSH banding fits"):
        dedup_dataset([a], tmp_path / "out", threshold=0.99)
    assert not (tmp_path / "out").exists()


def test_cli(tmp_path: Path, sources: tuple) -> None:
    a, b, eval_file = sources
    script = str(ROOT / "scripts" / "dedup_dataset.py")
    help_text = subprocess.run([sys.executable, script, "--help"], capture_output=True, text=True, check=True).stdout
    assert "--eval_files" in help_text and "--threshold" in help_text
    done = subprocess.run([sys.executable, script, "--data_dirs", str(a), str(b), "--eval_files", str(eval_file),
                           "--destination_path", str(tmp_path / "out")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "near_duplicate        1" in done.stdout and "Wrote" in done.stdout
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["train"]["kept"] == 5
