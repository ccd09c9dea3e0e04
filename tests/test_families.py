"""The families added after 2023 against `transformers`, on tiny random configs, through the functions the scripts run.

For each layout: HF folder -> convert_hf_checkpoint -> load_model gives transformers' logits, and
convert_lit_checkpoint gives back a folder transformers loads with the same logits and tensors; greedy generation
through our KV cache equals transformers' `generate` past the sliding window and past the original RoPE context;
LoRA on every projection merges and exports (PEFT, on the fused Hugging Face names where the family fuses) to the
same outputs.
"""
from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")

from safetensors import safe_open  # noqa: E402
from test_convert import make_hf_checkpoint  # noqa: E402

from lit_gpt.checkpoint import load_model  # noqa: E402
from lit_gpt.config import Config, name_to_config  # noqa: E402
from lit_gpt.convert import convert_hf_checkpoint, convert_lit_checkpoint  # noqa: E402
from lit_gpt.export import PEFT_CONFIG_NAME, PEFT_WEIGHTS_NAME, export_peft, merge_lora_checkpoint  # noqa: E402
from lit_gpt.generate import generate  # noqa: E402
from lit_gpt.lora import LoRAConfig, apply_lora, save_lora  # noqa: E402
from lit_gpt.model import GPT  # noqa: E402
from lit_gpt.utils import UserError  # noqa: E402

_BASE = dict(vocab_size=96, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=64, pad_token_id=0, bos_token_id=1, eos_token_id=2)
# Llama 3.1+: wavelengths of head_size 8 at base 5e5 are 6, 167, 4443, 118000 positions: with an original context of
# 16, one is interpolated (between 16/4 and 16/1), three divided by the factor
_LLAMA3_ROPE = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
                "high_freq_factor": 4.0, "original_max_position_embeddings": 16}
# Phi-3.5 / Phi-4-mini: LongRoPE past an original context of 16, on half of each 16-channel head (4 frequencies)
_LONGROPE = {"rope_type": "longrope", "rope_theta": 10000.0, "partial_rotary_factor": 0.5,
             "short_factor": [1.0, 1.3, 2.1, 3.0], "long_factor": [1.5, 2.5, 6.0, 11.0]}

