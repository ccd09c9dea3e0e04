"""lm-evaluation-harness through our model (`lit_gpt.eval`): the same numbers as lm-eval's own Hugging Face backend
on the same weights, adapters in memory, the files and table eval/lm_eval_harness.py writes, offline errors.

The reference is `lm_eval.simple_evaluate(model="hf")` on the checkpoint converted back with
`convert_lit_checkpoint`, on the local tasks in tests/fixtures/lm_eval (multiple choice with a few-shot example,
greedy generation with stop sequences, rolling perplexity), with a short context so that requests are cut and
texts span several windows.
"""
from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("lm_eval")

from lit_gpt.checkpoint import load_model
from lit_gpt.convert import convert_lit_checkpoint
from lit_gpt.eval.harness import adapter_labels, evaluate, load_tasks, use_adapter
from lit_gpt.eval.lm import LitLM
from lit_gpt.lora import LoRAConfig, apply_lora, merge_lora, save_lora
from lit_gpt.tiny import make_tiny_checkpoint
from lit_gpt.tokenizer import Tokenizer
from lit_gpt.utils import UserError

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "lm_eval"
TASKS = ["lit_tiny_mc", "lit_tiny_gen", "lit_tiny_rolling"]
MAX_LENGTH = 40  # short: few-shot prompts are cut from the left, texts span several rolling windows


