"""One decoder-only transformer for every supported family (Llama, Mistral, GPT-NeoX, Falcon, SmolLM2).

Reads top to bottom: GPT -> Block -> CausalSelfAttention -> MLP -> norms -> RoPE -> KV cache.
Family differences are `Config` fields, each acted on in one place:

    norm_class             RMSNorm | LayerNorm                        (`_norm`)
    n_query_groups         MHA | GQA | MQA                             (CausalSelfAttention)
    rotary_percentage      RoPE on the first part of each head (NeoX)  (`apply_rope`)
    rope_base / rope_condense_ratio                                    (`build_rope_cache`)
    sliding_window         Mistral's local attention                   (`build_mask`)
    parallel_residual / shared_attention_norm                          (Block.forward)
    mlp_class              SwiGLU | GELU                               (MLP)
    tie_embeddings         lm_head shares the embedding matrix         (GPT.__init__)
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from lit_gpt.config import Config

# What attention may see: None = causal; a boolean tensor broadcastable to (B, nh, T, kv_len) = that mask; a tuple
# of lengths = one row of packed examples, each attending causally to itself only (see `packed_attention`)
Mask = torch.Tensor | tuple[int, ...] | None


class GPT(nn.Module):
    def __init__(self, config: Config) -> None:
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.n_embd)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.norm = _norm(config)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        if config.tie_embeddings:
            self.lm_head.weight = self.embed.weight
        self.max_seq_length = config.block_size
        # recompute each block's activations during backward instead of storing them (training only)
        self.activation_checkpointing = False

    @property
    def max_seq_length(self) -> int:
        return self._max_seq_length

    @max_seq_length.setter
    def max_seq_length(self, value: int) -> None:
        """Longest sequence this instance will see; sizes the RoPE cache (training at 2048 needs no 32k cache)."""
        if value > self.config.block_size:
            raise ValueError(f"max_seq_length {value} exceeds the model's block_size {self.config.block_size}")
        self._max_seq_length = value
        self.reset_rope_cache()

    def reset_rope_cache(self) -> None:
        """(Re)build the RoPE tables on the model's device; needed after materialising a model built on "meta"."""
        cos, sin = build_rope_cache(self.max_seq_length, self.config, device=self.embed.weight.device)
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)

    def forward(
        self, idx: torch.Tensor, input_pos: torch.Tensor | None = None, positions: torch.Tensor | None = None,
        head: bool | Callable[[torch.Tensor, nn.Module], Any] = True,
    ) -> Any:
        """Logits (B, T, vocab_size) for token ids `idx` (B, T); with `head=False` the final normed hidden
        states (B, T, n_embd) instead; with `head` a function, `head(hidden, self.lm_head)`: a loss that applies the
        head in chunks, computed inside this forward, where a sharded (FSDP) model has the head's weight gathered.

        Without `input_pos`: a full causal pass (training, evaluation). With `input_pos` (T,) the absolute
        positions of `idx`: a step of cached generation; needs `set_kv_cache` first. With `positions` (B, T):
        rows of packed examples, each example's positions restarting at 0; attention stays inside each example.
        """
        B, T = idx.shape
        if input_pos is not None:
            positions = input_pos
            mask = build_mask(positions, self.blocks[0].attn.kv_cache.size, self.config.sliding_window)
        elif positions is not None:
            # a packed row may be longer than max_seq_length; only its examples' positions index the RoPE tables
            mask = packed_attention(positions, self.config.sliding_window)
        elif T > self.max_seq_length:
            raise ValueError(f"sequence of {T} tokens exceeds max_seq_length={self.max_seq_length}")
        else:
            positions = torch.arange(T, device=idx.device)
            # plain causal attention lets SDPA pick its fused kernels; a window needs an explicit mask
            mask = None if self.config.sliding_window is None else build_mask(positions, T, self.config.sliding_window)
        cos, sin = self.cos[positions], self.sin[positions]  # (T, rope_n_elem), or (B, T, rope_n_elem) packed
        if cos.dim() == 3:
            cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)  # (B, 1, T, rope_n_elem): the same for every head

        x = self.embed(idx)  # (B, T, n_embd)
        for block in self.blocks:
            if self.activation_checkpointing and self.training:
                x = checkpoint(block, x, cos, sin, mask, input_pos, use_reentrant=False)
            else:
                x = block(x, cos, sin, mask, input_pos)
        x = self.norm(x)
        if callable(head):
            return head(x, self.lm_head)
        return self.lm_head(x) if head else x  # (B, T, vocab_size) or (B, T, n_embd)

    def set_kv_cache(self, batch_size: int, max_seq_length: int | None = None, dtype: torch.dtype | None = None) -> None:
        """Allocate a per-block key/value cache for generating up to `max_seq_length` tokens (prompt included)."""
        length = max_seq_length or self.max_seq_length
        if length > self.max_seq_length:
            self.max_seq_length = length
        weight = self.embed.weight
        for block in self.blocks:
            block.attn.kv_cache = KVCache(batch_size, length, self.config, weight.device, dtype or weight.dtype)

    def clear_kv_cache(self) -> None:
        for block in self.blocks:
            block.attn.kv_cache = None


