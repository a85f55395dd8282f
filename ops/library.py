"""The ops as ``torch.library`` custom ops, so that ``torch.compile`` and ``torch.export`` see them.

``a2mamba::na2d`` (fused neighborhood attention) and ``a2mamba::selective_scan_states`` each have
a fake (meta) implementation, which gives the compiler the output shapes, dtypes and strides
without running anything, and a registered autograd formula whose backward is another custom op
(``a2mamba::na2d_backward``, ``a2mamba::selective_scan_states_backward``). The compiler treats
them as single nodes of one graph: no graph break, and with CUDA graphs no host work per call.

The backend runs inside the op (:mod:`ops.dispatch`, chosen per call on the real tensors):

* a :class:`~ops.dispatch.Kernel` backend runs its own forward and backward;
* a differentiable backend (the PyTorch references) runs its forward without autograd, and its
  backward recomputes the forward under autograd and differentiates it.

In eager mode a kernel runs through :func:`na2d_eager` / :func:`selective_scan_states_eager`
instead: plain autograd Functions around the same kernel forward and backward, without the custom
ops' layers (the dispatcher, torch.library's autograd wrapper and its Dynamo guard cost several
times the kernels' own launches in host time, which an eager step at a small batch is bound by).

Contracts shared by every backend (the fake implementations state them): the attention output
and each of its input gradients come back in the layout of
:func:`ops.neighborhood_attention_fused.empty_in_layout`, and the op also returns the float32
log-sum-exp of each query's scores (base 2, ``(B, heads, H, W)``), which the fused backward reads;
the scan returns contiguous float32 states (float64 for float64 inputs) and contiguous gradients.
"""
import contextlib
from typing import ContextManager, List, Optional, Sequence, Tuple

import torch
from torch import Tensor
from torch._subclasses.fake_tensor import is_fake

from . import dispatch
from .neighborhood_attention import na2d_av_ref, na2d_qk_ref
from .neighborhood_attention_fused import empty_in_layout, has_layout_of

_LOG2E = 1.4426950408889634


def _empty(shape: Sequence[int], like: Tensor, dtype: Optional[torch.dtype] = None) -> Tensor:
    return torch.empty(shape, device=like.device, dtype=dtype or like.dtype)


def _into_layout(t: Tensor, layout_of: Tensor, dtype: Optional[torch.dtype] = None) -> Tensor:
    """``t`` in the layout of :func:`empty_in_layout` for ``layout_of``: ``t`` itself where it is
    (the kernels write their results so), else a copy."""
    dtype = dtype or t.dtype
    if t.dtype == dtype and has_layout_of(t, layout_of):
        return t
    out = empty_in_layout(layout_of, dtype)
    out.copy_(t)
    return out


def _recomputed_grads(fn, inputs: Sequence[Optional[Tensor]],
                      grads: Sequence[Optional[Tensor]]) -> List[Optional[Tensor]]:
    """Gradients of ``fn(*inputs)`` (one output or a tuple) w.r.t. the floating inputs, by
    ``torch.func.vjp`` of a recomputed forward: the backward of every differentiable (non-kernel)
    backend. (Inside an op's implementation autograd does not record; functorch's transform does.)"""
    wrt = [i for i, t in enumerate(inputs) if t is not None and t.is_floating_point()]

    def forward(*diff):
        args = list(inputs)
        for i, t in zip(wrt, diff):
            args[i] = t
        outputs = fn(*args)
        return outputs if isinstance(outputs, tuple) else (outputs,)

    outputs, vjp = torch.func.vjp(forward, *[inputs[i] for i in wrt])
    cotangents = tuple(g if g is not None else torch.zeros_like(o) for o, g in zip(outputs, grads))
    found = dict(zip(wrt, vjp(cotangents)))
    return [found.get(i) for i in range(len(inputs))]


def _forward_backend(op: str, t: Tensor) -> str:
    """The backend that just ran ``op``'s forward on ``t``, for its backward: autograd runs the
    backward of CUDA tensors on threads of its own, which this thread's :func:`~ops.dispatch.use_backend`
    does not reach, and a kernel's backward needs its own forward (the log-sum-exp). Empty while
    the compiler traces (fake tensors): a compiled backward chooses at run time."""
    return '' if is_fake(t) else dispatch.resolve(op, t).name


def _forcing(op: str, name: str) -> ContextManager:
    """Forces backend ``name`` of ``op`` inside the block; an empty name leaves the choice automatic."""
    return dispatch.use_backend(name, op=op) if name else contextlib.nullcontext()


