"""Console entry points: the repository's tools from an installed package.

``pip install`` puts ``a2mamba-train``, ``a2mamba-test``, ``a2mamba-flops``, ``a2mamba-convert``,
``a2mamba-export-onnx`` and ``a2mamba-benchmark`` on the PATH; each runs its script of ``tools/``
(:data:`TOOLS`; a wheel carries the folder in ``mmengine_ext/.mim/tools``) with the command's
arguments. A config may be given by its model-zoo name (``a2mamba-train a2mamba-t_8xb256_in1k``).
"""
import functools
import runpy
import sys
from pathlib import Path
from typing import Dict

from .model_zoo import get_config, list_models, zoo_root

TOOLS: Dict[str, str] = {
    'train': 'train.py', 'test': 'test.py', 'flops': 'analysis/get_flops.py',
    'convert': 'model_converters/convert_checkpoint.py', 'export-onnx': 'deployment/pytorch2onnx.py',
    'benchmark': 'analysis/benchmark.py',
}
# tools whose first argument is a config
_TAKES_CONFIG = {'train', 'test'}


def tool_path(name: str) -> Path:
    """The script of tool ``name`` in the source tree or the installed package."""
    path = zoo_root() / 'tools' / TOOLS[name]
    if not path.is_file():
        raise FileNotFoundError(f'{path} is missing: reinstall the package (pip install .)')
    return path


def run(name: str) -> None:
    """Runs tool ``name`` as ``python tools/<script> ARGS`` would, with this process's arguments."""
    args = sys.argv[1:]
    if name in _TAKES_CONFIG and args and not Path(args[0]).is_file() and args[0] in list_models():
        args[0] = get_config(args[0])
    script = tool_path(name)
    sys.argv = [str(script)] + args
    runpy.run_path(str(script), run_name='__main__')


# The console scripts of setup.py: ``a2mamba-<name>`` calls ``mmengine_ext.cli:<name, '-' as '_'>``.
train = functools.partial(run, 'train')
test = functools.partial(run, 'test')
flops = functools.partial(run, 'flops')
convert = functools.partial(run, 'convert')
export_onnx = functools.partial(run, 'export-onnx')
benchmark = functools.partial(run, 'benchmark')
