"""One decoder-only transformer for every supported family (Llama 2/3, Mistral, Qwen 2.5/3, OLMo 2, Phi-3/4-mini,
Gemma 2/3, GPT-NeoX, Falcon, SmolLM2).

Reads top to bottom: GPT -> Block -> CausalSelfAttention -> MLP -> norms -> RoPE -> masks and KV cache.
Family differences are `Config` fields, each acted on in one place:

    norm_class / norm_unit_offset   RMSNorm | (1 + w) RMSNorm (Gemma) | LayerNorm      (`_norm`, RMSNorm)
    norm_placement                  pre | post (OLMo 2) | pre_post (Gemma)             (Block)
    parallel_residual / shared_attention_norm                                          (Block.forward)
    n_query_groups                  MHA | GQA | MQA                                    (CausalSelfAttention)
    attn_bias / attn_proj_bias      bias on q/k/v; on the output projection            (CausalSelfAttention)
    qk_norm                         RMSNorm on each query/key head or on the projection (CausalSelfAttention)
    query_pre_attn_scalar / attn_logit_softcapping                                     (`attention`)
    sliding_window / sliding_window_pattern   local attention on some or all layers    (CausalSelfAttention)
    rotary_percentage               RoPE on the first part of each head                (`apply_rope`)
    rope_base / rope_condense_ratio / rope_scaling / rope_local_base                   (`build_rope_cache`)
    mlp_class                       SwiGLU | GeGLU | GELU                              (MLP)
    scale_embeddings                embeddings times sqrt(n_embd) (Gemma)             (GPT.forward)
    tie_embeddings                  lm_head shares the embedding matrix                (GPT.__init__)
    final_logit_softcapping         tanh-capped logits (Gemma 2)                       (GPT.logits)
"""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import TypeVar, overload

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from lit_gpt import varlen
from lit_gpt.config import Config

# What attention may see: None = causal; a boolean tensor broadcastable to (B, nh, T, kv_len) = that mask; a tuple
# of lengths, or on CUDA a FlexAttention BlockMask = rows of packed examples, each attending causally to itself only
# (see `packed_attention`)
Mask = torch.Tensor | tuple[int, ...] | varlen.BlockMask | None
# `GPT.forward(head=fn)`: fn(hidden (B, T, n_embd), logits function) -> whatever it computes (a loss)
HeadOut = TypeVar("HeadOut")
Head = Callable[[torch.Tensor, Callable[[torch.Tensor], torch.Tensor]], HeadOut]


