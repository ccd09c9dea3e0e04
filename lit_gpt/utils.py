"""Small pieces every script shares: the CLI entry, user-facing errors, checkpoint paths, atomic writes."""
from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import os
import re
import socket
import sys
import tempfile
from argparse import ArgumentError
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
    from jsonargparse import CLI, set_parsing_settings

    set_parsing_settings(docstring_parse_attribute_docstrings=True)

    argv = expand_list_flags(sys.argv[1:] if args is None else args, list_parameters(function))
    try:
        # exit_on_error=False: a bad flag raises here, so it gets one line (with the flag meant) instead of the usage
        with _secrets_hidden(any(a.startswith("--print_config") for a in argv)):
            parsed = CLI(function, as_positional=False, args=argv, exit_on_error=False, **kwargs)
        return parsed if run is None else run(parsed)
    except ArgumentError as e:
        message = " ".join(e.message.split())  # jsonargparse breaks type errors over lines
        print(f"error: {message}{flag_suggestion(message, function, kwargs)} (--help lists the flags)",
              file=sys.stderr)
        raise SystemExit(2) from None
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(1) from None
    except OSError as e:
        if (message := write_error_message(e)) is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(1) from None
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        raise SystemExit(130) from None


def list_parameters(function: Callable[..., Any]) -> list[str]:
    """The parameters of `function` typed as lists (or optional lists): their flags take several values."""
    import typing

    hints = typing.get_type_hints(function)
    return [name for name, hint in hints.items()
            if typing.get_origin(hint) is list or any(typing.get_origin(a) is list for a in typing.get_args(hint))]


def flag_suggestion(message: str, function: Callable[..., Any], cli_kwargs: dict[str, Any]) -> str:
    """"; did you mean --lora_r?" for a misspelt flag in argparse's "unrecognized arguments: --lora_rr 8"."""
    import difflib

    from jsonargparse import CLI, capture_parser

    if not message.startswith("unrecognized arguments:"):
        return ""
    # the parser is only built again on this error path, so a correct command pays nothing for the suggestion
    parser = capture_parser(lambda: CLI(function, as_positional=False, args=[], **cli_kwargs))
    known = [flag for action in parser._actions for flag in action.option_strings if flag.startswith("--")]
    meant = []
    for word in message.removeprefix("unrecognized arguments:").split():
        if word.startswith("--"):
            meant += difflib.get_close_matches(word.split("=", 1)[0], known, n=1, cutoff=0.6)
    return f"; did you mean {' and '.join(meant)}?" if meant else ""


# Flags whose values --print_config must not show: a printed config ends up in logs, issues and shared files.
SECRET_FLAGS = ("access_token",)


@contextlib.contextmanager
def _secrets_hidden(printing: bool) -> Iterator[None]:
    """While `--print_config` prints, replace the value of every secret flag with null (and say so)."""
    if not printing:
        yield
        return
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            yield
    finally:
        names = "|".join(SECRET_FLAGS)
        hidden = re.sub(rf"^(\s*)({names}):(?!\s*null\s*$).*$",
                        r"\1\2: null  # not printed; pass it again, or set HF_TOKEN", out.getvalue(), flags=re.M)
        sys.stdout.write(hidden)


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


_WRITE_ERRNOS = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is exceeded",
                 errno.EROFS: "the file system is read-only", errno.EACCES: "permission denied",
                 errno.EPERM: "permission denied", errno.EFBIG: "the file is too large for this file system"}


