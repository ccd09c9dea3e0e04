"""Benchmarks through lm-evaluation-harness: run lm-eval's tasks on a checkpoint and its LoRA adapters, write the
results (lm-eval's own results.json, plus where the numbers come from) and one table with a row per model.

    python eval/lm_eval_harness.py --checkpoint_dir ... --tasks hellaswag,arc_easy --out_dir out/eval/base
    python eval/lm_eval_harness.py --checkpoint_dir ... --lora_path 'out/lora/epoch-*/lit_lora.safetensors' ...

Files it writes (see docs/evaluation.md):

    OUT_DIR/results.json        one model: lm-eval's results dict, plus a "lit_gpt" entry (PROVENANCE_KEY): the
                                checkpoint, the adapter and its hyperparameters, the precision, the data files of
                                each task with their sha256, and the package versions
    OUT_DIR/LABEL/results.json  several models (the base model, then each adapter): the same, one folder each
    OUT_DIR/results.md          the table with a row per model, then lm-eval's own table (with stderr) per model

Adapters are applied in memory (`LoRALinear` around the base weights, unmerged): no merge, no export, no copy.
"""
from __future__ import annotations

import glob
import importlib.metadata
import json
import platform
import re
import sys
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from lit_gpt.lora import LORA_WEIGHTS_NAME, LoRALinear, load_lora_into, read_lora_metadata
from lit_gpt.utils import LIT_WEIGHTS_NAME, UserError, atomic_write_text, sha256_file

PROVENANCE_KEY = "lit_gpt"
BASE_LABEL = "base"
HUB_HINT = (
    "point the task at local files instead: copy its YAML into a folder, set `dataset_path: json` and "
    "`dataset_kwargs: {data_files: {test: /path/to/test.jsonl}}`, and pass --include_path FOLDER "
    "(docs/evaluation.md); or run once with network so the dataset is cached"
)


# ------------------------------------------------------------------------------------------------ adapters


def expand_adapters(lora_paths: list[str | Path] | None) -> list[Path]:
    """The adapter files named by `--lora_path`: files, folders holding `lit_lora.safetensors`, or glob patterns
    (`out/lora/epoch-*/lit_lora.safetensors`, sorted so that epoch-10 comes after epoch-9)."""
    adapters: list[Path] = []
    for entry in lora_paths or []:
        entry = str(entry)
        matches = sorted(glob.glob(entry), key=_natural_key) if glob.has_magic(entry) else [entry]
        if not matches:
            raise UserError(f"--lora_path {entry!r} matches no file; pass the adapters written by finetune/lora.py "
                            f"(out_dir/epoch-N/{LORA_WEIGHTS_NAME})")
        for match in map(Path, matches):
            path = match / LORA_WEIGHTS_NAME if match.is_dir() else match
            read_lora_metadata(path)  # exists and is an adapter: fail now, not after the base model's evaluation
            adapters.append(path)
    return adapters


def _natural_key(text: str) -> list[Any]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def adapter_labels(adapters: list[Path]) -> list[str]:
    """A short, distinct name per adapter, also its results folder: its folder (`epoch-3`), or as many of the
    folders above as make the names distinct (`alpaca_epoch-3`, `lima_epoch-3`)."""
    folders = [path.parent.resolve().parts[1:] if path.name == LORA_WEIGHTS_NAME
               else (*path.parent.resolve().parts[1:], path.stem) for path in adapters]
    for depth in range(1, max(map(len, folders), default=1) + 1):
        labels = ["_".join(parts[-depth:]) for parts in folders]
        if len(set(labels)) == len(labels) and BASE_LABEL not in labels:
            return labels
    return [f"adapter-{i}" for i in range(1, len(adapters) + 1)]  # the same file twice


