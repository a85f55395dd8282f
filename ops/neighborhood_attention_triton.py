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
import os
from typing import Optional, Tuple

import torch
from torch import Tensor

from .neighborhood_attention import IntOrPair, axis_neighbors, check_na2d_args

try:
    import triton
    import triton.language as tl
    _TRITON_IMPORT_ERROR: Optional[BaseException] = None
except ImportError as error:
    triton = None
    _TRITON_IMPORT_ERROR = error

BLOCK_Q = 32

# Triton reads this when it defines the kernels: they then run on CPU tensors too (tests).
_INTERPRETED = os.environ.get('TRITON_INTERPRET', '0') == '1'


def has_triton() -> bool:
    """True when Triton is importable (the kernels then run on CUDA tensors)."""
    return triton is not None


def triton_serves(t: Tensor) -> bool:
    """Whether the Triton kernels (gather and fused) run on ``t``: Triton is importable and ``t``
    is a CUDA tensor. The dispatch's availability check of both Triton backends."""
    return has_triton() and t.is_cuda


def require_triton(t: Tensor) -> None:
    """Raises unless the Triton kernels can run on ``t``: :func:`triton_serves`, or any device
    under Triton's CPU interpreter (``TRITON_INTERPRET=1``).

    Raises:
        RuntimeError: without Triton.
        ValueError: for a tensor that is not on a CUDA device.
    """
    if triton is None:
        raise RuntimeError(f'the Triton neighborhood-attention backend needs triton ({_TRITON_IMPORT_ERROR}); '
                           f'pip install triton')
    if not (triton_serves(t) or _INTERPRETED):
        raise ValueError(f'the Triton neighborhood-attention kernels need CUDA tensors, got {t.device}')


