#!/usr/bin/env bash
# Test on GPUS devices of this machine (torchrun), or of several with NNODES, NODE_RANK,
# MASTER_ADDR and PORT as for torchrun. PYTHON picks the interpreter (default: the
# repository's .venv when it exists, else python on PATH).
set -euo pipefail
if [ $# -lt 3 ]; then
    echo "usage: bash $0 CONFIG CHECKPOINT GPUS [tools/test.py arguments...]" >&2
    exit 2
fi
CONFIG=$1
CHECKPOINT=$2
GPUS=$3
shift 3
source "$(dirname "$0")/launch_common.sh"
check_gpus "$GPUS"
run_torchrun "$GPUS" "$ROOT/tools/test.py" "$CONFIG" "$CHECKPOINT" --launcher pytorch "$@"
