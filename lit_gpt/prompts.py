"""Prompt styles: how a conversation becomes the text a model reads, and which parts of it the model learns to write.

A style turns a conversation (one or more `Turn`s) into `Segment`s: prompt text the model only reads, and response
text it is trained to produce. Data preparation tokenizes each segment on its own and joins the ids
(`lit_gpt.data.tokenize`), so the prompt/response boundary is exact and the prompt ids are the ones generation feeds.
A multi-turn conversation is one sample: earlier turns are context, and every response carries loss (or only the
last one, with `--last_turn_only`).

Styles, by `--prompt_style` name:
- `alpaca`: the Stanford Alpaca template (Lit-GPT's default). Works with any tokenizer; every response ends in EOS.
  A multi-turn conversation keeps the header once and repeats the instruction/response blocks::

      Below is an instruction that describes a task. Write a response that appropriately completes the request.
      <blank line>
      ### Instruction:
      {turn 1 instruction}
      <blank line>
      ### Response:
      {turn 1 response}</s>
      <blank line>
      ### Instruction:
      {turn 2 instruction}
      ...

- `chat`: the model's own chat template (`chat_template.jinja` or tokenizer_config.json), e.g. SmolLM2's ChatML.
  Segments are the differences between renderings of growing prefixes of the conversation, so the text is exactly
  what `apply_chat_template` gives. The user message is the instruction, plus a blank line and the input if any.
  A template that rewrites earlier turns once a later one follows (Qwen 3 drops their `<think>` blocks) gives no such
  prefixes: multi-turn samples are refused unless only the last answer is learned (`--last_turn_only`), and then the
  sample is the template's text for the last turn (chat reads only that prompt, so it always works).
- `auto` (the default of every prepare script): `chat` when the tokenizer has a chat template, otherwise `alpaca`.
  A model with a chat template was instruction-tuned with it, and finetuning it on another format fights what it
  learned; a base model (e.g. Llama-2-7b-hf in the walkthrough) has none and gets Lit-GPT's Alpaca template.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, Sequence

from lit_gpt.tokenizer import Tokenizer
from lit_gpt.utils import UserError, atomic_write_json, read_json

PROMPT_STYLES = ("auto", "alpaca", "chat")
# A finetuned checkpoint's record of the style it was trained with (merge_lora: its adapter's; finetune/full.py: its
# data's): {"prompt_style": "alpaca"}
PROMPT_STYLE_NAME = "lit_prompt_style.json"


@dataclass(frozen=True)
class Turn:
    """One exchange: what the user asks (with Alpaca's optional `input` as context) and the response to learn."""

    instruction: str
    response: str
    input: str = ""


@dataclass(frozen=True)
class Segment:
    """A piece of the rendered conversation. `trainable` marks response text; `eos` appends the EOS token id."""

    text: str
    trainable: bool
    eos: bool = False


class PromptStyle(Protocol):
    name: str
    bos: bool  # whether the token stream starts with BOS (chat templates write their own BOS text, if any)

    def segments(self, turns: Sequence[Turn], last_turn_only: bool = False) -> list[Segment]:
        """Prompt and response segments alternating, starting with a prompt; their concatenation is the sample.

        `last_turn_only`: only the last response will be learned (and chat reads only the prompt before it), so a
        style may return earlier turns as one prompt segment."""
        ...

    def prompt(self, instruction: str, input: str = "") -> str:
        """The text generation feeds the model to answer one instruction: the first segment of a single turn."""
        ...


class Alpaca:
    """The Alpaca template, word for word as Lit-GPT and Stanford Alpaca use it."""

    name = "alpaca"
    HEADER = (
        "Below is an instruction that describes a task. "
        "Write a response that appropriately completes the request.\n\n"
    )
    HEADER_WITH_INPUT = (
        "Below is an instruction that describes a task, paired with an input that provides further context. "
        "Write a response that appropriately completes the request.\n\n"
    )

    def __init__(self, tokenizer: Tokenizer) -> None:
        self.bos = tokenizer.add_bos

    def segments(self, turns: Sequence[Turn], last_turn_only: bool = False) -> list[Segment]:
        header = self.HEADER_WITH_INPUT if any(turn.input for turn in turns) else self.HEADER
        out = []
        for i, turn in enumerate(turns):
            block = f"### Instruction:\n{turn.instruction}\n\n"
            if turn.input:
                block += f"### Input:\n{turn.input}\n\n"
            out.append(Segment((header if i == 0 else "\n\n") + block + "### Response:\n", trainable=False))
            out.append(Segment(turn.response, trainable=True, eos=True))
        return out

    def prompt(self, instruction: str, input: str = "") -> str:
        return self.segments([Turn(instruction, "", input)])[0].text


class ChatTemplate:
    """The tokenizer's own chat template, with user/assistant messages."""

    name = "chat"
    bos = False

    def __init__(self, tokenizer: Tokenizer) -> None:
        if not tokenizer.has_chat_template:
            raise UserError(
                f"--prompt_style chat: {tokenizer.checkpoint_dir} has no chat template (no chat_template.jinja and "
                "no `chat_template` in tokenizer_config.json); use --prompt_style alpaca"
            )
        self.tokenizer = tokenizer

    def segments(self, turns: Sequence[Turn], last_turn_only: bool = False) -> list[Segment]:
        messages: list[dict[str, str]] = []
        rendered = ""
        out = []
        for turn in turns:
            messages.append({"role": "user", "content": _user_content(turn)})
            prompt = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True)
            messages.append({"role": "assistant", "content": turn.response})
            full = self.tokenizer.apply_chat_template(messages)
            if not prompt.startswith(rendered):
                # The template rewrites earlier turns once a later one follows (Qwen 3 drops the <think> block of
                # earlier answers): one sample cannot hold each answer as the template writes it for its own turn.
                # With only the last answer learned, the sample is exactly the template's text for the last turn.
                if not last_turn_only:
                    raise UserError(
                        f"the chat template of {self.tokenizer.checkpoint_dir} renders earlier turns differently once "
                        "a later turn follows (e.g. Qwen 3 drops the <think> block of earlier answers), so only the "
                        "last answer of a conversation can be learned exactly; prepare with --last_turn_only true "
                        "(or --prompt_style alpaca)"
                    )
                out = [Segment(prompt, trainable=False)]
            else:
                out.append(Segment(prompt[len(rendered):], trainable=False))
            out.append(Segment(self._continuation(prompt, full), trainable=True))
            rendered = full
        return out

    def prompt(self, instruction: str, input: str = "") -> str:
        return self.tokenizer.apply_chat_template(
            [{"role": "user", "content": _user_content(Turn(instruction, "", input))}], add_generation_prompt=True
        )

    def _continuation(self, prompt: str, text: str) -> str:
        if not text.startswith(prompt):
            raise UserError(
                f"the chat template of {self.tokenizer.checkpoint_dir} renders an answer's own turn differently from "
                "the prompt it gives for it (with add_generation_prompt), so prompt and response cannot be cut apart "
                "exactly; use --prompt_style alpaca"
            )
        return text[len(prompt):]