@pytest.fixture(autouse=True)
def _in_repo_root(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fixture tasks name their data files relative to the repository root, as lm-eval reads them."""
    monkeypatch.chdir(ROOT)


@pytest.fixture(scope="module")
def task_manager():
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=str(FIXTURES), include_defaults=False)  # lm-eval's own tasks take seconds


def _with_bos(checkpoint_dir: Path) -> None:
    """Make the tiny tokenizer prepend BOS (`<s>`) as Llama's does: lm-eval's BOS handling then matters."""
    from tokenizers import Tokenizer as HFTokenizer, processors

    path = checkpoint_dir / "tokenizer.json"
    tokenizer = HFTokenizer.from_file(str(path))
    bos = tokenizer.token_to_id("<s>")
    tokenizer.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                             special_tokens=[("<s>", bos)])
    tokenizer.save(str(path))


@pytest.fixture(scope="module", params=["no_bos", "bos"])
def tiny(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny random checkpoint (ours) and the same weights as a Hugging Face folder; its tokenizer adds no BOS
    (as SmolLM2's) or adds one (as Llama's)."""
    folder = tmp_path_factory.mktemp(f"tiny-{request.param}")
    checkpoint_dir = make_tiny_checkpoint(ROOT / "examples" / "quickstart.json", folder / "lit")
    if request.param == "bos":
        _with_bos(checkpoint_dir)
    assert Tokenizer(checkpoint_dir).add_bos == (request.param == "bos")
    return checkpoint_dir, convert_lit_checkpoint(checkpoint_dir, folder / "hf")


@pytest.fixture(scope="module")
def checkpoint_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random checkpoint, for what does not depend on the tokenizer."""
    return make_tiny_checkpoint(ROOT / "examples" / "quickstart.json", tmp_path_factory.mktemp("tiny") / "lit")


def _ours(checkpoint_dir: Path, tasks: list, task_manager, max_length: int = MAX_LENGTH, **kwargs) -> dict:
    import lm_eval

    lm = LitLM(load_model(checkpoint_dir), Tokenizer(checkpoint_dir), batch_size=3, max_length=max_length)
    return lm_eval.simple_evaluate(model=lm, tasks=tasks, task_manager=task_manager, bootstrap_iters=0,
                                   log_samples=True, **kwargs)


def _hf(hf_dir: Path, tasks: list, task_manager, max_length: int = MAX_LENGTH, **kwargs) -> dict:
    import lm_eval

    model_args = {"pretrained": str(hf_dir), "dtype": "float32", "device": "cpu", "max_length": max_length}
    return lm_eval.simple_evaluate(model="hf", model_args=model_args, batch_size=4, tasks=tasks,
                                   task_manager=task_manager, bootstrap_iters=0, log_samples=True, **kwargs)


def _assert_same(ours: dict, theirs: dict, tolerance: float = 1e-4) -> None:
    """Identical metrics (accuracies, exact matches), per-request loglikelihoods within `tolerance`, identical
    greedy flags and generated texts."""
    for task, metrics in theirs["results"].items():
        for key, value in metrics.items():
            if "_stderr" in key:
                continue
            if "perplexity" in key or "bits_per_byte" in key:
                assert ours["results"][task][key] == pytest.approx(value, rel=1e-4), (task, key)
            elif isinstance(value, float):
                assert ours["results"][task][key] == value, (task, key)
    for task, docs in theirs["samples"].items():
        ours_by_doc = {s["doc_id"]: s for s in ours["samples"][task]}
        assert len(ours_by_doc) == len(docs) > 0
        for doc in docs:
            for mine, reference in zip(ours_by_doc[doc["doc_id"]]["resps"], doc["resps"], strict=True):
                (mine,), (reference,) = mine, reference
                if isinstance(reference, str):  # generate_until
                    assert mine == reference, (task, doc["doc_id"])
                elif isinstance(reference, float):  # loglikelihood_rolling
                    assert mine == pytest.approx(reference, abs=tolerance), (task, doc["doc_id"])
                else:  # loglikelihood: (logprob, is_greedy)
                    assert mine[0] == pytest.approx(reference[0], abs=tolerance), (task, doc["doc_id"])
                    assert mine[1] == reference[1], (task, doc["doc_id"])


def test_same_numbers_as_the_hf_backend(tiny: tuple[Path, Path], task_manager) -> None:
    checkpoint_dir, hf_dir = tiny
    ours, theirs = _ours(checkpoint_dir, TASKS, task_manager), _hf(hf_dir, TASKS, task_manager)
    _assert_same(ours, theirs)
    # the checks were not vacuous: texts were generated, and a rolling text took several windows
    generated = [s["resps"][0][0] for s in ours["samples"]["lit_tiny_gen"]]
    assert any(generated) and all("\n" not in text and "." not in text for text in generated)
    tokens = Tokenizer(checkpoint_dir).encode(json.loads((FIXTURES / "text.jsonl").open().readline())["text"])
    assert len(tokens) > 2 * MAX_LENGTH


def test_loglikelihoods_are_packed_deduplicated_and_cut_like_lm_eval(checkpoint_dir: Path) -> None:
    model = load_model(checkpoint_dir)
    lm = LitLM(model, Tokenizer(checkpoint_dir), batch_size=2, max_length=6)
    requests = [
        (None, [5, 6, 7], [8]),          # these three share the input 5 6 7: one forward serves them
        (None, [5, 6, 7], [9]),
        (None, [5, 6], [7, 10]),
        (None, [11, 12, 13, 14, 15, 16, 17], [18, 19]),  # 9 tokens: the input is cut to the last 6
        (None, [20], [21, 22, 23]),
    ]
    answers = lm._loglikelihood_tokens(requests, disable_tqdm=True)
    # no padding, and each distinct input once: 3 + 6 + 3 tokens
    assert lm.tokens_forwarded == 3 + 6 + 3

    def reference(context: list[int], continuation: list[int]) -> tuple[float, bool]:
        whole = (context + continuation)[-7:]  # the hf backend: (context + continuation)[-(max_length + 1):][:-1]
        logprobs = model(torch.tensor([whole[:-1]]))[0].log_softmax(-1)[-len(continuation):]  # (n, vocab)
        picked = logprobs[torch.arange(len(continuation)), torch.tensor(continuation)]
        return float(picked.sum()), logprobs.argmax(-1).tolist() == continuation

    with torch.no_grad():
        for (_, context, continuation), (logprob, greedy) in zip(requests, answers, strict=True):
            expected_logprob, expected_greedy = reference(context, continuation)
            assert logprob == pytest.approx(expected_logprob, abs=1e-5)
            assert greedy == expected_greedy
    # a continuation the model would write itself counts as greedy
    with torch.no_grad():
        best = int(model(torch.tensor([[5, 6, 7]]))[0, -1].argmax())
    assert lm._loglikelihood_tokens([(None, [5, 6, 7], [best])], disable_tqdm=True)[0][1] is True


def _adapter(checkpoint_dir: Path, path: Path, seed: int) -> None:
    """An adapter with a non-zero B (a fresh one equals the base model) on query, value and MLP."""
    model = load_model(checkpoint_dir)
    config = LoRAConfig(lora_r=4, lora_alpha=8, lora_mlp=True)
    apply_lora(model, config)
    torch.manual_seed(seed)
    for name, param in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.5)
    save_lora(model, config, path)


def test_adapters_in_memory_equal_merged_and_swap_back(checkpoint_dir: Path, tmp_path: Path) -> None:
    first, second = tmp_path / "epoch-1" / "lit_lora.safetensors", tmp_path / "epoch-2" / "lit_lora.safetensors"
    _adapter(checkpoint_dir, first, seed=1)
    _adapter(checkpoint_dir, second, seed=2)
    tokenizer = Tokenizer(checkpoint_dir)
    requests = [(None, tokenizer.encode("Question: What is 3 plus 7?\nAnswer:"), tokenizer.encode(" 10")),
                (None, tokenizer.encode("The capital of Finland is"), tokenizer.encode(" Helsinki."))]

    def scores(model: torch.nn.Module) -> list[float]:
        return [logprob for logprob, _ in LitLM(model, tokenizer)._loglikelihood_tokens(requests, disable_tqdm=True)]

    model = load_model(checkpoint_dir)
    weights = {name: p.data_ptr() for name, p in model.named_parameters()}
    base = scores(model)
    use_adapter(model, first)
    # no second copy: the LoRA layers wrap the very base tensors
    assert {name: p.data_ptr() for name, p in model.named_parameters() if "lora_" not in name} == weights
    with_first = scores(model)
    use_adapter(model, second)  # replaces the first: not stacked on it
    with_second = scores(model)
    use_adapter(model, None)
    assert scores(model) == base  # the base weights were never touched

    for path, in_memory in ((first, with_first), (second, with_second)):
        merged = load_model(checkpoint_dir)
        use_adapter(merged, path)
        merge_lora(merged)
        assert in_memory == pytest.approx(scores(merged), abs=1e-4)
        assert all(abs(a - b) > 1e-3 for a, b in zip(in_memory, base))


def test_script_scores_each_epoch_adapter_in_one_table(checkpoint_dir: Path, tmp_path: Path, capsys) -> None:
    for epoch in (1, 2, 10):
        _adapter(checkpoint_dir, tmp_path / "lora" / f"epoch-{epoch}" / "lit_lora.safetensors", seed=epoch)
    out_dir = tmp_path / "eval"
    sys.path.insert(0, str(ROOT / "eval"))
    try:
        from lm_eval_harness import evaluate as main
    finally:
        sys.path.remove(str(ROOT / "eval"))
    rows = main(checkpoint_dir, tasks="lit_tiny_mc", out_dir=out_dir, include_path=FIXTURES, max_length=MAX_LENGTH,
                lora_path=[str(tmp_path / "lora" / "epoch-*" / "lit_lora.safetensors")], bootstrap_iters=0)

    labels = ["base", "epoch-1", "epoch-2", "epoch-10"]  # the base model once, then the epochs in number order
    assert [label for label, _ in rows] == labels
    table = capsys.readouterr().out
    lines = [line for line in table.splitlines() if line.startswith("| ")]
    assert lines[0] == "| model | lit_tiny_mc acc | lit_tiny_mc acc_norm |"
    assert [line.split(" | ")[0].removeprefix("| ") for line in lines[1:]] == labels
    assert (out_dir / "results.md").read_text().startswith(table.strip())
    for label, results in rows:
        saved = json.loads((out_dir / label / "results.json").read_text())
        accuracy = saved["results"]["lit_tiny_mc"]["acc,none"]
        assert f"| {label} | {accuracy:.4f} |" in table
        assert saved["n-samples"]["lit_tiny_mc"]["effective"] == 8
        provenance = saved["lit_gpt"]
        assert provenance["model"]["checkpoint_dir"] == str(checkpoint_dir)
        assert provenance["versions"]["lm_eval"] and provenance["settings"]["max_length"] == MAX_LENGTH
        data = provenance["data"]["lit_tiny_mc"]["data_files"]
        assert data["test:tests/fixtures/lm_eval/mc.jsonl"]["sha256"] == hashlib.sha256(
            (FIXTURES / "mc.jsonl").read_bytes()).hexdigest()
        if label == "base":
            assert provenance["adapter"] is None
        else:
            assert provenance["adapter"]["path"].endswith(f"{label}/lit_lora.safetensors")
            assert provenance["adapter"]["lora_config"]["lora_r"] == 4
    # the base row of a multi-adapter run is the base model's own evaluation; adapters change the scores
    single = main(checkpoint_dir, tasks="lit_tiny_mc", out_dir=tmp_path / "single", include_path=FIXTURES,
                  max_length=MAX_LENGTH, bootstrap_iters=0)
    assert (tmp_path / "single" / "results.json").is_file()
    assert single[0][1]["results"] == rows[0][1]["results"]


def test_adapter_labels_are_short_distinct_folder_names() -> None:
    """Each label names a results folder inside --out_dir: never a path, never "base", never twice."""
    def labels(*paths: str) -> list[str]:
        return adapter_labels([Path(p) for p in paths])

    assert labels("out/a/epoch-1/lit_lora.safetensors", "out/a/epoch-2/lit_lora.safetensors") == ["epoch-1", "epoch-2"]
    assert labels("out/alpaca/epoch-1/lit_lora.safetensors", "out/lima/epoch-1/lit_lora.safetensors") == [
        "alpaca_epoch-1", "lima_epoch-1"]
    assert labels("out/base/lit_lora.safetensors", "out/x/mine.safetensors") == ["out_base", "x_mine"]
    assert labels("out/a/lit_lora.safetensors", "out/a/lit_lora.safetensors") == ["adapter-1", "adapter-2"]


def test_unknown_task_missing_data_and_missing_adapter_are_one_line_errors(checkpoint_dir: Path, tmp_path: Path,
                                                                                task_manager) -> None:
    with pytest.raises(UserError, match=r"--tasks no_such_task: lm-eval knows no such task.*--include_path"):
        load_tasks(task_manager, ["no_such_task"])
    missing = tmp_path / "missing.yaml"  # lm-eval also takes a YAML file's path as a task name
    missing.write_text((FIXTURES / "lit_tiny_gen.yaml").read_text().replace("gen.jsonl", "no_such_file.jsonl"))
    with pytest.raises(UserError, match=r"no_such_file.jsonl.*relative to the folder you run from"):
        load_tasks(task_manager, [str(missing)])
    with pytest.raises(UserError, match=r"matches no file"):
        evaluate(checkpoint_dir, ["lit_tiny_mc"], tmp_path, lora_path=[str(tmp_path / "epoch-*" / "x.safetensors")])
    with pytest.raises(UserError, match=r"not found: pass the adapter"):
        evaluate(checkpoint_dir, ["lit_tiny_mc"], tmp_path, lora_path=[tmp_path / "nothing.safetensors"])


def test_hub_dataset_offline_ends_in_one_line(checkpoint_dir: Path, tmp_path: Path, capsys,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """HF_HUB_OFFLINE=1 as a user on a cluster sets it (the flags are read at import, so they are set here)."""
    import datasets
    import huggingface_hub

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # nothing cached
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "hub_task.yaml").write_text(
        "task: lit_hub_task\ndataset_path: lit-gpt-tests/no-such-dataset\ntest_split: test\n"
        "output_type: multiple_choice\ndoc_to_text: '{{q}}'\ndoc_to_choice: '{{c}}'\ndoc_to_target: 0\n")
    sys.path.insert(0, str(ROOT / "eval"))
    try:
        from lm_eval_harness import evaluate as main
    finally:
        sys.path.remove(str(ROOT / "eval"))
    from lit_gpt.utils import cli

    with pytest.raises(SystemExit) as exit_info:
        cli(main, args=["--checkpoint_dir", str(checkpoint_dir), "--tasks", "lit_hub_task", "--include_path",
                        str(tasks), "--out_dir", str(tmp_path / "out")])
    assert exit_info.value.code == 1
    (line,) = capsys.readouterr().err.strip().splitlines()[-1:]
    assert line.startswith("error: --tasks lit_hub_task: its dataset")
    assert "cannot be reached" in line and "dataset_path: json" in line and "--include_path" in line
    assert not (tmp_path / "out").exists()


def test_smollm2_same_numbers_as_the_hf_backend(smollm2: Path, tmp_path: Path, task_manager) -> None:
    """The real model (Llama architecture, tied embeddings, a BPE tokenizer without BOS) on the local tasks."""
    hf_dir = convert_lit_checkpoint(smollm2, tmp_path / "hf")
    tasks = ["lit_tiny_mc", "lit_tiny_gen"]
    ours = _ours(smollm2, tasks, task_manager, max_length=2048, limit=4)
    theirs = _hf(hf_dir, tasks, task_manager, max_length=2048, limit=4)
    _assert_same(ours, theirs)
    # its chat template (--apply_chat_template): the few-shot example becomes an earlier turn
    ours = _ours(smollm2, tasks, task_manager, max_length=2048, limit=2, apply_chat_template=True)
    theirs = _hf(hf_dir, tasks, task_manager, max_length=2048, limit=2, apply_chat_template=True)
    _assert_same(ours, theirs)
    assert ours["samples"]["lit_tiny_mc"][0]["arguments"][0][0].startswith("<|im_start|>")
