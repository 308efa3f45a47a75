#!/usr/bin/env bash
# What only a GPU can show, in one table (under 8 minutes on one GPU): greedy decode equals generate on CUDA;
# every decoding strategy runs there; a tiny fit-text and fit-image end to end in bf16 (FID on random features);
# a prior with n_positions == t; a 1-GPU FSDP run through configs/accelerate/fsdp.yaml; peak memory beside
# `hyperfit plan`'s estimate. Offline: tiny models built in-process, the README as text, no pip install.
#
#   bash scripts/gpu_check.sh                         # from the repository root, on the GPU machine
#   GPU_CHECK_DEVICE=cpu bash scripts/gpu_check.sh    # the same checks on CPU (slower; for trying the script)
#
# The table is printed and written to $GPU_CHECK_OUT, or to $OUT/gpu_check.txt when OUT is set.
# GPU_CHECK_ONLY=fit-text,FSDP reruns only the checks whose names contain those words.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}"
if [ "${GPU_CHECK_DEVICE:-cuda}" = "cpu" ]; then
  export CUDA_VISIBLE_DEVICES=""
  export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"  # unbounded intra-op threads stall on a shared CPU machine
fi
PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" exec timeout 900 "$PYTHON" scripts/gpu_check.py
