"""Model and conversion parity with Hugging Face `transformers` on tiny random configs, one per layout.

Each case goes through the functions the scripts run: HF folder -> convert_hf_checkpoint -> load_model, logits
compared with transformers'; then convert_lit_checkpoint -> AutoModelForCausalLM.from_pretrained, logits again.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")

from lit_gpt.checkpoint import load_model, load_weights, save_weights  # noqa: E402
from lit_gpt.config import Config  # noqa: E402
from lit_gpt.convert import convert_hf_checkpoint, convert_lit_checkpoint, fuse_qkv, split_qkv  # noqa: E402
from lit_gpt.utils import UserError  # noqa: E402

_LLAMA = dict(vocab_size=96, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
              max_position_embeddings=64)

LAYOUTS = {
    "llama_mha": ("LlamaConfig", dict(_LLAMA, num_key_value_heads=4)),
    # GQA + RoPE base + linear RoPE scaling (LongChat's condensed positions, Code Llama's base)
    "llama_gqa_condensed": ("LlamaConfig", dict(
        _LLAMA, num_key_value_heads=2, rope_parameters={"rope_type": "linear", "factor": 4.0, "rope_theta": 1e6})),
    "mistral_sliding_window": ("MistralConfig", dict(_LLAMA, num_key_value_heads=2, sliding_window=5)),
    "smollm2_tied": ("LlamaConfig", dict(_LLAMA, num_key_value_heads=2, tie_word_embeddings=True,
                                         rope_parameters={"rope_type": "default", "rope_theta": 100000.0})),
    # Pythia/StableLM/StableCode: parallel residual, partial rotary
    "gpt_neox_parallel": ("GPTNeoXConfig", dict(
        vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        max_position_embeddings=64, use_parallel_residual=True,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.25})),
    # RedPajama-INCITE: sequential residual, full rotary
    "gpt_neox_sequential": ("GPTNeoXConfig", dict(
        vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        max_position_embeddings=64, use_parallel_residual=False,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 1.0})),
    "falcon_7b_style": ("FalconConfig", dict(
        vocab_size=96, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, multi_query=True,
        new_decoder_architecture=False, parallel_attn=True, bias=False, max_position_embeddings=64)),
    "falcon_40b_style": ("FalconConfig", dict(
        vocab_size=96, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_kv_heads=2,
        new_decoder_architecture=True, parallel_attn=True, bias=False, max_position_embeddings=64)),
}


def make_hf_checkpoint(tmp_path: Path, layout: str, seed: int = 0, layouts: dict[str, tuple[str, dict]] = LAYOUTS,
                       matrix_std: float | None = None) -> tuple[Path, torch.nn.Module]:
    """A random transformers model of `layouts[layout]` saved to tmp_path/layout; `matrix_std` replaces the
    initializer's small weights (std 0.02: near-uniform next-token choices) with larger ones."""
    config_class, kwargs = layouts[layout]
    hf_config = getattr(transformers, config_class)(**kwargs)
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(hf_config, dtype=torch.float32, attn_implementation="eager")
    with torch.no_grad():  # random LayerNorm/RMSNorm gains and biases, so a swapped or missing one shows
        for name, p in model.named_parameters():
            if p.ndim == 1:
                p.copy_(torch.randn_like(p) * 0.5 + (1.0 if name.endswith("weight") else 0.0))
            elif matrix_std is not None:
                p.normal_(std=matrix_std)
    model.eval()
    out = tmp_path / layout
    model.save_pretrained(out)
    return out, model


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_logits_match_transformers_both_ways(tmp_path: Path, layout: str) -> None:
    hf_dir, hf_model = make_hf_checkpoint(tmp_path, layout)
    convert_hf_checkpoint(hf_dir, dtype=torch.float32)
    model = load_model(hf_dir).eval()

    idx = torch.randint(0, 96, (2, 17), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = hf_model(idx).logits
        actual = model(idx)
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5)

    out_dir = tmp_path / "back"
    convert_lit_checkpoint(hf_dir, out_dir)
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(out_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(idx).logits, expected, rtol=1e-5, atol=1e-5)
    # the round trip reproduces every tensor exactly, not just close logits
    original = hf_model.state_dict()
    for name, tensor in reloaded.state_dict().items():
        torch.testing.assert_close(tensor, original[name], rtol=0, atol=0, msg=name)


