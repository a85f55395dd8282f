"""Fused 2-D neighborhood attention in Triton: ``softmax(q . k + rpb) @ v`` per window,
flash-style, with the semantics of :func:`ops.neighborhood_attention.na2d_ref` (dilation
groups, windows shifted inward at the borders, slots past a short group's end masked).

The ``(B, heads, H, W, kh*kw)`` maps are never stored: the forward keeps one float32
log-sum-exp per query, and the backward recomputes the scores.

Tiling. A program owns a ``TH x TW`` tile of queries that are contiguous in the group
coordinates of one dilation group. Window starts grow by at most one per step, so the
union of the tile's windows is a halo of at most ``(TH + kh - 1) x (TW + kw - 1)`` keys of
the same group. The kernel walks the halo ``RS`` key rows at a time (``NC`` columns each,
powers of two), so every step is a pair of small matrix products, ``Q K^T`` and ``P V``, on
the tensor cores; a per-(query, key) mask keeps each query inside its own window, and the
bias is read at the (query, key) offset.

Layouts. Each tensor comes with batch, head, pixel and channel strides, so views (heads of
an NCHW map, halves of the heads) are read in place. Pixel strides are compile-time
constants: with a constant channel count per row the compiler proves 16-byte alignment and
vectorises the channel loads of channels-last tensors (runtime pixel strides made the
kernels 1.3-1.5x slower on an H100); channel strides stay runtime values (``H * W`` for
channels-first views, which changes with the image size), and Triton specialises the
common stride 1 by itself.

Backward, deterministic (no atomics):

* a query-centric pass (the forward's tiling) gives ``dq`` and per-program partial sums of
  ``d rpb`` (each step's ``dS`` gathered by bias column, then summed by bias row with a
  one-hot product), summed over programs afterwards;
* a key-centric pass gives ``dk`` and ``dv``: a program owns a tile of keys and walks the
  queries whose windows can hold them, an interval per axis (``_query_range``).
"""
from functools import lru_cache
from typing import NamedTuple, Optional, Tuple

import torch
from torch import Tensor

from .neighborhood_attention import IntOrPair, check_na2d_args
from .neighborhood_attention_triton import has_triton, require_triton

if has_triton():
    import triton
    import triton.language as tl

    from .neighborhood_attention_triton import window_start

# Queries per program: small tiles keep each query's halo (the work it costs) close to its window.
TILE_QUERIES = 16


class LaunchSettings(NamedTuple):
    """How the fused kernels walk a halo: rows per loop step (more independent work per step,
    more registers), the same for the query-centric backward when it also accumulates d rpb
    (its accumulator and one-hot operands need registers too), warps per program, and queries
    (or keys) per program (a power of two, at least 16: larger tiles read each halo key for more
    queries but score more padding)."""
    rows_per_step: int
    rows_per_step_rpb_grad: int
    warps: int
    tile_queries: int = TILE_QUERIES


def launch_settings(kernel: Tuple[int, int]) -> LaunchSettings:
    """The default settings per window size, from the kernel-time sweep in docs/BENCHMARKS.md
    (A2Mamba-T's calls at 224 px, batch 128, CUDA graph replays on an H200): 2 rows per step and
    2 warps everywhere; 32 queries per tile for k <= 9 (forward + backward of a 14x14 k = 7 call
    0.17 instead of 0.31 ms with 16 queries, 4 warps), 16 for k = 11 (whose 32-query tiles score
    too much padding: 1.24 instead of 1.20 ms). The ``launch`` argument of the entry points
    replaces them (benchmarks)."""
    return LaunchSettings(2, 1, 2, 32 if max(kernel) <= 9 else 16)


