"""Answer held-out instructions with a model (and adapters), and score it on their reference answers.

    python eval/answer.py --checkpoint_dir checkpoints/HuggingFaceTB/SmolLM2-135M-Instruct \
        --data_file heldout.json --out_dir out/eval/base
    python eval/answer.py --checkpoint_dir ... --data_file heldout.json --out_dir out/eval/lima \
        --lora_path out/lora/epoch-*/lit_lora.safetensors          # one folder per adapter: out/eval/lima/epoch-1 ...

Writes answers.jsonl, settings.json and reference_loss.json (see lit_gpt/eval/answers.py); run it again after a
kill to finish the answers. Compare two answer files with eval/pairwise.py.
"""
import sys
from pathlib import Path
from typing import Any, Literal

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a plain checkout, no install needed

import torch

from lit_gpt.data.formats import Fields
from lit_gpt.eval.answers import (ANSWERS_NAME, REFERENCE_LOSS_NAME, SETTINGS_NAME, answer_instructions,
                                  generator_name, load_for_eval, model_identity, prompts_that_fit, reference_losses,
                                  settings_for)
from lit_gpt.eval.instructions import JsonlStore, read_instruction_file
from lit_gpt.utils import (DOWNLOAD_HINT, UserError, atomic_write_json, cli, default_precision, precision_dtype,
                           read_json, require_dir, resolve_checkpoint_dir)

SUMMARY_NAME = "summary.json"  # with several adapters: each one's result, by generator name


