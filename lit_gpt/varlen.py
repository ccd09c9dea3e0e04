r"""Attention over a row of packed examples: each example attends causally to itself only.

A packed row holds several examples back to back, given by their lengths (the tuple form of `lit_gpt.model.Mask`):

    row        a a a b b c c c c          lengths (3, 2, 4)
    attention  block-diagonal causal: a sees a, b sees b, c sees c; no token sees another example

Two ways to compute it, picked by device (`backend="auto"`):

- "loop" (CPU): one fused causal SDPA call per example on its own slice of the row. The work is sum(length^2), no
  T x T mask is built, and it is what CPUs run fastest (3-5x faster than the masked kernel at 500-8k tokens).
- "flex" (CUDA): one FlexAttention call (torch.nn.attention.flex_attention, PyTorch's own) for the whole row with
  a document block mask, compiled into a Triton kernel that is tiled like flash attention and skips the tiles
  where no query sees a key (everything off the diagonal blocks). A loop would launch one kernel per example (tens
  per row, each too small to fill a GPU); a (B, 1, T, T) boolean mask rules out the flash kernels altogether.

Why FlexAttention and not SDPA over nested (jagged) tensors: both run flash-like kernels for variable lengths, but
SDPA over jagged tensors takes no `enable_gqa` (a GQA model would have to repeat its keys and values per query
head first), no attention mask besides `is_causal` (no sliding window) and no softcap, and its flash/efficient
backward has been the narrower path across releases. FlexAttention does GQA, a sliding window (a mask_mod), a
softcap (a score_mod) and the custom scale in the same kernel, forward and backward, and exists with this API
from torch 2.5 (checked against 2.11's and 2.13's signatures: flex_attention(q, k, v, score_mod, block_mask, scale,
enable_gqa) and create_block_mask(mask_mod, B, H, Q_LEN, KV_LEN, device)). flash-attn's varlen kernels would be the
optional extra; they are not needed for this.

The flex path takes its mask in either of two forms. From the lengths (`document_block_mask`, cached: every layer
of a forward pass reuses it), or from the rows' positions (`rows_block_mask`, for the model to build once per
forward). The second is the one for `torch.compile`: the lengths are a Python tuple, and a compiled model
specializes on it and compiles again for every new number of examples in a row, while positions are a tensor whose
contents are data to the compiled graph (measured on CPU under aot_eager: 2 graphs for every row layout, against 2
more per new layout with lengths).

On the flex path the row is padded to a multiple of 128 (FlexAttention's block size) with a dummy example that
sees only itself, then cut back: fewer distinct shapes to compile, and no partial last block (a partial block with
a score_mod gave NaN gradients in torch 2.7, pytorch/pytorch#153799).
"""
from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch.nn.attention.flex_attention import BlockMask  # 10 ms to import; the kernels compile on first use

BLOCK = 128  # FlexAttention's default block size: rows are padded to a multiple of it
Backend = Literal["auto", "loop", "flex"]


