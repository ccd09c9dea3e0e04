"""Mix prepared datasets (same tokenizer) by weights into a new prepared dataset with a manifest.

    python scripts/mix_datasets.py --data_dirs data/lima data/dolly --weights 0.7 0.3 --destination_path data/mix
    python scripts/mix_datasets.py --data_dirs data/lima data/dolly --weights 1 1 --by tokens --num_tokens 2000000 \
        --replacement true --seed 1 --destination_path data/mix-tokens

How sizes, weights, replacement and the test split work: lit_gpt/data/mix.py.
The flags are `mix_datasets`'s arguments (lit_gpt/data/mix.py); `--help` lists them.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a plain checkout, no install needed

from lit_gpt.data.mix import mix_datasets
from lit_gpt.utils import cli

if __name__ == "__main__":
    cli(mix_datasets)