if triton is not None:

    @triton.jit
    def window_start(pos_g, group_len, KERNEL: tl.constexpr):
        """First key (group coordinate) of the window of the query at group coordinate ``pos_g``,
        in a dilation group of ``group_len`` members: the window shifted inward at the borders."""
        return tl.minimum(tl.maximum(pos_g - KERNEL // 2, 0), tl.maximum(group_len - KERNEL, 0))

    @triton.jit
    def _axis_window(pos, length, KERNEL: tl.constexpr, dilation):
        """Dilation group, group coordinate, group length and window start of ``pos`` on one axis."""
        group = pos % dilation
        pos_g = pos // dilation
        group_len = (length - group + dilation - 1) // dilation
        return group, pos_g, group_len, window_start(pos_g, group_len, KERNEL)

    @triton.jit
    def _position_block(H, W, DH, DW, KH: tl.constexpr, KW: tl.constexpr, BLOCK_Q: tl.constexpr):
        """The program's ``(batch, head)`` index (64-bit), its ``BLOCK_Q`` flattened positions
        (queries; keys for the scatter), which of them exist, and per axis their :func:`_axis_window`."""
        bh = tl.program_id(1).to(tl.int64)
        q_idx = tl.program_id(0) * BLOCK_Q + tl.arange(0, BLOCK_Q)
        q_ok = q_idx < H * W
        gy, py, lgy, sy = _axis_window(q_idx // W, H, KH, DH)
        gx, px, lgx, sx = _axis_window(q_idx % W, W, KW, DW)
        return bh, q_idx, q_ok, gy, py, lgy, sy, gx, px, lgx, sx

    @triton.jit
    def _neighbor(j, q_idx, gy, lgy, sy, gx, lgx, sx, W, DH, DW, KW: tl.constexpr):
        """Slot ``j`` of each query's window: the key's group coordinates, whether the slot is
        valid, and the key's flat index (the query's own where masked, so loads stay in bounds)."""
        key_gy = sy + j // KW
        key_gx = sx + j % KW
        valid = (key_gy < lgy) & (key_gx < lgx)
        key = tl.where(valid, (key_gy * DH + gy) * W + key_gx * DW + gx, q_idx)
        return key_gy, key_gx, valid, key

    @triton.jit
    def _na_dot_kernel(x_ptr, y_ptr, rpb_ptr, out_ptr, heads, H, W, C, DH, DW,
                       KH: tl.constexpr, KW: tl.constexpr, HAS_RPB: tl.constexpr, MASK_NEG_INF: tl.constexpr,
                       BLOCK_Q: tl.constexpr, BLOCK_C: tl.constexpr):
        bh, q_idx, q_ok, gy, py, lgy, sy, gx, px, lgx, sx = _position_block(H, W, DH, DW, KH, KW, BLOCK_Q)
        c = tl.arange(0, BLOCK_C)
        io_mask = q_ok[:, None] & (c < C)[None, :]
        base = bh * H * W * C
        xq = tl.load(x_ptr + base + q_idx[:, None] * C + c[None, :], mask=io_mask, other=0.0).to(tl.float32)
        out_row = out_ptr + bh * H * W * (KH * KW) + q_idx * (KH * KW)
        for j in range(KH * KW):
            key_gy, key_gx, valid, key = _neighbor(j, q_idx, gy, lgy, sy, gx, lgx, sx, W, DH, DW, KW)
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
        bh, q_idx, q_ok, gy, py, lgy, sy, gx, px, lgx, sx = _position_block(H, W, DH, DW, KH, KW, BLOCK_Q)
        c = tl.arange(0, BLOCK_C)
        io_mask = q_ok[:, None] & (c < C)[None, :]
        base = bh * H * W * C
        w_row = w_ptr + bh * H * W * (KH * KW) + q_idx * (KH * KW)
        acc = tl.zeros((BLOCK_Q, BLOCK_C), dtype=tl.float32)
        for j in range(KH * KW):
            key_gy, key_gx, valid, key = _neighbor(j, q_idx, gy, lgy, sy, gx, lgx, sx, W, DH, DW, KW)
            # masked slots weigh nothing, whatever they hold (-inf scores included)
            weight = tl.load(w_row + j, mask=q_ok & valid, other=0.0).to(tl.float32)
            yk = tl.load(y_ptr + base + key[:, None] * C + c[None, :], mask=io_mask, other=0.0).to(tl.float32)
            acc += weight[:, None] * yk
        tl.store(out_ptr + base + q_idx[:, None] * C + c[None, :], acc.to(out_ptr.dtype.element_ty), mask=io_mask)

    @triton.jit
    def _na_scatter_kernel(w_ptr, x_ptr, out_ptr, H, W, C, DH, DW,
                           KH: tl.constexpr, KW: tl.constexpr, BLOCK_Q: tl.constexpr, BLOCK_C: tl.constexpr):
        bh, m_idx, m_ok, gy, my, lgy, _sy, gx, mx, lgx, _sx = _position_block(H, W, DH, DW, KH, KW, BLOCK_Q)
        c = tl.arange(0, BLOCK_C)
        c_ok = (c < C)[None, :]
        base = bh * H * W * C
        w_base = w_ptr + bh * H * W * (KH * KW)
        acc = tl.zeros((BLOCK_Q, BLOCK_C), dtype=tl.float32)
        # a query sees key m only if their group coordinates differ by less than the kernel
        for dy in range(2 * KH - 1):
            py = my - (KH - 1) + dy
            qsy = window_start(py, lgy, KH)
            ky = my - qsy
            ok_y = (py >= 0) & (py < lgy) & (ky >= 0) & (ky < KH)
            for dx in range(2 * KW - 1):
                px = mx - (KW - 1) + dx
                qsx = window_start(px, lgx, KW)
                kx = mx - qsx
                ok = m_ok & ok_y & (px >= 0) & (px < lgx) & (kx >= 0) & (kx < KW)
                query = tl.where(ok, (py * DH + gy) * W + px * DW + gx, 0)
                weight = tl.load(w_base + query * (KH * KW) + ky * KW + kx, mask=ok, other=0.0).to(tl.float32)
                xr = tl.load(x_ptr + base + query[:, None] * C + c[None, :], mask=ok[:, None] & c_ok,
                             other=0.0).to(tl.float32)
                acc += weight[:, None] * xr
        tl.store(out_ptr + base + m_idx[:, None] * C + c[None, :], acc.to(out_ptr.dtype.element_ty),
                 mask=m_ok[:, None] & c_ok)


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


def _weighted_sum(jit_kernel, weights: Tensor, x: Tensor, kernel: Tuple[int, int], dilation: Tuple[int, int],
                  out_dtype: torch.dtype) -> Tensor:
    """A tensor shaped like ``x`` from one of the weighted-sum kernels: ``_na_gather_kernel`` (each
    query's sum over its window) or ``_na_scatter_kernel`` (each key's sum over the queries that see it)."""
    out = torch.empty(x.shape, device=x.device, dtype=out_dtype)
    _, _, height, width, dim = x.shape
    grid, block_c = _launch_args(x)
    jit_kernel[grid](weights, x, out, height, width, dim, dilation[0], dilation[1],
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
        dquery = _weighted_sum(_na_gather_kernel, dattn, key, kernel, dilation, query.dtype) \
            if ctx.needs_input_grad[0] else None
        dkey = _weighted_sum(_na_scatter_kernel, dattn, query, kernel, dilation, key.dtype) \
            if ctx.needs_input_grad[1] else None
        drpb = _rpb_grad(dattn, rpb, kernel, dilation) if rpb is not None and ctx.needs_input_grad[2] else None
        return dquery, dkey, drpb, None, None


class NA2DAVFn(torch.autograd.Function):
    """Triton neighborhood aggregation; see :func:`ops.neighborhood_attention.na2d_av_ref`."""

    @staticmethod
    def forward(ctx, attn: Tensor, value: Tensor, kernel: Tuple[int, int], dilation: Tuple[int, int]) -> Tensor:
        attn, value = attn.contiguous(), value.contiguous()
        ctx.save_for_backward(attn, value)
        ctx.window = kernel, dilation
        out_dtype = torch.promote_types(attn.dtype, value.dtype)
        return _weighted_sum(_na_gather_kernel, attn, value, kernel, dilation, out_dtype)

    @staticmethod
    def backward(ctx, dout: Tensor):
        attn, value = ctx.saved_tensors
        kernel, dilation = ctx.window
        dout = dout.contiguous()
        dattn = _dot(dout, value, None, kernel, dilation, attn.dtype, mask_neg_inf=False) \
            if ctx.needs_input_grad[0] else None
        dvalue = _weighted_sum(_na_scatter_kernel, attn, dout, kernel, dilation, value.dtype) \
            if ctx.needs_input_grad[1] else None
        return dattn, dvalue, None, None


def na2d_qk_triton(query: Tensor, key: Tensor, kernel_size: IntOrPair, dilation: IntOrPair = 1,
                   rpb: Optional[Tensor] = None) -> Tensor:
    """Triton twin of :func:`ops.neighborhood_attention.na2d_qk_ref` (same arguments and result)."""
    require_triton(query)
    kernel, dil = check_na2d_args(kernel_size, dilation, query=query, key=key, rpb=rpb)
    return NA2DQKFn.apply(query, key, rpb, kernel, dil)


def na2d_av_triton(attn: Tensor, value: Tensor, kernel_size: IntOrPair, dilation: IntOrPair = 1) -> Tensor:
    """Triton twin of :func:`ops.neighborhood_attention.na2d_av_ref` (same arguments and result)."""
    require_triton(value)
    kernel, dil = check_na2d_args(kernel_size, dilation, value=value, attn=attn)
    return NA2DAVFn.apply(attn, value, kernel, dil)


__all__ = ['na2d_qk_triton', 'na2d_av_triton', 'has_triton', 'triton_serves', 'require_triton', 'NA2DQKFn', 'NA2DAVFn']
