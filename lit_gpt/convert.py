"""Checkpoint conversion between Hugging Face folders and ours, in both directions.

Our checkpoint folder = the original Hugging Face files + `lit_config.json` + `lit_model.safetensors`.
Weight names follow `lit_gpt.model`; Hugging Face names are mapped per architecture below. Fused matrices are
split into our separate linears on the way in and fused on the way out:

    attn.qkv      -> attn.query/key/value   GPT-NeoX, Falcon: grouped layout (rows ordered by KV group)
                                            Phi-3: concatenated [all q; all k; all v]
    mlp.gate_up   -> mlp.fc_1/fc_2          Phi-3: concatenated [gate; up]

The grouped layout covers three cases:

    (n_query_groups, q_per_kv + 2, head_size, n_embd):   group g = [q heads of g..., k_g, v_g]
    GPT-NeoX MHA: q_per_kv = 1          Falcon 7B MQA: n_query_groups = 1          Falcon 40B/180B: GQA
"""
from __future__ import annotations

import json
import math
import pickle
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import torch
from tqdm import tqdm

from lit_gpt.checkpoint import WRITTEN_BY, check_out_dir, load_weights, save_weights
from lit_gpt.config import Config, name_to_config
from lit_gpt.model import GPT
from lit_gpt.utils import LIT_WEIGHTS_NAME, UserError, atomic_path, atomic_write_json, read_json

# Hugging Face module name -> ours; "{}" is the layer index. Each applies to `.weight` and `.bias`.
# "attn.qkv" is not a module of ours: it marks a fused matrix that is split into attn.query/key/value.
_LLAMA = {
    "model.embed_tokens": "embed",
    "model.layers.{}.input_layernorm": "blocks.{}.norm_1",
    "model.layers.{}.self_attn.q_proj": "blocks.{}.attn.query",
    "model.layers.{}.self_attn.k_proj": "blocks.{}.attn.key",
    "model.layers.{}.self_attn.v_proj": "blocks.{}.attn.value",
    "model.layers.{}.self_attn.o_proj": "blocks.{}.attn.proj",
    "model.layers.{}.post_attention_layernorm": "blocks.{}.norm_2",
    "model.layers.{}.mlp.gate_proj": "blocks.{}.mlp.fc_1",
    "model.layers.{}.mlp.up_proj": "blocks.{}.mlp.fc_2",
    "model.layers.{}.mlp.down_proj": "blocks.{}.mlp.proj",
    "model.norm": "norm",
    "lm_head": "lm_head",
}
_QK_NORM = {
    "model.layers.{}.self_attn.q_norm": "blocks.{}.attn.norm_q",
    "model.layers.{}.self_attn.k_norm": "blocks.{}.attn.norm_k",
}
_POST_NORMS = {
    "model.layers.{}.post_attention_layernorm": "blocks.{}.post_attn_norm",
    "model.layers.{}.post_feedforward_layernorm": "blocks.{}.post_mlp_norm",
}
# OLMo 2: no norms before attention and MLP, norms after both
_OLMO2 = {**{hf: lit for hf, lit in _LLAMA.items() if "layernorm" not in hf}, **_QK_NORM, **_POST_NORMS}
# Gemma: norms before and after attention and MLP
_GEMMA2 = {**_LLAMA, "model.layers.{}.pre_feedforward_layernorm": "blocks.{}.norm_2", **_POST_NORMS}
_PHI3 = {
    **{hf: lit for hf, lit in _LLAMA.items() if not re.search(r"\.(q|k|v|gate|up)_proj$", hf)},
    "model.layers.{}.self_attn.qkv_proj": "blocks.{}.attn.qkv",
    "model.layers.{}.mlp.gate_up_proj": "blocks.{}.mlp.gate_up",
}
_GPT_NEOX = {
    "gpt_neox.embed_in": "embed",
    "gpt_neox.layers.{}.input_layernorm": "blocks.{}.norm_1",
    "gpt_neox.layers.{}.attention.query_key_value": "blocks.{}.attn.qkv",
    "gpt_neox.layers.{}.attention.dense": "blocks.{}.attn.proj",
    "gpt_neox.layers.{}.post_attention_layernorm": "blocks.{}.norm_2",
    "gpt_neox.layers.{}.mlp.dense_h_to_4h": "blocks.{}.mlp.fc_1",
    "gpt_neox.layers.{}.mlp.dense_4h_to_h": "blocks.{}.mlp.proj",
    "gpt_neox.final_layer_norm": "norm",
    "embed_out": "lm_head",
}
_FALCON = {
    "transformer.word_embeddings": "embed",
    "transformer.h.{}.input_layernorm": "blocks.{}.norm_1",  # Falcon 7B: one norm for both branches
    "transformer.h.{}.ln_attn": "blocks.{}.norm_1",  # Falcon 40B/180B: one norm per branch
    "transformer.h.{}.ln_mlp": "blocks.{}.norm_2",
    "transformer.h.{}.self_attention.query_key_value": "blocks.{}.attn.qkv",
    "transformer.h.{}.self_attention.dense": "blocks.{}.attn.proj",
    "transformer.h.{}.mlp.dense_h_to_4h": "blocks.{}.mlp.fc_1",
    "transformer.h.{}.mlp.dense_4h_to_h": "blocks.{}.mlp.proj",
    "transformer.ln_f": "norm",
    "lm_head": "lm_head",
}
HF_TO_LIT = {
    "llama": _LLAMA, "mistral": _LLAMA, "qwen2": _LLAMA, "qwen3": {**_LLAMA, **_QK_NORM}, "olmo2": _OLMO2,
    "phi3": _PHI3, "gemma2": _GEMMA2, "gemma3_text": {**_GEMMA2, **_QK_NORM}, "gpt_neox": _GPT_NEOX, "falcon": _FALCON,
}
# fused module of ours (a marker, not a module of `lit_gpt.model`) -> the linears it holds, in order
FUSED = {"attn.qkv": ("query", "key", "value"), "mlp.gate_up": ("fc_1", "fc_2")}

