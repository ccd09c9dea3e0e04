"""LoRA: starts equal to the base, merges exactly, trains only adapters, adapts exactly the intended weights."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lit_gpt.config import Config
from lit_gpt.lora import LoRAConfig, LoRALinear, apply_lora, load_lora_into, lora_state_dict, merge_lora, save_lora
from lit_gpt.model import GPT
from lit_gpt.utils import UserError

CONFIG = Config(vocab_size=64, n_layer=2, n_embd=32, n_head=4, n_query_groups=2, intermediate_size=48, block_size=32)
IDX = torch.randint(0, 64, (2, 12), generator=torch.Generator().manual_seed(0))
ALL = dict(lora_query=True, lora_key=True, lora_value=True, lora_projection=True, lora_mlp=True, lora_head=True)


def _base() -> GPT:
    torch.manual_seed(0)
    return GPT(CONFIG).eval()


def _lora(**flags) -> GPT:
    model = apply_lora(_base(), LoRAConfig(lora_r=4, lora_alpha=8, lora_dropout=0.0, **flags)).eval()
    return model


def test_zero_b_equals_base_and_keeps_weight_names() -> None:
    base = _base()
    model = _lora(**ALL)
    with torch.no_grad():
        torch.testing.assert_close(model(IDX), base(IDX), rtol=0, atol=0)
    # a base checkpoint loads into the LoRA model unchanged: only the adapter keys are new
    missing, unexpected = model.load_state_dict(base.state_dict(), strict=False)
    assert not unexpected and set(missing) == set(lora_state_dict(model))


def test_merged_equals_unmerged_and_unmerge_restores() -> None:
    model = _lora(**ALL)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.1)
        before = {k: v.clone() for k, v in model.state_dict().items()}
        unmerged = model(IDX)
        merge_lora(model)
        torch.testing.assert_close(model(IDX), unmerged, rtol=1e-5, atol=1e-5)
        assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items() if k.endswith("weight"))
        for m in model.modules():
            if isinstance(m, LoRALinear):
                m.unmerge()
        for k, v in model.state_dict().items():
            torch.testing.assert_close(v, before[k], rtol=1e-6, atol=1e-6)


def test_only_lora_parameters_get_gradients() -> None:
    model = _lora(**ALL).train()
    loss = model(IDX).logsumexp(-1).mean()
    loss.backward()
    for name, p in model.named_parameters():
        if "lora_" in name:
            assert p.requires_grad and p.grad is not None, name
        else:
            assert not p.requires_grad and p.grad is None, name


@pytest.mark.parametrize("flags,expected", [
    (dict(lora_query=True, lora_value=False), {"attn.query"}),
    (dict(lora_query=True, lora_value=True), {"attn.query", "attn.value"}),
    (dict(lora_query=False, lora_key=True, lora_value=True), {"attn.key", "attn.value"}),
    (ALL, {"attn.query", "attn.key", "attn.value", "attn.proj", "mlp.fc_1", "mlp.fc_2", "mlp.proj", "lm_head"}),
])
def test_each_target_combination_changes_exactly_its_weights(flags: dict, expected: set[str]) -> None:
    """Two optimizer steps, then merge: exactly the targeted base weights differ, in every layer."""
    model = _lora(**flags).train()
    before = {k: v.clone() for k, v in model.state_dict().items() if "lora_" not in k}
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    for _ in range(2):  # the first step only moves B away from zero; the second makes B @ A non-zero everywhere
        optimizer.zero_grad()
        model(IDX).logsumexp(-1).mean().backward()
        optimizer.step()
    merge_lora(model)
    changed = {k for k, v in model.state_dict().items() if k in before and not torch.equal(v, before[k])}
    # "blocks.0.attn.query.weight" -> "attn.query"; "lm_head.weight" -> "lm_head"
    modules = {k.removesuffix(".weight").split(".", 2)[-1] for k in changed}
    assert modules == expected
    per_layer = [k for k in changed if k.startswith("blocks.")]
    assert len(per_layer) == CONFIG.n_layer * len(expected - {"lm_head"})
    assert all(k.endswith(".weight") for k in changed)  # biases are not adapted


def test_adapter_round_trip_carries_its_hyperparameters(tmp_path: Path) -> None:
    config = LoRAConfig(lora_r=2, lora_alpha=3, lora_dropout=0.0, lora_key=True, lora_mlp=True)
    model = apply_lora(_base(), config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_()
    save_lora(model, config, tmp_path / "lit_lora.safetensors")
    fresh = _base()
    assert load_lora_into(fresh, tmp_path / "lit_lora.safetensors") == config
    with torch.no_grad():
        torch.testing.assert_close(fresh.eval()(IDX), model.eval()(IDX), rtol=0, atol=0)

    other = GPT(Config(**{**CONFIG.__dict__, "n_embd": 64, "head_size": None}))
    with pytest.raises(UserError, match="does not fit this model"):
        load_lora_into(other, tmp_path / "lit_lora.safetensors")


def test_config_errors() -> None:
    with pytest.raises(UserError, match="no LoRA target enabled"):
        LoRAConfig(lora_query=False, lora_value=False)
    with pytest.raises(UserError, match="lora_r must be at least 1"):
        LoRAConfig(lora_r=0)
