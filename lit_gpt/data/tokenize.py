"""Token ids and labels for prompt-style segments, and fitting a sample into `max_seq_length`.

Parts, then join: every `Segment` is encoded on its own and the ids are concatenated; the joined string is never
re-tokenized and the boundary guessed. The first segment is encoded from the start of the text, as generation
encodes a prompt. Later segments are encoded as continuations, which needs care with one family of tokenizers:

- byte-level BPE (GPT-2, SmolLM2, Llama 3, Pythia): a text encodes the same wherever it starts. Nothing to do.
- sentencepiece (Llama 2, Mistral): the tokenizer writes a "▁" (a space) before the start of every text, so a
  response encoded alone after "### Response:\\n" would be trained to open with a space no prompt ends with. We
  encode `ANCHOR + text` and drop the anchor's ids, as transformers' Llama tokenizer does with legacy=False.

Labels: `labels[i] = input_ids[i]` where the model learns to produce token i, `IGNORE_INDEX` elsewhere. The loss
shifts them itself (the logits at position i are scored against `labels[i + 1]`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from lit_gpt.prompts import Segment
from lit_gpt.tokenizer import Tokenizer
from lit_gpt.utils import UserError

IGNORE_INDEX = -100  # label of tokens without loss; the same value as PyTorch's cross_entropy default
ANCHOR = "\n"  # sentencepiece encodes a newline as its own byte token, so it never merges with the text after it


@dataclass
class Sample:
    """One tokenized sample. `responses` are the [start, end) spans the model learns to write (response + EOS)."""

    input_ids: list[int]
    labels: list[int]
    responses: list[tuple[int, int]] = field(default_factory=list)
    truncated: int = 0  # tokens cut off by `truncate`

    @property
    def response_tokens(self) -> int:
        return sum(end - start for start, end in self.responses)

    @property
    def prompt_tokens(self) -> int:
        return len(self.input_ids) - self.response_tokens


class SegmentEncoder:
    """Encodes segments so that the joined ids are what the model sees, and builds labels from them."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        if tokenizer.eos_id is None:
            raise UserError(
                f"{tokenizer.checkpoint_dir}: the tokenizer has no EOS token, so a response cannot be ended; set "
                "`eos_token` in tokenizer_config.json"
            )
        self.tokenizer = tokenizer
        self.eos_id: int = tokenizer.eos_id
        anchor, x = (tokenizer.encode(text, bos=False, eos=False) for text in (ANCHOR, "x"))
        # Does a text encode differently after a newline than on its own? Then the tokenizer adds a prefix space.
        adds_prefix = tokenizer.encode(ANCHOR + "x", bos=False, eos=False) != anchor + x
        self.anchor: list[int] | None = anchor if adds_prefix else None
        self.fallbacks = 0  # continuations whose first characters merged with the anchor (see `_continuation`)

    def encode(self, samples: Sequence[Sequence[Segment]]) -> list[list[list[int]]]:
        """The ids of every segment of every sample, from one batched tokenizer call (parallel in Rust/C++)."""
        prefix = ANCHOR if self.anchor is not None else ""
        texts = [s.text if i == 0 else prefix + s.text for segments in samples for i, s in enumerate(segments)]
        flat = iter(self.tokenizer.encode_batch(texts, bos=False, eos=False))
        return [
            [next(flat) if i == 0 else self._continuation(next(flat), s.text) for i, s in enumerate(segments)]
            for segments in samples
        ]

    def _continuation(self, ids: list[int], text: str) -> list[int]:
        """`ids` of ANCHOR + `text` without the anchor's ids (when the tokenizer needs the anchor at all)."""
        if self.anchor is None:
            return ids
        if ids[: len(self.anchor)] == self.anchor:
            return ids[len(self.anchor):]
        # A vocabulary with a piece spanning the newline and the text's start: keep the prefix space instead.
        self.fallbacks += 1
        return self.tokenizer.encode(text, bos=False, eos=False)

    def build(
        self,
        segments: Sequence[Segment],
        segment_ids: Sequence[list[int]],
        bos: bool,
        mask_inputs: bool = True,
        last_turn_only: bool = False,
    ) -> Sample:
        """Join the segments' ids (with BOS first if `bos`, EOS after segments that ask for it) and label them.

        A response is learned up to and including its last EOS token: what a chat template writes after the EOS
        (ChatML's newline) is never generated, so it stays context. With `mask_inputs=False` every token is
        learned; with `last_turn_only` only the last response is.
        """
        ids: list[int] = [self.tokenizer.bos_id] if bos and self.tokenizer.bos_id is not None else []
        labels: list[int] = list(ids) if not mask_inputs else [IGNORE_INDEX] * len(ids)
        responses = []
        last = max(i for i, s in enumerate(segments) if s.trainable)
        for i, (segment, seg_ids) in enumerate(zip(segments, segment_ids)):
            if segment.eos:
                seg_ids = seg_ids + [self.eos_id]
            learned = 0
            if segment.trainable:
                learned = _end_of_last(seg_ids, self.eos_id)
                responses.append((len(ids), len(ids) + learned))
                if mask_inputs and last_turn_only and i != last:
                    learned = 0
            ids += seg_ids
            if not mask_inputs:
                labels += seg_ids
            else:
                labels += seg_ids[:learned] + [IGNORE_INDEX] * (len(seg_ids) - learned)
        return Sample(ids, labels, responses)