# Tensors some Hugging Face checkpoints carry that are recomputed, not learned (old RoPE/mask buffers).
_IGNORED = re.compile(r"(rotary_emb\.inv_freq|attention\.bias|attention\.masked_bias)$")
_LAYER = re.compile(r"\.(\d+)\.")



def hf_to_lit_modules(config: Config) -> dict[str, str]:
    """The module map for this config; Falcon's norm names depend on its decoder layout."""
    mapping = HF_TO_LIT[config.architecture]
    if config.architecture == "falcon":
        unused = ("ln_attn", "ln_mlp") if config.shared_attention_norm else ("input_layernorm",)
        mapping = {hf: lit for hf, lit in mapping.items() if hf.rsplit(".", 1)[-1] not in unused}
    return mapping


def _template(module: str) -> tuple[str, str | None]:
    """"model.layers.3.mlp" -> ("model.layers.{}.mlp", "3"); names without a layer index come back unchanged."""
    layer = _LAYER.search(module)
    return (_LAYER.sub(".{}.", module, count=1), layer.group(1)) if layer else (module, None)

TOKENIZER_FILES = (
    "tokenizer.json", "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja",
)


# ------------------------------------------------------------------------------------ fused QKV


def split_qkv(qkv: torch.Tensor, config: Config) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Split a fused (grouped) QKV weight or bias into query, key and value (see the module docstring)."""
    ng, hs = config.n_query_groups, config.head_size
    q_per_kv = config.n_head // ng
    grouped = qkv.unflatten(0, (ng, q_per_kv + 2, hs))  # (ng, q_per_kv + 2, hs[, n_embd])
    q = grouped[:, :q_per_kv].flatten(0, 2)  # (n_head * hs[, n_embd])
    k = grouped[:, -2].flatten(0, 1)  # (ng * hs[, n_embd])
    v = grouped[:, -1].flatten(0, 1)
    return q.clone(), k.clone(), v.clone()


def fuse_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, config: Config) -> torch.Tensor:
    """Inverse of `split_qkv`."""
    ng, hs = config.n_query_groups, config.head_size
    q_per_kv = config.n_head // ng
    grouped = torch.cat(
        (q.unflatten(0, (ng, q_per_kv, hs)), k.unflatten(0, (ng, 1, hs)), v.unflatten(0, (ng, 1, hs))), dim=1
    )  # (ng, q_per_kv + 2, hs[, n_embd])
    return grouped.flatten(0, 2)


def split_fused(fused: str, tensor: torch.Tensor, config: Config) -> tuple[torch.Tensor, ...]:
    """A fused weight or bias (`fused` a key of `FUSED`) as the tensors of its parts, in `FUSED` order."""
    if fused == "mlp.gate_up":
        return tuple(t.clone() for t in tensor.chunk(2))  # [gate; up]
    if config.architecture == "phi3":
        return tuple(t.clone() for t in tensor.split(fused_rows(fused, config)))  # [all q; all k; all v]
    return split_qkv(tensor, config)


def fuse(fused: str, parts: list[torch.Tensor], config: Config) -> torch.Tensor:
    """Inverse of `split_fused`."""
    if fused == "mlp.gate_up" or config.architecture == "phi3":
        return torch.cat(parts)
    return fuse_qkv(*parts, config)


def fused_rows(fused: str, config: Config) -> list[int]:
    """The rows (output features) of each part of the fused weight `fused`, in `FUSED` order."""
    if fused == "mlp.gate_up":
        return [config.intermediate_size] * 2
    hs = config.head_size
    return [config.n_head * hs, config.n_query_groups * hs, config.n_query_groups * hs]


# ------------------------------------------------------------------------------------ HF -> ours


def config_from_hf_checkpoint(checkpoint_dir: Path, model_name: str | None = None) -> Config:
    """The config for converting `checkpoint_dir`: the named one if `model_name` is given, else derived from
    the folder's `config.json` (so finetunes, merges and tiny test models convert too)."""
    if model_name:
        return Config.from_name(model_name)
    hf_config = checkpoint_dir / "config.json"
    if not hf_config.is_file():
        if checkpoint_dir.name not in name_to_config:
            raise UserError(
                f"{checkpoint_dir} is not a Hugging Face checkpoint: it has no config.json. Pass the folder "
                "scripts/download.py wrote (checkpoints/ORG/NAME), or --model_name to name its config"
            )
        return Config.from_name(checkpoint_dir.name)
    config = Config.from_hf_config(read_json(hf_config), name=checkpoint_dir.name, source=str(hf_config))
    named = name_to_config.get(checkpoint_dir.name)
    if named is not None:
        config = Config(**{**config.__dict__, "hf_repo_id": named.hf_repo_id})
    return config


