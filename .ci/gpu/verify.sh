#!/usr/bin/env bash
# One device call: the GPU correctness checks, one after another so that each has the cores it
# needs (Triton's and Inductor's compiles stall each other and a training run beside them).
#   - MMCV=1 first starts building mmcv with its CUDA ops (MMCV_JOBS jobs, default 12) in a
#     session of its own (setsid: it outlives this call, so a later call on the same machine finds
#     mmcv in build/gpu-site; build/mmcv_ready marks the end, build/mmcv_build.log says how it went);
#   - builds the CUDA scan in place (build_scan.sh);
#   - STEPS (default 200) bf16 AdamW steps of A2Mamba-T at lr 2e-3, eager (amp_stability.py);
#   - pytest (-n WORKERS, default 2) on TESTS: by default the fp16 cast model on CUDA and the
#     checks that compile the model on the GPU (conformance goldens compiled, fp32, TF32 off; the
#     whole model as one graph; compiled equals eager); TESTS="tests/ops/test_gpu_ops.py ..."
#     runs others;
#   - everything stops LIMIT_S (default 580) seconds after the start.
# Writes $OUT/build_scan.log, $OUT/amp_eager.log, $OUT/gpu_tests.log.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
OUT="${OUT:-/tmp}"
LIMIT_S="${LIMIT_S:-580}"
export PYTHONUNBUFFERED=1 A2MAMBA_CONFORMANCE="$PWD/.gpu_stage/conformance" TORCHINDUCTOR_CACHE_DIR="$PWD/build/inductor" TRITON_CACHE_DIR="$PWD/build/triton"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c 'import torch, triton; print("torch", torch.__version__, "triton", triton.__version__)'

mkdir -p build
if [[ "${MMCV:-0}" == 1 && ! -e build/mmcv_ready ]]; then
    MMCV_JOBS="${MMCV_JOBS:-12}" setsid bash -c 'source .ci/gpu/setup_gpu_env.sh && touch build/mmcv_ready' \
        >build/mmcv_build.log 2>&1 < /dev/null &
    echo $! >build/mmcv_build.pid
fi
JOBS=4 bash .ci/gpu/build_scan.sh >"$OUT/build_scan.log" 2>&1 || { tail -40 "$OUT/build_scan.log"; exit 1; }
echo "[verify] scan ready at $SECONDS s"

if ((${STEPS:-200} > 0)); then
    timeout "${AMP_LIMIT:-200}" python3 .ci/gpu/amp_stability.py --model a2mamba_t --steps "${STEPS:-200}" --lr 2e-3 \
        --mode eager >"$OUT/amp_eager.log" 2>&1
    echo "[verify] amp_stability eager: rc $? at $SECONDS s"
    tail -4 "$OUT/amp_eager.log"
fi

default_tests=(
    tests/core/test_dtypes.py::'test_cast_model_runs_and_matches_float32[cuda-dtype2-0.005]'
    tests/core/test_conformance.py::'test_golden_outputs[nano_grad_224-cuda-compiled]'
    tests/core/test_conformance.py::'test_golden_outputs[nano_feat_256x320-cuda-compiled]'
    tests/ops/test_compile.py::'test_compiled_equals_eager_on_gpu[default]'
    tests/ops/test_compile.py::'test_compiled_equals_eager_on_gpu[reduce-overhead]'
    tests/ops/test_compile.py::'test_whole_model_is_one_graph[eval-cuda]'
)
if [[ -n "${TESTS:-}" ]]; then read -ra tests <<<"$TESTS"; else tests=("${default_tests[@]}"); fi
left=$((LIMIT_S - SECONDS))
timeout "$left" python3 -m pytest -v -n "${WORKERS:-2}" -p no:cacheprovider --timeout "$left" -W ignore \
    "${tests[@]}" >"$OUT/gpu_tests.log" 2>&1
echo "[verify] pytest rc $? at $SECONDS s: $(grep -c PASSED "$OUT/gpu_tests.log") passed, $(grep -c SKIPPED "$OUT/gpu_tests.log") skipped"
grep -E "PASSED|FAILED|ERROR|Timeout" "$OUT/gpu_tests.log" | grep -v "^E " | head -30
grep -E "[0-9]+ (passed|failed)" "$OUT/gpu_tests.log" | tail -3
if [[ "${MMCV:-0}" == 1 ]]; then
    [[ -e build/mmcv_ready ]] && echo "[verify] mmcv built" || { echo "[verify] mmcv build still running:"; tail -3 build/mmcv_build.log; }
fi
echo "[verify] done at $SECONDS s"
