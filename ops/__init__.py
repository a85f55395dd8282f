"""Neighborhood-attention and selective-scan ops of A2Mamba, each behind one dispatch point.

Public ops: :func:`na2d` (fused ``softmax(q . k + rpb) @ v`` per window), :func:`na2d_qk` /
:func:`na2d_av` (the maps, and applying a map), :func:`selective_scan_states`, and
:class:`Neighborhood`, the attention of one window that MASS applies to several value tensors.
The ``*_ref`` functions are the pure-PyTorch references that define the semantics.

Which implementation runs is decided here, never by the caller (:mod:`ops.dispatch`: priority
lists, :func:`use_backend` to force one per thread). ``na2d`` and ``selective_scan_states`` are
``torch.library`` custom ops (:mod:`ops.library`): ``torch.compile(fullgraph=True)`` and
``torch.export`` trace models that use them without a graph break. In eager mode a
differentiable backend (the reference on a CPU) is called directly, so autograd differentiates
it without recomputing anything. Inside :func:`traceable` (ONNX export) every op runs
:mod:`ops.traceable_ops` instead: plain tensor ops that trace with symbolic image sizes.
"""
import logging
from typing import Optional, Tuple

import torch
from torch import Tensor

from . import dispatch, library, traceable_ops
from .dispatch import (
    BACKEND_ENV,
    REFERENCE,
    Kernel,
    KernelUnavailable,
    backends,
    register_backend,
    unregister_backend,
    use_backend,
)
from .neighborhood_attention import (
    IntOrPair,
    check_na2d_args,
    na2d_av_ref,
    na2d_qk_ref,
    na2d_ref,
    normalize_window_args,
)
from .neighborhood_attention_fused import fused_serves, na2d_fused_backward, na2d_fused_forward, na2d_triton
from .neighborhood_attention_triton import has_triton, na2d_av_triton, na2d_qk_triton, triton_serves
from .selective_scan import (
    _SCAN_IMPORT_ERROR,
    _check_scan_args,
    has_cuda_scan,
    scan_cuda_backward,
    scan_cuda_forward,
    selective_scan_states_cuda,
    selective_scan_states_ref,
)
from .traceable_ops import is_traceable, traceable

__all__ = [
    # the ops, dispatched
    'na2d', 'na2d_qk', 'na2d_av', 'selective_scan_states', 'Neighborhood', 'normalize_window_args',
    # their references, and the kernels called directly
    'na2d_ref', 'na2d_qk_ref', 'na2d_av_ref', 'selective_scan_states_ref',
    'na2d_triton', 'na2d_qk_triton', 'na2d_av_triton', 'selective_scan_states_cuda',
    # the dispatch controls
    'use_backend', 'backends', 'register_backend', 'unregister_backend', 'Kernel', 'KernelUnavailable',
    'BACKEND_ENV', 'REFERENCE',
    'has_triton', 'has_cuda_scan', 'traceable', 'is_traceable',
]


def _any_device(_: Tensor) -> bool:
    return True


def _fused_triton_serves(t: Tensor) -> bool:
    return triton_serves(t) and fused_serves(t)


def _scan_kernel_serves(t: Tensor) -> bool:
    return t.is_cuda and t.dtype != torch.float64 and has_cuda_scan()


# Priority lists, most preferred first.
for _op, _backends in {
    'na2d': [('triton', Kernel(na2d_fused_forward, na2d_fused_backward), _fused_triton_serves),
             (REFERENCE, na2d_ref, _any_device)],
    'na2d_qk': [('triton', na2d_qk_triton, triton_serves), (REFERENCE, na2d_qk_ref, _any_device)],
    'na2d_av': [('triton', na2d_av_triton, triton_serves), (REFERENCE, na2d_av_ref, _any_device)],
    'selective_scan_states': [('cuda', Kernel(scan_cuda_forward, scan_cuda_backward), _scan_kernel_serves),
                              (REFERENCE, selective_scan_states_ref, _any_device)],
}.items():
    for _name, _fn, _available in _backends:
        register_backend(_op, _name, _fn, _available, first=False)

if _SCAN_IMPORT_ERROR is not None and torch.cuda.is_available():
    logging.getLogger('a2mamba.ops').warning(
        'CUDA selective-scan extension not importable (%s): the scan runs the PyTorch reference (slow); '
        'build it with `A2MAMBA_FORCE_CUDA=1 pip install --no-build-isolation -e .`', _SCAN_IMPORT_ERROR)


@torch.compiler.assume_constant_result
def _tf32_allowed() -> bool:
    # Read once per compilation (like the rest of torch's matmul settings under torch.compile).
    return torch.backends.cuda.matmul.allow_tf32


def _eager_reference(op: str, t: Tensor) -> bool:
    """Whether an eager call of ``op`` on ``t`` runs a differentiable backend (the reference),
    which autograd differentiates as it runs; ``False`` under torch.compile / export, which go
    through the custom ops."""
    return not torch.compiler.is_compiling() and not dispatch.resolve(op, t).is_kernel


