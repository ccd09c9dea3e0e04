"""One typed model config, the table of named configs, and the mapping to and from Hugging Face `config.json`.

Every family difference the model knows about is a field here; `model.py` acts on each field in one place.
Named configs mirror the Hugging Face `config.json` of the repo in `hf_repo_id` (https://huggingface.co/<id>).
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from lit_gpt.utils import LIT_CONFIG_NAME, UserError, atomic_write_json, read_json

# the Hugging Face `model_type` whose weight layout and config.json keys a checkpoint uses
Architecture = Literal[
    "llama", "mistral", "qwen2", "qwen3", "olmo2", "phi3", "gemma2", "gemma3_text", "gpt_neox", "falcon"
]


@dataclass(frozen=True)
class Config:
    name: str = ""
    # the Hugging Face repo whose config.json this mirrors, and its `model_type` (which weight layout to convert)
    hf_repo_id: str = ""
    architecture: Architecture = "llama"

    # longest context the model was trained for: HF `max_position_embeddings`, times the linear RoPE factor if any
    block_size: int = 4096
    vocab_size: int = 32000  # rows of the embedding (may exceed the tokenizer's vocabulary: padding)
    n_layer: int = 32
    n_embd: int = 4096
    n_head: int = 32
    # Key/value heads. n_head = MHA, 1 = MQA (Falcon 7B), in between = GQA (Llama 2 70B, Mistral, SmolLM2).
    n_query_groups: int | None = None
    head_size: int | None = None  # defaults to n_embd // n_head
    intermediate_size: int = 11008

    norm_class: Literal["LayerNorm", "RMSNorm"] = "RMSNorm"
    norm_eps: float = 1e-5
    norm_unit_offset: bool = False  # RMSNorm gain is (1 + weight), weights stored around 0 (Gemma)
    # "pre": x + f(norm(x)) (Llama); "post": x + norm(f(x)) (OLMo 2); "pre_post": x + norm(f(norm(x))) (Gemma 2/3)
    norm_placement: Literal["pre", "post", "pre_post"] = "pre"
    # "swiglu": down(silu(gate(x)) * up(x)) (Llama); "geglu": the same with GELU (Gemma);
    # "gelu": proj(gelu(fc(x))) (GPT-NeoX, Falcon)
    mlp_class: Literal["swiglu", "geglu", "gelu"] = "swiglu"
    gelu_approximate: Literal["none", "tanh"] = "none"
    attn_bias: bool = False  # bias on query/key/value (and on the output projection unless attn_proj_bias says)
    attn_proj_bias: bool | None = None  # bias on the attention output projection; None: as attn_bias (Qwen2: False)
    mlp_bias: bool = False
    # RMSNorm on queries and keys before RoPE: "head" each head (Qwen3, Gemma 3), "projection" the whole (OLMo 2)
    qk_norm: Literal["none", "head", "projection"] = "none"
    query_pre_attn_scalar: float | None = None  # attention scores scaled by its -1/2 power instead of head_size's
    attn_logit_softcapping: float | None = None  # scores capped to (-cap, cap) by cap * tanh(s / cap) (Gemma 2)
    final_logit_softcapping: float | None = None  # the same on the output logits (Gemma 2)
    scale_embeddings: bool = False  # embeddings multiplied by sqrt(n_embd) (Gemma)

    rotary_percentage: float = 1.0  # fraction of each head that gets RoPE (GPT-NeoX: 0.25, Phi-4-mini: 0.75)
    rope_base: float = 10000.0
    rope_condense_ratio: float = 1.0  # linear position interpolation (LongChat: 8), HF `rope_scaling.factor`
    # frequency scaling as HF `rope_scaling`: {"rope_type": "llama3", "factor", "low_freq_factor", "high_freq_factor",
    # "original_max_position_embeddings"} (Llama 3.1+) or {"rope_type": "longrope", "short_factor", "long_factor",
    # "original_max_position_embeddings", "attention_factor"} (Phi-3.5, Phi-4-mini)
    rope_scaling: dict[str, Any] | None = None
    rope_local_base: float | None = None  # RoPE base of the sliding-window layers, if their own (Gemma 3)
    sliding_window: int | None = None  # attend to at most this many previous positions (Mistral, Phi-3, Gemma)
    # with a sliding_window: layer i attends globally when (i + 1) % pattern == 0, within the window otherwise
    # (Gemma 2: 2, Gemma 3: 6); None: every layer within the window (Mistral, Phi-3)
    sliding_window_pattern: int | None = None

    # x + attn(norm_1(x)) + mlp(norm_2(x)) instead of two sequential residual steps (GPT-NeoX, Falcon)
    parallel_residual: bool = False
    # parallel residual where both branches read the same norm_1 output (Falcon 7B); Falcon 40B/180B use two
    shared_attention_norm: bool = False
    tie_embeddings: bool = False  # lm_head reuses the embedding matrix (SmolLM2, Falcon, Llama 3.2 1B/3B, Gemma)

    def __post_init__(self) -> None:
        # frozen dataclass: derived defaults are filled in through object.__setattr__
        if self.head_size is None:
            object.__setattr__(self, "head_size", self.n_embd // self.n_head)
        if self.n_query_groups is None:
            object.__setattr__(self, "n_query_groups", self.n_head)
        if self.attn_proj_bias is None:
            object.__setattr__(self, "attn_proj_bias", self.attn_bias)
        if self.n_head % self.n_query_groups:
            raise ValueError(f"n_head={self.n_head} is not a multiple of n_query_groups={self.n_query_groups}")
        if self.parallel_residual and self.norm_placement != "pre":
            raise ValueError("parallel_residual works with norm_placement='pre' only")

    def is_sliding_layer(self, layer: int) -> bool:
        """Whether layer `layer` (from 0) attends within `sliding_window` rather than to every earlier position."""
        if self.sliding_window is None:
            return False
        return self.sliding_window_pattern is None or (layer + 1) % self.sliding_window_pattern != 0

    @property
    def rope_n_elem(self) -> int:
        return int(self.rotary_percentage * self.head_size)

    # ---------------------------------------------------------------- named configs and our own files

    @classmethod
    def from_name(cls, name: str, **overrides: Any) -> Config:
        """A named config (`Llama-2-7b-hf` or the repo id `meta-llama/Llama-2-7b-hf`), with field overrides."""
        fields = _table.get(name) or _table.get(name.split("/")[-1])
        if fields is None:
            raise UserError(
                f"no config named {name!r}. Run `python scripts/download.py` to list them, or convert a folder whose "
                f"config.json describes a supported architecture ({', '.join(_FROM_HF)})"
            )
        return cls(**{**fields, **overrides})

    @classmethod
    def from_checkpoint(cls, checkpoint_dir: Path, **overrides: Any) -> Config:
        """The config saved next to our converted weights (`lit_config.json`)."""
        path = Path(checkpoint_dir) / LIT_CONFIG_NAME
        if not path.is_file():
            raise UserError(
                f"{path} not found: {checkpoint_dir} is not a converted checkpoint. "
                f"Run `python scripts/convert_hf_checkpoint.py --checkpoint_dir {checkpoint_dir}` first"
            )
        data = read_json(path)
        if not isinstance(data, dict):
            raise UserError(f"{path}: expected a JSON object of config fields; convert the checkpoint again")
        unknown = set(data) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise UserError(f"{path}: unknown fields {sorted(unknown)}; was it written by a newer lit_gpt?")
        return replace(cls(**data), **overrides)

    def save(self, checkpoint_dir: Path) -> None:
        atomic_write_json(Path(checkpoint_dir) / LIT_CONFIG_NAME, dataclasses.asdict(self))

    # ---------------------------------------------------------------- Hugging Face config.json, both ways

    @classmethod
    def from_hf_config(cls, hf: dict[str, Any], name: str = "", source: str = "config.json") -> Config:
        """Derive a config from a Hugging Face `config.json` dict, so that checkpoints outside the table convert too.

        Raises `UserError` (naming `source`) for architectures or options the model does not implement,
        rather than silently computing something else.
        """
        model_type = hf.get("model_type")
        if model_type not in _FROM_HF:
            raise UserError(
                f"{source}: model_type {model_type!r} is not supported; supported: {', '.join(_FROM_HF)}"
            )
        try:
            fields = dict(vocab_size=hf["vocab_size"], n_layer=hf["num_hidden_layers"], n_embd=hf["hidden_size"],
                          n_head=hf["num_attention_heads"], **_FROM_HF[model_type](hf))
            fields.update(_rope_from_hf(hf))
        except KeyError as e:
            raise UserError(f"{source}: missing field {e.args[0]!r} for model_type {model_type!r}") from None
        except UserError as e:
            raise UserError(f"{source}: {e}") from None
        return cls(name=name, architecture=model_type, **fields)

    def to_hf_config(self) -> dict[str, Any]:
        """The Hugging Face `config.json` that `transformers` needs to rebuild this model."""
        return {
            "model_type": self.architecture,
            "vocab_size": self.vocab_size,
            "num_hidden_layers": self.n_layer,
            "hidden_size": self.n_embd,
            "num_attention_heads": self.n_head,
            **_rope_to_hf(self),
            **_TO_HF[self.architecture](self),
        }


# ------------------------------------------------------------------------------------ HF config mapping
# One small function per architecture and direction; `tests/test_model.py` checks that every named config
# survives the round trip Config -> config.json -> Config unchanged.


def _rope_parameters(hf: dict[str, Any]) -> dict[str, Any]:
    # transformers >= 5 writes `rope_parameters`; older files have `rope_theta`/`rotary_emb_base` and `rope_scaling`
    rope = dict(hf.get("rope_scaling") or {})
    for key in ("rope_theta", "rotary_emb_base"):
        if key in hf:
            rope["rope_theta"] = hf[key]
    rope.update(hf.get("rope_parameters") or {})
    return rope


def _rope_from_hf(hf: dict[str, Any]) -> dict[str, Any]:
    """rope_base, rope_condense_ratio, rope_scaling, rope_local_base and block_size from the RoPE settings."""
    rope = _rope_parameters(hf)
    max_positions = hf.get("max_position_embeddings", 2048)
    out: dict[str, Any] = dict(block_size=max_positions)
    if "full_attention" in rope:  # transformers >= 5, Gemma 3: one entry per layer type
        local = rope.get("sliding_attention", {})
        if local.get("rope_type", "default") != "default":
            raise UserError(f"RoPE scaling {local['rope_type']!r} on sliding-window layers is not supported")
        out["rope_local_base"] = float(local["rope_theta"])
        rope = rope["full_attention"]
    elif "rope_local_base_freq" in hf:  # Gemma 3's config.json before transformers 5
        out["rope_local_base"] = float(hf["rope_local_base_freq"])
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    out["rope_base"] = float(rope.get("rope_theta", 10000.0))
    if rope_type == "linear":
        out["rope_condense_ratio"] = float(rope["factor"])
        # LongChat's config.json keeps the trained 2048 and reaches 16k (2048 x 8) through the factor; Gemma 3's
        # max_position_embeddings is already the scaled context
        if hf["model_type"] != "gemma3_text":
            out["block_size"] = int(max_positions * out["rope_condense_ratio"])
    elif rope_type == "llama3":
        keys = ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")
        out["rope_scaling"] = {"rope_type": "llama3", **{k: rope[k] for k in keys}}
    elif rope_type in ("longrope", "su"):  # "su": Phi-3's first name for LongRoPE
        original = rope.get("original_max_position_embeddings") or hf["original_max_position_embeddings"]
        factor = rope.get("factor") or max_positions / original
        attention_factor = rope.get("attention_factor")
        if attention_factor is None:  # the LongRoPE paper's default, as transformers computes it
            attention_factor = math.sqrt(1 + math.log(factor) / math.log(original)) if factor > 1 else 1.0
        out["rope_scaling"] = {"rope_type": "longrope", "short_factor": list(rope["short_factor"]),
                               "long_factor": list(rope["long_factor"]), "original_max_position_embeddings": original,
                               "attention_factor": attention_factor}
    elif rope_type != "default":
        raise UserError(f"RoPE scaling {rope_type!r} is not supported (default, linear, llama3, longrope)")
    return out


def _rope_to_hf(c: Config) -> dict[str, Any]:
    max_positions = c.block_size
    scaling = None
    if c.rope_condense_ratio != 1:
        scaling = {"rope_type": "linear", "factor": c.rope_condense_ratio}
        if c.architecture != "gemma3_text":
            max_positions = int(c.block_size / c.rope_condense_ratio)
    elif c.rope_scaling is not None:
        scaling = dict(c.rope_scaling)
    hf: dict[str, Any] = {"max_position_embeddings": max_positions, "rope_theta": c.rope_base, "rope_scaling": scaling}
    if c.rope_scaling is not None and c.rope_scaling["rope_type"] == "longrope":
        hf["original_max_position_embeddings"] = c.rope_scaling["original_max_position_embeddings"]
    return hf


def _silu(hf: dict[str, Any]) -> None:
    act = hf.get("hidden_act", "silu")
    if act != "silu":
        raise UserError(f"hidden_act {act!r} is not supported for {hf['model_type']} (only silu)")


def _llama_from_hf(hf: dict[str, Any]) -> dict[str, Any]:
    """Llama, Mistral and the families that only add to Llama's layout (Qwen 2.5, Qwen 3, OLMo 2, Phi-3)."""
    _silu(hf)
    model_type = hf["model_type"]
    if hf.get("use_sliding_window"):
        raise UserError(f"use_sliding_window=true (a window on some {model_type} layers) is not supported")
    fields = dict(
        n_query_groups=hf.get("num_key_value_heads") or hf["num_attention_heads"],
        head_size=hf.get("head_dim") or hf["hidden_size"] // hf["num_attention_heads"],
        intermediate_size=hf["intermediate_size"],
        norm_eps=hf.get("rms_norm_eps", 1e-6),
        attn_bias=hf.get("attention_bias", False),
        mlp_bias=hf.get("mlp_bias", False),
        sliding_window=hf.get("sliding_window") if model_type in ("mistral", "phi3") else None,
        tie_embeddings=hf.get("tie_word_embeddings", False),
    )
    if model_type == "qwen2":  # bias on q/k/v, none on the output projection, hard-wired in transformers
        fields.update(attn_bias=True, attn_proj_bias=False)
    if model_type == "qwen3":
        fields["qk_norm"] = "head"
    if model_type == "olmo2":
        fields.update(qk_norm="projection", norm_placement="post")
    if model_type == "phi3":
        partial = _rope_parameters(hf).get("partial_rotary_factor", hf.get("partial_rotary_factor", 1.0))
        fields["rotary_percentage"] = partial
    return fields


