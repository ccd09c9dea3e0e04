"""The model on its own: KV-cached generation equals uncached generation; config table and round trips; the path
and file helpers every script uses."""
from __future__ import annotations

import dataclasses
import os
import stat
from pathlib import Path

import pytest
import torch

from lit_gpt.config import Config, configs, name_to_config
from lit_gpt.generate import generate, sample
from lit_gpt.model import GPT
from lit_gpt.utils import UserError, atomic_path, atomic_write_text, resolve_checkpoint_dir, resolve_data_dir

TINY = dict(vocab_size=64, n_layer=2, n_embd=32, n_head=4, intermediate_size=48, block_size=64)
TINY_LAYOUTS = {
    "llama_gqa": Config(**TINY, n_query_groups=2),
    "mistral_window": Config(**TINY, architecture="mistral", n_query_groups=2, sliding_window=6),
    "gpt_neox": Config(**TINY, architecture="gpt_neox", norm_class="LayerNorm", mlp_class="gelu", attn_bias=True,
                       mlp_bias=True, rotary_percentage=0.25, parallel_residual=True),
    "falcon_mqa": Config(**TINY, architecture="falcon", norm_class="LayerNorm", mlp_class="gelu", n_query_groups=1,
                         parallel_residual=True, shared_attention_norm=True, tie_embeddings=True),
}


def _model(config: Config) -> GPT:
    torch.manual_seed(0)
    model = GPT(config).eval()
    with torch.no_grad():  # larger random weights than the default init: varied, confident next-token choices
        for p in model.parameters():
            if p.ndim == 2:
                p.normal_(std=0.3)
    return model


@pytest.mark.parametrize("layout", list(TINY_LAYOUTS))
def test_kv_cache_generation_equals_uncached(layout: str) -> None:
    model = _model(TINY_LAYOUTS[layout])
    prompt = torch.tensor([3, 17, 42, 5, 9])
    cached = generate(model, prompt, max_new_tokens=20, top_k=1)
    uncached = generate(model, prompt, max_new_tokens=20, top_k=1, use_kv_cache=False)
    assert cached.tolist() == uncached.tolist()
    assert len(set(cached[5:].tolist())) > 1  # a degenerate repeat of one token would prove little

    # sampling too, given the same random stream
    a = generate(model, prompt, 20, temperature=1.0, top_k=10, generator=torch.Generator().manual_seed(3))
    b = generate(model, prompt, 20, temperature=1.0, top_k=10, use_kv_cache=False,
                 generator=torch.Generator().manual_seed(3))
    assert a.tolist() == b.tolist()