def use_adapter(model: nn.Module, path: Path | None) -> None:
    """Put the adapter at `path` on `model`, replacing any adapter it has (None: the base model alone).

    The LoRA layers of the previous adapter give back the linear layers they wrap, weights untouched (they were
    never merged), so evaluating several adapters needs the base weights once.
    """
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, LoRALinear):
                assert not child.merged, "an evaluated adapter is never merged"
                linear = nn.Linear(child.in_features, child.out_features, bias=child.bias is not None, device="meta")
                linear.weight, linear.bias = child.weight, child.bias
                setattr(parent, name, linear)
    if path is not None:
        load_lora_into(model, path)  # the LoRA tensors land on the base weights' device
    model.eval()


# ------------------------------------------------------------------------------------------------ tasks


class UnknownTask(UserError):
    """A --tasks name the task index does not hold."""


def load_task_index(include_path: Path | None, names: list[str]) -> tuple[Any, list[Any]]:
    """lm-eval's task index and the tasks `names` from it (see `load_tasks`).

    Indexing lm-eval's ~200 built-in task folders takes seconds, so when every name is one of the --include_path
    tasks, only that folder is indexed (and the built-in ones only if a local task turns out to need them).
    """
    from lm_eval.tasks import TaskManager

    if include_path is not None:
        local = TaskManager(include_path=str(include_path), include_defaults=False)
        if all(name in local.all_tasks for name in names):
            try:
                return local, load_tasks(local, names)
            except UnknownTask:  # e.g. a local group of built-in tasks
                pass
    manager = TaskManager(include_path=None if include_path is None else str(include_path))
    return manager, load_tasks(manager, names)


def load_tasks(task_manager: Any, names: list[str]) -> list[Any]:
    """lm-eval's Task and Group objects for `names`, loaded (datasets included) once for every model evaluated.

    A dataset that needs the Hugging Face Hub when the Hub cannot be reached, an unknown task name and a missing
    local data file each end in one line that says what to do.
    """
    objects = []
    for name in names:
        try:
            loaded = task_manager.load([name])
        except KeyError:
            raise UnknownTask(f"--tasks {name}: lm-eval knows no such task, group or tag; list them with "
                              "`lm-eval ls tasks`, or add your own YAML files with --include_path FOLDER") from None
        except FileNotFoundError as e:
            raise UserError(f"--tasks {name}: {e}. Paths in a task's data_files are relative to the folder you run "
                            "from; use absolute paths or run from that folder") from None
        except ConnectionError as e:  # datasets' own, raised offline (HF_DATASETS_OFFLINE=1) or without network
            raise UserError(f"--tasks {name}: its dataset is on the Hugging Face Hub, which cannot be reached "
                            f"({_one_line(e)}); " + HUB_HINT) from None
        except Exception as e:  # huggingface_hub's errors when the Hub is unreachable
            if type(e).__name__ not in ("OfflineModeIsEnabled", "LocalEntryNotFoundError", "DatasetNotFoundError"):
                raise
            raise UserError(f"--tasks {name}: its dataset is not available locally and the Hugging Face Hub cannot "
                            f"give it ({_one_line(e)}); " + HUB_HINT) from None
        # the outermost objects only: a group brings its children itself
        children = {child for names_ in loaded["group_map"].values() for child in names_}
        objects += [obj for key, obj in {**loaded["groups"], **loaded["tasks"]}.items() if key not in children]
    return objects


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())


# ------------------------------------------------------------------------------------------------ provenance


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def data_provenance(configs: dict[str, Any]) -> dict[str, Any]:
    """Per task: the dataset lm-eval read (Hub name and revision, or local files with their size and sha256)."""
    out = {}
    for task, config in configs.items():
        kwargs = config.get("dataset_kwargs") or {}
        files = kwargs.get("data_files")
        if isinstance(files, (str, list)):
            files = {"": files}
        local = {}
        for split, paths in (files or {}).items():
            for path in [paths] if isinstance(paths, str) else paths:
                p = Path(path)
                local[f"{split}:{path}" if split else str(path)] = (
                    {"bytes": p.stat().st_size, "sha256": sha256_file(p)} if p.is_file() else None)
        out[task] = {"dataset_path": config.get("dataset_path"), "dataset_name": config.get("dataset_name"),
                     "revision": kwargs.get("revision"), "data_files": local or None}
    return out


