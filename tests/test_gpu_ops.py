"""Fast backends of the ops against their PyTorch references.

The CUDA tests skip without a GPU (CI). The Triton kernels are also checked on the CPU
through Triton's interpreter, in a subprocess because ``TRITON_INTERPRET`` is read when
the kernels are defined.
"""
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import ops
from ops import dispatch
from ops.neighborhood_attention_triton import has_triton, na2d_av_triton, na2d_qk_triton
from ops.selective_scan import has_cuda_scan, selective_scan_states_cuda

ROOT = Path(__file__).resolve().parents[1]
INTERPRETING = os.environ.get('TRITON_INTERPRET') == '1'

needs_cuda_scan = pytest.mark.skipif(not has_cuda_scan(), reason='needs a CUDA GPU and the built ops._scan_cuda extension')
needs_cuda_triton = pytest.mark.skipif(not (torch.cuda.is_available() and has_triton()),
                                       reason='needs a CUDA GPU and triton')

# Relative error bounds ||out - ref|| / ||ref|| per input dtype (the kernels and references
# compute in float32 on the same inputs; low-precision outputs add one rounding).
TOL = {torch.float32: 1e-4, torch.float16: 2e-3, torch.bfloat16: 1.5e-2}


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    out, ref = out.double(), ref.double()
    return ((out - ref).norm() / ref.norm().clamp_min(1e-30)).item()


# ---------------------------------------------------------------------------- selective scan

def scan_inputs(batch, dim, length, n, groups, dtype, device, seed):
    gen = torch.Generator(device='cpu').manual_seed(seed)
    u = torch.randn(batch, dim, length, generator=gen).to(device, dtype)
    delta = (torch.randn(batch, dim, length, generator=gen) * 0.5 - 1).to(device, dtype)
    A = (-torch.rand(dim, n, generator=gen) * 2 - 0.1).to(device)
    B_shape = (batch, n, length) if groups is None else (batch, groups, n, length)
    B = torch.randn(*B_shape, generator=gen).to(device, dtype)
    bias = (torch.randn(dim, generator=gen) * 0.3).to(device)
    return u, delta, A, B, bias


@needs_cuda_scan
@pytest.mark.parametrize('batch,dim,length', [(2, 8, 1), (2, 8, 7), (3, 16, 1000), (2, 4, 5000), (2, 3, 4101),
                                              (1, 2, 300_001), (1, 2, 300_000)])