def na2d(query: Tensor, key: Tensor, value: Tensor, kernel_size: IntOrPair, dilation: IntOrPair = 1,
         rpb: Optional[Tensor] = None) -> Tensor:
    """Fused neighborhood attention ``softmax(q . k + rpb) @ v``; see :func:`na2d_ref`.

    The ``(B, heads, H, W, kh*kw)`` maps are never stored where a kernel serves. The result is
    channels-first for channels-first values (see :func:`ops.neighborhood_attention_fused.empty_in_layout`).
    """
    if is_traceable():
        return traceable_ops.na2d(query, key, value, kernel_size, dilation, rpb)
    kernel, dil = check_na2d_args(kernel_size, dilation, query=query, key=key, value=value, rpb=rpb)
    return _na2d_checked(query, key, value, kernel, dil, rpb)


def _na2d_checked(query: Tensor, key: Tensor, value: Tensor, kernel: Tuple[int, int], dilation: Tuple[int, int],
                  rpb: Optional[Tensor]) -> Tensor:
    tf32 = _tf32_allowed() or torch.is_autocast_enabled('cuda')
    if torch.compiler.is_compiling():
        return library.na2d_op(query, key, value, rpb, list(kernel), list(dilation), tf32)[0]
    return library.na2d_eager(query, key, value, rpb, kernel, dilation, tf32)


def na2d_qk(query: Tensor, key: Tensor, kernel_size: IntOrPair, dilation: IntOrPair = 1,
            rpb: Optional[Tensor] = None) -> Tensor:
    """Neighborhood attention scores, ``(B, heads, H, W, kh*kw)``; see :func:`na2d_qk_ref`.

    For attention maps (tools, the eager reference path); one eager call under torch.compile."""
    if is_traceable():
        return traceable_ops.na2d_qk(query, key, kernel_size, dilation, rpb)
    return _dispatched_na2d_qk(query, key, kernel_size, dilation, rpb)


def na2d_av(attn: Tensor, value: Tensor, kernel_size: IntOrPair, dilation: IntOrPair = 1) -> Tensor:
    """Neighborhood aggregation of ``value`` by ``attn``; see :func:`na2d_av_ref`."""
    if is_traceable():
        return traceable_ops.na2d_av(attn, value, kernel_size, dilation)
    return _dispatched_na2d_av(attn, value, kernel_size, dilation)


@torch.compiler.disable
def _dispatched_na2d_qk(query: Tensor, key: Tensor, kernel_size: IntOrPair, dilation: IntOrPair,
                        rpb: Optional[Tensor]) -> Tensor:
    return dispatch.call('na2d_qk', query, lambda backend: backend.fn(query, key, kernel_size, dilation, rpb))


@torch.compiler.disable
def _dispatched_na2d_av(attn: Tensor, value: Tensor, kernel_size: IntOrPair, dilation: IntOrPair) -> Tensor:
    return dispatch.call('na2d_av', value, lambda backend: backend.fn(attn, value, kernel_size, dilation))


def selective_scan_states(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, delta_bias: Optional[Tensor] = None,
                          delta_softplus: bool = True) -> Tensor:
    """All hidden states ``(B, D, N, L)``, float32 (float64 for float64 inputs); see
    :func:`selective_scan_states_ref`."""
    if is_traceable():
        return traceable_ops.selective_scan_states(u, delta, A, B, delta_bias, delta_softplus)
    _check_scan_args(u, delta, A, B, delta_bias)
    if torch.compiler.is_compiling():
        return library.selective_scan_states_op(u, delta, A, B, delta_bias, delta_softplus)
    return library.selective_scan_states_eager(u, delta, A, B, delta_bias, delta_softplus)


class Neighborhood:
    """The neighborhood attention of one window (``q``, ``k``, window, dilation, bias), as an
    operator on values ``(B, heads, H, W, C)``: MASS applies each scale's attention to its values
    and again to A2SSM's hidden states.

    Where a kernel serves, and always under torch.compile, each application is one fused call
    that recomputes the scores, so the maps never exist in memory; in eager mode without a kernel
    (the reference on a CPU) the softmaxed map is computed once and applied with :func:`na2d_av`.
    Both give the same function.
    """

    def __init__(self, query: Tensor, key: Tensor, kernel_size: IntOrPair, dilation: IntOrPair = 1,
                 rpb: Optional[Tensor] = None):
        if is_traceable():  # the dilation may be a symbolic size there
            self.kernel, self.dilation = kernel_size, dilation
        else:
            self.kernel, self.dilation = check_na2d_args(kernel_size, dilation, query=query, key=key, value=query,
                                                         rpb=rpb)
        self.query, self.key, self.rpb = query, key, rpb
        self._maps: Optional[Tensor] = None

    def maps(self) -> Tensor:
        """The softmaxed attention maps ``(B, heads, H, W, kh*kw)`` (neighbors row-major)."""
        if self._maps is None:
            self._maps = na2d_qk(self.query, self.key, self.kernel, self.dilation, self.rpb).softmax(dim=-1)
        return self._maps

    def __call__(self, value: Tensor) -> Tensor:
        # an exported graph, like the eager reference path, computes each map once
        if is_traceable() or _eager_reference('na2d', self.query):
            return na2d_av(self.maps(), value, self.kernel, self.dilation)
        if value.shape != self.query.shape:
            raise ValueError(f'values must have the shape of the queries {tuple(self.query.shape)}, '
                             f'got {tuple(value.shape)}')
        # the window was checked once, when the neighborhood was built, and no backend serves directly
        return _na2d_checked(self.query, self.key, value, self.kernel, self.dilation, self.rpb)