def provenance(checkpoint_dir: Path, adapter: Path | None, tokenizer_fingerprint: str, settings: dict[str, Any],
               configs: dict[str, Any]) -> dict[str, Any]:
    """What decides the numbers besides the task definitions lm-eval records itself."""
    weights = checkpoint_dir / LIT_WEIGHTS_NAME
    adapter_info = None
    if adapter is not None:
        metadata = read_lora_metadata(adapter)
        adapter_info = {"path": str(adapter), "sha256": sha256_file(adapter),
                        "lora_config": json.loads(metadata["lora_config"]),
                        "prompt_style": metadata.get("prompt_style")}
    return {
        "model": {"checkpoint_dir": str(checkpoint_dir), "weights_bytes": weights.stat().st_size,
                  "weights_mtime_ns": weights.stat().st_mtime_ns, "tokenizer_fingerprint": tokenizer_fingerprint},
        "adapter": adapter_info,
        "settings": settings,
        "data": data_provenance(configs),
        "versions": {"python": platform.python_version(),
                     **{name: _version(name) for name in ("lit_gpt", "lm_eval", "torch", "datasets")}},
        "command": sys.argv,
    }


# ------------------------------------------------------------------------------------------------ the table


def metric_columns(results: dict[str, Any]) -> dict[str, float]:
    """`task metric` -> value for every metric of every task and group in lm-eval's results (stderr left out;
    a filter other than lm-eval's "none" is named after the metric)."""
    columns = {}
    for task, metrics in results["results"].items():
        for key, value in metrics.items():
            if "," not in key or "_stderr" in key or not isinstance(value, (int, float)):
                continue
            metric, filter_name = key.split(",", 1)
            columns[f"{task} {metric}" + ("" if filter_name == "none" else f" ({filter_name})")] = value
    return columns


