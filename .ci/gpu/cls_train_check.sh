#!/usr/bin/env bash
# One device call on a GPU machine: the A2Mamba-T classification recipe (mixup/cutmix,
# RandAugment, random erasing, label smoothing, EMA, MESA, bf16 AMP) trained for 5 epochs of 63
# iterations at 224^2, batch 64, on the embedded MNIST-5k digits, then evaluated
# (configs/mmpretrain/a2mamba-t_1xb64_mnist5k-224px.py). Builds the CUDA scan in place first.
# Here, before: bash .ci/gpu/fetch_wheels.sh; python tools/dataset_converters/prepare_mnist5k.py --out data/mnist5k
# The call carries .whl and data/mnist5k. The training log goes to $OUT (or /tmp).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
OUT="${OUT:-/tmp}"
MMCV_WITH_OPS=0 source .ci/gpu/setup_gpu_env.sh
set +e
export PYTHONUNBUFFERED=1
if ! python3 -c 'import ops; assert ops.has_cuda_scan()' 2>/dev/null; then
    STEPS=build bash .ci/gpu/kernels_check.sh || exit 1
fi
work_dir=/tmp/cls_t
rm -rf "$work_dir"
python3 tools/train.py configs/mmpretrain/a2mamba-t_1xb64_mnist5k-224px.py --work-dir "$work_dir" >"$OUT/cls_train.out" 2>&1
status=$?
cp "$work_dir"/*/*.log "$OUT/" 2>/dev/null
grep -E "Epoch\(train\)|Epoch\(val\)|accuracy/top1|MESA|Error|error" "$OUT/cls_train.out" | grep -v "^\s*$" | tail -45
exit $status
