"""The commands in README.md and docs/*.md cannot rot: every ```bash block is checked, and the cheap ones run.

How a block is tested (also described in docs/index.md, "How the docs are tested"):

- Always: every `python PATH ...` names a file that exists, and its flags parse with that script's own parser
  (jsonargparse through `lit_gpt.utils.cli`, or argparse for the two benchmark drivers that use it), so a renamed
  flag or a wrong value for a choice fails here. `bash PATH` must exist. Paths under ../shared are checked only
  where ../shared is present; `$VAR`s set in the block are substituted, and `for` loops run their body per value.
- A block whose fence is preceded by `<!-- doc-test: run -->` also runs, in order with the page's other run blocks,
  in a scratch folder laid out like a checkout, with tiny stand-ins: every `checkpoints/ORG/NAME` a command names
  is a tiny random-weight model (scripts/make_tiny_checkpoint.py, plus Hugging Face weights so conversion works),
  `../shared/data/...`, CSV and JSON files are a few rows of examples/quickstart.json, and these settings are cut
  to fit seconds: SHRINK below. Commands that need the network (scripts/download.py, prepare scripts without
  --data_file), ../shared's own tools and `bash` commands are only checked, not run.
- `<!-- doc-test: skip REASON -->` before a fence skips the block (use it for text that is not meant to be typed).
"""
from __future__ import annotations

import argparse
import ast
import contextlib
import csv
import importlib.util
import json
import re
import shlex
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

import pytest

from lit_gpt.utils import cli, expand_list_flags, list_parameters

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# settings cut for the scratch runs: a tiny model on ~100 rows needs a few steps, not hours
SHRINK = {"--max_iters": "2", "--epochs": "1", "--k": "12", "--num_tokens": "3000", "--max_new_tokens": "8",
          "--override_max_seq_length": "512"}  # 512: the tiny model's context
NO_RUN = ("scripts/download.py",)  # the network
# Pages written on other branches at the same time; links to them are allowed to dangle until they are merged.
PENDING_PAGES: set[str] = set()
# --help descriptions fixed on other branches (the first docstring line is what --help shows).
PENDING_HELP: set[str] = set()


