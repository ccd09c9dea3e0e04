#!/usr/bin/env bash
# Download, on a networked machine, the wheels bench/gpu_check.py's GPU run needs beyond what the GPU image has
# (a CUDA build of torch >= 2.11, lightning, transformers, peft; Python 3.12, Linux x86_64, no network), into
# ./.whl (git-ignored), to be copied to the GPU machine beside the checkout:
#
#     bash bench/gpu_wheels.sh                 # here, with network: ~48 MB, bitsandbytes is 43 of them
#     # there (docs/gpu.md):
#     pip install --no-index --find-links .whl -r .whl/with-deps.txt && \
#         pip install --no-index --find-links .whl --no-deps -r .whl/no-deps.txt ; \
#         PYTHONPATH=. python bench/gpu_check.py --out_dir bench/results/gpu
#
# What and why:
#   with deps (pip may add what is missing from .whl, never touches torch):
#     jsonargparse[signatures] 4.41  every CLI of ours (lit_gpt.utils.cli) and litgpt's imports (lightning.pytorch.cli);
#                                    4.41 is the newest litgpt 0.5.13 accepts (<= 4.41) and ours needs >= 4.30
#     sentencepiece                  lit_gpt.tokenizer imports it at module level (lit_gpt.training reaches it)
#   without deps (their requirements would make pip replace the image's torch):
#     bitsandbytes 0.50.2            QLoRA (--quantize bnb.nf4), manylinux x86_64 with its CUDA kernels
#     litgpt 0.5.13                  the peer run; everything else it imports is in the GPU image or above
#
# PYTHON_VERSION / PLATFORM override the target (default 3.12, manylinux x86_64).
set -euo pipefail

cd "$(dirname "$0")/.."
DEST=.whl
PY="${PYTHON_VERSION:-3.12}"
ABI="cp${PY/./}"
PLATFORMS=(--platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64
           --platform manylinux2014_x86_64)
if [[ -n "${PLATFORM:-}" ]]; then PLATFORMS=(--platform "$PLATFORM"); fi
TARGET=(--only-binary=:all: --python-version "$PY" --implementation cp --abi "$ABI" --abi abi3 --abi none
        "${PLATFORMS[@]}")

WITH_DEPS=("jsonargparse[signatures]==4.41.0" "sentencepiece>=0.2")
NO_DEPS=("bitsandbytes==0.50.2" "litgpt==0.5.13")

mkdir -p "$DEST"
pip download -q -d "$DEST" "${TARGET[@]}" "${WITH_DEPS[@]}"
pip download -q -d "$DEST" "${TARGET[@]}" --no-deps "${NO_DEPS[@]}"
printf '%s\n' "${WITH_DEPS[@]}" > "$DEST/with-deps.txt"
printf '%s\n' "${NO_DEPS[@]}" > "$DEST/no-deps.txt"

ls -l "$DEST"
echo "$(du -sh "$DEST" | cut -f1) in $DEST: copy it beside the checkout on the GPU machine (docs/gpu.md)"
