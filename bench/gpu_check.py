"""One command that proves the toolkit on a GPU (issue 15), finishing inside 10 minutes on an H100/H200:

    pip install --no-index --find-links .whl -r bench/gpu_requirements.txt   # wheels from bench/gpu_wheels.sh
    PYTHONPATH=. python bench/gpu_check.py --out_dir bench/results/gpu

Phases, each under its own time limit (and the whole under --budget_s), in this order:

  parity      CUDA logits = CPU logits of our GPT, fp32: a tiny config (plain and packed rows) and a ~100M one
  packed      packed = padded on the device: summed loss and LoRA gradients through finetune's pieces
              (lit_gpt.collate.step_batches + lit_gpt.training.batch_loss), with activation checkpointing too
  bf16        bf16-true LoRA training follows fp32 for a few steps (same init, same batches)
  qlora       bnb.nf4 QLoRA trains (skipped, with the reason, when bitsandbytes is missing)
  throughput  LoRA steps of a ~1B Llama-shaped random model (TinyLlama-1.1B's shape), packed rows of up to
              micro_batch_size x 2,048 tokens, bf16-true, eager and compiled: tokens/s, MFU (two FLOP counts, see
              `step_flops`) and the fraction of this device's measured matmul rate on the model's own GEMM shapes
  peers       the same steps (same examples, same order, same LoRA) with transformers + peft and with litgpt 0.5.13's
              LoRA model and chunked loss, in this process, each skipped with the reason when not importable
  varlen      packed-row attention (lit_gpt/varlen.py): FlexAttention on CUDA = the per-example SDPA loop, values and
              gradients, fp32 and bf16, GQA / sliding window / softcap; and their speed at 2,048 tokens
  compile     torch.compile(dynamic=True), as finetune/lora.py --compile: packed rows + chunked head + loss +
              activation checkpointing give the eager losses; compile time and graphs counted
  memory7b    peak memory of one LoRA step of the Llama-2-7B shape at 2,048 tokens (random weights), bf16-true,
              with and without activation checkpointing

Every phase appends to `<out_dir>/gpu_check.json` and `gpu_check.md` as it finishes (and to $OUT when set), so a
timeout still leaves the phases before it. `--device cpu --tiny` runs the same code on tiny models (the smoke test).
On a CPU, `--phases throughput` is the CPU ceiling: `--device cpu --model bench` runs the packed LoRA step of
bench/finetune_throughput.py's model (58.5M, hidden 512, 8 layers, 512 tokens, micro-batch 4, fp32) against the
measured fp32 matmul rate of its own GEMM shapes.

The step here is finetune/lora.py's step built from the same lit_gpt pieces (apply_lora, step_batches,
chunked_loss_sum, Fabric's setup/backward/clip, AdamW over the LoRA parameters), not the script itself: the script
needs a converted checkpoint and prepared data on disk, and jsonargparse.
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import os
import platform
import signal
import sys
import time
import traceback
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # a plain checkout: no install needed

import torch  # noqa: E402
import torch._dynamo  # noqa: E402

from lit_gpt.collate import step_batches  # noqa: E402
from lit_gpt.config import Config  # noqa: E402
from lit_gpt.data.tokenize import IGNORE_INDEX  # noqa: E402
from lit_gpt.lora import LoRAConfig, apply_lora, lora_parameters  # noqa: E402
from lit_gpt.model import GPT  # noqa: E402
from lit_gpt.training import batch_loss, trainable_tokens  # noqa: E402
from lit_gpt.utils import atomic_write_json, atomic_write_text  # noqa: E402

# the quick checks, then the headline numbers, then the checks that spend most of their time compiling
PHASES = ("parity", "packed", "bf16", "qlora", "throughput", "peers", "varlen", "compile", "memory7b")
# seconds each phase may take on an H100; the whole run stops at --budget_s (under the 10 minutes it must fit)
LIMITS = {"parity": 45, "varlen": 150, "packed": 30, "bf16": 40, "qlora": 45, "throughput": 180, "peers": 120,
          "compile": 120, "memory7b": 60}

# bf16 dense tensor-core peaks without sparsity, FLOP/s, from the vendors' data sheets; the first name contained in
# torch.cuda.get_device_name() wins, so the specific names come first
PEAK_BF16 = (
    ("H100 PCIe", 756e12), ("H100 NVL", 835e12), ("H100", 989e12), ("H200", 989e12), ("H800", 989e12),
    ("GH200", 989e12), ("B200", 2250e12), ("B100", 1750e12), ("A100", 312e12), ("A800", 312e12),
    ("L40S", 362e12), ("L40", 181e12), ("L4", 121e12), ("A10G", 70e12), ("A10", 125e12), ("A6000", 155e12),
    ("RTX 4090", 165e12), ("RTX 3090", 71e12),
)

# TinyLlama-1.1B's shape (a Llama 2 architecture at 1.1B): the ~1B model of the throughput and peer phases
LLAMA_1B = Config(name="llama-1.1b-shape", block_size=2048, vocab_size=32000, n_layer=22, n_embd=2048, n_head=32,
                  n_query_groups=4, intermediate_size=5632)
# the ~100M parity model: hidden 768, 12 layers, GQA
LLAMA_100M = Config(name="llama-100m-shape", block_size=2048, vocab_size=32000, n_layer=12, n_embd=768, n_head=12,
                    n_query_groups=4, intermediate_size=2048)
# bench/finetune_throughput.py's model (../shared/bench make_checkpoint.py "small"): the CPU ceiling's
BENCH_SMALL = Config(name="bench-llama-small", block_size=512, vocab_size=32000, n_layer=8, n_embd=512, n_head=8,
                     intermediate_size=1408)
LLAMA2_7B = Config.from_name("Llama-2-7b-hf")
TINY = Config(name="tiny", block_size=512, vocab_size=256, n_layer=2, n_embd=64, n_head=4, n_query_groups=2,
              intermediate_size=128)


class PhaseTimeout(Exception):
    pass


# ----------------------------------------------------------------------------------------------- shared pieces


@dataclass
class Run:
    """What every phase gets: the device, the sizes (tiny for the smoke test) and the wall-clock deadline."""
    device: torch.device
    tiny: bool
    model: str
    micro_batch_size: int
    max_seq_length: int
    steps: int
    examples_per_step: int
    deadline: float  # the whole run's
    phase_deadline: float = math.inf
    # what the running phase has measured so far: kept when it times out or fails
    partial: dict = field(default_factory=dict)

    def config(self, full: Config) -> Config:
        return TINY if self.tiny else full

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def time_left(self) -> float:
        return min(self.deadline, self.phase_deadline) - time.monotonic()


def random_examples(n: int, vocab_size: int, max_len: int, seed: int, median: float = 350,
                    prompt_share: float = 0.3) -> list[dict[str, torch.Tensor]]:
    """Instruction-like examples: lengths log-normal around `median` tokens (cut to [16, max_len]), the first
    `prompt_share` of each masked as its prompt (IGNORE_INDEX labels), as prepare_*.py writes them."""
    g = torch.Generator().manual_seed(seed)
    lengths = (torch.randn(n, generator=g) * 0.8 + math.log(median)).exp().round().clamp(16, max_len).long()
    out = []
    for n_tok in lengths.tolist():
        ids = torch.randint(3, vocab_size, (n_tok,), generator=g)
        labels = ids.clone()
        labels[: max(1, int(n_tok * prompt_share))] = IGNORE_INDEX
        out.append({"input_ids": ids, "labels": labels})
    return out


def build_model(config: Config, device: torch.device, dtype: torch.dtype, lora: LoRAConfig | None, seed: int = 0,
                max_seq_length: int | None = None) -> GPT:
    """A random-weight GPT on `device` in `dtype` (LoRA applied after the cast, as Fabric's bf16-true leaves the
    adapter in the model's dtype too); LoRA B is filled with small random values so every adapter has gradients."""
    torch.manual_seed(seed)
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # initialized in `dtype`: a 7B model never exists in float32 on the GPU
    try:
        with torch.device(device):
            model = GPT(config)
            if lora is not None:
                apply_lora(model, lora)
    finally:
        torch.set_default_dtype(default)
    model.max_seq_length = max_seq_length or config.block_size
    if lora is not None:
        torch.manual_seed(seed + 1)
        for name, p in lora_parameters(model).items():
            if name.endswith("lora_B"):
                torch.nn.init.normal_(p, std=0.02)
    return model


def lora_step(model, optimizer, batches: list[dict], device: torch.device, backward=None) -> tuple[float, int]:
    """One optimizer step of finetune/lora.py: loss summed over micro-batches, divided by the step's trainable
    tokens, backward per micro-batch, clip at 1.0, AdamW. Returns (mean loss per trainable token, tokens)."""
    tokens = sum(trainable_tokens(b["labels"]) for b in batches)
    total = torch.zeros((), device=device)
    for batch in batches:
        loss, _ = batch_loss(model, batch, device)
        (backward or torch.Tensor.backward)(loss / max(tokens, 1))
        total += loss.detach()
    torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return float(total) / max(tokens, 1), tokens


def free() -> None:
    """Give the memory of the models just deleted back to the GPU before the next phase measures its peak."""
    if torch.cuda.is_available():
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def close(a: torch.Tensor, b: torch.Tensor) -> dict:
    a, b = a.float().cpu(), b.float().cpu()
    diff = (a - b).abs()
    return {"max_abs_diff": float(diff.max()), "max_abs": float(b.abs().max()),
            "rel_l2": float(diff.norm() / b.norm().clamp_min(1e-30))}


# ----------------------------------------------------------------------------------------------- phases


def phase_parity(run: Run) -> dict:
    out = run.partial
    for label, config in (("tiny", TINY), ("100m", run.config(LLAMA_100M))):
        model = build_model(config, torch.device("cpu"), torch.float32, None).eval()
        g = torch.Generator().manual_seed(1)
        idx = torch.randint(0, config.vocab_size, (2, min(256, config.block_size)), generator=g)
        with torch.no_grad():
            ref = model(idx)
            model.to(run.device)
            got = model(idx.to(run.device))
        out[label] = close(got, ref)
        if label == "tiny":  # one packed row: examples of 1, 100 and 155 tokens
            positions = torch.cat([torch.arange(n) for n in (1, 100, 155)])[None]
            with torch.no_grad():
                got = model(idx[:1].to(run.device), positions=positions.to(run.device))
                model.cpu()
                ref = model(idx[:1], positions=positions)
            out["tiny_packed"] = close(got, ref)
        del model
        free()
    # fp32 on both sides: only the order of summation differs (no TF32: torch's default for matmuls)
    out["passed"] = all(r["max_abs_diff"] <= 1e-3 * max(1.0, r["max_abs"]) for r in out.values())
    return out


def phase_varlen(run: Run) -> dict:
    """FlexAttention (compiled) = the per-example SDPA loop on the device, output and gradients. Each case is a
    FlexAttention compile on CUDA (tens of seconds): every option in fp32 from the lengths, then bf16 at the 1B
    shape from the rows' positions (what the model gets under the model.py change of docs/gpu.md), whose compiled
    kernel the timing that follows reuses."""
    from lit_gpt.varlen import packed_attention, rows_block_mask

    out = run.partial
    out["model_uses_varlen"] = _model_uses_varlen()
    cuda = run.device.type == "cuda"
    backend = "flex" if cuda else "loop"  # FlexAttention has no backward on CPU
    cases = out["cases"] = []

    def check(lengths, heads, dtype, tol, mask=None, **options) -> None:
        q, k, v = _qkv(lengths, heads, 64, dtype, run.device)
        ref = _attn_with_grads(partial(packed_attention, lengths=lengths, backend="loop", **options), q, k, v)
        got = _attn_with_grads(partial(packed_attention, lengths=mask if mask is not None else lengths,
                                       backend=backend, **options), q, k, v)
        worst = max(close(a, b)["max_abs_diff"] / max(close(a, b)["max_abs"], 1e-6) for a, b in zip(got, ref))
        cases.append({"dtype": str(dtype).removeprefix("torch."), "heads": heads, "tokens": sum(lengths),
                      "mask": "rows_block_mask" if mask is not None else "lengths", **options,
                      "worst_relative_max_diff": worst, "passed": worst <= tol})

    lengths = (1, 130, 7, 300, 2, 611) if not run.tiny else (1, 30, 7, 2)
    check(lengths, (8, 2), torch.float32, 2e-4)
    check(lengths, (8, 8), torch.float32, 2e-4, sliding_window=64)
    check(lengths, (8, 1), torch.float32, 2e-4, softcap=30.0)
    row = tuple(_row_lengths(2048 if not run.tiny else 100, seed=3))
    positions = torch.cat([torch.arange(n) for n in row])[None].to(run.device)
    heads = (32, 4) if not run.tiny else (4, 2)
    check(row, heads, torch.bfloat16, 5e-2, mask=rows_block_mask(positions) if cuda else None)
    out["passed"] = all(c["passed"] for c in cases)
    if not cuda:
        return out
    # one layer's attention, forward + backward, on that row of 2,048 tokens of the 1B shape
    q, k, v = _qkv(row, heads, 64, torch.bfloat16, run.device)
    for name, fn in (("loop", partial(packed_attention, lengths=row, backend="loop")),
                     ("flex", partial(packed_attention, lengths=rows_block_mask(positions)))):
        for _ in range(3):
            _attn_with_grads(fn, q, k, v)
        run.sync()
        t0 = time.perf_counter()
        for _ in range(10):
            _attn_with_grads(fn, q, k, v)
        run.sync()
        out[f"ms_fwd_bwd_{name}"] = (time.perf_counter() - t0) / 10 * 1e3
    out["row_lengths"] = row
    out["flex_speedup_over_loop"] = out["ms_fwd_bwd_loop"] / out["ms_fwd_bwd_flex"]
    return out


def _model_uses_varlen() -> bool:
    """Whether lit_gpt/model.py routes packed rows through lit_gpt.varlen (the integrator's one-place change)."""
    import inspect

    import lit_gpt.model

    return "varlen" in inspect.getsource(lit_gpt.model)


def _row_lengths(total: int, seed: int) -> list[int]:
    g = torch.Generator().manual_seed(seed)
    lengths = []
    while sum(lengths) < total:
        lengths.append(int((torch.randn(1, generator=g) * 0.8 + math.log(350)).exp().clamp(16, 2048)))
    lengths[-1] -= sum(lengths) - total
    return [n for n in lengths if n > 0]


def _qkv(lengths, heads, hs, dtype, device):
    g = torch.Generator().manual_seed(0)
    T = sum(lengths)
    return tuple(torch.randn(1, h, T, hs, generator=g).to(device, dtype).requires_grad_()
                 for h in (heads[0], heads[1], heads[1]))  # q (B, nh, T, hs), k and v (B, ng, T, hs)


def _attn_with_grads(fn, q, k, v):
    y = fn(q, k, v)
    weights = torch.linspace(-1, 1, y.numel(), device=y.device, dtype=y.dtype).view_as(y)
    grads = torch.autograd.grad((y * weights).sum(), (q, k, v))
    return (y.detach(), *grads)


def phase_bf16(run: Run) -> dict:
    """The same LoRA run in fp32 and bf16-true (Fabric, as finetune/lora.py): bf16 must track fp32's losses."""
    if run.device.type == "cpu" and not run.tiny:
        return {"skipped": "bf16 training on CPU is slow and not what this checks"}
    config = run.config(replace(LLAMA_100M, n_layer=4))
    examples = random_examples(16, config.vocab_size, 256, seed=5)
    losses = run.partial
    for precision in ("32-true", "bf16-true"):
        fabric = _fabric(run, precision)
        dtype = torch.bfloat16 if precision == "bf16-true" else torch.float32
        model = build_model(config, run.device, dtype, LoRAConfig(lora_dropout=0.0), max_seq_length=256)
        model = fabric.setup_module(model)
        optimizer = fabric.setup_optimizers(torch.optim.AdamW(
            [p for p in model.parameters() if p.requires_grad], lr=1e-2))
        losses[precision] = []
        for step in range(8):  # the same 4 examples every step: the loss must fall
            batches = step_batches(examples[:4], 2, 256, packing=True)
            losses[precision].append(lora_step(model, optimizer, batches, run.device, fabric.backward)[0])
        del model, optimizer
        free()
    fp32, bf16 = losses.pop("32-true"), losses.pop("bf16-true")
    gap = max(abs(a - b) for a, b in zip(bf16, fp32))
    # bf16 follows: its losses stay within a tenth of how far training moved the fp32 loss
    return {"loss_fp32": fp32, "loss_bf16": bf16, "max_abs_diff": gap, "fp32_fall": fp32[0] - fp32[-1],
            "passed": fp32[-1] < fp32[0] and bf16[-1] < bf16[0] and gap < 0.1 * (fp32[0] - fp32[-1])}


def _fabric(run: Run, precision: str):
    import lightning as L

    fabric = L.Fabric(accelerator=run.device.type, devices=1, precision=precision, loggers=[])
    fabric.launch()
    return fabric


def phase_packed(run: Run) -> dict:
    """Packed = padded through finetune's own pieces, on the device: the summed loss and every LoRA gradient."""
    config = run.config(replace(LLAMA_100M, n_layer=2))
    examples = random_examples(6, config.vocab_size, 200, seed=7, median=80)
    out = run.partial
    for checkpointing in (False, True):
        results = {}
        for packing in (False, True):
            model = build_model(config, run.device, torch.float32, LoRAConfig(lora_dropout=0.0), max_seq_length=200)
            model.activation_checkpointing = checkpointing
            total = 0.0
            for batch in step_batches(examples, 3, 200, packing=packing):
                loss, _ = batch_loss(model, batch, run.device, chunk_size=16)
                loss.backward()
                total += float(loss.detach())
            results[packing] = (total, {k: p.grad.detach().cpu() for k, p in lora_parameters(model).items()})
            del model
            free()
        (loss_pad, grads_pad), (loss_pack, grads_pack) = results[False], results[True]
        grad_err = max(close(grads_pack[k], grads_pad[k])["rel_l2"] for k in grads_pad)
        out["checkpointing" if checkpointing else "plain"] = {
            "loss_padded": loss_pad, "loss_packed": loss_pack, "loss_rel_diff": abs(loss_pack - loss_pad) / loss_pad,
            "max_grad_rel_l2": grad_err,
            "passed": abs(loss_pack - loss_pad) / loss_pad < 1e-5 and grad_err < 1e-4}
    out["passed"] = all(r["passed"] for r in out.values())
    return out


def phase_qlora(run: Run) -> dict:
    try:
        import bitsandbytes  # noqa: F401
    except ImportError as e:
        return {"skipped": f"bitsandbytes is not importable ({e}); install its wheel from .whl (bench/gpu_wheels.sh)"}
    from lit_gpt.quantize import quantize_model

    config = run.config(replace(LLAMA_100M, n_layer=4))
    dtype = torch.bfloat16 if run.device.type == "cuda" else torch.float32
    examples = random_examples(8, config.vocab_size, 256, seed=9)
    base = build_model(config, run.device, dtype, None, max_seq_length=256).eval()
    idx = examples[0]["input_ids"][None].to(run.device)
    with torch.no_grad():
        dense_logits = base(idx)
    quantize_model(base, "bnb.nf4", log=lambda _: None)
    with torch.no_grad():
        nf4_logits = base(idx)
    apply_lora(base, LoRAConfig())
    model = base.train()
    optimizer = torch.optim.AdamW(lora_parameters(model).values(), lr=2e-3)
    losses = []
    free()
    for _ in range(5):
        losses.append(lora_step(model, optimizer, step_batches(examples[:4], 2, 256, packing=True), run.device)[0])
    err = close(nf4_logits, dense_logits)
    return {"quantized_logits_rel_l2": err["rel_l2"], "losses": losses,
            "peak_memory_mb": _peak_mb(run), "passed": all(map(math.isfinite, losses)) and losses[-1] < losses[0]
            and err["rel_l2"] < 0.5}


def phase_compile(run: Run) -> dict:
    """torch.compile as finetune/lora.py --compile does it, with packing, the chunked head + loss and activation
    checkpointing: the losses of the compiled model equal the eager ones step for step (fp32)."""
    config = run.config(replace(LLAMA_100M, n_layer=2))
    examples = random_examples(24, config.vocab_size, 512, seed=11, median=120)
    # 3 to 5 examples a row: a graph specialized to one row's number of examples would recompile every step
    bounds = [0, 3, 7, 12, 15, 19, 24]
    steps = [examples[a:b] for a, b in zip(bounds, bounds[1:])]
    losses, times = {}, {}
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    for compiled in (False, True):
        model = build_model(config, run.device, torch.float32, LoRAConfig(lora_dropout=0.0), max_seq_length=512)
        model.activation_checkpointing = True
        optimizer = torch.optim.AdamW(lora_parameters(model).values(), lr=1e-3)
        runner = torch.compile(model, dynamic=True) if compiled else model
        losses[compiled], times[compiled] = [], []
        for examples_of_step in steps:
            t0 = time.perf_counter()
            losses[compiled].append(lora_step(runner, optimizer, step_batches(examples_of_step, 5, 512, True),
                                              run.device)[0])
            run.sync()
            times[compiled].append(time.perf_counter() - t0)
        del model, runner, optimizer
        free()
    counters = torch._dynamo.utils.counters
    rel = max(abs(a - b) / abs(b) for a, b in zip(losses[True], losses[False]))
    # a graph per compiled frame and shape; many more graphs than steps means recompiling every step
    return {"loss_eager": losses[False], "loss_compiled": losses[True], "max_relative_diff": rel,
            "first_step_s_compiled": times[True][0], "later_steps_s_compiled": times[True][1:],
            "later_steps_s_eager": times[False][1:], "dynamo_stats": dict(counters["stats"]),
            "graph_breaks": {k: v for k, v in counters["graph_break"].items()},
            "passed": rel < 1e-3}


# ----------------------------------------------------------------------------------------------- throughput + MFU


def step_flops(config: Config, lora: LoRAConfig, row_lengths: list[list[int]], trainable: int) -> dict:
    """Model FLOPs of one LoRA optimizer step (multiply-add = 2 FLOPs), two ways:

    "6N" (Kaplan et al. 2020, https://arxiv.org/abs/2001.08361, sec. 2.1; PaLM's MFU, Chowdhery et al. 2022,
    https://arxiv.org/abs/2204.02311, appendix B): 6 x N x tokens, N = the parameters of every matmul (blocks and
    head, not the embedding lookup), as if every weight got its gradient; attention not included.

    "exact" for LoRA, what the step mathematically needs: per token, a forward through every block matmul (2N_block)
    and the input gradient of each (2N_block) but no weight gradient for the frozen weights (that third 2N is the
    difference to 6N); the input gradient below the lowest adapter is not needed (block 0's query/key/value
    projections take the frozen embedding); the head only on the trainable positions, forward and input gradient
    (4 x n_embd x vocab each: lit_gpt.training.chunked_loss_sum skips the others); attention 4 x n_head x head_size
    FLOPs per visible query-key pair forward (QK^T and AV) and twice that backward, the pairs being
    n(n+1)/2 per example of n tokens (causal, nothing across examples); the adapters' own 6 x their parameters per
    token. Element-wise work (norms, RoPE, softmax) is not counted, as in both papers.
    """
    d, L = config.n_embd, config.n_layer
    q_out, kv_out = config.n_head * config.head_size, config.n_query_groups * config.head_size
    mlp = (3 if config.mlp_class == "swiglu" else 2) * d * config.intermediate_size
    per_block = d * q_out + 2 * d * kv_out + q_out * d + mlp
    head = d * config.vocab_size
    tokens = sum(sum(r) for r in row_lengths)
    pairs = sum(n * (n + 1) // 2 for r in row_lengths for n in r)
    n_lora = sum(_lora_params(config, lora))
    attention = 3 * 4 * config.n_head * config.head_size * pairs * L
    exact = (4 * per_block * L - 2 * d * (q_out + 2 * kv_out)) * tokens + 4 * head * trainable + attention \
        + 6 * n_lora * tokens
    return {"6N": 6 * (per_block * L + head) * tokens, "exact": exact, "attention": attention, "tokens": tokens,
            "params_matmul": per_block * L + head}


def _lora_params(config: Config, lora: LoRAConfig) -> list[int]:
    d, r = config.n_embd, lora.lora_r
    q_out, kv_out = config.n_head * config.head_size, config.n_query_groups * config.head_size
    shapes = {"attn.query": (d, q_out), "attn.key": (d, kv_out), "attn.value": (d, kv_out), "attn.proj": (q_out, d),
              "mlp.fc_1": (d, config.intermediate_size), "mlp.fc_2": (d, config.intermediate_size),
              "mlp.proj": (config.intermediate_size, d), "lm_head": (d, config.vocab_size)}
    per = [r * (i + o) for name, (i, o) in shapes.items() if name in lora.targets()]
    return [p * (1 if "lm_head" in name else config.n_layer) for p, name in zip(per, lora.targets())]


def step_gemms(config: Config, tokens: int, trainable: int) -> list[tuple[int, int, int, int, bool]]:
    """The frozen weights' matmuls of one LoRA step as (m, k, n, count, weight_transposed): the forward of every
    block linear, x (m, k) @ W^T with W stored (n, k) as nn.Linear stores it (True), its input gradient
    (m, n) @ W, W (n, k) (False), and the head on the trainable positions both ways."""
    d = config.n_embd
    q_out, kv_out = config.n_head * config.head_size, config.n_query_groups * config.head_size
    linears = [(d, q_out), (d, kv_out), (d, kv_out), (q_out, d), (d, config.intermediate_size),
               (d, config.intermediate_size), (config.intermediate_size, d)]
    if config.mlp_class != "swiglu":
        linears.remove((d, config.intermediate_size))
    gemms: dict[tuple[int, int, int, bool], int] = {}
    for (k, n), count in [*((shape, config.n_layer) for shape in linears), ((d, config.vocab_size), 0)]:
        m = tokens if count else trainable  # the head (count 0 here) runs once, on the trainable positions
        for key in ((m, k, n, True), (m, n, k, False)):  # forward, input gradient
            gemms[key] = gemms.get(key, 0) + (count or 1)
    return [(m, k, n, c, transposed) for (m, k, n, transposed), c in gemms.items()]


def matmul_rate(gemms: list[tuple[int, int, int, int, bool]], device: torch.device, dtype: torch.dtype,
                min_seconds: float = 0.2) -> dict:
    """This device's measured matmul rate on `gemms`: each shape timed alone (best of repeats), and their total
    FLOPs over their total time, weighted by how often the step runs each."""
    total_flops = total_time = 0.0
    shapes = []
    for m, k, n, count, transposed in gemms:
        a = torch.randn(m, k, device=device, dtype=dtype)
        w = torch.randn(*((n, k) if transposed else (k, n)), device=device, dtype=dtype)
        run = partial(torch.nn.functional.linear if transposed else torch.matmul, a, w)
        run()
        best, spent = float("inf"), 0.0
        while spent < min_seconds:
            _sync(device)
            t0 = time.perf_counter()
            for _ in range(3):
                run()
            _sync(device)
            dt = (time.perf_counter() - t0) / 3
            best, spent = min(best, dt), spent + 3 * dt
        flops = 2 * m * k * n
        shapes.append({"m": m, "k": k, "n": n, "weight_transposed": transposed, "count": count,
                       "tflops": flops / best / 1e12})
        total_flops += flops * count
        total_time += best * count
        del a, w
    return {"flops_per_s": total_flops / total_time, "gemm_seconds_per_step": total_time, "shapes": shapes}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_flops(device: torch.device) -> tuple[str, float | None]:
    if device.type != "cuda":
        return platform.processor() or platform.machine(), None
    name = torch.cuda.get_device_name(device)
    return name, next((peak for key, peak in PEAK_BF16 if key in name), None)


def _throughput_setup(run: Run) -> tuple[Config, str, torch.dtype, list[list[dict]]]:
    if run.tiny:
        config = TINY
    else:
        config = {"1b": LLAMA_1B, "bench": BENCH_SMALL, "100m": LLAMA_100M}[run.model]
    precision = "bf16-true" if run.device.type == "cuda" else "32-true"
    dtype = torch.bfloat16 if precision == "bf16-true" else torch.float32
    seq = min(run.max_seq_length, config.block_size)
    per_step = run.examples_per_step
    n_steps = run.steps + 3
    examples = random_examples(per_step * n_steps, config.vocab_size, seq, seed=13,
                               median=350 if seq >= 1024 else seq / 4)
    return config, precision, dtype, [examples[i * per_step : (i + 1) * per_step] for i in range(n_steps)]


def phase_throughput(run: Run) -> dict:
    config, precision, dtype, steps = _throughput_setup(run)
    lora = LoRAConfig()
    seq = min(run.max_seq_length, config.block_size)
    device_name, peak = peak_flops(run.device)
    out = run.partial
    out.update({"model": config.name, "params_matmul": step_flops(config, lora, [[1]], 0)["params_matmul"],
                "precision": precision, "device": device_name, "peak_bf16_flops": peak, "max_seq_length": seq,
                "micro_batch_size": run.micro_batch_size, "examples_per_step": len(steps[0]),
                "timed_steps": run.steps, "lora": "r 8, query + value",
                "attention": "lit_gpt.varlen (FlexAttention)" if _model_uses_varlen() and run.device.type == "cuda"
                else "lit_gpt.model (per-example SDPA loop: apply the model.py diff of docs/gpu.md first)"})
    # compiling on a CPU costs minutes and measured slower there (README); the ceiling comes before it, so a slow
    # compile that runs out of time cannot take it along
    for label in ("eager", "ceiling", "compiled"):
        if label == "compiled" and run.device.type != "cuda":
            continue
        if run.time_left() < 30:
            out[label] = {"skipped": "out of time"}
            continue
        if label == "ceiling":
            _ceiling(run, config, dtype, out)
            continue
        out[label] = {}  # filled step by step: a timeout keeps the steps done
        _timed_lora_steps(run, config, precision, dtype, lora, steps, seq, label == "compiled", out[label])
        _annotate(out[label], config, lora, peak, out.get("measured_matmul_flops_per_s"))
    return out


def _ceiling(run: Run, config: Config, dtype: torch.dtype, out: dict) -> None:
    """This device's matmul rate on the eager step's own GEMM shapes, measured now."""
    eager = out.get("eager", {})
    if "tokens_per_row" not in eager:
        return
    gemms = step_gemms(config, eager["tokens_per_row"], eager["trainable_per_row"])
    rate = matmul_rate(gemms, run.device, dtype, 0.05 if run.tiny else 0.2)
    out["measured_matmul_flops_per_s"] = rate["flops_per_s"]
    out["gemm_shapes"] = rate["shapes"]
    eager["fraction_of_measured_matmul_rate"] = eager["exact_flops_per_s"] / rate["flops_per_s"]


def _annotate(r: dict, config: Config, lora: LoRAConfig, peak: float | None, matmul_rate: float | None) -> None:
    if "seconds" not in r:
        return
    flops = step_flops(config, lora, r["row_lengths_all"], r["trainable_tokens"])
    r["exact_flops_per_s"] = flops["exact"] / r["seconds"]
    r["6N_flops_per_s"] = flops["6N"] / r["seconds"]
    r["attention_share_of_exact"] = flops["attention"] / flops["exact"]
    if peak:
        r["mfu_exact"] = r["exact_flops_per_s"] / peak
        r["mfu_6N"] = r["6N_flops_per_s"] / peak
    if matmul_rate:
        r["fraction_of_measured_matmul_rate"] = r["exact_flops_per_s"] / matmul_rate
    del r["row_lengths_all"]


def _timed_lora_steps(run: Run, config: Config, precision: str, dtype: torch.dtype, lora: LoRAConfig,
                      steps: list[list[dict]], seq: int, compiled: bool, r: dict) -> None:
    fabric = _fabric(run, precision)
    free()
    model = build_model(config, run.device, dtype, lora, max_seq_length=seq)
    raw = model
    if compiled:
        torch._dynamo.utils.counters.clear()
        model = torch.compile(model, dynamic=True)
    model = fabric.setup_module(model)
    optimizer = fabric.setup_optimizers(torch.optim.AdamW(lora_parameters(raw).values(), lr=1e-4))
    warmup = len(steps) - run.steps
    times, all_times, tokens, trainable, losses, rows = [], [], 0, 0, [], []
    r.update(losses=losses, step_seconds=all_times)
    for i, examples in enumerate(steps):
        if run.time_left() < 10:
            break
        batches = step_batches(examples, run.micro_batch_size, seq, packing=True)
        run.sync()
        t0 = time.perf_counter()
        loss, n_trainable = lora_step(model, optimizer, batches, run.device, fabric.backward)
        run.sync()
        dt = time.perf_counter() - t0
        all_times.append(dt)
        losses.append(loss)
        if i >= warmup:
            times.append(dt)
            tokens += sum(int(b["length"].sum()) for b in batches)
            trainable += n_trainable
            rows += [_lengths_of(b) for b in batches]
    r["peak_memory_mb"] = _peak_mb(run)
    if compiled:  # more graphs than a handful: recompiling as rows change
        r["dynamo_stats"] = dict(torch._dynamo.utils.counters["stats"])
    if times:
        rows_tokens = [sum(x) for x in rows]
        r.update(seconds=sum(times), steps=len(times), tokens=tokens, tokens_per_s=tokens / sum(times),
                 s_per_step=sum(times) / len(times), tokens_per_step=tokens / len(times),
                 tokens_per_row=round(sum(rows_tokens) / len(rows_tokens)),
                 trainable_per_row=round(trainable / len(rows_tokens)), trainable_tokens=trainable,
                 row_lengths_all=rows)
    del model, raw, optimizer
    free()


def _lengths_of(batch: dict) -> list[int]:
    starts = (batch["positions"][0] == 0).nonzero().flatten().tolist()
    end = int(batch["length"][0])
    return [b - a for a, b in zip(starts, [*starts[1:], end])]


def _peak_mb(run: Run) -> float:
    from lit_gpt.utils import peak_memory_mb

    return peak_memory_mb(run.device)  # CUDA: allocated by torch; CPU: this process' peak RSS


# ----------------------------------------------------------------------------------------------- peers


def phase_peers(run: Run) -> dict:
    """transformers + peft and litgpt 0.5.13 on the throughput phase's model shape, examples and steps, each padded
    as that tool pads (a micro-batch of `micro_batch_size` examples, right-padded to its longest), bf16, LoRA r 8
    on query and value, AdamW, in this process. Real (non-padding) tokens per second compare with ours."""
    config, precision, dtype, steps = _throughput_setup(run)
    seq = min(run.max_seq_length, config.block_size)
    out = run.partial
    for name, fn in (("hf_peft", _peer_hf), ("litgpt", _peer_litgpt)):
        if run.time_left() < 30:
            out[name] = {"skipped": "out of time"}
            continue
        try:
            out[name] = fn(run, config, dtype, steps, seq)
        except ImportError as e:
            out[name] = {"skipped": f"not importable: {e}"}
        free()
    return out


def _padded(examples: list[dict], micro_batch_size: int, seq: int) -> list[dict]:
    from lit_gpt.batching import pad_collate

    return [pad_collate(examples[i : i + micro_batch_size], seq) for i in range(0, len(examples), micro_batch_size)]


def _peer_loop(run: Run, steps, micro_batch_size: int, seq: int, loss_of, params, model) -> dict:
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    warmup = len(steps) - run.steps
    times, tokens, losses = [], 0, []
    for i, examples in enumerate(steps):
        if run.time_left() < 10:
            break
        batches = _padded(examples, micro_batch_size, seq)
        run.sync()
        t0 = time.perf_counter()
        total = 0.0
        for batch in batches:
            loss = loss_of(batch) / len(batches)
            loss.backward()
            total += loss.detach()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(total))
        run.sync()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
            tokens += sum(int(b["length"].sum()) for b in batches)
    r = {"losses": losses, "peak_memory_mb": _peak_mb(run)}
    if times:
        r.update(seconds=sum(times), steps=len(times), tokens=tokens, tokens_per_s=tokens / sum(times),
                 s_per_step=sum(times) / len(times))
    return r


def _peer_hf(run: Run, config: Config, dtype, steps, seq) -> dict:
    import peft
    import transformers
    from peft import LoraConfig, get_peft_model

    hf = {k: v for k, v in config.to_hf_config().items() if k not in ("architectures", "model_type", "torch_dtype")}
    torch.manual_seed(0)
    with torch.device(run.device):
        model = transformers.AutoModelForCausalLM.from_config(transformers.LlamaConfig(**hf),
                                                              attn_implementation="sdpa")
    model.to(dtype)
    model.config.use_cache = False
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.05, target_modules=["q_proj", "v_proj"],
                                             bias="none", task_type="CAUSAL_LM"))
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]

    def loss_of(batch):
        ids = batch["input_ids"].to(run.device)
        mask = (torch.arange(ids.size(1))[None] < batch["length"][:, None]).to(run.device)
        return model(input_ids=ids, attention_mask=mask, labels=batch["labels"].to(run.device)).loss

    r = _peer_loop(run, steps, run.micro_batch_size, seq, loss_of, params, model)
    r["versions"] = {"transformers": transformers.__version__, "peft": peft.__version__}
    return r


