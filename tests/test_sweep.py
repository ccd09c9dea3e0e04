"""The hostile-user sweep: every script, given bad input, a full or read-only disk, a killed earlier run or a hostile
server, either refuses in one line naming the file and the fix (exit 1, no traceback) or gives the correct result,
and nothing the user owned changes (files hashed before and after). See docs/robustness.md.

Scripts run in-process through `lit_gpt.utils.cli`, as their `__main__` does, on a tiny random checkpoint built here.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import importlib.util
import io
import json
import os
import shutil
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from hub_server import FakeHub, HubRepo, hub  # noqa: F401  (`hub` is a pytest fixture)
from lit_gpt.checkpoint import load_model, load_weights, save_weights
from lit_gpt.lora import LoRAConfig, apply_lora, base_fingerprint, lora_state_dict, save_lora
from lit_gpt.tiny import make_tiny_checkpoint
from lit_gpt.utils import LIT_CONFIG_NAME, LIT_WEIGHTS_NAME, atomic_write_text, cli
from prepare_helpers import ALPACA_ROWS, ROOT, oasst_trees, write_json, write_jsonl

QUICKSTART = ROOT / "examples" / "quickstart.json"
DEAD_PID = 2**22 + 12345  # above Linux's pid_max: no process has it


def _load(relative: str) -> Any:
    """A script as a module. Registered in sys.modules: jsonargparse reads a `**kwargs` script's source to find the
    options it passes on to `prepare()`."""
    name = "sweep_" + relative.replace("/", "_").removesuffix(".py")
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / relative)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def script(relative: str, function: str = "main") -> Callable[..., Any]:
    return getattr(_load(relative), function)


@dataclass
class Outcome:
    code: int
    out: str
    err: str
    result: Any = None


def run(function: Callable[..., Any], *args: Any, then: Callable[[Any], Any] | None = None) -> Outcome:
    """`python SCRIPT ARGS` in-process: the exit status, stdout, stderr and the function's return value (`then`: as
    `cli(function, run=then)`, for a script whose flags are a dataclass)."""
    out, err = io.StringIO(), io.StringIO()
    code, result = 0, None
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            result = cli(function, [str(a) for a in args], run=then)
        except SystemExit as e:
            code = e.code
    return Outcome(code, out.getvalue(), err.getvalue(), result)


def refused(outcome: Outcome, *fragments: str) -> str:
    """Exit 1 with exactly one `error:` line, no traceback, holding every fragment; returns that line."""
    errors = [line for line in outcome.err.splitlines() if line.startswith("error: ")]
    assert outcome.code == 1 and len(errors) == 1 and "Traceback" not in outcome.err, outcome.err[-2000:]
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]


def ok(outcome: Outcome) -> Outcome:
    assert outcome.code == 0 and "Traceback" not in outcome.err, outcome.err[-2000:]
    return outcome


def snapshot(*roots: Path) -> dict[str, str]:
    """sha256 of every file under `roots` (or of the file itself), by path."""
    files = {}
    for root in roots:
        for path in [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file()):
            files[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return files


def tree(folder: Path) -> dict[str, str]:
    """sha256 of every file under `folder`, by path relative to it."""
    return {str(Path(path).relative_to(folder)): digest for path, digest in snapshot(folder).items()}


@contextlib.contextmanager
def unchanged(*roots: Path):
    before = snapshot(*roots)
    yield
    assert snapshot(*roots) == before


def leftovers(folder: Path) -> list[str]:
    """Temporary names our writers use (`.NAME.HOST-PID.XXXX.tmp`) anywhere under `folder`."""
    return sorted(str(p) for p in folder.rglob("*.tmp"))


# -- the world every case starts from ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("sweep")
    base = make_tiny_checkpoint(QUICKSTART, root / "base")
    other = make_tiny_checkpoint(QUICKSTART, root / "other", seed=7)  # the same shape, other weights
    torch.manual_seed(0)
    model = apply_lora(load_model(base), LoRAConfig())
    with torch.no_grad():
        for name, p in lora_state_dict(model).items():
            if name.endswith("lora_B"):
                p.copy_(torch.randn_like(p) * 0.1)
    adapter = root / "out" / "lit_lora.safetensors"
    adapter.parent.mkdir()
    save_lora(model, LoRAConfig(), adapter, "alpaca", base_fingerprint(base))
    hf = root / "hf"
    ok(run(script("scripts/convert_lit_checkpoint.py"), "--checkpoint_dir", base, "--output_dir", hf))
    rows = write_json(root / "rows.json", ALPACA_ROWS)
    data = root / "data" / "alpaca"
    ok(run(script("scripts/prepare_json.py", "prepare_json"), "--data_file", rows, "--checkpoint_dir", base,
           "--destination_path", data))
    return {"root": root, "base": base, "other": other, "adapter": adapter, "hf": hf, "rows": rows, "data": data}


def copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def prepare(*args: Any) -> Outcome:
    return run(script("scripts/prepare_json.py", "prepare_json"), *args)


# == data loss: prepare scripts =====================================================================================


def test_csv_inside_destination_of_an_earlier_run_is_refused_and_kept(world, tmp_path: Path) -> None:
    # the CSV walkthrough's layout: data/csv made by an earlier run, then MyDataset.csv saved into it
    destination = copy(world["data"], tmp_path / "data" / "csv")
    csv_file = destination / "MyDataset.csv"
    csv_file.write_text("instruction,output\nName a color.,Red.\nName a fruit.,An apple.\n", encoding="utf-8")
    with unchanged(destination):
        refused(run(script("scripts/prepare_csv.py", "prepare_csv"), "--csv_dir", csv_file, "--checkpoint_dir",
                    world["base"], "--destination_path", destination),
                str(csv_file), "lies inside --destination_path", "pass another --destination_path")


def test_csv_folder_that_is_the_destination_is_refused(world, tmp_path: Path) -> None:
    folder = tmp_path / "data" / "csv"
    folder.mkdir(parents=True)
    (folder / "MyDataset.csv").write_text("instruction,output\nName a color.,Red.\n", encoding="utf-8")
    with unchanged(folder):
        refused(run(script("scripts/prepare_csv.py", "prepare_csv"), "--csv_dir", folder, "--checkpoint_dir",
                    world["base"], "--destination_path", folder), "MyDataset.csv", "lies inside")


def test_user_file_in_a_prepared_folder_is_not_deleted(world, tmp_path: Path) -> None:
    destination = copy(world["data"], tmp_path / "data")
    (destination / "notes.txt").write_text("my notes")
    with unchanged(destination):
        refused(prepare("--data_file", world["rows"], "--checkpoint_dir", world["base"], "--destination_path",
                        destination), str(destination / "notes.txt"), "move it out")


def test_checkpoint_inside_destination_is_refused(world, tmp_path: Path) -> None:
    checkpoint = copy(world["base"], tmp_path / "stuff" / "model")
    with unchanged(tmp_path / "stuff"):
        refused(prepare("--data_file", world["rows"], "--checkpoint_dir", checkpoint, "--destination_path",
                        tmp_path / "stuff"), str(checkpoint), "lies inside")


def test_rerun_over_our_own_output_replaces_it(world, tmp_path: Path) -> None:
    destination = copy(world["data"], tmp_path / "data")
    (destination / "stats.json").write_text("{}")  # ours: replaced
    with unchanged(world["rows"]):
        result = ok(prepare("--data_file", world["rows"], "--checkpoint_dir", world["base"], "--destination_path",
                            destination)).result
    assert json.loads((destination / "stats.json").read_text()) == result
    assert leftovers(tmp_path) == []


def test_mix_into_one_of_its_sources_is_refused(world, tmp_path: Path) -> None:
    a, b = copy(world["data"], tmp_path / "a"), copy(world["data"], tmp_path / "b")
    with unchanged(a, b):
        refused(run(script("scripts/mix_datasets.py", "mix_datasets"), "--data_dirs", a, b, "--destination_path", a),
                str(a), "write the mix to a new folder")


def test_select_into_its_source_is_refused(world, tmp_path: Path) -> None:
    a = copy(world["data"], tmp_path / "a")
    with unchanged(a):
        refused(run(script("scripts/select_dataset.py", "select_dataset"), "--data_dir", a, "--policy", "random", "--k", 2,
                    "--destination_path", a), str(a), "write the selection to a new folder")


def test_dedup_into_its_source_is_refused(world, tmp_path: Path) -> None:
    a = copy(world["data"], tmp_path / "a")
    with unchanged(a):
        refused(run(script("scripts/dedup_dataset.py", "dedup_dataset"), "--data_dirs", a, "--destination_path", a), str(a))


def test_prepare_into_a_file_is_refused(world, tmp_path: Path) -> None:
    target = tmp_path / "data.bin"
    target.write_bytes(b"mine")
    with unchanged(target):
        refused(prepare("--data_file", world["rows"], "--checkpoint_dir", world["base"], "--destination_path", target),
                "is a file")


# == killed runs: leftovers are cleaned, only ours ==================================================================


def _stale(folder: Path, name: str, pid: int, kind: str = ".tmp", is_dir: bool = False) -> Path:
    path = folder / f".{name}.{socket.gethostname()}-{pid}.abc123{kind}"
    if is_dir:
        (path / "train").mkdir(parents=True)
        (path / "train" / "input_ids.npy").write_bytes(b"\0" * 1000)
    else:
        path.write_bytes(b"partial")
    return path


def test_a_killed_prepare_leaves_nothing_after_the_next_run(world, tmp_path: Path) -> None:
    dead = _stale(tmp_path, "data", DEAD_PID, is_dir=True)
    live = _stale(tmp_path, "data", os.getppid(), is_dir=True)  # a run still going: its folder stays
    foreign = tmp_path / ".data.something.tmp"  # not our pattern: stays
    foreign.write_text("someone else's")
    ok(prepare("--data_file", world["rows"], "--checkpoint_dir", world["base"], "--destination_path",
               tmp_path / "data"))
    assert not dead.exists() and live.exists() and foreign.exists()


def test_a_killed_save_leaves_no_temp_file_after_the_next_save(world, tmp_path: Path) -> None:
    target = tmp_path / "lit_lora.safetensors"
    dead = _stale(tmp_path, target.name, DEAD_PID)
    other_file = _stale(tmp_path, "other.safetensors", DEAD_PID)  # another file's leftover: its own next save
    atomic_write_text(target, "x")
    assert not dead.exists() and other_file.exists() and target.read_text() == "x"


def test_a_dataset_moved_aside_by_a_killed_run_is_put_back(world, tmp_path: Path) -> None:
    moved = _stale(tmp_path, "data", DEAD_PID, kind=".old.tmp")
    moved.unlink()
    shutil.copytree(world["data"], moved)
    bad = write_json(tmp_path / "bad.json", [{"instruction": "x", "output": ""}])
    refused(prepare("--data_file", bad, "--checkpoint_dir", world["base"], "--destination_path", tmp_path / "data"),
            "empty")
    assert tree(tmp_path / "data") == tree(world["data"])
    assert not moved.exists()


# == full or read-only disk =========================================================================================


def _short_write(*args: Any, **kwargs: Any) -> None:
    raise OSError("1000 requested and 10 written")  # what numpy raises when the disk fills


def _disk_full_safetensors(tensors: Any, filename: str, metadata: Any = None) -> None:
    Path(filename).write_bytes(b"partial")
    raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")


def test_prepare_on_a_full_disk(world, tmp_path: Path, monkeypatch) -> None:
    destination = copy(world["data"], tmp_path / "data")
    monkeypatch.setattr(np, "save", _short_write)
    with unchanged(destination, world["rows"]):
        refused(prepare("--data_file", world["rows"], "--checkpoint_dir", world["base"], "--destination_path",
                        destination), f"cannot write {destination}", "is the disk full?", "nothing was replaced")
    assert leftovers(tmp_path) == []


def test_prepare_into_a_read_only_folder(world, tmp_path: Path, monkeypatch) -> None:
    def read_only(*args: Any, **kwargs: Any) -> str:
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr("tempfile.mkdtemp", read_only)
    refused(prepare("--data_file", world["rows"], "--checkpoint_dir", world["base"], "--destination_path",
                    tmp_path / "data"), f"cannot write {tmp_path / 'data'}: the file system is read-only",
            "pass a folder you can write to")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through chmod")
def test_prepare_into_a_folder_without_write_permission(world, tmp_path: Path) -> None:
    parent = tmp_path / "locked"
    parent.mkdir()
    parent.chmod(0o500)
    try:
        refused(prepare("--data_file", world["rows"], "--checkpoint_dir", world["base"], "--destination_path",
                        parent / "data"), "permission denied")
    finally:
        parent.chmod(0o700)


def test_merge_on_a_full_disk(world, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr("lit_gpt.checkpoint.save_file", _disk_full_safetensors)
    out = tmp_path / "merged"
    with unchanged(world["base"], world["adapter"]):
        refused(run(script("scripts/merge_lora.py"), "--checkpoint_dir", world["base"], "--lora_path",
                    world["adapter"], "--out_dir", out), f"cannot write {out / LIT_WEIGHTS_NAME}: the disk is full")
    assert not (out / LIT_WEIGHTS_NAME).exists() and leftovers(tmp_path) == []


def test_convert_hf_on_a_full_disk(world, tmp_path: Path, monkeypatch) -> None:
    hf = copy(world["hf"], tmp_path / "hf")
    monkeypatch.setattr("lit_gpt.checkpoint.save_file", _disk_full_safetensors)
    with unchanged(hf):
        refused(run(script("scripts/convert_hf_checkpoint.py"), "--checkpoint_dir", hf), "the disk is full")


def test_convert_lit_on_a_full_disk(world, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr("lit_gpt.checkpoint.save_file", _disk_full_safetensors)
    refused(run(script("scripts/convert_lit_checkpoint.py"), "--checkpoint_dir", world["base"], "--output_dir",
                tmp_path / "hf"), "model.safetensors: the disk is full")
    assert leftovers(tmp_path) == []


def test_export_into_a_read_only_folder(world, tmp_path: Path, monkeypatch) -> None:
    def read_only(*args: Any, **kwargs: Any) -> Any:
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr("tempfile.mkstemp", read_only)
    refused(run(script("scripts/export_peft.py"), "--checkpoint_dir", world["base"], "--lora_path", world["adapter"],
                "--out_dir", tmp_path / "peft"), "the file system is read-only")


def test_adapter_save_on_a_full_disk(world, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr("safetensors.torch.save_file", _disk_full_safetensors)
    from lit_gpt.utils import UserError

    with pytest.raises(UserError, match="lit_lora.safetensors: the disk is full"):
        save_lora({"a.lora_A": torch.zeros(2, 2)}, LoRAConfig(), tmp_path / "lit_lora.safetensors")
    assert list(tmp_path.iterdir()) == []


# == outputs over other people's folders ============================================================================


def merge(world, *args: Any) -> Outcome:
    return run(script("scripts/merge_lora.py"), "--checkpoint_dir", world["base"], "--lora_path", world["adapter"],
               *args)


def test_merge_over_another_checkpoint_is_refused(world, tmp_path: Path) -> None:
    other = copy(world["other"], tmp_path / "other")
    with unchanged(other):
        refused(merge(world, "--out_dir", other), "already holds", "merge_lora did not write", "pass a new folder")


def test_merge_into_the_base_is_refused(world) -> None:
    with unchanged(world["base"]):
        refused(merge(world, "--out_dir", world["base"]), "is the base checkpoint folder")


def test_merge_gives_base_plus_update_and_can_run_again(world, tmp_path: Path) -> None:
    out = tmp_path / "merged"
    ok(merge(world, "--out_dir", out))
    ok(merge(world, "--out_dir", out))  # its own output: written over
    base, merged, adapter = load_weights(world["base"]), load_weights(out), load_file(world["adapter"])
    name = "blocks.0.attn.query"
    delta = adapter[f"{name}.lora_B"] @ adapter[f"{name}.lora_A"] * LoRAConfig().scaling
    torch.testing.assert_close(merged[f"{name}.weight"], base[f"{name}.weight"] + delta)
    assert torch.equal(merged["blocks.0.attn.key.weight"], base["blocks.0.attn.key.weight"])


def test_convert_lit_into_its_own_checkpoint_is_refused(world, tmp_path: Path) -> None:
    checkpoint = copy(world["base"], tmp_path / "ck")
    with unchanged(checkpoint):
        refused(run(script("scripts/convert_lit_checkpoint.py"), "--checkpoint_dir", checkpoint, "--output_dir",
                    checkpoint), "is --checkpoint_dir", "pass a new folder")


def test_convert_lit_over_another_hf_folder_is_refused(world, tmp_path: Path) -> None:
    target = tmp_path / "hf"
    target.mkdir()
    (target / "config.json").write_text('{"model_type": "gpt2"}')
    (target / "pytorch_model.bin").write_bytes(b"weights")
    with unchanged(target):
        refused(run(script("scripts/convert_lit_checkpoint.py"), "--checkpoint_dir", world["base"], "--output_dir",
                    target), "already holds", "convert_lit_checkpoint did not write")


def test_convert_lit_runs_again_over_its_own_output(world, tmp_path: Path) -> None:
    hf = copy(world["hf"], tmp_path / "hf")
    ok(run(script("scripts/convert_lit_checkpoint.py"), "--checkpoint_dir", world["base"], "--output_dir", hf))
    weights = "model.safetensors"  # its metadata's order varies from write to write: compare the tensors
    assert {k: v for k, v in tree(hf).items() if k != weights} == \
        {k: v for k, v in tree(world["hf"]).items() if k != weights}
    again, before = load_file(hf / weights), load_file(world["hf"] / weights)
    assert again.keys() == before.keys() and all(torch.equal(again[k], before[k]) for k in again)


def test_export_over_another_adapter_is_refused(world, tmp_path: Path) -> None:
    target = tmp_path / "peft"
    target.mkdir()
    (target / "adapter_config.json").write_text("{}")
    save_file({"x": torch.zeros(1)}, str(target / "adapter_model.safetensors"))
    with unchanged(target):
        refused(run(script("scripts/export_peft.py"), "--checkpoint_dir", world["base"], "--lora_path",
                    world["adapter"], "--out_dir", target), "export_peft did not write")


def test_export_runs_again_over_its_own_output(world, tmp_path: Path) -> None:
    args = ("--checkpoint_dir", world["base"], "--lora_path", world["adapter"], "--out_dir", tmp_path / "peft")
    ok(run(script("scripts/export_peft.py"), *args))
    first = load_file(tmp_path / "peft" / "adapter_model.safetensors")
    ok(run(script("scripts/export_peft.py"), *args))
    again = load_file(tmp_path / "peft" / "adapter_model.safetensors")
    assert again.keys() == first.keys() and all(torch.equal(again[k], first[k]) for k in again)


def test_output_folder_that_is_a_file_is_refused(world, tmp_path: Path) -> None:
    target = tmp_path / "out"
    target.write_text("mine")
    with unchanged(target):
        refused(merge(world, "--out_dir", target), "is a file")


# == the adapter's base model =======================================================================================


def generate(checkpoint: Path, *args: Any) -> Outcome:
    return run(script("generate/base.py"), "--checkpoint_dir", checkpoint, "--max_new_tokens", 3, "--top_k", 1,
               "--precision", "32-true", *args)


def test_generate_refuses_an_adapter_of_another_checkpoint(world) -> None:
    refused(generate(world["other"], "--lora_path", world["adapter"]), f"was trained on {world['base']}",
            f"pass --checkpoint_dir {world['base']}")


def test_merge_refuses_an_adapter_of_another_checkpoint(world, tmp_path: Path) -> None:
    refused(run(script("scripts/merge_lora.py"), "--checkpoint_dir", world["other"], "--lora_path", world["adapter"],
                "--out_dir", tmp_path / "m"), "was trained on")
    assert not (tmp_path / "m").exists()


def test_export_refuses_an_adapter_of_another_checkpoint(world, tmp_path: Path) -> None:
    refused(run(script("scripts/export_peft.py"), "--checkpoint_dir", world["other"], "--lora_path", world["adapter"],
                "--out_dir", tmp_path / "p"), "was trained on")


def test_adapter_on_its_base_generates_without_warning(world) -> None:
    outcome = ok(generate(world["base"], "--lora_path", world["adapter"]))
    assert "warning" not in outcome.err and len(outcome.result) == 1


def test_adapter_without_a_fingerprint_loads_with_a_warning(world, tmp_path: Path) -> None:
    with safe_open(str(world["adapter"]), framework="pt") as f:
        metadata = {k: v for k, v in f.metadata().items() if k != "base_checkpoint"}
    old = tmp_path / "old.safetensors"
    save_file(load_file(world["adapter"]), str(old), metadata=metadata)
    outcome = ok(generate(world["base"], "--lora_path", old))
    assert "warning:" in outcome.err and "does not record the checkpoint" in outcome.err
    assert outcome.result == ok(generate(world["base"], "--lora_path", world["adapter"])).result


def test_a_bf16_copy_of_the_base_is_the_same_base(world, tmp_path: Path) -> None:
    copy16 = copy(world["base"], tmp_path / "bf16")
    save_weights({k: v.to(torch.bfloat16) for k, v in load_weights(world["base"]).items()}, copy16 / LIT_WEIGHTS_NAME)
    ok(generate(copy16, "--lora_path", world["adapter"]))


# == damaged model and adapter files ================================================================================


def _damaged(tmp_path: Path, source: Path, how: str) -> Path:
    data = source.read_bytes()
    path = tmp_path / source.name
    path.write_bytes({"truncated": data[: len(data) // 2], "empty": b"",
                      "random": np.random.default_rng(0).bytes(4096)}[how])
    return path


@pytest.mark.parametrize("how", ["truncated", "empty", "random"])
def test_damaged_adapter(world, tmp_path: Path, how: str) -> None:
    adapter = _damaged(tmp_path, world["adapter"], how)
    refused(generate(world["base"], "--lora_path", adapter), str(adapter), "not a readable safetensors file")


@pytest.mark.parametrize("how", ["truncated", "empty", "random"])
def test_damaged_model_weights(world, tmp_path: Path, how: str) -> None:
    checkpoint = copy(world["base"], tmp_path / "ck")
    _damaged(checkpoint, world["base"] / LIT_WEIGHTS_NAME, how)
    refused(generate(checkpoint), LIT_WEIGHTS_NAME, "convert the checkpoint again")


def _adapter_with(tmp_path: Path, world, **metadata: str) -> Path:
    with safe_open(str(world["adapter"]), framework="pt") as f:
        merged = {**f.metadata(), **metadata}
    path = tmp_path / "lit_lora.safetensors"
    save_file(load_file(world["adapter"]), str(path), metadata=merged)
    return path


@pytest.mark.parametrize("lora_config, message", [
    ("{not json", "not a JSON object"),
    ('["a list"]', "not a JSON object"),
    ('{"lora_r": 8, "lora_rank": 4}', "unknown LoRA settings ['lora_rank']"),
    ('{"lora_r": "8"}', "lora_r is '8', expected a int"),
    ("[" * 5000 + "]" * 5000, "not a JSON object"),
])
def test_adapter_metadata_that_is_not_ours(world, tmp_path: Path, lora_config: str, message: str) -> None:
    refused(generate(world["base"], "--lora_path", _adapter_with(tmp_path, world, lora_config=lora_config)), message)


def test_adapter_with_a_damaged_fingerprint(world, tmp_path: Path) -> None:
    refused(generate(world["base"], "--lora_path", _adapter_with(tmp_path, world, base_checkpoint="{}")),
            "base_checkpoint metadata is damaged")


def test_weights_of_another_config(world, tmp_path: Path) -> None:
    checkpoint = copy(world["base"], tmp_path / "ck")
    config = json.loads((checkpoint / LIT_CONFIG_NAME).read_text())
    (checkpoint / LIT_CONFIG_NAME).write_text(json.dumps({**config, "n_embd": 64, "n_head": 2, "n_query_groups": 1}))
    refused(generate(checkpoint), "does not match lit_config.json", "size mismatch")


def test_config_nested_too_deep(world, tmp_path: Path) -> None:
    checkpoint = copy(world["base"], tmp_path / "ck")
    (checkpoint / LIT_CONFIG_NAME).write_text("[" * 100_000 + "]" * 100_000)
    refused(generate(checkpoint), LIT_CONFIG_NAME, "nested too deeply")


def test_prompt_longer_than_the_context(world) -> None:
    refused(generate(world["base"], "--prompt", "What is 3 plus 7? " * 300), "--prompt is",
            "context of 512 tokens", "shorten the prompt")


# == the converter's own safetensors reader =========================================================================


def _header(path: Path) -> tuple[dict[str, Any], bytes]:
    data = path.read_bytes()
    n = int.from_bytes(data[:8], "little")
    return json.loads(data[8:8 + n]), data[8 + n:]


def _write_raw(path: Path, header: dict[str, Any], body: bytes, header_len: int | None = None) -> None:
    text = json.dumps(header).encode()
    path.write_bytes((header_len if header_len is not None else len(text)).to_bytes(8, "little") + text + body)


def convert_hf(folder: Path) -> Outcome:
    return run(script("scripts/convert_hf_checkpoint.py"), "--checkpoint_dir", folder)


def _hf_with(tmp_path: Path, world, edit: Callable[[dict[str, Any]], None], body_edit=lambda b: b) -> Path:
    hf = copy(world["hf"], tmp_path / "hf")
    header, body = _header(hf / "model.safetensors")
    edit(header)
    _write_raw(hf / "model.safetensors", header, body_edit(body))
    return hf


def _first_two(header: dict[str, Any]) -> tuple[dict, dict]:
    first, second = sorted((v for k, v in header.items() if k != "__metadata__"), key=lambda v: v["data_offsets"])[:2]
    return first, second


def test_overlapping_offsets_are_refused_like_the_safetensors_library_does(world, tmp_path: Path) -> None:
    def overlap(header: dict[str, Any]) -> None:
        first, second = _first_two(header)
        second["data_offsets"] = [first["data_offsets"][0], first["data_offsets"][0] + second["data_offsets"][1]
                                  - second["data_offsets"][0]]
        if second["data_offsets"][1] > first["data_offsets"][1]:
            first["shape"], second["shape"] = second["shape"], first["shape"]

    hf = _hf_with(tmp_path, world, overlap)
    with pytest.raises(SafetensorError):
        load_file(hf / "model.safetensors")
    with unchanged(hf):
        refused(convert_hf(hf), "model.safetensors is not a valid safetensors file", "overlaps")


@pytest.mark.parametrize("shape", [[2**20, 2**20], [2**33]])
def test_a_claimed_huge_tensor_is_refused_without_allocating_it(world, tmp_path: Path, shape: list[int]) -> None:
    def huge(header: dict[str, Any]) -> None:
        _first_two(header)[0]["shape"] = shape  # 4 TiB and 32 GiB of float32

    refused(convert_hf(_hf_with(tmp_path, world, huge)), "needs", "its offsets give")


def test_offsets_past_the_end_are_a_truncated_file(world, tmp_path: Path) -> None:
    refused(convert_hf(_hf_with(tmp_path, world, lambda h: None, lambda body: body[:-100])), "is truncated")


def test_a_hole_between_tensors_is_refused(world, tmp_path: Path) -> None:
    def hole(header: dict[str, Any]) -> None:
        for info in header.values():
            if isinstance(info, dict) and "data_offsets" in info:
                info["data_offsets"] = [o + 4 for o in info["data_offsets"]]

    refused(convert_hf(_hf_with(tmp_path, world, hole, lambda body: b"\0" * 4 + body)), "gap")


def test_a_header_length_beyond_the_file(world, tmp_path: Path) -> None:
    hf = copy(world["hf"], tmp_path / "hf")
    header, body = _header(hf / "model.safetensors")
    _write_raw(hf / "model.safetensors", header, body, header_len=2**40)
    refused(convert_hf(hf), "its header claims 1,099,511,627,776 bytes")


def test_a_header_that_is_not_json(world, tmp_path: Path) -> None:
    hf = copy(world["hf"], tmp_path / "hf")
    (hf / "model.safetensors").write_bytes((20).to_bytes(8, "little") + b"\xff" * 20)
    refused(convert_hf(hf), "its header is not JSON")


def test_a_valid_file_converts_to_the_same_weights(world, tmp_path: Path) -> None:
    hf = copy(world["hf"], tmp_path / "hf")
    ok(convert_hf(hf))
    expected = load_weights(world["base"])
    assert all(torch.equal(t, expected[n]) for n, t in load_weights(hf).items())


def test_a_legacy_torch_bin_converts(world, tmp_path: Path) -> None:
    hf = copy(world["hf"], tmp_path / "hf")
    torch.save(load_file(hf / "model.safetensors"), hf / "pytorch_model.bin", _use_new_zipfile_serialization=False)
    (hf / "model.safetensors").unlink()
    ok(convert_hf(hf))
    expected = load_weights(world["base"])
    assert all(torch.equal(t, expected[n]) for n, t in load_weights(hf).items())


def test_a_random_bytes_torch_bin(world, tmp_path: Path) -> None:
    hf = copy(world["hf"], tmp_path / "hf")
    (hf / "model.safetensors").unlink()
    (hf / "pytorch_model.bin").write_bytes(np.random.default_rng(1).bytes(5000))
    refused(convert_hf(hf), "pytorch_model.bin is not a PyTorch weights file we can read")


# == data files =====================================================================================================


def test_lone_surrogate(world, tmp_path: Path) -> None:
    rows = [dict(r) for r in ALPACA_ROWS]
    rows[2]["output"] = "four \ud800"
    data = tmp_path / "rows.json"
    data.write_text(json.dumps(rows))  # ASCII JSON with the escape "\ud800", as a broken exporter writes it
    refused(prepare("--data_file", data, "--checkpoint_dir", world["base"], "--destination_path", tmp_path / "out"),
            f"{data}, record 3: field 'output' holds a lone UTF-16 surrogate")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("suffix", [".json", ".jsonl"])
def test_json_nested_very_deep(world, tmp_path: Path, suffix: str) -> None:
    data = tmp_path / f"deep{suffix}"
    deep = "[" * 100_000 + "]" * 100_000
    data.write_text(deep if suffix == ".json" else '{"instruction": ' + deep + "}\n")
    refused(prepare("--data_file", data, "--checkpoint_dir", world["base"], "--destination_path", tmp_path / "out"),
            "nested too deeply")


def _oasst(world, tmp_path: Path, edit: Callable[[list[dict[str, Any]]], None], *args: Any) -> Outcome:
    trees = oasst_trees()
    edit(trees)
    data = write_jsonl(tmp_path / "trees.jsonl", trees)
    return run(script("scripts/prepare_oasst.py", "prepare_oasst"), "--data_file", data, "--checkpoint_dir",
               world["base"], "--destination_path", tmp_path / "out", *args)


def test_oasst_rank_of_the_wrong_type(world, tmp_path: Path) -> None:
    def edit(trees: list[dict[str, Any]]) -> None:
        trees[0]["replies"][0]["rank"] = "first"

    refused(_oasst(world, tmp_path, edit), "trees.jsonl, line 1", "'rank' of message a2 must be a whole number")


def test_oasst_lang_of_the_wrong_type(world, tmp_path: Path) -> None:
    def edit(trees: list[dict[str, Any]]) -> None:
        trees[0]["lang"] = ["en"]

    refused(_oasst(world, tmp_path, edit, "--lang", "null"), "trees.jsonl, line 1", "must be a string")


def test_oasst_reads_a_good_file(world, tmp_path: Path) -> None:
    outcome = ok(_oasst(world, tmp_path, lambda trees: None))
    assert outcome.result["rows_read"] == 3


def test_csv_with_a_long_answer_is_accepted(world, tmp_path: Path) -> None:
    answer = "A long answer. " * 20_000  # 300 KB in one cell, beyond the csv module's 128 KiB default
    data = tmp_path / "long.csv"
    data.write_text(f'instruction,output\nName a color.,Red.\nWrite at length.,"{answer}"\n', encoding="utf-8")
    outcome = ok(run(script("scripts/prepare_csv.py", "prepare_csv"), "--csv_dir", data, "--checkpoint_dir",
                     world["base"], "--destination_path", tmp_path / "out", "--test_split_fraction", 0,
                     "--max_seq_length", 256))
    assert outcome.result["rows_read"] == 2 and outcome.result["truncated"]["samples"] == 1


# == downloads and secrets ==========================================================================================


def test_a_hostile_etag_chooses_no_path(hub: FakeHub, tmp_path: Path, monkeypatch) -> None:
    from lit_gpt.download import STATE_DIR

    monkeypatch.setattr(HubRepo, "etag", lambda self, path: "../../../../../escaped")
    files = {"config.json": b"{}", "model.safetensors": b"weights" * 100}
    hub.add_repo("org/evil", files)
    hub.fail("org/evil", "model.safetensors", 503)
    ckpt = tmp_path / "checkpoints"
    refused(run(script("scripts/download.py", "download"), "--repo_id", "org/evil", "--checkpoint_dir", ckpt),
            "HTTP 503")
    partials = sorted(p for p in tmp_path.rglob("*incomplete*"))
    assert partials and all(p.parent == ckpt / "org" / "evil" / STATE_DIR for p in partials)
    assert not any("escaped" in str(p) for p in tmp_path.rglob("*"))
    ok(run(script("scripts/download.py", "download"), "--repo_id", "org/evil", "--checkpoint_dir", ckpt))
    assert (ckpt / "org" / "evil" / "model.safetensors").read_bytes() == files["model.safetensors"]


def test_a_shard_name_outside_the_repo_is_refused(hub: FakeHub, tmp_path: Path) -> None:
    index = json.dumps({"weight_map": {"a": "../../outside.safetensors"}}).encode()
    hub.add_repo("org/evil", {"config.json": b"{}", "model.safetensors.index.json": index,
                              "../../outside.safetensors": b"x"})
    refused(run(script("scripts/download.py", "download"), "--repo_id", "org/evil", "--checkpoint_dir",
                tmp_path / "checkpoints"), "lists a file outside the repo")
    assert not (tmp_path / "outside.safetensors").exists()


@pytest.mark.parametrize("relative, function", [("scripts/download.py", "download"),
                                                ("scripts/prepare_json.py", "prepare_json")])
def test_print_config_hides_the_access_token(relative: str, function: str) -> None:
    outcome = ok(run(script(relative, function), "--access_token", "hf_SeCrEt123", "--print_config"))
    assert "hf_SeCrEt123" not in outcome.out + outcome.err
    assert "access_token: null  # not printed" in outcome.out


def test_chat_refuses_a_message_longer_than_the_context_and_goes_on(world) -> None:
    from lit_gpt.chat import chat_loop
    from lit_gpt.prompts import load_prompt_style
    from lit_gpt.tokenizer import Tokenizer

    tokenizer = Tokenizer(world["base"])
    messages = iter(["What is 3 plus 7? " * 300, "What is 3 plus 7?", None])
    written: list[str] = []
    turns = chat_loop(load_model(world["base"]).eval(), tokenizer, load_prompt_style("alpaca", tokenizer),
                      lambda: next(messages), written.append, max_new_tokens=3, top_k=1)
    assert "too long for the model's context" in written[0]
    assert [t.instruction for t in turns] == ["What is 3 plus 7?"]


def test_an_os_error_reaching_cli_is_one_line() -> None:
    def full(path: str = "out/x.bin") -> None:
        raise OSError(errno.ENOSPC, "No space left on device", path)

    refused(run(full), "out/x.bin: the disk is full; free some space")


def test_merge_beside_the_adapter_in_its_out_dir(world, tmp_path: Path) -> None:
    out = copy(world["adapter"].parent, tmp_path / "out")  # finetune's out_dir: lit_lora.safetensors and more
    with unchanged(out / "lit_lora.safetensors"):
        ok(merge(world, "--out_dir", out))
    assert (out / LIT_WEIGHTS_NAME).is_file()


def test_as_a_user_runs_it_exit_1_and_one_line(world, tmp_path: Path) -> None:
    import subprocess

    checkpoint = copy(world["base"], tmp_path / "ck")
    with unchanged(checkpoint):
        done = subprocess.run([sys.executable, str(ROOT / "scripts" / "convert_lit_checkpoint.py"), "--checkpoint_dir",
                               str(checkpoint), "--output_dir", str(checkpoint)], capture_output=True, text=True,
                              timeout=120)
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.splitlines() == [f"error: --output_dir {checkpoint} is --checkpoint_dir, whose config.json and "
                                        "tokenizer files it would overwrite; pass a new folder"]


def test_finetune_records_the_base_and_its_adapter_is_refused_elsewhere(world, tmp_path: Path) -> None:
    out = tmp_path / "out"
    ok(run(script("finetune/lora.py", "Settings"), "--checkpoint_dir", world["base"], "--data_dir", world["data"],
           "--out_dir", out, "--precision", "32-true", "--batch_size", 2, "--micro_batch_size", 2, "--max_iters", 4,
           "--warmup_steps", 1, "--eval_interval", 4, "--eval_iters", 1, "--save_interval", 4,
           then=script("finetune/lora.py", "setup")))
    with safe_open(str(out / "lit_lora.safetensors"), framework="pt") as f:
        assert json.loads(f.metadata()["base_checkpoint"]) == json.loads(base_fingerprint(world["base"]))
    ok(generate(world["base"], "--lora_path", out / "lit_lora.safetensors"))
    refused(generate(world["other"], "--lora_path", out / "lit_lora.safetensors"), "was trained on")


def test_a_hostile_etag_chooses_no_path_for_a_dataset_either(world, hub: FakeHub, tmp_path: Path,
                                                             monkeypatch) -> None:
    from prepare_helpers import DOLLY_ROWS

    monkeypatch.setattr(HubRepo, "etag", lambda self, path: "../../../escaped")  # stays inside tmp_path if followed
    content = "".join(json.dumps(r) + "\n" for r in DOLLY_ROWS).encode()
    hub.add_repo("databricks/databricks-dolly-15k", {"databricks-dolly-15k.jsonl": content}, repo_type="dataset")
    dolly = script("scripts/prepare_dolly.py", "prepare_dolly")
    args = ("--checkpoint_dir", world["base"], "--destination_path")
    assert ok(run(dolly, *args, tmp_path / "out")).result["rows_read"] == 4
    assert not any("escaped" in p.name for p in tmp_path.rglob("*"))
    import httpx2

    def no_connection(*args: Any, **kwargs: Any) -> None:
        raise httpx2.ConnectError("no route to host")

    monkeypatch.setattr("lit_gpt.download.get_hf_file_metadata", no_connection)  # the copy fetched before is used
    offline = ok(run(dolly, *args, tmp_path / "out2"))
    assert offline.result["rows_read"] == 4 and "fetched before" in offline.err


def test_no_connection_and_no_earlier_copy_is_one_line(world, hub: FakeHub, tmp_path: Path, monkeypatch) -> None:
    import httpx2

    def no_connection(*args: Any, **kwargs: Any) -> None:
        raise httpx2.ConnectError("no route to host")

    monkeypatch.setattr("lit_gpt.download.get_hf_file_metadata", no_connection)
    refused(run(script("scripts/prepare_dolly.py", "prepare_dolly"), "--checkpoint_dir", world["base"],
                "--destination_path", tmp_path / "out"), "cannot reach the Hub", "pass --data_file")
    assert not (tmp_path / "out").exists()
