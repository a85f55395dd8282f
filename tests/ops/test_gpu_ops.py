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
from conftest import rel_err

import ops
from ops import dispatch, traceable_ops
from ops.neighborhood_attention_fused import LaunchSettings, na2d_triton, tile_config
from ops.neighborhood_attention_triton import has_triton, na2d_av_triton, na2d_qk_triton
from ops.selective_scan import has_cuda_scan, selective_scan_states_cuda

ROOT = Path(__file__).resolve().parents[2]
INTERPRETING = os.environ.get('TRITON_INTERPRET') == '1'

needs_cuda_scan = pytest.mark.skipif(not has_cuda_scan(),
                                     reason='needs a CUDA GPU and the built ops._scan_cuda extension')
needs_cuda_triton = pytest.mark.skipif(not (torch.cuda.is_available() and has_triton()),
                                       reason='needs a CUDA GPU and triton')
TRITON_RUNS = INTERPRETING or (torch.cuda.is_available() and has_triton())
# where the Triton kernels run in this process (the interpreter takes CPU tensors)
TRITON_DEVICE = 'cuda' if torch.cuda.is_available() and not INTERPRETING else 'cpu'

# Relative error bounds ||out - ref|| / ||ref|| per input dtype (the kernels and references
# compute in float32 on the same inputs; low-precision outputs add one rounding).
TOL = {torch.float32: 1e-4, torch.float16: 2e-3, torch.bfloat16: 1.5e-2}



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
        # at length 1 the reference never multiplies by exp(delta * A) (h_{-1} = 0): dA is zero
        grads_ref = torch.autograd.grad(ref, wrt, grad, allow_unused=True, materialize_grads=True)
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
    inputs = na_inputs(batch, heads, height, width, dim, kernel, dtype, device, seed)
    q, k, v, rpb = (t.requires_grad_() for t in inputs)
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


def check_fused(batch, heads, height, width, dim, kernel, dilation, dtype, device, use_rpb=True, value_dtype=None,
                seed=0):
    """Fused Triton ``na2d`` vs ``na2d_ref`` run in higher precision: output and every gradient."""
    kh, kw = ops.normalize_window_args(kernel, dilation)[0]
    gen = torch.Generator(device='cpu').manual_seed(seed)
    q, k, v = (torch.randn(batch, heads, height, width, dim, generator=gen) for _ in range(3))
    rpb = torch.randn(heads, 2 * kh - 1, 2 * kw - 1, generator=gen) if use_rpb else None
    g_out = torch.randn(q.shape, generator=gen)
    ref_dtype = torch.float64 if device == 'cpu' else torch.float32
    dtypes = (dtype, dtype, value_dtype or dtype, torch.float32)
    leaves = [None if t is None else t.to(device, dt).requires_grad_() for t, dt in zip((q, k, v, rpb), dtypes)]
    ref_leaves = [None if t is None else t.detach().to(ref_dtype).requires_grad_() for t in leaves]
    out = na2d_triton(*leaves[:3], kernel, dilation, leaves[3])
    ref = ops.na2d_ref(*ref_leaves[:3], kernel, dilation, ref_leaves[3])
    assert out.dtype == torch.promote_types(dtype, value_dtype or dtype) and out.shape == q.shape
    wrt = [i for i, t in enumerate(leaves) if t is not None]
    grads = torch.autograd.grad(out, [leaves[i] for i in wrt], g_out.to(device, out.dtype))
    grads_ref = torch.autograd.grad(ref, [ref_leaves[i] for i in wrt], g_out.to(device, ref_dtype))
    tol = max(TOL[dtype], TOL[value_dtype or dtype])
    err = rel_err(out, ref)
    assert err < tol, f'out: relative error {err:.2e} >= {tol:.0e}'
    for i, g, g_ref in zip(wrt, grads, grads_ref):
        name = ['dq', 'dk', 'dv', 'drpb'][i]
        assert g.dtype == leaves[i].dtype, name
        err = rel_err(g, g_ref)
        assert err < 2 * tol, f'{name}: relative error {err:.2e} >= {2 * tol:.0e}'