def _peer_litgpt(run: Run, config: Config, dtype, steps, seq) -> dict:
    import importlib.metadata

    from litgpt.lora import GPT as LitGPT
    from litgpt.lora import Config as LitConfig
    from litgpt.lora import mark_only_lora_as_trainable
    from litgpt.utils import chunked_cross_entropy

    lit_config = LitConfig(
        name=config.name, block_size=config.block_size, vocab_size=config.vocab_size,
        padded_vocab_size=config.vocab_size, n_layer=config.n_layer, n_head=config.n_head, n_embd=config.n_embd,
        n_query_groups=config.n_query_groups, rotary_percentage=1.0, parallel_residual=False, bias=False,
        norm_class_name="RMSNorm", norm_eps=config.norm_eps, mlp_class_name="LLaMAMLP",
        intermediate_size=config.intermediate_size, lora_r=8, lora_alpha=16, lora_dropout=0.05, lora_query=True,
        lora_key=False, lora_value=True, lora_projection=False, lora_mlp=False, lora_head=False,
    )
    torch.manual_seed(0)
    with torch.device(run.device):
        model = LitGPT(lit_config)
    model.to(dtype)
    model.max_seq_length = seq
    mark_only_lora_as_trainable(model)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]

    def loss_of(batch):  # litgpt finetune_lora's step: chunked head, chunked cross-entropy over the shifted labels
        ids, targets = batch["input_ids"].to(run.device), batch["labels"].to(run.device)
        logits = model(ids, lm_head_chunk_size=128)
        logits[-1] = logits[-1][..., :-1, :]
        return chunked_cross_entropy(logits, targets[..., 1:])

    r = _peer_loop(run, steps, run.micro_batch_size, seq, loss_of, params, model)
    r["versions"] = {"litgpt": importlib.metadata.version("litgpt")}
    return r


