"""Installs the A2Mamba packages: the model core, its ops and the OpenMMLab glue.

The CUDA selective-scan extension (``ops._scan_cuda``) is built only where it can run:

* ``A2MAMBA_FORCE_CUDA=1`` builds it (nvcc and a CUDA build of torch required);
* ``A2MAMBA_FORCE_CUDA=0`` never builds it;
* unset, it is built when torch sees a GPU and nvcc is found, so a CPU machine gets a fast
  pure-Python install even if it has a CUDA toolkit.

Architectures come from ``TORCH_CUDA_ARCH_LIST`` (default ``8.0;9.0``); ``MAX_JOBS`` sets
the parallel compiles. Without the extension the ops fall back to Triton or the reference, and
the build says so loudly, with the command that builds it.

The configs and their model index (``configs/``, ``model-index.yml``) are copied into the
package as ``mmengine_ext/.mim/`` (the layout of mmdet/mmseg/mmpretrain's ``.mim``), so an
installed wheel finds them (:mod:`mmengine_ext.model_zoo`).
"""
import ast
import os
import shutil
import sys
import warnings
from pathlib import Path
from typing import List

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).parent
FORCE_CUDA_ENV = 'A2MAMBA_FORCE_CUDA'
BUILD_COMMAND = f'{FORCE_CUDA_ENV}=1 pip install --no-build-isolation -e .'
# What the installed package carries besides its code (see mmengine_ext.model_zoo).
ZOO_FILES = ['model-index.yml', 'configs', 'tools']
ZOO_DIR = Path('mmengine_ext') / '.mim'


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
        warn_no_cuda_build(f'{FORCE_CUDA_ENV}=0')
        return False
    try:
        import torch
        from torch.utils.cpp_extension import CUDA_HOME
    except ImportError:
        if choice == '1':
            raise RuntimeError(f'{FORCE_CUDA_ENV}=1 needs torch installed first (pip install --no-build-isolation)')
        warn_no_cuda_build("torch is not importable here (pip's build isolation hides the installed torch)")
        return False
    if CUDA_HOME is None or torch.version.cuda is None:
        if choice == '1':
            raise RuntimeError(f'{FORCE_CUDA_ENV}=1 needs nvcc (CUDA_HOME) and a CUDA build of torch')
        warn_no_cuda_build('no CUDA toolkit (nvcc) or a CPU-only torch')
        return False
    if choice == '1' or torch.cuda.is_available():
        return True
    warn_no_cuda_build(f'no GPU visible and {FORCE_CUDA_ENV} unset')
    return False


def warn_no_cuda_build(reason: str) -> None:
    """Says, as visibly as a build can, that the CUDA scan is skipped and how to build it: on
    a GPU the scan then runs the much slower PyTorch reference."""
    message = (f'A2Mamba: NOT building the CUDA selective-scan extension ({reason}). On a GPU the scan '
               f'will run the slow PyTorch reference. To build it: {BUILD_COMMAND}')
    warnings.warn(message)
    print(f'\n{"!" * 100}\n{message}\n{"!" * 100}\n', file=sys.stderr)


def cuda_extensions() -> List:
    from torch.utils.cpp_extension import CUDAExtension

    os.environ.setdefault('TORCH_CUDA_ARCH_LIST', '8.0;9.0')
    src = ROOT / 'ops' / 'csrc' / 'selective_scan'
    sources = [str(p.relative_to(ROOT)) for p in sorted(src.glob('*.cu'))]
    sources.append(str((src / 'scan_api.cpp').relative_to(ROOT)))
    nvcc_flags = ['-O3', '--use_fast_math', '-lineinfo', '--threads', '4',
                  '-U__CUDA_NO_HALF_OPERATORS__', '-U__CUDA_NO_HALF_CONVERSIONS__',
                  '-U__CUDA_NO_BFLOAT16_OPERATORS__', '-U__CUDA_NO_BFLOAT16_CONVERSIONS__']
    return [CUDAExtension('ops._scan_cuda', sources,
                          extra_compile_args={'cxx': ['-O3'], 'nvcc': nvcc_flags})]


class BuildPyWithZoo(build_py):
    """``build_py`` that also copies the configs, the model index and the tools into
    ``mmengine_ext/.mim`` of the build (wheels, regular installs). Editable installs read them
    from the source tree."""

    def run(self) -> None:
        super().run()
        if getattr(self, 'editable_mode', False):
            return
        target = Path(self.build_lib) / ZOO_DIR
        for name in ZOO_FILES:
            source, dest = ROOT / name, target / name
            if source.is_dir():
                shutil.copytree(source, dest, dirs_exist_ok=True,
                                ignore=shutil.ignore_patterns('__pycache__', '*.pyc', 'gpu'))
            else:
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, dest)


ext_modules, cmdclass = [], {'build_py': BuildPyWithZoo}
if want_cuda_build():
    from torch.utils.cpp_extension import BuildExtension

    ext_modules = cuda_extensions()
    cmdclass['build_ext'] = BuildExtension

setup(
    name='a2mamba-openmmlab',
    version=read_version(),
    description='A2Mamba (arXiv 2507.16624) for mmpretrain, mmdet and mmsegmentation',
    long_description=(ROOT / 'README.md').read_text(encoding='utf-8'),
    long_description_content_type='text/markdown',
    author='A2Mamba for OpenMMLab contributors',
    url='https://arxiv.org/abs/2507.16624',
    project_urls={
        'Paper': 'https://arxiv.org/abs/2507.16624',
        'Original implementation': 'https://github.com/LMMMEng/A2Mamba',
        'Released weights': 'https://huggingface.co/LMMM2025/A2Mamba',
    },
    license='Apache-2.0',
    license_files=['LICENSE'],
    keywords='computer vision, backbone, mamba, state space model, neighborhood attention, openmmlab',
    classifiers=[
        'Development Status :: 4 - Beta',
        'Intended Audience :: Developers',
        'Intended Audience :: Science/Research',
        'Operating System :: POSIX :: Linux',
        'Programming Language :: Python :: 3',
        'Programming Language :: Python :: 3.10',
        'Programming Language :: Python :: 3.11',
        'Programming Language :: Python :: 3.12',
        'Topic :: Scientific/Engineering :: Artificial Intelligence',
        'Topic :: Scientific/Engineering :: Image Recognition',
    ],
    packages=['a2mamba_core', 'ops', 'mmengine_ext', 'mmpretrain_ext', 'mmdet_ext', 'mmseg_ext'],
    package_data={'ops': ['csrc/selective_scan/*']},
    python_requires='>=3.10',
    install_requires=['torch>=2.4', 'einops', 'filelock'],  # torch.library.custom_op
    extras_require={'triton': ['triton']},
    entry_points={'console_scripts': [
        f'a2mamba-{name}=mmengine_ext.cli:{name.replace("-", "_")}'
        for name in ('train', 'test', 'flops', 'convert', 'export-onnx', 'benchmark')]},
    ext_modules=ext_modules,
    cmdclass=cmdclass,
)