def hf_weight_files(checkpoint_dir: Path) -> list[Path]:
    """The weight shards of a Hugging Face folder: safetensors preferred, `.bin` otherwise."""
    for index_name, pattern in (("model.safetensors.index.json", "model*.safetensors"),
                                ("pytorch_model.bin.index.json", "pytorch_model*.bin")):
        index = checkpoint_dir / index_name
        if index.is_file():
            shards = sorted(set(read_json(index)["weight_map"].values()))
            missing = [s for s in shards if not (checkpoint_dir / s).is_file()]
            if missing:
                raise UserError(f"{index} lists shards that are not in the folder: {missing}; re-run the download")
            return [checkpoint_dir / s for s in shards]
        files = sorted(checkpoint_dir.glob(pattern))
        if files:
            return files
    raise UserError(
        f"{checkpoint_dir} has no Hugging Face weights (model*.safetensors or pytorch_model*.bin). "
        f"Download them with `python scripts/download.py --repo_id ORG/NAME`"
    )


def _iter_hf_tensors(files: list[Path]) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield (name, tensor) one tensor at a time, so memory holds one input tensor beside the output."""
    for path in tqdm(files, desc="shards", unit="file", disable=len(files) == 1):
        if path.suffix == ".safetensors":
            yield from read_safetensors(path)
        else:
            state = _load_bin(path)
            for name in list(state):
                yield name, state.pop(name)


def _load_bin(path: Path) -> dict[str, torch.Tensor]:
    """A PyTorch `.bin` state dict. These are pickles: weights_only refuses anything but tensors; mmap avoids reading it
    all at once, except in the legacy (pre-1.6, non-zip) format, which cannot be mapped and is read whole."""
    try:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as e:
            if "mmap" not in str(e):
                raise
            state = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, ValueError, pickle.UnpicklingError) as e:
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise UserError(f"{path} is not a PyTorch weights file we can read ({reason[:200]}); delete it and download "
                        "it again") from None
    if not isinstance(state, dict) or not all(isinstance(t, torch.Tensor) for t in state.values()):
        raise UserError(f"{path} does not hold a state dict of tensors; is it a model checkpoint?")
    return state


_SAFETENSORS_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8, "BOOL": torch.bool,
}


_MAX_HEADER = 100 * 2**20  # the safetensors library's own limit on the JSON header


def read_safetensors(path: Path) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield the tensors of a safetensors file one at a time, read with plain file reads.

    `safe_open` memory-maps the file, and every mapped page it touches stays in this process's resident set
    until the file is closed, so converting would hold the input and the output at once. Reading each
    tensor into its own buffer keeps the peak near the size of the output.

    The header is checked as the safetensors library checks it, before anything is allocated: every tensor's bytes
    lie inside the file, its size is its shape times its dtype's size, and the tensors tile the data region without
    overlaps or holes. A file that fails is one UserError.
    """
    entries = _safetensors_entries(path)
    with open(path, "rb") as f:
        for name, dtype, shape, begin, end in entries:
            tensor = torch.empty(shape, dtype=dtype)
            f.seek(begin)
            if f.readinto(tensor.view(-1).view(torch.uint8).numpy()) != end - begin:
                raise UserError(f"{path} is truncated (tensor {name}); delete it and download again")
            yield name, tensor