# ----------------------------------------------------------------------------------------------- memory


def phase_memory7b(run: Run) -> dict:
    """Peak memory of one LoRA step (r 8, query + value) of the Llama-2-7B shape on one row of 2,048 tokens,
    bf16-true, random weights; the README's table is an estimate of the same (bench/memory_estimate.py)."""
    if run.device.type != "cuda":
        return {"skipped": "needs a GPU"}
    config = run.config(LLAMA2_7B)
    free_bytes, total_bytes = torch.cuda.mem_get_info(run.device)
    if free_bytes < 30 * 2**30 and not run.tiny:
        return {"skipped": f"{free_bytes / 2**30:.0f} GiB free; the 7B shape needs ~30"}
    examples = random_examples(8, config.vocab_size, 2048, seed=17, median=2048)  # full rows
    model = build_model(config, run.device, torch.bfloat16, LoRAConfig(), max_seq_length=2048)
    optimizer = torch.optim.AdamW(lora_parameters(model).values(), lr=1e-4)
    out = run.partial
    out["weights_mb"] = torch.cuda.memory_allocated(run.device) / 2**20
    for checkpointing in (False, True):
        model.activation_checkpointing = checkpointing
        torch.cuda.reset_peak_memory_stats(run.device)
        t0 = time.perf_counter()
        lora_step(model, optimizer, step_batches(examples[:1], 1, 2048, packing=True), run.device)
        run.sync()
        out["checkpointing" if checkpointing else "plain"] = {
            "peak_mb": _peak_mb(run), "step_s": time.perf_counter() - t0}
    return out


