#!/usr/bin/env bash
# Train on GPUS devices of this machine (torchrun), or of several with NNODES, NODE_RANK,
# MASTER_ADDR and PORT as for torchrun. PYTHON picks the interpreter (default: the
# repository's .venv when it exists, else python on PATH).
set -euo pipefail
if [ $# -lt 2 ]; then
    echo "usage: bash $0 CONFIG GPUS [tools/train.py arguments...]" >&2
    exit 2
fi
CONFIG=$1
GPUS=$2
shift 2
case "$GPUS" in
    '' | *[!0-9]* | 0) echo "GPUS must be a positive integer, got '$GPUS'" >&2; exit 2 ;;
esac
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
if [ -x "$ROOT/.venv/bin/python" ]; then DEFAULT_PYTHON="$ROOT/.venv/bin/python"; else DEFAULT_PYTHON=python; fi
PYTHON="${PYTHON:-$DEFAULT_PYTHON}"
PYTHONPATH="$ROOT:${PYTHONPATH:-}" exec "$PYTHON" -m torch.distributed.run \
    --nnodes="${NNODES:-1}" --node_rank="${NODE_RANK:-0}" --master_addr="${MASTER_ADDR:-127.0.0.1}" \
    --nproc_per_node="$GPUS" --master_port="${PORT:-29500}" \
    "$ROOT/tools/train.py" "$CONFIG" --launcher pytorch "$@"