def _safetensors_entries(path: Path) -> list[tuple[str, torch.dtype, list[int], int, int]]:
    """(name, dtype, shape, first byte, end byte in the file) of every tensor, in file order, after checking the
    header against the file's size (see `read_safetensors`)."""
    def bad(reason: str) -> UserError:
        return UserError(f"{path} is not a valid safetensors file ({reason}); delete it and download it again")

    size = path.stat().st_size
    with open(path, "rb") as f:
        prefix = f.read(8)
        if len(prefix) < 8:
            raise bad(f"{size} bytes, too short for a header")
        header_len = int.from_bytes(prefix, "little")
        if header_len > min(size - 8, _MAX_HEADER):
            raise bad(f"its header claims {header_len:,} bytes of a {size:,}-byte file")
        try:
            header = json.loads(f.read(header_len))
        except (ValueError, RecursionError):
            raise bad("its header is not JSON") from None
    if not isinstance(header, dict):
        raise bad("its header is not a JSON object")
    header.pop("__metadata__", None)
    data_start, data_size = 8 + header_len, size - 8 - header_len
    entries = []
    for name, info in header.items():
        if not (isinstance(info, dict) and isinstance(info.get("dtype"), str) and isinstance(info.get("shape"), list)
                and all(type(n) is int and n >= 0 for n in info["shape"]) and isinstance(info.get("data_offsets"), list)
                and len(info["data_offsets"]) == 2 and all(type(n) is int for n in info["data_offsets"])):
            raise bad(f"tensor {name!r} lacks a dtype, shape or data_offsets")
        if info["dtype"] not in _SAFETENSORS_DTYPES:
            raise UserError(f"{path}: tensor {name} has dtype {info['dtype']}, which conversion does not support")
        dtype = _SAFETENSORS_DTYPES[info["dtype"]]
        begin, end = info["data_offsets"]
        if not 0 <= begin <= end:
            raise bad(f"tensor {name!r} has data offsets {begin}..{end}")
        if end > data_size:
            raise UserError(f"{path} is truncated: tensor {name} ends at byte {data_start + end:,} of {size:,}; "
                            "delete it and download it again")
        if math.prod(info["shape"]) * dtype.itemsize != end - begin:
            raise bad(f"tensor {name!r} of shape {info['shape']} and dtype {info['dtype']} needs "
                      f"{math.prod(info['shape']) * dtype.itemsize:,} bytes, its offsets give {end - begin:,}")
        entries.append((name, dtype, info["shape"], data_start + begin, data_start + end))
    entries.sort(key=lambda e: (e[3], e[4]))
    covered = data_start
    for name, _, _, begin, end in entries:
        if begin != covered:
            raise bad(f"tensor {name!r} {'overlaps the one before it' if begin < covered else 'leaves a gap before it'}")
        covered = end
    if covered != size:
        raise bad(f"{size - covered:,} bytes after the last tensor")
    return entries