if has_triton():

    @triton.jit
    def _query_range(first_key, last_key, group_len, KERNEL: tl.constexpr):
        """The interval of queries whose windows contain a key of ``[first_key, last_key]``.

        A query ``p`` sees key ``m`` iff ``start(p) <= m <= start(p) + KERNEL - 1``; ``start`` is
        non-decreasing, and is clamped to 0 (resp. ``group_len - KERNEL``) near the borders, where
        more queries share a window.
        """
        lo = tl.where(first_key >= KERNEL, first_key - KERNEL // 2, 0)
        hi = tl.where(last_key >= tl.maximum(group_len - KERNEL, 0), group_len - 1, last_key + KERNEL // 2)
        return lo, hi

    @triton.jit
    def _tile_origin(tile_id, H, W, DH, DW, n_tx, tiles_per_group, TH: tl.constexpr, TW: tl.constexpr):
        """Dilation group, its lengths and the first group coordinates of program tile ``tile_id``."""
        group = tile_id // tiles_per_group
        tile = tile_id % tiles_per_group
        gy = group // DW
        gx = group % DW
        lgy = (H - gy + DH - 1) // DH
        lgx = (W - gx + DW - 1) // DW
        return gy, gx, lgy, lgx, (tile // n_tx) * TH, (tile % n_tx) * TW

    @triton.jit
    def _head_slice(ptr, bh, heads, stride_b, stride_n):
        """``ptr`` moved to the ``(batch, head)`` slice ``bh`` (64-bit; offsets inside it stay 32-bit)."""
        return ptr + (bh // heads) * stride_b + (bh % heads) * stride_n

    @triton.jit
    def _head_inputs(q_ptr, k_ptr, v_ptr, rpb_ptr, lse_ptr, bh, heads, H, W, q_sb, q_sn, k_sb, k_sn, v_sb, v_sn,
                     KH: tl.constexpr, KW: tl.constexpr):
        """``q``, ``k``, ``v`` and the log-sum-exp moved to the ``(batch, head)`` slice ``bh``, and the
        head's bias table."""
        return (_head_slice(q_ptr, bh, heads, q_sb, q_sn), _head_slice(k_ptr, bh, heads, k_sb, k_sn),
                _head_slice(v_ptr, bh, heads, v_sb, v_sn), rpb_ptr + (bh % heads) * (2 * KH - 1) * (2 * KW - 1),
                lse_ptr + bh * H * W)

    @triton.jit
    def _backward_inputs(q_ptr, k_ptr, v_ptr, rpb_ptr, dout_ptr, lse_ptr, delta_ptr, bh, heads, H, W,
                         q_sb, q_sn, k_sb, k_sn, v_sb, v_sn, g_sb, g_sn, KH: tl.constexpr, KW: tl.constexpr):
        """What both backward passes read, moved to the slice ``bh``: :func:`_head_inputs`, then
        ``d out`` and ``delta``."""
        q_ptr, k_ptr, v_ptr, rpb_head, lse_ptr = _head_inputs(q_ptr, k_ptr, v_ptr, rpb_ptr, lse_ptr, bh, heads, H, W,
                                                              q_sb, q_sn, k_sb, k_sn, v_sb, v_sn, KH, KW)
        return (q_ptr, k_ptr, v_ptr, rpb_head, _head_slice(dout_ptr, bh, heads, g_sb, g_sn), lse_ptr,
                delta_ptr + bh * H * W)

    @triton.jit
    def _mm(a, b, PREC: tl.constexpr):
        """``a @ b`` with float32 accumulation; ``PREC`` picks exact or TF32 products for float32 operands."""
        if a.dtype == tl.float32:
            out = tl.dot(a, b, input_precision=PREC)
        else:
            out = tl.dot(a, b)
        return out

    @triton.jit
    def _scores(qt, kt, rpb_head, qy, qx, ky, kx, window, KH: tl.constexpr, KW: tl.constexpr,
                HAS_RPB: tl.constexpr, PREC: tl.constexpr):
        """``log2(e) * (q . k + rpb)`` for a block of queries x keys, ``-inf`` outside ``window``.

        ``qy, qx, ky, kx`` broadcast to the block (group coordinates).
        """
        s = _mm(qt, tl.trans(kt), PREC)
        if HAS_RPB:
            bias = tl.load(rpb_head + (ky - qy + KH - 1) * (2 * KW - 1) + (kx - qx + KW - 1), mask=window, other=0.0)
            s += bias.to(tl.float32)
        return tl.where(window, s * 1.4426950408889634, float('-inf'))

    @triton.jit
    def _query_tile(tile_id, H, W, DH, DW, n_tx, tiles_per_group, TH: tl.constexpr, TW: tl.constexpr,
                    KH: tl.constexpr, KW: tl.constexpr):
        """The program's ``TH x TW`` queries (group coordinates ``py, px``), which of them exist,
        and where each one's window starts."""
        gy, gx, lgy, lgx, py0, px0 = _tile_origin(tile_id, H, W, DH, DW, n_tx, tiles_per_group, TH, TW)
        i = tl.arange(0, TH * TW)
        py = py0 + i // TW
        px = px0 + i % TW
        q_ok = (py < lgy) & (px < lgx)
        return gy, gx, lgy, lgx, py0, px0, py, px, q_ok, window_start(py, lgy, KH), window_start(px, lgx, KW)

    @triton.jit
    def _halo(py0, px0, lgy, lgx, sx, q_ok, TH: tl.constexpr, TW: tl.constexpr, KH: tl.constexpr,
              KW: tl.constexpr, NC: tl.constexpr, RS: tl.constexpr):
        """The union of a query tile's windows: rows ``ky0 .. ky0 + n_rows - 1``, columns ``kx``
        (``NC`` of them, repeated for the ``RS`` rows of a step, indexed by ``j``), the valid
        columns, and per (query, halo column) whether the column lies in the query's window."""
        ky0 = window_start(py0, lgy, KH)
        kx0 = window_start(px0, lgx, KW)
        n_rows = tl.minimum(TH + KH - 1, lgy - ky0)
        j = tl.arange(0, RS * NC)
        kx = kx0 + j % NC
        col_ok = (kx < lgx) & (j % NC < TW + KW - 1)
        in_cols = (kx[None, :] >= sx[:, None]) & (kx[None, :] < sx[:, None] + KW) & col_ok[None, :] & q_ok[:, None]
        return ky0, kx0, n_rows, j, kx, col_ok, in_cols

    @triton.jit
    def _halo_step(k_ptr, v_ptr, qt, rpb_head, r0, ky0, n_rows, j, kx, col_ok, in_cols, sy, py, px, c, c_ok, gy,
                   gx, W, DH, DW, k_sp: tl.constexpr, k_sc, v_sp: tl.constexpr, v_sc, NC: tl.constexpr,
                   KH: tl.constexpr, KW: tl.constexpr, HAS_RPB: tl.constexpr, PREC: tl.constexpr):
        """Keys and values of the halo rows ``r0 .. r0 + RS - 1`` and the tile's scores against them."""
        row = r0 + j // NC
        ky = ky0 + row
        key_ok = col_ok & (row < n_rows)
        k_lin = ((ky * DH + gy) * W + kx * DW + gx)[:, None]
        kt = tl.load(k_ptr + k_lin * k_sp + c[None, :] * k_sc, mask=key_ok[:, None] & c_ok[None, :], other=0.0)
        vt = tl.load(v_ptr + k_lin * v_sp + c[None, :] * v_sc, mask=key_ok[:, None] & c_ok[None, :], other=0.0)
        window = (ky[None, :] >= sy[:, None]) & (ky[None, :] < sy[:, None] + KH) & in_cols & key_ok[None, :]
        s = _scores(qt, kt, rpb_head, py[:, None], px[:, None], ky[None, :], kx[None, :], window, KH, KW, HAS_RPB,
                    PREC)
        return kt, vt, s

    @triton.jit
    def _na2d_fwd_kernel(q_ptr, k_ptr, v_ptr, rpb_ptr, out_ptr, lse_ptr, heads, H, W, C: tl.constexpr, DH, DW, n_tx,
                         tiles_per_group,
                         q_sb, q_sn, q_sp: tl.constexpr, q_sc, k_sb, k_sn, k_sp: tl.constexpr, k_sc,
                         v_sb, v_sn, v_sp: tl.constexpr, v_sc, o_sb, o_sn, o_sp: tl.constexpr, o_sc,
                         KH: tl.constexpr, KW: tl.constexpr, TH: tl.constexpr, TW: tl.constexpr,
                         NC: tl.constexpr, RS: tl.constexpr, BLOCK_C: tl.constexpr, HAS_RPB: tl.constexpr,
                         PREC: tl.constexpr):
        M: tl.constexpr = TH * TW
        bh = tl.program_id(1).to(tl.int64)
        gy, gx, lgy, lgx, py0, px0, py, px, q_ok, sy, sx = _query_tile(tl.program_id(0), H, W, DH, DW, n_tx,
                                                                       tiles_per_group, TH, TW, KH, KW)
        c = tl.arange(0, BLOCK_C)
        c_ok = c < C
        q_ptr, k_ptr, v_ptr, rpb_head, lse_ptr = _head_inputs(q_ptr, k_ptr, v_ptr, rpb_ptr, lse_ptr, bh, heads, H, W,
                                                              q_sb, q_sn, k_sb, k_sn, v_sb, v_sn, KH, KW)
        out_ptr = _head_slice(out_ptr, bh, heads, o_sb, o_sn)
        q_lin = (py * DH + gy) * W + px * DW + gx
        qt = tl.load(q_ptr + q_lin[:, None] * q_sp + c[None, :] * q_sc, mask=q_ok[:, None] & c_ok[None, :], other=0.0)

        # the halo, walked RS rows per step
        ky0, kx0, n_rows, j, kx, col_ok, in_cols = _halo(py0, px0, lgy, lgx, sx, q_ok, TH, TW, KH, KW, NC, RS)
        m_i = tl.full([M], float('-inf'), tl.float32)
        l_i = tl.zeros([M], tl.float32)
        acc = tl.zeros([M, BLOCK_C], tl.float32)
        for r0 in range(0, n_rows, RS):
            kt, vt, s = _halo_step(k_ptr, v_ptr, qt, rpb_head, r0, ky0, n_rows, j, kx, col_ok, in_cols, sy, py, px,
                                   c, c_ok, gy, gx, W, DH, DW, k_sp, k_sc, v_sp, v_sc, NC, KH, KW, HAS_RPB, PREC)
            m_new = tl.maximum(m_i, tl.max(s, 1))
            # rows with no key yet keep m = -inf; subtracting 0 keeps exp2 away from NaN
            m_safe = tl.where(m_new == float('-inf'), 0.0, m_new)
            alpha = tl.exp2(m_i - m_safe)
            p = tl.exp2(s - m_safe[:, None])
            l_i = l_i * alpha + tl.sum(p, 1)
            acc = acc * alpha[:, None] + _mm(p.to(vt.dtype), vt, PREC)
            m_i = m_new
        l_i = tl.where(l_i == 0.0, 1.0, l_i)  # only queries outside the group, which are not stored
        tl.store(out_ptr + q_lin[:, None] * o_sp + c[None, :] * o_sc, (acc / l_i[:, None]).to(out_ptr.dtype.element_ty),
                 mask=q_ok[:, None] & c_ok[None, :])
        tl.store(lse_ptr + q_lin, m_i + tl.log2(l_i), mask=q_ok)

    @triton.jit
    def _na2d_bwd_query_kernel(q_ptr, k_ptr, v_ptr, rpb_ptr, dout_ptr, lse_ptr, delta_ptr, dq_ptr, drpb_ptr,
                               heads, H, W, C: tl.constexpr, DH, DW, n_tx, tiles_per_group,
                               q_sb, q_sn, q_sp: tl.constexpr, q_sc, k_sb, k_sn, k_sp: tl.constexpr, k_sc,
                               v_sb, v_sn, v_sp: tl.constexpr, v_sc, g_sb, g_sn, g_sp: tl.constexpr, g_sc,
                               dq_sb, dq_sn, dq_sp: tl.constexpr, dq_sc, out_ptr, o_sb, o_sn, o_sp: tl.constexpr, o_sc,
                               KH: tl.constexpr, KW: tl.constexpr, TH: tl.constexpr, TW: tl.constexpr,
                               NC: tl.constexpr, RS: tl.constexpr, BLOCK_C: tl.constexpr, HAS_RPB: tl.constexpr,
                               RPB_GRAD: tl.constexpr, NA: tl.constexpr, NB: tl.constexpr, PREC: tl.constexpr):
        """``dq = sum_keys dS k`` and this tile's partial ``d rpb``, with ``dS = P (dP - delta)``;
        also writes ``delta = rowsum(dO * O)`` of its queries, which the key-centric pass (launched
        after it) reads: every query belongs to one program."""
        M: tl.constexpr = TH * TW
        tile_id = tl.program_id(0)
        bh = tl.program_id(1).to(tl.int64)
        gy, gx, lgy, lgx, py0, px0, py, px, q_ok, sy, sx = _query_tile(tile_id, H, W, DH, DW, n_tx, tiles_per_group,
                                                                       TH, TW, KH, KW)
        c = tl.arange(0, BLOCK_C)
        c_ok = c < C
        q_ptr, k_ptr, v_ptr, rpb_head, dout_ptr, lse_ptr, delta_ptr = _backward_inputs(
            q_ptr, k_ptr, v_ptr, rpb_ptr, dout_ptr, lse_ptr, delta_ptr, bh, heads, H, W,
            q_sb, q_sn, k_sb, k_sn, v_sb, v_sn, g_sb, g_sn, KH, KW)
        dq_ptr = _head_slice(dq_ptr, bh, heads, dq_sb, dq_sn)
        q_lin = (py * DH + gy) * W + px * DW + gx
        q_off = q_lin[:, None] * q_sp + c[None, :] * q_sc
        io_mask = q_ok[:, None] & c_ok[None, :]
        qt = tl.load(q_ptr + q_off, mask=io_mask, other=0.0)
        grad_out = tl.load(dout_ptr + q_lin[:, None] * g_sp + c[None, :] * g_sc, mask=io_mask, other=0.0)
        lse = tl.load(lse_ptr + q_lin, mask=q_ok, other=0.0)
        out = tl.load(_head_slice(out_ptr, bh, heads, o_sb, o_sn) + q_lin[:, None] * o_sp + c[None, :] * o_sc,
                      mask=io_mask, other=0.0)
        delta = tl.sum(grad_out.to(tl.float32) * out.to(tl.float32), 1)
        tl.store(delta_ptr + q_lin, delta, mask=q_ok)

        ky0, kx0, n_rows, j, kx, col_ok, in_cols = _halo(py0, px0, lgy, lgx, sx, q_ok, TH, TW, KH, KW, NC, RS)
        # d rpb: the product's rows taken as (query, halo row of the step) pairs have one bias row
        # each, and gathering each row's halo columns by bias column (kx - px + KW - 1) makes the
        # sum over all pairs one product with a one-hot matrix per step
        u = tl.arange(0, M * RS)
        u_query = u // RS
        bias_col = tl.arange(0, NB)
        halo_col = bias_col[None, :] - (kx0 - (px0 + u_query % TW) + KW - 1)[:, None]  # [M * RS, NB]
        halo_col_ok = (halo_col >= 0) & (halo_col < NC)
        halo_col = tl.minimum(tl.maximum(halo_col, 0), NC - 1)
        bias_row0 = ky0 + u % RS - (py0 + u_query // TW) + KH - 1
        rpb_acc = tl.zeros([NA, NB], tl.float32)

        dq = tl.zeros([M, BLOCK_C], tl.float32)
        for r0 in range(0, n_rows, RS):
            kt, vt, s = _halo_step(k_ptr, v_ptr, qt, rpb_head, r0, ky0, n_rows, j, kx, col_ok, in_cols, sy, py, px,
                                   c, c_ok, gy, gx, W, DH, DW, k_sp, k_sc, v_sp, v_sc, NC, KH, KW, HAS_RPB, PREC)
            p = tl.exp2(s - lse[:, None])
            dp = _mm(grad_out, tl.trans(vt.to(grad_out.dtype)), PREC)
            ds = p * (dp - delta[:, None])
            dq += _mm(ds.to(kt.dtype), kt, PREC)
            if RPB_GRAD:
                by_bias = tl.gather(tl.reshape(ds, (M * RS, NC)), halo_col, axis=1)
                by_bias = tl.where(halo_col_ok, by_bias, 0.0)
                one_hot = (tl.arange(0, NA)[None, :] == (bias_row0 + r0)[:, None]).to(tl.float32)  # [M * RS, NA]
                rpb_acc += _mm(tl.trans(one_hot), by_bias, PREC)
        tl.store(dq_ptr + q_lin[:, None] * dq_sp + c[None, :] * dq_sc, dq.to(dq_ptr.dtype.element_ty), mask=io_mask)
        if RPB_GRAD:
            a = tl.arange(0, NA)[:, None]
            b = bias_col[None, :]
            n_tiles = tl.num_programs(0).to(tl.int64)
            part_ptr = drpb_ptr + (bh * n_tiles + tile_id) * (2 * KH - 1) * (2 * KW - 1)
            tl.store(part_ptr + a * (2 * KW - 1) + b, rpb_acc, mask=(a < 2 * KH - 1) & (b < 2 * KW - 1))

    @triton.jit
    def _na2d_bwd_key_kernel(q_ptr, k_ptr, v_ptr, rpb_ptr, dout_ptr, lse_ptr, delta_ptr, dk_ptr, dv_ptr,
                             heads, H, W, C: tl.constexpr, DH, DW, n_tx, tiles_per_group,
                             q_sb, q_sn, q_sp: tl.constexpr, q_sc, k_sb, k_sn, k_sp: tl.constexpr, k_sc,
                             v_sb, v_sn, v_sp: tl.constexpr, v_sc, g_sb, g_sn, g_sp: tl.constexpr, g_sc,
                             dk_sb, dk_sn, dk_sp: tl.constexpr, dk_sc, dv_sb, dv_sn, dv_sp: tl.constexpr, dv_sc,
                             KH: tl.constexpr, KW: tl.constexpr, TH: tl.constexpr, TW: tl.constexpr,
                             NC: tl.constexpr, RS: tl.constexpr, BLOCK_C: tl.constexpr, HAS_RPB: tl.constexpr,
                             PREC: tl.constexpr):
        """``dv = sum_queries P^T dO`` and ``dk = sum_queries dS^T q`` for a tile of keys."""
        M: tl.constexpr = TH * TW
        bh = tl.program_id(1).to(tl.int64)
        gy, gx, lgy, lgx, my0, mx0 = _tile_origin(tl.program_id(0), H, W, DH, DW, n_tx, tiles_per_group, TH, TW)
        i = tl.arange(0, M)
        my = my0 + i // TW
        mx = mx0 + i % TW
        k_ok = (my < lgy) & (mx < lgx)
        c = tl.arange(0, BLOCK_C)
        c_ok = c < C
        q_ptr, k_ptr, v_ptr, rpb_head, dout_ptr, lse_ptr, delta_ptr = _backward_inputs(
            q_ptr, k_ptr, v_ptr, rpb_ptr, dout_ptr, lse_ptr, delta_ptr, bh, heads, H, W,
            q_sb, q_sn, k_sb, k_sn, v_sb, v_sn, g_sb, g_sn, KH, KW)
        dk_ptr = _head_slice(dk_ptr, bh, heads, dk_sb, dk_sn)
        dv_ptr = _head_slice(dv_ptr, bh, heads, dv_sb, dv_sn)
        k_lin = ((my * DH + gy) * W + mx * DW + gx)[:, None]
        k_off = k_lin * k_sp + c[None, :] * k_sc
        v_off = k_lin * v_sp + c[None, :] * v_sc
        io_mask = k_ok[:, None] & c_ok[None, :]
        kt = tl.load(k_ptr + k_off, mask=io_mask, other=0.0)
        vt = tl.load(v_ptr + v_off, mask=io_mask, other=0.0)

        qy_lo, qy_hi = _query_range(my0, tl.minimum(my0 + TH - 1, lgy - 1), lgy, KH)
        qx_lo, qx_hi = _query_range(mx0, tl.minimum(mx0 + TW - 1, lgx - 1), lgx, KW)
        # near a border more queries than NC can see a key column: walk them in chunks of NC
        n_chunks = tl.maximum(tl.cdiv(qx_hi - qx_lo + 1, NC), 0)
        n_steps = tl.maximum(tl.cdiv(qy_hi - qy_lo + 1, RS), 0) * n_chunks
        j = tl.arange(0, RS * NC)
        dk = tl.zeros([M, BLOCK_C], tl.float32)
        dv = tl.zeros([M, BLOCK_C], tl.float32)
        for step in range(0, n_steps):
            qy = qy_lo + (step // n_chunks) * RS + j // NC
            qx = qx_lo + (step % n_chunks) * NC + j % NC
            q_ok = (qx <= qx_hi) & (qy <= qy_hi)
            q_lin = (qy * DH + gy) * W + qx * DW + gx
            q_mask = q_ok[:, None] & c_ok[None, :]
            qt = tl.load(q_ptr + q_lin[:, None] * q_sp + c[None, :] * q_sc, mask=q_mask, other=0.0)
            grad_out = tl.load(dout_ptr + q_lin[:, None] * g_sp + c[None, :] * g_sc, mask=q_mask, other=0.0)
            lse = tl.load(lse_ptr + q_lin, mask=q_ok, other=0.0)
            delta = tl.load(delta_ptr + q_lin, mask=q_ok, other=0.0)
            sy = window_start(qy, lgy, KH)
            sx = window_start(qx, lgx, KW)
            window = k_ok[:, None] & q_ok[None, :] & (my[:, None] >= sy[None, :]) & (my[:, None] < sy[None, :] + KH) \
                & (mx[:, None] >= sx[None, :]) & (mx[:, None] < sx[None, :] + KW)
            # keys x queries: the transposed scores
            st = _scores(kt, qt, rpb_head, qy[None, :], qx[None, :], my[:, None], mx[:, None], window, KH, KW,
                         HAS_RPB, PREC)
            pt = tl.exp2(st - lse[None, :])
            dpt = _mm(vt.to(grad_out.dtype), tl.trans(grad_out), PREC)
            dst = pt * (dpt - delta[None, :])
            dv += _mm(pt.to(grad_out.dtype), grad_out, PREC)
            dk += _mm(dst.to(qt.dtype), qt, PREC)
        tl.store(dk_ptr + k_lin * dk_sp + c[None, :] * dk_sc, dk.to(dk_ptr.dtype.element_ty), mask=io_mask)
        tl.store(dv_ptr + k_lin * dv_sp + c[None, :] * dv_sc, dv.to(dv_ptr.dtype.element_ty), mask=io_mask)


class TileConfig(NamedTuple):
    """Launch geometry of the fused kernels for one shape."""
    th: int  # query (or key) rows per tile, group coordinates
    tw: int  # columns per tile
    nc: int  # halo columns per step (power of two)
    rs: int  # halo rows per step (power of two)
    n_tx: int  # tiles per group row
    tiles_per_group: int
    groups: int
    rs_rpb: int  # halo rows per step of the query-centric backward when it computes d rpb
    warps: int


def _next_pow2(n: int) -> int:
    return 1 << max(0, n - 1).bit_length()


def tile_config(height: int, width: int, kernel: Tuple[int, int], dilation: Tuple[int, int],
                launch: Optional[LaunchSettings] = None) -> TileConfig:
    """Picks the tile shape that minimises the padded (query, halo key) pairs over the map.

    Every query of a tile is scored against the whole halo, padded to ``NC`` columns and to a
    multiple of ``RS`` rows, so a wide tile wastes work on a narrow window and vice versa
    (e.g. 4x4 tiles for k = 11, 2x8 for k = 7). ``launch`` defaults to :func:`launch_settings`.
    """
    if launch is None:
        launch = launch_settings(kernel)
    return _best_tiles(height, width, tuple(kernel), tuple(dilation), launch)


# Every forward and backward call asks again for the same few shapes: a cached answer keeps the
# search off the host's per-call work. The launch settings are part of the key.
@lru_cache(maxsize=1024)
def _best_tiles(height: int, width: int, kernel: Tuple[int, int], dilation: Tuple[int, int],
                launch: LaunchSettings) -> TileConfig:
    (kh, kw), (dh, dw) = kernel, dilation
    rows, cols = -(-height // dh), -(-width // dw)  # the longest group per axis
    best = None
    tw = 1
    tile = launch.tile_queries
    if tile < 16 or tile & (tile - 1):
        raise ValueError(f'tile_queries must be a power of two of at least 16, got {tile}')
    while tw <= tile:
        th = tile // tw
        nc = _dot_dim(min(tw + kw - 1, cols))
        halo_rows = min(th + kh - 1, rows)
        rs = min(launch.rows_per_step, _next_pow2(halo_rows))
        n_ty, n_tx = -(-rows // th), -(-cols // tw)
        cost = n_ty * n_tx * tile * -(-halo_rows // rs) * rs * nc
        if best is None or cost < best[0]:
            best = cost, TileConfig(th, tw, nc, rs, n_tx, n_ty * n_tx, dh * dw,
                                    min(rs, launch.rows_per_step_rpb_grad), launch.warps)
        tw *= 2
    return best[1]


def dot_precision(tf32: bool, *tensors: Tensor) -> str:
    """Exact float32 products unless ``tf32`` (torch allows TF32, or autocast is on: the inputs are
    low-precision by choice); 16-bit inputs make the float32 products TF32 too."""
    if tf32 or all(t.dtype in (torch.float16, torch.bfloat16) for t in tensors):
        return 'tf32'
    return 'ieee'


def _dot_dim(n: int) -> int:
    """The block size covering ``n``: a power of two, and at least 16 (tl.dot's minimum)."""
    return max(16, _next_pow2(n))


def _is_pixel_major(t: Tensor) -> bool:
    height, width = t.shape[2:4]
    return height == 1 or width == 1 or t.stride(2) == width * t.stride(3)


def _pixel_major(t: Tensor) -> Tensor:
    """``t`` if its pixels are addressed as ``y * W + x`` times one stride (what the kernels
    take: a channels-last or channels-first view, of any batch and head strides), else a copy."""
    return t if _is_pixel_major(t) else t.contiguous()


def _strides(t: Tensor) -> Tuple[int, int, int, int]:
    """Batch, head, pixel and channel strides of a :func:`_pixel_major` tensor."""
    return t.stride(0), t.stride(1), t.stride(3) if t.shape[3] > 1 else t.stride(2), t.stride(4)


def _layout_strides(like: Tensor) -> Tuple[int, int, int, int, int]:
    """Strides of the ``(B, heads, H, W, C)`` layout the kernels write for an input ``like``
    (:func:`empty_in_layout`): channels-first storage for a channels-first view, else contiguous."""
    _, heads, height, width, dim = like.shape
    if _is_pixel_major(like) and dim > 1:
        _, _, pixel, channel = _strides(like)
        if channel > pixel:
            return heads * dim * height * width, dim * height * width, width, 1, height * width
    return heads * height * width * dim, height * width * dim, width * dim, dim, 1


def has_layout_of(t: Tensor, like: Tensor) -> bool:
    """Whether ``t`` (of ``like``'s shape) is laid out as :func:`empty_in_layout` lays out a tensor
    for ``like`` (strides of size-1 dimensions do not matter)."""
    return t.shape == like.shape and all(n == 1 or got == want
                                         for n, got, want in zip(t.shape, t.stride(), _layout_strides(like)))


def empty_in_layout(like: Tensor, dtype: Optional[torch.dtype] = None) -> Tensor:
    """An uninitialised ``(B, heads, H, W, C)`` tensor in the layout the kernels write for an
    input ``like``: channels-first storage for a channels-first view (pixel stride 1, e.g. heads
    of an NCHW map), so that its consumer's rearrange back to NCHW is free; channels-last
    otherwise (also for inputs the kernels copy first). Depends on shapes and strides only, so
    it also serves as the fake (meta) layout of the ``torch.library`` ops."""
    return torch.empty_strided(like.shape, _layout_strides(like), device=like.device, dtype=dtype or like.dtype)


def na2d_fused_forward(query: Tensor, key: Tensor, value: Tensor, rpb: Optional[Tensor], kernel: Tuple[int, int],
                       dilation: Tuple[int, int], tf32: bool,
                       launch: Optional[LaunchSettings] = None) -> Tuple[Tensor, Tensor]:
    """``(out, lse)``: the attention output in the layout of :func:`empty_in_layout` (value) and the
    float32 base-2 log-sum-exp of each query's scores, ``(B, heads, H, W)``, for the backward.
    ``launch``: see :func:`tile_config`."""
    query, key, value = _pixel_major(query), _pixel_major(key), _pixel_major(value)
    rpb_c = None if rpb is None else rpb.contiguous()
    b, heads, height, width, dim = query.shape
    cfg = tile_config(height, width, kernel, dilation, launch)
    out = empty_in_layout(value, torch.promote_types(query.dtype, value.dtype))
    lse = torch.empty(b, heads, height, width, device=query.device, dtype=torch.float32)
    grid = (cfg.groups * cfg.tiles_per_group, b * heads)
    _na2d_fwd_kernel[grid](query, key, value, rpb_c if rpb_c is not None else query, out, lse, heads, height,
                           width, dim, dilation[0], dilation[1], cfg.n_tx, cfg.tiles_per_group,
                           *_strides(query), *_strides(key), *_strides(value), *_strides(out),
                           KH=kernel[0], KW=kernel[1], TH=cfg.th, TW=cfg.tw, NC=cfg.nc, RS=cfg.rs,
                           BLOCK_C=_dot_dim(dim), HAS_RPB=rpb_c is not None,
                           PREC=dot_precision(tf32, query, value), num_warps=cfg.warps)
    return out, lse


def na2d_fused_backward(dout: Tensor, query: Tensor, key: Tensor, value: Tensor, rpb: Optional[Tensor], out: Tensor,
                        lse: Tensor, kernel: Tuple[int, int], dilation: Tuple[int, int], tf32: bool,
                        needs_grad: Tuple[bool, bool, bool, bool] = (True, True, True, True),
                        launch: Optional[LaunchSettings] = None,
                        ) -> Tuple[Optional[Tensor], Optional[Tensor], Optional[Tensor], Optional[Tensor]]:
    """``(dq, dk, dv, d rpb)``, each in its input's layout (:func:`empty_in_layout`); ``None`` where
    ``needs_grad`` says the gradient is not wanted (or there is no ``rpb``). ``launch``: see
    :func:`tile_config`."""
    query, key, value = _pixel_major(query), _pixel_major(key), _pixel_major(value)
    rpb = None if rpb is None else rpb.contiguous()
    b, heads, height, width, dim = query.shape
    cfg = tile_config(height, width, kernel, dilation, launch)
    precision = dot_precision(tf32, query, value)
    dout, out = _pixel_major(dout), _pixel_major(out)
    grid = (cfg.groups * cfg.tiles_per_group, b * heads)
    rpb_arg = rpb if rpb is not None else query
    common = dict(KH=kernel[0], KW=kernel[1], TH=cfg.th, TW=cfg.tw, NC=cfg.nc, RS=cfg.rs, BLOCK_C=_dot_dim(dim),
                  HAS_RPB=rpb is not None, PREC=precision, num_warps=cfg.warps)
    shape = (heads, height, width, dim, dilation[0], dilation[1], cfg.n_tx, cfg.tiles_per_group,
             *_strides(query), *_strides(key), *_strides(value), *_strides(dout))
    rpb_grad = rpb is not None and needs_grad[3]
    dq = drpb = None
    # [B, heads, H, W]: rowsum(dO * O) = rowsum(P * dP), written by the query-centric pass
    delta = torch.empty(b, heads, height, width, device=query.device, dtype=torch.float32)
    if needs_grad[0] or rpb_grad:
        dq = empty_in_layout(query)
        bias_entries = (2 * kernel[0] - 1) * (2 * kernel[1] - 1)
        parts = torch.empty(b, heads, grid[0], bias_entries if rpb_grad else 0, device=query.device,
                            dtype=torch.float32)
        query_common = dict(common, RS=cfg.rs_rpb) if rpb_grad else common
        _na2d_bwd_query_kernel[grid](query, key, value, rpb_arg, dout, lse, delta, dq, parts, *shape,
                                     *_strides(dq), out, *_strides(out), RPB_GRAD=rpb_grad,
                                     NA=_dot_dim(2 * kernel[0] - 1), NB=_dot_dim(2 * kernel[1] - 1), **query_common)
        if rpb_grad:
            drpb = parts.sum((0, 2)).view(rpb.shape).to(rpb.dtype)
    else:
        torch.sum(dout.float() * out.float(), -1, out=delta)
    dk = dv = None
    if needs_grad[1] or needs_grad[2]:
        dk, dv = empty_in_layout(key), empty_in_layout(value)
        _na2d_bwd_key_kernel[grid](query, key, value, rpb_arg, dout, lse, delta, dk, dv, *shape,
                                   *_strides(dk), *_strides(dv), **common)
    return (dq if needs_grad[0] else None, dk if needs_grad[1] else None, dv if needs_grad[2] else None, drpb)


class NA2DFn(torch.autograd.Function):
    """Fused neighborhood attention; see :func:`ops.neighborhood_attention.na2d_ref`.

    Reads its inputs in place (views of a qkv projection or of the scan's states need no
    copy) and writes the output, and each gradient, in the channel order of the value (resp.
    of its input). (The model reaches these kernels through ``ops.na2d``, i.e. :mod:`ops.library`: the
    ``a2mamba::na2d`` op when compiled, its backend-generic Function in eager mode; this Function
    serves direct calls.) The backward launches with the
    forward's ``launch`` settings.
    """

    @staticmethod
    def forward(ctx, query: Tensor, key: Tensor, value: Tensor, rpb: Optional[Tensor], kernel: Tuple[int, int],
                dilation: Tuple[int, int], launch: Optional[LaunchSettings] = None) -> Tensor:
        tf32 = torch.backends.cuda.matmul.allow_tf32 or torch.is_autocast_enabled('cuda')
        out, lse = na2d_fused_forward(query, key, value, rpb, kernel, dilation, tf32, launch)
        ctx.save_for_backward(query, key, value, rpb, out, lse)
        ctx.window = kernel, dilation, tf32, launch
        return out

    @staticmethod
    def backward(ctx, dout: Tensor):
        query, key, value, rpb, out, lse = ctx.saved_tensors
        kernel, dilation, tf32, launch = ctx.window
        grads = na2d_fused_backward(dout, query, key, value, rpb, out, lse, kernel, dilation, tf32,
                                    tuple(ctx.needs_input_grad[:4]), launch)
        return (*grads, None, None, None)


def fused_serves(query: Tensor) -> bool:
    """Grid limits of the fused kernels (``batch * heads`` is a grid axis)."""
    return query.dim() < 2 or query.shape[0] * query.shape[1] <= 65535


def na2d_triton(query: Tensor, key: Tensor, value: Tensor, kernel_size: IntOrPair, dilation: IntOrPair = 1,
                rpb: Optional[Tensor] = None, launch: Optional[LaunchSettings] = None) -> Tensor:
    """Triton twin of :func:`ops.neighborhood_attention.na2d_ref` (same arguments and result);
    ``launch`` replaces the kernels' default :func:`launch_settings` (benchmarks)."""
    require_triton(query)
    kernel, dil = check_na2d_args(kernel_size, dilation, query=query, key=key, value=value, rpb=rpb)
    if not fused_serves(query):
        raise ValueError(f'batch * heads must be at most 65535 (a grid axis), got {query.shape[0] * query.shape[1]}')
    return NA2DFn.apply(query, key, value, rpb, kernel, dil, launch)


__all__ = ['na2d_triton', 'NA2DFn', 'na2d_fused_forward', 'na2d_fused_backward', 'empty_in_layout', 'has_layout_of',
           'tile_config', 'TileConfig', 'LaunchSettings', 'launch_settings']