def check_fused_views(batch, heads, height, width, dim, kernel, dilation, dtype, device, seed=0):
    """The model's layouts: q and k as head slices of a channels-last tensor, v as heads of an
    NCHW map (pixel stride 1), each a view of a bigger leaf; the output comes back in v's
    channels-first order, and gradients reach the leaves through the views."""
    kh, kw = ops.normalize_window_args(kernel, dilation)[0]
    gen = torch.Generator(device='cpu').manual_seed(seed)
    qk = torch.randn(batch, 2 * heads, height, width, dim, generator=gen)  # q = 1st half of heads, k = 2nd
    nchw = torch.randn(batch, 3 * heads * dim, height, width, generator=gen)  # v = the middle third
    rpb = torch.randn(heads, 2 * kh - 1, 2 * kw - 1, generator=gen)
    ref_dtype = torch.float64 if device == 'cpu' else torch.float32

    def run(leaves, fn):
        qk, nchw, rpb = leaves
        v = nchw[:, heads * dim:2 * heads * dim].unflatten(1, (heads, dim)).permute(0, 1, 3, 4, 2)
        return fn(qk[:, :heads], qk[:, heads:], v, kernel, dilation, rpb)

    leaves = [t.to(device, dt).requires_grad_() for t, dt in zip((qk, nchw, rpb), (dtype, dtype, torch.float32))]
    ref_leaves = [t.detach().to(ref_dtype).requires_grad_() for t in leaves]
    out = run(leaves, na2d_triton)
    ref = run(ref_leaves, ops.na2d_ref)
    assert out.stride(3) == 1 and out.stride(4) == height * width, 'output not channels-first like the value'
    g_out = torch.randn(ref.shape, generator=gen)
    grads = torch.autograd.grad(out, leaves, g_out.to(device, out.dtype))
    grads_ref = torch.autograd.grad(ref, ref_leaves, g_out.to(device, ref_dtype))
    tol = TOL[dtype]
    assert rel_err(out, ref) < tol
    for name, g, g_ref in zip(['dqk', 'dv', 'drpb'], grads, grads_ref):
        err = rel_err(g, g_ref)
        assert err < 2 * tol, f'{name}: relative error {err:.2e} >= {2 * tol:.0e}'


@needs_cuda_triton
@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16])
@pytest.mark.parametrize('height,width,kernel,dilation', [(56, 56, 11, 5), (14, 14, 7, 2), (6, 13, 7, 1)])
def test_fused_na_reads_views(height, width, kernel, dilation, dtype):
    check_fused_views(2, 2, height, width, 24, kernel, dilation, dtype, 'cuda')


@needs_cuda_triton
@pytest.mark.parametrize('kernel', [7, 9, 11])
@pytest.mark.parametrize('dilation', [1, 2, 4, 7, 11])
def test_fused_na_windows_and_dilations(kernel, dilation):
    height, width = kernel * dilation // 2 + 5, kernel * dilation + 3
    check_fused(2, 2, height, width, 24, kernel, dilation, torch.float32, 'cuda', seed=kernel * 100 + dilation)