def _llama_to_hf(c: Config) -> dict[str, Any]:
    classes = {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM", "qwen2": "Qwen2ForCausalLM",
               "qwen3": "Qwen3ForCausalLM", "olmo2": "Olmo2ForCausalLM", "phi3": "Phi3ForCausalLM"}
    hf = dict(
        architectures=[classes[c.architecture]],
        num_key_value_heads=c.n_query_groups,
        head_dim=c.head_size,
        intermediate_size=c.intermediate_size,
        hidden_act="silu",
        rms_norm_eps=c.norm_eps,
        attention_bias=c.attn_bias,
        tie_word_embeddings=c.tie_embeddings,
    )
    if c.architecture in ("mistral", "phi3"):
        hf["sliding_window"] = c.sliding_window
    if c.architecture in ("qwen2", "qwen3"):
        hf.update(use_sliding_window=False, sliding_window=None)
    if c.architecture == "llama":
        hf["mlp_bias"] = c.mlp_bias
    if c.architecture == "phi3":
        hf["partial_rotary_factor"] = c.rotary_percentage
    return hf


def _gemma_from_hf(hf: dict[str, Any]) -> dict[str, Any]:
    """Gemma 2 and the text model of Gemma 3."""
    act = hf.get("hidden_activation") or hf.get("hidden_act") or "gelu_pytorch_tanh"
    if hf.get("use_bidirectional_attention"):
        raise UserError("use_bidirectional_attention=true is not supported (causal attention only)")
    gemma3 = hf["model_type"] == "gemma3_text"
    return dict(
        n_query_groups=hf.get("num_key_value_heads") or hf["num_attention_heads"],
        head_size=hf.get("head_dim") or hf["hidden_size"] // hf["num_attention_heads"],
        intermediate_size=hf["intermediate_size"],
        norm_eps=hf.get("rms_norm_eps", 1e-6),
        norm_unit_offset=True,
        norm_placement="pre_post",
        mlp_class="geglu",
        gelu_approximate=_gelu_approximate(act),
        attn_bias=hf.get("attention_bias", False),
        qk_norm="head" if gemma3 else "none",
        query_pre_attn_scalar=hf.get("query_pre_attn_scalar"),
        attn_logit_softcapping=hf.get("attn_logit_softcapping"),
        final_logit_softcapping=hf.get("final_logit_softcapping"),
        scale_embeddings=True,
        sliding_window=hf.get("sliding_window"),
        sliding_window_pattern=_sliding_window_pattern(hf, default=6 if gemma3 else 2),
        tie_embeddings=hf.get("tie_word_embeddings", True),
    )