def packed_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, lengths: Sequence[int] | BlockMask, *,
    sliding_window: int | None = None, scale: float | None = None, softcap: float | None = None,
    backend: Backend = "auto",
) -> torch.Tensor:
    """Causal attention confined to each example of one packed row: q (B, nh, T, hs), k and v (B, ng, T, hs) with
    ng dividing nh (GQA/MQA when ng < nh), `lengths` the examples' lengths in order (sum = T; every row of the
    batch packed alike, in practice B = 1), or a `rows_block_mask` of the rows' positions (any rows, flex only; its
    sliding window is in the mask). Returns (B, nh, T, hs).

    `sliding_window` w: a query at position p (counted from its example's start) sees positions p - w + 1 .. p.
    `scale`: the factor on q.k (default 1 / sqrt(hs)). `softcap` c: scores become c * tanh(score / c) (Gemma 2).
    `backend`: "auto" (flex on CUDA, loop elsewhere), or "loop" / "flex" to force one; flex runs uncompiled on
    CPU (FlexAttention's reference implementation, for tests), compiled on CUDA.
    """
    if isinstance(lengths, BlockMask):
        return _run_flex(q, k, v, lengths, scale, softcap)
    # checked eagerly only: under torch.compile the lengths are symbolic, and comparing them would specialize the
    # graph to one row's lengths (a recompile per row)
    if not torch.compiler.is_compiling() and (sum(lengths) != q.size(2) or min(lengths, default=0) < 1):
        raise ValueError(f"example lengths {tuple(lengths)} do not partition the row's {q.size(2)} positions")
    lengths = tuple(lengths)
    if backend == "auto":
        backend = "flex" if q.is_cuda else "loop"
    if backend == "loop":
        return _loop(q, k, v, lengths, sliding_window, scale, softcap)
    if backend == "flex":
        return _flex(q, k, v, lengths, sliding_window, scale, softcap)
    raise ValueError(f"unknown backend {backend!r}: auto, loop or flex")


# ------------------------------------------------------------------------------------------------ loop (CPU)


def _loop(q, k, v, lengths, sliding_window, scale, softcap) -> torch.Tensor:
    gqa = q.size(1) != k.size(1)
    out = []
    for qe, ke, ve in zip(q.split(lengths, 2), k.split(lengths, 2), v.split(lengths, 2)):
        n = qe.size(2)
        if softcap is not None:  # SDPA has no softcap: the plain math, on this example only
            out.append(_math_attention(qe, ke, ve, _causal(n, sliding_window, q.device), scale, softcap))
        elif sliding_window is None or sliding_window >= n:
            out.append(F.scaled_dot_product_attention(qe, ke, ve, is_causal=True, scale=scale, enable_gqa=gqa))
        else:
            out.append(F.scaled_dot_product_attention(qe, ke, ve, attn_mask=_causal(n, sliding_window, q.device),
                                                      scale=scale, enable_gqa=gqa))
    return torch.cat(out, dim=2)  # (B, nh, T, hs)


def _causal(n: int, sliding_window: int | None, device: torch.device) -> torch.Tensor:
    """Boolean (n, n): query i sees key j iff j <= i (and i - j < sliding_window)."""
    i = torch.arange(n, device=device)
    mask = i[None, :] <= i[:, None]
    if sliding_window is not None:
        mask &= i[:, None] - i[None, :] < sliding_window
    return mask


def _math_attention(q, k, v, mask: torch.Tensor, scale: float | None, softcap: float | None) -> torch.Tensor:
    """softmax(cap(q k^T * scale) masked) v, with keys/values repeated for GQA; scores in float32."""
    groups = q.size(1) // k.size(1)
    k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)  # (B, nh, n, hs)
    scores = (q.float() @ k.float().transpose(-2, -1)) * (scale if scale is not None else 1 / math.sqrt(q.size(-1)))
    if softcap is not None:
        scores = softcap * torch.tanh(scores / softcap)
    scores = scores.masked_fill(~mask, float("-inf"))  # (B, nh, n, n)
    return (scores.softmax(dim=-1) @ v.float()).to(q.dtype)


# ------------------------------------------------------------------------------------------------ flex (CUDA)


