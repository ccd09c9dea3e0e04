"""Fixtures shared by the test files."""
from hub_server import hub  # noqa: F401  (the loopback Hugging Face Hub: `def test_x(hub): ...`)

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    """Tiny test models are dominated by threading overhead on a shared 2-core machine: one thread is far faster."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
