"""Helpers every test file may use (fixtures live in conftest.py)."""
from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]


def load_script(path: str) -> ModuleType:
    """The script at `path` (relative to the repository root, e.g. "finetune/lora.py") as a module, to call its
    entry function in-process. Named `<stem>_script`, so it never shadows a library module of the same stem."""
    spec = importlib.util.spec_from_file_location(Path(path).stem + "_script", ROOT / path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