@needs_cuda_triton
@pytest.mark.parametrize('dtype', [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize('height,width,dim,kernel,dilation,use_rpb', [
    (56, 56, 24, 11, 5, True), (28, 28, 24, 9, 1, True), (14, 14, 32, 7, 2, True),  # A2Mamba-T at 224 px
    (5, 8, 16, 9, 1, True),  # below the window: global along both axes
    (9, 30, 32, (7, 5), (1, 4), False), (33, 17, 12, 11, (3, 1), True),
])
def test_fused_na_dtypes(height, width, dim, kernel, dilation, use_rpb, dtype):
    check_fused(2, 3, height, width, dim, kernel, dilation, dtype, 'cuda', use_rpb)


@needs_cuda_triton
def test_fused_na_mixed_dtypes_under_autocast():
    """The model's case: float32 q/k (after RoPE) and bfloat16 values under bf16 autocast (TF32 products)."""
    with torch.autocast('cuda', dtype=torch.bfloat16):
        check_fused(2, 2, 28, 28, 24, 9, 3, torch.float32, 'cuda', value_dtype=torch.bfloat16)


@needs_cuda_triton
@needs_cuda_scan
def test_model_fast_backends_match_reference():
    from a2mamba_core import create_model

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    model = create_model('a2mamba_n').cuda().eval()
    x = torch.randn(2, 3, 224, 160, device='cuda')
    assert not dispatch.uses_reference('na2d', x) and not dispatch.uses_reference('selective_scan_states', x)
    fast = model(x)
    with ops.use_backend('reference'):
        ref = model(x)
    assert rel_err(fast, ref) < 1e-4
    grad = torch.randn_like(fast)
    params = [p for p in model.parameters() if p.requires_grad]
    grads = torch.autograd.grad(fast, params, grad)
    grads_ref = torch.autograd.grad(ref, params, grad)
    worst = max(rel_err(g, g_ref) for g, g_ref in zip(grads, grads_ref) if g_ref.norm() > 0)
    assert worst < 2e-3


# ------------------------------------------------ arguments and launch settings

NA_BACKENDS = {
    'reference': (ops.na2d_qk_ref, ops.na2d_av_ref, ops.na2d_ref),
    'traceable': (traceable_ops.na2d_qk, traceable_ops.na2d_av, traceable_ops.na2d),
    'triton': (na2d_qk_triton, na2d_av_triton, na2d_triton),
}


@pytest.mark.parametrize('backend', list(NA_BACKENDS))
def test_na_backends_reject_bad_arguments_alike(backend):
    if backend == 'triton' and not TRITON_RUNS:
        pytest.skip('needs a CUDA GPU and triton, or the Triton interpreter')
    qk, av, na = NA_BACKENDS[backend]
    device = TRITON_DEVICE if backend == 'triton' else 'cpu'
    q = torch.randn(1, 2, 8, 8, 4, device=device)
    for call, message in [
        (lambda: qk(q, q, 4), 'kernel_size must be odd'),
        (lambda: qk(q, q, 3, 0), 'dilation must be >= 1'),
        (lambda: qk(q[0], q[0], 3), 'query must be 5-D'),
        (lambda: qk(q, q[:, :1], 3), 'query and key shapes differ'),
        (lambda: qk(q, q, 3, 1, torch.zeros(2, 3, 3, device=device)), r'rpb must be \(2, 5, 5\)'),
        (lambda: av(q, q[0], 3), 'value must be 5-D'),
        (lambda: av(torch.zeros(1, 2, 8, 8, 8, device=device), q, 3), r'attn must be \(1, 2, 8, 8, 9\)'),
        (lambda: na(q, q, q[..., :2], 3), 'query and value shapes differ'),
        (lambda: na(q, q.double(), q, 3), 'query and key dtypes differ'),
    ]:
        with pytest.raises(ValueError, match=message):
            call()


@pytest.mark.skipif(INTERPRETING or not has_triton(), reason='needs triton, not its CPU interpreter')
def test_triton_kernels_need_cuda_tensors():
    q = torch.randn(1, 1, 4, 4, 2)
    for call in (lambda: na2d_qk_triton(q, q, 3), lambda: na2d_av_triton(torch.zeros(1, 1, 4, 4, 9), q, 3),
                 lambda: na2d_triton(q, q, q, 3)):
        with pytest.raises(ValueError, match='need CUDA tensors, got cpu'):
            call()


def test_tile_config_follows_the_launch_settings():
    default = tile_config(56, 56, (11, 11), (1, 1))
    assert (default.rs, default.rs_rpb, default.warps) == (2, 1, 2)
    custom = tile_config(56, 56, (11, 11), (1, 1), LaunchSettings(4, 2, 8))
    assert (custom.rs, custom.rs_rpb, custom.warps) == (4, 2, 8)
    assert tile_config(56, 56, (11, 11), (1, 1)) == default  # the cache keeps the two apart


@pytest.mark.skipif(not TRITON_RUNS, reason='needs a CUDA GPU and triton, or the Triton interpreter')
def test_fused_backward_launches_with_the_forwards_settings(monkeypatch):
    seen = []
    monkeypatch.setattr(ops.neighborhood_attention_fused, 'tile_config',
                        lambda *args: seen.append(args[4]) or tile_config(*args))
    launch = LaunchSettings(1, 1, 2)
    leaves = [t.requires_grad_() for t in na_inputs(1, 2, 6, 5, 4, 3, torch.float32, TRITON_DEVICE, seed=3)]
    ref_leaves = [t.detach().double().requires_grad_() for t in leaves]
    out = na2d_triton(*leaves[:3], 3, 2, leaves[3], launch=launch)
    ref = ops.na2d_ref(*ref_leaves[:3], 3, 2, ref_leaves[3])
    grads = torch.autograd.grad(out, leaves, torch.ones_like(out))
    grads_ref = torch.autograd.grad(ref, ref_leaves, torch.ones_like(ref))
    assert seen == [launch, launch]
    for got, expected in zip((out, *grads), (ref, *grads_ref)):
        assert rel_err(got, expected) < 2 * TOL[torch.float32]


def check_fused_subset(launch, wants, height=11, width=9, kernel=5, dilation=2, device=TRITON_DEVICE, seed=4):
    """``na2d_triton`` with ``launch`` settings, differentiated w.r.t. the inputs that ``wants``
    marks (q, k, v, rpb), against the float64 reference."""
    leaves = na_inputs(1, 2, height, width, 8, kernel, torch.float32, device, seed)
    for t, wanted in zip(leaves, wants):
        t.requires_grad_(wanted)
    ref_leaves = [t.detach().double().requires_grad_(t.requires_grad) for t in leaves]
    out = na2d_triton(*leaves[:3], kernel, dilation, leaves[3], launch=launch)
    ref = ops.na2d_ref(*ref_leaves[:3], kernel, dilation, ref_leaves[3])
    g_out = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed)).to(device)
    wrt = [i for i, wanted in enumerate(wants) if wanted]
    grads = torch.autograd.grad(out, [leaves[i] for i in wrt], g_out)
    grads_ref = torch.autograd.grad(ref, [ref_leaves[i] for i in wrt], g_out.double())
    assert rel_err(out, ref) < TOL[torch.float32]
    for i, g, g_ref in zip(wrt, grads, grads_ref):
        err = rel_err(g, g_ref)
        assert err < 2 * TOL[torch.float32], f'{"q k v rpb".split()[i]}: relative error {err:.2e}'


