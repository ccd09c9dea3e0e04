#!/usr/bin/env bash
# The main job in one command: install, prepare data, finetune with LoRA, generate with the adapter.
#
#   bash quickstart.sh                                   # embedded default: no network, about a minute on 2 CPU cores
#   bash quickstart.sh CHECKPOINT_DIR [DATA_FILE] [FINETUNE FLAGS...]   # DATA_FILE defaults to examples/quickstart.json
#       e.g. bash quickstart.sh checkpoints/HuggingFaceTB/SmolLM2-135M-Instruct \
#                ../shared/data/alpaca/alpaca_5000.json --max_iters 400 --micro_batch_size 4 --batch_size 8
#
# The default trains a tokenizer on examples/quickstart.json (100 instruction pairs written for this repo) and makes
# a small random-weight Llama-style model for it: the whole pipeline runs and the loss falls, but a random model
# makes no assistant. With arguments, the same steps run on a converted checkpoint and an instruction JSON/JSONL file.
set -euo pipefail
cd "$(dirname "$0")"

if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
. .venv/bin/activate
python -c "import lit_gpt, lightning" 2>/dev/null || pip install --quiet -e .

if [ $# -eq 0 ]; then
    checkpoint_dir=checkpoints/tiny-random
    data_file=examples/quickstart.json
    python scripts/make_tiny_checkpoint.py --data_file "$data_file" --checkpoint_dir "$checkpoint_dir"
    # A random model learns fastest with every linear adapted and a high learning rate. 6 epochs (72 steps of 8)
    # take the validation loss from 6.45 to about 2.5 and the answer from noise to the data's form; more epochs only
    # overfit 100 examples (40 epochs end near 3.5).
    set -- --lora_r 16 --lora_alpha 32 --lora_key true --lora_projection true --lora_mlp true --lora_head true \
        --learning_rate 1e-2 --batch_size 8 --micro_batch_size 8 --epochs 6 --warmup_steps 10 --eval_interval 100 \
        --save_interval 500
    prompt="What is the capital of France?"
    # The tiny model's matrices are too small to share between threads: one thread is as fast on idle cores, and
    # on a busy machine waiting for a second one made a 72-step run take minutes instead of seconds.
    export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
else
    checkpoint_dir=$1
    shift
    data_file=examples/quickstart.json
    if [ $# -gt 0 ] && [[ $1 != --* ]]; then
        data_file=$1
        shift
    fi
    prompt="Give three tips for staying healthy."
fi
name=$(basename "$checkpoint_dir")

python scripts/prepare_json.py --checkpoint_dir "$checkpoint_dir" --data_file "$data_file" \
    --destination_path "data/quickstart-$name"
# --overwrite: out/quickstart-* is this script's own folder, so running it again starts over
python finetune/lora.py --checkpoint_dir "$checkpoint_dir" --data_dir "data/quickstart-$name" \
    --out_dir "out/quickstart-$name" --overwrite true "$@"
echo "--- without the adapter:"
python generate/base.py --checkpoint_dir "$checkpoint_dir" --prompt "$prompt" --prompt_style auto --top_k 1 \
    --max_new_tokens 60
echo "--- with the adapter:"
python generate/base.py --checkpoint_dir "$checkpoint_dir" --lora_path "out/quickstart-$name/lit_lora.safetensors" \
    --prompt "$prompt" --top_k 1 --max_new_tokens 60