class GPT(nn.Module):
    def __init__(self, config: Config) -> None:
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.n_embd)
        self.blocks = nn.ModuleList(Block(config, i) for i in range(config.n_layer))
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
        """(Re)build the RoPE tables on the model's device; needed after materialising a model built on "meta".

        `cos`/`sin` serve every layer, except windowed layers of a model with their own `rope_local_base` (Gemma 3:
        `cos_local`/`sin_local`) and positions past a LongRoPE model's original context (Phi-3.5: `cos_long`)."""
        device, c = self.embed.weight.device, self.config
        tables = {"": build_rope_cache(self.max_seq_length, c, device=device)}
        if c.rope_local_base is not None:
            tables["_local"] = build_rope_cache(self.max_seq_length, c, device=device, local=True)
        if c.rope_scaling is not None and c.rope_scaling["rope_type"] == "longrope":
            tables["_long"] = build_rope_cache(self.max_seq_length, c, device=device, long=True)
        for suffix, (cos, sin) in tables.items():
            self.register_buffer(f"cos{suffix}", cos, persistent=False)
            self.register_buffer(f"sin{suffix}", sin, persistent=False)

    @overload
    def forward(self, idx: torch.Tensor, input_pos: torch.Tensor | None = None, positions: torch.Tensor | None = None,
                head: bool = True, key_mask: torch.Tensor | None = None) -> torch.Tensor: ...

    @overload
    def forward(self, idx: torch.Tensor, input_pos: torch.Tensor | None = None, positions: torch.Tensor | None = None,
                *, head: Head[HeadOut], key_mask: torch.Tensor | None = None) -> HeadOut: ...

    def forward(self, idx, input_pos=None, positions=None, head=True, key_mask=None):
        """Logits (B, T, vocab_size) for token ids `idx` (B, T); with `head=False` the final normed hidden
        states (B, T, n_embd) instead; with `head` a function, `head(hidden, self.logits)`: a loss that applies the
        head in chunks, computed inside this forward, where a sharded (FSDP) model has the head's weight gathered.

        Without `input_pos`: a full causal pass (training, evaluation). With `input_pos` (T,) the absolute
        positions of `idx`: a step of cached generation; needs `set_kv_cache` first. With `positions` (B, T):
        rows of packed examples, each example's positions restarting at 0; attention stays inside each example.
        With `input_pos` and `positions` (B, T) together: left-padded rows of a batched cached step
        (`lit_gpt.generate.generate_batch`): `input_pos` are the cache slots, `positions` each row's own RoPE positions
        and `key_mask` (B, cache size) the slots that hold a real token of each row.
        """
        T = idx.size(1)
        if input_pos is None and positions is None and T > self.max_seq_length:
            raise ValueError(f"sequence of {T} tokens exceeds max_seq_length={self.max_seq_length}")
        # (a packed row may be longer than max_seq_length: only its examples' positions index the RoPE tables)
        if positions is None:
            positions = input_pos if input_pos is not None else torch.arange(T, device=idx.device)
        # one mask per distinct layer window (None: global layers), one RoPE table per layer kind
        windows = {block.attn.sliding_window for block in self.blocks}
        masks = {w: self.attention_mask(positions, input_pos, w, key_mask) for w in windows}
        ropes = {local: self.rope(positions, local) for local in {w is not None for w in windows}}

        x = self.embed(idx)  # (B, T, n_embd)
        if self.config.scale_embeddings:  # Gemma: by sqrt(n_embd), rounded to the activations' dtype as in its code
            x = x * torch.tensor(self.config.n_embd**0.5, dtype=x.dtype)
        for block in self.blocks:
            window = block.attn.sliding_window
            cos, sin = ropes[window is not None]
            if self.activation_checkpointing and self.training:
                x = checkpoint(block, x, cos, sin, masks[window], input_pos, use_reentrant=False)
            else:
                x = block(x, cos, sin, masks[window], input_pos)
        x = self.norm(x)
        if callable(head):
            # the bare linear when it is all the head does: the chunked loss then takes its fused linear+CE path
            return head(x, self.lm_head if self.config.final_logit_softcapping is None else self.logits)
        return self.logits(x) if head else x  # (B, T, vocab_size) or (B, T, n_embd)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """The head on final hidden states (..., n_embd) -> (..., vocab_size), soft-capped where the family caps."""
        logits = self.lm_head(x)
        if self.config.final_logit_softcapping is not None:  # Gemma 2: cap * tanh(logits / cap)
            logits = softcap(logits, self.config.final_logit_softcapping)
        return logits

    def attention_mask(
        self, positions: torch.Tensor, input_pos: torch.Tensor | None, sliding_window: int | None,
        key_mask: torch.Tensor | None = None,
    ) -> Mask:
        """The one place that decides how attention is masked, for layers with this `sliding_window` (None: global).

            cached step (input_pos)   rows over the whole KV cache: `build_mask` (and `key_mask`: left padding)
            packed rows (B, T)        each example attends to itself only: `packed_attention`
            plain causal              None, so SDPA picks its fused causal kernels (a window needs `build_mask`)
        """
        fused_ok = self.config.attn_logit_softcapping is None  # soft-capping needs explicit scores, not SDPA
        if input_pos is not None:
            kv_len = self.blocks[0].attn.kv_cache.size
            mask = build_mask(input_pos, kv_len, sliding_window)  # (T, kv_len)
            if key_mask is None:
                return mask
            # padding is no key; a padding query sees itself only (no key at all would give NaN, kept by the cache)
            own = torch.arange(kv_len, device=input_pos.device)[None, :] == input_pos[:, None]  # (T, kv_len)
            return ((mask & key_mask[:, None, :]) | own)[:, None]  # (B, 1, T, kv_len)
        if positions.dim() == 2:
            return packed_attention(positions, sliding_window, lengths_ok=fused_ok)
        if sliding_window is None and fused_ok:
            return None
        return build_mask(positions, positions.size(0), sliding_window)

    def rope(self, positions: torch.Tensor, local: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and sin (T, rope_n_elem), or (B, 1, T, rope_n_elem) for packed rows, at `positions`, for windowed
        (`local`) or global layers."""
        c = self.config
        if local and c.rope_local_base is not None:
            cos, sin = self.cos_local, self.sin_local
        elif c.rope_scaling is not None and c.rope_scaling["rope_type"] == "longrope" and (
            int(positions.max()) >= c.rope_scaling["original_max_position_embeddings"]
        ):
            # LongRoPE as Phi-3 runs it: past the original context, the whole pass switches to the long factors
            # (keys cached before were computed with the short ones: see `kv_cache_stale_at`)
            cos, sin = self.cos_long, self.sin_long
        else:
            cos, sin = self.cos, self.sin
        cos, sin = cos[positions], sin[positions]  # (T, rope_n_elem), or (B, T, rope_n_elem) packed
        if cos.dim() == 3:
            cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)  # (B, 1, T, rope_n_elem): the same for every head
        return cos, sin

    @property
    def kv_cache_stale_at(self) -> int | None:
        """The position at which keys cached before it no longer hold: LongRoPE switches every position to its long
        factors there (Phi-3.5), so cached generation recomputes the cache once, as transformers' `generate` does."""
        scaling = self.config.rope_scaling
        if scaling is None or scaling["rope_type"] != "longrope":
            return None
        return scaling["original_max_position_embeddings"]

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
    r"""One transformer layer. Where the norms sit is `norm_placement`; absent norms are `nn.Identity`:

        pre (Llama)               x + attn(norm_1(x)),                 then  x + mlp(norm_2(x))
        post (OLMo 2)             x + post_attn_norm(attn(x)),         then  x + post_mlp_norm(mlp(x))
        pre_post (Gemma 2/3)      x + post_attn_norm(attn(norm_1(x))), then  x + post_mlp_norm(mlp(norm_2(x)))
    """

    def __init__(self, config: Config, layer: int) -> None:
        super().__init__()
        self.parallel_residual = config.parallel_residual
        pre, post = config.norm_placement != "post", config.norm_placement != "pre"
        self.norm_1 = _norm(config) if pre else nn.Identity()
        self.attn = CausalSelfAttention(config, layer)
        self.post_attn_norm = _norm(config) if post else nn.Identity()
        # Falcon 7B has no norm_2: its MLP reads norm_1's output (`shared_attention_norm`)
        self.norm_2 = nn.Identity() if not pre else None if config.shared_attention_norm else _norm(config)
        self.mlp = MLP(config)
        self.post_mlp_norm = _norm(config) if post else nn.Identity()

    def forward(
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: Mask,
        input_pos: torch.Tensor | None,
    ) -> torch.Tensor:
        h = self.norm_1(x)
        attn_out = self.post_attn_norm(self.attn(h, cos, sin, mask, input_pos))
        if self.parallel_residual:
            # GPT-NeoX/Falcon: both branches read the block input; Falcon 7B feeds the MLP the same norm_1 output
            mlp_in = h if self.norm_2 is None else self.norm_2(x)
            return x + attn_out + self.mlp(mlp_in)
        x = x + attn_out
        return x + self.post_mlp_norm(self.mlp(self.norm_2(x)))


class CausalSelfAttention(nn.Module):
    r"""Multi-head attention with `n_query_groups` key/value heads shared by groups of query heads.

        MHA (n_query_groups = n_head)   GQA (1 < n_query_groups < n_head)   MQA (n_query_groups = 1)
        q: 1 2 3 4                      q: 1 2 3 4                          q: 1 2 3 4
           | | | |                         \ / \ /                             \ \ / /
        kv:1 2 3 4                      kv: 1   2                          kv:   1
    """

    def __init__(self, config: Config, layer: int) -> None:
        super().__init__()
        self.n_head, self.n_query_groups, self.head_size = config.n_head, config.n_query_groups, config.head_size
        self.rope_n_elem = config.rope_n_elem
        # this layer's window (None: it attends to every earlier position)
        self.sliding_window = config.sliding_window if config.is_sliding_layer(layer) else None
        # None: SDPA's default 1 / sqrt(head_size); Gemma scales by 1 / sqrt(query_pre_attn_scalar)
        self.scale = None if config.query_pre_attn_scalar is None else config.query_pre_attn_scalar**-0.5
        self.softcapping = config.attn_logit_softcapping
        bias = config.attn_bias
        self.query = nn.Linear(config.n_embd, config.n_head * config.head_size, bias=bias)
        self.key = nn.Linear(config.n_embd, config.n_query_groups * config.head_size, bias=bias)
        self.value = nn.Linear(config.n_embd, config.n_query_groups * config.head_size, bias=bias)
        self.proj = nn.Linear(config.n_head * config.head_size, config.n_embd, bias=config.attn_proj_bias)
        # Qwen 3 and Gemma 3 normalise each query/key head (size head_size); OLMo 2 the whole projection
        self.norm_q = self.norm_k = None
        if config.qk_norm != "none":
            per_head = config.qk_norm == "head"
            self.norm_q = _norm(config, config.head_size * (1 if per_head else config.n_head))
            self.norm_k = _norm(config, config.head_size * (1 if per_head else config.n_query_groups))
        self.kv_cache: KVCache | None = None

    def forward(
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: Mask,
        input_pos: torch.Tensor | None,
    ) -> torch.Tensor:
        B, T, _ = x.shape
        q = self.query(x).view(B, T, self.n_head, self.head_size)  # (B, T, nh, hs)
        k = self.key(x).view(B, T, self.n_query_groups, self.head_size)  # (B, T, ng, hs)
        v = self.value(x).view(B, T, self.n_query_groups, self.head_size)  # (B, T, ng, hs)
        if self.norm_q is not None:
            q, k = _qk_norm(self.norm_q, q), _qk_norm(self.norm_k, k)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (B, nh or ng, T, hs)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if input_pos is not None:
            if self.kv_cache is None:
                raise RuntimeError("call `model.set_kv_cache(...)` before a forward pass with `input_pos`")
            k, v = self.kv_cache(input_pos, k, v)  # (B, ng, cache_len, hs)
        if isinstance(mask, varlen.BlockMask):  # packed rows on CUDA: one FlexAttention kernel (lit_gpt/varlen.py)
            y = varlen.packed_attention(q, k, v, mask, scale=self.scale, softcap=self.softcapping)
        elif isinstance(mask, tuple):  # packed examples: each one's causal attention on its own slice of the row
            slices = zip(q.split(mask, 2), k.split(mask, 2), v.split(mask, 2))
            y = torch.cat([self.attention(*qkv, None) for qkv in slices], dim=2)
        else:
            y = self.attention(q, k, v, mask)
        # y: (B, nh, T, hs)
        y = y.transpose(1, 2).reshape(B, T, self.n_head * self.head_size)  # (B, T, nh * hs)
        return self.proj(y)

    def attention(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """softmax(q k^T * scale + mask) v for q (B, nh, T, hs), k and v (B, ng, kv_len, hs); `mask` None = causal.

        SDPA's fused kernels unless the family soft-caps the scores (Gemma 2: cap * tanh(scores / cap)), which needs
        them written out: then the mask is always explicit (see `GPT.attention_mask`)."""
        gqa = self.n_query_groups != self.n_head
        if self.softcapping is None:
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None, scale=self.scale,
                                                  enable_gqa=gqa)
        if gqa:
            q_per_kv = self.n_head // self.n_query_groups
            k, v = k.repeat_interleave(q_per_kv, dim=1), v.repeat_interleave(q_per_kv, dim=1)  # (B, nh, kv_len, hs)
        scale = self.scale or 1 / math.sqrt(self.head_size)
        scores = softcap((q @ k.transpose(-2, -1)) * scale, self.softcapping)  # (B, nh, T, kv_len)
        scores = scores.masked_fill(~mask, float("-inf"))
        return torch.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype) @ v


