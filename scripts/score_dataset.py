"""Score every example of a prepared dataset with a local model: IFD, both losses, lengths, optionally a judge rating.

    python scripts/score_dataset.py --data_dir data/alpaca --checkpoint_dir checkpoints/HuggingFaceTB/SmolLM2-135M-Instruct
    python scripts/score_dataset.py --data_dir data/alpaca --checkpoint_dir ... --judge_checkpoint_dir checkpoints/ORG/INSTRUCT

The columns land beside the data (`train/scores.npy`, `scores.json`; see lit_gpt/data/scores.py) for
scripts/select_dataset.py and `finetune/lora.py --order score`. An interrupted run picks up where it stopped.
The flags are `score_dataset`'s arguments (lit_gpt/data/scoring.py); `--help` lists them.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a plain checkout, no install needed

from lit_gpt.data.scoring import score_dataset
from lit_gpt.utils import cli

if __name__ == "__main__":
    cli(score_dataset)
