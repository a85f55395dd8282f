#!/usr/bin/env bash
# Sourced by dist_train.sh, dist_test.sh, slurm_train.sh and slurm_test.sh (not run by itself).
# Sets ROOT (the repository) and PYTHON ($PYTHON if set, else the repository's .venv/bin/python
# when it exists, else python on PATH), and puts ROOT on PYTHONPATH for the tools.
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ -x "$ROOT/.venv/bin/python" ]; then DEFAULT_PYTHON="$ROOT/.venv/bin/python"; else DEFAULT_PYTHON=python; fi
PYTHON="${PYTHON:-$DEFAULT_PYTHON}"
export PYTHONPATH="$ROOT:${PYTHONPATH:-}"

# need_args COUNT GIVEN USAGE: prints "usage: USAGE" and exits with status 2 unless
# the script got at least COUNT arguments (GIVEN: its $#).
need_args() {
    if [ "$2" -lt "$1" ]; then
        echo "usage: $3" >&2
        exit 2
    fi
}

# check_gpus COUNT: exits with status 2 unless COUNT is a positive integer.
check_gpus() {
    case "$1" in
        '' | *[!0-9]* | 0) echo "GPUS must be a positive integer, got '$1'" >&2; exit 2 ;;
    esac
}

# run_torchrun GPUS SCRIPT ARGS...: SCRIPT on GPUS processes of this machine through torchrun, or
# of several with NNODES, NODE_RANK, MASTER_ADDR and PORT as for torchrun.
run_torchrun() {
    local gpus=$1
    shift
    exec "$PYTHON" -m torch.distributed.run \
        --nnodes="${NNODES:-1}" --node_rank="${NODE_RANK:-0}" --master_addr="${MASTER_ADDR:-127.0.0.1}" \
        --nproc_per_node="$gpus" --master_port="${PORT:-29500}" "$@"
}

# run_srun PARTITION JOB_NAME SCRIPT ARGS...: SCRIPT as one Slurm task per GPU. GPUS (default 8),
# GPUS_PER_NODE (GPUS, at most 8), CPUS_PER_TASK (5) and SRUN_ARGS (extra srun options) come
# from the environment.
run_srun() {
    local partition=$1 job_name=$2
    shift 2
    local gpus=${GPUS:-8}
    check_gpus "$gpus"
    local gpus_per_node=${GPUS_PER_NODE:-$((gpus < 8 ? gpus : 8))}
    # SRUN_ARGS stays unquoted: it holds several srun options
    exec srun -p "$partition" --job-name="$job_name" \
        --gres=gpu:"$gpus_per_node" --ntasks="$gpus" --ntasks-per-node="$gpus_per_node" \
        --cpus-per-task="${CPUS_PER_TASK:-5}" --kill-on-bad-exit=1 ${SRUN_ARGS:-} \
        "$PYTHON" -u "$@"
}
