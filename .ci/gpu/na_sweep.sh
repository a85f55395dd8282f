#!/usr/bin/env bash
# One device call (or the tail of one): the fused attention's kernel time per call of A2Mamba-T
# (224 px batch 128; the library's settings also at 800x1344 batch 2) under several launch
# settings, timed as CUDA graph replays (tools/analysis/benchmark_ops.py --cuda-graphs), to pick
# the defaults of ops.neighborhood_attention_fused.launch_settings. The kernels of every setting
# are compiled first, one process per setting in parallel (Triton compiles on one core each).
#   SETTINGS: launch settings RS,RS_RPB_GRAD,WARPS[,QUERIES_PER_TILE] or auto (default below).
# Writes $OUT/na_sweep.md and $OUT/na_sweep.log.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
OUT="${OUT:-/tmp}"
export PYTHONUNBUFFERED=1 TRITON_CACHE_DIR="$PWD/build/triton"
read -ra settings <<<"${SETTINGS:-auto 2,1,2,32 2,1,4,32 2,2,4,32 2,1,4,64 1,1,4,64}"
start=$SECONDS
for s in "${settings[@]}"; do
    python3 tools/analysis/benchmark_ops.py --compile-only --fused-configs "$s" >"$OUT/na_sweep_compile_$s.log" 2>&1 &
done
wait
echo "[na_sweep] kernels compiled in $((SECONDS - start)) s"
python3 tools/analysis/benchmark_ops.py --tables fused --cuda-graphs --fused-configs "${settings[@]}" \
    --out "$OUT/na_sweep.md" >"$OUT/na_sweep.log" 2>&1 || tail -30 "$OUT/na_sweep.log"
grep "^|" "$OUT/na_sweep.md"
echo "[na_sweep] done in $((SECONDS - start)) s"
