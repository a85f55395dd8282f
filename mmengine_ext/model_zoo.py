"""The model zoo: the configs, their model index, and the released weights for mmengine's loaders.

``model-index.yml`` (OpenMMLab format) imports one ``metafile.yml`` per task folder of
``configs/``. In a source checkout or an editable install they are read from the repository;
an installed wheel carries them in ``mmengine_ext/.mim/``, as mmdet/mmseg/mmpretrain carry
theirs. mmpretrain finds the classification models by name (``mmpretrain_ext`` registers
them); mmdet's ``DetInferencer`` and mmseg's ``MMSegInferencer`` look names up only in their
own package, so for those pass :func:`get_config`'s path and the weights.

Importing this module also registers an mmengine ``CheckpointLoader`` for the authors'
release URLs (``load_from``, ``get_model(..., pretrained=True)``, inferencers): it shares the
cache of mmengine's http loader, fails offline with a message naming the URL and where to put
the file by hand, and accepts the weights bare or under ``model``/``state_dict``.
"""
import fnmatch
import re
from pathlib import Path
from typing import Dict, List, Optional

from mmengine.fileio import load
from mmengine.runner import CheckpointLoader

from a2mamba_core import read_checkpoint
from a2mamba_core.hub import RELEASE_URL

MODEL_INDEX = 'model-index.yml'


def zoo_root() -> Path:
    """The folder holding ``model-index.yml`` and ``configs/``.

    Raises:
        FileNotFoundError: neither the source tree nor the installed package has them.
    """
    package = Path(__file__).resolve().parent
    candidates = (package.parent, package / '.mim')
    for root in candidates:
        if (root / MODEL_INDEX).is_file() and (root / 'configs').is_dir():
            return root
    raise FileNotFoundError(f'no {MODEL_INDEX} with a configs/ folder in {[str(c) for c in candidates]}; '
                            'reinstall the package (pip install .) or use a source checkout')


def metafiles() -> List[Path]:
    """The ``metafile.yml`` files that ``model-index.yml`` imports, in its order."""
    root = zoo_root()
    return [root / path for path in load(str(root / MODEL_INDEX))['Import']]


def model_index() -> Dict[str, dict]:
    """Every model of the index by (lower-case) name; ``Config`` is an absolute path.

    Raises:
        ValueError: two entries share a name.
    """
    root = zoo_root()
    models: Dict[str, dict] = {}
    for metafile in metafiles():
        for entry in load(str(metafile))['Models']:
            name = entry['Name'].lower()
            if name in models:
                raise ValueError(f'model {name!r} is listed twice in the model index ({metafile})')
            models[name] = dict(entry, Config=str(root / entry['Config']))
    return models


def list_models(pattern: str = '*') -> List[str]:
    """The model names matching the wildcard ``pattern`` (all tasks)."""
    return sorted(fnmatch.filter(model_index(), pattern.lower()))


def _entry(name: str) -> dict:
    models = model_index()
    if name.lower() not in models:
        raise ValueError(f'unknown A2Mamba model {name!r}; choose one of {sorted(models)}')
    return models[name.lower()]


def get_config(name: str) -> str:
    """The config file of the model ``name`` of the index, e.g. for ``Config.fromfile``,
    ``DetInferencer(model=get_config(name), weights=...)`` or ``tools/train.py``.

    Raises:
        ValueError: ``name`` is not in the index.
    """
    return _entry(name)['Config']


def get_weights(name: str) -> Optional[str]:
    """The URL of the released weights of ``name``; ``None`` where none are released.

    Raises:
        ValueError: ``name`` is not in the index.
    """
    return _entry(name).get('Weights')


def load_from_a2mamba_release(filename: str, map_location=None) -> dict:
    """mmengine ``CheckpointLoader`` scheme for the authors' release URLs: the file is read by
    :func:`a2mamba_core.read_checkpoint` (on the CPU; a bare state_dict or one under ``model`` or
    ``state_dict``) and returned as ``{'state_dict': ...}``, the container mmengine unwraps."""
    return {'state_dict': read_checkpoint(filename)}


# A prefix longer than 'https://' takes precedence over mmengine's own http loader.
CheckpointLoader.register_scheme(prefixes=re.escape(RELEASE_URL), loader=load_from_a2mamba_release, force=True)