class Block(nn.Module):
    def __init__(self, config: Config) -> None:
        super().__init__()
        self.parallel_residual = config.parallel_residual
        self.norm_1 = _norm(config)
        self.attn = CausalSelfAttention(config)
        self.norm_2 = None if config.shared_attention_norm else _norm(config)
        self.mlp = MLP(config)

    def forward(
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: Mask,
        input_pos: torch.Tensor | None,
    ) -> torch.Tensor:
        h = self.norm_1(x)
        attn_out = self.attn(h, cos, sin, mask, input_pos)
        if self.parallel_residual:
            # GPT-NeoX/Falcon: both branches read the block input; Falcon 7B feeds the MLP the same norm_1 output
            mlp_in = h if self.norm_2 is None else self.norm_2(x)
            return x + attn_out + self.mlp(mlp_in)
        x = x + attn_out
        return x + self.mlp(self.norm_2(x))


class CausalSelfAttention(nn.Module):
    r"""Multi-head attention with `n_query_groups` key/value heads shared by groups of query heads.

        MHA (n_query_groups = n_head)   GQA (1 < n_query_groups < n_head)   MQA (n_query_groups = 1)
        q: 1 2 3 4                      q: 1 2 3 4                          q: 1 2 3 4
           | | | |                         \ / \ /                             \ \ / /
        kv:1 2 3 4                      kv: 1   2                          kv:   1
    """

    def __init__(self, config: Config) -> None:
        super().__init__()
        self.n_head, self.n_query_groups, self.head_size = config.n_head, config.n_query_groups, config.head_size
        self.rope_n_elem = config.rope_n_elem
        bias = config.attn_bias
        self.query = nn.Linear(config.n_embd, config.n_head * config.head_size, bias=bias)
        self.key = nn.Linear(config.n_embd, config.n_query_groups * config.head_size, bias=bias)
        self.value = nn.Linear(config.n_embd, config.n_query_groups * config.head_size, bias=bias)
        self.proj = nn.Linear(config.n_head * config.head_size, config.n_embd, bias=bias)
        self.kv_cache: KVCache | None = None

    def forward(
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: Mask,
        input_pos: torch.Tensor | None,
    ) -> torch.Tensor:
        B, T, _ = x.shape
        q = self.query(x).view(B, T, self.n_head, self.head_size).transpose(1, 2)  # (B, nh, T, hs)
        k = self.key(x).view(B, T, self.n_query_groups, self.head_size).transpose(1, 2)  # (B, ng, T, hs)
        v = self.value(x).view(B, T, self.n_query_groups, self.head_size).transpose(1, 2)  # (B, ng, T, hs)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if input_pos is not None:
            if self.kv_cache is None:
                raise RuntimeError("call `model.set_kv_cache(...)` before a forward pass with `input_pos`")
            k, v = self.kv_cache(input_pos, k, v)  # (B, ng, cache_len, hs)
        gqa = self.n_query_groups != self.n_head
        if isinstance(mask, tuple):  # packed examples: each one's causal attention on its own slice of the row
            y = torch.cat([F.scaled_dot_product_attention(*qkv, is_causal=True, enable_gqa=gqa)
                           for qkv in zip(q.split(mask, 2), k.split(mask, 2), v.split(mask, 2))], dim=2)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None, enable_gqa=gqa)
        # y: (B, nh, T, hs)
        y = y.transpose(1, 2).reshape(B, T, self.n_head * self.head_size)  # (B, T, nh * hs)
        return self.proj(y)