# ------------------------------------------------------------------ neighborhood attention

def _na2d_reference_forward(query: Tensor, key: Tensor, value: Tensor, rpb: Optional[Tensor],
                            kernel: Tuple[int, int], dilation: Tuple[int, int]) -> Tuple[Tensor, Tensor]:
    scores = na2d_qk_ref(query, key, kernel, dilation, rpb)
    lse = scores.float().logsumexp(-1) * _LOG2E
    return na2d_av_ref(scores.softmax(dim=-1), value, kernel, dilation), lse


@torch.library.custom_op('a2mamba::na2d', mutates_args=())
def na2d_op(query: Tensor, key: Tensor, value: Tensor, rpb: Optional[Tensor], kernel_size: List[int],
            dilation: List[int], tf32: bool) -> Tuple[Tensor, Tensor]:
    """``(out, lse)`` of ``softmax(q . k + rpb) @ v`` over each window (see :func:`ops.na2d_ref`)."""
    kernel, dil = tuple(kernel_size), tuple(dilation)
    out_dtype = torch.promote_types(query.dtype, value.dtype)

    def run(backend: dispatch.Backend) -> Tuple[Tensor, Tensor]:
        if backend.is_kernel:
            return backend.fn.forward(query, key, value, rpb, kernel, dil, tf32)
        if backend.name == dispatch.REFERENCE:
            out, lse = _na2d_reference_forward(query, key, value, rpb, kernel, dil)
        else:
            out = backend.fn(query, key, value, kernel, dil, rpb)
            lse = _empty(query.shape[:4], query, torch.float32).zero_()
        return _into_layout(out, value, out_dtype), lse

    return dispatch.call('na2d', query, run)


def na2d_fake(query: Tensor, key: Tensor, value: Tensor, rpb: Optional[Tensor], kernel_size: Sequence[int],
              dilation: Sequence[int], tf32: bool) -> Tuple[Tensor, Tensor]:
    """Uninitialised ``(out, lse)`` of :func:`na2d_op`'s shapes, dtypes and strides: its fake
    implementation (and a stand-in kernel for tools that count launches)."""
    return (empty_in_layout(value, torch.promote_types(query.dtype, value.dtype)),
            _empty(query.shape[:4], query, torch.float32))


na2d_op.register_fake(na2d_fake)


@torch.library.custom_op('a2mamba::na2d_backward', mutates_args=())
def na2d_backward_op(grad_out: Tensor, query: Tensor, key: Tensor, value: Tensor, rpb: Optional[Tensor], out: Tensor,
                     lse: Tensor, kernel_size: List[int], dilation: List[int],
                     tf32: bool, backend: str) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(dq, dk, dv, d rpb)`` of :func:`na2d_op` (``d rpb`` is empty without ``rpb``), by the
    forward's ``backend`` (empty: the one that serves here)."""
    kernel, dil = tuple(kernel_size), tuple(dilation)

    def run(backend: dispatch.Backend) -> List[Optional[Tensor]]:
        if backend.is_kernel:
            return list(backend.fn.backward(grad_out, query, key, value, rpb, out, lse, kernel, dil, tf32))
        forward = (lambda q, k, v, b: _na2d_reference_forward(q, k, v, b, kernel, dil)[0]) \
            if backend.name == dispatch.REFERENCE else (lambda q, k, v, b: backend.fn(q, k, v, kernel, dil, b))
        return _recomputed_grads(forward, (query, key, value, rpb), (grad_out,))

    with _forcing('na2d', backend):
        dq, dk, dv, drpb = dispatch.call('na2d', query, run)
    dq, dk, dv = (_into_layout(g if g is not None else torch.zeros_like(x), x, x.dtype)
                  for g, x in ((dq, query), (dk, key), (dv, value)))
    if rpb is None:
        drpb = _empty((0,), query, torch.float32)
    elif drpb is None:
        drpb = torch.zeros_like(rpb, memory_format=torch.contiguous_format)
    else:
        drpb = drpb.to(rpb.dtype).contiguous()
    return dq, dk, dv, drpb


@na2d_backward_op.register_fake
def _(grad_out, query, key, value, rpb, out, lse, kernel_size, dilation, tf32, backend):
    drpb = _empty((0,), query, torch.float32) if rpb is None else torch.empty_like(
        rpb, memory_format=torch.contiguous_format)
    return empty_in_layout(query), empty_in_layout(key), empty_in_layout(value), drpb