def _sliding_window_pattern(hf: dict[str, Any], default: int) -> int:
    """Every n-th layer global: from `layer_types` (transformers >= 5) or `sliding_window_pattern`."""
    types = hf.get("layer_types")
    if types is None:
        return hf.get("sliding_window_pattern") or hf.get("_sliding_window_pattern") or default
    full = [i for i, t in enumerate(types) if t == "full_attention"]
    pattern = full[0] + 1 if full else len(types) + 1
    if [("full_attention" if (i + 1) % pattern == 0 else "sliding_attention") for i in range(len(types))] != types:
        raise UserError(f"layer_types {types} is not every n-th layer global; such a pattern is not supported")
    return pattern


def _gemma_to_hf(c: Config) -> dict[str, Any]:
    gemma3 = c.architecture == "gemma3_text"
    hf = dict(
        architectures=["Gemma3ForCausalLM" if gemma3 else "Gemma2ForCausalLM"],
        num_key_value_heads=c.n_query_groups,
        head_dim=c.head_size,
        intermediate_size=c.intermediate_size,
        hidden_activation="gelu_pytorch_tanh" if c.gelu_approximate == "tanh" else "gelu",
        rms_norm_eps=c.norm_eps,
        attention_bias=c.attn_bias,
        query_pre_attn_scalar=c.query_pre_attn_scalar,
        attn_logit_softcapping=c.attn_logit_softcapping,
        final_logit_softcapping=c.final_logit_softcapping,
        sliding_window=c.sliding_window,
        layer_types=["sliding_attention" if c.is_sliding_layer(i) else "full_attention" for i in range(c.n_layer)],
        tie_word_embeddings=c.tie_embeddings,
    )
    if gemma3:
        hf["rope_local_base_freq"] = c.rope_local_base
        hf["sliding_window_pattern"] = c.sliding_window_pattern
    return hf