def convert_hf_state(
    tensors: Iterator[tuple[str, torch.Tensor]], config: Config, dtype: torch.dtype | None = None
) -> dict[str, torch.Tensor]:
    """Map Hugging Face tensors to our names; refuse unknown, missing or mis-shaped tensors with one clear line."""
    mapping = hf_to_lit_modules(config)
    out: dict[str, torch.Tensor] = {}
    unknown = []
    for hf_name, tensor in tensors:
        if _IGNORED.search(hf_name):
            continue
        module, _, param = hf_name.rpartition(".")
        template, layer = _template(module)
        lit_module = mapping.get(template)
        if lit_module is None:
            unknown.append(hf_name)
            continue
        if lit_module == "lm_head" and config.tie_embeddings:
            continue  # tied: the embedding matrix is the head
        lit_module = lit_module.format(layer)
        if dtype is not None:
            tensor = tensor.to(dtype)
        fused = lit_module.split(".", 2)[-1]  # "blocks.3.attn.qkv" -> "attn.qkv"
        if fused in FUSED:
            prefix = lit_module.rsplit(".", 1)[0]
            for part, t in zip(FUSED[fused], split_fused(fused, tensor, config)):
                out[f"{prefix}.{part}.{param}"] = t
        else:
            out[f"{lit_module}.{param}"] = tensor
    if unknown:
        raise UserError(
            f"{len(unknown)} tensors do not belong to a {config.architecture} model with this config, e.g. "
            f"{unknown[:3]}; is config.json from the same checkpoint?"
        )
    check_state_dict(out, config)
    return out


def expected_shapes(config: Config) -> dict[str, torch.Size]:
    """Names and shapes of the weights we store for `config` (a tied head is stored once, as the embedding)."""
    with torch.device("meta"):
        model = GPT(config)
    return {name: p.shape for name, p in model.state_dict(keep_vars=False).items()
            if not (config.tie_embeddings and name == "lm_head.weight")}


def check_state_dict(state: dict[str, torch.Tensor], config: Config) -> None:
    expected = expected_shapes(config)
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    if missing or extra:
        raise UserError(f"weights do not match the config {config.name!r}: missing {missing[:5]}, unexpected {extra[:5]}")
    wrong = [f"{n}: {tuple(state[n].shape)} != {tuple(s)}" for n, s in expected.items() if state[n].shape != s]
    if wrong:
        raise UserError(f"weights do not match the config {config.name!r}: {wrong[:3]}; check config.json or --model_name")


