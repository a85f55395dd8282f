import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def conformance_dir() -> Path:
    """The golden outputs of the official model: ``$A2MAMBA_CONFORMANCE`` or ``../shared/conformance``."""
    return Path(os.environ.get('A2MAMBA_CONFORMANCE', REPO.parent / 'shared' / 'conformance'))


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    """``|out - ref| / |ref|`` (Frobenius norms) in float64."""
    out, ref = out.double(), ref.double()
    return ((out - ref).norm() / ref.norm().clamp_min(1e-30)).item()


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield


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
