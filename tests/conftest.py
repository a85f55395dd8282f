"""Fixtures and helpers shared by every test folder (core, ops, plugins, tools).

The test folders are not packages: pytest's default import mode puts this folder on
``sys.path`` for this file, so tests import the helpers below (and ``checkpoint_server``) as
top-level modules (``from conftest import REPO``). Test file names are therefore unique across
the folders.
"""
import functools
import importlib.util
import os
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Dict

import numpy as np
import pytest
import torch
from PIL import Image

if TYPE_CHECKING:  # the OpenMMLab packages are imported where used: the GPU tests of ops and core run without them
    from mmengine.config import Config

REPO = Path(__file__).resolve().parents[1]
# The classification demo's config (A2Mamba-N on MNIST-5k), which the training tests shrink.
MNIST = REPO / 'configs' / 'mmpretrain' / 'a2mamba-n_1xb64_mnist5k-32px.py'


def conformance_dir() -> Path:
    """The golden outputs of the official model: ``$A2MAMBA_CONFORMANCE`` or ``../shared/conformance``."""
    return Path(os.environ.get('A2MAMBA_CONFORMANCE', REPO.parent / 'shared' / 'conformance'))


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    """``|out - ref| / |ref|`` (Frobenius norms) in float64."""
    out, ref = out.double(), ref.double()
    return ((out - ref).norm() / ref.norm().clamp_min(1e-30)).item()


@functools.lru_cache(maxsize=None)
def load_tool(path: str) -> ModuleType:
    """The script ``tools/<path>`` (e.g. ``'analysis/get_flops.py'``) as a module, loaded once.

    By file, not by import: tools/ is a folder of scripts, not a package, and ``tools/test.py``
    would otherwise be shadowed by Python's own ``test`` package.
    """
    spec = importlib.util.spec_from_file_location(f'a2mamba_tool_{Path(path).stem}', REPO / 'tools' / path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build_model(cfg: 'Config', scope: str) -> torch.nn.Module:
    """``cfg.model`` built from the registry of framework ``scope`` (``'mmdet'``, ``'mmseg'``, ...)."""
    from mmengine.registry import init_default_scope
    registry = importlib.import_module(f'{scope}.registry')
    init_default_scope(scope)
    return registry.MODELS.build(cfg.model)


def load_mmpretrain_config(name: str) -> 'Config':
    """``configs/mmpretrain/<name>``, with its custom imports done and its registry scope set."""
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmengine.utils import import_modules_from_strings
    cfg = Config.fromfile(str(REPO / 'configs' / 'mmpretrain' / name))
    import_modules_from_strings(**cfg.custom_imports)
    init_default_scope(cfg.default_scope)
    return cfg


def mmpretrain_batch(num: int, size: int, channels: int = 3, num_classes: int = 1000) -> dict:
    """A data batch for an mmpretrain classifier: ``num`` random uint8 images of ``size`` x ``size``
    with random labels."""
    from mmpretrain.structures import DataSample
    inputs = [torch.randint(0, 256, (channels, size, size), dtype=torch.uint8) for _ in range(num)]
    samples = [DataSample().set_gt_label(int(torch.randint(0, num_classes, ()))) for _ in range(num)]
    return dict(inputs=inputs, data_samples=samples)


def grads_of_summed_outputs(model: torch.nn.Module, x: torch.Tensor) -> Dict[str, torch.Tensor]:
    """The parameter gradients of the sum of every output map of ``model(x)``, in train mode."""
    model.train()
    sum(out.sum() for out in model(x)).backward()
    return {name: param.grad.clone() for name, param in model.named_parameters() if param.grad is not None}


def write_digits(root: Path, train: int, test: int) -> None:
    """``train`` and ``test`` random 28 x 28 grey PNGs in the layout of
    tools/dataset_converters/prepare_mnist5k.py (``split/digit/index.png``, digits in turn)."""
    rng = np.random.default_rng(0)
    for split, count in (('train', train), ('test', test)):
        for index in range(count):
            folder = root / split / str(index % 10)
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8), mode='L').save(folder / f'{index}.png')


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield


@pytest.fixture
def scratch_registry(monkeypatch):
    """A copy of the ops' backend registry (and no disabled backends) for tests that register doubles."""
    from ops import dispatch
    monkeypatch.setattr(dispatch, '_REGISTRY', {op: list(entries) for op, entries in dispatch._REGISTRY.items()})
    monkeypatch.setattr(dispatch, '_disabled', set())


@pytest.fixture
def fast_weight_init(monkeypatch):
    """Skips truncated-normal initialisation (most of a large model's build time on a CPU) in tests
    that check a model's structure, not its weights."""
    monkeypatch.setattr(torch.nn.init, 'trunc_normal_', lambda tensor, *args, **kwargs: tensor)


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    """A fresh ``$TORCH_HOME``: the download cache of released weights, empty for the test."""
    home = tmp_path / 'torch_home'
    monkeypatch.setenv('TORCH_HOME', str(home))
    return home
