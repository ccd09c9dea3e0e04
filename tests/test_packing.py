"""Packing several examples per row changes nothing but the padding; the chunked loss changes nothing but memory."""
from __future__ import annotations

import pytest
import torch

from lit_gpt.collate import pack_rows, packed_collate, pad_collate, step_batches
from lit_gpt.config import Config
from lit_gpt.data.tokenize import IGNORE_INDEX
from lit_gpt.model import GPT
from lit_gpt.training import chunked_loss_sum, masked_loss_sum

CONFIGS = {
    "llama_gqa": Config(vocab_size=64, n_layer=2, n_embd=32, n_head=4, n_query_groups=2, intermediate_size=48,
                        block_size=64),
    "mistral_window": Config(vocab_size=64, n_layer=2, n_embd=32, n_head=4, n_query_groups=2, intermediate_size=48,
                             block_size=64, architecture="mistral", sliding_window=4),
    "neox_partial_rotary": Config(vocab_size=64, n_layer=2, n_embd=32, n_head=4, intermediate_size=48, block_size=64,
                                  architecture="gpt_neox", norm_class="LayerNorm", mlp_class="gelu", attn_bias=True,
                                  mlp_bias=True, rotary_percentage=0.25, parallel_residual=True),
}


def _samples(seed: int = 0, lengths=(7, 3, 11, 5, 9, 4)) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for n in lengths:
        ids = torch.randint(1, 64, (n,), generator=g)
        labels = ids.clone()
        labels[: n // 2] = IGNORE_INDEX  # a masked prompt
        out.append({"input_ids": ids, "labels": labels})
    return out


def _model(name: str) -> GPT:
    torch.manual_seed(0)
    return GPT(CONFIGS[name]).eval()


@pytest.mark.parametrize("row_length", [16, 48], ids=["rows", "one_long_row"])
@pytest.mark.parametrize("name", list(CONFIGS))
def test_packed_loss_equals_unpacked(name: str, row_length: int) -> None:
    model, samples = _model(name), _samples()
    model.max_seq_length = 16  # a packed row may be longer: only positions index the RoPE tables
    packed = packed_collate(samples, max_seq_length=16, row_length=row_length)
    assert packed["input_ids"].shape[0] == (1 if row_length == 48 else 3)  # several examples share rows
    padded = pad_collate(samples)
    with torch.no_grad():
        loss_packed, n_packed = masked_loss_sum(model(packed["input_ids"], positions=packed["positions"]),
                                                packed["labels"])
        loss_padded, n_padded = masked_loss_sum(model(padded["input_ids"]), padded["labels"])
    assert n_packed == n_padded
    torch.testing.assert_close(loss_packed, loss_padded, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_no_attention_across_examples(name: str) -> None:
    """Perturb one packed example: the logits of the others in its row do not change at all."""
    model, samples = _model(name), _samples(lengths=(6, 5, 4))
    batch = packed_collate(samples, max_seq_length=32)
    assert batch["input_ids"].shape[0] == 1
    perturbed = batch["input_ids"].clone()
    perturbed[0, 6:11] = (perturbed[0, 6:11] + 7) % 64  # the middle example
    with torch.no_grad():
        before = model(batch["input_ids"], positions=batch["positions"])
        after = model(perturbed, positions=batch["positions"])
    torch.testing.assert_close(after[0, :6], before[0, :6], rtol=0, atol=0)
    torch.testing.assert_close(after[0, 11:], before[0, 11:], rtol=0, atol=0)
    assert (after[0, 6:11] - before[0, 6:11]).abs().max() > 1e-3


@pytest.mark.parametrize("name", ["llama_gqa", "neox_partial_rotary"])
def test_one_packed_row_attends_by_segments_like_the_mask(name: str) -> None:
    """One row is computed example by example (fused causal SDPA per slice); two rows use the block-diagonal mask:
    the same logits and gradients either way."""
    from lit_gpt.model import packed_attention

    model, samples = _model(name).train(), _samples(lengths=(6, 1, 5, 4))
    batch = packed_collate(samples, max_seq_length=32)
    ids, positions = batch["input_ids"], batch["positions"]
    assert packed_attention(positions, None) == (6, 1, 5, 4)
    assert packed_attention(positions.repeat(2, 1), None).shape == (2, 1, 16, 16)
    one = model(ids, positions=positions)
    (g_one,) = torch.autograd.grad(one.square().sum(), model.blocks[0].attn.query.weight)
    two = model(ids.repeat(2, 1), positions=positions.repeat(2, 1))
    (g_two,) = torch.autograd.grad(two[:1].square().sum(), model.blocks[0].attn.query.weight)
    torch.testing.assert_close(one, two[:1], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(g_one, g_two, rtol=1e-4, atol=1e-5)


def test_positions_restart_and_labels_never_cross_a_boundary() -> None:
    samples = _samples(lengths=(3, 2, 4))
    samples[1]["labels"] = samples[1]["input_ids"].clone()  # trained on every token, the first included
    batch = packed_collate(samples, max_seq_length=16)
    assert batch["positions"][0].tolist() == [0, 1, 2, 0, 1, 0, 1, 2, 3]
    # the first token of each example is never a target of the token before it
    assert batch["labels"][0, [0, 3, 5]].tolist() == [IGNORE_INDEX] * 3
    assert batch["length"].tolist() == [9]


def test_packing_keeps_the_order_and_the_row_limit() -> None:
    rows = pack_rows([5, 4, 3, 8, 1, 1, 6], max_seq_length=9)
    assert rows == [[0, 1], [2], [3, 4], [5, 6]]
    assert [i for row in rows for i in row] == list(range(7))
    # a packed micro-batch is one row of up to micro_batch_size x max_seq_length tokens, examples cut at 9
    batches = step_batches(_samples(lengths=(5, 4, 3, 12, 1, 1, 6)), 2, max_seq_length=9, packing=True)
    assert [tuple(b["input_ids"].shape) for b in batches] == [(1, 12), (1, 17)]  # 5+4+3 | 9+1+1+6, no padding
    assert int(batches[1]["positions"].max()) == 8  # the 12-token example was cut at 9
    assert [int((b["positions"] == 0).sum()) for b in batches] == [3, 4]


@pytest.mark.parametrize("packing", [False, True])
def test_no_examples_make_no_batches(packing: bool) -> None:
    # validation on a dataset prepared with --test_split_fraction 0 has nothing to batch
    assert step_batches([], 4, 16, packing) == []


@pytest.mark.parametrize("chunk_size", [1, 5, 128])
@pytest.mark.parametrize("frozen_head", [True, False], ids=["fused", "checkpointed"])
def test_chunked_loss_equals_full_loss_and_gradient(chunk_size: int, frozen_head: bool) -> None:
    # a frozen bias-free head takes the fused path (gradient computed in forward); a trainable one, checkpointing
    model = _model("llama_gqa").train()
    model.lm_head.weight.requires_grad_(not frozen_head)
    batch = pad_collate(_samples())
    full, n_full = masked_loss_sum(model(batch["input_ids"]), batch["labels"])
    (full * 0.5).backward()  # a scale, as the training loop's division by the global token count
    expected = [p.grad.clone() for p in model.parameters() if p.requires_grad]
    model.zero_grad()
    chunked, n_chunked = chunked_loss_sum(model(batch["input_ids"], head=False), model.lm_head, batch["labels"],
                                          chunk_size)
    (chunked * 0.5).backward()
    assert n_chunked == n_full
    torch.testing.assert_close(chunked, full, rtol=1e-5, atol=1e-5)
    for g, e in zip((p.grad for p in model.parameters() if p.requires_grad), expected, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-6)
    with torch.no_grad():  # validation: no gradient is computed, the value is the same
        no_grad, _ = chunked_loss_sum(model(batch["input_ids"], head=False), model.lm_head, batch["labels"],
                                      chunk_size)
    torch.testing.assert_close(no_grad, full.detach(), rtol=1e-5, atol=1e-5)
