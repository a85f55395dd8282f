#!/usr/bin/env bash
# One device call: the GPU correctness checks, side by side on one card (none of them is timed).
#   - builds the CUDA scan in place;
#   - starts building mmcv with its CUDA ops in a process of its own (setsid: it outlives this call,
#     so a later call on the same machine finds mmcv in /tmp/site; /tmp/mmcv_ready marks the end);
#   - pytest: the fp16 cast model, the GPU op tests, the conformance goldens (eager and compiled
#     kernels, fp32, TF32 off), compiled equals eager (default and reduce-overhead);
#   - meanwhile STEPS bf16 AdamW steps of A2Mamba-T at lr 2e-3, CUDA graphs (amp_stability.py).
# Writes $OUT/gpu_tests.log, $OUT/amp_stability.log, $OUT/build_scan.log; /tmp/mmcv_build.log.
#   TEST_LIMIT (default 420) bounds pytest, AMP_LIMIT (default 420) the training steps.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
OUT="${OUT:-/tmp}"
export PYTHONUNBUFFERED=1 A2MAMBA_CONFORMANCE="$PWD/.gpu_stage/conformance" TORCHINDUCTOR_CACHE_DIR=/tmp/inductor
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c 'import torch, triton; print("torch", torch.__version__, "triton", triton.__version__)'

if [[ ! -e /tmp/mmcv_ready ]]; then
    MMCV_JOBS="${MMCV_JOBS:-8}" setsid bash -c 'source .ci/gpu/setup_gpu_env.sh && touch /tmp/mmcv_ready' \
        >/tmp/mmcv_build.log 2>&1 < /dev/null &
fi
arch="$(python3 -c 'import torch; print("%d.%d" % torch.cuda.get_device_capability())')"
start=$SECONDS
A2MAMBA_FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST="$arch" MAX_JOBS=8 python3 setup.py build_ext --inplace \
    >"$OUT/build_scan.log" 2>&1 || { tail -40 "$OUT/build_scan.log"; exit 1; }
echo "[verify] scan built in $((SECONDS - start)) s"

timeout "${AMP_LIMIT:-420}" python3 .ci/gpu/amp_stability.py --model a2mamba_t --steps "${STEPS:-200}" --lr 2e-3 \
    --mode cudagraphs >"$OUT/amp_stability.log" 2>&1 &
amp_pid=$!
timeout "${TEST_LIMIT:-420}" python3 -m pytest -q -rs -n 6 -p no:cacheprovider --durations=15 \
    tests/test_dtypes.py tests/test_gpu_ops.py tests/test_conformance.py tests/test_compile.py \
    -k "not interpreter" >"$OUT/gpu_tests.log" 2>&1
test_status=$?
tail -30 "$OUT/gpu_tests.log"
wait "$amp_pid"
amp_status=$?
grep -v "^W1\|^V1\|^I1" "$OUT/amp_stability.log" | tail -15
echo "[verify] pytest rc $test_status, amp_stability rc $amp_status at $SECONDS s; mmcv: $(tail -2 /tmp/mmcv_build.log | tr '\n' ' ')"
exit $((test_status || amp_status))
