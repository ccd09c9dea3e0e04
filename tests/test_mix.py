"""scripts/mix_datasets.py on tiny prepared datasets: exact counts and weights in the manifest (by examples and by
tokens, with and without replacement), the test split, byte-identical reruns, refusals, and the CLI."""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lit_gpt.data import ALPACA, prepare
from lit_gpt.data.dataset import TokenizedDataset
from lit_gpt.data.derive import dataset_sha256, write_derived
from lit_gpt.data.mix import allocate, mix_datasets
from lit_gpt.utils import expand_list_flags
from lit_gpt.utils import UserError, cli
from helpers import ROOT, load_script
from prepare_helpers import CHATML, tiny_bpe_checkpoint, write_json


def rows(prefix: str, n: int) -> list[dict[str, str]]:
    """n distinct Alpaca rows of different lengths."""
    return [{"instruction": f"{prefix} question {i}?", "input": "", "output": " ".join([f"{prefix}{i}"] * (1 + i % 5))}
            for i in range(n)]


def prepared(folder: Path, checkpoint: Path, train: list[dict[str, str]], test: list[dict[str, str]] = (),
             **kwargs: Any) -> Path:
    """A prepared dataset with exactly these train and test rows: all of them prepared as train, then split by
    `write_derived` (prepare's own split is drawn by hash, which a test cannot plant rows in)."""
    whole = folder.with_name(folder.name + "-whole")
    prepare(ALPACA, checkpoint_dir=checkpoint, destination_path=whole, test_split_fraction=0,
            data_file=write_json(folder.with_name(folder.name + ".json"), [*train, *test]), **kwargs)
    d = TokenizedDataset(whole, "train", None)
    write_derived(folder, {"train": [(d, i) for i in range(len(train))],
                           "test": [(d, i) for i in range(len(train), len(d))]}, {})
    return folder


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """Datasets a (10 train, 4 test) and b (4 train, 2 test) for one tokenizer, and c for another tokenizer."""
    root = tmp_path_factory.mktemp("sources")
    checkpoint = tiny_bpe_checkpoint(root / "ckpt")
    a = prepared(root / "a", checkpoint, rows("apple", 10), rows("apple-test", 4))
    b = prepared(root / "b", checkpoint, rows("berry", 4), rows("berry-test", 2))
    c = prepared(root / "c", tiny_bpe_checkpoint(root / "ckpt-no-bos", bos=False), rows("cherry", 3))
    return a, b, c


def origins(out: Path, split: str) -> Counter:
    return Counter(Path(p["from"]).parent.name for p in TokenizedDataset(out, split, None).provenance())


def test_allocate_rounds_to_the_exact_total() -> None:
    assert allocate(10, np.array([0.7, 0.3])).tolist() == [7, 3]
    assert allocate(14, np.array([0.7, 0.3])).tolist() == [10, 4]  # 9.8 and 4.2: the larger remainder gets the 1
    assert allocate(7, np.array([1, 1, 1]) / 3).tolist() == [3, 2, 2]  # a tie goes to the earlier source


def test_by_examples_default_is_the_largest_mix_without_replacement(tmp_path: Path, sources: tuple) -> None:
    a, b, _ = sources
    manifest = mix_datasets([a, b], tmp_path / "mix", weights=[0.7, 0.3])
    # a has 10, b has 4: 14 at 0.7/0.3 takes all of both (15 would need 11 of a)
    assert manifest["train"]["total"] == 14 and manifest["train"]["targets"] == [10, 4]
    first, second = manifest["sources"]
    assert (first["train"]["examples"], second["train"]["examples"]) == (10, 4)
    assert first["weight_asked"] == pytest.approx(0.7) and first["train"]["weight_achieved"] == pytest.approx(10 / 14)
    assert first["sha256"] == dataset_sha256(a) and first["data_dir"] == str(a)
    assert origins(tmp_path / "mix", "train") == {"a": 10, "b": 4}
    # the test split is every test example of every source, by default
    assert origins(tmp_path / "mix", "test") == {"a": 4, "b": 2}
    assert manifest["test"]["examples"] == 6 and first["test"]["examples"] == 4
    written = json.loads((tmp_path / "mix" / "manifest.json").read_text())
    assert written == json.loads(json.dumps(manifest))
    meta = json.loads((tmp_path / "mix" / "meta.json").read_text())
    assert meta["derived"] is True and meta["samples"] == {"train": 14, "test": 6}