def comparison_table(rows: list[tuple[str, dict[str, Any]]]) -> str:
    """A markdown table with a row per evaluated model and a column per task metric."""
    columns = {label: metric_columns(results) for label, results in rows}
    names = list(dict.fromkeys(name for values in columns.values() for name in values))
    lines = ["| model | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for label, values in columns.items():
        cells = [f"{values[name]:.4f}" if name in values else "" for name in names]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------ the run


def evaluate(
    checkpoint_dir: Path,
    tasks: str | list[str],
    out_dir: Path = Path("out/eval"),
    lora_path: list[str] | None = None,
    num_fewshot: int | None = None,
    batch_size: int = 32,
    limit: float | None = None,
    precision: str | None = None,
    include_path: Path | None = None,
    max_length: int | None = None,
    bootstrap_iters: int = 100000,
    log_samples: bool = False,
    apply_chat_template: bool = False,
) -> list[tuple[str, dict[str, Any]]]:
    """Evaluate a checkpoint, with or without LoRA adapters, on lm-evaluation-harness tasks; returns (label,
    results) per model and writes results.json and results.md into `out_dir` (see the module docstring).

    Args:
        checkpoint_dir: A converted checkpoint (`checkpoints/ORG/NAME` or just `ORG/NAME`).
        tasks: lm-eval task, group or tag names, comma-separated (hellaswag,arc_easy,truthfulqa_mc2,mmlu).
        out_dir: Where results.json and results.md go (one subfolder per model when there are several).
        lora_path: Adapters from finetune/lora.py, applied in memory: files, folders holding lit_lora.safetensors,
            or quoted glob patterns ('out/lora/epoch-*/lit_lora.safetensors'). Several: the base model is
            evaluated first, then each adapter; the table has a row per model.
        num_fewshot: Examples in each prompt (default: each task's own setting).
        batch_size: Loglikelihood requests per forward pass, packed into one row (no padding); longest first.
        limit: Evaluate only this many documents per task (a fraction below 1.0: that share); for quick checks.
        precision: 32-true, bf16-true, 16-true, bf16-mixed or 16-mixed (default: bf16-true on a GPU that supports
            it, else 32-true).
        include_path: A folder (or YAML file) of your own task definitions, e.g. over local JSON Lines files.
        max_length: Context requests are cut to, from the left (default: the model's block_size).
        bootstrap_iters: Bootstrap resamples for the stderr of metrics without a closed form (0: no stderr).
        log_samples: Also write each document's requests and answers to samples_TASK.jsonl.
        apply_chat_template: Wrap each prompt in the checkpoint's chat template (for instruction-tuned models;
            few-shot examples become earlier turns, as lm-eval does it).
    """
    try:
        import lm_eval
    except ImportError:
        raise UserError("lm-evaluation-harness is not installed: pip install -e '.[eval]'") from None
    from lm_eval.utils import handle_non_serializable, make_table

    from lit_gpt.checkpoint import load_model
    from lit_gpt.eval.lm import LitLM
    from lit_gpt.tokenizer import Tokenizer
    from lit_gpt.utils import DOWNLOAD_HINT, default_precision, precision_dtype, require_dir, resolve_checkpoint_dir

    checkpoint_dir = require_dir(resolve_checkpoint_dir(checkpoint_dir), "--checkpoint_dir", DOWNLOAD_HINT)
    if isinstance(tasks, str):
        tasks = [name.strip() for name in tasks.split(",") if name.strip()]
    if not tasks:
        raise UserError("--tasks is empty; name lm-eval tasks, e.g. --tasks hellaswag,arc_easy")
    if include_path is not None and not Path(include_path).exists():
        raise UserError(f"--include_path {include_path} does not exist; pass the folder holding your task YAML files")
    adapters = expand_adapters(lora_path)
    runs: list[Path | None] = adapters if len(adapters) == 1 else [None, *adapters]
    labels = [BASE_LABEL] if len(adapters) != 1 else []
    labels += adapter_labels(adapters)

    precision = precision or default_precision()
    dtype = precision_dtype(precision)
    tokenizer = Tokenizer(checkpoint_dir)
    task_manager, task_objects = load_task_index(include_path, tasks)

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = load_model(checkpoint_dir, device=device, dtype=dtype)
    lm = LitLM(model, tokenizer, batch_size=batch_size, max_length=max_length,
               autocast_dtype={"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(precision))
    settings = {"precision": precision, "device": device, "batch_size": batch_size, "max_length": lm.max_length,
                "num_fewshot": num_fewshot, "limit": limit, "apply_chat_template": apply_chat_template}

    rows = []
    for label, adapter in zip(labels, runs):
        use_adapter(model, adapter)
        print(f"Evaluating {label}" + (f" ({adapter})" if adapter else f" ({checkpoint_dir})"), file=sys.stderr)
        results = lm_eval.simple_evaluate(
            model=lm, tasks=task_objects, num_fewshot=num_fewshot, limit=limit, task_manager=task_manager,
            bootstrap_iters=bootstrap_iters, log_samples=log_samples, apply_chat_template=apply_chat_template,
        )
        results[PROVENANCE_KEY] = provenance(checkpoint_dir, adapter, tokenizer.fingerprint, settings,
                                             results.get("configs", {}))
        folder = Path(out_dir) if len(runs) == 1 else Path(out_dir) / label
        samples = results.pop("samples", None)
        atomic_write_text(folder / "results.json",
                          json.dumps(results, indent=2, default=handle_non_serializable, ensure_ascii=False) + "\n")
        for task, task_samples in (samples or {}).items():
            lines = (json.dumps(s, default=handle_non_serializable, ensure_ascii=False) + "\n" for s in task_samples)
            atomic_write_text(folder / f"samples_{task}.jsonl", "".join(lines))
        if samples is not None:
            results["samples"] = samples
        rows.append((label, results))

    table = comparison_table(rows)
    details = "".join(f"\n## {label}\n\n{make_table(results)}" for label, results in rows)
    atomic_write_text(Path(out_dir) / "results.md", table + details)
    print(table)
    return rows
