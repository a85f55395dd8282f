"""Installs the A2Mamba packages: the model core, its ops and the OpenMMLab glue."""
import ast
from pathlib import Path

from setuptools import setup

ROOT = Path(__file__).parent


def read_version() -> str:
    tree = ast.parse((ROOT / 'a2mamba_core' / '__init__.py').read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and node.targets[0].id == '__version__':
            return ast.literal_eval(node.value)
    raise RuntimeError('a2mamba_core/__init__.py defines no __version__')


setup(
    name='a2mamba-openmmlab',
    version=read_version(),
    description='A2Mamba (arXiv 2507.16624) for mmpretrain, mmdet and mmsegmentation',
    packages=['a2mamba_core', 'ops', 'mmengine_ext', 'mmpretrain_ext', 'mmdet_ext', 'mmseg_ext'],
    python_requires='>=3.10',
    install_requires=['torch>=2.1', 'einops'],
)