def _gpt_neox_from_hf(hf: dict[str, Any]) -> dict[str, Any]:
    rope = _rope_parameters(hf)
    return dict(
        intermediate_size=hf.get("intermediate_size") or 4 * hf["hidden_size"],
        norm_class="LayerNorm",
        norm_eps=hf.get("layer_norm_eps", 1e-5),
        mlp_class="gelu",
        gelu_approximate=_gelu_approximate(hf.get("hidden_act", "gelu")),
        attn_bias=hf.get("attention_bias", True),
        mlp_bias=True,
        rotary_percentage=rope.get("partial_rotary_factor", hf.get("rotary_pct", 0.25)),
        parallel_residual=hf.get("use_parallel_residual", True),
        tie_embeddings=hf.get("tie_word_embeddings", False),
    )


def _gpt_neox_to_hf(c: Config) -> dict[str, Any]:
    return dict(
        architectures=["GPTNeoXForCausalLM"],
        intermediate_size=c.intermediate_size,
        layer_norm_eps=c.norm_eps,
        hidden_act="gelu" if c.gelu_approximate == "none" else "gelu_new",
        attention_bias=c.attn_bias,
        rotary_pct=c.rotary_percentage,
        rotary_emb_base=c.rope_base,
        use_parallel_residual=c.parallel_residual,
        tie_word_embeddings=c.tie_embeddings,
    )


def _falcon_from_hf(hf: dict[str, Any]) -> dict[str, Any]:
    if hf.get("alibi", False):
        raise UserError("Falcon with ALiBi (falcon-rw) is not supported; only rotary Falcon models are")
    if not hf.get("parallel_attn", True):
        raise UserError("Falcon with sequential attention (parallel_attn=false) is not supported")
    new_decoder = hf.get("new_decoder_architecture", False)
    multi_query = hf.get("multi_query", True)
    n_kv = hf.get("num_kv_heads") or hf["num_attention_heads"]
    if not new_decoder and not multi_query:
        raise UserError("Falcon with multi_query=false and the old decoder layout (falcon-rw) is not supported")
    # Falcon 40B/180B ("new decoder architecture") normalise the attention and MLP inputs separately
    num_ln = hf.get("num_ln_in_parallel_attn") or (2 if new_decoder else 1)
    return dict(
        n_query_groups=n_kv if new_decoder else 1,
        intermediate_size=hf.get("ffn_hidden_size") or 4 * hf["hidden_size"],
        norm_class="LayerNorm",
        norm_eps=hf.get("layer_norm_epsilon", 1e-5),
        mlp_class="gelu",
        attn_bias=hf.get("bias", False),
        mlp_bias=hf.get("bias", False),
        parallel_residual=True,
        shared_attention_norm=num_ln == 1,
        tie_embeddings=hf.get("tie_word_embeddings", True),
    )


def _falcon_to_hf(c: Config) -> dict[str, Any]:
    new_decoder = c.n_query_groups != 1 or not c.shared_attention_norm
    return dict(
        architectures=["FalconForCausalLM"],
        num_kv_heads=c.n_query_groups,
        new_decoder_architecture=new_decoder,
        multi_query=c.n_query_groups == 1,
        num_ln_in_parallel_attn=1 if c.shared_attention_norm else 2,
        ffn_hidden_size=c.intermediate_size,
        layer_norm_epsilon=c.norm_eps,
        bias=c.attn_bias,
        parallel_attn=True,
        alibi=False,
        rope_theta=c.rope_base,
        tie_word_embeddings=c.tie_embeddings,
    )


def _gelu_approximate(act: str) -> Literal["none", "tanh"]:
    if act in ("gelu", "gelu_python"):
        return "none"
    if act in ("gelu_new", "gelu_fast", "gelu_pytorch_tanh"):
        return "tanh"
    raise UserError(f"hidden_act {act!r} is not supported (gelu, gelu_new, gelu_pytorch_tanh)")


_FROM_HF = {
    **dict.fromkeys(("llama", "mistral", "qwen2", "qwen3", "olmo2", "phi3"), _llama_from_hf),
    **dict.fromkeys(("gemma2", "gemma3_text"), _gemma_from_hf),
    "gpt_neox": _gpt_neox_from_hf, "falcon": _falcon_from_hf,
}
_TO_HF = {
    **dict.fromkeys(("llama", "mistral", "qwen2", "qwen3", "olmo2", "phi3"), _llama_to_hf),
    **dict.fromkeys(("gemma2", "gemma3_text"), _gemma_to_hf),
    "gpt_neox": _gpt_neox_to_hf, "falcon": _falcon_to_hf,
}


# ------------------------------------------------------------------------------------ named configs
# Each entry mirrors https://huggingface.co/<hf_repo_id>/blob/main/config.json. Variants (chat, instruct,
# deduped, ...) share their base's numbers. Bases are plain dicts of the fields that differ from `Config`'s
# defaults, so derived fields (head_size, n_query_groups) are recomputed for every shape rather than inherited.

_table: dict[str, dict[str, Any]] = {}


