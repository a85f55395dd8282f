"""Triton kernels for 2-D neighborhood attention, with the semantics of
:mod:`ops.neighborhood_attention` (dilation groups, windows shifted inward at the borders,
slots past a short group's end masked).

Three gather kernels cover the forward and backward of both ops, one program per tile of
``BLOCK_Q`` flattened positions of one (batch, head):

* ``_na_dot_kernel``: ``out[i, j] = x_i . y_{n(i, j)}`` (+ rpb): qk forward; ``d attn`` of av.
* ``_na_gather_kernel``: ``out_i = sum_j w[i, j] y_{n(i, j)}``: av forward; ``d query`` of qk.
* ``_na_scatter_kernel``: ``out_m = sum_{(i, j): n(i, j) = m} w[i, j] x_i``: ``d key`` of qk
  and ``d value`` of av, as a gather over the queries that can see ``m`` (within ``k - 1``
  group steps on each axis) instead of atomics, so it is deterministic.

Everything accumulates in float32. Tensors are ``(B, heads, H, W, C)`` and maps
``(B, heads, H, W, kh*kw)``, both contiguous.
"""
from typing import Optional, Tuple

import torch
from torch import Tensor

from .neighborhood_attention import IntOrPair, _check_5d, axis_neighbors, normalize_window_args

try:
    import triton
    import triton.language as tl
    _TRITON_IMPORT_ERROR: Optional[BaseException] = None
except ImportError as error:
    triton = None
    _TRITON_IMPORT_ERROR = error

BLOCK_Q = 32


def has_triton() -> bool:
    """True when Triton is importable (the kernels then run on CUDA tensors)."""
    return triton is not None