def _user_content(turn: Turn) -> str:
    return f"{turn.instruction}\n\n{turn.input}" if turn.input else turn.instruction


def load_prompt_style(name: str, tokenizer: Tokenizer) -> PromptStyle:
    """The style called `name` (one of PROMPT_STYLES) for `tokenizer`; `auto` picks `chat` when it has a template."""
    if name == "auto":
        name = "chat" if tokenizer.has_chat_template else "alpaca"
    if name == "alpaca":
        return Alpaca(tokenizer)
    if name == "chat":
        return ChatTemplate(tokenizer)
    raise UserError(f"--prompt_style {name!r} is not one of {', '.join(PROMPT_STYLES)}")


def save_checkpoint_prompt_style(checkpoint_dir: Path, name: str) -> None:
    """Record in a checkpoint folder the style it was finetuned with, so generation and chat default to it."""
    atomic_write_json(Path(checkpoint_dir) / PROMPT_STYLE_NAME, {"prompt_style": name})


def default_prompt_style(checkpoint_dir: Path, tokenizer: Tokenizer, lora_path: Path | None = None,
                         fallback: str = "raw") -> tuple[str, str]:
    """The style a checkpoint (with an optional adapter) was made for, and why, when the user names none.

    In order: the adapter's training style (in its metadata), the style a merged or fully finetuned checkpoint records
    (`lit_prompt_style.json`), the tokenizer's chat template (an instruction-tuned model answers in it and may
    say nothing to a bare prompt), else `fallback` (generation continues a base model's text: raw).
    """
    from lit_gpt.lora import read_lora_metadata  # here: it loads torch, which data preparation never needs

    if lora_path is not None and (name := read_lora_metadata(lora_path).get("prompt_style")):
        return name, f"the style {lora_path} was trained with"
    record = Path(checkpoint_dir) / PROMPT_STYLE_NAME
    if record.is_file() and (name := read_json(record).get("prompt_style")):
        return name, f"the style it was finetuned with ({record})"
    if tokenizer.has_chat_template:
        return "chat", "the tokenizer's chat template"
    return fallback, "the checkpoint has no chat template"
