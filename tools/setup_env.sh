#!/usr/bin/env bash
# Creates or reuses the project's virtual environment (.venv in the checkout).
#
# Idempotent: a stamp keyed by this script's and requirements.txt's content makes a
# second run a no-op (seconds). mmcv 2.1.0 has no wheel for torch 2.14, so its sdist is
# built once (CPU ops, or CUDA ops where a CUDA toolkit and a CUDA torch with a GPU are
# present) and the wheel is kept in a per-user cache keyed by Python/torch/CUDA versions:
#   ${A2MAMBA_CACHE:-~/.cache/a2mamba}/wheels/<py>-torch<ver>-<cuda>/mmcv-2.1.0-*.whl
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${A2MAMBA_VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3.11}"
CACHE="${A2MAMBA_CACHE:-$HOME/.cache/a2mamba}"
TORCH_VERSION=2.14.1
TORCHVISION_VERSION=0.29.1
MMCV_VERSION=2.1.0

stamp_key="$(cat "$ROOT/tools/setup_env.sh" "$ROOT/requirements.txt" "$ROOT/setup.py" | sha256sum | cut -c1-16)"
stamp="$VENV/.a2mamba-env-$stamp_key"
if [[ -f "$stamp" ]]; then
    exit 0
fi

log() { echo "[setup_env] $*" >&2; }

if [[ ! -x "$VENV/bin/python" ]]; then
    command -v "$PYTHON" >/dev/null || PYTHON=python3
    log "creating $VENV with $($PYTHON --version)"
    "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"
# pip's configured local indexes hold only some packages; it warns for every other one.
quiet_pip() {
    "$PY" -m pip "$@" --disable-pip-version-check --progress-bar off -q 2>&1 \
        | { grep -v 'is ignored: it is neither a file nor a directory' || true; }
}
PIP=(quiet_pip install)

"${PIP[@]}" --upgrade pip
# mmcv's setup.py imports pkg_resources: setuptools 81+ dropped it.
"${PIP[@]}" "torch==$TORCH_VERSION" "torchvision==$TORCHVISION_VERSION" "setuptools==80.9.0" wheel ninja

tag="$("$PY" - <<'EOF'
import sys, torch
cuda = f"cu{torch.version.cuda.replace('.', '')}" if torch.version.cuda else "cpu"
with_cuda_ops = torch.version.cuda is not None and torch.cuda.is_available()
print(f"py{sys.version_info[0]}{sys.version_info[1]}-torch{torch.__version__.split('+')[0]}-{cuda}-{'cudaops' if with_cuda_ops else 'cpuops'}")
EOF
)"
wheel_dir="$CACHE/wheels/$tag"
mkdir -p "$wheel_dir"

if ! "$PY" -c "import mmcv, mmcv.ops" 2>/dev/null || [[ "$("$PY" -c 'import mmcv; print(mmcv.__version__)')" != "$MMCV_VERSION" ]]; then
    whl="$(ls "$wheel_dir"/mmcv-$MMCV_VERSION-*.whl 2>/dev/null | head -n1 || true)"
    if [[ -z "$whl" ]]; then
        build="$(mktemp -d)"
        log "building mmcv $MMCV_VERSION with ops for $tag (once; ~15 min on 2 cores) in $build"
        quiet_pip download --no-deps --no-binary :all: --no-build-isolation "mmcv==$MMCV_VERSION" -d "$build"
        tar -xzf "$build"/mmcv-$MMCV_VERSION.tar.gz -C "$build"
        src="$build/mmcv-$MMCV_VERSION"
        # torch 2.14's ATen headers need C++20; mmcv hard-codes -std=c++17 after any CXXFLAGS.
        sed -i 's/-std=c++17/-std=c++20/g' "$src/setup.py"
        extra=()
        if [[ "$tag" == *cudaops ]]; then extra=(FORCE_CUDA=1); fi
        (cd "$src" && export MMCV_WITH_OPS=1 MAX_JOBS="${MAX_JOBS:-$(nproc)}" "${extra[@]}" \
            && quiet_pip wheel --no-build-isolation --no-deps . -w "$build/dist")
        cp "$build"/dist/mmcv-*.whl "$wheel_dir/"
        rm -rf "$build"
        whl="$(ls "$wheel_dir"/mmcv-$MMCV_VERSION-*.whl | head -n1)"
    fi
    log "installing $(basename "$whl") from the cache"
    "${PIP[@]}" --no-deps "$whl"
    # mmcv's runtime needs (addict, yapf, ...) without letting pip rebuild it.
    "${PIP[@]}" addict packaging pillow pyyaml yapf opencv-python
fi

"${PIP[@]}" -r "$ROOT/requirements.txt"
"${PIP[@]}" --no-deps --no-build-isolation -e "$ROOT"

"$PY" -c "import torch, mmcv, mmcv.ops, mmengine, mmdet, mmseg, mmpretrain, a2mamba_core, ops" \
    || { log "environment check failed"; exit 1; }
rm -f "$VENV"/.a2mamba-env-*
touch "$stamp"
log "environment ready: $VENV"
