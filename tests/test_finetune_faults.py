"""How finetune runs fail: each mistake or accident stops with one line naming what to do, and nothing a user made
is overwritten or saved broken. In-process on the tiny model, a few steps each."""
from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from helpers import csv_losses, finetune_settings, finetune_workspace, load_script
from lit_gpt.utils import UserError

lora = load_script("finetune/lora.py")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return finetune_workspace(tmp_path_factory.mktemp("faults"))


def _train(workspace: dict[str, Path], out_dir: Path, **overrides) -> dict:
    settings = finetune_settings(workspace, out_dir, **({"lora_dropout": 0.0, "max_iters": 8} | overrides))
    return lora.setup(lora.Settings(**settings))


def test_a_new_run_never_replaces_a_run_unless_asked(workspace: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "out"
    _train(workspace, out)
    adapter = (out / "lit_lora.safetensors").read_bytes()
    with pytest.raises(UserError, match=r"already holds a run .* --resume true \(or auto\) .* --out_dir .* --overwrite"):
        _train(workspace, out)
    assert (out / "lit_lora.safetensors").read_bytes() == adapter
    # an adapter alone (a run whose state was deleted) is a run too
    (out / "training_state.pt").unlink()
    with pytest.raises(UserError, match="already holds a run"):
        _train(workspace, out)
    # by name: the old run's files go, the new run's steps are all there are
    (out / "epoch-7").mkdir()
    result = _train(workspace, out, max_iters=4, overwrite=True)
    assert result["steps"] == 2 and set(csv_losses(out / "metrics.csv")) == {1, 2}
    assert not (out / "epoch-7").exists() and (out / "lit_lora.safetensors").read_bytes() != adapter
    # continuing a finished run is allowed: it has nothing left to do
    assert _train(workspace, out, max_iters=4, resume="auto")["steps"] == 2


def test_one_run_at_a_time_per_out_dir(workspace: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    lock = out / "finetune.lock"
    lock.write_text(f"{os.getpid()}\n")  # a live process holds it
    with pytest.raises(UserError, match=rf"in use by another finetune run \(process {os.getpid()}"):
        _train(workspace, out)
    assert lock.read_text() == f"{os.getpid()}\n" and not (out / "training_state.pt").exists()
    # a lock left by a process that is gone (a killed run) is stale: taken over, and released at the end
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock.write_text(f"{dead.pid}\n")
    assert _train(workspace, out, max_iters=4)["steps"] == 2
    assert not lock.exists()


@pytest.mark.parametrize("grad_clip", [0.0, 1.0], ids=["no_clipping", "clipping"])
def test_a_non_finite_loss_stops_the_run_and_keeps_the_last_finite_checkpoint(
        workspace: dict[str, Path], tmp_path: Path, grad_clip: float, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    # learning rate 1e3 blows the adapters up within a few steps; a checkpoint after every step
    with pytest.raises(UserError, match=r"^step (\d+): the (training loss|gradient norm) is (nan|inf)") as error:
        _train(workspace, out, learning_rate=1e3, warmup_steps=0, grad_clip=grad_clip, save_interval=1,
               max_iters=40, lora_mlp=True)
    failed = int(str(error.value).split(":")[0].split()[1])
    assert f"the checkpoint of step {failed - 1} in {out} is kept" in str(error.value)
    state = torch.load(out / "training_state.pt", weights_only=True)
    assert state["step"] == failed - 1
    adapter = load_file(out / "lit_lora.safetensors")
    assert all(bool(torch.isfinite(t).all()) for t in adapter.values())
    assert torch.equal(adapter["blocks.0.attn.query.lora_B"], state["lora"]["blocks.0.attn.query.lora_B"])
    assert "Traceback" not in capsys.readouterr().err


def test_a_run_that_would_train_nothing_is_refused_or_trains(workspace: dict[str, Path], tmp_path: Path) -> None:
    # batch 4 of micro-batches of 2: a step takes 2 micro-batch iterations
    with pytest.raises(UserError, match=r"--max_iters 1 is less than one optimizer step: .* = 1 x 2 x 1 / 4 = 0.50 "
                                        r"steps; pass --max_iters 2 or more"):
        _train(workspace, tmp_path / "none", max_iters=1)
    # exactly one step, as `--max_iters 20` with the default batch sizes (16 iterations a step) gave: it trains
    result = _train(workspace, tmp_path / "one", max_iters=3, warmup_steps=10)
    (step,) = [m for m in result["history"] if "train_loss" in m]
    assert step["lr"] == 3e-3  # the peak: warm-up capped at half of one step is none
    adapter = load_file(tmp_path / "one" / "lit_lora.safetensors")
    assert all(bool(t.abs().sum() > 0) for name, t in adapter.items() if name.endswith("lora_B"))


@pytest.mark.parametrize("change", ["learning_rate", "batch_size", "max_iters", "data"])
def test_resume_refuses_a_changed_run(workspace: dict[str, Path], tmp_path: Path, change: str) -> None:
    data = tmp_path / "data"
    shutil.copytree(workspace["data"], data)
    out = tmp_path / "out"
    _train(workspace, out, data_dir=data, max_iters=4)
    changed = {"learning_rate": {"learning_rate": 1e-3}, "batch_size": {"batch_size": 2, "micro_batch_size": 1},
               "max_iters": {"max_iters": 8}, "data": {}}[change]
    if change == "data":
        meta = json.loads((data / "meta.json").read_text())
        (data / "meta.json").write_text(json.dumps({**meta, "seed": meta.get("seed", 0) + 1}))
    message = {"learning_rate": r"learning_rate 0\.003, this run has 0\.001",
               "batch_size": r"batch_size 4, this run has 2", "max_iters": r"max_steps 2, this run has 4",
               "data": rf"data \({data} changed, or is another dataset\)"}[change]
    with pytest.raises(UserError, match=rf"--resume: .*training_state.pt was trained with {message}"):
        _train(workspace, out, data_dir=data, **({"max_iters": 4} | changed), resume=True)


def test_an_empty_test_split_means_no_validation_not_a_loss_of_zero(
        tmp_path_factory: pytest.TempPathFactory, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    workspace = finetune_workspace(tmp_path_factory.mktemp("no_test"), test_split_fraction=0.0)
    out = tmp_path / "out"
    result = _train(workspace, out, max_iters=None, epochs=1, batch_size=8, micro_batch_size=8)
    printed = capsys.readouterr().out
    assert printed.count("has no examples: no validation") == 1
    step_lines = [line for line in printed.splitlines() if line.startswith("step ")]
    assert len(step_lines) == 5 and not any("val_loss" in line for line in step_lines)
    assert result["initial_val_loss"] is None and result["final_val_loss"] is None
    assert all("val_loss" not in m for m in result["history"]) and csv_losses(out / "metrics.csv", "val_loss") == {}
    assert math.isfinite(result["final_train_loss"])
    assert "| 1 | 5 | none |" in (out / "dev_generations.md").read_text()  # 40 examples, 8 a step
    with pytest.raises(UserError, match="--early_stopping_patience needs validation examples"):
        _train(workspace, tmp_path / "early", early_stopping_patience=1)