def test_tile_size_follows_the_launch_settings():
    for tile in (16, 32, 64):
        cfg = tile_config(56, 56, (11, 11), (1, 1), LaunchSettings(2, 1, 2, tile))
        assert cfg.th * cfg.tw == tile
    with pytest.raises(ValueError, match='power of two of at least 16'):
        tile_config(56, 56, (11, 11), (1, 1), LaunchSettings(2, 1, 2, 24))


# ------------------------------------------------ Triton interpreter (CPU) and dispatch

@pytest.mark.skipif(not INTERPRETING, reason='runs inside test_triton_interpreter_on_cpu (TRITON_INTERPRET=1)')
def test_interpreted_na():
    check_na(1, 2, 9, 11, 8, 3, 2, torch.float32, 'cpu')


@pytest.mark.skipif(not INTERPRETING, reason='runs inside test_triton_interpreter_on_cpu (TRITON_INTERPRET=1)')
@pytest.mark.parametrize('heads,height,width,dim,kernel,dilation,use_rpb', [
    (2, 9, 11, 8, 3, 2, True),  # several tiles per dilation group
    (1, 5, 4, 6, 7, 1, True),  # below the window on both axes
    (1, 13, 10, 5, 5, (3, 2), False),  # groups of unequal length, odd channels
    (1, 6, 13, 16, (7, 5), (1, 2), True),  # non-square window, dilation on one axis
])
def test_interpreted_fused_na(heads, height, width, dim, kernel, dilation, use_rpb):
    check_fused(1, heads, height, width, dim, kernel, dilation, torch.float32, 'cpu', use_rpb)