def _na2d_setup_context(ctx, inputs, output) -> None:
    query, key, value, rpb, kernel_size, dilation, tf32 = inputs
    out, lse = output
    ctx.save_for_backward(query, key, value, rpb, out, lse)
    ctx.window = kernel_size, dilation, tf32
    ctx.backend = _forward_backend('na2d', query)
    ctx.mark_non_differentiable(lse)
    # the log-sum-exp has no gradient: no zero-filled stand-in for it on every backward
    ctx.set_materialize_grads(False)


def _na2d_backward(ctx, grad_out: Optional[Tensor], _grad_lse: Optional[Tensor]):
    query, key, value, rpb, out, lse = ctx.saved_tensors
    if grad_out is None:
        return None, None, None, None, None, None, None
    kernel_size, dilation, tf32 = ctx.window
    dq, dk, dv, drpb = na2d_backward_op(grad_out, query, key, value, rpb, out, lse, kernel_size, dilation, tf32,
                                        ctx.backend)
    return dq, dk, dv, (drpb if rpb is not None else None), None, None, None


na2d_op.register_autograd(_na2d_backward, setup_context=_na2d_setup_context)


class _EagerNA2D(torch.autograd.Function):
    """:func:`na2d_op` with a kernel, for eager calls (see the module's docstring)."""

    @staticmethod
    def forward(ctx, backend: dispatch.Backend, query: Tensor, key: Tensor, value: Tensor, rpb: Optional[Tensor],
                kernel: Tuple[int, int], dilation: Tuple[int, int], tf32: bool) -> Tensor:
        out, lse = backend.fn.forward(query, key, value, rpb, kernel, dilation, tf32)
        ctx.save_for_backward(query, key, value, rpb, out, lse)
        ctx.backend, ctx.window = backend, (kernel, dilation, tf32)
        return out

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        query, key, value, rpb, out, lse = ctx.saved_tensors
        kernel, dilation, tf32 = ctx.window
        dq, dk, dv, drpb = ctx.backend.fn.backward(grad_out, query, key, value, rpb, out, lse, kernel, dilation, tf32)
        return None, dq, dk, dv, (drpb if rpb is not None else None), None, None, None


def na2d_eager(query: Tensor, key: Tensor, value: Tensor, rpb: Optional[Tensor], kernel: Tuple[int, int],
               dilation: Tuple[int, int], tf32: bool) -> Tensor:
    """The attention output of :func:`na2d_op` (differentiable) for an eager call: the backend of
    ``query`` runs directly, a kernel with its forward and backward in an autograd Function (the
    backward on the forward's kernel, in whatever thread autograd runs it)."""
    def run(backend: dispatch.Backend) -> Tensor:
        if backend.is_kernel:
            return _EagerNA2D.apply(backend, query, key, value, rpb, kernel, dilation, tf32)
        return backend.fn(query, key, value, kernel, dilation, rpb)

    return dispatch.call('na2d', query, run)


# ------------------------------------------------------------------ selective scan

def _states_dtype(*tensors: Optional[Tensor]) -> torch.dtype:
    return torch.float64 if any(t is not None and t.dtype == torch.float64 for t in tensors) else torch.float32


@torch.library.custom_op('a2mamba::selective_scan_states', mutates_args=())
def selective_scan_states_op(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, delta_bias: Optional[Tensor],
                             delta_softplus: bool) -> Tensor:
    """Every hidden state ``(B, D, N, L)`` (see :func:`ops.selective_scan_states_ref`)."""
    def run(backend: dispatch.Backend) -> Tensor:
        if backend.is_kernel:
            return backend.fn.forward(u, delta, A, B, delta_bias, delta_softplus)
        return backend.fn(u, delta, A, B, delta_bias, delta_softplus)

    states = dispatch.call('selective_scan_states', u, run)
    return states.to(_states_dtype(u, delta, A, B, delta_bias)).contiguous()


def selective_scan_states_fake(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, delta_bias: Optional[Tensor],
                               delta_softplus: bool) -> Tensor:
    """Uninitialised states of :func:`selective_scan_states_op`'s shape and dtype: its fake
    implementation (and a stand-in kernel for tools that count launches)."""
    return _empty((u.shape[0], u.shape[1], A.shape[1], u.shape[2]), u, _states_dtype(u, delta, A, B, delta_bias))