def _with(base: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    return {**base, **overrides}


def _add(base: dict[str, Any], *repo_ids: str, **overrides: Any) -> None:
    for repo_id in repo_ids:
        name = repo_id.split("/")[-1]
        assert name not in _table, f"duplicate config name {name}"
        _table[name] = _with(base, name=name, hf_repo_id=repo_id, **overrides)


# Llama 2 (https://huggingface.co/meta-llama)
_llama2_7b = dict(block_size=4096, n_layer=32, n_embd=4096, n_head=32, intermediate_size=11008)
_llama2_13b = _with(_llama2_7b, n_layer=40, n_embd=5120, n_head=40, intermediate_size=13824)
_llama2_70b = _with(_llama2_7b, n_layer=80, n_embd=8192, n_head=64, n_query_groups=8, intermediate_size=28672)
for _size, _base in (("7b", _llama2_7b), ("13b", _llama2_13b), ("70b", _llama2_70b)):
    _add(_base, f"meta-llama/Llama-2-{_size}-hf", f"meta-llama/Llama-2-{_size}-chat-hf")
_add(_llama2_70b, "stabilityai/FreeWilly2")

# LLaMA 1 shapes (OpenLLaMA, Vicuna v1.3, LongChat, Platypus-30B): 2048 context, eps 1e-6
_llama1_7b = _with(_llama2_7b, block_size=2048, norm_eps=1e-6)
_llama1_13b = _with(_llama2_13b, block_size=2048, norm_eps=1e-6)
_llama1_33b = _with(_llama1_7b, n_layer=60, n_embd=6656, n_head=52, intermediate_size=17920)

# OpenLLaMA (https://huggingface.co/openlm-research)
_add(_with(_llama1_7b, n_layer=26, n_embd=3200, n_head=32, intermediate_size=8640),
     "openlm-research/open_llama_3b", "openlm-research/open_llama_3b_v2")
_add(_llama1_7b, "openlm-research/open_llama_7b", "openlm-research/open_llama_7b_v2")
_add(_llama1_13b, "openlm-research/open_llama_13b")

# Vicuna (https://huggingface.co/lmsys): v1.3 on LLaMA 1, v1.5 on Llama 2. The 16k models keep Llama 2's
# max_position_embeddings (4096) in config.json and reach 16k through linear RoPE scaling x4 (`rope_scaling`),
# so block_size = 4096 x 4
_add(_llama1_7b, "lmsys/vicuna-7b-v1.3")
_add(_llama1_13b, "lmsys/vicuna-13b-v1.3")
_add(_llama1_33b, "lmsys/vicuna-33b-v1.3")
_add(_llama2_7b, "lmsys/vicuna-7b-v1.5")
_add(_llama2_13b, "lmsys/vicuna-13b-v1.5")
_add(_with(_llama2_7b, block_size=16384, rope_condense_ratio=4.0), "lmsys/vicuna-7b-v1.5-16k")
_add(_with(_llama2_13b, block_size=16384, rope_condense_ratio=4.0), "lmsys/vicuna-13b-v1.5-16k")

# LongChat (https://huggingface.co/lmsys): LLaMA 1 with condensed RoPE (positions / 8) for 16k context; config.json
# keeps max_position_embeddings 2048 (16384 is only in its non-standard `max_sequence_length`): 2048 x 8
_add(_with(_llama1_7b, block_size=16384, rope_condense_ratio=8.0), "lmsys/longchat-7b-16k")
_add(_with(_llama1_13b, block_size=16384, rope_condense_ratio=8.0), "lmsys/longchat-13b-16k")

# Platypus (https://huggingface.co/garage-bAInd)
_add(_llama1_33b, "garage-bAInd/Platypus-30B")
_add(_llama2_7b, "garage-bAInd/Platypus2-7B")
_add(_llama2_13b, "garage-bAInd/Platypus2-13B", "garage-bAInd/Camel-Platypus2-13B", "garage-bAInd/Stable-Platypus2-13B")
_add(_llama2_70b, "garage-bAInd/Platypus2-70B", "garage-bAInd/Camel-Platypus2-70B", "garage-bAInd/Platypus2-70B-instruct")

# Nous-Hermes (https://huggingface.co/NousResearch)
_add(_with(_llama1_13b, vocab_size=32001), "NousResearch/Nous-Hermes-13b")
_add(_llama2_7b, "NousResearch/Nous-Hermes-llama-2-7b")
_add(_with(_llama2_13b, vocab_size=32032), "NousResearch/Nous-Hermes-Llama2-13b")
_add(_with(_llama2_70b, vocab_size=32001), "NousResearch/Nous-Hermes-Llama2-70b")

# Code Llama (https://huggingface.co/codellama): RoPE base 1e6, 16k context. 7B/13B base and Instruct add 16
# infilling tokens (32016 rows); the Python variants and every 34B model keep 32000
for _size, _base, _infill in (("7b", _llama2_7b, True), ("13b", _llama2_13b, True),
                              ("34b", _with(_llama2_70b, n_layer=48, intermediate_size=22016), False)):
    for _variant in ("", "-Python", "-Instruct"):
        _vocab = 32016 if _infill and _variant != "-Python" else 32000
        _add(_with(_base, block_size=16384, rope_base=1e6, vocab_size=_vocab), f"codellama/CodeLlama-{_size}{_variant}-hf")

# Mistral (https://huggingface.co/mistralai): GQA and a 4096-token sliding window
_add(dict(architecture="mistral", block_size=32768, n_layer=32, n_embd=4096, n_head=32, n_query_groups=8,
            intermediate_size=14336, sliding_window=4096),
     "mistralai/Mistral-7B-v0.1", "mistralai/Mistral-7B-Instruct-v0.1")
# v0.2 Instruct and v0.3: no sliding window, RoPE base 1e6; v0.3 adds 768 control tokens
_mistral_v0_2 = dict(architecture="mistral", block_size=32768, n_layer=32, n_embd=4096, n_head=32, n_query_groups=8,
                     intermediate_size=14336, rope_base=1e6)
_add(_mistral_v0_2, "mistralai/Mistral-7B-Instruct-v0.2")
_add(_with(_mistral_v0_2, vocab_size=32768), "mistralai/Mistral-7B-v0.3", "mistralai/Mistral-7B-Instruct-v0.3")

# SmolLM2 (https://huggingface.co/HuggingFaceTB): GQA, tied embeddings, 8k context
_smollm2 = dict(block_size=8192, vocab_size=49152, rope_base=100000.0, tie_embeddings=True)
for _size, _shape in (("135M", dict(n_layer=30, n_embd=576, n_head=9, n_query_groups=3, intermediate_size=1536)),
                      ("360M", dict(n_layer=32, n_embd=960, n_head=15, n_query_groups=5, intermediate_size=2560)),
                      ("1.7B", dict(n_layer=24, n_embd=2048, n_head=32, n_query_groups=32, intermediate_size=8192,
                                    rope_base=130000.0))):
    _add(_with(_smollm2, **_shape), f"HuggingFaceTB/SmolLM2-{_size}", f"HuggingFaceTB/SmolLM2-{_size}-Instruct")

# Llama 3 (https://huggingface.co/meta-llama): 128k-token vocabulary, GQA, RoPE base 5e5. 3.1+ reach 128k context by
# the llama3 frequency scaling; 3.2 1B/3B tie the head to the embedding
_llama3_8b = dict(block_size=8192, vocab_size=128256, n_layer=32, n_embd=4096, n_head=32, n_query_groups=8,
                  intermediate_size=14336, rope_base=500000.0)
_llama3_70b = _with(_llama3_8b, n_layer=80, n_embd=8192, n_head=64, intermediate_size=28672)
_llama3_rope = dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                    original_max_position_embeddings=8192)
_llama3_1 = dict(block_size=131072, rope_scaling=_llama3_rope)
_llama3_2 = dict(block_size=131072, tie_embeddings=True, rope_scaling=dict(_llama3_rope, factor=32.0))
for _size, _base in (("8B", _llama3_8b), ("70B", _llama3_70b)):
    _add(_base, f"meta-llama/Meta-Llama-3-{_size}", f"meta-llama/Meta-Llama-3-{_size}-Instruct")
    _add(_with(_base, **_llama3_1), f"meta-llama/Llama-3.1-{_size}", f"meta-llama/Llama-3.1-{_size}-Instruct")
