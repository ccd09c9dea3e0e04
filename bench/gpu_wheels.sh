#!/usr/bin/env bash
# Download, on a networked machine, the wheels bench/gpu_check.py's GPU run needs beyond what the GPU image has
# (a CUDA build of torch >= 2.11, lightning, transformers, peft; Python 3.12, Linux x86_64, no network), into
# ./.whl (git-ignored), to be copied to the GPU machine beside the checkout:
#
#     bash bench/gpu_wheels.sh                 # here, with network: 52 MB, bitsandbytes is 43 of them
#     # there (docs/gpu.md): into .whl/site, outside the image's own packages, first on the path
#     python -m pip install -q --no-index --find-links .whl --target .whl/site -r .whl/with-deps.txt && \
#         python -m pip install -q --no-index --find-links .whl --target .whl/site --no-deps -r .whl/no-deps.txt ; \
#         PYTHONPATH=.:.whl/site python bench/gpu_check.py --out_dir bench/results/gpu
#
# What and why:
#   with deps (their small dependencies come from .whl too: PyYAML, typing_extensions, docstring_parser,
#   typeshed_client):
#     jsonargparse[signatures] 4.41  every CLI of ours (lit_gpt.utils.cli) and litgpt's imports (lightning.pytorch.cli);
#                                    4.41 is the newest litgpt 0.5.13 accepts (<= 4.41) and ours needs >= 4.30
#     sentencepiece                  lit_gpt.tokenizer imports it at module level (lit_gpt.training reaches it)
#   without deps (their requirements would make pip replace the image's torch):
#     bitsandbytes 0.50.2            QLoRA (--quantize bnb.nf4), manylinux x86_64 with its CUDA kernels
#     litgpt 0.5.13                  the peer run; everything else it imports is in the GPU image or above
#
# The image's Python is expected to be 3.12; sentencepiece and PyYAML are built per Python version, so their wheels
# for 3.11 and 3.13 come too (+5 MB): a surprise there would otherwise stop the check at its first import.
# PYTHON_VERSIONS / PLATFORM override the targets (default "3.11 3.12 3.13", manylinux x86_64).
set -euo pipefail

cd "$(dirname "$0")/.."
DEST=.whl
PLATFORMS=(--platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64
           --platform manylinux2014_x86_64)
if [[ -n "${PLATFORM:-}" ]]; then PLATFORMS=(--platform "$PLATFORM"); fi

WITH_DEPS=("jsonargparse[signatures]==4.41.0" "sentencepiece>=0.2")
NO_DEPS=("bitsandbytes==0.50.2" "litgpt==0.5.13")

mkdir -p "$DEST"
for PY in ${PYTHON_VERSIONS:-3.11 3.12 3.13}; do
    TARGET=(--only-binary=:all: --python-version "$PY" --implementation cp --abi "cp${PY/./}" --abi abi3 --abi none
            "${PLATFORMS[@]}")
    pip download -q -d "$DEST" "${TARGET[@]}" "${WITH_DEPS[@]}"
done
pip download -q -d "$DEST" "${TARGET[@]}" --no-deps "${NO_DEPS[@]}"
printf '%s\n' "${WITH_DEPS[@]}" > "$DEST/with-deps.txt"
printf '%s\n' "${NO_DEPS[@]}" > "$DEST/no-deps.txt"

ls -l "$DEST"
echo "$(du -sh "$DEST" | cut -f1) in $DEST: copy it beside the checkout on the GPU machine (docs/gpu.md)"