selective_scan_states_op.register_fake(selective_scan_states_fake)


@torch.library.custom_op('a2mamba::selective_scan_states_backward', mutates_args=())
def selective_scan_states_backward_op(grad_states: Tensor, u: Tensor, delta: Tensor, A: Tensor, B: Tensor,
                                      delta_bias: Optional[Tensor], delta_softplus: bool,
                                      states: Tensor, backend: str) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """``(du, d delta, dA, dB, d delta_bias)`` of :func:`selective_scan_states_op` (the last is
    empty without a bias), by the forward's ``backend`` (empty: the one that serves here)."""
    def run(backend: dispatch.Backend) -> List[Optional[Tensor]]:
        if backend.is_kernel:
            return list(backend.fn.backward(grad_states, u, delta, A, B, delta_bias, delta_softplus, states))
        return _recomputed_grads(lambda *xs: backend.fn(*xs, delta_softplus), (u, delta, A, B, delta_bias),
                                 (grad_states,))

    with _forcing('selective_scan_states', backend):
        grads = dispatch.call('selective_scan_states', u, run)
    inputs = (u, delta, A, B, delta_bias)
    result = []
    for g, x in zip(grads, inputs):
        if x is None:
            result.append(_empty((0,), u, torch.float32))
        else:
            result.append((g if g is not None else torch.zeros_like(x)).to(x.dtype).contiguous())
    return tuple(result)


@selective_scan_states_backward_op.register_fake
def _(grad_states, u, delta, A, B, delta_bias, delta_softplus, states, backend):
    bias = _empty((0,), u, torch.float32) if delta_bias is None else torch.empty_like(
        delta_bias, memory_format=torch.contiguous_format)
    return tuple(torch.empty_like(t, memory_format=torch.contiguous_format) for t in (u, delta, A, B)) + (bias,)


def _scan_setup_context(ctx, inputs, output) -> None:
    u, delta, A, B, delta_bias, delta_softplus = inputs
    ctx.save_for_backward(u, delta, A, B, delta_bias, output)
    ctx.delta_softplus = delta_softplus
    ctx.backend = _forward_backend('selective_scan_states', u)


def _scan_backward(ctx, grad_states: Tensor):
    u, delta, A, B, delta_bias, states = ctx.saved_tensors
    du, ddelta, dA, dB, dbias = selective_scan_states_backward_op(grad_states, u, delta, A, B, delta_bias,
                                                                  ctx.delta_softplus, states, ctx.backend)
    return du, ddelta, dA, dB, (dbias if delta_bias is not None else None), None


selective_scan_states_op.register_autograd(_scan_backward, setup_context=_scan_setup_context)


class _EagerScan(torch.autograd.Function):
    """:func:`selective_scan_states_op` with a kernel, for eager calls (see the module's docstring)."""

    @staticmethod
    def forward(ctx, backend: dispatch.Backend, u: Tensor, delta: Tensor, A: Tensor, B: Tensor,
                delta_bias: Optional[Tensor], delta_softplus: bool) -> Tensor:
        states = backend.fn.forward(u, delta, A, B, delta_bias, delta_softplus)
        states = states.to(_states_dtype(u, delta, A, B, delta_bias)).contiguous()
        ctx.save_for_backward(u, delta, A, B, delta_bias, states)
        ctx.backend, ctx.delta_softplus = backend, delta_softplus
        return states

    @staticmethod
    def backward(ctx, grad_states: Tensor):
        u, delta, A, B, delta_bias, states = ctx.saved_tensors
        grads = ctx.backend.fn.backward(grad_states, u, delta, A, B, delta_bias, ctx.delta_softplus, states)
        grads = [None if g is None or x is None else g.to(x.dtype) for g, x in zip(grads, (u, delta, A, B, delta_bias))]
        return (None, *grads, None)


def selective_scan_states_eager(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, delta_bias: Optional[Tensor],
                                delta_softplus: bool) -> Tensor:
    """The states of :func:`selective_scan_states_op` (differentiable) for an eager call: the
    backend of ``u`` runs directly, a kernel in an autograd Function."""
    def run(backend: dispatch.Backend) -> Tensor:
        if backend.is_kernel:
            return _EagerScan.apply(backend, u, delta, A, B, delta_bias, delta_softplus)
        return backend.fn(u, delta, A, B, delta_bias, delta_softplus)

    return dispatch.call('selective_scan_states', u, run)
