"""Helpers every test file may use (fixtures live in conftest.py)."""
from __future__ import annotations

import csv
import importlib.util
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]


def load_script(path: str) -> ModuleType:
    """The script at `path` (relative to the repository root, e.g. "finetune/lora.py") as a module, to call its
    entry function in-process. Named `<stem>_script`, so it never shadows a library module of the same stem."""
    spec = importlib.util.spec_from_file_location(Path(path).stem + "_script", ROOT / path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses and jsonargparse look their module up by name
    spec.loader.exec_module(module)
    return module


def finetune_workspace(root: Path, test_split_fraction: float = 0.2) -> dict[str, Path]:
    """A tiny converted Llama-style checkpoint with a real BPE tokenizer and ChatML template, and 40 Alpaca rows
    prepared for it (32 train, 8 test at the default split) under `root`."""
    import pytest
    import torch

    from lit_gpt.convert import convert_hf_checkpoint
    from lit_gpt.data import ALPACA, prepare
    from prepare_helpers import CHATML, tiny_bpe_checkpoint

    transformers = pytest.importorskip("transformers")
    checkpoint = tiny_bpe_checkpoint(root / "checkpoint", bos=False, chat_template=CHATML)
    hf_config = transformers.LlamaConfig(vocab_size=400, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
    torch.manual_seed(0)
    transformers.LlamaForCausalLM(hf_config).save_pretrained(checkpoint)
    convert_hf_checkpoint(checkpoint)

    rows = [{"instruction": f"Name color number {i}.", "input": "" if i % 3 else "The sky is blue.",
             "output": ["Red.", "Blue, yellow.", "Green and blue.", "Yellow"][i % 4] * (1 + i % 3)} for i in range(40)]
    (root / "alpaca.json").write_text(json.dumps(rows))
    data = root / "data"
    prepare(ALPACA, checkpoint_dir=checkpoint, destination_path=data, data_file=root / "alpaca.json",
            test_split_fraction=test_split_fraction)
    return {"root": root, "checkpoint": checkpoint, "data": data}


def finetune_settings(workspace: dict[str, Path], out_dir: Path, **overrides) -> dict:
    """The tests' finetuning flags (both scripts): the tiny model, 16 micro-batches of 2, checkpoints and validation
    every 4 steps."""
    return dict(checkpoint_dir=workspace["checkpoint"], data_dir=workspace["data"], out_dir=out_dir,
                precision="32-true", batch_size=4, micro_batch_size=2, max_iters=16, warmup_steps=2, learning_rate=3e-3,
                eval_interval=4, eval_iters=2, save_interval=4) | overrides


def script_command(script: str, flags: dict) -> list[str]:
    """`python SCRIPT --flag value ...`, for runs in processes of their own (from the repository root)."""
    return [sys.executable, script, *(x for k, v in flags.items() for x in (f"--{k}", str(v)))]


def csv_losses(csv_path: Path, key: str = "train_loss") -> dict[int, float]:
    """Per-step training (or validation) loss from a finetune run's metrics.csv; a resumed run re-logs the steps
    after its checkpoint, last wins."""
    with csv_path.open() as f:
        return {int(r["step"]): float(r[key]) for r in csv.DictReader(f) if r.get(key)}


def assert_same_losses(expected_run: Path, actual_run: Path, logged: dict[str, int], tolerance: float = 1e-5) -> None:
    """Two finetune runs logged the same per-step losses: `logged` maps each metrics.csv column compared to how many
    steps the expected run must have logged it at (so a run that logged nothing cannot pass)."""
    for key, count in logged.items():
        expected, actual = (csv_losses(run / "metrics.csv", key) for run in (expected_run, actual_run))
        assert len(expected) == count and actual.keys() == expected.keys(), (key, sorted(actual), sorted(expected))
        for step in expected:
            assert actual[step] == pytest.approx(expected[step], abs=tolerance), (key, step)


def kill_at(cmd: list[str], prefix: str, timeout: float = 600) -> None:
    """Run `cmd` and SIGKILL it, with every process it started (the other ranks), once it prints a line starting
    with `prefix`. The child is unbuffered whatever the caller's environment, so each line arrives as it is printed."""
    with subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"}, start_new_session=True) as process:
        kill = lambda: os.killpg(process.pid, signal.SIGKILL)  # noqa: E731  (its own session: rank 0 and its children)
        watchdog = threading.Timer(timeout, kill)  # a hung run fails the test instead of hanging it
        watchdog.start()
        lines = []
        try:
            for line in process.stdout:
                lines.append(line)
                if line.startswith(prefix):
                    kill()
                    break
        finally:
            watchdog.cancel()
        process.wait()
    assert process.returncode == -signal.SIGKILL and lines and lines[-1].startswith(prefix), "".join(lines[-30:])
