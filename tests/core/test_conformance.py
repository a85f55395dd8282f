"""The model computes the official A2Mamba's function: golden outputs of the authors' code
(float32, CPU, natten-0.17-exact attention, exact scan) with name-keyed weights.

The goldens are checked on the CPU and, where CUDA is available, on the GPU with the fast
backends (fused Triton attention, CUDA scan), eager and compiled, in float32 with TF32 off."""
import importlib.util
import json
import os

import pytest
import torch
from conftest import conformance_dir, rel_err

import a2mamba_core

CASES = ['nano_cls_224', 'nano_feat_256x320', 'nano_grad_224']
OUT_TOL, GRAD_TOL = 1e-4, 2e-3


def _require_conformance():
    if not conformance_dir().is_dir():
        if os.environ.get('CI'):
            pytest.fail(f'conformance data missing at {conformance_dir()} (set A2MAMBA_CONFORMANCE)')
        pytest.skip(f'conformance data not found at {conformance_dir()} (set A2MAMBA_CONFORMANCE)')


def _weights_module():
    spec = importlib.util.spec_from_file_location('conformance_weights', conformance_dir() / 'weights.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module



DEVICES = ['cpu', pytest.param('cuda', marks=pytest.mark.skipif(not torch.cuda.is_available(),
                                                                  reason='needs a CUDA GPU')),
           pytest.param('cuda-compiled', marks=pytest.mark.skipif(not torch.cuda.is_available(),
                                                                   reason='needs a CUDA GPU'))]


@pytest.fixture
def exact_float32():
    """TF32 off for matmuls and convolutions, as the goldens are exact float32."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def official_model(variant: str) -> a2mamba_core.A2Mamba:
    model = a2mamba_core.create_model(variant)
    model.load_state_dict(_weights_module().fill(model.state_dict()))
    return model.eval()


@pytest.mark.parametrize('name', ['a2mamba_n', 'a2mamba_t', 'a2mamba_s', 'a2mamba_b', 'a2mamba_l'])
def test_state_dict_matches_official_manifest(name):
    _require_conformance()
    manifest = json.loads((conformance_dir() / 'state_dict_manifest.json').read_text())[name]
    state_dict = a2mamba_core.create_model(name).state_dict()
    assert sorted(state_dict) == sorted(manifest)
    assert {k: list(v.shape) for k, v in state_dict.items()} == manifest


@pytest.mark.parametrize('device', DEVICES)
@pytest.mark.parametrize('case', CASES)
def test_golden_outputs(case, device, exact_float32):
    _require_conformance()
    golden = torch.load(conformance_dir() / f'{case}.pt', weights_only=True)
    compiled = device.endswith('-compiled')
    device = device.split('-')[0]
    model = official_model(golden['variant']).to(device)
    # the fast path users get on a GPU: the whole model as one compiled graph around the kernels
    run = torch.compile(model, fullgraph=True, dynamic=False) if compiled else model
    features = torch.compile(model.forward_features, fullgraph=True, dynamic=False) if compiled \
        else model.forward_features
    generator = torch.Generator().manual_seed(golden['x_seed'])
    x = torch.randn(*golden['shape'], generator=generator).to(device)
    if golden['mode'] == 'cls':
        with torch.no_grad():
            outs = [run(x)]
    elif golden['mode'] == 'feat':
        with torch.no_grad():
            outs = list(features(x))
    else:
        x.requires_grad_(True)
        outs = list(features(x))
        weights = [torch.randn(o.shape, generator=generator).to(device) for o in outs]
        sum((o * w).sum() for o, w in zip(outs, weights)).backward()
    assert len(outs) == len(golden['out'])
    for out, ref in zip(outs, golden['out']):
        assert out.shape == ref.shape
        assert rel_err(out.cpu(), ref) < OUT_TOL
    if golden['mode'] == 'grad':
        assert rel_err(x.grad.cpu(), golden['grad_x']) < GRAD_TOL
        params = dict(model.named_parameters())
        assert golden['grad_params'], 'golden file lists no parameter gradients'
        for name, ref in golden['grad_params'].items():
            assert rel_err(params[name].grad.cpu(), ref) < GRAD_TOL, name
