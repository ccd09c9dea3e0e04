"""Packed-row attention: the CUDA path (FlexAttention with a document block mask, run here uncompiled on CPU) equals
the per-example SDPA loop and a dense masked reference, with GQA, a sliding window, a softcap and examples of very
different lengths. FlexAttention has no backward on CPU: its gradients are compared on CUDA by bench/gpu_check.py;
here the loop's gradients are checked against the reference."""
from __future__ import annotations

import math

import pytest
import torch

from lit_gpt.config import Config
from lit_gpt.model import CausalSelfAttention, apply_rope, build_packed_mask, build_rope_cache
from lit_gpt.varlen import BLOCK, document_block_mask, packed_attention, rows_block_mask

# on CPU FlexAttention runs its uncompiled reference implementation, which is the point here
pytestmark = pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")

# 1 and 2 tokens beside 300: tiny examples inside one 128-block and examples spanning three; the sum is not a
# multiple of 128, so the flex path pads
LENGTHS = (1, 130, 7, 300, 2)


def _qkv(lengths, n_head: int, n_groups: int, hs: int = 16, seed: int = 0, requires_grad: bool = False):
    g = torch.Generator().manual_seed(seed)
    T = sum(lengths)
    q = torch.randn(1, n_head, T, hs, generator=g, requires_grad=requires_grad)  # (B, nh, T, hs)
    k = torch.randn(1, n_groups, T, hs, generator=g, requires_grad=requires_grad)  # (B, ng, T, hs)
    v = torch.randn(1, n_groups, T, hs, generator=g, requires_grad=requires_grad)
    return q, k, v


def _dense_reference(q, k, v, lengths, sliding_window, scale, softcap) -> torch.Tensor:
    """The model's own block-diagonal mask (lit_gpt.model.build_packed_mask) over the whole row, written-out math."""
    positions = torch.cat([torch.arange(n) for n in lengths])[None]  # (1, T)
    mask = build_packed_mask(positions, sliding_window)  # (1, 1, T, T)
    groups = q.size(1) // k.size(1)
    k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)  # (B, nh, T, hs)
    scores = q @ k.transpose(-2, -1) * (scale if scale is not None else 1 / math.sqrt(q.size(-1)))
    if softcap is not None:
        scores = softcap * torch.tanh(scores / softcap)
    return scores.masked_fill(~mask, float("-inf")).softmax(-1) @ v


def _grads(fn, q, k, v) -> tuple[torch.Tensor, list[torch.Tensor]]:
    y = fn(q, k, v)
    weights = torch.linspace(-1, 1, y.numel()).view_as(y)  # a loss that weighs every output differently
    return y.detach(), list(torch.autograd.grad((y * weights).sum(), (q, k, v)))


@pytest.mark.parametrize("heads", [(4, 4), (4, 2), (4, 1)], ids=["mha", "gqa", "mqa"])
@pytest.mark.parametrize("sliding_window", [None, 5], ids=["causal", "window5"])
@pytest.mark.parametrize("scale,softcap", [(None, None), (0.3, 2.0)], ids=["plain", "scale_softcap"])
def test_flex_equals_loop_and_dense_reference(heads, sliding_window, scale, softcap) -> None:
    q, k, v = _qkv(LENGTHS, *heads, requires_grad=True)
    options = dict(sliding_window=sliding_window, scale=scale, softcap=softcap)
    y_ref, g_ref = _grads(lambda *t: _dense_reference(*t, LENGTHS, **options), q, k, v)
    y, g = _grads(lambda *t: packed_attention(*t, LENGTHS, backend="loop", **options), q, k, v)
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-5)
    for name, a, b in zip("qkv", g, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=f"d{name}")
    with torch.no_grad():  # FlexAttention refuses inputs that require grad on CPU
        y = packed_attention(q, k, v, LENGTHS, backend="flex", **options)
    assert y.shape == q.shape
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-5)


def test_one_example_is_plain_causal_attention() -> None:
    q, k, v = _qkv((200,), 4, 2)
    expected = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
    for backend in ("loop", "flex"):
        torch.testing.assert_close(packed_attention(q, k, v, (200,), backend=backend), expected, rtol=1e-5, atol=1e-5)


def test_no_attention_across_examples() -> None:
    """Change every key and value of one example: the other examples' outputs stay exactly the same."""
    q, k, v = _qkv(LENGTHS, 4, 2)
    before = packed_attention(q, k, v, LENGTHS, backend="flex")
    a, b = LENGTHS[0] + LENGTHS[1], sum(LENGTHS[:3])  # the third example, tokens a..b
    k2, v2 = k.clone(), v.clone()
    k2[:, :, a:b] += 3.0
    v2[:, :, a:b] -= 2.0
    after = packed_attention(q, k2, v2, LENGTHS, backend="flex")
    torch.testing.assert_close(after[:, :, :a], before[:, :, :a], rtol=0, atol=0)
    torch.testing.assert_close(after[:, :, b:], before[:, :, b:], rtol=0, atol=0)
    assert (after[:, :, a:b] - before[:, :, a:b]).abs().max() > 1e-2


