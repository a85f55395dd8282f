"""Reference 2-D neighborhood attention with natten 0.17's semantics, in pure PyTorch.

These functions are the ground truth for every faster backend: they run on any device,
differentiate through autograd and define the semantics, including the extension to maps
smaller than the window that natten itself rejects.

Semantics (per spatial axis of length ``L``, kernel ``k`` (odd), dilation ``d``):

* Positions are split into ``d`` dilation groups, ``g = i % d``; group ``g`` has
  ``L_g = ceil((L - g) / d)`` members, and position ``i`` has group coordinate ``i // d``.
* A query at group coordinate ``p`` attends to the ``k`` keys of its own group starting at
  ``clamp(p - k // 2, 0, max(L_g - k, 0))``: windows are shifted inward at the borders
  instead of being cut (natten's behaviour).
* If the group is shorter than the window (``L_g < k``, which natten forbids since it
  requires ``L >= k * d``), the slots past the group's end are masked: ``-inf`` scores from
  :func:`na2d_qk_ref`, ignored by :func:`na2d_av_ref`. With ``d == 1`` this makes an axis
  shorter than the window global.
* The relative position bias ``rpb`` of shape ``(heads, 2*kh - 1, 2*kw - 1)`` is read at
  ``(k - 1) + key_g - query_g`` per axis, in group coordinates.

Tensors are ``(B, heads, H, W, C)``; attention maps are ``(B, heads, H, W, kh * kw)`` with
the neighbor index running row-major over the ``kh x kw`` window.
"""
from functools import lru_cache
from typing import Callable, NamedTuple, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

IntOrPair = Union[int, Sequence[int]]
WindowArgs = Tuple[Tuple[int, int], Tuple[int, int]]  # (kernel, dilation) pairs


def normalize_window_args(kernel_size: IntOrPair, dilation: IntOrPair) -> WindowArgs:
    """Turns ``kernel_size`` and ``dilation`` into per-axis pairs and validates them.

    Raises:
        ValueError: for an even or non-positive kernel, or a dilation below 1.
    """
    def pair(value: IntOrPair, name: str) -> Tuple[int, int]:
        if isinstance(value, int):
            return value, value
        value = tuple(int(v) for v in value)
        if len(value) != 2:
            raise ValueError(f'{name} must be an int or a pair, got {value}')
        return value

    kernel, dil = pair(kernel_size, 'kernel_size'), pair(dilation, 'dilation')
    if any(k < 1 or k % 2 == 0 for k in kernel):
        raise ValueError(f'kernel_size must be odd and positive, got {kernel}')
    if any(d < 1 for d in dil):
        raise ValueError(f'dilation must be >= 1, got {dil}')
    return kernel, dil


def check_na2d_args(kernel_size: IntOrPair, dilation: IntOrPair, *, query: Optional[Tensor] = None,
                    key: Optional[Tensor] = None, value: Optional[Tensor] = None, rpb: Optional[Tensor] = None,
                    attn: Optional[Tensor] = None,
                    window_args: Callable[[IntOrPair, IntOrPair], WindowArgs] = normalize_window_args) -> WindowArgs:
    """Validates the arguments of a neighborhood-attention op (every backend runs this check);
    returns the window pairs.

    Pass the tensors the op takes: ``query, key`` (+ ``rpb``) for the scores, ``attn, value``
    for the aggregation, ``query, key, value`` (+ ``rpb``) for the attention.

    Args:
        kernel_size, dilation: int or ``(kh, kw)`` / ``(dh, dw)``.
        query, key, value: ``(B, heads, H, W, C)``, all of one shape; for the attention,
            ``query`` and ``key`` of one dtype.
        rpb: ``(heads, 2*kh - 1, 2*kw - 1)``.
        attn: ``(B, heads, H, W, kh*kw)`` for ``value``.
        window_args: turns ``kernel_size`` and ``dilation`` into pairs and validates them (the
            traceable ops accept symbolic dilations).

    Raises:
        ValueError: naming the argument that does not fit.
    """
    given = [(name, t) for name, t in (('query', query), ('key', key), ('value', value), ('attn', attn))
             if t is not None]
    for name, t in given:
        if t.dim() != 5:
            raise ValueError(f'{name} must be 5-D (B, heads, H, W, C), got shape {tuple(t.shape)}')
    (first_name, first), *others = [(name, t) for name, t in given if name != 'attn']
    for name, t in others:
        if t.shape != first.shape:
            raise ValueError(f'{first_name} and {name} shapes differ: {tuple(first.shape)} vs {tuple(t.shape)}')
    # the fused attention multiplies q and k as they are; the scores alone leave a mixed pair to
    # the matmul (and autocast)
    if value is not None and query is not None and key is not None and key.dtype != query.dtype:
        raise ValueError(f'query and key dtypes differ: {query.dtype} vs {key.dtype}')
    (kh, kw), dil = window_args(kernel_size, dilation)
    heads = first.shape[1]
    if rpb is not None and tuple(rpb.shape) != (heads, 2 * kh - 1, 2 * kw - 1):
        raise ValueError(f'rpb must be ({heads}, {2 * kh - 1}, {2 * kw - 1}), got {tuple(rpb.shape)}')
    if attn is not None:
        b, heads, height, width, _ = first.shape
        if tuple(attn.shape) != (b, heads, height, width, kh * kw):
            raise ValueError(f'attn must be {(b, heads, height, width, kh * kw)} for {first_name} '
                             f'{tuple(first.shape)} and kernel {(kh, kw)}, got {tuple(attn.shape)}')
    return (kh, kw), dil


