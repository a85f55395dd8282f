#!/usr/bin/env bash
# One device call on one GPU (Python 3.12, torch 2.11 + CUDA 13, no network): A2Mamba-T beside
# its peers on dense tasks, same card, batch and AMP (fp16 autocast for every config), random
# weights, synthetic batches, in one process (tools/analysis/benchmark_dense.py):
#   Mask R-CNN 1x:          A2Mamba-T vs mmdet's Swin-T       1333x800
#   Cascade Mask R-CNN 3x:  A2Mamba-T vs mmdet's ConvNeXt-T   1333x800
#   UperNet 160k:           A2Mamba-T vs mmseg's Swin-T       512x512
# at the configs' own batch per GPU (2 images; BATCH overrides it), as training steps and
# inference, plus every backbone alone (forward; forward+backward) at the input its model's
# backbone sees (800x1344 after padding; 512x512).
# First it builds, in parallel: the CUDA selective scan (in place) and mmcv with its CUDA ops
# (setup_gpu_env.sh, about 5 min on 16 cores); meanwhile an A2Mamba-T pass at both input sizes
# fills Triton's kernel cache, so the kernels' first compiles stay out of the timed budget.
# Writes $OUT/dense_bench.md (the table), $OUT/dense_bench.log, $OUT/build_scan.log, $OUT/prewarm.log.
# Before: bash .ci/gpu/fetch_wheels.sh here; the call carries .whl.
#   BUDGET_S (default 360) bounds the whole script, builds included: the time left after them is
#       shared out among the timed loops, each of which stops early at its share.
#   ITERS (default 100) and WARMUP (default 3): timed and untimed iterations per loop.
#   MODES (default "train infer backbone-fwd backbone-train"): fewer loops share the time left.
#   COMPILE=static|dynamic compiles every backbone in place (benchmark_dense.py --compile-backbone).
#   CONFIGS (default the six above, space-separated) times a subset: all six with every mode and
#       100 training iterations for each A2Mamba config do not fit one 10-minute call (the A2Mamba
#       cascade trains at about 2 it/s); e.g. the three A2Mamba configs in one call and the peers
#       in the next, on the same warm machine (the mmcv build and the kernel caches stay in build/).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
BUDGET_S="${BUDGET_S:-360}"
ITERS="${ITERS:-100}"
WARMUP="${WARMUP:-3}"
MODES="${MODES:-train infer backbone-fwd backbone-train}"
OUT="${OUT:-/tmp}"
export PYTHONUNBUFFERED=1 TORCHINDUCTOR_CACHE_DIR="$PWD/build/inductor" TRITON_CACHE_DIR="$PWD/build/triton"
table="$OUT/dense_bench.md"
log="$OUT/dense_bench.log"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$log"

# The scan has 7 translation units: a few jobs suffice, the rest of the cores go to mmcv.
JOBS=4 bash .ci/gpu/build_scan.sh >"$OUT/build_scan.log" 2>&1 &
scan_pid=$!
# Torch and this repository only (the wheels are being installed meanwhile); the scan is not
# built yet, so this pass runs its reference: only the Triton compiles matter here.
PYTHONPATH="$PWD" python3 - >"$OUT/prewarm.log" 2>&1 <<EOF &
import time
import torch
import a2mamba_core
start = time.perf_counter()
model = a2mamba_core.create_model('a2mamba_t', num_classes=0).cuda()
for batch, h, w in ((${BATCH:-2}, 800, 1344), (${BATCH:-2}, 512, 512)):
    x = torch.randn(batch, 3, h, w, device='cuda')
    with torch.autocast('cuda', dtype=torch.float16):
        model.train()
        sum(f.float().mean() for f in model.forward_features(x)).backward()
        model.eval()
        with torch.no_grad():
            model.forward_features(x)
    torch.cuda.synchronize()
    print(f'A2Mamba-T {batch}x{h}x{w}: kernels compiled ({time.perf_counter() - start:.0f} s)', flush=True)
EOF
prewarm_pid=$!

# a build that verify.sh (MMCV=1) started in an earlier call on this machine
if [[ -e build/mmcv_build.pid ]] && kill -0 "$(cat build/mmcv_build.pid)" 2>/dev/null; then
    echo "[dense_bench] waiting for the mmcv build of an earlier call" | tee -a "$log"
    while kill -0 "$(cat build/mmcv_build.pid)" 2>/dev/null; do sleep 5; done
fi
source .ci/gpu/setup_gpu_env.sh  # not in a pipeline: it exports PYTHONPATH
if ! wait "$scan_pid"; then tail -40 "$OUT/build_scan.log"; exit 1; fi
echo "[dense_bench] scan built, mmcv ready at $SECONDS s" | tee -a "$log"
wait "$prewarm_pid" || echo "[dense_bench] the Triton prewarm failed (see prewarm.log); compiles fall into the timed loops" | tee -a "$log"
cat "$OUT/prewarm.log" >>"$log"

default_configs=(
    configs/mmdet/mask-rcnn_a2mamba-t_fpn_1x_coco.py mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py
    configs/mmdet/cascade-mask-rcnn_a2mamba-t_fpn_3x_coco.py
    mmdet::convnext/cascade-mask-rcnn_convnext-t-p4-w7_fpn_4conv1fc-giou_amp-ms-crop-3x_coco.py
    configs/mmseg/upernet_a2mamba-t_8xb2-160k_ade20k-512x512.py
    mmseg::swin/swin-tiny-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k-512x512.py
)
if [[ -n "${CONFIGS:-}" ]]; then read -ra configs <<<"$CONFIGS"; else configs=("${default_configs[@]}"); fi
left=$((BUDGET_S - SECONDS - 30))  # 30 s: the process's start and the last loop's overrun
if ((left < 20)); then echo "only $((left + 30)) s left after the builds: no time to benchmark" >&2; exit 1; fi
status=0
timeout $((left + 25)) python3 tools/analysis/benchmark_dense.py --amp fp16 ${BATCH:+--batch-size "$BATCH"} \
    ${COMPILE:+--compile-backbone "$COMPILE"} \
    --modes $MODES --iters "$ITERS" --warmup "$WARMUP" --budget-s "$left" \
    --out "$table" "${configs[@]}" 2>&1 | tee -a "$log" || status=1
echo "[dense_bench] done at $SECONDS s of $BUDGET_S" | tee -a "$log"
exit "$status"