def convert_hf_checkpoint(
    checkpoint_dir: Path, model_name: str | None = None, dtype: torch.dtype | None = None
) -> Path:
    """Convert a Hugging Face folder in place: adds `lit_config.json` and `lit_model.safetensors`."""
    if not checkpoint_dir.is_dir():
        raise UserError(f"{checkpoint_dir} is not a folder. Download a model first: python scripts/download.py --repo_id ORG/NAME")
    config = config_from_hf_checkpoint(checkpoint_dir, model_name)
    state = convert_hf_state(_iter_hf_tensors(hf_weight_files(checkpoint_dir)), config, dtype)
    save_weights(state, checkpoint_dir / LIT_WEIGHTS_NAME)
    config.save(checkpoint_dir)
    return checkpoint_dir / LIT_WEIGHTS_NAME


# ------------------------------------------------------------------------------------ ours -> HF


def lit_to_hf_state(state: dict[str, torch.Tensor], config: Config) -> dict[str, torch.Tensor]:
    """Our weights under Hugging Face names (fusing the linears the architecture fuses, see `FUSED`)."""
    reverse = {lit: hf for hf, lit in hf_to_lit_modules(config).items()}
    # "blocks.{}.attn.query" -> ("attn.qkv", 0) where the architecture fuses it
    part_of = {f"blocks.{{}}.{fused.split('.')[0]}.{part}": (fused, i)
               for fused, parts in FUSED.items() if f"blocks.{{}}.{fused}" in reverse for i, part in enumerate(parts)}
    out = {}
    for name, tensor in state.items():
        module, _, param = name.rpartition(".")
        template, layer = _template(module)
        if template in part_of:
            fused, i = part_of[template]
            if i:
                continue  # fused together with the first part below
            prefix = module.rsplit(".", 1)[0]
            tensor = fuse(fused, [state[f"{prefix}.{part}.{param}"] for part in FUSED[fused]], config)
            template = f"blocks.{{}}.{fused}"
        out[f"{reverse[template].format(layer)}.{param}"] = tensor
    return out


def convert_lit_checkpoint(checkpoint_dir: Path, output_dir: Path, dtype: torch.dtype | None = None) -> Path:
    """Write a Hugging Face folder (config.json, model.safetensors, tokenizer and generation files) that
    `transformers.AutoModelForCausalLM.from_pretrained(output_dir)` loads; weights in `dtype` (default: as stored)."""
    if Path(output_dir).resolve() == Path(checkpoint_dir).resolve():
        raise UserError(f"--output_dir {output_dir} is --checkpoint_dir, whose config.json and tokenizer files it would "
                        "overwrite; pass a new folder")
    check_out_dir(output_dir, ("model.safetensors", "config.json", "generation_config.json", *TOKENIZER_FILES),
                  "model.safetensors", "convert_lit_checkpoint", "--output_dir")
    config = Config.from_checkpoint(checkpoint_dir)
    state = {name: t.to(dtype or t.dtype) for name, t in load_weights(checkpoint_dir).items()}
    check_state_dict(state, config)
    hf_state = lit_to_hf_state(state, config)
    output_dir.mkdir(parents=True, exist_ok=True)
    save_weights(hf_state, output_dir / "model.safetensors", {WRITTEN_BY: "convert_lit_checkpoint"})

    hf_config = config.to_hf_config()
    hf_config["torch_dtype"] = str(next(iter(state.values())).dtype).removeprefix("torch.")
    generation = checkpoint_dir / "generation_config.json"
    if generation.is_file():
        # token ids live in both files in Hugging Face folders; keep them in agreement
        for key, value in read_json(generation).items():
            if key.endswith("_token_id"):
                hf_config[key] = value
    atomic_write_json(output_dir / "config.json", hf_config)
    for name in TOKENIZER_FILES + ("generation_config.json",):
        if (checkpoint_dir / name).is_file() and checkpoint_dir.resolve() != output_dir.resolve():
            with atomic_path(output_dir / name) as tmp:
                shutil.copyfile(checkpoint_dir / name, tmp)
    return output_dir