# ----------------------------------------------------------------------------------------------- runner


RUNNERS = {"parity": phase_parity, "varlen": phase_varlen, "bf16": phase_bf16, "packed": phase_packed,
           "qlora": phase_qlora, "compile": phase_compile, "throughput": phase_throughput, "peers": phase_peers,
           "memory7b": phase_memory7b}


@contextlib.contextmanager
def time_limit(seconds: float):
    """Raise PhaseTimeout in this (main) thread after `seconds`; a running CUDA kernel finishes first."""
    def handler(signum, frame):
        raise PhaseTimeout(f"over its {seconds:.0f} s limit")

    previous = signal.signal(signal.SIGALRM, handler)
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 1))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def environment(device: torch.device) -> dict:
    import importlib.metadata

    env = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
           "device": peak_flops(device)[0], "cpu_count": os.cpu_count(), "load": _loadavg(),
           "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    for package in ("lightning", "transformers", "peft", "bitsandbytes", "litgpt", "jsonargparse"):
        try:
            env[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            env[package] = None
    return env


def _loadavg() -> str | None:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return None


def write(results: dict, out_dirs: list[Path]) -> None:
    for out_dir in out_dirs:
        atomic_write_json(out_dir / "gpu_check.json", results)
        atomic_write_text(out_dir / "gpu_check.md", markdown(results))


def markdown(results: dict) -> str:
    lines = ["# bench/gpu_check.py", "", "```", json.dumps(results["environment"], indent=1), "```", "",
             "| phase | status | seconds | summary |", "|---|---|---|---|"]
    for name, r in results["phases"].items():
        lines.append(f"| {name} | {r['status']} | {r.get('seconds', 0):.1f} | {_summary(name, r)} |")
    lines += _headline(results["phases"])
    lines += ["", "Full results: gpu_check.json (same folder)."]
    return "\n".join(lines) + "\n"


def _headline(phases: dict) -> list[str]:
    """The issue's targets: MFU >= 50% (exact count) and more real tokens/s than both peers, same shapes and steps."""
    throughput = (phases.get("throughput") or {}).get("result") or (phases.get("throughput") or {}).get("partial")
    if not throughput:
        return []
    ours = {label: throughput[label]["tokens_per_s"] for label in ("eager", "compiled")
            if "tokens_per_s" in (throughput.get(label) or {})}
    if not ours:
        return []
    best_label, best = max(ours.items(), key=lambda kv: kv[1])
    mfu = throughput[best_label].get("mfu_exact")
    lines = ["", "## Targets", "", f"- ours, best of eager/compiled ({best_label}): {best:,.0f} real tokens/s"
             + (f", MFU {mfu:.1%} exact ({throughput[best_label]['mfu_6N']:.1%} by 6N): target 50%, "
                f"{'met' if mfu >= 0.5 else 'NOT met'}" if mfu is not None else ", no bf16 peak known for this device")]
    peers = (phases.get("peers") or {}).get("result") or (phases.get("peers") or {}).get("partial") or {}
    for name, r in peers.items():
        if "tokens_per_s" in r:
            ratio = best / r["tokens_per_s"]
            lines.append(f"- vs {name}: {r['tokens_per_s']:,.0f} tokens/s; ours {ratio:.2f}x "
                         f"({'ahead' if ratio > 1 else 'NOT ahead'})")
        else:
            lines.append(f"- vs {name}: {r.get('skipped', 'no result')}")
    return lines


def _summary(name: str, r: dict) -> str:
    res = r.get("result") or {}
    if r["status"] != "done":
        return (r.get("error") or "").strip().splitlines()[-1][:200] if r.get("error") else ""
    if name == "throughput":
        parts = []
        for label in ("eager", "compiled"):
            x = res.get(label) or {}
            if "tokens_per_s" in x:
                mfu = f", MFU {x['mfu_exact']:.1%} exact / {x['mfu_6N']:.1%} 6N" if "mfu_exact" in x else ""
                frac = x.get("fraction_of_measured_matmul_rate")
                parts.append(f"{label}: {x['tokens_per_s']:,.0f} tok/s{mfu}"
                             + (f", {frac:.0%} of measured matmul rate" if frac else ""))
        return "; ".join(parts)
    if name == "peers":
        return "; ".join(f"{k}: {v['tokens_per_s']:,.0f} tok/s" if "tokens_per_s" in v else f"{k}: {v.get('skipped')}"
                         for k, v in res.items())
    if "skipped" in res:
        return f"skipped: {res['skipped']}"
    if "passed" in res:
        return "passed" if res["passed"] else "FAILED"
    return ""


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out_dir", type=Path, default=ROOT / "bench" / "results" / "gpu")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--tiny", action="store_true", help="tiny models everywhere: the CPU smoke test")
    p.add_argument("--phases", default=",".join(PHASES), help=f"comma-separated, from {', '.join(PHASES)}")
    # with imports and the wheels' installation the command stays well inside a 10-minute slot
    p.add_argument("--budget_s", type=float, default=500, help="the whole run's wall-clock limit")
    p.add_argument("--model", default="1b", choices=["1b", "100m", "bench"], help="the throughput/peers model")
    p.add_argument("--micro_batch_size", type=int, default=4)
    p.add_argument("--max_seq_length", type=int, default=2048)
    p.add_argument("--steps", type=int, default=10, help="timed optimizer steps (3 more untimed come first)")
    p.add_argument("--examples_per_step", type=int, default=16,
                   help="examples per optimizer step, packed into rows of micro_batch_size x max_seq_length tokens")
    args = p.parse_args(argv)
    phases = [x for x in args.phases.split(",") if x]
    unknown = set(phases) - set(PHASES)
    if unknown:
        p.error(f"unknown phases {sorted(unknown)}; choose from {', '.join(PHASES)}")
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        p.error("no CUDA device visible to torch; pass --device cpu for the CPU run")
    start = time.monotonic()
    run = Run(device=device, tiny=args.tiny, model=args.model, micro_batch_size=args.micro_batch_size,
              max_seq_length=args.max_seq_length if not args.tiny else 128, steps=args.steps if not args.tiny else 2,
              examples_per_step=args.examples_per_step, deadline=start + args.budget_s)
    out_dirs = [args.out_dir] + ([Path(os.environ["OUT"])] if os.environ.get("OUT") else [])
    results = {"environment": environment(device), "args": {k: str(v) for k, v in vars(args).items()}, "phases": {}}
    write(results, out_dirs)
    for name in phases:
        left = run.time_left()
        if left < 5:
            results["phases"][name] = {"status": "skipped", "error": "the run's --budget_s was used up"}
            write(results, out_dirs)
            continue
        # the limits are an H100's; a CPU takes up to 10x as long
        limit = min(LIMITS[name] * (1 if device.type == "cuda" else 4 if args.tiny else 10), left)
        print(f"== {name} (limit {limit:.0f} s)", flush=True)
        t0 = time.monotonic()
        torch._dynamo.reset()  # every phase compiles as a fresh process would (recompile limits, counters)
        run.partial, run.phase_deadline = {}, t0 + limit
        entry: dict = {"status": "done"}
        try:
            # the phases' loops stop by themselves at `limit`; this is the backstop for a step that does not
            with time_limit(limit + min(5, limit)):
                entry["result"] = RUNNERS[name](run)
        except PhaseTimeout as e:
            entry = {"status": "timeout", "error": str(e), "partial": run.partial}
        except Exception as e:  # one failing phase must not cost the others their results
            entry = {"status": "error", "error": f"{type(e).__name__}: {e}", "partial": run.partial,
                     "traceback": traceback.format_exc()[-3000:]}
        entry["seconds"] = time.monotonic() - t0
        results["phases"][name] = entry
        free()
        print(f"   {entry['status']} in {entry['seconds']:.1f} s: {_summary(name, entry)}", flush=True)
        write(results, out_dirs)
    results["total_seconds"] = time.monotonic() - start
    write(results, out_dirs)
    print(f"results: {', '.join(str(d / 'gpu_check.md') for d in out_dirs)} ({results['total_seconds']:.0f} s)")
    return results


if __name__ == "__main__":
    main()