@pytest.mark.skipif(not INTERPRETING, reason='runs inside test_triton_interpreter_on_cpu (TRITON_INTERPRET=1)')
def test_interpreted_fused_na_reads_views():
    check_fused_views(1, 2, 9, 7, 8, 5, 2, torch.float32, 'cpu')


@pytest.mark.skipif(not INTERPRETING, reason='runs inside test_triton_interpreter_on_cpu (TRITON_INTERPRET=1)')
@pytest.mark.parametrize('tile_queries', [32, 64])
def test_interpreted_fused_na_larger_tiles(tile_queries):
    check_fused_subset(LaunchSettings(2, 1, 2, tile_queries), (True, True, True, True))


@pytest.mark.skipif(not INTERPRETING, reason='runs inside test_triton_interpreter_on_cpu (TRITON_INTERPRET=1)')
def test_interpreted_fused_na_without_query_gradients():
    """Without dq and d rpb the query-centric pass, which otherwise writes rowsum(dO * O) for the
    key-centric one, does not run."""
    check_fused_subset(None, (False, True, True, False))


@pytest.mark.skipif(not INTERPRETING, reason='runs inside test_triton_interpreter_on_cpu (TRITON_INTERPRET=1)')
def test_interpreted_fused_kernels_through_the_eager_op(scratch_registry):
    """``ops.na2d`` in eager mode with the fused kernels as its backend (as on a GPU): forward and
    every gradient through the op's eager Function against the float64 reference."""
    from ops.neighborhood_attention_fused import na2d_fused_backward, na2d_fused_forward
    calls = []

    def counted(fn):
        return lambda *args: calls.append(fn.__name__) or fn(*args)

    dispatch.register_backend('na2d', 'fused-interpreted',
                              ops.Kernel(counted(na2d_fused_forward), counted(na2d_fused_backward)), lambda t: True)
    leaves = [t.requires_grad_() for t in na_inputs(1, 2, 9, 7, 8, 5, torch.float32, 'cpu', seed=5)]
    ref_leaves = [t.detach().double().requires_grad_() for t in leaves]
    out = ops.na2d(*leaves[:3], 5, 2, leaves[3])
    ref = ops.na2d_ref(*ref_leaves[:3], 5, 2, ref_leaves[3])
    g_out = torch.randn(out.shape, generator=torch.Generator().manual_seed(5))
    grads = torch.autograd.grad(out, leaves, g_out)
    grads_ref = torch.autograd.grad(ref, ref_leaves, g_out.double())
    assert calls == ['na2d_fused_forward', 'na2d_fused_backward']
    for got, expected in zip((out, *grads), (ref, *grads_ref)):
        assert rel_err(got, expected) < 2 * TOL[torch.float32]


