"""Installs the A2Mamba packages: the model core, its ops and the OpenMMLab glue.

The CUDA selective-scan extension (``ops._scan_cuda``) is built only where it can run:

* ``A2MAMBA_FORCE_CUDA=1`` builds it (nvcc and a CUDA build of torch required);
* ``A2MAMBA_FORCE_CUDA=0`` never builds it;
* unset, it is built when torch sees a GPU and nvcc is found, so a CPU machine gets a fast
  pure-Python install even if it has a CUDA toolkit.

Architectures come from ``TORCH_CUDA_ARCH_LIST`` (default ``8.0;9.0``); ``MAX_JOBS`` sets
the parallel compiles. Without the extension the ops fall back to Triton or the reference.
"""
import ast
import os
import warnings
from pathlib import Path
from typing import List

from setuptools import setup

ROOT = Path(__file__).parent
FORCE_CUDA_ENV = 'A2MAMBA_FORCE_CUDA'


def read_version() -> str:
    tree = ast.parse((ROOT / 'a2mamba_core' / '__init__.py').read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and node.targets[0].id == '__version__':
            return ast.literal_eval(node.value)
    raise RuntimeError('a2mamba_core/__init__.py defines no __version__')


def want_cuda_build() -> bool:
    choice = os.environ.get(FORCE_CUDA_ENV, '').strip()
    if choice not in ('', '0', '1'):
        raise ValueError(f'{FORCE_CUDA_ENV} must be 0, 1 or unset, got {choice!r}')
    if choice == '0':
        return False
    try:
        import torch
        from torch.utils.cpp_extension import CUDA_HOME
    except ImportError:
        if choice == '1':
            raise RuntimeError(f'{FORCE_CUDA_ENV}=1 needs torch installed first (pip install --no-build-isolation)')
        return False
    if CUDA_HOME is None or torch.version.cuda is None:
        if choice == '1':
            raise RuntimeError(f'{FORCE_CUDA_ENV}=1 needs nvcc (CUDA_HOME) and a CUDA build of torch')
        warnings.warn('no CUDA toolkit or CPU-only torch: skipping the CUDA selective-scan extension')
        return False
    return choice == '1' or torch.cuda.is_available()


def cuda_extensions() -> List:
    from torch.utils.cpp_extension import CUDAExtension

    os.environ.setdefault('TORCH_CUDA_ARCH_LIST', '8.0;9.0')
    src = ROOT / 'ops' / 'csrc' / 'selective_scan'
    sources = [str(p.relative_to(ROOT)) for p in sorted(src.glob('*.cu'))] + [str((src / 'scan_api.cpp').relative_to(ROOT))]
    nvcc_flags = ['-O3', '--use_fast_math', '-lineinfo', '--threads', '4',
                  '-U__CUDA_NO_HALF_OPERATORS__', '-U__CUDA_NO_HALF_CONVERSIONS__',
                  '-U__CUDA_NO_BFLOAT16_OPERATORS__', '-U__CUDA_NO_BFLOAT16_CONVERSIONS__']
    return [CUDAExtension('ops._scan_cuda', sources,
                          extra_compile_args={'cxx': ['-O3'], 'nvcc': nvcc_flags})]


ext_modules, cmdclass = [], {}
if want_cuda_build():
    from torch.utils.cpp_extension import BuildExtension

    ext_modules = cuda_extensions()
    cmdclass = {'build_ext': BuildExtension}

setup(
    name='a2mamba-openmmlab',
    version=read_version(),
    description='A2Mamba (arXiv 2507.16624) for mmpretrain, mmdet and mmsegmentation',
    packages=['a2mamba_core', 'ops', 'mmengine_ext', 'mmpretrain_ext', 'mmdet_ext', 'mmseg_ext'],
    package_data={'ops': ['csrc/selective_scan/*']},
    python_requires='>=3.10',
    install_requires=['torch>=2.1', 'einops'],
    extras_require={'triton': ['triton']},
    ext_modules=ext_modules,
    cmdclass=cmdclass,
)