def _qk_norm(norm: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """`norm` on each head of x (B, T, n, hs), or on all n heads at once when its size is n * hs (OLMo 2)."""
    B, T, n, hs = x.shape
    size = norm.weight.numel()
    return norm(x.reshape(B, T, n * hs // size, size)).view(B, T, n, hs)


def softcap(x: torch.Tensor, cap: float) -> torch.Tensor:
    """cap * tanh(x / cap): smoothly bounds x to (-cap, cap) (Gemma 2)."""
    return torch.tanh(x / cap) * cap


class MLP(nn.Module):
    """Gated `proj(act(fc_1(x)) * fc_2(x))` with SiLU (SwiGLU, Shazeer 2020: Llama) or tanh-GELU (GeGLU: Gemma),
    or plain `proj(gelu(fc_1(x)))` (GPT-NeoX, Falcon)."""

    def __init__(self, config: Config) -> None:
        super().__init__()
        bias = config.mlp_bias
        self.fc_1 = nn.Linear(config.n_embd, config.intermediate_size, bias=bias)
        gated = config.mlp_class != "gelu"
        self.fc_2 = nn.Linear(config.n_embd, config.intermediate_size, bias=bias) if gated else None
        self.proj = nn.Linear(config.intermediate_size, config.n_embd, bias=bias)
        self.act = nn.SiLU() if config.mlp_class == "swiglu" else nn.GELU(approximate=config.gelu_approximate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act(self.fc_1(x))
        if self.fc_2 is not None:
            h = h * self.fc_2(x)
        return self.proj(h)


class RMSNorm(nn.Module):
    """Root-mean-square norm (Zhang & Sennrich 2019), computed in float32 like the reference Llama implementation.

    With `unit_offset` (Gemma) the gain is `1 + weight`, applied in float32 before casting back, as Gemma's code does;
    its weight then starts at zero."""

    def __init__(self, size: int, eps: float, unit_offset: bool = False) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(size) if unit_offset else torch.ones(size))
        self.eps = eps
        self.unit_offset = unit_offset

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        if self.unit_offset:
            return (x * (1.0 + self.weight.float())).to(dtype)
        return self.weight * x.to(dtype)


def _norm(config: Config, size: int | None = None) -> nn.Module:
    size = size or config.n_embd
    if config.norm_class == "RMSNorm":
        return RMSNorm(size, config.norm_eps, config.norm_unit_offset)
    return nn.LayerNorm(size, eps=config.norm_eps)


# ------------------------------------------------------------------------------------------------ RoPE


def build_rope_cache(
    seq_len: int, config: Config, device: torch.device | None = None, local: bool = False, long: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin tables (seq_len, rope_n_elem) for rotary embeddings (Su et al. 2021), in float32.

    `rope_condense_ratio` > 1 divides positions (linear interpolation, as LongChat/Vicuna-16k were trained).
    `rope_scaling` rescales the frequencies: "llama3" (Llama 3.1+) or "longrope" (Phi-3.5, Phi-4-mini; its short
    factors, or the long ones with `long`). `local`: the table of windowed layers with their own base (Gemma 3),
    which is never scaled.
    """
    n_elem = config.rope_n_elem
    base = config.rope_local_base if local else config.rope_base
    exponents = torch.arange(0, n_elem, 2, device=device).float() / n_elem  # (n_elem / 2,)
    scaling = None if local else config.rope_scaling
    condense_ratio = 1.0 if local else config.rope_condense_ratio
    attention_factor = 1.0
    if scaling is None:
        inv_freq = 1.0 / (base**exponents)
    elif scaling["rope_type"] == "llama3":
        inv_freq = _llama3_inv_freq(1.0 / (base**exponents), scaling)
    else:  # longrope: per-frequency divisors, and cos/sin scaled to keep attention entropy at long context
        factors = torch.tensor(scaling["long_factor" if long else "short_factor"], dtype=torch.float32, device=device)
        inv_freq = 1.0 / (factors * base**exponents)
        attention_factor = scaling["attention_factor"]
    positions = torch.arange(seq_len, device=device).float() / condense_ratio
    freqs = torch.outer(positions, inv_freq)  # (seq_len, n_elem / 2)
    emb = torch.cat((freqs, freqs), dim=-1)  # (seq_len, n_elem)
    return emb.cos() * attention_factor, emb.sin() * attention_factor


def _llama3_inv_freq(inv_freq: torch.Tensor, scaling: dict) -> torch.Tensor:
    """Llama 3.1's frequency scaling: wavelengths longer than the original context / low_freq_factor are divided by
    `factor`, shorter than original / high_freq_factor kept, and those between interpolated smoothly."""
    factor, low, high = scaling["factor"], scaling["low_freq_factor"], scaling["high_freq_factor"]
    old_context = scaling["original_max_position_embeddings"]
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > old_context / low, inv_freq / factor, inv_freq)
    smooth = (old_context / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = (wavelen >= old_context / high) & (wavelen <= old_context / low)
    return torch.where(medium, smoothed, scaled)


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


def packed_attention(positions: torch.Tensor, sliding_window: int | None, lengths_ok: bool = True) -> Mask:
    """How rows of packed examples attend: one row without a sliding window gives its examples' lengths, so each
    example runs SDPA's fused causal kernel on its own slice (work sum(length^2), no T x T mask: 3-5x faster than
    the masked kernel on CPU at 500-8k tokens); otherwise (or without `lengths_ok`: attention that cannot use SDPA)
    the block-diagonal mask of `build_packed_mask`. On CUDA every case is one FlexAttention block mask, built here
    once per forward pass (flash-style tiles, no T x T mask, soft-capping included; see lit_gpt/varlen.py)."""
    if positions.is_cuda:
        return varlen.rows_block_mask(positions, sliding_window)
    if positions.size(0) > 1 or sliding_window is not None or not lengths_ok:
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