@pytest.mark.parametrize('dtype', [torch.float32, torch.float16, torch.bfloat16])
def test_scan_forward_backward(batch, dim, length, dtype):
    for n, groups, use_bias, softplus in [(1, None, True, True), (3, 1, False, True), (4, None, True, False),
                                          (2, dim if dim % 2 else dim // 2, True, True)]:
        u, delta, A, B, bias = scan_inputs(batch, dim, length, n, groups, dtype, 'cuda', seed=length + n)
        if not softplus:
            delta = delta.abs()  # a negative step would make exp(delta * A) grow without bound
        for t in (u, delta, A, B, bias):
            t.requires_grad_()
        bias_arg = bias if use_bias else None
        out = selective_scan_states_cuda(u, delta, A, B, bias_arg, softplus)
        ref = ops.selective_scan_states_ref(u, delta, A, B, bias_arg, softplus)
        assert out.dtype == torch.float32 and out.shape == (batch, dim, n, length)
        assert rel_err(out, ref) < 1e-4, (n, groups)
        grad = torch.randn_like(out)
        wrt = [u, delta, A, B] + ([bias] if use_bias else [])
        grads = torch.autograd.grad(out, wrt, grad)
        grads_ref = torch.autograd.grad(ref, wrt, grad)
        for name, g, g_ref in zip(['du', 'ddelta', 'dA', 'dB', 'dbias'], grads, grads_ref):
            assert g.dtype == g_ref.dtype and g.shape == g_ref.shape, name
            assert rel_err(g, g_ref) < TOL[dtype] * (1 if dtype == torch.float32 else 2), (name, n, groups)


@needs_cuda_scan
def test_scan_mixed_dtypes_and_dispatch():
    u, delta, A, B, bias = scan_inputs(2, 8, 3000, 1, None, torch.bfloat16, 'cuda', seed=0)
    out = ops.selective_scan_states(u, delta.float(), A, B, bias)  # promotes to float32 inside
    ref = ops.selective_scan_states_ref(u, delta.float(), A, B, bias)
    assert rel_err(out, ref) < 1e-4
    assert ops.backends('selective_scan_states')[0] == 'cuda'


# ------------------------------------------------------------------- neighborhood attention

def na_inputs(batch, heads, height, width, dim, kernel, dtype, device, seed):
    gen = torch.Generator(device='cpu').manual_seed(seed)
    q, k, v = (torch.randn(batch, heads, height, width, dim, generator=gen).to(device, dtype) for _ in range(3))
    rpb = torch.randn(heads, 2 * kernel - 1, 2 * kernel - 1, generator=gen).to(device)
    return q, k, v, rpb


def check_na(batch, heads, height, width, dim, kernel, dilation, dtype, device, seed=0):
    """Triton vs reference: scores, aggregation and every gradient, incl. through softmax."""
    q, k, v, rpb = (t.requires_grad_() for t in na_inputs(batch, heads, height, width, dim, kernel, dtype, device, seed))
    results = []
    for qk, av in ((na2d_qk_triton, na2d_av_triton), (ops.na2d_qk_ref, ops.na2d_av_ref)):
        scores = qk(q, k, kernel, dilation, rpb)
        attn = scores.float().softmax(-1).to(dtype)
        out = av(attn, v, kernel, dilation)
        gen = torch.Generator(device='cpu').manual_seed(seed + 1)
        g_out = torch.randn(out.shape, generator=gen).to(device, out.dtype)
        g_scores = torch.randn(scores.shape, generator=gen).to(device, scores.dtype)
        # a direct gradient on the finite scores exercises qk's backward beyond softmax's
        finite = scores.masked_fill(scores.isinf(), 0)
        grads = torch.autograd.grad([out, finite], [q, k, rpb, v], [g_out, g_scores])
        results.append((scores, out) + grads)
    for name, got, ref in zip(['scores', 'out', 'dq', 'dk', 'drpb', 'dv'], *results):
        assert got.dtype == ref.dtype and got.shape == ref.shape, name
        assert torch.equal(got.isinf(), ref.isinf()), f'{name}: masked slots differ'
        err = rel_err(got.masked_fill(got.isinf(), 0), ref.masked_fill(ref.isinf(), 0))
        tol = TOL[dtype] if name in ('scores', 'out') else 2 * TOL[dtype]
        assert err < tol, f'{name}: relative error {err:.2e} >= {tol:.0e}'


@needs_cuda_triton
@pytest.mark.parametrize('kernel', [7, 9, 11])
@pytest.mark.parametrize('dilation', list(range(1, 12)))
def test_na_triton_windows_and_dilations(kernel, dilation):
    # odd, non-square maps; the larger dilations leave groups shorter than the window
    height, width = kernel * dilation // 2 + 5, kernel * dilation + 3
    check_na(2, 2, height, width, 24, kernel, dilation, torch.float32, 'cuda', seed=kernel * 100 + dilation)


@needs_cuda_triton
@pytest.mark.parametrize('dtype', [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize('height,width,dim,kernel,dilation', [
    (56, 56, 24, 11, 5), (28, 28, 24, 9, 3), (14, 14, 32, 7, 2),  # A2Mamba-T at 224 px
    (5, 8, 16, 9, 1),  # below the window: global along both axes
    (9, 30, 32, 7, (1, 4)), (33, 17, 12, 11, (3, 1)),
])
def test_na_triton_dtypes(height, width, dim, kernel, dilation, dtype):
    check_na(2, 3, height, width, dim, kernel, dilation, dtype, 'cuda')


@needs_cuda_triton
@needs_cuda_scan
def test_model_fast_backends_match_reference():
    from a2mamba_core import create_model

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    model = create_model('a2mamba_n').cuda().eval()
    x = torch.randn(2, 3, 224, 160, device='cuda')
    with torch.no_grad():
        fast = model(x)
        with ops.use_backend('reference'):
            ref = model(x)
    assert rel_err(fast, ref) < 1e-4


# ------------------------------------------------ Triton interpreter (CPU) and dispatch

@pytest.mark.skipif(not INTERPRETING, reason='runs inside test_triton_interpreter_on_cpu (TRITON_INTERPRET=1)')
@pytest.mark.parametrize('batch,heads,height,width,dim,kernel,dilation', [
    (1, 2, 9, 11, 8, 3, 2), (2, 1, 5, 4, 6, 7, 1), (1, 1, 13, 10, 5, 5, (3, 2)),
])
def test_interpreted_na(batch, heads, height, width, dim, kernel, dilation):
    check_na(batch, heads, height, width, dim, kernel, dilation, torch.float32, 'cpu')


@pytest.mark.skipif(INTERPRETING, reason='this is the launcher of the interpreted tests')
@pytest.mark.skipif(not has_triton(), reason='needs triton installed')
def test_triton_interpreter_on_cpu():
    python_path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get('PYTHONPATH')]))
    env = dict(os.environ, TRITON_INTERPRET='1', PYTHONPATH=python_path)
    proc = subprocess.run([sys.executable, '-m', 'pytest', '-q', '-p', 'no:cacheprovider', __file__,
                           '-k', 'test_interpreted_na'], env=env, cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0 and '3 passed' in proc.stdout, proc.stdout[-3000:] + proc.stderr[-3000:]


def test_failing_backend_falls_back_once(monkeypatch, caplog):
    calls = []

    def broken(*args):
        calls.append(1)
        raise RuntimeError('no kernel image is available for execution on the device')

    registry = {op: list(entries) for op, entries in dispatch._REGISTRY.items()}
    monkeypatch.setattr(dispatch, '_REGISTRY', registry)
    monkeypatch.setattr(dispatch, '_disabled', set())
    dispatch.register_backend('na2d_av', 'broken', broken, lambda t: True)
    attn = torch.rand(1, 1, 6, 5, 9)
    value = torch.randn(1, 1, 6, 5, 4)
    with caplog.at_level(logging.WARNING, logger='a2mamba.ops'):
        first = ops.na2d_av(attn, value, 3)
        second = ops.na2d_av(attn, value, 3)
    expected = ops.na2d_av_ref(attn, value, 3)
    assert torch.equal(first, expected) and torch.equal(second, expected)
    assert len(calls) == 1
    assert sum('broken' in r.getMessage() for r in caplog.records) == 1


def test_forced_backend_that_cannot_run_raises():
    with ops.use_backend('triton'), pytest.raises(RuntimeError, match='cannot run on cpu'):
        ops.na2d_qk(torch.randn(1, 1, 4, 4, 2), torch.randn(1, 1, 4, 4, 2), 3)