def test_sliding_window_changes_logits_beyond_window(tmp_path: Path) -> None:
    """Guards the mask itself: with a window of 5, positions past it must see a different context."""
    hf_dir, _ = make_hf_checkpoint(tmp_path, "mistral_sliding_window")
    convert_hf_checkpoint(hf_dir, dtype=torch.float32)
    windowed = load_model(hf_dir).eval()
    full_config = Config(**{**windowed.config.__dict__, "sliding_window": None})
    full = type(windowed)(full_config)
    full.load_state_dict(windowed.state_dict())
    idx = torch.randint(0, 96, (1, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = windowed(idx), full(idx)
    torch.testing.assert_close(a[:, :5], b[:, :5])
    assert (a[:, 5:] - b[:, 5:]).abs().max() > 1e-3


def test_sharded_and_bin_checkpoints_convert(tmp_path: Path) -> None:
    hf_dir, hf_model = make_hf_checkpoint(tmp_path, "llama_gqa_condensed")
    sharded = tmp_path / "sharded"
    hf_model.save_pretrained(sharded, max_shard_size="20KB")
    assert json.loads((sharded / "model.safetensors.index.json").read_text())["weight_map"]
    assert len(list(sharded.glob("model-*.safetensors"))) > 2

    as_bin = tmp_path / "bin"
    as_bin.mkdir()
    (as_bin / "config.json").write_text((hf_dir / "config.json").read_text())
    torch.save(hf_model.state_dict(), as_bin / "pytorch_model.bin")

    # sharded .bin as older repos publish it: pytorch_model-0000N-of-0000M.bin plus its index
    sharded_bin = tmp_path / "sharded_bin"
    sharded_bin.mkdir()
    (sharded_bin / "config.json").write_text((hf_dir / "config.json").read_text())
    state = hf_model.state_dict()
    names = sorted(state)
    parts = [names[: len(names) // 2], names[len(names) // 2 :]]
    weight_map = {}
    for n, part in enumerate(parts, 1):
        file = f"pytorch_model-{n:05d}-of-{len(parts):05d}.bin"
        torch.save({k: state[k] for k in part}, sharded_bin / file)
        weight_map.update(dict.fromkeys(part, file))
    (sharded_bin / "pytorch_model.bin.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))

    idx = torch.randint(0, 96, (1, 11), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = hf_model(idx).logits
    for folder in (sharded, as_bin, sharded_bin):
        convert_hf_checkpoint(folder, dtype=torch.float32)
        with torch.no_grad():
            torch.testing.assert_close(load_model(folder).eval()(idx), expected, rtol=1e-5, atol=1e-5, msg=str(folder))
    reference = load_weights(sharded)
    for folder in (as_bin, sharded_bin):
        for name, tensor in load_weights(folder).items():
            torch.testing.assert_close(tensor, reference[name], rtol=0, atol=0)


def test_model_name_picks_the_named_config(tmp_path: Path) -> None:
    hf_dir, _ = make_hf_checkpoint(tmp_path, "smollm2_tied")
    # a folder whose config.json is not read: --model_name decides the shapes, so a mismatch is refused
    with pytest.raises(UserError, match="do not match the config 'SmolLM2-135M'"):
        convert_hf_checkpoint(hf_dir, model_name="SmolLM2-135M")
    assert not (hf_dir / "lit_model.safetensors").exists()
    with pytest.raises(UserError, match="no config named"):
        convert_hf_checkpoint(hf_dir, model_name="SmolLM2-9B")

    # the smallest named config, with weights made by transformers from the HF config it mirrors
    named = Config.from_name("pythia-14m")
    hf_model = transformers.AutoModelForCausalLM.from_config(
        transformers.GPTNeoXConfig(**named.to_hf_config()), dtype=torch.float32).eval()
    folder = tmp_path / "pythia"
    hf_model.save_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "model_type": "not-a-known-type"}))
    with pytest.raises(UserError):  # derived from config.json, it is refused ...
        convert_hf_checkpoint(folder)
    convert_hf_checkpoint(folder, model_name="pythia-14m")  # ... named, config.json is not consulted
    assert Config.from_checkpoint(folder) == named
    idx = torch.randint(0, 1000, (1, 9), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.testing.assert_close(load_model(folder).eval()(idx), hf_model(idx).logits, rtol=1e-5, atol=1e-5)


def test_dtype_option_casts_weights(tmp_path: Path) -> None:
    hf_dir, _ = make_hf_checkpoint(tmp_path, "smollm2_tied")
    convert_hf_checkpoint(hf_dir, dtype=torch.bfloat16)
    assert {t.dtype for t in load_weights(hf_dir).values()} == {torch.bfloat16}
    # tied: the head is stored once, as the embedding
    assert "lm_head.weight" not in load_weights(hf_dir)
    model = load_model(hf_dir)
    assert model.lm_head.weight is model.embed.weight


@pytest.mark.parametrize("n_head,n_query_groups", [(4, 4), (4, 1), (8, 2)])
def test_split_and_fuse_qkv_are_inverse(n_head: int, n_query_groups: int) -> None:
    config = Config(n_embd=32, n_head=n_head, n_query_groups=n_query_groups, head_size=8)
    rows = (n_head + 2 * n_query_groups) * 8
    qkv = torch.randn(rows, 32)
    q, k, v = split_qkv(qkv, config)
    assert q.shape == (n_head * 8, 32) and k.shape == v.shape == (n_query_groups * 8, 32)
    torch.testing.assert_close(fuse_qkv(q, k, v, config), qkv, rtol=0, atol=0)


def test_refuses_missing_extra_and_misshaped_tensors(tmp_path: Path) -> None:
    hf_dir, hf_model = make_hf_checkpoint(tmp_path, "llama_mha")
    state = hf_model.state_dict()

    def write(name: str, tensors: dict[str, torch.Tensor]) -> Path:
        folder = tmp_path / name
        folder.mkdir()
        (folder / "config.json").write_text((hf_dir / "config.json").read_text())
        save_weights(tensors, folder / "model.safetensors")
        return folder

    missing = write("missing", {k: v for k, v in state.items() if "layers.1.mlp.up_proj" not in k})
    with pytest.raises(UserError, match=r"missing \['blocks.1.mlp.fc_2.weight'\]"):
        convert_hf_checkpoint(missing)
    extra = write("extra", {**state, "model.layers.0.self_attn.q_norm.weight": torch.ones(8)})
    with pytest.raises(UserError, match="q_norm"):
        convert_hf_checkpoint(extra)
    shape = write("shape", {**state, "model.norm.weight": torch.ones(31)})
    with pytest.raises(UserError, match=r"norm.weight: \(31,\) != \(32,\)"):
        convert_hf_checkpoint(shape)
    for folder in (missing, extra, shape):
        assert not (folder / "lit_model.safetensors").exists()


def test_refuses_non_checkpoints_and_unsupported_architectures(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="is not a folder"):
        convert_hf_checkpoint(tmp_path / "nope")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "config.json").write_text(json.dumps({"model_type": "llama", **_LLAMA}))
    with pytest.raises(UserError, match="has no Hugging Face weights"):
        convert_hf_checkpoint(empty)
    (empty / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(UserError, match="model_type 'bert' is not supported"):
        convert_hf_checkpoint(empty)
    (empty / "config.json").write_text(json.dumps({"model_type": "llama", **_LLAMA, "rope_scaling": {
        "rope_type": "yarn", "factor": 2.0}}))
    with pytest.raises(UserError, match="RoPE scaling 'yarn' is not supported"):
        convert_hf_checkpoint(empty)
