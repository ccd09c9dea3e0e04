"""Take a finetuned LoRA adapter out of lit_gpt: merged into a full checkpoint, or as a Hugging Face PEFT adapter.

    merge_lora_checkpoint   base checkpoint + lit_lora.safetensors -> a checkpoint folder like the base one, whose
                            weights include the update (generate/base.py, scripts/convert_lit_checkpoint.py use it)
    export_peft             lit_lora.safetensors -> adapter_config.json + adapter_model.safetensors, which
                            `peft.PeftModel.from_pretrained(hf_base_model, out_dir)` loads onto the Hugging Face model

Most targets map one to one onto a Hugging Face linear. GPT-NeoX, Falcon and Phi-3 fuse query/key/value into one
linear (`query_key_value`, `qkv_proj`), Phi-3 also gate and up (`gate_up_proj`), so our (up to) three rank-r adapters
become one adapter of rank k*r on the fused module, k = the number of adapted parts. Its A stacks their A's; its B
holds each part's B in that part's rows and columns:

    A_fused = [A_q; A_v]               (2r, n_embd)            here k = 2: query and value adapted
    B_fused rows of q = [B_q  0 ]      (fused rows, 2r), rows in the fused weight's layout (`lit_gpt.convert.fuse`)
            rows of k = [ 0   0 ]
            rows of v = [ 0  B_v]      so B_fused @ A_fused = the q, k, v updates stacked as the fused weight is

PEFT scales every adapter by alpha / r; the fused one gets alpha * k through `alpha_pattern`, so its scaling stays ours.
"""
from __future__ import annotations

import dataclasses
import re
import shutil
from pathlib import Path
from typing import Any

import torch

from lit_gpt.checkpoint import WRITTEN_BY, check_out_dir, load_model, save_weights
from lit_gpt.config import Config
from lit_gpt.convert import FUSED, TOKENIZER_FILES, _template, check_state_dict, fuse, fused_rows, hf_to_lit_modules
from lit_gpt.lora import (
    LoRAConfig, apply_lora, load_lora, load_lora_into, lora_state_dict, merge_lora, read_lora_metadata,
)
from lit_gpt.model import GPT
from lit_gpt.prompts import PROMPT_STYLE_NAME, save_checkpoint_prompt_style
from lit_gpt.utils import LIT_CONFIG_NAME, LIT_WEIGHTS_NAME, UserError, atomic_path, atomic_write_json, read_json

PEFT_CONFIG_NAME = "adapter_config.json"
PEFT_WEIGHTS_NAME = "adapter_model.safetensors"
# PEFT names tensors `<prefix><module path in the Hugging Face model>.lora_A.weight`
_PEFT_PREFIX = "base_model.model."
# Checkpoint tensor names that are not the module's name in `transformers` >= 5: GPT-NeoX's head is stored as
# `embed_out.weight` but is the module `lm_head` (renamed on load). PEFT names modules, so it needs `lm_head`.
_HF_MODULE_RENAMES = {"embed_out": "lm_head"}
# "blocks.{}.attn.query" -> ("attn.qkv", "query"): the fused module of ours each part belongs to
_FUSED_PARTS = {f"blocks.{{}}.{fused.split('.')[0]}.{part}": (fused, part) for fused, parts in FUSED.items()
                for part in parts}
# "model.layers.3.self_attn.q_proj" -> "self_attn.q_proj"
_LAYER_PREFIX = re.compile(r"^.*\.\d+\.")
# What merge_lora_checkpoint writes into its out_dir
MERGED_FILES = (LIT_WEIGHTS_NAME, LIT_CONFIG_NAME, PROMPT_STYLE_NAME, "config.json", "generation_config.json",
                *TOKENIZER_FILES)


# ------------------------------------------------------------------------------------ merge


def weights_dtype(path: Path) -> str:
    """The dtype of the floating-point tensors in a safetensors file ("bfloat16"), from its header; "mixed" if several.

    Exports say it because transformers computes in the dtype a folder is written in, and generate/base.py in float32
    on a CPU: the same weights give other greedy text in bfloat16."""
    from safetensors import safe_open

    names = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16"}
    with safe_open(str(path), framework="pt") as f:
        dtypes = {names[d] for d in (f.get_slice(name).get_dtype() for name in f.keys()) if d in names}
    return dtypes.pop() if len(dtypes) == 1 else "mixed"