FAMILIES = {
    "llama3": ("LlamaConfig", dict(_BASE, rope_parameters=_LLAMA3_ROPE)),
    "llama3_2_tied": ("LlamaConfig", dict(_BASE, rope_parameters=_LLAMA3_ROPE, tie_word_embeddings=True)),
    # the window settings are present but off, as in every Qwen 2.5 config.json
    "qwen2_5": ("Qwen2Config", dict(_BASE, tie_word_embeddings=True, use_sliding_window=False, sliding_window=4,
                                    rope_parameters={"rope_type": "default", "rope_theta": 1e6})),
    "qwen3": ("Qwen3Config", dict(_BASE, head_dim=16)),  # head_dim is not hidden_size / heads
    # Mistral v0.3 / Nemo: no window, head_dim given explicitly (Nemo: 128 with 5120 / 32 = 160)
    "mistral_nemo": ("MistralConfig", dict(_BASE, head_dim=16, sliding_window=None,
                                           rope_parameters={"rope_type": "default", "rope_theta": 1e6})),
    "olmo2": ("Olmo2Config", dict(_BASE)),
    "phi3_window": ("Phi3Config", dict(_BASE, sliding_window=5, original_max_position_embeddings=64)),
    "phi3_longrope": ("Phi3Config", dict(_BASE, hidden_size=64, max_position_embeddings=64,
                                         original_max_position_embeddings=16, rope_parameters=_LONGROPE)),
    "gemma2": ("Gemma2Config", dict(_BASE, head_dim=16, query_pre_attn_scalar=12, sliding_window=5,
                                    attn_logit_softcapping=2.0, final_logit_softcapping=3.0)),
    # every third layer global; the windowed ones have their own RoPE base, the global ones linear scaling
    "gemma3": ("Gemma3TextConfig", dict(
        _BASE, num_hidden_layers=3, head_dim=16, query_pre_attn_scalar=12, sliding_window=5,
        layer_types=["sliding_attention", "sliding_attention", "full_attention"],
        rope_parameters={"sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
                         "full_attention": {"rope_type": "linear", "factor": 2.0, "rope_theta": 1e6}})),
}
# the Config field each layout exercises, so a mapping that drops one fails here rather than passing by accident
FEATURES = {
    "llama3": dict(rope_base=500000.0, block_size=64,
                   rope_scaling={k: v for k, v in _LLAMA3_ROPE.items() if k != "rope_theta"}),
    "llama3_2_tied": dict(tie_embeddings=True),
    "qwen2_5": dict(attn_bias=True, attn_proj_bias=False, sliding_window=None, tie_embeddings=True),
    "qwen3": dict(qk_norm="head", head_size=16),
    "mistral_nemo": dict(head_size=16, sliding_window=None, rope_base=1e6),
    "olmo2": dict(qk_norm="projection", norm_placement="post"),
    "phi3_window": dict(sliding_window=5, sliding_window_pattern=None),
    "phi3_longrope": dict(rotary_percentage=0.5),
    "gemma2": dict(norm_unit_offset=True, norm_placement="pre_post", mlp_class="geglu", gelu_approximate="tanh",
                   scale_embeddings=True, query_pre_attn_scalar=12, attn_logit_softcapping=2.0,
                   final_logit_softcapping=3.0, sliding_window_pattern=2, tie_embeddings=True),
    "gemma3": dict(qk_norm="head", rope_local_base=10000.0, rope_base=1e6, rope_condense_ratio=2.0,
                   sliding_window_pattern=3, block_size=64),
}
IDX = torch.randint(0, 96, (2, 23), generator=torch.Generator().manual_seed(1))  # 23 > window 5 and context 16


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny matmuls gain nothing from threads (see tests/test_export.py)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, torch.nn.Module]]:
    """One converted tiny checkpoint per layout, with its transformers model; the tests only read them."""
    root = tmp_path_factory.mktemp("families")
    out = {}
    for layout in FAMILIES:
        hf_dir, hf_model = make_hf_checkpoint(root, layout, layouts=FAMILIES, matrix_std=0.3)
        convert_hf_checkpoint(hf_dir, dtype=torch.float32)
        out[layout] = hf_dir, hf_model
    return out


def _close(actual: torch.Tensor, expected: torch.Tensor, msg: str = "", tol: float = 1e-5) -> None:
    torch.testing.assert_close(actual, expected, rtol=tol, atol=tol, msg=lambda m: f"{msg}: {m}")


@pytest.mark.parametrize("layout", list(FAMILIES))
def test_logits_match_transformers_both_ways(tmp_path: Path, converted: dict, layout: str) -> None:
    hf_dir, hf_model = converted[layout]
    config = Config.from_checkpoint(hf_dir)
    assert {k: getattr(config, k) for k in FEATURES[layout]} == FEATURES[layout]
    model = load_model(hf_dir).eval()
    with torch.no_grad():
        expected = hf_model(IDX).logits
        _close(model(IDX), expected, tol=5e-5)  # logits of 10-30 (weights of std 0.3): float32 rounding

    out_dir = convert_lit_checkpoint(hf_dir, tmp_path / "back")
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(out_dir, dtype=torch.float32).eval()
    assert type(reloaded) is type(hf_model)
    with torch.no_grad():
        _close(reloaded(IDX).logits, expected, tol=5e-5)
    original = hf_model.state_dict()
    for name, tensor in reloaded.state_dict().items():
        torch.testing.assert_close(tensor, original[name], rtol=0, atol=0, msg=name)
    # and the config read back from the written config.json is ours
    assert Config.from_hf_config(json.loads((out_dir / "config.json").read_text()), name=config.name) == config


