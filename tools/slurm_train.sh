#!/usr/bin/env bash
# Train under Slurm: one task per GPU. GPUS (default 8), GPUS_PER_NODE (GPUS, at most 8), CPUS_PER_TASK (5)
# and SRUN_ARGS (extra srun options) come from the environment. PYTHON picks the interpreter
# (default: the repository's .venv when it exists, else python on PATH).
set -euo pipefail
if [ $# -lt 3 ]; then
    echo "usage: [GPUS=8 GPUS_PER_NODE=8 CPUS_PER_TASK=5 SRUN_ARGS=...] bash $0 PARTITION JOB_NAME CONFIG" \
         "[tools/train.py arguments...]" >&2
    exit 2
fi
PARTITION=$1
JOB_NAME=$2
CONFIG=$3
shift 3
GPUS=${GPUS:-8}
case "$GPUS" in
    '' | *[!0-9]* | 0) echo "GPUS must be a positive integer, got '$GPUS'" >&2; exit 2 ;;
esac
GPUS_PER_NODE=${GPUS_PER_NODE:-$((GPUS < 8 ? GPUS : 8))}
CPUS_PER_TASK=${CPUS_PER_TASK:-5}
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
if [ -x "$ROOT/.venv/bin/python" ]; then DEFAULT_PYTHON="$ROOT/.venv/bin/python"; else DEFAULT_PYTHON=python; fi
PYTHON="${PYTHON:-$DEFAULT_PYTHON}"
# SRUN_ARGS stays unquoted: it holds several srun options
PYTHONPATH="$ROOT:${PYTHONPATH:-}" srun -p "$PARTITION" --job-name="$JOB_NAME" \
    --gres=gpu:"$GPUS_PER_NODE" --ntasks="$GPUS" --ntasks-per-node="$GPUS_PER_NODE" \
    --cpus-per-task="$CPUS_PER_TASK" --kill-on-bad-exit=1 ${SRUN_ARGS:-} \
    "$PYTHON" -u "$ROOT/tools/train.py" "$CONFIG" --launcher slurm "$@"