def test_block_mask_skips_the_tiles_no_query_sees() -> None:
    """The kernel's sparsity: a tile is computed iff some query of it sees some key of it (checked pair by pair),
    so examples that share no 128-block cost nothing against each other."""
    lengths = (256, 256, 100, 156)  # 768 tokens, 6 x 6 tiles
    mask = document_block_mask(lengths, None, torch.device("cpu"))
    positions = torch.cat([torch.arange(n) for n in lengths])[None]
    dense = build_packed_mask(positions, None)[0, 0]  # (T, T)
    n = sum(lengths) // BLOCK
    expected = dense.view(n, BLOCK, n, BLOCK).any(dim=3).any(dim=1)  # (tiles, tiles): any visible pair
    assert torch.equal(mask.to_dense()[0, 0].bool(), expected)
    # 9 of 36 tiles: 3 causal ones for each 256-token example, and 3 for the last two (sharing tiles 4 and 5)
    assert int(expected.sum()) == 9


def test_block_mask_is_built_once_per_row() -> None:
    document_block_mask.cache_clear()
    first = document_block_mask((100, 28), 4, torch.device("cpu"))
    assert document_block_mask((100, 28), 4, torch.device("cpu")) is first
    assert document_block_mask((28, 100), 4, torch.device("cpu")) is not first


def test_same_output_as_the_models_attention_over_a_packed_row() -> None:
    """A drop-in for the loop in lit_gpt.model.CausalSelfAttention: the layer's output for a row of lengths equals
    its projections through `packed_attention`, on either backend."""
    config = Config(vocab_size=64, n_layer=1, n_embd=32, n_head=4, n_query_groups=2, intermediate_size=48,
                    block_size=512)
    torch.manual_seed(0)
    attn = CausalSelfAttention(config, 0)
    T = sum(LENGTHS)
    x = torch.randn(1, T, config.n_embd)
    positions = torch.cat([torch.arange(n) for n in LENGTHS])
    cos, sin = (t[positions] for t in build_rope_cache(512, config))
    with torch.no_grad():
        expected = attn(x, cos, sin, LENGTHS, None)
        q, k, v = _projections(attn, x, cos, sin)
    for backend in ("loop", "flex"):
        with torch.no_grad():
            y = packed_attention(q, k, v, LENGTHS, backend=backend)  # (B, nh, T, hs)
        y = y.transpose(1, 2).reshape(1, T, config.n_head * config.head_size)  # (B, T, nh * hs)
        torch.testing.assert_close(attn.proj(y), expected, rtol=1e-5, atol=1e-5)


def _projections(attn: CausalSelfAttention, x, cos, sin):
    """q, k, v as CausalSelfAttention.forward computes them."""
    B, T, _ = x.shape
    hs = attn.head_size
    q = apply_rope(attn.query(x).view(B, T, attn.n_head, hs).transpose(1, 2), cos, sin)  # (B, nh, T, hs)
    k = apply_rope(attn.key(x).view(B, T, attn.n_query_groups, hs).transpose(1, 2), cos, sin)  # (B, ng, T, hs)
    v = attn.value(x).view(B, T, attn.n_query_groups, hs).transpose(1, 2)  # (B, ng, T, hs)
    return q, k, v


def test_lengths_must_partition_the_row() -> None:
    q, k, v = _qkv((4, 4), 2, 2)
    with pytest.raises(ValueError, match="do not partition"):
        packed_attention(q, k, v, (4, 3))
    with pytest.raises(ValueError, match="do not partition"):
        packed_attention(q, k, v, (8, 0))


def test_auto_picks_the_loop_on_cpu(monkeypatch) -> None:
    import lit_gpt.varlen as varlen

    q, k, v = _qkv((3, 5), 2, 2)
    monkeypatch.setattr(varlen, "_flex", lambda *a: pytest.fail("flex ran on CPU"))
    packed_attention(q, k, v, (3, 5))


@pytest.mark.parametrize("sliding_window", [None, 5])
def test_a_block_mask_of_several_rows_positions(sliding_window) -> None:
    """Rows packed differently in one batch, given by their positions as the model has them: each row equals the
    dense reference of its own examples."""
    rows = ((1, 130, 7, 102), (200, 40))  # 240 tokens each: padded to 256
    q, k, v = (torch.cat(pair) for pair in zip(_qkv((240,), 4, 2, seed=1), _qkv((240,), 4, 2, seed=2)))  # B = 2
    positions = torch.stack([torch.cat([torch.arange(n) for n in row]) for row in rows])  # (2, 240)
    mask = rows_block_mask(positions, sliding_window)
    assert mask.seq_lengths == (256, 256)
    y = packed_attention(q, k, v, mask, softcap=2.0)
    for b, row in enumerate(rows):
        expected = _dense_reference(q[b : b + 1], k[b : b + 1], v[b : b + 1], row, sliding_window, None, 2.0)
        torch.testing.assert_close(y[b : b + 1], expected, rtol=1e-5, atol=1e-5)