@pytest.mark.parametrize("layout", list(FAMILIES))
def test_greedy_generation_with_kv_cache_equals_transformers(converted: dict, layout: str) -> None:
    """30 new tokens after a 6-token prompt: past the window of 5 and the original RoPE context of 16."""
    hf_dir, hf_model = converted[layout]
    model = load_model(hf_dir).eval()
    prompt = torch.tensor([3, 17, 42, 5, 9, 60])
    ours = generate(model, prompt, max_new_tokens=30, top_k=1)
    hf_model.generation_config.eos_token_id = None  # random weights: never stop early
    hf_model.generation_config.pad_token_id = 0
    with torch.no_grad():
        theirs = hf_model.generate(prompt[None], max_new_tokens=30, do_sample=False)[0]
    assert ours.tolist() == theirs.tolist()
    assert len(set(ours[6:].tolist())) > 2  # not a degenerate repeat


@pytest.mark.parametrize("layout", ["llama3", "phi3_longrope", "gemma2", "gemma3"])
def test_the_family_features_change_the_logits(converted: dict, layout: str) -> None:
    """Guards against a feature that transformers and we both ignore: turning each off changes the logits."""
    hf_dir, _ = converted[layout]
    model = load_model(hf_dir).eval()
    config = model.config
    off = {"rope_scaling": None, "attn_logit_softcapping": None, "final_logit_softcapping": None,
           "rope_local_base": config.rope_base, "query_pre_attn_scalar": None, "scale_embeddings": False}
    with torch.no_grad():
        reference = model(IDX)
        for field, value in off.items():
            if getattr(config, field) in (None, False) or getattr(config, field) == value:
                continue
            other = GPT(dataclasses.replace(config, **{field: value}))
            other.load_state_dict(model.state_dict())
            assert (other.eval()(IDX) - reference).abs().max() > 1e-3, field


@pytest.mark.parametrize("layout", ["llama3_2_tied", "qwen2_5", "qwen3", "olmo2", "phi3_longrope", "gemma2", "gemma3"])
def test_lora_on_every_projection_merges_and_exports_to_peft(tmp_path: Path, converted: dict, layout: str) -> None:
    hf_dir, hf_model = converted[layout]
    lora_config = LoRAConfig(lora_r=2, lora_alpha=3, lora_dropout=0.0, lora_query=True, lora_key=True,
                             lora_value=True, lora_projection=True, lora_mlp=True, lora_head=False)
    model = apply_lora(load_model(hf_dir), lora_config).eval()
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(std=1.0)
        expected = model(IDX)
    assert (expected - hf_model(IDX).logits).abs().max() > 1e-3
    lora_path = tmp_path / "lit_lora.safetensors"
    save_lora(model, lora_config, lora_path)

    merged = merge_lora_checkpoint(hf_dir, lora_path, tmp_path / "merged")
    hf_merged = transformers.AutoModelForCausalLM.from_pretrained(convert_lit_checkpoint(merged, tmp_path / "hf"),
                                                                 dtype=torch.float32).eval()
    peft_dir = export_peft(hf_dir, lora_path, tmp_path / "peft")
    base = transformers.AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).eval()
    peft_model = peft.PeftModel.from_pretrained(base, peft_dir).eval()
    with torch.no_grad():
        # logits of 10-30 here: merged weights round differently from the separate low-rank product
        _close(load_model(merged).eval()(IDX), expected, "merged", tol=1e-4)
        _close(hf_merged(IDX).logits, expected, "merged, in transformers", tol=1e-4)
        _close(peft_model(IDX).logits, expected, "peft", tol=1e-4)
    with safe_open(str(peft_dir / PEFT_WEIGHTS_NAME), framework="pt") as f:
        ours = set(f.keys())
    assert ours == {k for k in peft.get_peft_model_state_dict(peft_model) if ".lora_" in k}


