#!/usr/bin/env bash
# One device call: builds the CUDA scan in place, runs the GPU op tests and the conformance goldens
# (fast backends, compiled path), profiles the fused attention, then times A2Mamba and the timm
# yardsticks per mode (tools/analysis/benchmark.py). STEPS picks the parts; MODELS / MODES the table.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
OUT="${OUT:-/tmp}"
STEPS="${STEPS:-build test naprof bench}"
export PYTHONUNBUFFERED=1 A2MAMBA_CONFORMANCE="$PWD/.gpu_stage/conformance" TORCHINDUCTOR_CACHE_DIR="$PWD/build/inductor" TRITON_CACHE_DIR="$PWD/build/triton"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm --format=csv,noheader
python3 -c 'import torch, triton; print("torch", torch.__version__, "triton", triton.__version__)'
for step in $STEPS; do
    start=$SECONDS
    case "$step" in
    build)
        A2MAMBA_FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS=16 python3 setup.py build_ext --inplace \
            >"$OUT/build.log" 2>&1 || { tail -40 "$OUT/build.log"; exit 1; } ;;
    test)
        timeout "${TEST_LIMIT:-240}" python3 -m pytest -q -x -n 8 -p no:cacheprovider tests/ops/test_gpu_ops.py \
            tests/core/test_conformance.py tests/ops/test_compile.py -k "not interpreter" 2>&1 | tee "$OUT/gpu_tests.log" | tail -25 ;;
    naprof)
        timeout 120 python3 .ci/gpu/na_profile.py 2>&1 | tee "$OUT/na_profile.txt" ;;
    bench)
        timeout "${BENCH_LIMIT:-300}" python3 tools/analysis/benchmark.py --device cuda --batch-size 128 --amp bf16 --train \
            --warmup 3 --iters ${ITERS:-10} --repeats ${REPEATS:-3} --modes ${MODES:-eager compile cudagraphs} \
            --models ${MODELS:-a2mamba_t} --yardsticks ${YARDSTICKS:-swin_tiny_patch4_window7_224 convnext_tiny} \
            2>"$OUT/bench.err" | tee "$OUT/bench.md"; grep "^\[" "$OUT/bench.err" | tail -40 ;;
    profile)
        timeout "${PROFILE_LIMIT:-400}" python3 tools/analysis/profile_model.py --model a2mamba_t --batch-size 128 --amp bf16 \
            --mode ${PROFILE_MODE:-compile} --top 40 2>&1 | grep -v "^W1\|^V1" | tee "$OUT/profile_t.txt" | tail -100 ;;
    *) echo "unknown step $step" >&2; exit 2 ;;
    esac
    echo "[speed_check] $step: $((SECONDS - start)) s" >&2
done
