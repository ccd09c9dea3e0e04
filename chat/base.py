"""Chat with a converted checkpoint (optionally with a LoRA adapter) in the terminal, answers streamed as written.

    python chat/base.py --checkpoint_dir checkpoints/HuggingFaceTB/SmolLM2-135M-Instruct
    python chat/base.py --checkpoint_dir ... --lora_path out/lora/lit_lora.safetensors
"""
import sys
from pathlib import Path
from typing import Literal

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a plain checkout, no install needed

from lit_gpt.chat import chat_loop
from lit_gpt.checkpoint import load_model
from lit_gpt.lora import load_lora_into
from lit_gpt.prompts import default_prompt_style, load_prompt_style
from lit_gpt.tokenizer import Tokenizer
from lit_gpt.utils import DOWNLOAD_HINT, cli, default_precision, precision_dtype, require_dir, resolve_checkpoint_dir


def main(
    checkpoint_dir: Path,
    lora_path: Path | None = None,
    prompt_style: Literal["alpaca", "chat", "auto"] | None = None,
    max_new_tokens: int = 256,
    temperature: float = 0.7,
    top_k: int | None = 50,
    precision: str | None = None,
    seed: int = 1234,
) -> None:
    """Talk to the model; an empty line or Ctrl-D ends the chat.

    Args:
        checkpoint_dir: A converted checkpoint (`checkpoints/ORG/NAME` or just `ORG/NAME`).
        lora_path: A LoRA adapter from finetune/lora.py to apply (its hyperparameters are read from the file).
        prompt_style: alpaca, chat (the tokenizer's chat template) or auto (chat if the tokenizer has one).
            Default: the adapter's training style with --lora_path, the style a finetuned (merged or full)
            checkpoint records, the chat template when the tokenizer has one, else alpaca.
        max_new_tokens: Longest answer, in tokens.
        temperature: Sampling temperature; 0 is greedy.
        top_k: Sample among the k most likely tokens only.
        precision: Lightning Fabric precision (default: bf16-true on a GPU that supports it, else 32-true).
        seed: Random seed for sampling.
    """
    import lightning as L

    checkpoint_dir = require_dir(resolve_checkpoint_dir(checkpoint_dir), "checkpoint folder", DOWNLOAD_HINT)
    precision = precision or default_precision()
    fabric = L.Fabric(devices=1, precision=precision)
    fabric.seed_everything(seed, verbose=False)
    tokenizer = Tokenizer(checkpoint_dir)
    model = load_model(checkpoint_dir, device=fabric.device, dtype=precision_dtype(precision))
    if lora_path is not None:
        load_lora_into(model, lora_path, checkpoint_dir)
    if prompt_style is None:
        prompt_style, _ = default_prompt_style(checkpoint_dir, tokenizer, lora_path, fallback="alpaca")
    style = load_prompt_style(prompt_style, tokenizer)
    print(f"Chatting with {checkpoint_dir} ({style.name} prompt style). Empty line or Ctrl-D to quit.", file=sys.stderr)

    def read() -> str | None:
        try:
            return input(">> You: ").strip()
        except EOFError:
            return None

    def write(text: str) -> None:
        print(text, end="", flush=True)

    with fabric.autocast():
        chat_loop(model.eval(), tokenizer, style, read, write, max_new_tokens, temperature, top_k)


if __name__ == "__main__":
    cli(main)