def test_phi3_peft_adapter_uses_the_fused_names(tmp_path: Path, converted: dict) -> None:
    hf_dir, _ = converted["phi3_window"]
    lora_config = LoRAConfig(lora_r=2, lora_alpha=3, lora_dropout=0.0, lora_query=True, lora_value=True, lora_mlp=True)
    model = apply_lora(load_model(hf_dir), lora_config)
    save_lora(model, lora_config, tmp_path / "lit_lora.safetensors")
    out = export_peft(hf_dir, tmp_path / "lit_lora.safetensors", tmp_path / "peft")
    adapter = json.loads((out / PEFT_CONFIG_NAME).read_text())
    assert adapter["target_modules"] == ["mlp.down_proj", "mlp.gate_up_proj", "self_attn.qkv_proj"]
    # query + value: rank 2r on qkv_proj; gate + up: rank 2r on gate_up_proj; alpha doubled with them
    assert adapter["rank_pattern"] == {"self_attn.qkv_proj": 4, "mlp.gate_up_proj": 4}
    assert adapter["alpha_pattern"] == {"self_attn.qkv_proj": 6, "mlp.gate_up_proj": 6}
    with safe_open(str(out / PEFT_WEIGHTS_NAME), framework="pt") as f:
        shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    assert shapes["base_model.model.model.layers.0.self_attn.qkv_proj.lora_B.weight"] == (32 + 2 * 16, 4)
    assert shapes["base_model.model.model.layers.0.mlp.gate_up_proj.lora_B.weight"] == (2 * 48, 4)


# ------------------------------------------------------------------------------------ refusals


@pytest.mark.parametrize("change,message", [
    (dict(rope_parameters={"rope_type": "yarn", "factor": 4.0, "rope_theta": 1e6}),
     "RoPE scaling 'yarn' is not supported"),
    (dict(rope_scaling={"type": "dynamic", "factor": 2.0}), "RoPE scaling 'dynamic' is not supported"),
    (dict(use_sliding_window=True, sliding_window=4), "use_sliding_window=true"),
    (dict(hidden_act="gelu"), "hidden_act 'gelu' is not supported"),
])
def test_unsupported_features_are_refused_in_one_line(change: dict, message: str) -> None:
    hf = {"model_type": "qwen2", **_BASE, **change}
    with pytest.raises(UserError, match=message) as error:
        Config.from_hf_config(hf, source="x/config.json")
    assert str(error.value).startswith("x/config.json: ") and "\n" not in str(error.value)


@pytest.mark.parametrize("model_type", ["qwen2_moe", "qwen3_moe", "mixtral", "gemma3", "phimoe", "olmoe"])
def test_other_model_types_are_refused(model_type: str) -> None:
    with pytest.raises(UserError, match=f"model_type '{model_type}' is not supported"):
        Config.from_hf_config({"model_type": model_type, **_BASE})


def test_gemma_layer_patterns_other_than_every_nth_are_refused() -> None:
    hf = {"model_type": "gemma2", **_BASE, "sliding_window": 4,
          "layer_types": ["full_attention", "sliding_attention"]}
    with pytest.raises(UserError, match="is not every n-th layer global"):
        Config.from_hf_config(hf)


# ------------------------------------------------------------------------------------ named configs


def test_parameter_counts_of_published_sizes() -> None:
    """Counted on the meta device against the sizes the model cards publish: catches a wrong shape in the table."""
    expected = {"Llama-3.1-8B": 8.03e9, "Llama-3.2-1B": 1.236e9, "Llama-3.2-3B": 3.213e9, "Llama-3.1-405B": 405.85e9,
                "Qwen2.5-0.5B-Instruct": 0.494e9, "Qwen2.5-7B-Instruct": 7.616e9, "Qwen2.5-72B-Instruct": 72.7e9,
                "Qwen3-0.6B": 0.596e9, "Qwen3-8B": 8.19e9, "Qwen3-32B": 32.8e9, "OLMo-2-1124-7B": 7.30e9,
                "OLMo-2-0425-1B": 1.485e9, "Phi-3-mini-4k-instruct": 3.821e9, "Phi-4-mini-instruct": 3_836_021_760,
                "gemma-2-2b": 2.614e9, "gemma-2-9b": 9.242e9, "gemma-2-27b": 27.227e9, "gemma-3-1b-it": 999_885_952}
    for name, count in expected.items():
        with torch.device("meta"):
            model = GPT(Config.from_name(name))
        assert sum(p.numel() for p in model.parameters()) == pytest.approx(count, rel=0.002), name


