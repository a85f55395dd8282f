#!/usr/bin/env bash
# Sourced on the GPU machine by the other scripts of .ci/gpu/: installs the carried wheels into
# build/gpu-site (ignored: a machine kept warm between calls keeps it) and builds mmcv 2.1.0 with its CUDA ops for this card only, on every core (about
# 4.5 min on 32 cores; MMCV_JOBS caps the jobs). MMCV_WITH_OPS=0 installs mmcv without its ops in seconds instead: enough
# for classification (mmpretrain needs no mmcv op), not for mmdet / mmseg.
# Needs .whl/ from .ci/gpu/fetch_wheels.sh. Exports PYTHONPATH.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
SITE="$ROOT/build/gpu-site"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" \
    "$ROOT"/.whl/*.whl
export PYTHONPATH="$SITE:$ROOT${PYTHONPATH:+:$PYTHONPATH}"
# mmpretrain turns its multimodal models on when the pycocotools and transformers distributions
# are both installed, and those models fail to import with the image's newer transformers (which
# takes mmpretrain.models, and mmdet's ReID preprocessor with it, down). mmdet imports pycocotools
# as a module, which works without the distribution's metadata.
rm -rf "$SITE"/pycocotools-*.dist-info

MMCV_WITH_OPS="${MMCV_WITH_OPS:-1}"
if [[ "$MMCV_WITH_OPS" == 0 ]]; then
    probe='import mmcv'
    check='import mmcv, mmpretrain, torch; print("mmcv (no ops)", mmcv.__version__, "mmpretrain", mmpretrain.__version__, "torch", torch.__version__, torch.cuda.get_device_name())'
else
    probe='import mmcv.ops'
    check='import mmcv, mmcv.ops, mmdet, mmseg, torch; print("mmcv", mmcv.__version__, "mmdet", mmdet.__version__, "mmseg", mmseg.__version__, "torch", torch.__version__, torch.cuda.get_device_name())'
fi
if ! python3 -c "$probe" 2>/dev/null; then
    arch="$(python3 -c 'import torch; print("%d.%d" % torch.cuda.get_device_capability())')"
    build="$ROOT/build/mmcv-build"
    rm -rf "$build" && mkdir -p "$build"
    tar -xzf "$ROOT"/.whl/src/mmcv-2.1.0.tar.gz -C "$build"
    # torch's ATen headers need C++20 with this compiler; mmcv hard-codes -std=c++17.
    sed -i 's/-std=c++17/-std=c++20/g' "$build/mmcv-2.1.0/setup.py"
    start=$SECONDS
    echo "[setup_gpu_env] building mmcv 2.1.0 (MMCV_WITH_OPS=$MMCV_WITH_OPS) for sm_${arch/./} with ${MMCV_JOBS:-$(nproc)} jobs" >&2
    (cd "$build/mmcv-2.1.0" && MMCV_WITH_OPS="$MMCV_WITH_OPS" FORCE_CUDA="$MMCV_WITH_OPS" TORCH_CUDA_ARCH_LIST="$arch" \
        MAX_JOBS="${MMCV_JOBS:-$(nproc)}" python3 -m pip install -q --no-index --no-deps --no-build-isolation --no-cache-dir --upgrade \
        --target "$SITE" .)
    echo "[setup_gpu_env] mmcv built in $((SECONDS - start)) s" >&2
fi
python3 -c "$check"