def test_by_examples_with_a_size(tmp_path: Path, sources: tuple) -> None:
    a, b, _ = sources
    manifest = mix_datasets([a, b], tmp_path / "mix", weights=[7, 3], num_examples=10, seed=3)
    assert [s["train"]["examples"] for s in manifest["sources"]] == [7, 3]
    assert [s["train"]["distinct_examples"] for s in manifest["sources"]] == [7, 3]  # without replacement
    assert [s["train"]["weight_achieved"] for s in manifest["sources"]] == [0.7, 0.3]
    train = TokenizedDataset(tmp_path / "mix", "train", None)
    assert manifest["train"]["tokens"] == int(train.lengths.sum()) == sum(s["train"]["tokens"] for s in
                                                                          manifest["sources"])
    with pytest.raises(UserError, match=r"--num_examples 20 asks 14 examples of .*a \(train split\), which has 10; "
                                        r"ask for at most --num_examples 14, or pass --replacement true"):
        mix_datasets([a, b], tmp_path / "too-many", weights=[7, 3], num_examples=20)
    assert not (tmp_path / "too-many").exists()


def test_with_replacement_a_small_source_is_upsampled(tmp_path: Path, sources: tuple) -> None:
    a, b, _ = sources
    manifest = mix_datasets([a, b], tmp_path / "mix", weights=[0.5, 0.5], num_examples=30, replacement=True)
    first, second = manifest["sources"]
    assert (first["train"]["examples"], second["train"]["examples"]) == (15, 15)
    assert second["train"]["distinct_examples"] <= 4 < 15
    assert origins(tmp_path / "mix", "train") == {"a": 15, "b": 15}
    with pytest.raises(UserError, match="with --replacement true a mix can be any size; pass --num_examples"):
        mix_datasets([a, b], tmp_path / "no-size", replacement=True)


def test_by_tokens(tmp_path: Path, sources: tuple) -> None:
    a, b, _ = sources
    lengths = {d: TokenizedDataset(d, "train", None).lengths for d in (a, b)}
    longest = max(int(x.max()) for x in lengths.values())

    manifest = mix_datasets([a, b], tmp_path / "mix", weights=[0.6, 0.4], by="tokens", seed=1)
    first, second = manifest["sources"]
    # the default total is as large as the scarcest source (relative to its weight) allows: it is used whole
    total, available = manifest["train"]["total"], np.array([lengths[a].sum(), lengths[b].sum()])
    assert (allocate(total, np.array([0.6, 0.4])) <= available).all()
    assert (allocate(total + 1, np.array([0.6, 0.4])) > available).any()
    for source, target in zip(manifest["sources"], manifest["train"]["targets"]):
        assert abs(source["train"]["tokens"] - target) <= longest / 2  # within half an example of its target
    assert sum(manifest["train"]["targets"]) == total
    assert max(first["train"]["tokens"] / lengths[a].sum(), second["train"]["tokens"] / lengths[b].sum()) == 1.0
    assert first["train"]["weight_achieved"] == first["train"]["share"]["tokens"] == pytest.approx(0.6, abs=0.1)

    sized = mix_datasets([a, b], tmp_path / "sized", weights=[1, 3], by="tokens", num_tokens=200, seed=2,
                         replacement=True)
    assert sized["train"]["targets"] == [50, 150]
    for source, target in zip(sized["sources"], [50, 150]):
        assert abs(source["train"]["tokens"] - target) <= longest / 2
    train = TokenizedDataset(tmp_path / "sized", "train", None)
    assert sized["train"]["tokens"] == int(train.lengths.sum())

    with pytest.raises(UserError, match="--num_examples sets the size in another unit than --by tokens"):
        mix_datasets([a, b], tmp_path / "x", by="tokens", num_examples=5)


def test_weighted_test_split(tmp_path: Path, sources: tuple) -> None:
    a, b, _ = sources
    manifest = mix_datasets([a, b], tmp_path / "mix", weights=[0.5, 0.5], num_examples=6, test_split="weighted")
    # a has 4 test examples and b 2: the largest total whose rounded targets fit is 5 (2.5 each, the tie rounds up
    # for the first source); 6 would need 3 of b
    assert manifest["test"]["total"] == 5 and [s["test"]["examples"] for s in manifest["sources"]] == [3, 2]
    assert origins(tmp_path / "mix", "test") == {"a": 3, "b": 2}