_add(_with(_llama3_70b, n_layer=126, n_embd=16384, n_head=128, intermediate_size=53248, **_llama3_1),
     "meta-llama/Llama-3.1-405B", "meta-llama/Llama-3.1-405B-Instruct")
_add(_with(_llama3_8b, n_layer=16, n_embd=2048, head_size=64, intermediate_size=8192, **_llama3_2),
     "meta-llama/Llama-3.2-1B", "meta-llama/Llama-3.2-1B-Instruct")
_add(_with(_llama3_8b, n_layer=28, n_embd=3072, n_head=24, head_size=128, intermediate_size=8192, **_llama3_2),
     "meta-llama/Llama-3.2-3B", "meta-llama/Llama-3.2-3B-Instruct")
_add(_with(_llama3_70b, **_llama3_1), "meta-llama/Llama-3.3-70B-Instruct")

# Qwen 2.5 (https://huggingface.co/Qwen): bias on q/k/v only, RoPE base 1e6, 32k context (config.json's sliding
# window is off: use_sliding_window=false); the small ones tie the head. Math: 4k context, base 1e4
_qwen2_5 = dict(architecture="qwen2", block_size=32768, vocab_size=152064, rope_base=1e6, norm_eps=1e-6,
                attn_bias=True, attn_proj_bias=False)
_qwen2_5_small = _with(_qwen2_5, vocab_size=151936, tie_embeddings=True)
_qwen2_5_shapes = {
    "0.5B": _with(_qwen2_5_small, n_layer=24, n_embd=896, n_head=14, n_query_groups=2, intermediate_size=4864),
    "1.5B": _with(_qwen2_5_small, n_layer=28, n_embd=1536, n_head=12, n_query_groups=2, intermediate_size=8960),
    "3B": _with(_qwen2_5_small, n_layer=36, n_embd=2048, n_head=16, n_query_groups=2, intermediate_size=11008),
    "7B": _with(_qwen2_5, n_layer=28, n_embd=3584, n_head=28, n_query_groups=4, intermediate_size=18944),
    "14B": _with(_qwen2_5, n_layer=48, n_embd=5120, n_head=40, n_query_groups=8, intermediate_size=13824),
    "32B": _with(_qwen2_5, n_layer=64, n_embd=5120, n_head=40, n_query_groups=8, intermediate_size=27648),
    "72B": _with(_qwen2_5, n_layer=80, n_embd=8192, n_head=64, n_query_groups=8, intermediate_size=29568),
}
for _size, _base in _qwen2_5_shapes.items():
    _add(_base, f"Qwen/Qwen2.5-{_size}-Instruct")
for _size in ("7B", "32B"):
    _add(_qwen2_5_shapes[_size], f"Qwen/Qwen2.5-Coder-{_size}-Instruct")
for _size in ("1.5B", "7B"):
    _add(_with(_qwen2_5_shapes[_size], block_size=4096, rope_base=10000.0), f"Qwen/Qwen2.5-Math-{_size}-Instruct")

# Qwen 3 dense (https://huggingface.co/Qwen): RMSNorm on each query/key head, head_size 128 whatever the width,
# 40k context; the small ones tie the head
_qwen3 = dict(architecture="qwen3", block_size=40960, vocab_size=151936, rope_base=1e6, norm_eps=1e-6,
              head_size=128, n_query_groups=8, qk_norm="head")
for _size, _shape in (
    ("0.6B", dict(n_layer=28, n_embd=1024, n_head=16, intermediate_size=3072, tie_embeddings=True)),
    ("1.7B", dict(n_layer=28, n_embd=2048, n_head=16, intermediate_size=6144, tie_embeddings=True)),
    ("4B", dict(n_layer=36, n_embd=2560, n_head=32, intermediate_size=9728, tie_embeddings=True)),
    ("8B", dict(n_layer=36, n_embd=4096, n_head=32, intermediate_size=12288)),
    ("14B", dict(n_layer=40, n_embd=5120, n_head=40, intermediate_size=17408)),
    ("32B", dict(n_layer=64, n_embd=5120, n_head=64, intermediate_size=25600)),
):
    _add(_with(_qwen3, **_shape), f"Qwen/Qwen3-{_size}")

