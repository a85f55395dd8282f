#!/usr/bin/env bash
# One device call on a GPU machine (Python 3.12, torch 2.11 + CUDA 13, no network): builds the
# environment (setup_gpu_env.sh, mmcv's CUDA ops included), then times training on synthetic
# batches (tools/analysis/benchmark_dense.py), with AMP as the configs say:
#   Cascade Mask R-CNN + A2Mamba-T, 1333x800, batch 2, 100 iterations;
#   UperNet + A2Mamba-T, 512x512, batch 8, 200 iterations.
# Prints and appends ($OUT/bench.md when OUT is set) one Markdown row per run: it/s, peak memory.
# Before: bash .ci/gpu/fetch_wheels.sh here; the call carries .whl.
# BUDGET_S (default 570) bounds the whole script: each timed loop stops early if time runs short.
# .ci/gpu/dense_bench.sh times these beside their peers.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
BUDGET_S="${BUDGET_S:-570}"
source .ci/gpu/setup_gpu_env.sh
results="${OUT:-/tmp}/bench.md"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader

left=$((BUDGET_S - SECONDS - 90))  # 90 s for both warm-ups and model builds
if ((left < 60)); then echo "only $left s left after the build: no time to benchmark" >&2; exit 1; fi
python3 tools/analysis/benchmark_dense.py configs/mmdet/cascade-mask-rcnn_a2mamba-t_fpn_3x_coco.py \
    --modes train --batch-size 2 --size 800 1333 --iters 100 --warmup 10 --budget-s $((left / 2)) --out "$results"
left=$((BUDGET_S - SECONDS - 45))
python3 tools/analysis/benchmark_dense.py configs/mmseg/upernet_a2mamba-t_8xb2-160k_ade20k-512x512.py \
    --modes train --batch-size 8 --size 512 512 --iters 200 --warmup 10 --budget-s "$left" --out "$results"
