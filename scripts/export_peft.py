"""Export a LoRA adapter as a Hugging Face PEFT adapter folder (adapter_config.json + adapter_model.safetensors).

    python scripts/export_peft.py --checkpoint_dir checkpoints/ORG/NAME --lora_path out/lora/lit_lora.safetensors \
        --out_dir out/lora/peft

Then, in Python: `PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained("checkpoints/ORG/NAME"), "out/lora/peft")`.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a plain checkout, no install needed

from lit_gpt.export import export_peft
from lit_gpt.utils import cli, require_dir, resolve_checkpoint_dir


def main(checkpoint_dir: Path, lora_path: Path, out_dir: Path) -> None:
    """Write the adapter in PEFT's LoRA format to `out_dir`.

    Args:
        checkpoint_dir: The converted base checkpoint the adapter was trained on (`checkpoints/ORG/NAME` or `ORG/NAME`);
            its lit_config.json and 32 of its weights are read (to check the adapter was trained on it).
        lora_path: The adapter file written by finetune/lora.py (`<its out_dir>/lit_lora.safetensors`).
        out_dir: Where to write adapter_config.json and adapter_model.safetensors; load them with
            `peft.PeftModel.from_pretrained(base, out_dir)` onto the base's Hugging Face model (the original download,
            or the folder scripts/convert_lit_checkpoint.py writes).
    """
    checkpoint_dir = require_dir(resolve_checkpoint_dir(checkpoint_dir), "checkpoint folder",
                                 "Pass the folder made by scripts/convert_hf_checkpoint.py that the adapter was trained on")
    out = export_peft(checkpoint_dir, lora_path, out_dir)
    print(f"Wrote a PEFT adapter to {out}")


if __name__ == "__main__":
    cli(main)