# OLMo 2 (https://huggingface.co/allenai): norms after attention and MLP, RMSNorm over the whole query/key projection
_olmo2 = dict(architecture="olmo2", block_size=4096, vocab_size=100352, rope_base=500000.0, norm_eps=1e-6,
              qk_norm="projection", norm_placement="post")
for _repo, _shape in (
    ("OLMo-2-0425-1B", dict(n_layer=16, n_embd=2048, n_head=16, intermediate_size=8192)),
    ("OLMo-2-1124-7B", dict(n_layer=32, n_embd=4096, n_head=32, intermediate_size=11008)),
    ("OLMo-2-1124-13B", dict(n_layer=40, n_embd=5120, n_head=40, intermediate_size=13824)),
    ("OLMo-2-0325-32B", dict(n_layer=64, n_embd=5120, n_head=40, n_query_groups=8, intermediate_size=27648)),
):
    _add(_with(_olmo2, **_shape), f"allenai/{_repo}", f"allenai/{_repo}-Instruct")

# Phi-3 / Phi-3.5 / Phi-4-mini (https://huggingface.co/microsoft): fused qkv_proj and gate_up_proj in the checkpoint.
# Phi-3.5 and Phi-4-mini reach 128k by LongRoPE from an original 4k; Phi-4-mini rotates 3/4 of each head
_phi3 = dict(architecture="phi3", block_size=4096, vocab_size=32064, n_layer=32, n_embd=3072, n_head=32,
             intermediate_size=8192, sliding_window=2047)
_add(_phi3, "microsoft/Phi-3-mini-4k-instruct")
_add(_with(_phi3, n_layer=40, n_embd=5120, n_head=40, n_query_groups=10, intermediate_size=17920),
     "microsoft/Phi-3-medium-4k-instruct")


def _longrope(short: list[float], long: list[float], factor: float = 32.0, original: int = 4096) -> dict[str, Any]:
    # the attention factor transformers derives when config.json gives none: sqrt(1 + ln(factor) / ln(original))
    return dict(rope_type="longrope", short_factor=short, long_factor=long, original_max_position_embeddings=original,
                attention_factor=math.sqrt(1 + math.log(factor) / math.log(original)))


_add(_with(_phi3, block_size=131072, sliding_window=262144, rope_scaling=_longrope(
    short=[1.0, 1.0199999809265137, 1.0299999713897705, 1.0299999713897705, 1.0499999523162842, 1.0499999523162842,
           1.0499999523162842, 1.0499999523162842, 1.0499999523162842, 1.0699999332427979, 1.0999999046325684,
           1.1099998950958252, 1.1599998474121094, 1.1599998474121094, 1.1699998378753662, 1.2899998426437378,
           1.339999794960022, 1.679999828338623, 1.7899998426437378, 1.8199998140335083, 1.8499997854232788,
           1.8799997568130493, 1.9099997282028198, 1.9399996995925903, 1.9899996519088745, 2.0199997425079346,
           2.0199997425079346, 2.0199997425079346, 2.0199997425079346, 2.0199997425079346, 2.0199997425079346,
           2.0299997329711914, 2.0299997329711914, 2.0299997329711914, 2.0299997329711914, 2.0299997329711914,
           2.0299997329711914, 2.0299997329711914, 2.0299997329711914, 2.0299997329711914, 2.0799996852874756,
           2.0899996757507324, 2.189999580383301, 2.2199995517730713, 2.5899994373321533, 2.729999542236328,
           2.749999523162842, 2.8399994373321533],
    long=[1.0800000429153442, 1.1100000143051147, 1.1399999856948853, 1.340000033378601, 1.5899999141693115,
          1.600000023841858, 1.6200000047683716, 2.620000123977661, 3.2300000190734863, 3.2300000190734863,
          4.789999961853027, 7.400000095367432, 7.700000286102295, 9.09000015258789, 12.199999809265137,
          17.670000076293945, 24.46000099182129, 28.57000160217285, 30.420001983642578, 30.840002059936523,
          32.590003967285156, 32.93000411987305, 42.320003509521484, 44.96000289916992, 50.340003967285156,
          50.45000457763672, 57.55000305175781, 57.93000411987305, 58.21000289916992, 60.1400032043457,
          62.61000442504883, 62.62000274658203, 62.71000289916992, 63.1400032043457, 63.1400032043457,
          63.77000427246094, 63.93000411987305, 63.96000289916992, 63.970001220703125, 64.02999877929688,
          64.06999969482422, 64.08000183105469, 64.12000274658203, 64.41000366210938, 64.4800033569336,
          64.51000213623047, 64.52999877929688, 64.83999633789062])),
     "microsoft/Phi-3.5-mini-instruct")
_add(_with(_phi3, block_size=131072, vocab_size=200064, n_head=24, n_query_groups=8, rotary_percentage=0.75,
           sliding_window=262144, tie_embeddings=True, rope_scaling=_longrope(short=[1.0] * 48, long=[
               1.0, 1.118320672, 1.250641126, 1.398617824, 1.564103225, 1.74916897, 1.956131817, 2.187582649,
               2.446418898, 2.735880826, 3.059592084, 3.421605075, 3.826451687, 4.279200023, 4.785517845, 5.351743533,
               5.984965424, 6.693110555, 7.485043894, 8.370679318, 9.36110372, 10.4687158, 11.70738129, 13.09260651,
               14.64173252, 16.37415215, 18.31155283, 20.47818807, 22.90118105, 25.61086418, 28.64115884, 32.03,
               32.1, 32.13, 32.23, 32.6, 32.61, 32.64, 32.66, 32.7, 32.71, 32.93, 32.97, 33.28, 33.49, 33.5, 44.16,
               47.77])),
     "microsoft/Phi-4-mini-instruct")

# Gemma 2 (https://huggingface.co/google): (1 + w) RMSNorm before and after attention and MLP, GeGLU, embeddings
# times sqrt(n_embd), soft-capped attention scores (50) and logits (30), every other layer in a 4096 window
_gemma2 = dict(architecture="gemma2", block_size=8192, vocab_size=256000, norm_eps=1e-6, norm_unit_offset=True,
               norm_placement="pre_post", mlp_class="geglu", gelu_approximate="tanh", scale_embeddings=True,
               attn_logit_softcapping=50.0, final_logit_softcapping=30.0, sliding_window=4096,
               sliding_window_pattern=2, tie_embeddings=True)
