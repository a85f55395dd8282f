"""Reference ops against slow, obviously correct loops written from natten 0.17's index
formulas (window start / bias start per axis), and against a step-by-step scan."""
import pytest
import torch

import ops
from ops import na2d_av_ref, na2d_qk_ref, selective_scan_states_ref


def natten_window_start(i: int, length: int, k: int, d: int) -> int:
    """natten 0.17's get_window_start (valid for length >= k * d)."""
    nb = k // 2
    if d <= 1:
        return max(i - nb, 0) + (i + nb >= length) * (length - i - nb - 1)
    if i - nb * d < 0:
        return i % d
    if i + nb * d >= length:
        imodd = i % d
        a = (length // d) * d
        b = length - a
        if imodd < b:
            return length - b + imodd - 2 * nb * d
        return a + imodd - k * d
    return i - nb * d


def natten_bias_start(i: int, length: int, k: int, d: int) -> int:
    """natten 0.17's get_pb_start (valid for length >= k * d)."""
    nb = k // 2
    if d <= 1:
        return nb + (i < nb) * (nb - i) + (i + nb >= length) * (length - i - 1 - nb)
    if i - nb * d < 0:
        return k - 1 - i // d
    if i + nb * d >= length:
        return (length - i - 1) // d
    return nb


def small_map_neighbors(i: int, length: int, k: int):
    """Dilation 1 on an axis shorter than the window: every position, in order; the rest masked."""
    keys = list(range(length)) + [None] * (k - length)
    return keys, [None if j is None else (k - 1) + j - i for j in keys]


def axis_neighbors(i, length, k, d):
    if length >= k * d:
        start, bias = natten_window_start(i, length, k, d), natten_bias_start(i, length, k, d)
        return [start + a * d for a in range(k)], [bias + a for a in range(k)]
    assert d == 1, 'the loop reference covers the small-map case with dilation 1 only'
    return small_map_neighbors(i, length, k)


def window_slots(i, j, height, width, kernel, dilation):
    """(slot, key row, key col, bias row, bias col) of every unmasked neighbor of query (i, j)."""
    rows, rbias = axis_neighbors(i, height, kernel[0], dilation[0])
    cols, cbias = axis_neighbors(j, width, kernel[1], dilation[1])
    return [(a * kernel[1] + c, r, col, rb, cb)
            for a, (r, rb) in enumerate(zip(rows, rbias)) for c, (col, cb) in enumerate(zip(cols, cbias))
            if r is not None and col is not None]


def qk_loop(q, k, kernel, dilation, rpb):
    b, n, height, width, _ = q.shape
    out = torch.full((b, n, height, width, kernel[0] * kernel[1]), float('-inf'), dtype=q.dtype)
    for i in range(height):
        for j in range(width):
            slot, r, c, rb, cb = map(torch.tensor, zip(*window_slots(i, j, height, width, kernel, dilation)))
            scores = (q[:, :, i, j, None] * k[:, :, r, c]).sum(-1)  # [B, n, slots]
            if rpb is not None:
                scores = scores + rpb[:, rb, cb]
            out[:, :, i, j, slot] = scores
    return out


def av_loop(attn, v, kernel, dilation):
    out = torch.zeros_like(v)
    height, width = v.shape[2:4]
    for i in range(height):
        for j in range(width):
            slot, r, c, _, _ = map(torch.tensor, zip(*window_slots(i, j, height, width, kernel, dilation)))
            out[:, :, i, j] = (attn[:, :, i, j, slot, None] * v[:, :, r, c]).sum(-2)
    return out


NA_CASES = [  # (kernel, dilation, height, width)
    ((7, 7), (1, 1), 9, 12), ((9, 9), (1, 1), 11, 10), ((11, 11), (1, 1), 13, 11),
    ((7, 7), (2, 3), 17, 23), ((9, 9), (4, 2), 37, 19), ((11, 11), (5, 3), 57, 35),
    ((7, 7), (3, 3), 22, 21), ((9, 7), (2, 1), 19, 8),
    ((7, 5), (1, 3), 9, 150), ((3, 9), (2, 1), 7, 133),  # wider than one column tile
    ((11, 11), (1, 1), 8, 13), ((7, 7), (1, 1), 5, 3), ((9, 9), (1, 1), 1, 1),  # maps smaller than the window
]


@pytest.mark.parametrize('kernel,dilation,height,width', NA_CASES)
@pytest.mark.parametrize('with_rpb', [True, False])
def test_na2d_matches_loop(kernel, dilation, height, width, with_rpb):
    g = torch.Generator().manual_seed(height * 100 + width)
    q, k, v = (torch.randn(2, 2, height, width, 5, generator=g, dtype=torch.float64) for _ in range(3))
    rpb = torch.randn(2, 2 * kernel[0] - 1, 2 * kernel[1] - 1, generator=g, dtype=torch.float64) if with_rpb else None
    attn = na2d_qk_ref(q, k, kernel, dilation, rpb)
    expected = qk_loop(q, k, kernel, dilation, rpb)
    assert torch.equal(torch.isinf(attn), torch.isinf(expected))
    finite = torch.isfinite(expected)
    torch.testing.assert_close(attn[finite], expected[finite])
    weights = attn.softmax(-1)
    torch.testing.assert_close(na2d_av_ref(weights, v, kernel, dilation), av_loop(weights, v, kernel, dilation))


def test_masked_slots_ignored_by_av():
    v = torch.randn(1, 1, 4, 5, 3, dtype=torch.float64)
    attn = torch.rand(1, 1, 4, 5, 49, dtype=torch.float64)  # garbage in the masked slots too
    torch.testing.assert_close(na2d_av_ref(attn, v, 7, 1), av_loop(attn, v, (7, 7), (1, 1)))


@pytest.mark.parametrize('kernel,dilation,height,width', [(3, 2, 7, 9), (5, 1, 6, 5), (7, 1, 4, 6), (3, 3, 10, 7)])
def test_na2d_gradcheck(kernel, dilation, height, width):
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 2, height, width, 3, generator=g, dtype=torch.float64, requires_grad=True)
               for _ in range(3))
    rpb = torch.randn(2, 2 * kernel - 1, 2 * kernel - 1, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda q, k, r: na2d_qk_ref(q, k, kernel, dilation, r).softmax(-1),
                                    (q, k, rpb), eps=1e-6, atol=1e-5, fast_mode=True)
    attn = torch.rand(1, 2, height, width, kernel * kernel, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, v: na2d_av_ref(a, v, kernel, dilation), (attn, v),
                                    eps=1e-6, atol=1e-5, fast_mode=True)


