#!/usr/bin/env bash
# Test on GPUS devices of this machine (torchrun), or of several with NNODES, NODE_RANK,
# MASTER_ADDR and PORT as for torchrun. PYTHON picks the interpreter (default: the
# repository's .venv when it exists, else python on PATH).
set -euo pipefail
source "$(dirname "$0")/launch_common.sh"
need_args 3 $# "bash $0 CONFIG CHECKPOINT GPUS [tools/test.py arguments...]"
CONFIG=$1
CHECKPOINT=$2
GPUS=$3
shift 3
check_gpus "$GPUS"
run_torchrun "$GPUS" "$ROOT/tools/test.py" "$CONFIG" "$CHECKPOINT" --launcher pytorch "$@"
