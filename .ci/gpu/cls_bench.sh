#!/usr/bin/env bash
# The classification rows of docs/BENCHMARKS.md (tools/analysis/benchmark.py, batch 128, bf16,
# 224^2) in two calls on one warm machine. Compiles dominate them (1-3 min per model and kind of
# step on 16 cores, most of it single-threaded tracing and lowering), so they are done first, all
# at once, and the timed runs then find them in the caches:
#   PHASE=warm  one process per model and compiled mode (WARM: "mode:model" words), all at once,
#               each compiling and running one step of each kind: fills Inductor's FX graph and
#               AOTAutograd caches and Triton's under build/ (a warm machine keeps build/ between
#               calls). They run in sessions of their own (setsid), so they may outlive the call;
#               nothing is timed. The GPU tests (TESTS, on WORKERS workers: verify.sh) run beside them.
#   PHASE=time  waits for those processes, then the timed runs, one process after another with the
#               card and cores to themselves (RUNS: ";"-separated benchmark.py arguments); compiles
#               are then cache hits (Dynamo's tracing remains).
# Both stop LIMIT_S (default 540) seconds after the start. Writes $OUT/warm.log, $OUT/gpu_tests.log,
# $OUT/bench_<n>.md and $OUT/bench_<n>.err; the warm-up logs are build/warm/*.log.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
OUT="${OUT:-/tmp}"
LIMIT_S="${LIMIT_S:-540}"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD" A2MAMBA_CONFORMANCE="$PWD/.gpu_stage/conformance" \
    TORCHINDUCTOR_CACHE_DIR="$PWD/build/inductor" TRITON_CACHE_DIR="$PWD/build/triton"
COMMON=(--device cuda --batch-size 128 --amp bf16 --train)
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c 'import torch, triton; print("torch", torch.__version__, "triton", triton.__version__)'
mkdir -p build
JOBS=8 bash .ci/gpu/build_scan.sh >"$OUT/build_scan.log" 2>&1 || { tail -40 "$OUT/build_scan.log"; exit 1; }
echo "[cls_bench] scan ready at $SECONDS s"

warm_running() {  # how many warm-up processes are still running
    local n=0 pid
    [[ -e build/warm/pids ]] || { echo 0; return; }
    while read -r pid; do kill -0 "$pid" 2>/dev/null && n=$((n + 1)); done <build/warm/pids
    echo "$n"
}

warm_status() {
    for log in build/warm/*.log; do
        echo "== $log"; grep -E "^\[|Error|error:" "$log" | tail -3
    done
}

case "${PHASE:-warm}" in
warm)
    # (a2mamba_t@memory_budget=F does not compile with torch 2.11 and Triton 3.6: docs/BENCHMARKS.md)
    default_warm="cudagraphs:a2mamba_t cudagraphs:a2mamba_s cudagraphs:a2mamba_n
        cudagraphs:a2mamba_t@checkpoint=2,0,0,0 cudagraphs:a2mamba_t@checkpoint=1,0,0,0
        cudagraphs:swin_tiny_patch4_window7_224 cudagraphs:convnext_tiny
        compile:a2mamba_t compile:swin_tiny_patch4_window7_224"
    rm -rf build/warm && mkdir -p build/warm
    for word in ${WARM:-$default_warm}; do
        mode="${word%%:*}" model="${word#*:}"
        # a few compile workers each: a pool of one per core in every process would not fit memory
        TORCHINDUCTOR_COMPILE_THREADS=4 setsid timeout "${WARM_LIMIT_S:-1200}" python3 tools/analysis/benchmark.py \
            "${COMMON[@]}" --warmup 1 --iters 1 --modes "$mode" --models "$model" \
            >"build/warm/${mode}_${model//[@=,.]/_}.log" 2>&1 </dev/null &
        echo $! >>build/warm/pids
    done
    if [[ -n "${TESTS:-}" ]]; then
        OUT="$OUT" STEPS=0 LIMIT_S=$((LIMIT_S - SECONDS)) bash .ci/gpu/verify.sh
    fi
    while ((SECONDS < LIMIT_S && $(warm_running) > 0)); do sleep 5; done
    warm_status | tee "$OUT/warm.log"
    echo "[cls_bench] warm-up processes still running at $SECONDS s: $(warm_running)" ;;
time)
    # A2Mamba-S, the longest compile, last: a run cut short by LIMIT_S loses its own rows only
    default_runs="--modes eager cudagraphs --repeats 3 --models a2mamba_t a2mamba_n
        --yardsticks swin_tiny_patch4_window7_224 convnext_tiny;
        --modes cudagraphs --repeats 3 --models a2mamba_t@checkpoint=2,0,0,0 a2mamba_t@checkpoint=1,0,0,0;
        --modes compile --repeats 3 --models a2mamba_t --yardsticks swin_tiny_patch4_window7_224;
        --modes eager cudagraphs --repeats 3 --models a2mamba_s"
    while ((SECONDS < LIMIT_S && $(warm_running) > 0)); do sleep 5; done
    echo "[cls_bench] warm-up processes done at $SECONDS s"
    [[ -d build/warm ]] && warm_status >"$OUT/warm.log"
    IFS=';' read -ra runs <<<"${RUNS:-$default_runs}"
    n=0
    for run in "${runs[@]}"; do
        n=$((n + 1)) left=$((LIMIT_S - SECONDS))
        ((left > 20)) || { echo "[cls_bench] no time left for run $n: $run"; continue; }
        # shellcheck disable=SC2086  # a run is a list of arguments
        timeout "$left" python3 tools/analysis/benchmark.py "${COMMON[@]}" $run \
            >"$OUT/bench_$n.md" 2>"$OUT/bench_$n.err"
        echo "[cls_bench] run $n rc $? at $SECONDS s: $run"
        cat "$OUT/bench_$n.md"; grep "^\[" "$OUT/bench_$n.err" | tail -30
    done ;;
*) echo "PHASE must be warm or time" >&2; exit 2 ;;
esac
