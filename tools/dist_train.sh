#!/usr/bin/env bash
# Train on GPUS devices of this machine (torchrun), or of several with NNODES, NODE_RANK,
# MASTER_ADDR and PORT as for torchrun. PYTHON picks the interpreter (default: the
# repository's .venv when it exists, else python on PATH).
set -euo pipefail
source "$(dirname "$0")/launch_common.sh"
need_args 2 $# "bash $0 CONFIG GPUS [tools/train.py arguments...]"
CONFIG=$1
GPUS=$2
shift 2
check_gpus "$GPUS"
run_torchrun "$GPUS" "$ROOT/tools/train.py" "$CONFIG" --launcher pytorch "$@"
