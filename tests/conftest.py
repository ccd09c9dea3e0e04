"""Fixtures shared by the test files."""
from hub_server import hub  # noqa: F401  (the loopback Hugging Face Hub: `def test_x(hub): ...`)
