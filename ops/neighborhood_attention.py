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
from typing import NamedTuple, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

IntOrPair = Union[int, Sequence[int]]


def normalize_window_args(kernel_size: IntOrPair, dilation: IntOrPair) -> Tuple[Tuple[int, int], Tuple[int, int]]:
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


def _axis_neighbors(length: int, kernel: int, dilation: int) -> Tuple[Tensor, Tensor, Tensor]:
    """Neighbors along one axis.

    Returns:
        key: ``(length, kernel)`` index of each neighbor (a valid index even where masked),
        valid: ``(length, kernel)`` bool, False for slots past a short group's end,
        bias: ``(length, kernel)`` rpb index ``(kernel - 1) + key_g - query_g``.
    """
    pos = torch.arange(length)
    group = pos % dilation
    pos_g = pos // dilation
    group_len = (length - group + dilation - 1) // dilation
    start = torch.minimum((pos_g - kernel // 2).clamp(min=0), (group_len - kernel).clamp(min=0))
    key_g = start[:, None] + torch.arange(kernel)[None, :]
    valid = key_g < group_len[:, None]
    key = torch.where(valid, key_g * dilation + group[:, None], pos[:, None])
    bias = ((kernel - 1) + key_g - pos_g[:, None]).clamp(0, 2 * kernel - 2)
    return key, valid, bias


class NeighborTable(NamedTuple):
    """Flat neighbors of every query of an ``H x W`` map; tensors are ``(H*W, kh*kw)``."""
    index: Tensor
    valid: Tensor
    bias_h: Tensor
    bias_w: Tensor
    all_valid: bool  # known on the host, so masking costs no device sync


@lru_cache(maxsize=256)
def _neighbors_cpu(height: int, width: int, kernel: Tuple[int, int], dilation: Tuple[int, int]) -> NeighborTable:
    key_h, valid_h, bias_h = _axis_neighbors(height, kernel[0], dilation[0])
    key_w, valid_w, bias_w = _axis_neighbors(width, kernel[1], dilation[1])
    # [H, kh] x [W, kw] -> [H, W, kh, kw] -> [H*W, kh*kw]
    index = key_h[:, None, :, None] * width + key_w[None, :, None, :]
    valid = valid_h[:, None, :, None] & valid_w[None, :, None, :]
    bias_h = bias_h[:, None, :, None].expand(height, width, kernel[0], kernel[1])
    bias_w = bias_w[None, :, None, :].expand(height, width, kernel[0], kernel[1])
    n = kernel[0] * kernel[1]
    return NeighborTable(index.reshape(height * width, n), valid.reshape(height * width, n),
                         bias_h.reshape(height * width, n), bias_w.reshape(height * width, n),
                         bool(valid.all()))


@lru_cache(maxsize=256)
def neighbor_table(height: int, width: int, kernel: Tuple[int, int], dilation: Tuple[int, int],
                   device: torch.device) -> NeighborTable:
    """Flat neighbor indices of a ``height x width`` map, cached per shape and device."""
    table = _neighbors_cpu(height, width, kernel, dilation)
    return NeighborTable(*(t.to(device) for t in table[:4]), table.all_valid)


def _check_5d(name: str, t: Tensor) -> None:
    if t.dim() != 5:
        raise ValueError(f'{name} must be 5-D (B, heads, H, W, C), got shape {tuple(t.shape)}')


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
    _check_5d('query', query)
    if key.shape != query.shape:
        raise ValueError(f'query and key shapes differ: {tuple(query.shape)} vs {tuple(key.shape)}')
    kernel, dil = normalize_window_args(kernel_size, dilation)
    b, heads, height, width, dim = query.shape
    if rpb is not None and tuple(rpb.shape) != (heads, 2 * kernel[0] - 1, 2 * kernel[1] - 1):
        raise ValueError(f'rpb must be ({heads}, {2 * kernel[0] - 1}, {2 * kernel[1] - 1}), '
                         f'got {tuple(rpb.shape)}')
    table = neighbor_table(height, width, kernel, dil, query.device)
    keys = key.reshape(b, heads, height * width, dim)[:, :, table.index]  # [B, n, HW, K, C]
    q = query.reshape(b, heads, height * width, 1, dim)
    attn = (q @ keys.transpose(-1, -2)).squeeze(-2)  # [B, n, HW, K]
    if rpb is not None:
        attn = attn + rpb[:, table.bias_h, table.bias_w].to(attn.dtype)
    if not table.all_valid:
        attn = attn.masked_fill(~table.valid, float('-inf'))
    return attn.reshape(b, heads, height, width, -1)


def na2d_av_ref(attn: Tensor, value: Tensor, kernel_size: IntOrPair, dilation: IntOrPair = 1) -> Tensor:
    """Aggregates ``value`` over each query's neighborhood with weights ``attn``.

    Args:
        attn: ``(B, heads, H, W, kh*kw)``; masked slots are ignored whatever they hold.
        value: ``(B, heads, H, W, C)``.

    Returns:
        ``(B, heads, H, W, C)`` in the promoted dtype of ``attn`` and ``value``.
    """
    _check_5d('attn', attn)
    _check_5d('value', value)
    kernel, dil = normalize_window_args(kernel_size, dilation)
    b, heads, height, width, dim = value.shape
    n = kernel[0] * kernel[1]
    if tuple(attn.shape) != (b, heads, height, width, n):
        raise ValueError(f'attn must be {(b, heads, height, width, n)} for value {tuple(value.shape)} '
                         f'and kernel {kernel}, got {tuple(attn.shape)}')
    table = neighbor_table(height, width, kernel, dil, value.device)
    dtype = torch.promote_types(attn.dtype, value.dtype)
    weights = attn.reshape(b, heads, height * width, 1, n).to(dtype)
    if not table.all_valid:
        weights = weights.masked_fill(~table.valid[:, None, :], 0)
    values = value.to(dtype).reshape(b, heads, height * width, dim)[:, :, table.index]  # [B, n, HW, K, C]
    out = (weights @ values).squeeze(-2)
    return out.reshape(b, heads, height, width, dim)