def test_named_configs_carry_the_family_features() -> None:
    llama3_1, llama3_2 = name_to_config["Llama-3.1-8B-Instruct"], name_to_config["Llama-3.2-1B-Instruct"]
    assert llama3_1.rope_scaling["rope_type"] == "llama3" and llama3_1.rope_scaling["factor"] == 8
    assert llama3_2.rope_scaling["factor"] == 32 and llama3_2.tie_embeddings and llama3_2.head_size == 64
    assert name_to_config["Meta-Llama-3-8B"].rope_scaling is None
    qwen = name_to_config["Qwen2.5-7B-Instruct"]
    assert qwen.attn_bias and not qwen.attn_proj_bias and qwen.sliding_window is None
    assert name_to_config["Qwen2.5-0.5B-Instruct"].tie_embeddings and not qwen.tie_embeddings
    assert name_to_config["Qwen3-0.6B"].head_size == 128 != 1024 // 16
    phi = name_to_config["Phi-4-mini-instruct"]
    assert phi.rope_n_elem == 96 and len(phi.rope_scaling["long_factor"]) == 48
    assert phi.rope_scaling["attention_factor"] == pytest.approx(1.190238, rel=1e-6)  # sqrt(1 + ln 32 / ln 4096)
    gemma3 = name_to_config["gemma-3-1b-it"]
    assert [gemma3.is_sliding_layer(i) for i in range(6)] == [True] * 5 + [False]
    gemma2 = name_to_config["gemma-2-27b"]
    assert [gemma2.is_sliding_layer(i) for i in range(4)] == [True, False, True, False]
    assert gemma2.query_pre_attn_scalar == 144


# ------------------------------------------------------------------------------------ finetuning


_TRAIN_LAYOUTS = {
    # soft-capped head through the chunked loss, windowed layers, packed rows through explicit masks
    "gemma2": ("Gemma2Config", dict(head_dim=16, query_pre_attn_scalar=16, sliding_window=8,
                                    attn_logit_softcapping=2.0, final_logit_softcapping=3.0)),
    # fused checkpoint weights, partial rotary
    "phi3": ("Phi3Config", dict(partial_rotary_factor=0.5, sliding_window=None)),
}


@pytest.fixture(scope="module")
def train_workspace(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Path]]:
    """Per layout: a tiny converted checkpoint with a real BPE tokenizer and ChatML template, and Alpaca data."""
    from prepare_helpers import CHATML, tiny_bpe_checkpoint

    from lit_gpt.data import ALPACA, prepare

    root = tmp_path_factory.mktemp("train")
    rows = [{"instruction": f"Name color number {i}.", "input": "" if i % 3 else "The sky is blue.",
             "output": ["Red.", "Blue, yellow.", "Green and blue.", "Yellow"][i % 4] * (1 + i % 3)} for i in range(40)]
    (root / "alpaca.json").write_text(json.dumps(rows))
    out = {}
    for layout, (config_class, kwargs) in _TRAIN_LAYOUTS.items():
        checkpoint = tiny_bpe_checkpoint(root / layout, bos=False, chat_template=CHATML)
        hf_config = getattr(transformers, config_class)(
            vocab_size=400, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=256, pad_token_id=0, bos_token_id=0, eos_token_id=1,
            **kwargs)
        torch.manual_seed(0)
        transformers.AutoModelForCausalLM.from_config(hf_config).save_pretrained(checkpoint)
        convert_hf_checkpoint(checkpoint)
        prepare(ALPACA, checkpoint_dir=checkpoint, destination_path=root / f"data_{layout}",
                data_file=root / "alpaca.json", test_split_fraction=0.2)
        out[layout] = {"checkpoint": checkpoint, "data": root / f"data_{layout}"}
    return out


