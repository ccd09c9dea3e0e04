"""Fixtures shared by the test files."""
from hub_server import hub  # noqa: F401  (the loopback Hugging Face Hub: `def test_x(hub): ...`)

import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SMOLLM2_TOOL = ROOT.parent / "shared" / "tools" / "smollm2_checkpoint.py"


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    """Tiny test models are dominated by threading overhead on a shared 2-core machine: one thread is far faster."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def smollm2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real SmolLM2-135M-Instruct as `scripts/download.py` would give it, made offline from ../shared's GGUF copy
    (float32), then converted: built once per session. Skips when ../shared or the tool's packages are missing."""
    if not SMOLLM2_TOOL.is_file():
        pytest.skip("../shared/tools/smollm2_checkpoint.py not available")
    pytest.importorskip("gguf")
    pytest.importorskip("accelerate")
    folder = tmp_path_factory.mktemp("smollm2") / "checkpoints" / "HuggingFaceTB" / "SmolLM2-135M-Instruct"
    for command in ([str(SMOLLM2_TOOL), str(folder), "--dtype", "float32"],
                    ["scripts/convert_hf_checkpoint.py", "--checkpoint_dir", str(folder)]):
        done = subprocess.run([sys.executable, *command], cwd=ROOT, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr
    assert (folder / "lit_model.safetensors").is_file()
    return folder
