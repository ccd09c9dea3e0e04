"""bench/gpu_check.py's smoke mode: every phase's code runs on CPU with tiny models and writes its results."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "bench" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")
def test_smoke_mode_runs_every_cpu_phase_and_writes_results(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("OUT", str(tmp_path / "OUT"))
    # compile (minutes of inductor on a CPU), qlora and peers (bitsandbytes / transformers imports) are left to the
    # GPU run; their code paths are the same functions as below
    phases = "parity,packed,bf16,throughput,varlen,memory7b"
    results = _gpu_check().main(["--device", "cpu", "--tiny", "--phases", phases, "--out_dir", str(tmp_path / "r")])
    for folder in (tmp_path / "r", tmp_path / "OUT"):
        written = json.loads((folder / "gpu_check.json").read_text())
        assert list(written["phases"]) == phases.split(",")
        assert "| throughput | done |" in (folder / "gpu_check.md").read_text()
    phases_out = results["phases"]
    assert all(phases_out[p]["status"] == "done" for p in phases.split(",")), phases_out
    for name in ("parity", "varlen", "bf16", "packed"):
        assert phases_out[name]["result"]["passed"], (name, phases_out[name]["result"])
    throughput = phases_out["throughput"]["result"]
    eager = throughput["eager"]
    assert eager["tokens"] > 0 and eager["tokens_per_s"] > 0
    assert 0 < eager["exact_flops_per_s"] < eager["6N_flops_per_s"]  # LoRA skips the frozen weight gradients
    assert throughput["measured_matmul_flops_per_s"] > 0
    assert phases_out["memory7b"]["result"] == {"skipped": "needs a GPU"}


def test_a_timeout_keeps_the_phases_before_it(tmp_path: Path, monkeypatch) -> None:
    gpu_check = _gpu_check()

    def slow(run):
        import time

        run.partial["before_the_hang"] = 1
        time.sleep(10)

    monkeypatch.setitem(gpu_check.RUNNERS, "packed", slow)
    monkeypatch.setitem(gpu_check.LIMITS, "packed", 0.25)  # x4 in tiny mode: 1 s
    results = gpu_check.main(["--device", "cpu", "--tiny", "--phases", "parity,packed", "--out_dir", str(tmp_path)])
    written = json.loads((tmp_path / "gpu_check.json").read_text())
    assert written["phases"]["parity"]["status"] == "done"
    assert written["phases"]["packed"]["status"] == "timeout"
    assert written["phases"]["packed"]["partial"] == {"before_the_hang": 1}  # what it had measured is kept
    assert results["phases"]["packed"]["seconds"] < 4


def test_flop_counts_of_a_lora_step() -> None:
    """6N counts every weight's gradient; the exact LoRA count drops the frozen weight gradients (2N of 6N), so for
    a model with a tiny head and negligible attention it is about 4/6 of 6N."""
    gpu_check = _gpu_check()
    from lit_gpt.config import Config
    from lit_gpt.lora import LoRAConfig

    config = Config(vocab_size=8, n_layer=4, n_embd=256, n_head=4, intermediate_size=512)
    flops = gpu_check.step_flops(config, LoRAConfig(), [[1, 1, 1, 1]], trainable=0)
    n = flops["params_matmul"]
    assert n == 4 * (4 * 256 * 256 + 3 * 256 * 512) + 256 * 8
    assert flops["6N"] == 6 * n * 4
    assert flops["attention"] == 3 * 4 * 256 * 4 * 4  # one visible pair per 1-token example, per layer
    assert 0.6 < flops["exact"] / flops["6N"] < 4 / 6
    gemms = gpu_check.step_gemms(config, tokens=4, trainable=0)
    gemm_flops = sum(2 * m * k * n_ * c for m, k, n_, c, _ in gemms)
    assert len(gemms) == 2 * 3 + 2  # forward and input gradient of 3 distinct linear shapes, and of the head
    lora_and_attention = flops["attention"] + 6 * 4 * sum(gpu_check._lora_params(config, LoRAConfig()))
    block0_qkv_input_grad = 2 * 4 * 256 * (3 * 256)
    assert gemm_flops == flops["exact"] - lora_and_attention + block0_qkv_input_grad