def main(
    checkpoint_dir: Path,
    data_file: Path,
    lora_path: list[Path] | None = None,
    out_dir: Path = Path("out/eval"),
    prompt_style: Literal["alpaca", "chat", "auto"] | None = None,
    max_new_tokens: int = 256,
    temperature: float = 0.0,
    top_k: int | None = None,
    seed: int = 1234,
    batch_size: int = 8,
    generate: bool = True,
    reference_loss: bool = True,
    precision: str | None = None,
    instruction_field: str = "instruction",
    input_field: str | None = "input",
    output_field: str | None = "output",
    history_field: str | None = "history",
) -> dict[str, Any]:
    """Answer every instruction of --data_file and compute the loss of its reference answers, per model.

    Args:
        checkpoint_dir: A converted checkpoint (`checkpoints/ORG/NAME` or just `ORG/NAME`).
        data_file: Held-out instructions: a JSON list (AlpacaEval's layout), JSON Lines or CSV with an `instruction`
            field and optionally `input`, a reference `output` and `history` (earlier turns).
        lora_path: Adapters from finetune/lora.py, each evaluated on its own (e.g. every epoch's
            out/lora/epoch-*/lit_lora.safetensors); with several, each gets a folder in --out_dir named after the
            adapter's folder. Without it, the checkpoint alone.
        out_dir: Where answers.jsonl, settings.json and reference_loss.json go.
        prompt_style: alpaca, chat or auto. Default: the adapter's training style, else auto (chat if the tokenizer
            has a chat template).
        max_new_tokens: Longest answer, in tokens.
        temperature: 0 (the default) is greedy; above 0 samples, as generate/base.py does.
        top_k: Sample among the k most likely tokens only; 1 is greedy.
        seed: Random seed for sampling.
        batch_size: Instructions answered (and references scored) together.
        generate: Write the answers (false: only the reference loss).
        reference_loss: Compute the loss of the reference answers (the file's `output` field), where there are any.
        precision: Lightning Fabric precision (default: bf16-true on a GPU that supports it, else 32-true).
        instruction_field: The field holding the instruction.
        input_field: The optional field with context for the instruction (Alpaca's `input`); null for none.
        output_field: The optional field with a reference answer; null for none.
        history_field: The optional field with earlier turns as [[instruction, response], ...]; null for none.
    """
    import lightning as L

    checkpoint_dir = require_dir(resolve_checkpoint_dir(checkpoint_dir), "checkpoint folder", DOWNLOAD_HINT)
    instructions = read_instruction_file(data_file, Fields(instruction_field, output_field or "", input_field,
                                                           history_field))
    adapters = lora_path or [None]
    names = [Path(p).parent.name for p in lora_path] if lora_path else []
    if len(set(names)) < len(names):
        raise UserError(f"--lora_path: several adapters live in folders of the same name ({', '.join(names)}); "
                        "evaluate them with separate --out_dir")
    precision = precision or default_precision()
    fabric = L.Fabric(devices=1, precision=precision)
    results = {}
    for adapter in adapters:
        folder = out_dir / Path(adapter).parent.name if len(adapters) > 1 else out_dir
        model, tokenizer, style = load_for_eval(checkpoint_dir, adapter, prompt_style, fabric.device,
                                                precision_dtype(precision))
        settings = settings_for(model_identity(checkpoint_dir, adapter), style, precision, max_new_tokens,
                                temperature, top_k, seed, batch_size)
        name = generator_name(checkpoint_dir, adapter)
        if generate:  # refuse before writing anything
            _check_settings(folder / SETTINGS_NAME, settings)
            prompts_that_fit(model, tokenizer, style, instructions, max_new_tokens)
        print(f"{name}: {len(instructions)} instructions, {style.name} prompt style -> {folder}", file=sys.stderr)
        result: dict[str, Any] = {"out_dir": str(folder)}
        with fabric.autocast():  # a no-op except for the "-mixed" precisions
            if generate:
                store = JsonlStore(folder / ANSWERS_NAME, settings["sha"])
                if store.dropped_torn_line:
                    print(f"{store.path}: dropped its last line, cut short by a kill; answering it again",
                          file=sys.stderr)
                atomic_write_json(folder / SETTINGS_NAME, settings)
                rng = torch.Generator(fabric.device).manual_seed(seed)
                result["answers"] = answer_instructions(model, tokenizer, style, instructions, store, name,
                                                        batch_size, max_new_tokens, temperature, top_k, rng)
            if reference_loss and any(i.reference is not None for i in instructions):
                losses = reference_losses(model, tokenizer, style, instructions, batch_size)
                losses["settings"] = {k: settings[k] for k in ("model", "prompt_style", "precision")}
                atomic_write_json(folder / REFERENCE_LOSS_NAME, losses)
                result["reference_loss"] = losses["summary"]
        print(_summary_line(name, result), file=sys.stderr)
        results[name] = result
        del model
    if len(adapters) > 1:  # one place to compare the epochs: reference loss and answering per adapter
        atomic_write_json(out_dir / SUMMARY_NAME, results)
        print(f"summary of {len(adapters)} adapters -> {out_dir / SUMMARY_NAME}", file=sys.stderr)
    return results


def _check_settings(path: Path, settings: dict[str, Any]) -> None:
    if path.is_file() and (old := read_json(path)).get("sha") != settings["sha"]:
        changed = sorted(k for k in settings if k != "sha" and old.get(k) != settings[k])
        raise UserError(f"{path.parent} holds answers made with other settings (changed: {', '.join(changed)}); "
                        "pass another --out_dir rather than mixing two runs in one answers.jsonl")


def _summary_line(name: str, result: dict[str, Any]) -> str:
    parts = []
    if "answers" in result:
        a = result["answers"]
        parts.append(f"{a['answered']} answered ({a['already_done']} already done) in {a['seconds']}s")
    if "reference_loss" in result:
        r = result["reference_loss"]
        loss = float("nan") if r["loss_per_token"] is None else r["loss_per_token"]
        parts.append(f"reference loss {loss:.4f} nats/token over {r['reference_tokens']} tokens of "
                     f"{r['with_reference']} references")
    return f"{name}: {'; '.join(parts)}"


if __name__ == "__main__":
    cli(main)
