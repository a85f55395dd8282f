"""Neighborhood-attention and selective-scan ops of A2Mamba behind one dispatch point.

``na2d_qk``, ``na2d_av``, the fused ``na2d`` and ``selective_scan_states`` pick the fastest
available backend (see :mod:`ops.dispatch`); the ``*_ref`` functions are the pure-PyTorch
references that define their semantics. :func:`runs_kernel` tells a caller whether an op
would run a kernel on a tensor's device, e.g. to prefer the fused ``na2d`` there.
"""
import functools
import logging
from typing import Optional

import torch
from torch import Tensor

from . import traceable_ops
from .dispatch import BACKEND_ENV, REFERENCE, backends, register_backend, resolve, use_backend
from .dispatch import runs_kernel as _runs_kernel
from .neighborhood_attention import IntOrPair, na2d_av_ref, na2d_qk_ref, na2d_ref, normalize_window_args
from .neighborhood_attention_fused import na2d_triton
from .neighborhood_attention_triton import has_triton, na2d_av_triton, na2d_qk_triton
from .selective_scan import _SCAN_IMPORT_ERROR, has_cuda_scan, selective_scan_states_cuda, selective_scan_states_ref
from .traceable_ops import is_traceable, traceable

__all__ = [
    'na2d_qk', 'na2d_av', 'na2d', 'selective_scan_states', 'na2d_qk_ref', 'na2d_av_ref', 'na2d_ref',
    'selective_scan_states_ref', 'normalize_window_args', 'use_backend', 'backends', 'runs_kernel',
    'register_backend', 'BACKEND_ENV', 'na2d_qk_triton', 'na2d_av_triton', 'na2d_triton',
    'selective_scan_states_cuda', 'has_triton', 'has_cuda_scan', 'traceable', 'is_traceable',
]


def _opaque_to_compile(op):
    """torch.compile runs the op as one eager call (a graph break) and compiles the code
    around it: the kernels are hand-written already, and the dispatch (backend choice,
    fallback on failure) must run as Python."""
    return functools.wraps(op)(torch.compiler.disable(op, recursive=True))


def _any_device(_: Tensor) -> bool:
    return True


register_backend('na2d_qk', REFERENCE, na2d_qk_ref, _any_device)
register_backend('na2d_av', REFERENCE, na2d_av_ref, _any_device)
register_backend('na2d', REFERENCE, na2d_ref, _any_device)
register_backend('selective_scan_states', REFERENCE, selective_scan_states_ref, _any_device)


def _triton_serves(t: Tensor) -> bool:
    return t.is_cuda and has_triton()


def _scan_kernel_serves(t: Tensor) -> bool:
    return t.is_cuda and has_cuda_scan()


# Registered last = tried first.
register_backend('na2d_qk', 'triton', na2d_qk_triton, _triton_serves)
register_backend('na2d_av', 'triton', na2d_av_triton, _triton_serves)
register_backend('na2d', 'triton', na2d_triton, _triton_serves)
register_backend('selective_scan_states', 'cuda', selective_scan_states_cuda, _scan_kernel_serves)
if _SCAN_IMPORT_ERROR is not None and torch.cuda.is_available():
    logging.getLogger('a2mamba.ops').warning(
        'CUDA selective-scan extension not importable (%s): the scan runs the PyTorch reference; '
        'build it with `A2MAMBA_FORCE_CUDA=1 pip install --no-build-isolation -e .`', _SCAN_IMPORT_ERROR)


# The public ops check the traceable switch before anything else: the dispatching versions
# below are opaque to torch.compile, and torch.export must trace into the ops instead.
def na2d_qk(query: Tensor, key: Tensor, kernel_size: IntOrPair, dilation: IntOrPair = 1,
            rpb: Optional[Tensor] = None) -> Tensor:
    """Neighborhood attention scores, ``(B, heads, H, W, kh*kw)``; see :func:`na2d_qk_ref`."""
    if traceable_ops.is_traceable():
        return traceable_ops.na2d_qk(query, key, kernel_size, dilation, rpb)
    return _na2d_qk(query, key, kernel_size, dilation, rpb)


def na2d_av(attn: Tensor, value: Tensor, kernel_size: IntOrPair, dilation: IntOrPair = 1) -> Tensor:
    """Neighborhood aggregation of ``value`` by ``attn``; see :func:`na2d_av_ref`."""
    if traceable_ops.is_traceable():
        return traceable_ops.na2d_av(attn, value, kernel_size, dilation)
    return _na2d_av(attn, value, kernel_size, dilation)


def na2d(query: Tensor, key: Tensor, value: Tensor, kernel_size: IntOrPair, dilation: IntOrPair = 1,
         rpb: Optional[Tensor] = None) -> Tensor:
    """Fused neighborhood attention ``softmax(q . k + rpb) @ v``; see :func:`na2d_ref`."""
    if traceable_ops.is_traceable():
        return traceable_ops.na2d(query, key, value, kernel_size, dilation, rpb)
    return _na2d(query, key, value, kernel_size, dilation, rpb)


def selective_scan_states(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, delta_bias: Optional[Tensor] = None,
                          delta_softplus: bool = True) -> Tensor:
    """All hidden states ``(B, D, N, L)`` float32; see :func:`selective_scan_states_ref`."""
    if traceable_ops.is_traceable():
        return traceable_ops.selective_scan_states(u, delta, A, B, delta_bias, delta_softplus)
    return _selective_scan_states(u, delta, A, B, delta_bias, delta_softplus)


def runs_kernel(op: str, tensor: Tensor) -> bool:
    """Whether ``op`` on ``tensor`` would run a fast kernel (never inside :func:`traceable`)."""
    return not traceable_ops.is_traceable() and _runs_kernel(op, tensor)


@_opaque_to_compile
def _na2d_qk(query: Tensor, key: Tensor, kernel_size: IntOrPair, dilation: IntOrPair = 1,
             rpb: Optional[Tensor] = None) -> Tensor:
    return resolve('na2d_qk', query)(query, key, kernel_size, dilation, rpb)


@_opaque_to_compile
def _na2d_av(attn: Tensor, value: Tensor, kernel_size: IntOrPair, dilation: IntOrPair = 1) -> Tensor:
    return resolve('na2d_av', value)(attn, value, kernel_size, dilation)


@_opaque_to_compile
def _na2d(query: Tensor, key: Tensor, value: Tensor, kernel_size: IntOrPair, dilation: IntOrPair = 1,
          rpb: Optional[Tensor] = None) -> Tensor:
    return resolve('na2d', query)(query, key, value, kernel_size, dilation, rpb)


@_opaque_to_compile
def _selective_scan_states(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, delta_bias: Optional[Tensor] = None,
                           delta_softplus: bool = True) -> Tensor:
    return resolve('selective_scan_states', u)(u, delta, A, B, delta_bias, delta_softplus)
