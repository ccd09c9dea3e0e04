"""Make a tiny random-weight checkpoint whose tokenizer is trained on a data file: the quickstart's default model.

    python scripts/make_tiny_checkpoint.py --data_file examples/quickstart.json --checkpoint_dir checkpoints/tiny-random
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a plain checkout, no install needed

from lit_gpt.tiny import make_tiny_checkpoint
from lit_gpt.utils import cli


def main(data_file: Path = Path("examples/quickstart.json"), checkpoint_dir: Path = Path("checkpoints/tiny-random"),
         vocab_size: int = 512, seed: int = 42) -> None:
    """Write a small random-weight checkpoint whose tokenizer is trained on --data_file.

    It is a real checkpoint folder (tokenizer.json, lit_config.json, lit_model.safetensors, config.json): it needs
    no download, and every script runs on it.

    Args:
        data_file: JSON list of instruction/input/output records to train the tokenizer on.
        checkpoint_dir: Where to write the checkpoint.
        vocab_size: Size of the byte-level BPE vocabulary.
        seed: Seed of the random weights.
    """
    print(f"Wrote {make_tiny_checkpoint(data_file, checkpoint_dir, vocab_size, seed)}")


if __name__ == "__main__":
    cli(main)
