#!/usr/bin/env bash
# One device call: the GPU correctness checks, side by side on one card, then (BENCH=1) a short
# inference benchmark with the time left.
#   - builds the CUDA scan in place;
#   - pytest: the fp16 cast model, the GPU op tests, the conformance goldens (eager and compiled
#     kernels, fp32, TF32 off), the whole model as one graph, compiled equals eager;
#   - meanwhile STEPS bf16 AdamW steps of A2Mamba-T at lr 2e-3, eager and then with CUDA graphs
#     (amp_stability.py);
#   - MMCV=1 also starts building mmcv with its CUDA ops in a process of its own (setsid: it outlives
#     this call, so a later call on the same machine finds mmcv in /tmp/site; /tmp/mmcv_ready marks
#     the end);
#   - BENCH=1: tools/analysis/benchmark.py, inference, CUDA graphs, A2Mamba-T beside swin_tiny, until
#     LIMIT_S (default 560) seconds after the start.
# Writes $OUT/gpu_tests.log, $OUT/amp_*.log, $OUT/build_scan.log, $OUT/bench.md.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
OUT="${OUT:-/tmp}"
export PYTHONUNBUFFERED=1 A2MAMBA_CONFORMANCE="$PWD/.gpu_stage/conformance" TORCHINDUCTOR_CACHE_DIR=/tmp/inductor
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c 'import torch, triton; print("torch", torch.__version__, "triton", triton.__version__)'

if [[ "${MMCV:-0}" == 1 && ! -e /tmp/mmcv_ready ]]; then
    MMCV_JOBS="${MMCV_JOBS:-8}" setsid bash -c 'source .ci/gpu/setup_gpu_env.sh && touch /tmp/mmcv_ready' \
        >/tmp/mmcv_build.log 2>&1 < /dev/null &
fi
arch="$(python3 -c 'import torch; print("%d.%d" % torch.cuda.get_device_capability())')"
A2MAMBA_FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST="$arch" MAX_JOBS=12 python3 setup.py build_ext --inplace \
    >"$OUT/build_scan.log" 2>&1 || { tail -40 "$OUT/build_scan.log"; exit 1; }
echo "[verify] scan built at $SECONDS s"

amp() {
    timeout "$2" python3 .ci/gpu/amp_stability.py --model a2mamba_t --steps "${STEPS:-200}" --lr 2e-3 --mode "$1" \
        >"$OUT/amp_$1.log" 2>&1
    echo "[verify] amp_stability $1: rc $? at $SECONDS s"
    grep -v "^W1\|^V1\|^I1" "$OUT/amp_$1.log" | tail -4
}
(amp eager 120; amp cudagraphs "${AMP_LIMIT:-330}") &
amp_pid=$!
timeout "${TEST_LIMIT:-330}" python3 -m pytest -v -n 6 -p no:cacheprovider --timeout 300 -W ignore \
    tests/core/test_dtypes.py tests/ops/test_gpu_ops.py tests/core/test_conformance.py tests/ops/test_compile.py \
    -k "not interpreter" >"$OUT/gpu_tests.log" 2>&1
echo "[verify] pytest rc $? at $SECONDS s: $(grep -c PASSED "$OUT/gpu_tests.log") passed, $(grep -c SKIPPED "$OUT/gpu_tests.log") skipped"
grep "FAILED\|ERROR\|Timeout" "$OUT/gpu_tests.log" | grep -v "^E " | head -20
grep -E "^(FAILED|ERROR)|[0-9]+ (passed|failed)" "$OUT/gpu_tests.log" | tail -12
wait "$amp_pid"

if [[ "${BENCH:-0}" == 1 ]]; then
    left=$(( ${LIMIT_S:-560} - SECONDS ))
    echo "[verify] benchmark with $left s left"
    ((left > 60)) && timeout "$left" python3 tools/analysis/benchmark.py --device cuda --batch-size 128 --amp bf16 \
        --warmup 3 --iters 10 --repeats 3 --modes cudagraphs --models a2mamba_t \
        --yardsticks swin_tiny_patch4_window7_224 2>"$OUT/bench.err" | tee "$OUT/bench.md"
    grep "^\[" "$OUT/bench.err" | tail -10
fi
echo "[verify] done at $SECONDS s"
