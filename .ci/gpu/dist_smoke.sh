#!/usr/bin/env bash
# One device call on a machine of 2+ GPUs: builds the environment (setup_gpu_env.sh), extracts
# the nuclei demo data from the carried stardist wheel, and trains the Cascade Mask R-CNN demo
# config with tools/dist_train.sh on every GPU for a few iterations (SyncBN through `sync_bn`),
# then evaluates. The training log is copied to $OUT when OUT is set.
# Before: bash .ci/gpu/fetch_wheels.sh here; the call carries .whl.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
source .ci/gpu/setup_gpu_env.sh
gpus="$(python3 -c 'import torch; print(torch.cuda.device_count())')"
python3 tools/dataset_converters/prepare_nuclei_demo.py --wheel .whl/data/stardist-0.9.2-*.whl --out data/nuclei
work_dir=/tmp/dist_smoke
PYTHON=python3 bash tools/dist_train.sh configs/mmdet/cascade-mask-rcnn_a2mamba-n_fpn_nuclei-demo.py "$gpus" \
    --work-dir "$work_dir" --cfg-options train_cfg.max_epochs=2 train_cfg.val_interval=2 \
    default_hooks.logger.interval=1
if [[ -n "${OUT:-}" ]]; then cp "$work_dir"/*/*.log "$OUT/"; fi
grep -h -E "world_size|Distributed|SyncBatchNorm|Epoch\(train\)|coco/bbox_mAP:|coco/segm_mAP:" "$work_dir"/*/*.log | head -40