def _flex(q, k, v, lengths, sliding_window, scale, softcap) -> torch.Tensor:
    T = q.size(2)
    padded = -(-T // BLOCK) * BLOCK
    if padded > T:  # the padding is one more example: it sees only itself, and is cut off in `_run_flex`
        lengths = (*lengths, padded - T)
    return _run_flex(q, k, v, _eager_block_mask(lengths, sliding_window, q.device), scale, softcap)


def _run_flex(q, k, v, block_mask, scale, softcap) -> torch.Tensor:
    from torch.nn.attention.flex_attention import flex_attention

    T, padded = q.size(2), block_mask.seq_lengths[0]
    if padded > T:
        q, k, v = (F.pad(t, (0, 0, 0, padded - T)) for t in (q, k, v))  # (B, n, padded, hs)
    score_mod = None if softcap is None else _softcap_mod(softcap)
    # inside a compiled model dynamo traces flex_attention into the model's graph; called eagerly on CUDA it needs
    # its own compiled wrapper (uncompiled it is FlexAttention's reference path, which builds the T x T scores)
    run = _compiled_flex() if q.is_cuda and not torch.compiler.is_compiling() else flex_attention
    y = run(q, k, v, score_mod=score_mod, block_mask=block_mask, scale=scale, enable_gqa=q.size(1) != k.size(1))
    return y[:, :, :T]  # (B, nh, T, hs)


@functools.cache
def _compiled_flex():
    from torch.nn.attention.flex_attention import flex_attention

    # automatic dynamic shapes: the first row length compiles a static kernel, the second one a dynamic one
    return torch.compile(flex_attention)


@functools.cache
def _softcap_mod(softcap: float):
    # one function object per value, so compiled kernels are reused rather than rebuilt for a new closure
    def score_mod(score, b, h, q_idx, kv_idx):
        return softcap * torch.tanh(score / softcap)

    return score_mod


# the same row reaches every layer of a forward pass (and the recomputation of activation checkpointing): its mask
# is built once
@functools.lru_cache(maxsize=8)
def document_block_mask(lengths: tuple[int, ...], sliding_window: int | None, device: torch.device) -> BlockMask:
    """FlexAttention's BlockMask for one packed row of examples of `lengths` (their sum a multiple of BLOCK is best).

    Made by create_block_mask from the same rule as `_causal` per example: it evaluates the rule on all T x T pairs
    once (4M at 2,048 tokens; a few ms on a GPU) to find which 128 x 128 tiles are empty, full or partial.
    """
    from torch.nn.attention.flex_attention import create_block_mask

    T = sum(lengths)
    counts = torch.tensor(lengths, device=device)
    document = torch.repeat_interleave(torch.arange(len(lengths), device=device), counts)  # (T,): example of each token

    def mask_mod(b, h, q_idx, kv_idx):
        visible = (document[q_idx] == document[kv_idx]) & (kv_idx <= q_idx)
        if sliding_window is not None:
            visible = visible & (q_idx - kv_idx < sliding_window)
        return visible

    return create_block_mask(mask_mod, B=None, H=None, Q_LEN=T, KV_LEN=T, device=device)


# run eagerly inside a compiled model (a graph break there), so that the cache serves every layer there too
_eager_block_mask = torch.compiler.disable(document_block_mask)


@torch.compiler.disable
def rows_block_mask(positions: torch.Tensor, sliding_window: int | None = None) -> BlockMask:
    """FlexAttention's BlockMask for rows of packed examples given by their positions (B, T), restarting at 0 at
    each example's start (`lit_gpt.batching.packed_collate`), the rows padded to a multiple of BLOCK (each padding
    token its own example). For the model to build once per forward pass: it stays on the device (no lengths
    copied to the host), and a compiled model then sees each row's layout as data, not as a new tuple of lengths to
    specialize (recompile) for; rows may differ within a batch.
    """
    from torch.nn.attention.flex_attention import create_block_mask

    B, T = positions.shape
    padded = -(-T // BLOCK) * BLOCK
    positions = F.pad(positions, (0, padded - T))  # (B, padded): 0s, each a one-token example
    document = (positions == 0).cumsum(dim=-1)  # (B, padded): which example each token belongs to

    def mask_mod(b, h, q_idx, kv_idx):
        visible = (document[b, q_idx] == document[b, kv_idx]) & (kv_idx <= q_idx)
        if sliding_window is not None:
            visible = visible & (q_idx - kv_idx < sliding_window)
        return visible

    return create_block_mask(mask_mod, B=B, H=None, Q_LEN=padded, KV_LEN=padded, device=positions.device)
