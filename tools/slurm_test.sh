#!/usr/bin/env bash
# Test under Slurm: one task per GPU. GPUS (default 8), GPUS_PER_NODE (GPUS, at most 8), CPUS_PER_TASK (5)
# and SRUN_ARGS (extra srun options) come from the environment. PYTHON picks the interpreter
# (default: the repository's .venv when it exists, else python on PATH).
set -euo pipefail
source "$(dirname "$0")/launch_common.sh"
need_args 4 $# "[GPUS=8 GPUS_PER_NODE=8 CPUS_PER_TASK=5 SRUN_ARGS=...] bash $0 PARTITION JOB_NAME CONFIG CHECKPOINT [tools/test.py arguments...]"
PARTITION=$1
JOB_NAME=$2
CONFIG=$3
CHECKPOINT=$4
shift 4
run_srun "$PARTITION" "$JOB_NAME" "$ROOT/tools/test.py" "$CONFIG" "$CHECKPOINT" --launcher slurm "$@"
