import pytest
import torch


@pytest.fixture
def fast_weight_init(monkeypatch):
    """Skips truncated-normal initialisation (most of a large model's build time on a CPU) in tests
    that check a model's structure, not its weights."""
    monkeypatch.setattr(torch.nn.init, 'trunc_normal_', lambda tensor, *args, **kwargs: tensor)