if triton is not None:

    @triton.jit
    def _window_start(pos, length, kernel: tl.constexpr, dilation):
        """Group, group coordinate, group length and window start of ``pos`` on one axis."""
        group = pos % dilation
        pos_g = pos // dilation
        group_len = (length - group + dilation - 1) // dilation
        start = tl.minimum(tl.maximum(pos_g - kernel // 2, 0), tl.maximum(group_len - kernel, 0))
        return group, pos_g, group_len, start

    @triton.jit
    def _na_dot_kernel(x_ptr, y_ptr, rpb_ptr, out_ptr, heads, H, W, C, DH, DW,
                       KH: tl.constexpr, KW: tl.constexpr, HAS_RPB: tl.constexpr, MASK_NEG_INF: tl.constexpr,
                       BLOCK_Q: tl.constexpr, BLOCK_C: tl.constexpr):
        pid_q = tl.program_id(0)
        bh = tl.program_id(1).to(tl.int64)
        q_idx = pid_q * BLOCK_Q + tl.arange(0, BLOCK_Q)
        q_ok = q_idx < H * W
        gy, py, lgy, sy = _window_start(q_idx // W, H, KH, DH)
        gx, px, lgx, sx = _window_start(q_idx % W, W, KW, DW)
        c = tl.arange(0, BLOCK_C)
        io_mask = q_ok[:, None] & (c < C)[None, :]
        base = bh * H * W * C
        xq = tl.load(x_ptr + base + q_idx[:, None] * C + c[None, :], mask=io_mask, other=0.0).to(tl.float32)
        out_row = out_ptr + bh * H * W * (KH * KW) + q_idx * (KH * KW)
        for j in range(KH * KW):
            key_gy = sy + j // KW
            key_gx = sx + j % KW
            valid = (key_gy < lgy) & (key_gx < lgx)
            key = tl.where(valid, (key_gy * DH + gy) * W + key_gx * DW + gx, q_idx)
            yk = tl.load(y_ptr + base + key[:, None] * C + c[None, :], mask=io_mask, other=0.0).to(tl.float32)
            score = tl.sum(xq * yk, axis=1)
            if HAS_RPB:
                by = tl.minimum(tl.maximum(KH - 1 + key_gy - py, 0), 2 * KH - 2)
                bx = tl.minimum(tl.maximum(KW - 1 + key_gx - px, 0), 2 * KW - 2)
                bias_ptr = rpb_ptr + (bh % heads) * (2 * KH - 1) * (2 * KW - 1) + by * (2 * KW - 1) + bx
                score += tl.load(bias_ptr, mask=q_ok, other=0.0).to(tl.float32)
            if MASK_NEG_INF:
                score = tl.where(valid, score, float('-inf'))
            else:
                score = tl.where(valid, score, 0.0)
            tl.store(out_row + j, score.to(out_ptr.dtype.element_ty), mask=q_ok)

    @triton.jit
    def _na_gather_kernel(w_ptr, y_ptr, out_ptr, H, W, C, DH, DW,
                          KH: tl.constexpr, KW: tl.constexpr, BLOCK_Q: tl.constexpr, BLOCK_C: tl.constexpr):
        pid_q = tl.program_id(0)
        bh = tl.program_id(1).to(tl.int64)
        q_idx = pid_q * BLOCK_Q + tl.arange(0, BLOCK_Q)
        q_ok = q_idx < H * W
        gy, py, lgy, sy = _window_start(q_idx // W, H, KH, DH)
        gx, px, lgx, sx = _window_start(q_idx % W, W, KW, DW)
        c = tl.arange(0, BLOCK_C)
        io_mask = q_ok[:, None] & (c < C)[None, :]
        base = bh * H * W * C
        w_row = w_ptr + bh * H * W * (KH * KW) + q_idx * (KH * KW)
        acc = tl.zeros((BLOCK_Q, BLOCK_C), dtype=tl.float32)
        for j in range(KH * KW):
            key_gy = sy + j // KW
            key_gx = sx + j % KW
            valid = (key_gy < lgy) & (key_gx < lgx)
            key = tl.where(valid, (key_gy * DH + gy) * W + key_gx * DW + gx, q_idx)
            # masked slots weigh nothing, whatever they hold (-inf scores included)
            weight = tl.load(w_row + j, mask=q_ok & valid, other=0.0).to(tl.float32)
            yk = tl.load(y_ptr + base + key[:, None] * C + c[None, :], mask=io_mask, other=0.0).to(tl.float32)
            acc += weight[:, None] * yk
        tl.store(out_ptr + base + q_idx[:, None] * C + c[None, :], acc.to(out_ptr.dtype.element_ty), mask=io_mask)

    @triton.jit
    def _na_scatter_kernel(w_ptr, x_ptr, out_ptr, H, W, C, DH, DW,
                           KH: tl.constexpr, KW: tl.constexpr, BLOCK_Q: tl.constexpr, BLOCK_C: tl.constexpr):
        pid_m = tl.program_id(0)
        bh = tl.program_id(1).to(tl.int64)
        m_idx = pid_m * BLOCK_Q + tl.arange(0, BLOCK_Q)
        m_ok = m_idx < H * W
        gy, my, lgy, _sy = _window_start(m_idx // W, H, KH, DH)
        gx, mx, lgx, _sx = _window_start(m_idx % W, W, KW, DW)
        c = tl.arange(0, BLOCK_C)
        c_ok = (c < C)[None, :]
        base = bh * H * W * C
        w_base = w_ptr + bh * H * W * (KH * KW)
        acc = tl.zeros((BLOCK_Q, BLOCK_C), dtype=tl.float32)
        # a query sees key m only if their group coordinates differ by less than the kernel
        for dy in range(2 * KH - 1):
            py = my - (KH - 1) + dy
            qsy = tl.minimum(tl.maximum(py - KH // 2, 0), tl.maximum(lgy - KH, 0))
            ky = my - qsy
            ok_y = (py >= 0) & (py < lgy) & (ky >= 0) & (ky < KH)
            for dx in range(2 * KW - 1):
                px = mx - (KW - 1) + dx
                qsx = tl.minimum(tl.maximum(px - KW // 2, 0), tl.maximum(lgx - KW, 0))
                kx = mx - qsx
                ok = m_ok & ok_y & (px >= 0) & (px < lgx) & (kx >= 0) & (kx < KW)
                query = tl.where(ok, (py * DH + gy) * W + px * DW + gx, 0)
                weight = tl.load(w_base + query * (KH * KW) + ky * KW + kx, mask=ok, other=0.0).to(tl.float32)
                xr = tl.load(x_ptr + base + query[:, None] * C + c[None, :], mask=ok[:, None] & c_ok,
                             other=0.0).to(tl.float32)
                acc += weight[:, None] * xr
        tl.store(out_ptr + base + m_idx[:, None] * C + c[None, :], acc.to(out_ptr.dtype.element_ty),
                 mask=m_ok[:, None] & c_ok)


def _check_triton() -> None:
    if triton is None:
        raise RuntimeError(f'the Triton neighborhood-attention backend needs triton ({_TRITON_IMPORT_ERROR}); '
                           f'pip install triton')


def _launch_args(t: Tensor) -> Tuple[Tuple[int, int], int]:
    b, heads, height, width, dim = t.shape
    grid = (triton.cdiv(height * width, BLOCK_Q), b * heads)
    return grid, max(16, triton.next_power_of_2(dim))


def _dot(x: Tensor, y: Tensor, rpb: Optional[Tensor], kernel: Tuple[int, int], dilation: Tuple[int, int],
         out_dtype: torch.dtype, mask_neg_inf: bool) -> Tensor:
    b, heads, height, width, dim = x.shape
    out = torch.empty(b, heads, height, width, kernel[0] * kernel[1], device=x.device, dtype=out_dtype)
    grid, block_c = _launch_args(x)
    _na_dot_kernel[grid](x, y, rpb if rpb is not None else x, out, heads, height, width, dim,
                         dilation[0], dilation[1], KH=kernel[0], KW=kernel[1], HAS_RPB=rpb is not None,
                         MASK_NEG_INF=mask_neg_inf, BLOCK_Q=BLOCK_Q, BLOCK_C=block_c)
    return out


def _gather(weights: Tensor, y: Tensor, kernel: Tuple[int, int], dilation: Tuple[int, int],
            out_dtype: torch.dtype) -> Tensor:
    out = torch.empty(y.shape, device=y.device, dtype=out_dtype)
    _, _, height, width, dim = y.shape
    grid, block_c = _launch_args(y)
    _na_gather_kernel[grid](weights, y, out, height, width, dim, dilation[0], dilation[1],
                            KH=kernel[0], KW=kernel[1], BLOCK_Q=BLOCK_Q, BLOCK_C=block_c)
    return out


def _scatter(weights: Tensor, x: Tensor, kernel: Tuple[int, int], dilation: Tuple[int, int],
             out_dtype: torch.dtype) -> Tensor:
    out = torch.empty(x.shape, device=x.device, dtype=out_dtype)
    _, _, height, width, dim = x.shape
    grid, block_c = _launch_args(x)
    _na_scatter_kernel[grid](weights, x, out, height, width, dim, dilation[0], dilation[1],
                             KH=kernel[0], KW=kernel[1], BLOCK_Q=BLOCK_Q, BLOCK_C=block_c)
    return out


def _rpb_grad(dattn: Tensor, rpb: Tensor, kernel: Tuple[int, int], dilation: Tuple[int, int]) -> Tensor:
    """Sums ``dattn`` over the batch and every slot that reads each bias entry."""
    _, heads, height, width, _ = dattn.shape
    rows = axis_neighbors(height, kernel[0], dilation[0], dattn.device)
    cols = axis_neighbors(width, kernel[1], dilation[1], dattn.device)
    per_slot = dattn.float().sum(0).reshape(heads, -1)  # [heads, H * W * kh * kw]
    # bias entry of slot (a, b) of query (i, j): rows.bias[i, a] * (2 kw - 1) + cols.bias[j, b]
    index = (rows.bias[:, None, :, None] * (2 * kernel[1] - 1) + cols.bias[None, :, None, :]).reshape(-1)
    if not (rows.all_valid and cols.all_valid):
        keep = (rows.valid[:, None, :, None] & cols.valid[None, :, None, :]).reshape(-1)
        per_slot, index = per_slot[:, keep], index[keep]
    grad = torch.zeros(heads, (2 * kernel[0] - 1) * (2 * kernel[1] - 1), device=dattn.device, dtype=torch.float32)
    grad.index_add_(1, index, per_slot)
    return grad.reshape(rpb.shape).to(rpb.dtype)


class NA2DQKFn(torch.autograd.Function):
    """Triton neighborhood scores; see :func:`ops.neighborhood_attention.na2d_qk_ref`."""

    @staticmethod
    def forward(ctx, query: Tensor, key: Tensor, rpb: Optional[Tensor], kernel: Tuple[int, int],
                dilation: Tuple[int, int]) -> Tensor:
        query, key = query.contiguous(), key.contiguous()
        rpb_c = None if rpb is None else rpb.contiguous()
        ctx.save_for_backward(query, key, rpb_c)
        ctx.window = kernel, dilation
        return _dot(query, key, rpb_c, kernel, dilation, query.dtype, mask_neg_inf=True)

    @staticmethod
    def backward(ctx, dattn: Tensor):
        query, key, rpb = ctx.saved_tensors
        kernel, dilation = ctx.window
        dattn = dattn.contiguous()
        dquery = _gather(dattn, key, kernel, dilation, query.dtype) if ctx.needs_input_grad[0] else None
        dkey = _scatter(dattn, query, kernel, dilation, key.dtype) if ctx.needs_input_grad[1] else None
        drpb = _rpb_grad(dattn, rpb, kernel, dilation) if rpb is not None and ctx.needs_input_grad[2] else None
        return dquery, dkey, drpb, None, None


class NA2DAVFn(torch.autograd.Function):
    """Triton neighborhood aggregation; see :func:`ops.neighborhood_attention.na2d_av_ref`."""

    @staticmethod
    def forward(ctx, attn: Tensor, value: Tensor, kernel: Tuple[int, int], dilation: Tuple[int, int]) -> Tensor:
        attn, value = attn.contiguous(), value.contiguous()
        ctx.save_for_backward(attn, value)
        ctx.window = kernel, dilation
        return _gather(attn, value, kernel, dilation, torch.promote_types(attn.dtype, value.dtype))

    @staticmethod
    def backward(ctx, dout: Tensor):
        attn, value = ctx.saved_tensors
        kernel, dilation = ctx.window
        dout = dout.contiguous()
        dattn = _dot(dout, value, None, kernel, dilation, attn.dtype, mask_neg_inf=False) \
            if ctx.needs_input_grad[0] else None
        dvalue = _scatter(attn, dout, kernel, dilation, value.dtype) if ctx.needs_input_grad[1] else None
        return dattn, dvalue, None, None


def na2d_qk_triton(query: Tensor, key: Tensor, kernel_size: IntOrPair, dilation: IntOrPair = 1,
                   rpb: Optional[Tensor] = None) -> Tensor:
    """Triton twin of :func:`ops.neighborhood_attention.na2d_qk_ref` (same arguments and result)."""
    _check_triton()
    _check_5d('query', query)
    if key.shape != query.shape:
        raise ValueError(f'query and key shapes differ: {tuple(query.shape)} vs {tuple(key.shape)}')
    kernel, dil = normalize_window_args(kernel_size, dilation)
    heads = query.shape[1]
    if rpb is not None and tuple(rpb.shape) != (heads, 2 * kernel[0] - 1, 2 * kernel[1] - 1):
        raise ValueError(f'rpb must be ({heads}, {2 * kernel[0] - 1}, {2 * kernel[1] - 1}), '
                         f'got {tuple(rpb.shape)}')
    return NA2DQKFn.apply(query, key, rpb, kernel, dil)


def na2d_av_triton(attn: Tensor, value: Tensor, kernel_size: IntOrPair, dilation: IntOrPair = 1) -> Tensor:
    """Triton twin of :func:`ops.neighborhood_attention.na2d_av_ref` (same arguments and result)."""
    _check_triton()
    _check_5d('attn', attn)
    _check_5d('value', value)
    kernel, dil = normalize_window_args(kernel_size, dilation)
    b, heads, height, width, _ = value.shape
    expected = (b, heads, height, width, kernel[0] * kernel[1])
    if tuple(attn.shape) != expected:
        raise ValueError(f'attn must be {expected} for value {tuple(value.shape)} and kernel {kernel}, '
                         f'got {tuple(attn.shape)}')
    return NA2DAVFn.apply(attn, value, kernel, dil)


__all__ = ['na2d_qk_triton', 'na2d_av_triton', 'has_triton', 'NA2DQKFn', 'NA2DAVFn']
