"""Builds the embedded demo dataset: real cell nuclei with instance masks, for mmdet and mmseg.

Source: the 512x512 fluorescence image of the 2018 Data Science Bowl (Caicedo et al., Nature
Methods 16, 2019) and its 125 hand-labelled nuclei, shipped in the ``stardist==0.9.2`` wheel on
PyPI (``stardist/data/images/{img2d,mask2d}.tif``). The wheel is fetched with ``pip download``
(or given with ``--wheel``); the TIFFs are read from it with Pillow and checked against their
SHA-256, so every machine gets the same dataset. Nothing is committed to the repository.

Split (deterministic): the bottom-right 256x256 quadrant (28 nuclei) is the validation image;
the training images are the 256x256 crops, at a 64-px stride, that do not overlap it (9 crops).
Nuclei cut by a crop border keep their visible part if it has at least ``MIN_AREA`` pixels.

Writes, under ``--out`` (default ``data/nuclei``)::

    images/{train,val}/*.png                8-bit RGB (the grey image in three channels)
    annotations/instances_{train,val}.json  COCO instances (one class, RLE masks), for mmdet
    seg_maps/{train,val}/*.png              0 background, 1 nucleus, for mmseg

Usage: python tools/dataset_converters/prepare_nuclei_demo.py [--out data/nuclei] [--wheel stardist-0.9.2-*.whl]
"""
import argparse
import hashlib
import io
import json
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

STARDIST = 'stardist==0.9.2'
# The wheel built for CPython 3.11; every platform's wheel carries the same images.
WHEEL_TAGS = ['--python-version', '3.11', '--implementation', 'cp', '--abi', 'cp311',
              '--platform', 'manylinux_2_28_x86_64']
IMAGE_MEMBER = 'stardist/data/images/img2d.tif'
LABEL_MEMBER = 'stardist/data/images/mask2d.tif'
SHA256 = {
    IMAGE_MEMBER: 'f9ccc1571b92c861ff87e28463068b43f61bd47357ed0503f711e5cd1eb97750',
    LABEL_MEMBER: '59ad5e820b7982ca9d13e946fa6e7f64e2714899e00a2ae6c69aa79aad53d46f',
}
TILE = 256
STRIDE = 64
MIN_AREA = 16
VAL_ORIGIN = (256, 256)  # (row, col) of the validation quadrant
CLASSES = ('nucleus',)


def download_wheel(dest: Path) -> Path:
    """``pip download`` of the stardist wheel (PyPI only; no dependencies)."""
    cmd = [sys.executable, '-m', 'pip', 'download', '-q', '--disable-pip-version-check', '--no-deps',
           '--only-binary=:all:', *WHEEL_TAGS, STARDIST, '-d', str(dest)]
    subprocess.run(cmd, check=True)
    wheels = sorted(dest.glob('stardist-0.9.2-*.whl'))
    if not wheels:
        raise RuntimeError(f'pip download {STARDIST} produced no wheel in {dest}')
    return wheels[0]


def read_nuclei(wheel: Path) -> Tuple[np.ndarray, np.ndarray]:
    """Returns the image ``(512, 512)`` uint8 and the instance labels ``(512, 512)`` int32."""
    arrays = []
    with zipfile.ZipFile(wheel) as archive:
        for member in (IMAGE_MEMBER, LABEL_MEMBER):
            data = archive.read(member)
            digest = hashlib.sha256(data).hexdigest()
            if digest != SHA256[member]:
                raise RuntimeError(f'{member} in {wheel} has SHA-256 {digest}, expected {SHA256[member]}')
            arrays.append(np.array(Image.open(io.BytesIO(data))))
    image, labels = arrays
    if image.max() > 255:
        raise RuntimeError(f'{IMAGE_MEMBER} exceeds 8 bits (max {image.max()})')
    return image.astype(np.uint8), labels.astype(np.int32)


def split_origins(size: int) -> Dict[str, List[Tuple[int, int]]]:
    """Top-left corners of the train crops (clear of the validation quadrant) and the val one."""
    train = []
    for row in range(0, size - TILE + 1, STRIDE):
        for col in range(0, size - TILE + 1, STRIDE):
            overlaps_val = row + TILE > VAL_ORIGIN[0] and col + TILE > VAL_ORIGIN[1]
            if not overlaps_val:
                train.append((row, col))
    return dict(train=train, val=[VAL_ORIGIN])


def instances(labels: np.ndarray) -> List[dict]:
    """COCO annotations (without ids) of the nuclei visible in a label crop."""
    annotations = []
    for label in np.unique(labels):
        if label == 0:
            continue
        mask = labels == label
        area = int(mask.sum())
        if area < MIN_AREA:
            continue
        rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
        x, y, w, h = (float(v) for v in mask_utils.toBbox(rle))
        rle['counts'] = rle['counts'].decode('ascii')
        annotations.append(dict(category_id=1, segmentation=rle, area=area, bbox=[x, y, w, h], iscrowd=0))
    return annotations


def write_split(name: str, origins: List[Tuple[int, int]], image: np.ndarray, labels: np.ndarray,
                out: Path) -> int:
    """Writes one split's images, semantic maps and COCO file; returns its number of nuclei."""
    (out / 'images' / name).mkdir(parents=True, exist_ok=True)
    (out / 'seg_maps' / name).mkdir(parents=True, exist_ok=True)
    (out / 'annotations').mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for image_id, (row, col) in enumerate(origins, start=1):
        stem = f'nuclei_r{row:03d}_c{col:03d}'
        crop = image[row:row + TILE, col:col + TILE]
        crop_labels = labels[row:row + TILE, col:col + TILE]
        Image.fromarray(np.stack([crop] * 3, axis=-1)).save(out / 'images' / name / f'{stem}.png')
        Image.fromarray((crop_labels > 0).astype(np.uint8)).save(out / 'seg_maps' / name / f'{stem}.png')
        images.append(dict(id=image_id, file_name=f'{stem}.png', height=TILE, width=TILE))
        for ann in instances(crop_labels):
            annotations.append(dict(ann, id=len(annotations) + 1, image_id=image_id))
    coco = dict(images=images, annotations=annotations,
                categories=[dict(id=i + 1, name=c) for i, c in enumerate(CLASSES)])
    (out / 'annotations' / f'instances_{name}.json').write_text(json.dumps(coco))
    return len(annotations)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--out', type=Path, default=Path('data/nuclei'), help='output directory')
    parser.add_argument('--wheel', type=Path, help=f'a downloaded {STARDIST} wheel (default: pip download it)')
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        wheel = args.wheel or download_wheel(Path(tmp))
        if not wheel.is_file():
            raise FileNotFoundError(f'stardist wheel not found: {wheel}')
        image, labels = read_nuclei(wheel)
    for name, origins in split_origins(image.shape[0]).items():
        count = write_split(name, origins, image, labels, args.out)
        print(f'{name}: {len(origins)} images, {count} nuclei -> {args.out}')


if __name__ == '__main__':
    main()