@pytest.mark.skipif(INTERPRETING, reason='this is the launcher of the interpreted tests')
@pytest.mark.skipif(not has_triton(), reason='needs triton installed')
def test_triton_interpreter_on_cpu():
    python_path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get('PYTHONPATH')]))
    env = dict(os.environ, TRITON_INTERPRET='1', PYTHONPATH=python_path)
    proc = subprocess.run([sys.executable, '-m', 'pytest', '-q', '-p', 'no:cacheprovider', __file__,
                           '-k', 'test_interpreted'], env=env, cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0 and '10 passed' in proc.stdout, proc.stdout[-3000:] + proc.stderr[-3000:]


def test_kernel_that_cannot_run_here_falls_back_once(scratch_registry, caplog):
    calls = []

    def broken(*args):
        calls.append(1)
        raise RuntimeError('no kernel image is available for execution on the device')

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


def test_other_kernel_errors_propagate_and_keep_the_kernel(scratch_registry):
    """An out-of-memory error (or any error but a missing kernel) is the caller's: no silent switch
    to the slower, hungrier reference, and the kernel stays in use."""
    calls = []

    def out_of_memory(*args):
        calls.append(1)
        raise torch.OutOfMemoryError('CUDA out of memory. Tried to allocate 2.00 GiB')

    dispatch.register_backend('na2d_av', 'oom', out_of_memory, lambda t: True)
    attn, value = torch.rand(1, 1, 6, 5, 9), torch.randn(1, 1, 6, 5, 4)
    for _ in range(2):
        with pytest.raises(torch.OutOfMemoryError):
            ops.na2d_av(attn, value, 3)
    assert len(calls) == 2 and dispatch.resolve('na2d_av', value).name == 'oom'


def test_forcing_is_per_op_and_per_thread(scratch_registry):
    import threading

    dispatch.register_backend('na2d_av', 'double', lambda a, v, k, d: ops.na2d_av_ref(a, v, k, d) * 2, lambda t: True)
    value = torch.randn(1, 1, 6, 5, 4)
    seen = {}

    def other_thread():
        seen['other'] = dispatch.resolve('na2d_av', value).name

    with ops.use_backend('reference', op='na2d_av'):
        assert dispatch.resolve('na2d_av', value).name == 'reference'
        assert dispatch.resolve('na2d_qk', value).name == 'reference'  # the only one on a CPU
        worker = threading.Thread(target=other_thread)
        worker.start()
        worker.join()
    assert seen['other'] == 'double'
    assert dispatch.resolve('na2d_av', value).name == 'double'
    with pytest.raises(ValueError, match='unknown op'):
        with ops.use_backend('reference', op='na2d_nope'):
            pass


def test_backward_runs_on_the_forwards_backend_in_any_thread(scratch_registry):
    """Autograd runs the backward of CUDA tensors on threads of its own, where the forward
    thread's ``use_backend`` does not reach: the backward still runs the forward's kernel (a
    kernel's backward reads its own forward's log-sum-exp)."""
    import threading

    from ops.library import _na2d_reference_forward, _recomputed_grads

    calls = []

    def forward(query, key, value, rpb, kernel, dilation, tf32):
        calls.append('forward')
        out, lse = _na2d_reference_forward(query, key, value, rpb, kernel, dilation)
        return ops.neighborhood_attention_fused.empty_in_layout(value).copy_(out), lse

    def backward(grad_out, query, key, value, rpb, out, lse, kernel, dilation, tf32):
        calls.append('backward')
        return _recomputed_grads(lambda q, k, v, b: _na2d_reference_forward(q, k, v, b, kernel, dilation)[0],
                                 (query, key, value, rpb), (grad_out,))

    dispatch.register_backend('na2d', 'recording', ops.Kernel(forward, backward), lambda t: True, first=False)
    q, k, v = (torch.randn(1, 2, 6, 5, 4, requires_grad=True) for _ in range(3))
    rpb = torch.randn(2, 5, 5, requires_grad=True)
    with ops.use_backend('recording', op='na2d'):
        out = ops.na2d(q, k, v, 3, 1, rpb)
    worker = threading.Thread(target=lambda: out.square().sum().backward())
    worker.start()
    worker.join()
    assert calls == ['forward', 'backward']
    expected = ops.na2d_ref(q, k, v, 3, 1, rpb)
    grads = torch.autograd.grad(expected.square().sum(), (q, k, v, rpb))
    for got, want in zip((q.grad, k.grad, v.grad, rpb.grad), grads):
        torch.testing.assert_close(got, want)


def test_model_uses_fused_op_where_it_runs_a_kernel(scratch_registry):
    """With a kernel registered for ``na2d``, MASS calls it for all four aggregations (values
    and states, both scales) through the custom op and never materialises a map; the result
    equals the eager reference path, which computes each map once."""
    from a2mamba_core import create_model
    from ops.library import _na2d_reference_forward

    calls = []

    def forward(query, key, value, rpb, kernel, dilation, tf32):
        calls.append(value.shape)
        out, lse = _na2d_reference_forward(query, key, value, rpb, kernel, dilation)
        return ops.neighborhood_attention_fused.empty_in_layout(value).copy_(out), lse

    def no_maps(*args):
        raise AssertionError('the fused path must not compute attention maps')

    model = create_model('a2mamba_n').eval()
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        unfused = model(x)
    dispatch.register_backend('na2d', 'fused-test', ops.Kernel(forward, None), lambda t: True)
    dispatch.register_backend('na2d_qk', 'no-maps', no_maps, lambda t: True)
    assert not dispatch.uses_reference('na2d', x)
    with torch.no_grad():
        out = model(x)
    torch.testing.assert_close(out, unfused, rtol=1e-5, atol=1e-5)
    blocks = [len(stage.blocks) for stage in model.stages]
    assert len(calls) == 4 * sum(blocks[:3]) + 2 * blocks[3]
    with ops.use_backend('reference'):
        assert dispatch.uses_reference('na2d', x)


def test_eager_kernel_calls_skip_the_custom_ops_and_match_the_reference(scratch_registry, monkeypatch):
    """In eager mode a kernel runs in a plain autograd Function, not through the custom ops (whose
    layers cost more host time than the kernels' launches): with kernel doubles for both ops (the
    references' forward, their recomputed backward) a model's output and parameter gradients equal
    the reference path's, and each kernel's backward runs once per forward."""
    from collections import Counter

    from a2mamba_core import create_model
    from a2mamba_core.a2mamba import A2SSM
    from ops.library import _na2d_reference_forward, _recomputed_grads

    calls = Counter()

    def na_forward(query, key, value, rpb, kernel, dilation, tf32):
        calls['na2d'] += 1
        out, lse = _na2d_reference_forward(query, key, value, rpb, kernel, dilation)
        return ops.neighborhood_attention_fused.empty_in_layout(value).copy_(out), lse

    def na_backward(grad_out, query, key, value, rpb, out, lse, kernel, dilation, tf32):
        calls['na2d backward'] += 1
        return _recomputed_grads(lambda q, k, v, b: _na2d_reference_forward(q, k, v, b, kernel, dilation)[0],
                                 (query, key, value, rpb), (grad_out,))

    def scan_forward(u, delta, A, B, delta_bias, softplus):
        calls['scan'] += 1
        return ops.selective_scan_states_ref(u, delta, A, B, delta_bias, softplus)

    def scan_backward(grad_states, u, delta, A, B, delta_bias, softplus, states):
        calls['scan backward'] += 1
        return _recomputed_grads(lambda *xs: ops.selective_scan_states_ref(*xs, softplus),
                                 (u, delta, A, B, delta_bias), (grad_states,))

    def no_custom_op(*args):
        raise AssertionError('an eager call went through a custom op')

    torch.manual_seed(0)
    model = create_model('a2mamba_n').eval()
    x = torch.randn(2, 3, 64, 64)

    def output_and_grads():
        model.zero_grad()
        out = model(x)
        out.square().mean().backward()
        return out.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]

    with ops.use_backend(ops.REFERENCE):
        ref, grads_ref = output_and_grads()
    dispatch.register_backend('na2d', 'double', ops.Kernel(na_forward, na_backward), lambda t: True)
    dispatch.register_backend('selective_scan_states', 'double', ops.Kernel(scan_forward, scan_backward),
                              lambda t: True)
    monkeypatch.setattr(ops.library, 'na2d_op', no_custom_op)
    monkeypatch.setattr(ops.library, 'selective_scan_states_op', no_custom_op)
    out, grads = output_and_grads()
    blocks = [len(stage.blocks) for stage in model.stages]
    scans = sum(isinstance(m, A2SSM) for m in model.modules())
    assert calls == {'na2d': 4 * sum(blocks[:3]) + 2 * blocks[3], 'na2d backward': 4 * sum(blocks[:3]) + 2 * blocks[3],
                     'scan': scans, 'scan backward': scans}
    assert rel_err(out, ref) < 1e-5
    assert len(grads) == len(grads_ref)
    for g, g_ref in zip(grads, grads_ref):
        assert rel_err(g, g_ref) < 1e-4


def test_forced_backend_that_cannot_run_raises():
    with ops.use_backend('triton'), pytest.raises(RuntimeError, match='cannot run on cpu'):
        ops.na2d_qk(torch.randn(1, 1, 4, 4, 2), torch.randn(1, 1, 4, 4, 2), 3)