def _end_of_last(ids: list[int], token: int) -> int:
    """The position after the last `token` in `ids` (searched from the end, at C speed); len(ids) without one."""
    try:
        return len(ids) - ids[::-1].index(token)
    except ValueError:
        return len(ids)


def conversation_prompt_ids(encoder: SegmentEncoder, segments: Sequence[Segment], bos: bool) -> list[int]:
    """The ids a model reads before writing its next response: `segments` of a conversation whose last turn has an
    empty response, encoded exactly as training encodes them, minus that empty response (for chat and generation)."""
    assert segments and segments[-1].trainable, "segments must end with the (empty) response to be written"
    prompt = segments[:-1]
    ids = [encoder.tokenizer.bos_id] if bos and encoder.tokenizer.bos_id is not None else []
    for segment, seg_ids in zip(prompt, encoder.encode([prompt])[0]):
        ids += seg_ids + ([encoder.eos_id] if segment.eos else [])
    return ids


def truncate(sample: Sample, max_seq_length: int, eos_id: int) -> Sample | None:
    """`sample` cut to `max_seq_length` tokens so that it still ends with EOS, or None if no response would remain.

    If the cut falls inside a response, the response is cut one token short and EOS takes the last place (learned
    as that response's tokens are), so the model still learns to stop. If it falls in a prompt, the sample ends
    after the last response that fits whole instead of with a question the model never sees answered.
    """
    assert len(sample.input_ids) > max_seq_length, "only called for samples that are too long"
    cut = max_seq_length - 1  # room for the EOS
    inside = [(start, end) for start, end in sample.responses if start < cut and end > max_seq_length]
    if inside:
        start, _ = inside[0]
        eos_label = eos_id if sample.labels[start] != IGNORE_INDEX else IGNORE_INDEX
        input_ids = sample.input_ids[:cut] + [eos_id]
        labels = sample.labels[:cut] + [eos_label]
        responses = [(s, min(e, max_seq_length)) for s, e in sample.responses if s < cut]
    else:
        whole = [end for _, end in sample.responses if end <= max_seq_length]
        if not whole:
            return None
        input_ids, labels = sample.input_ids[: whole[-1]], sample.labels[: whole[-1]]
        responses = [(s, e) for s, e in sample.responses if e <= whole[-1]]
    return Sample(input_ids, labels, responses, truncated=len(sample.input_ids) - len(input_ids))
