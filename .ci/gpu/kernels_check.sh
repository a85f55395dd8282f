#!/usr/bin/env bash
# One device call on a GPU machine (torch + CUDA + Triton in the image; needs no wheels): builds
# the CUDA selective scan in place, runs the GPU tests (ops against their references,
# conformance goldens with the fast backends), then times the models in eager mode
# (tools/analysis/benchmark.py: A2Mamba-N/T/S with swin_tiny and convnext_tiny as yardsticks, 224^2,
# batch 128, bf16). Logs go to $OUT (or /tmp). The goldens travel in an ignored folder:
#   mkdir -p .gpu_stage && cp -r ../shared/conformance .gpu_stage/   (here; the call carries .gpu_stage)
# STEPS (default "build test ops eager") picks the parts: "ops" times the scan and attention
# kernels (tools/analysis/benchmark_ops.py), "compile" the models under torch.compile, "profile"
# profiles A2Mamba-T. MODELS overrides the A2Mamba sizes timed.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
OUT="${OUT:-/tmp}"
STEPS="${STEPS:-build test ops eager}"
export PYTHONUNBUFFERED=1 A2MAMBA_CONFORMANCE="$PWD/.gpu_stage/conformance"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
bench=(python3 tools/analysis/benchmark.py --device cuda --batch-size 128 --amp bf16 --train)
yardsticks=(--yardsticks swin_tiny_patch4_window7_224 convnext_tiny)
for step in $STEPS; do
    start=$SECONDS
    case "$step" in
    build)
        A2MAMBA_FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST="$(python3 -c 'import torch; print("%d.%d" % torch.cuda.get_device_capability())')" \
            MAX_JOBS="$(nproc)" python3 setup.py build_ext --inplace >"$OUT/build.log" 2>&1 \
            || { tail -40 "$OUT/build.log"; exit 1; } ;;
    test)
        python3 -m pytest -q -n 8 -p no:cacheprovider tests/ops/test_gpu_ops.py tests/core/test_conformance.py \
            -k "not interpreter" 2>&1 | tee "$OUT/gpu_tests.log" | tail -15 ;;
    ops)
        python3 tools/analysis/benchmark_ops.py --skip-reference --fused-configs auto 4,2,4 --out "$OUT/bench_ops.md" \
            >"$OUT/bench_ops.log" 2>&1 || tail -30 "$OUT/bench_ops.log" ;;
    eager)
        "${bench[@]}" --models ${MODELS:-a2mamba_n a2mamba_t a2mamba_s} "${yardsticks[@]}" 2>&1 \
            | tee "$OUT/bench_eager.md" ;;
    compile)
        "${bench[@]}" --compile --models ${MODELS:-a2mamba_t} "${yardsticks[@]}" 2>&1 \
            | grep -v "^W1\|^V1\|Exception ignored\|^Traceback\|^  File\|AttributeError" | tee "$OUT/bench_compile.md" ;;
    profile)
        python3 tools/analysis/profile_model.py --model a2mamba_t --batch-size 128 --amp bf16 2>&1 | tee "$OUT/profile_t.txt" | tail -60 ;;
    *) echo "unknown step $step" >&2; exit 2 ;;
    esac
    echo "[kernels_check] $step: $((SECONDS - start)) s" >&2
done