def _finetune(workspace: dict[str, Path], out_dir: Path, **overrides) -> dict:
    from test_finetune import finetune

    settings = dict(checkpoint_dir=workspace["checkpoint"], data_dir=workspace["data"], out_dir=out_dir,
                    precision="32-true", batch_size=4, micro_batch_size=2, warmup_steps=2, learning_rate=1e-2,
                    lora_dropout=0.0, eval_interval=4, eval_iters=2, save_interval=100, lora_query=True,
                    lora_key=True, lora_value=True, lora_projection=True, lora_mlp=True)
    return finetune.setup(finetune.Settings(**(settings | overrides)))


@pytest.mark.parametrize("layout", list(_TRAIN_LAYOUTS))
def test_finetune_packed_chunked_equals_padded_and_generates(train_workspace: dict, tmp_path: Path,
                                                             layout: str) -> None:
    """finetune/lora.py with LoRA on every projection: packed rows with the head in chunks train exactly like padded
    batches with full logits (Gemma 2's soft-capped head and windowed masks included), the loss falls, and
    generate/base.py answers differently with the adapter than without."""
    from test_finetune import generate_script

    workspace = train_workspace[layout]
    common = dict(max_iters=None, epochs=2, eval_iters=8)
    padded = _finetune(workspace, tmp_path / "padded", **common, lm_head_chunk_size=0)
    packed = _finetune(workspace, tmp_path / "packed", **common, packing=True, lm_head_chunk_size=16,
                       override_max_seq_length=128, micro_batch_size=1)
    for a, b in zip(padded["history"], packed["history"], strict=True):
        for key in ("train_loss", "val_loss"):
            if key in a:
                assert b[key] == pytest.approx(a[key], abs=1e-5), (a["step"], key)
    assert padded["final_val_loss"] < 0.9 * padded["initial_val_loss"]

    adapter = tmp_path / "padded" / "lit_lora.safetensors"
    common = dict(prompt="Name color number 3.", top_k=1, max_new_tokens=8, precision="32-true")
    tuned = generate_script.main(workspace["checkpoint"], lora_path=adapter, **common)
    base = generate_script.main(workspace["checkpoint"], prompt_style="chat", **common)
    assert tuned != base, (tuned, base)


def test_qlora_on_fused_phi3_weights_trains(train_workspace: dict, tmp_path: Path) -> None:
    pytest.importorskip("bitsandbytes")
    result = _finetune(train_workspace["phi3"], tmp_path / "qlora", quantize="bnb.nf4", max_iters=40)
    losses = [m["train_loss"] for m in result["history"] if "train_loss" in m]
    assert losses[-1] < 0.9 * losses[0]