def merge_lora_checkpoint(checkpoint_dir: Path, lora_path: Path, out_dir: Path,
                          dtype: torch.dtype | None = None) -> Path:
    """Write `out_dir`: a checkpoint folder whose weights are the base's with the adapter at `lora_path` merged in.

    `out_dir` gets `lit_config.json`, `lit_model.safetensors` (base names, no `lora_` tensors, a tied head stored once
    as `embed.weight`), `lit_prompt_style.json` (the adapter's training style, which generation and chat then default
    to) and the base folder's config.json, tokenizer and generation files. Weights keep the base's dtype unless
    `dtype` is given (the merge is computed in that dtype). A tied head with an adapter on it cannot stay tied
    (the head changes, the embedding does not): the merged checkpoint then stores both and says
    `tie_embeddings: false`. Returns `out_dir`.
    """
    if out_dir.resolve() == checkpoint_dir.resolve():
        raise UserError(f"--out_dir {out_dir} is the base checkpoint folder; pass a new folder so the base stays intact")
    check_out_dir(out_dir, MERGED_FILES, LIT_WEIGHTS_NAME, "merge_lora")
    config = Config.from_checkpoint(checkpoint_dir)
    prompt_style = read_lora_metadata(lora_path).get("prompt_style")
    # merged in the dtype it is written in: float32 gives what generate/base.py computes on a CPU with the adapter
    model = load_model(checkpoint_dir, dtype=dtype)
    load_lora_into(model, lora_path, checkpoint_dir)
    merge_lora(model)  # unties an adapted tied head
    untie = config.tie_embeddings and model.lm_head.weight is not model.embed.weight
    if untie:
        config = dataclasses.replace(config, tie_embeddings=False)

    state = {name: t for name, t in model.state_dict().items() if "lora_" not in name}
    if config.tie_embeddings:
        del state["lm_head.weight"]  # the same tensor as embed.weight, stored once as convert does
    check_state_dict(state, config)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_weights(state, out_dir / LIT_WEIGHTS_NAME, {WRITTEN_BY: "merge_lora"})
    config.save(out_dir)
    _copy_base_files(checkpoint_dir, out_dir, untie)
    if prompt_style is not None:
        save_checkpoint_prompt_style(out_dir, prompt_style)
    return out_dir


def _copy_base_files(checkpoint_dir: Path, out_dir: Path, untie: bool) -> None:
    """Copy the tokenizer, generation and Hugging Face config files, so the merged folder works where the base did."""
    # a base that is itself a merge keeps its recorded style unless the new adapter names one
    for name in TOKENIZER_FILES + ("generation_config.json", PROMPT_STYLE_NAME):
        if (checkpoint_dir / name).is_file():
            with atomic_path(out_dir / name) as tmp:
                shutil.copyfile(checkpoint_dir / name, tmp)
    hf_config = checkpoint_dir / "config.json"
    if hf_config.is_file():
        data = read_json(hf_config)
        if untie:
            data["tie_word_embeddings"] = False  # keep it describing the weights next to it
        atomic_write_json(out_dir / "config.json", data)


# ------------------------------------------------------------------------------------ PEFT


def export_peft(checkpoint_dir: Path, lora_path: Path, out_dir: Path) -> Path:
    """Write the adapter at `lora_path` (trained on `checkpoint_dir`) as a PEFT LoRA folder in `out_dir`.

    `peft.PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(hf_dir), out_dir)` then computes what our
    model with the adapter computes, where `hf_dir` is the base's Hugging Face folder (the original download, or what
    scripts/convert_lit_checkpoint.py writes). Of the base, `lit_config.json` is read and, to check that the adapter
    was trained on it, 32 of its weights (`lit_gpt.lora.check_base`).
    Module names follow `transformers` >= 5 (GPT-NeoX's head is `lm_head` there, `embed_out` before). Returns `out_dir`.
    """
    check_out_dir(out_dir, (PEFT_CONFIG_NAME, PEFT_WEIGHTS_NAME), PEFT_WEIGHTS_NAME, "export_peft")
    config = Config.from_checkpoint(checkpoint_dir)
    lora_config, state = load_lora(lora_path, checkpoint_dir)
    _check_adapter_fits(state, config, lora_config, lora_path)
    tensors, fused_ranks = peft_state(state, config, lora_config)
    adapter_config = peft_adapter_config(config, lora_config, tensors, fused_ranks)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_weights(tensors, out_dir / PEFT_WEIGHTS_NAME, {WRITTEN_BY: "export_peft"})
    atomic_write_json(out_dir / PEFT_CONFIG_NAME, adapter_config)
    return out_dir


def _check_adapter_fits(state: dict[str, torch.Tensor], config: Config, lora_config: LoRAConfig, path: Path) -> None:
    """The adapter's tensors must be exactly those of a LoRA model of `config`, with the same shapes."""
    with torch.device("meta"):  # shapes only: no memory for the base weights
        expected = {name: p.shape for name, p in lora_state_dict(apply_lora(GPT(config), lora_config)).items()}
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    wrong = [f"{n}: {tuple(state[n].shape)} != {tuple(s)}" for n, s in expected.items() if n in state and state[n].shape != s]
    if missing or unexpected or wrong:
        raise UserError(
            f"{path} does not fit the checkpoint {config.name!r}: missing {missing[:3]}, unexpected {unexpected[:3]}, "
            f"wrong shapes {wrong[:3]}; was it trained on another checkpoint?"
        )


