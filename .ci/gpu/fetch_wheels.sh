#!/usr/bin/env bash
# Run HERE (a machine with PyPI), before a GPU run: fills .whl/ in the repository root with what
# the GPU machine (Python 3.12, torch 2.11 + CUDA 13, no network, no OpenMMLab packages) lacks.
# The device call then names .whl in `carry` (.whl/ is git-ignored; about 10 MiB).
#
#   .whl/*.whl                the OpenMMLab wheels and their small dependencies that the GPU
#                             machine's image does not hold, for CPython 3.12 manylinux x86-64
#   .whl/src/mmcv-2.1.0.tar.gz  the mmcv sdist: its CUDA ops are compiled there (setup_gpu_env.sh)
#   .whl/data/stardist-*.whl  the demo data's source (tools/dataset_converters/prepare_nuclei_demo.py --wheel)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
DEST="$ROOT/.whl"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
mkdir -p "$DEST/src" "$DEST/data"
PIP=("$PY" -m pip download --disable-pip-version-check -q --no-deps)
CP312=(--only-binary=:all: --python-version 3.12 --implementation cp --abi cp312
       --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)

# Pure-Python packages (any platform) and the compiled ones (cp312) that the image lacks; the
# image already has numpy, scipy, matplotlib, opencv-python-headless, pillow, pyyaml, rich,
# regex, tqdm, six, packaging, einops and timm. setuptools 80.9: mmcv's setup.py imports
# pkg_resources, which setuptools 81+ dropped.
"${PIP[@]}" "${CP312[@]}" -d "$DEST" \
    mmengine==0.10.7 mmdet==3.3.0 mmsegmentation==1.2.2 mmpretrain==1.2.0 \
    mat4py modelindex model-index ordered-set markdown click importlib-metadata==8.7.0 \
    addict yapf platformdirs termcolor terminaltables prettytable wcwidth ftfy \
    pycocotools shapely setuptools==80.9.0
# mmcv 2.1.0 has no wheel for torch 2.11 / CUDA 13: its sdist is built there.
"${PIP[@]}" --no-binary :all: --no-build-isolation -d "$DEST/src" mmcv==2.1.0
"${PIP[@]}" --only-binary=:all: --python-version 3.11 --implementation cp --abi cp311 \
    --platform manylinux_2_28_x86_64 -d "$DEST/data" stardist==0.9.2
du -sh "$DEST"
ls "$DEST" "$DEST/src" "$DEST/data"