# config.json files as the Hub serves them (written by transformers 4.x: rope_theta/rope_scaling at the top level)
HUB_CONFIGS = {
    "Qwen2.5-1.5B-Instruct": {
        "architectures": ["Qwen2ForCausalLM"], "attention_dropout": 0.0, "bos_token_id": 151643, "eos_token_id": 151645,
        "hidden_act": "silu", "hidden_size": 1536, "initializer_range": 0.02, "intermediate_size": 8960,
        "max_position_embeddings": 32768, "max_window_layers": 21, "model_type": "qwen2", "num_attention_heads": 12,
        "num_hidden_layers": 28, "num_key_value_heads": 2, "rms_norm_eps": 1e-06, "rope_theta": 1000000.0,
        "sliding_window": 32768, "tie_word_embeddings": True, "torch_dtype": "bfloat16",
        "transformers_version": "4.43.1", "use_cache": True, "use_sliding_window": False, "vocab_size": 151936},
    "Qwen3-0.6B": {
        "architectures": ["Qwen3ForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
        "bos_token_id": 151643, "eos_token_id": 151645, "head_dim": 128, "hidden_act": "silu", "hidden_size": 1024,
        "initializer_range": 0.02, "intermediate_size": 3072, "max_position_embeddings": 40960,
        "max_window_layers": 28, "model_type": "qwen3", "num_attention_heads": 16, "num_hidden_layers": 28,
        "num_key_value_heads": 8, "rms_norm_eps": 1e-06, "rope_scaling": None, "rope_theta": 1000000,
        "sliding_window": None, "tie_word_embeddings": True, "torch_dtype": "bfloat16",
        "transformers_version": "4.51.0", "use_cache": True, "use_sliding_window": False, "vocab_size": 151936},
    "Llama-3.2-1B-Instruct": {
        "architectures": ["LlamaForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
        "bos_token_id": 128000, "eos_token_id": [128001, 128008, 128009], "head_dim": 64, "hidden_act": "silu",
        "hidden_size": 2048, "initializer_range": 0.02, "intermediate_size": 8192, "max_position_embeddings": 131072,
        "mlp_bias": False, "model_type": "llama", "num_attention_heads": 32, "num_hidden_layers": 16,
        "num_key_value_heads": 8, "pretraining_tp": 1, "rms_norm_eps": 1e-05,
        "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                         "original_max_position_embeddings": 8192, "rope_type": "llama3"},
        "rope_theta": 500000.0, "tie_word_embeddings": True, "torch_dtype": "bfloat16", "use_cache": True,
        "vocab_size": 128256},
    "gemma-3-1b-it": {
        "architectures": ["Gemma3ForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
        "attn_logit_softcapping": None, "bos_token_id": 2, "cache_implementation": "hybrid", "eos_token_id": [1, 106],
        "final_logit_softcapping": None, "head_dim": 256, "hidden_activation": "gelu_pytorch_tanh",
        "hidden_size": 1152, "initializer_range": 0.02, "intermediate_size": 6912, "max_position_embeddings": 32768,
        "model_type": "gemma3_text", "num_attention_heads": 4, "num_hidden_layers": 26, "num_key_value_heads": 1,
        "pad_token_id": 0, "query_pre_attn_scalar": 256, "rms_norm_eps": 1e-06, "rope_local_base_freq": 10000,
        "rope_scaling": None, "rope_theta": 1000000, "sliding_window": 512, "sliding_window_pattern": 6,
        "torch_dtype": "bfloat16", "use_cache": True, "vocab_size": 262144},
}


@pytest.mark.parametrize("name", list(HUB_CONFIGS))
def test_hub_config_json_gives_the_named_config(name: str) -> None:
    derived = Config.from_hf_config(HUB_CONFIGS[name], name=name)
    assert dataclasses.replace(derived, hf_repo_id=name_to_config[name].hf_repo_id) == name_to_config[name]
    # and transformers reads the same file as the same architecture
    hf = transformers.AutoConfig.for_model(**HUB_CONFIGS[name])
    head_size = getattr(hf, "head_dim", None) or hf.hidden_size // hf.num_attention_heads
    assert (hf.num_hidden_layers, hf.hidden_size, head_size) == (derived.n_layer, derived.n_embd, derived.head_size)


@pytest.mark.parametrize("layout", ["gemma2", "gemma3", "qwen3", "olmo2", "phi3_longrope"])
def test_batched_generation_equals_one_prompt_at_a_time(converted: dict, layout: str) -> None:
    """`generate_batch` (left-padded rows through the model's own forward: soft-caps, scaled embeddings, per-layer
    windows and RoPE tables included) gives each prompt's greedy tokens of `generate_tokens` alone."""
    from lit_gpt.generate import generate_batch, generate_tokens

    hf_dir, _ = converted[layout]
    model = load_model(hf_dir).eval()
    g = torch.Generator().manual_seed(3)
    prompts = [torch.randint(0, model.config.vocab_size, (n,), generator=g).tolist() for n in (9, 2, 6)]
    alone = [list(generate_tokens(model, torch.tensor(p), 12, top_k=1)) for p in prompts]
    assert generate_batch(model, prompts, 12) == alone