class MLP(nn.Module):
    """SwiGLU `proj(silu(fc_1(x)) * fc_2(x))` (Shazeer 2020, Llama) or GELU `proj(gelu(fc_1(x)))` (GPT-NeoX, Falcon)."""

    def __init__(self, config: Config) -> None:
        super().__init__()
        bias = config.mlp_bias
        self.fc_1 = nn.Linear(config.n_embd, config.intermediate_size, bias=bias)
        gated = config.mlp_class == "swiglu"
        self.fc_2 = nn.Linear(config.n_embd, config.intermediate_size, bias=bias) if gated else None
        self.proj = nn.Linear(config.intermediate_size, config.n_embd, bias=bias)
        self.act = nn.SiLU() if gated else nn.GELU(approximate=config.gelu_approximate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act(self.fc_1(x))
        if self.fc_2 is not None:
            h = h * self.fc_2(x)
        return self.proj(h)


class RMSNorm(nn.Module):
    """Root-mean-square norm (Zhang & Sennrich 2019), computed in float32 like the reference Llama implementation."""

    def __init__(self, size: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


def _norm(config: Config) -> nn.Module:
    if config.norm_class == "RMSNorm":
        return RMSNorm(config.n_embd, config.norm_eps)
    return nn.LayerNorm(config.n_embd, eps=config.norm_eps)


# ------------------------------------------------------------------------------------------------ RoPE


def build_rope_cache(seq_len: int, config: Config, device: torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin tables (seq_len, rope_n_elem) for rotary embeddings (Su et al. 2021), in float32.

    `rope_condense_ratio` > 1 divides positions (linear interpolation, as LongChat/Vicuna-16k were trained).
    """
    n_elem = config.rope_n_elem
    inv_freq = 1.0 / (config.rope_base ** (torch.arange(0, n_elem, 2, device=device).float() / n_elem))
    positions = torch.arange(seq_len, device=device).float() / config.rope_condense_ratio
    freqs = torch.outer(positions, inv_freq)  # (seq_len, n_elem / 2)
    emb = torch.cat((freqs, freqs), dim=-1)  # (seq_len, n_elem)
    return emb.cos(), emb.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate the first `cos.size(-1)` channels of each head of `x` (B, nh, T, hs); the rest pass through.

    Uses the "rotate half" pairing (channel i with i + n/2) that Hugging Face checkpoints are stored for.
    """
    n_elem = cos.size(-1)
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    if n_elem == x.size(-1):  # whole head (Llama, Mistral): no slice, whose backward zero-fills a full-size buffer
        return x * cos + _rotate_half(x) * sin
    x_rope, x_pass = x[..., :n_elem], x[..., n_elem:]
    return torch.cat((x_rope * cos + _rotate_half(x_rope) * sin, x_pass), dim=-1)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


# ------------------------------------------------------------------------------------------------ masks and KV cache


def build_mask(positions: torch.Tensor, kv_len: int, sliding_window: int | None) -> torch.Tensor:
    """Boolean attention mask (T, kv_len): query at `positions[i]` may see key slot j iff j <= positions[i]
    and, with a sliding window, j > positions[i] - sliding_window. Key slot j holds position j."""
    keys = torch.arange(kv_len, device=positions.device)
    mask = keys[None, :] <= positions[:, None]
    if sliding_window is not None:
        mask &= keys[None, :] > positions[:, None] - sliding_window
    return mask


def packed_attention(positions: torch.Tensor, sliding_window: int | None) -> Mask:
    """How rows of packed examples attend: one row without a sliding window gives its examples' lengths, so each
    example runs SDPA's fused causal kernel on its own slice (work sum(length^2), no T x T mask: 3-5x faster than
    the masked kernel on CPU at 500-8k tokens); otherwise the block-diagonal mask of `build_packed_mask`."""
    if positions.size(0) > 1 or sliding_window is not None:
        return build_packed_mask(positions, sliding_window)  # (B, 1, T, T)
    starts = (positions[0] == 0).nonzero().flatten().tolist()
    bounds = [0, *(i for i in starts if i > 0), positions.size(1)]
    return tuple(b - a for a, b in zip(bounds, bounds[1:]))


def build_packed_mask(positions: torch.Tensor, sliding_window: int | None) -> torch.Tensor:
    r"""Boolean mask (B, 1, T, T) for rows of packed examples: causal, and confined to each example.

    An example starts wherever its position is 0. Rows [a a a b b c] (positions 0 1 2 0 1 0) give

        a . . . . .
        a a . . . .
        a a a . . .        block-diagonal causal: no token sees another example, so each example is
        . . . b . .        computed exactly as if it were alone in its row
        . . . b b .
        . . . . . c
    """
    T = positions.size(1)
    example = (positions == 0).cumsum(dim=-1)  # (B, T): which example each token belongs to
    mask = (example[:, :, None] == example[:, None, :]) & torch.ones(T, T, dtype=torch.bool, device=positions.device).tril()
    if sliding_window is not None:
        mask &= (positions[:, :, None] - positions[:, None, :]) < sliding_window
    return mask[:, None]  # (B, 1, T, T)


class KVCache(nn.Module):
    """Keys and values of every position generated so far, written at their absolute positions."""

    def __init__(self, batch_size: int, size: int, config: Config, device: torch.device, dtype: torch.dtype) -> None:
        super().__init__()
        self.size = size
        shape = (batch_size, config.n_query_groups, size, config.head_size)  # (B, ng, size, hs)
        self.register_buffer("k", torch.zeros(shape, device=device, dtype=dtype), persistent=False)
        self.register_buffer("v", torch.zeros(shape, device=device, dtype=dtype), persistent=False)

    def forward(self, input_pos: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.k.index_copy_(2, input_pos, k.to(self.k.dtype))
        self.v.index_copy_(2, input_pos, v.to(self.v.dtype))
        return self.k, self.v