for _size, _shape in (
    ("2b", dict(n_layer=26, n_embd=2304, n_head=8, n_query_groups=4, head_size=256, intermediate_size=9216,
                query_pre_attn_scalar=256)),
    ("9b", dict(n_layer=42, n_embd=3584, n_head=16, n_query_groups=8, head_size=256, intermediate_size=14336,
                query_pre_attn_scalar=256)),
    ("27b", dict(n_layer=46, n_embd=4608, n_head=32, n_query_groups=16, head_size=128, intermediate_size=36864,
                 query_pre_attn_scalar=144)),
):
    _add(_with(_gemma2, **_shape), f"google/gemma-2-{_size}", f"google/gemma-2-{_size}-it")

# Gemma 3 text (https://huggingface.co/google): as Gemma 2 without soft-capping, with q/k norm; five of every six
# layers in a 512 window with their own RoPE base 1e4, the sixth global with base 1e6. (4B and larger are
# vision-language checkpoints, model_type gemma3: not supported.)
_add(dict(architecture="gemma3_text", block_size=32768, vocab_size=262144, n_layer=26, n_embd=1152, n_head=4,
          n_query_groups=1, head_size=256, intermediate_size=6912, norm_eps=1e-6, norm_unit_offset=True,
          norm_placement="pre_post", mlp_class="geglu", gelu_approximate="tanh", scale_embeddings=True,
          qk_norm="head", query_pre_attn_scalar=256, rope_base=1e6, rope_local_base=10000.0, sliding_window=512,
          sliding_window_pattern=6, tie_embeddings=True),
     "google/gemma-3-1b-pt", "google/gemma-3-1b-it")

# GPT-NeoX family: LayerNorm, GELU MLP, biases, partial rotary, parallel residual
_neox = dict(architecture="gpt_neox", block_size=2048, vocab_size=50304, norm_class="LayerNorm", mlp_class="gelu",
               attn_bias=True, mlp_bias=True, rotary_percentage=0.25, parallel_residual=True)

# Pythia (https://huggingface.co/EleutherAI)
for _size, (_layers, _embd, _heads, _vocab) in {
    "14m": (6, 128, 4, 50304), "31m": (6, 256, 8, 50304), "70m": (6, 512, 8, 50304), "160m": (12, 768, 12, 50304),
    "410m": (24, 1024, 16, 50304), "1b": (16, 2048, 8, 50304), "1.4b": (24, 2048, 16, 50304),
    "2.8b": (32, 2560, 32, 50304), "6.9b": (32, 4096, 32, 50432), "12b": (36, 5120, 40, 50688),
}.items():
    _base = _with(_neox, n_layer=_layers, n_embd=_embd, n_head=_heads, intermediate_size=4 * _embd, vocab_size=_vocab)
    _add(_base, f"EleutherAI/pythia-{_size}", f"EleutherAI/pythia-{_size}-deduped")

# RedPajama-INCITE (https://huggingface.co/togethercomputer): sequential residual, full rotary
_incite = _with(_neox, vocab_size=50432, rotary_percentage=1.0, parallel_residual=False, n_layer=32)
_incite_3b = _with(_incite, n_embd=2560, n_head=32, intermediate_size=10240)
_incite_7b = _with(_incite, n_embd=4096, n_head=32, intermediate_size=16384)
for _kind in ("Base", "Chat", "Instruct"):
    _add(_incite_3b, f"togethercomputer/RedPajama-INCITE-{_kind}-3B-v1")
    _add(_incite_7b, f"togethercomputer/RedPajama-INCITE-7B-{_kind}")

# StableLM alpha (https://huggingface.co/stabilityai)
_stablelm_3b = _with(_neox, block_size=4096, vocab_size=50688, n_layer=16, n_embd=4096, n_head=32, intermediate_size=16384)
_stablelm_7b = _with(_neox, block_size=4096, vocab_size=50432, n_layer=16, n_embd=6144, n_head=48, intermediate_size=24576)
_add(_stablelm_3b, "stabilityai/stablelm-base-alpha-3b", "stabilityai/stablelm-tuned-alpha-3b")
_add(_stablelm_7b, "stabilityai/stablelm-base-alpha-7b", "stabilityai/stablelm-tuned-alpha-7b")

# StableCode (https://huggingface.co/stabilityai): 3B GPT-NeoX, 16k (completion) or 4k context
_stablecode = _with(_neox, vocab_size=49152, n_layer=32, n_embd=2560, n_head=32, intermediate_size=10240)
_add(_with(_stablecode, block_size=16384), "stabilityai/stablecode-completion-alpha-3b")
_add(_with(_stablecode, block_size=4096), "stabilityai/stablecode-completion-alpha-3b-4k",
     "stabilityai/stablecode-instruct-alpha-3b")

# Falcon (https://huggingface.co/tiiuae): parallel residual, GELU, tied embeddings; 7B is MQA with one shared
# norm, 40B/180B are the "new decoder architecture" (8 KV groups, separate attention and MLP norms)
_falcon = dict(architecture="falcon", block_size=2048, vocab_size=65024, norm_class="LayerNorm", mlp_class="gelu",
                 parallel_residual=True, tie_embeddings=True)
_add(_with(_falcon, n_layer=32, n_embd=4544, n_head=71, n_query_groups=1, intermediate_size=18176,
             shared_attention_norm=True), "tiiuae/falcon-7b", "tiiuae/falcon-7b-instruct")
_add(_with(_falcon, n_layer=60, n_embd=8192, n_head=128, n_query_groups=8, intermediate_size=32768),
     "tiiuae/falcon-40b", "tiiuae/falcon-40b-instruct")
_add(_with(_falcon, n_layer=80, n_embd=14848, n_head=232, n_query_groups=8, intermediate_size=59392),
     "tiiuae/falcon-180B", "tiiuae/falcon-180B-chat")

name_to_config: dict[str, Config] = {name: Config(**fields) for name, fields in _table.items()}
configs: list[Config] = list(name_to_config.values())