def peft_state(
    state: dict[str, torch.Tensor], config: Config, lora_config: LoRAConfig
) -> tuple[dict[str, torch.Tensor], dict[str, int]]:
    """Our adapter tensors under PEFT names; the parts of a fused module (see `lit_gpt.convert.FUSED`) fused where the
    architecture fuses them.

    Returns the tensors and the rank of each fused adapter by its PEFT target ("self_attn.qkv_proj": 4).
    """
    hf_modules = {lit: _HF_MODULE_RENAMES.get(hf, hf) for hf, lit in hf_to_lit_modules(config).items()}
    out: dict[str, torch.Tensor] = {}
    # (fused module template, layer) -> {part: (A, B)}
    to_fuse: dict[tuple[str, str], dict[str, tuple[torch.Tensor, torch.Tensor]]] = {}
    for name in sorted(state):
        if not name.endswith(".lora_A"):
            continue
        module = name.removesuffix(".lora_A")
        a, b = state[name], state[f"{module}.lora_B"]
        template, layer = _template(module)
        if template not in hf_modules:  # a part of a module the architecture fuses
            fused, part = _FUSED_PARTS[template]
            to_fuse.setdefault((fused, layer), {})[part] = (a, b)
            continue
        hf_module = hf_modules[template].format(layer)
        out[f"{_PEFT_PREFIX}{hf_module}.lora_A.weight"] = a
        out[f"{_PEFT_PREFIX}{hf_module}.lora_B.weight"] = b

    fused_ranks = {}
    for (fused, layer), parts in to_fuse.items():
        a, b = fuse_lora(fused, parts, config, lora_config.lora_r)
        hf_template = hf_modules[f"blocks.{{}}.{fused}"]
        hf_module = hf_template.format(layer)
        out[f"{_PEFT_PREFIX}{hf_module}.lora_A.weight"] = a
        out[f"{_PEFT_PREFIX}{hf_module}.lora_B.weight"] = b
        fused_ranks[_LAYER_PREFIX.sub("", hf_module)] = a.shape[0]  # every layer has the same targets: the same rank
    return out, fused_ranks


def fuse_lora(
    fused: str, parts: dict[str, tuple[torch.Tensor, torch.Tensor]], config: Config, r: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """One LoRA (A, B) on the fused weight `fused` ("attn.qkv", "mlp.gate_up") equal to the separate adapters in
    `parts` ({"query": (A, B), ...}).

    With k adapted parts: A (k*r, n_embd) stacks their A's; B (fused rows, k*r) puts part i's B in columns
    i*r:(i+1)*r of that part's rows, zeros elsewhere, so B @ A is each part's B_i @ A_i in its own rows.
    """
    names = [p for p in FUSED[fused] if p in parts]
    a = torch.cat([parts[p][0] for p in names])  # (k*r, n_embd)
    rank = len(names) * r
    dtype = parts[names[0]][1].dtype
    blocks = []
    for part, rows in zip(FUSED[fused], fused_rows(fused, config)):
        block = torch.zeros(rows, rank, dtype=dtype)  # (rows of this part, k*r)
        if part in parts:
            i = names.index(part)
            block[:, i * r:(i + 1) * r] = parts[part][1]
        blocks.append(block)
    return a, fuse(fused, blocks, config)  # (k*r, n_embd), (fused rows, k*r)


def peft_adapter_config(
    config: Config, lora_config: LoRAConfig, tensors: dict[str, torch.Tensor], fused_ranks: dict[str, int]
) -> dict[str, Any]:
    """The `adapter_config.json` PEFT 0.21 reads for a plain LoRA (the fields `LoraConfig.save_pretrained` writes
    that matter here; PEFT fills the rest with its defaults)."""
    modules = {name.removeprefix(_PEFT_PREFIX).rsplit(".", 2)[0] for name in tensors}
    # a target matches a module whose name ends with it: "self_attn.q_proj" is unambiguous in every layer
    targets = sorted({_LAYER_PREFIX.sub("", m) for m in modules})
    rank_pattern, alpha_pattern = {}, {}
    for fused_target, rank in fused_ranks.items():
        if rank != lora_config.lora_r:
            # scaling = alpha / r must stay ours: (k * alpha) / (k * r)
            rank_pattern[fused_target] = rank
            alpha_pattern[fused_target] = rank // lora_config.lora_r * lora_config.lora_alpha
    return {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": config.hf_repo_id or None,
        "r": lora_config.lora_r,
        "lora_alpha": lora_config.lora_alpha,
        "lora_dropout": lora_config.lora_dropout,
        "target_modules": targets,
        "rank_pattern": rank_pattern,
        "alpha_pattern": alpha_pattern,
        "bias": "none",
        "fan_in_fan_out": False,
        "use_rslora": False,
        "use_dora": False,
        "init_lora_weights": True,
        "inference_mode": True,
        "modules_to_save": None,
        "layers_to_transform": None,
        "layers_pattern": None,
    }