@pytest.mark.parametrize("layout", list(TINY_LAYOUTS))
def test_cached_step_logits_equal_full_forward(layout: str) -> None:
    model = _model(TINY_LAYOUTS[layout])
    idx = torch.randint(0, 64, (1, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        full = model(idx)
        model.set_kv_cache(batch_size=1, max_seq_length=16)
        prefill = model(idx[:, :9], torch.arange(9))
        steps = [model(idx[:, t : t + 1], torch.tensor([t])) for t in range(9, 16)]
        model.clear_kv_cache()
    torch.testing.assert_close(torch.cat([prefill, *steps], dim=1), full, rtol=1e-5, atol=1e-5)


def test_generation_stops_at_the_first_stop_token() -> None:
    model = _model(TINY_LAYOUTS["llama_gqa"])
    prompt = torch.tensor([3, 17, 42])
    free = generate(model, prompt, max_new_tokens=10, top_k=1).tolist()
    stop_ids = {free[7], free[5]}  # the fifth and third generated tokens
    first = next(i for i in range(3, len(free)) if free[i] in stop_ids)
    assert first <= 5
    stopped = generate(model, prompt, max_new_tokens=10, top_k=1, stop_ids=stop_ids)
    assert stopped.tolist() == free[: first + 1]


def test_generation_refuses_to_exceed_context() -> None:
    model = _model(TINY_LAYOUTS["llama_gqa"])
    with pytest.raises(ValueError, match="exceeds the model's context of 64"):
        generate(model, torch.arange(60), max_new_tokens=10)


def test_sample_top_k_and_greedy() -> None:
    logits = torch.tensor([0.0, 5.0, 4.0, -1.0])
    assert int(sample(logits, temperature=0)) == 1
    assert int(sample(logits, top_k=1)) == 1
    draws = {int(sample(logits, top_k=2, generator=torch.Generator().manual_seed(s))) for s in range(50)}
    assert draws == {1, 2}


def test_max_seq_length_bounds_and_resizes_rope_cache() -> None:
    model = GPT(TINY_LAYOUTS["llama_gqa"])
    model.max_seq_length = 16
    assert model.cos.shape == (16, 8)
    with pytest.raises(ValueError, match="exceeds max_seq_length=16"):
        model(torch.zeros(1, 17, dtype=torch.long))
    with pytest.raises(ValueError, match="exceeds the model's block_size 64"):
        model.max_seq_length = 65


# ------------------------------------------------------------------------------------ configs


def test_every_named_config_round_trips_through_hf_config_json() -> None:
    for config in configs:
        back = Config.from_hf_config(config.to_hf_config(), name=config.name)
        assert dataclasses.replace(back, hf_repo_id=config.hf_repo_id) == config, config.name


def test_named_configs_cover_the_promised_families_at_2048_tokens() -> None:
    repos = {c.hf_repo_id for c in configs}
    for repo in ("meta-llama/Llama-2-70b-chat-hf", "stabilityai/FreeWilly2", "stabilityai/stablecode-instruct-alpha-3b",
                 "tiiuae/falcon-180B", "openlm-research/open_llama_13b", "lmsys/vicuna-33b-v1.3",
                 "lmsys/longchat-13b-16k", "togethercomputer/RedPajama-INCITE-7B-Chat", "EleutherAI/pythia-14m",
                 "EleutherAI/pythia-12b-deduped", "stabilityai/stablelm-tuned-alpha-7b", "garage-bAInd/Platypus2-70B",
                 "NousResearch/Nous-Hermes-llama-2-7b", "codellama/CodeLlama-34b-Instruct-hf",
                 "mistralai/Mistral-7B-Instruct-v0.1", "HuggingFaceTB/SmolLM2-1.7B-Instruct"):
        assert repo in repos, repo
    assert all(c.block_size >= 2048 for c in configs)
    assert all(c.hf_repo_id.endswith("/" + c.name) for c in configs)
    # spot checks of family features that are config data
    assert name_to_config["longchat-7b-16k"].rope_condense_ratio == 8
    assert name_to_config["CodeLlama-7b-hf"].rope_base == 1e6
    assert name_to_config["Mistral-7B-v0.1"].sliding_window == 4096
    assert name_to_config["falcon-7b"].n_query_groups == 1 and name_to_config["falcon-7b"].shared_attention_norm
    assert name_to_config["Llama-2-70b-hf"].n_query_groups == 8
    assert name_to_config["SmolLM2-135M-Instruct"].tie_embeddings


def test_parameter_counts_of_published_sizes() -> None:
    """Counting parameters on the meta device catches a wrong shape in the table."""
    expected = {"Llama-2-7b-hf": 6.74e9, "pythia-70m": 70.4e6, "falcon-7b": 6.92e9, "Mistral-7B-v0.1": 7.24e9,
                "SmolLM2-135M": 134.5e6, "Llama-2-70b-hf": 68.98e9}
    for name, count in expected.items():
        with torch.device("meta"):
            model = GPT(Config.from_name(name))
        assert sum(p.numel() for p in model.parameters()) == pytest.approx(count, rel=0.005), name


def test_from_name_and_errors(tmp_path: Path) -> None:
    assert Config.from_name("meta-llama/Llama-2-7b-hf") == Config.from_name("Llama-2-7b-hf")
    assert Config.from_name("pythia-14m", n_layer=1).n_layer == 1
    # derived fields follow an override instead of keeping the base's value
    assert Config.from_name("pythia-14m", n_head=8).head_size == 16
    with pytest.raises(UserError, match="no config named 'llama-9'"):
        Config.from_name("llama-9")
    with pytest.raises(UserError, match="is not a converted checkpoint"):
        Config.from_checkpoint(tmp_path)
    config = Config.from_name("SmolLM2-135M")
    config.save(tmp_path)
    assert Config.from_checkpoint(tmp_path) == config


def test_checkpoint_dir_accepts_a_bare_repo_id(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "checkpoints" / "meta-llama" / "Llama-2-7b-hf").mkdir(parents=True)
    assert resolve_checkpoint_dir("meta-llama/Llama-2-7b-hf") == Path("checkpoints/meta-llama/Llama-2-7b-hf")
    assert resolve_checkpoint_dir("checkpoints/meta-llama/Llama-2-7b-hf") == Path("checkpoints/meta-llama/Llama-2-7b-hf")
    assert resolve_checkpoint_dir("other/model") == Path("other/model")


def test_walkthrough_data_dir_slash_data_means_the_prepared_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                   capsys: pytest.CaptureFixture) -> None:
    monkeypatch.chdir(tmp_path)
    if Path("/data/csv").exists():
        pytest.skip("this machine has a real /data/csv")
    assert resolve_data_dir("/data/csv") == Path("/data/csv")  # nothing to fall back to: the error names it
    (tmp_path / "data" / "csv").mkdir(parents=True)
    assert resolve_data_dir("/data/csv") == Path("data/csv")
    assert "using data/csv" in capsys.readouterr().err
    assert resolve_data_dir("/elsewhere/csv") == Path("/elsewhere/csv")


def test_atomic_writes_get_the_usual_file_mode(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
        with atomic_path(tmp_path / "b.bin") as tmp:
            tmp.write_bytes(b"x")
    finally:
        os.umask(old)
    # as open() would have made them, not mkstemp's owner-only 0600: checkpoints are shared between users
    assert {stat.S_IMODE((tmp_path / n).stat().st_mode) for n in ("a.txt", "b.bin")} == {0o644}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.bin"]


def test_activation_checkpointing_gives_the_same_loss_and_gradients() -> None:
    model = _model(TINY_LAYOUTS["mistral_window"]).train()
    idx = torch.randint(0, 64, (2, 16), generator=torch.Generator().manual_seed(0))
    grads = []
    for checkpointing in (False, True):
        model.zero_grad()
        model.activation_checkpointing = checkpointing
        loss = model(idx).logsumexp(-1).mean()
        loss.backward()
        grads.append((loss.detach(), [p.grad.clone() for p in model.parameters()]))
    torch.testing.assert_close(grads[0][0], grads[1][0], rtol=0, atol=0)
    for a, b in zip(grads[0][1], grads[1][1]):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