def test_same_inputs_and_seed_give_byte_identical_output(tmp_path: Path, sources: tuple) -> None:
    a, b, _ = sources

    def digest(out: Path) -> dict[str, str]:
        return {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(out.rglob("*")) if p.is_file()}

    options: dict[str, Any] = {"weights": [0.5, 0.5], "num_examples": 6}
    mix_datasets([a, b], tmp_path / "one", seed=7, **options)
    mix_datasets([a, b], tmp_path / "two", seed=7, **options)
    mix_datasets([a, b], tmp_path / "other", seed=8, **options)
    assert digest(tmp_path / "one") == digest(tmp_path / "two")
    assert len(digest(tmp_path / "one")) == 10  # meta, manifest, and 4 files per split
    assert digest(tmp_path / "one") != digest(tmp_path / "other")  # 3 of a's 10 drawn under another seed


def test_refuses_other_tokenizers_and_bad_weights(tmp_path: Path, sources: tuple) -> None:
    a, b, c = sources
    with pytest.raises(UserError, match="prepared for different tokenizers: .*; prepare them with the same "
                                        "--checkpoint_dir"):
        mix_datasets([a, c], tmp_path / "mix")
    chat = tiny_bpe_checkpoint(tmp_path / "ckpt-chat", bos=False, chat_template=CHATML)
    as_chat, as_alpaca = (prepared(tmp_path / style, chat, rows(style, 2), prompt_style=style)
                          for style in ("chat", "alpaca"))
    with pytest.raises(UserError, match="prepared with different prompt styles or chat templates: .*chat \\(chat\\), "
                                        ".*alpaca \\(alpaca\\); prepare them again with the same --prompt_style"):
        mix_datasets([as_chat, as_alpaca], tmp_path / "mix")
    with pytest.raises(UserError, match="1 --weights for 2 --data_dirs"):
        mix_datasets([a, b], tmp_path / "mix", weights=[1.0])
    with pytest.raises(UserError, match="every weight must be positive"):
        mix_datasets([a, b], tmp_path / "mix", weights=[1.0, 0.0])
    with pytest.raises(UserError, match="is one of --data_dirs"):
        mix_datasets([a, b], a)
    assert not (tmp_path / "mix").exists()


def test_expand_list_flags() -> None:
    argv = ["--data_dirs", "d/a b", "d/c", "--weights", "0.7", "0.3", "--seed", "1"]
    assert expand_list_flags(argv, ("data_dirs", "weights")) == [
        "--data_dirs", '["d/a b", "d/c"]', "--weights", '["0.7", "0.3"]', "--seed", "1"]
    already = ["--data_dirs", '["a", "b"]']
    assert expand_list_flags(already, ("data_dirs",)) == already


def test_cli(tmp_path: Path, sources: tuple) -> None:
    a, b, _ = sources
    script = str(ROOT / "scripts" / "mix_datasets.py")
    help_text = subprocess.run([sys.executable, script, "--help"], capture_output=True, text=True, check=True).stdout
    assert "--data_dirs" in help_text and "--replacement" in help_text
    out = tmp_path / "mix"
    done = subprocess.run([sys.executable, script, "--data_dirs", str(a), str(b), "--weights", "0.7", "0.3",
                           "--num_examples", "10", "--destination_path", str(out)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert [s["train"]["examples"] for s in json.loads((out / "manifest.json").read_text())["sources"]] == [7, 3]


def test_cli_refusal_is_one_line(tmp_path: Path, sources: tuple, capsys: pytest.CaptureFixture) -> None:
    a, b, _ = sources
    argv = ["--data_dirs", str(a), str(b), "--num_examples", "100", "--destination_path", str(tmp_path / "x")]
    with pytest.raises(SystemExit) as exit:
        cli(load_script("scripts/mix_datasets.py").mix_datasets, args=argv)
    assert exit.value.code == 1
    assert capsys.readouterr().err.startswith("error: --num_examples 100 asks 50 examples of")