def test_na2d_bad_arguments():
    q = torch.randn(1, 2, 8, 8, 4)
    with pytest.raises(ValueError, match='odd'):
        na2d_qk_ref(q, q, 4)
    with pytest.raises(ValueError, match='dilation'):
        na2d_qk_ref(q, q, 3, 0)
    with pytest.raises(ValueError, match='5-D'):
        na2d_qk_ref(q[0], q[0], 3)
    with pytest.raises(ValueError, match='rpb'):
        na2d_qk_ref(q, q, 3, 1, torch.zeros(2, 3, 3))
    with pytest.raises(ValueError, match='attn must be'):
        na2d_av_ref(torch.zeros(1, 2, 8, 8, 8), q, 3)


def scan_loop(u, delta, A, B, delta_bias, delta_softplus):
    dt = delta + delta_bias[:, None] if delta_bias is not None else delta
    dt = torch.nn.functional.softplus(dt) if delta_softplus else dt
    batch, dim, length = u.shape
    Bf = B if B.dim() == 4 else B[:, None]
    Bf = Bf.repeat_interleave(dim // Bf.shape[1], dim=1)
    h = torch.zeros(batch, dim, A.shape[1], dtype=u.dtype)
    states = []
    for t in range(length):
        h = torch.exp(dt[:, :, t, None] * A) * h + dt[:, :, t, None] * Bf[..., t] * u[:, :, t, None]
        states.append(h)
    return torch.stack(states, dim=-1)


@pytest.mark.parametrize('length', [1, 7, 64, 65, 200])
@pytest.mark.parametrize('state,groups', [(1, None), (3, None), (2, 2)])
def test_selective_scan_matches_loop(length, state, groups):
    g = torch.Generator().manual_seed(length)
    batch, dim = 2, 4
    u = torch.randn(batch, dim, length, generator=g, dtype=torch.float64)
    delta = torch.randn(batch, dim, length, generator=g, dtype=torch.float64)
    A = -torch.rand(dim, state, generator=g, dtype=torch.float64) * 2
    B = torch.randn(*(batch, state, length) if groups is None else (batch, groups, state, length), generator=g,
                    dtype=torch.float64)
    bias = torch.randn(dim, generator=g, dtype=torch.float64)
    states = selective_scan_states_ref(u.float(), delta.float(), A.float(), B.float(), bias.float(), True)
    assert states.dtype == torch.float32 and states.shape == (batch, dim, state, length)
    torch.testing.assert_close(states, scan_loop(u, delta, A, B, bias, True).float(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(selective_scan_states_ref(u, delta, A, B, bias, True),
                               scan_loop(u, delta, A, B, bias, True))


def test_selective_scan_strong_decay_stays_finite():
    """Steps with delta*A around -200 must neither overflow nor produce NaN."""
    g = torch.Generator().manual_seed(0)
    u = torch.randn(1, 3, 150, generator=g, dtype=torch.float64)
    delta = torch.full((1, 3, 150), 20.0, dtype=torch.float64)
    A = torch.full((3, 1), -10.0, dtype=torch.float64)
    B = torch.randn(1, 1, 150, generator=g, dtype=torch.float64)
    states = selective_scan_states_ref(u.float(), delta.float(), A.float(), B.float(), None, False)
    assert torch.isfinite(states).all()
    torch.testing.assert_close(states, scan_loop(u, delta, A, B, None, False).float())


def test_selective_scan_gradcheck():
    g = torch.Generator().manual_seed(1)
    args = [torch.randn(1, 3, 9, generator=g, dtype=torch.float64),
            torch.randn(1, 3, 9, generator=g, dtype=torch.float64),
            -torch.rand(3, 2, generator=g, dtype=torch.float64),
            torch.randn(1, 2, 9, generator=g, dtype=torch.float64),
            torch.randn(3, generator=g, dtype=torch.float64)]
    for a in args:
        a.requires_grad_(True)

    def scan(u, delta, A, B, bias):
        return selective_scan_states_ref(u, delta, A, B, bias, True)  # float64 in, float64 out

    assert torch.autograd.gradcheck(scan, args, eps=1e-6, atol=1e-5, fast_mode=True)


def test_selective_scan_bad_shapes():
    u = torch.randn(1, 4, 10)
    with pytest.raises(ValueError, match='A must be'):
        selective_scan_states_ref(u, u, torch.randn(3, 1), torch.randn(1, 1, 10))
    with pytest.raises(ValueError, match='B must be'):
        selective_scan_states_ref(u, u, torch.randn(4, 1), torch.randn(1, 2, 10))


def test_dispatch_forced_backend():
    q = torch.randn(1, 2, 6, 6, 4)
    with ops.use_backend('reference'):
        assert torch.equal(ops.na2d_qk(q, q, 3), na2d_qk_ref(q, q, 3))
    with ops.use_backend('no-such-backend'), pytest.raises(ValueError, match='has backends'):
        ops.na2d_qk(q, q, 3)
    u, B = torch.randn(2, 3, 10), torch.randn(2, 1, 10)
    with ops.use_backend('reference'):
        states = ops.selective_scan_states(u, u, -torch.ones(3, 1), B)
    assert torch.equal(states, selective_scan_states_ref(u, u, -torch.ones(3, 1), B))