def write_error_message(e: BaseException, path: Path | str | None = None) -> str | None:
    """One line for an error of writing `path` (a full disk, a read-only folder, no permission), or None when `e` is
    not one. Reads the three shapes it comes in: OSError with an errno, numpy's short write, safetensors' own error.
    Without `path`, the file the error names (what `cli` prints for an OSError nothing else caught)."""
    number = getattr(e, "errno", None) if isinstance(e, OSError) else None
    if number is None and (found := re.search(r"\(os error (\d+)\)", str(e))):  # safetensors' SafetensorError
        number = int(found.group(1))
    if number in _WRITE_ERRNOS:
        reason = _WRITE_ERRNOS[number]
        full = number in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
        fix = "free some space" if full else "pass a folder you can write to"
    elif isinstance(e, OSError) and re.fullmatch(r"\d+ requested and \d+ written", str(e)):  # numpy's short write
        reason, fix = "the write was cut short (is the disk full?)", "free some space"
    else:
        return None
    if path is None:  # the last resort in `cli`: reading or writing, we cannot tell
        return f"{getattr(e, 'filename', None) or 'a file'}: {reason}; {fix} and run the same command again"
    return f"cannot write {path}: {reason}; {fix} and run the same command again (nothing was replaced)"


@contextlib.contextmanager
def write_errors(path: Path | str) -> Iterator[None]:
    """Turn a full disk, a read-only folder or missing permission while writing `path` into one UserError line."""
    try:
        yield
    except Exception as e:
        if isinstance(e, UserError) or (message := write_error_message(e, path)) is None:
            raise
        raise UserError(message) from None


def temp_name(path: Path) -> str:
    """The prefix of a temporary name beside `path`. It carries this process' host and id, so a later run can tell a
    leftover of a killed run (its process is gone) from a file another run is still writing."""
    return f".{path.name}.{socket.gethostname()}-{os.getpid()}."


def stale_temps(path: Path) -> list[Path]:
    """What killed runs left beside `path` under `temp_name`'s pattern (suffix .tmp): only names of this pattern, only
    those whose process, on this host, no longer runs."""
    pattern = re.compile(rf"\.{re.escape(path.name)}\.{re.escape(socket.gethostname())}-(\d+)\.[^/]*\.tmp")
    if not path.parent.is_dir():
        return []
    return sorted(entry for entry in path.parent.iterdir()
                  if (found := pattern.fullmatch(entry.name)) and not _alive(int(found.group(1))))


def remove_stale_temps(path: Path) -> None:
    """Delete the `stale_temps` of `path`, as far as we may (a leftover we cannot delete is no reason to stop)."""
    import shutil

    for entry in stale_temps(path):
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                entry.unlink()


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


@contextlib.contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success rename it over `path`, on failure remove it.

    A killed or failing run therefore never leaves a half-written file under the final name, and the next run
    removes the temporary file a killed one left. A full disk or a folder it may not write becomes a UserError.
    """
    path = Path(path)
    tmp_path = None
    with write_errors(path):
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            remove_stale_temps(path)
            fd, tmp = tempfile.mkstemp(prefix=temp_name(path), suffix=".tmp", dir=path.parent)
            os.close(fd)
            tmp_path = Path(tmp)
            yield tmp_path
            # mkstemp makes the file private (0600); the result gets the mode `open()` would have given it
            os.chmod(tmp_path, 0o666 & ~umask())
            os.replace(tmp_path, path)
        finally:
            if tmp_path is not None:
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
    except RecursionError:
        raise UserError(f"{path}: JSON nested too deeply to read; is it the right file?") from None
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not UTF-8 text (byte offset {e.start}); re-save the file as UTF-8") from None


def read_safetensors_file(
    path: Path | str, fix: str, tensors: bool = True
) -> tuple[dict[str, "torch.Tensor"], dict[str, str]]:
    """The tensors (none unless `tensors`) and the metadata of a safetensors file; a file that is empty, truncated or
    not safetensors at all is one UserError naming it, with `fix` (what to do about it)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return {name: f.get_tensor(name) for name in f.keys() if tensors}, f.metadata() or {}
    except (SafetensorError, OSError) as e:
        reason = str(e).removeprefix("Error while deserializing header: ")
        raise UserError(f"{path} is not a readable safetensors file ({reason}); {fix}") from None


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


def sha256_file(path: Path | str, digest: Any = None) -> str:
    """The sha256 of a file's bytes, read 1 MiB at a time (checkpoints and data files can be GBs); with `digest`,
    the bytes go into that running hash instead (hashing several files as one), whose hex digest is returned."""
    digest = digest or hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
