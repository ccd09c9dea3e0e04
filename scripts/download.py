"""Download a model from the Hugging Face Hub into checkpoints/ORG/NAME (see `lit_gpt.download.download`)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # so `python scripts/download.py` works from a checkout without install

from lit_gpt.download import download
from lit_gpt.utils import cli

if __name__ == "__main__":
    cli(download)
