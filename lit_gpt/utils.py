"""Small pieces every script shares: the CLI entry, user-facing errors, checkpoint paths, atomic writes."""
from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

# Fixed file names inside a converted checkpoint folder (documented once, in the README).
LIT_CONFIG_NAME = "lit_config.json"
LIT_WEIGHTS_NAME = "lit_model.safetensors"

# what to do when a --checkpoint_dir does not exist: every script says the same
DOWNLOAD_HINT = "Download and convert a model first: python scripts/download.py --repo_id ORG/NAME"


class UserError(Exception):
    """A mistake the user can fix. Scripts print it as one line (no traceback) and exit with status 1.

    The message names the file/row/field at fault and says what to do about it.
    """


def cli(function: Callable[..., Any], args: Sequence[str] | None = None, run: Callable[[Any], Any] | None = None,
        **kwargs: Any) -> Any:
    """Run `function` as a jsonargparse CLI: its signature and docstring become the flags and `--help`.

    `function` may also be a dataclass: its fields become the flags, each explained by the docstring written under
    it, and the instance is returned, or passed to `run` when given (`cli(Settings, run=setup)`: errors of both
    print as one line). List parameters take their values one after another (`--data_dirs a b`), as
    argparse's nargs="+" does. `--config FILE.yaml` reads flags (its keys) from a file.
    """
    import typing

    from jsonargparse import CLI, set_parsing_settings

    set_parsing_settings(docstring_parse_attribute_docstrings=True)

    hints = typing.get_type_hints(function)
    lists = [name for name, hint in hints.items()
             if typing.get_origin(hint) is list or any(typing.get_origin(a) is list for a in typing.get_args(hint))]
    try:
        argv = sys.argv[1:] if args is None else args
        parsed = CLI(function, as_positional=False, args=expand_list_flags(argv, lists), **kwargs)
        return parsed if run is None else run(parsed)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(1) from None
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        raise SystemExit(130) from None


def expand_list_flags(argv: Sequence[str], flags: Sequence[str]) -> list[str]:
    """`--data_dirs a b` -> `--data_dirs '["a", "b"]'` for the list `flags`: jsonargparse reads a list flag as one
    JSON value, while users write the values one after another, as with argparse's nargs="+"."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        out.append(argv[i])
        i += 1
        if argv[i - 1].removeprefix("--") in flags:
            values = []
            while i < len(argv) and not argv[i].startswith("--"):
                values.append(argv[i])
                i += 1
            single_json = len(values) == 1 and values[0].lstrip().startswith("[")
            out.extend(values if single_json or not values else [json.dumps(values)])
    return out


def resolve_checkpoint_dir(checkpoint_dir: Path | str, root: Path | str = "checkpoints") -> Path:
    """Accept both `checkpoints/ORG/NAME` and the bare repo id `ORG/NAME`.

    The walkthrough users follow passes `--checkpoint_dir meta-llama/Llama-2-7b-hf` right after downloading
    into `checkpoints/meta-llama/Llama-2-7b-hf`; the bare form means the latter when only that one exists.
    """
    path = Path(checkpoint_dir)
    if path.is_dir() or path.is_absolute():
        return path
    candidate = Path(root) / path
    return candidate if candidate.is_dir() else path


def resolve_data_dir(data_dir: Path | str) -> Path:
    """`--data_dir /data/csv` as the walkthrough spells it means the `data/csv` that `prepare_csv.py` wrote
    (its default `--destination_path`) when no `/data/csv` exists."""
    path = Path(data_dir)
    if not path.is_dir() and path.is_absolute() and path.parts[1:2] == ("data",) and path.relative_to("/").is_dir():
        print(f"--data_dir {path} does not exist; using {path.relative_to('/')} (relative to this folder)",
              file=sys.stderr)
        return path.relative_to("/")
    return path


def require_dir(path: Path, what: str, hint: str) -> Path:
    if not path.is_dir():
        raise UserError(f"{what} {str(path)!r} does not exist. {hint}")
    return path


@contextlib.contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success rename it over `path`, on failure remove it.

    A killed or failing run therefore never leaves a half-written file under the final name.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp makes the file private (0600); the result gets the mode `open()` would have given it
        os.chmod(tmp_path, 0o666 & ~umask())
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def umask() -> int:
    """The process' file-creation mask, unchanged."""
    mask = os.umask(0)  # the only way to read it is to set it
    os.umask(mask)
    return mask


def atomic_write_text(path: Path | str, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def atomic_write_json(path: Path | str, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def read_json(path: Path) -> Any:
    """Read a JSON file, turning a parse error into a one-line message that names the file and line."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: invalid JSON at line {e.lineno}, column {e.colno}: {e.msg}") from None
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not UTF-8 text (byte offset {e.start}); re-save the file as UTF-8") from None


PRECISIONS = ("32-true", "bf16-true", "16-true", "bf16-mixed", "16-mixed")


def default_precision() -> str:
    """bf16 weights on GPUs that support them; float32 elsewhere (CPU bf16 matmuls are slow and lossy)."""
    import torch

    return "bf16-true" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "32-true"


def precision_dtype(precision: str) -> "torch.dtype":
    """The dtype weights are held in under a Fabric precision setting ("-mixed" keeps float32 weights)."""
    import torch

    if precision not in PRECISIONS:
        raise UserError(f"--precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    return {"bf16-true": torch.bfloat16, "16-true": torch.float16}.get(precision, torch.float32)


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MB (Linux reports kilobytes)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def peak_memory_mb(device: "torch.device | str" = "cpu") -> float:
    """Peak memory in MB of what runs on `device`: allocated CUDA memory on a GPU, else this process' peak RSS."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return peak_rss_mb()


def child_peak_rss_mb(cmd: list[str], cwd: Path | None = None) -> float:
    """Run `cmd` and return that child's own peak RSS in MB (os.wait4 reports it per process, where
    RUSAGE_CHILDREN would give the largest of all children so far). Its stdout is discarded."""
    import subprocess

    child = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(child.pid, 0)
    if status != 0:
        raise UserError(f"{' '.join(map(str, cmd))} failed with status {status}")
    return usage.ru_maxrss / 1024