@dataclass
class Block:
    page: Path
    line: int  # of the opening fence
    text: str
    marker: str | None  # "run", "skip ...", or None

    def __str__(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def bash_blocks(page: Path) -> list[Block]:
    blocks, lines = [], page.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        if lines[i].strip() == "```bash":
            end = next(j for j in range(i + 1, len(lines)) if lines[j].strip() == "```")
            prev = lines[i - 1].strip() if i else ""
            marker = prev[len("<!-- doc-test:"):-len("-->")].strip() if prev.startswith("<!-- doc-test:") else None
            blocks.append(Block(page, i + 1, "\n".join(lines[i + 1:end]), marker))
            i = end
        i += 1
    return blocks


ALL_BLOCKS = [b for page in PAGES for b in bash_blocks(page)]


# -- a tiny shell: enough of bash for documentation ------------------------------------------------------------------


def commands(text: str, env: dict[str, str] | None = None) -> list[list[str]]:
    """The simple commands of a block, in order, with `$VAR`s from assignments in the block (and `env`) substituted,
    `&&` chains split, `for X in A B; do ... done` unrolled and comments dropped."""
    env = dict(env or {})
    lines = text.replace("\\\n", " ").splitlines()
    out: list[list[str]] = []
    i = 0
    while i < len(lines):
        tokens = shlex.split(_expand(lines[i], env), comments=True)
        i += 1
        if tokens[:1] == ["for"]:  # for VAR in A B; do
            name, values = tokens[1], [v.rstrip(";") for v in tokens[3:] if v != "do"]
            body = []
            while lines[i].strip() != "done":
                body.append(lines[i])
                i += 1
            i += 1
            for value in values:
                out += commands("\n".join(body), {**env, name: value})
            continue
        for command in _split(tokens):
            if command and command[0] == "export":
                command = command[1:]
            if len(command) == 1 and re.fullmatch(r"\w+=.*", command[0]):
                name, value = command[0].split("=", 1)
                env[name] = value  # later lines expand with it
            elif command:
                out.append(command)
    return out


def _expand(line: str, env: dict[str, str]) -> str:
    return re.sub(r"\$\{?(\w+)\}?", lambda m: env.get(m.group(1), m.group(0)), line)


def _split(tokens: list[str]) -> list[list[str]]:
    """Simple commands of a `&&`, `||`, `|` or `;` chain, without their redirections (`> file`, `2>&1`)."""
    parts: list[list[str]] = [[]]
    skip_next = False
    for token in tokens:
        if skip_next:
            skip_next = False
        elif token in ("&&", "||", "|", ";"):
            parts.append([])
        elif re.fullmatch(r"\d?>>?|<", token):
            skip_next = True  # the file it redirects to
        elif not re.fullmatch(r"\d?>>?\S+|\d>&\d", token):
            parts[-1].append(token)
    return parts


def script_of(command: list[str]) -> tuple[Path, list[str]] | None:
    """(script path, its arguments) for `python PATH ARGS` (python3, .venv/bin/python too); None otherwise."""
    if len(command) >= 2 and Path(command[0]).name in ("python", "python3") and command[1].endswith(".py"):
        return Path(command[1]), command[2:]
    return None


# -- a script's parser -----------------------------------------------------------------------------------------------


_modules: dict[Path, ModuleType] = {}


def load(path: Path) -> ModuleType:
    if path not in _modules:
        spec = importlib.util.spec_from_file_location(f"doc_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # jsonargparse reads the source to follow **kwargs into prepare()
        spec.loader.exec_module(module)
        _modules[path] = module
    return _modules[path]


def entry(path: Path, keyword: str | None = None) -> Callable[..., Any] | None:
    """The function a script hands to `cli(...)` under `if __name__ == "__main__":` (with `keyword`, the one passed
    as that keyword, e.g. `run` of `cli(Settings, run=setup)`), or None (an argparse main, or no such keyword)."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "cli" and node.args:
            if keyword is None:
                return getattr(load(path), node.args[0].id)
            named = [k.value.id for k in node.keywords if k.arg == keyword]
            return getattr(load(path), named[0]) if named else None
    return None


class _Captured(Exception):
    def __init__(self, parser: argparse.ArgumentParser) -> None:
        self.parser = parser


def parser_of(path: Path) -> argparse.ArgumentParser:
    """The script's argument parser, built as the script builds it, without running the script."""
    from jsonargparse import CLI, capture_parser

    function = entry(path)
    if function is not None:
        return capture_parser(lambda: CLI(function, as_positional=False, args=[], exit_on_error=False))

    def capture(self, *args, **kwargs):
        raise _Captured(self)

    original = argparse.ArgumentParser.parse_args
    argparse.ArgumentParser.parse_args = capture
    try:
        load(path).main()
    except _Captured as e:
        return e.parser
    finally:
        argparse.ArgumentParser.parse_args = original
    raise AssertionError(f"{path} parses no arguments")


def check_flags(path: Path, args: list[str], where: str) -> None:
    """Every flag exists; the whole command line parses (unless it reads a --config file that is not there)."""
    parser = parser_of(path)
    known = {flag for action in parser._actions for flag in action.option_strings}
    for arg in args:
        if arg.startswith("--") and arg.split("=", 1)[0] not in known:
            pytest.fail(f"{where}: {path} has no flag {arg.split('=', 1)[0]}")
    if "--help" in args:
        assert parser.format_help()
        return
    if "--config" in args:
        return  # its values come from a file the reader writes
    function = entry(path)
    argv = expand_list_flags(args, list_parameters(function)) if function else args
    try:
        if function is None:
            parser.exit_on_error = False
        parser.parse_args(argv)
    except argparse.ArgumentError as e:
        pytest.fail(f"{where}: {path.name} {' '.join(args)}: {' '.join(e.message.split())}")
    except SystemExit as e:  # argparse without exit_on_error
        pytest.fail(f"{where}: {path.name} {' '.join(args)} does not parse (exit {e.code})")


# -- the static check, for every block -------------------------------------------------------------------------------


@pytest.mark.parametrize("block", [b for b in ALL_BLOCKS if not (b.marker or "").startswith("skip")], ids=str)
def test_commands_name_real_scripts_and_flags(block: Block) -> None:
    for command in commands(block.text):
        if command[0] == "bash":
            assert (ROOT / command[1]).is_file(), f"{block}: no {command[1]}"
        found = script_of(command)
        if found is None:
            continue
        script, args = found
        if script.parts[0] == "..":
            if not SHARED.is_dir():
                continue  # ../shared is not part of the project
            assert (ROOT / script).is_file(), f"{block}: no {script}"
            continue  # its tools are not ours to parse
        assert (ROOT / script).is_file(), f"{block}: no {script}"
        check_flags(ROOT / script, args, str(block))


def test_skipped_blocks_give_a_reason() -> None:
    for block in ALL_BLOCKS:
        if (block.marker or "").startswith("skip"):
            assert len(block.marker.split()) > 2, f"{block}: say why it is skipped"
        else:
            assert block.marker in (None, "run"), f"{block}: unknown doc-test marker {block.marker!r}"


# -- the cheap blocks, run for real ----------------------------------------------------------------------------------


def _rows() -> list[dict[str, str]]:
    rows = json.loads((ROOT / "examples" / "quickstart.json").read_text())
    # the fields other layouts name too, so --instruction_field question --output_field answer finds them
    return [{**r, "question": r["instruction"], "answer": r["output"], "context": r["input"], "response": r["output"],
             "category": "open_qa"} for r in rows]


def stand_in_data(path: Path) -> None:
    """A few real-format rows where a command reads a data file nobody made."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = _rows()
    if path.suffix == ".csv":
        with path.open("w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=["instruction", "input", "output"], extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
    elif path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif path.suffix == ".json":
        path.write_text(json.dumps(rows))
    else:
        path.write_text("".join(r["instruction"] + "\n" for r in rows[:5]))


def stand_in_checkpoint(folder: Path) -> None:
    """A tiny random-weight model in both layouts: ours and Hugging Face's (so conversion has something to do)."""
    from lit_gpt.convert import convert_lit_checkpoint
    from lit_gpt.tiny import make_tiny_checkpoint

    make_tiny_checkpoint(ROOT / "examples" / "quickstart.json", folder)
    hf = convert_lit_checkpoint(folder, folder.with_name(folder.name + "-hf"))
    (hf / "model.safetensors").rename(folder / "model.safetensors")
    shutil.rmtree(hf)


@dataclass
class Scratch:
    """A folder laid out like a checkout (`work/`, with `../shared` beside it) where a page's run blocks run."""

    root: Path
    work: Path = field(init=False)

    def __post_init__(self) -> None:
        self.work = self.root / "work"
        self.work.mkdir(parents=True)
        (self.work / "examples").symlink_to(ROOT / "examples")
        for name in ("lima/lima.json", "alpaca/alpaca_5000.json"):
            stand_in_data(self.root / "shared" / "data" / name)

    def prepare(self, args: list[str]) -> None:
        """Stand-ins for the models and data files a command names that nothing made (a folder under out/ or data/
        that a previous command should have made is left missing, so its absence fails)."""
        flag = ""
        for value in args:
            if value.startswith("--"):
                flag = value
                continue
            path = self.work / value
            if flag.endswith("checkpoint_dir") and not value.startswith(("out/", "data/")):
                folder = path if value.startswith("checkpoints/") else self.work / "checkpoints" / value
                if not folder.exists():
                    stand_in_checkpoint(folder)
            elif flag in ("--data_file", "--csv_dir", "--eval_files") and not path.exists():
                stand_in_data(path)

    def run(self, command: list[str], where: str) -> None:
        script, args = script_of(command)
        if str(script) in NO_RUN or script.parts[0] == "..":
            return
        if script.name.startswith("prepare_") and "--data_file" not in args and "--csv_dir" not in args:
            return  # it would download the public file
        args = [SHRINK.get(args[i - 1], a) if i else a for i, a in enumerate(args)]
        if script.parent == Path("finetune"):
            # one optimizer step of 2 micro-batches (a run shorter than one step is refused)
            for flag, value in (("--max_iters", SHRINK["--max_iters"]), ("--batch_size", "2")):
                if flag not in args:
                    args += [flag, value]
        self.prepare(args)
        with contextlib.chdir(self.work), contextlib.redirect_stdout(sys.stderr):
            try:
                cli(entry(ROOT / script), args=args, run=entry(ROOT / script, "run"))
            except SystemExit as e:
                pytest.fail(f"{where}: {' '.join(command)} exited with {e.code}")


RUN_PAGES = sorted({b.page for b in ALL_BLOCKS if b.marker == "run"})


@pytest.mark.parametrize("page", RUN_PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_cheap_blocks_run(page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdin", open("/dev/null"))  # chat/base.py reads its end at once
    scratch = Scratch(tmp_path)
    for block in bash_blocks(page):
        if block.marker == "run":
            for command in commands(block.text):
                if script_of(command):
                    scratch.run(command, str(block))


# -- what the pages say about the project ----------------------------------------------------------------------------


def test_readme_test_command_is_the_one_ci_runs() -> None:
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    command = ci[ci.index("# The README's test command:") + 1].strip()
    (quickstart,) = [b for b in bash_blocks(ROOT / "README.md") if "bash quickstart.sh" in b.text][:1]
    assert command in quickstart.text


def test_relative_links_point_to_files() -> None:
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
            if "://" in target or target.startswith("mailto:"):
                continue
            path = (page.parent / target).resolve()
            if path.name in PENDING_PAGES and path.parent == ROOT / "docs":
                continue
            assert path.exists(), f"{page.relative_to(ROOT)} links to {target}, which does not exist"


ENTRY_SCRIPTS = sorted(p.relative_to(ROOT) for d in ("scripts", "finetune", "generate", "chat", "bench")
                       for p in (ROOT / d).glob("*.py") if "cli(" in p.read_text(encoding="utf-8"))


@pytest.mark.parametrize("script", ENTRY_SCRIPTS, ids=str)
def test_help_describes_the_script_in_whole_sentences(script: Path) -> None:
    """--help shows a docstring's first paragraph: it must not stop mid-sentence."""
    if str(script) in PENDING_HELP:
        pytest.skip("fixed on another branch")
    if entry(ROOT / script) is None:
        pytest.skip("not a cli entry point")
    description = " ".join((parser_of(ROOT / script).description or "").split())
    assert description.endswith((".", ")", "?")), f"{script} --help: {description!r} stops mid-sentence"


def test_the_checks_catch_a_wrong_flag_and_a_wrong_choice() -> None:
    lora = ROOT / "finetune" / "lora.py"
    with pytest.raises(pytest.fail.Exception, match="has no flag --lora_rr"):
        check_flags(lora, ["--checkpoint_dir", "x", "--lora_rr", "8"], "here")
    with pytest.raises(pytest.fail.Exception, match="order"):
        check_flags(lora, ["--checkpoint_dir", "x", "--order", "sorted"], "here")
    check_flags(lora, ["--checkpoint_dir", "x", "--order", "length"], "here")


def test_the_tiny_shell_expands_variables_and_loops() -> None:
    text = 'M=ckpt\nexport T=tok  # a comment\npython a.py --c $M \\\n  --t "$T x"\nfor arm in ifd random; do\n' \
           '  python b.py --d data/mix-$arm\ndone\npip install -e ".[test]" && python -m pytest -q\n' \
           'python c.py --help | head -3 > out.txt 2>&1'
    assert commands(text) == [["python", "a.py", "--c", "ckpt", "--t", "tok x"], ["python", "b.py", "--d", "data/mix-ifd"],
                              ["python", "b.py", "--d", "data/mix-random"], ["pip", "install", "-e", ".[test]"],
                              ["python", "-m", "pytest", "-q"], ["python", "c.py", "--help"], ["head", "-3"]]


def python_scripts() -> list[tuple[str, str]]:
    """(where, source) of each ```python block that is a whole script (it ends in `cli(...)`)."""
    found = []
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for match in re.finditer(r"^```python\n(.*?)^```", text, flags=re.S | re.M):
            if "\nif __name__ == \"__main__\":\n    cli(" in match.group(1):
                found.append((f"{page.relative_to(ROOT)}:{text[:match.start()].count(chr(10)) + 1}", match.group(1)))
    return found


@pytest.mark.parametrize("where,source", python_scripts(), ids=[w for w, _ in python_scripts()])
def test_script_examples_run(where: str, source: str, tmp_path: Path) -> None:
    """A documented script, saved in scripts/ of a scratch checkout, runs on stand-in data for a tiny model."""
    (tmp_path / "scripts").mkdir()
    (script := tmp_path / "scripts" / "example.py").write_text(source)
    stand_in_data(data := tmp_path / "data.jsonl")
    stand_in_checkpoint(checkpoint := tmp_path / "checkpoints" / "tiny")
    description = " ".join((parser_of(script).description or "").split())
    assert description.endswith((".", ")")), f"{where}: --help stops mid-sentence: {description!r}"
    with contextlib.redirect_stdout(sys.stderr):
        stats = cli(entry(script), args=["--data_file", str(data), "--checkpoint_dir", str(checkpoint),
                                         "--destination_path", str(tmp_path / "out")])
    assert sum(stats["samples"].values()) == len(_rows())