# Query columns are processed in tiles of this width, which bounds the memory of the scores
# against a tile's key-column span to O(H * TILE * kh * span).
COLUMN_TILE = 64


class AxisNeighbors(NamedTuple):
    """Neighbors along one axis; tensors are ``(length, kernel)``."""
    key: Tensor  # index of each neighbor (a valid index even where masked)
    valid: Tensor  # False for slots past a short group's end
    bias: Tensor  # rpb index (kernel - 1) + key_g - query_g
    all_valid: bool  # known on the host, so masking costs no device sync
    tiles: Tuple[Tuple[int, int, int, int, Tensor], ...]  # (start, stop, key_lo, key_hi, key - key_lo)


def window_indices(length: int, kernel: int, dilation: int,
                   device: Optional[torch.device] = None) -> Tuple[Tensor, Tensor, Tensor]:
    """``(key, valid, bias)``, each ``(length, kernel)``: the fields of :class:`AxisNeighbors`.

    Tensor ops only, so ``length`` and ``dilation`` may be symbolic sizes under tracing."""
    pos = torch.arange(length, device=device)
    group = pos % dilation
    pos_g = pos // dilation
    group_len = (length - group + dilation - 1) // dilation
    start = torch.minimum((pos_g - kernel // 2).clamp(min=0), (group_len - kernel).clamp(min=0))
    key_g = start[:, None] + torch.arange(kernel, device=device)[None, :]
    valid = key_g < group_len[:, None]
    key = torch.where(valid, key_g * dilation + group[:, None], pos[:, None])
    bias = ((kernel - 1) + key_g - pos_g[:, None]).clamp(0, 2 * kernel - 2)
    return key, valid, bias


def _axis_neighbors_cpu(length: int, kernel: int, dilation: int) -> AxisNeighbors:
    key, valid, bias = window_indices(length, kernel, dilation)
    tiles = []
    for lo_q in range(0, length, COLUMN_TILE):
        hi_q = min(length, lo_q + COLUMN_TILE)
        keys = key[lo_q:hi_q]
        lo, hi = int(keys.min()), int(keys.max()) + 1
        tiles.append((lo_q, hi_q, lo, hi, keys - lo))
    return AxisNeighbors(key, valid, bias, bool(valid.all()), tuple(tiles))


@lru_cache(maxsize=512)
def axis_neighbors(length: int, kernel: int, dilation: int, device: torch.device) -> AxisNeighbors:
    """Neighbors of every position of an axis, cached per shape and device."""
    cpu = _axis_neighbors_cpu(length, kernel, dilation)
    tiles = tuple((a, b, lo, hi, t.to(device)) for a, b, lo, hi, t in cpu.tiles)
    return AxisNeighbors(cpu.key.to(device), cpu.valid.to(device), cpu.bias.to(device), cpu.all_valid, tiles)


def _window_rows(x: Tensor, rows: AxisNeighbors) -> Tensor:
    """``x: (B, n, H, W, C)`` -> ``(B, n, H, kh, W, C)``: the kh key rows of each query row."""
    b, heads, height, width, dim = x.shape
    return x.index_select(2, rows.key.flatten()).view(b, heads, height, rows.key.shape[1], width, dim)


def _window_mask(rows: AxisNeighbors, cols: AxisNeighbors) -> Tensor:
    return (rows.valid[:, None, :, None] & cols.valid[None, :, None, :]).flatten(-2)  # [H, W, kh*kw]


def na2d_qk_ref(query: Tensor, key: Tensor, kernel_size: IntOrPair, dilation: IntOrPair = 1,
                rpb: Optional[Tensor] = None) -> Tensor:
    """Neighborhood attention scores ``q . k`` (+ relative position bias).

    Args:
        query, key: ``(B, heads, H, W, C)``.
        kernel_size, dilation: int or ``(kh, kw)`` / ``(dh, dw)``.
        rpb: optional ``(heads, 2*kh - 1, 2*kw - 1)``.

    Returns:
        ``(B, heads, H, W, kh*kw)`` scores; ``-inf`` on masked slots.
    """
    (kh, kw), (dh, dw) = check_na2d_args(kernel_size, dilation, query=query, key=key, rpb=rpb)
    b, heads, height, width, dim = query.shape
    rows = axis_neighbors(height, kh, dh, query.device)
    cols = axis_neighbors(width, kw, dw, query.device)
    key_rows = _window_rows(key, rows)
    tiles = []
    for lo_q, hi_q, lo, hi, local in cols.tiles:
        # scores of the tile's queries against every column of its key span, then the kw
        # columns of each window: a dense matmul instead of gathering kh*kw copies of the keys
        keys = key_rows[..., lo:hi, :].reshape(b, heads, height, kh * (hi - lo), dim)
        scores = (query[:, :, :, lo_q:hi_q] @ keys.transpose(-1, -2)).view(b, heads, height, hi_q - lo_q, kh, hi - lo)
        tiles.append(scores.gather(-1, local[:, None, :].expand(b, heads, height, hi_q - lo_q, kh, kw)))
    attn = torch.cat(tiles, dim=3)  # [B, n, H, W, kh, kw]
    if rpb is not None:
        attn = attn + rpb[:, rows.bias[:, None, :, None], cols.bias[None, :, None, :]].to(attn.dtype)
    attn = attn.flatten(-2)
    if not (rows.all_valid and cols.all_valid):
        attn = attn.masked_fill(~_window_mask(rows, cols), float('-inf'))
    return attn


def na2d_av_ref(attn: Tensor, value: Tensor, kernel_size: IntOrPair, dilation: IntOrPair = 1) -> Tensor:
    """Aggregates ``value`` over each query's neighborhood with weights ``attn``.

    Args:
        attn: ``(B, heads, H, W, kh*kw)``; masked slots are ignored whatever they hold.
        value: ``(B, heads, H, W, C)``.

    Returns:
        ``(B, heads, H, W, C)`` in the promoted dtype of ``attn`` and ``value``.
    """
    (kh, kw), (dh, dw) = check_na2d_args(kernel_size, dilation, value=value, attn=attn)
    b, heads, height, width, dim = value.shape
    rows = axis_neighbors(height, kh, dh, value.device)
    cols = axis_neighbors(width, kw, dw, value.device)
    dtype = torch.promote_types(attn.dtype, value.dtype)
    weights = attn.to(dtype)
    if not (rows.all_valid and cols.all_valid):
        weights = weights.masked_fill(~_window_mask(rows, cols), 0)
    weights = weights.view(b, heads, height, width, kh, kw)
    value_rows = _window_rows(value.to(dtype), rows)
    tiles = []
    for lo_q, hi_q, lo, hi, local in cols.tiles:
        # spread the window weights over the tile's key span, then one dense matmul
        span = weights.new_zeros(b, heads, height, hi_q - lo_q, kh, hi - lo)
        span.scatter_add_(-1, local[:, None, :].expand(b, heads, height, hi_q - lo_q, kh, kw),
                          weights[:, :, :, lo_q:hi_q])
        values = value_rows[..., lo:hi, :].reshape(b, heads, height, kh * (hi - lo), dim)
        tiles.append(span.flatten(-2) @ values)
    return torch.cat(tiles, dim=3)


def na2d_ref(query: Tensor, key: Tensor, value: Tensor, kernel_size: IntOrPair, dilation: IntOrPair = 1,
             rpb: Optional[Tensor] = None) -> Tensor:
    """Neighborhood attention in one call: ``softmax(q . k + rpb) @ v`` over each window.

    The composition of :func:`na2d_qk_ref`, a softmax over the window and :func:`na2d_av_ref`;
    the query is expected pre-scaled. Fused kernels compute this without storing the maps.

    Args:
        query, key, value: ``(B, heads, H, W, C)``; ``query`` and ``key`` of one dtype.
        kernel_size, dilation: int or ``(kh, kw)`` / ``(dh, dw)``.
        rpb: optional ``(heads, 2*kh - 1, 2*kw - 1)``.

    Returns:
        ``(B, heads, H, W, C)`` in the promoted dtype of ``query`` and ``value``.
    """
    check_na2d_args(kernel_size, dilation, query=query, key=key, value=value, rpb=rpb)
    attn = na2d_qk_ref(query, key, kernel_size, dilation, rpb).softmax(dim=-1)
    return na2d_av_ref(attn, value, kernel_size, dilation)
