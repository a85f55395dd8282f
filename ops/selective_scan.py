"""Reference selective scan that returns every hidden state, in pure PyTorch.

A2SSM does not read the scan's output ``C . h``: it aggregates the hidden states ``h``
spatially with the attention maps first. So the op returns all states::

    delta_t = softplus(delta_t + delta_bias)            (if delta_softplus)
    h_t     = exp(delta_t * A) * h_{t-1} + delta_t * B_t * u_t,    h_{-1} = 0

Shapes: ``u, delta: r(B D L)``, ``A: r(D N)``, ``B: r(B N L)`` or ``r(B G N L)`` (``D``
split into ``G`` equal groups), ``delta_bias: r(D)``; result ``r(B D N L)`` in float32
(float64 when an input is float64, so the reference can be gradchecked).

Instead of a Python loop over ``L``, the recurrence is solved by a doubling (Hillis-Steele)
scan over the affine steps ``h -> a_t h + x_t``: after the step with span ``s``, position
``t`` holds the composition of steps ``t-2s+1 .. t``, so ``ceil(log2 L)`` vectorised steps
give every state. Decay products stay in ``(0, 1]`` (no exponent of a sum is ever taken,
so nothing overflows), and autograd differentiates through it. Measured here on one CPU
thread it is 10-15x faster than a chunked matrix form (``exp(S_t - S_s)`` per chunk with a
recurrence across chunks) at the model's sizes, with the same float32 accuracy.
"""
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .dispatch import KernelUnavailable


def _check_scan_args(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, delta_bias: Optional[Tensor]) -> None:
    if u.dim() != 3 or delta.shape != u.shape:
        raise ValueError(f'u and delta must both be (B, D, L), got {tuple(u.shape)} and {tuple(delta.shape)}')
    batch, dim, length = u.shape
    if A.dim() != 2 or A.shape[0] != dim:
        raise ValueError(f'A must be (D={dim}, N), got {tuple(A.shape)}')
    n = A.shape[1]
    if B.dim() == 3:
        expected_ok = tuple(B.shape) == (batch, n, length)
    elif B.dim() == 4:
        expected_ok = (B.shape[0], B.shape[2], B.shape[3]) == (batch, n, length) and dim % B.shape[1] == 0
    else:
        expected_ok = False
    if not expected_ok:
        raise ValueError(f'B must be (B={batch}, N={n}, L={length}) or (B, G, N, L) with G dividing '
                         f'D={dim}, got {tuple(B.shape)}')
    if delta_bias is not None and tuple(delta_bias.shape) != (dim,):
        raise ValueError(f'delta_bias must be (D={dim},), got {tuple(delta_bias.shape)}')


def scan_steps(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, delta_bias: Optional[Tensor] = None,
               delta_softplus: bool = True) -> Tuple[Tensor, Tensor]:
    """The affine steps ``h -> a_t h + x_t`` of the scan: ``(a, x)``, each ``r(B D N L)``, in the
    reference's dtype; validates the arguments."""
    _check_scan_args(u, delta, A, B, delta_bias)
    dim = u.shape[1]
    inputs = [u, delta, A, B] + ([delta_bias] if delta_bias is not None else [])
    dtype = torch.float64 if any(t.dtype == torch.float64 for t in inputs) else torch.float32
    dt = delta.to(dtype)
    if delta_bias is not None:
        dt = dt + delta_bias.to(dtype)[:, None]
    if delta_softplus:
        dt = F.softplus(dt)
    Bf = B.to(dtype)
    if Bf.dim() == 4:
        # [B, G, N, L] -> [B, D, N, L]: each group of D/G channels shares its B
        Bf = Bf.repeat_interleave(dim // Bf.shape[1], dim=1)
    else:
        Bf = Bf[:, None]
    decay = torch.exp(dt[:, :, None, :] * A.to(dtype)[None, :, :, None])  # a_t: [B, D, N, L]
    states = (dt * u.to(dtype))[:, :, None, :] * Bf  # x_t: [B, D, N, L]
    return decay, states


def selective_scan_states_ref(u: Tensor, delta: Tensor, A: Tensor, B: Tensor,
                              delta_bias: Optional[Tensor] = None, delta_softplus: bool = True) -> Tensor:
    """All hidden states of the selective scan, ``r(B D N L)`` (see module doc)."""
    decay, states = scan_steps(u, delta, A, B, delta_bias, delta_softplus)
    length = u.shape[2]
    span = 1
    while span < length:
        # compose each step with the one `span` earlier: (a, x)_t <- (a_t a_{t-s}, x_t + a_t x_{t-s})
        states = torch.cat([states[..., :span], torch.addcmul(states[..., span:], decay[..., span:],
                                                               states[..., :-span])], dim=-1)
        if 2 * span < length:
            decay = torch.cat([decay[..., :span], decay[..., span:] * decay[..., :-span]], dim=-1)
        span *= 2
    return states


try:
    from . import _scan_cuda
    _SCAN_IMPORT_ERROR: Optional[BaseException] = None
except ImportError as error:  # a CPU install, or an extension built for another torch
    _scan_cuda = None
    _SCAN_IMPORT_ERROR = error

_BUILD_HINT = ('rebuild it with `A2MAMBA_FORCE_CUDA=1 pip install --no-build-isolation -e .` '
               '(nvcc and a CUDA build of torch needed)')


def has_cuda_scan() -> bool:
    """True when the CUDA selective-scan extension is built and a GPU is visible."""
    return _scan_cuda is not None and torch.cuda.is_available()


def _check_scan_cuda() -> None:
    if _scan_cuda is None:
        raise KernelUnavailable(f'the CUDA selective-scan extension is not available ({_SCAN_IMPORT_ERROR}); '
                                f'{_BUILD_HINT}')


def _contiguous(t: Tensor) -> Tensor:
    return t if t.is_contiguous() else t.contiguous()


def _kernel_dtype(u: Tensor, delta: Tensor, B: Tensor) -> torch.dtype:
    """The kernel reads one input dtype: the widest of ``u``, ``delta`` and ``B``."""
    return torch.promote_types(torch.promote_types(u.dtype, delta.dtype), B.dtype)


def _kernel_inputs(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, delta_bias: Optional[Tensor]):
    dtype = _kernel_dtype(u, delta, B)
    B_k = _contiguous(B.to(dtype))
    if B_k.dim() == 3:
        B_k = B_k.unsqueeze(1)  # [B, N, L] -> [B, 1, N, L]: one group
    return (_contiguous(u.to(dtype)), _contiguous(delta.to(dtype)), _contiguous(A.float()), B_k,
            None if delta_bias is None else _contiguous(delta_bias.float()))


def scan_cuda_forward(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, delta_bias: Optional[Tensor],
                      delta_softplus: bool) -> Tensor:
    """Every state, ``(B, D, N, L)`` float32, from the CUDA kernel."""
    _check_scan_cuda()
    return _scan_cuda.fwd(*_kernel_inputs(u, delta, A, B, delta_bias), delta_softplus)


def scan_cuda_backward(dstates: Tensor, u: Tensor, delta: Tensor, A: Tensor, B: Tensor, delta_bias: Optional[Tensor],
                       delta_softplus: bool, states: Tensor) -> Tuple[Tensor, ...]:
    """``(du, d delta, dA, dB, d delta_bias)`` in the inputs' dtypes (``None`` without a bias); the
    kernel reads ``h_{t-1}`` from the forward's ``states`` instead of rescanning."""
    _check_scan_cuda()
    u_k, delta_k, A_k, B_k, bias_k = _kernel_inputs(u, delta, A, B, delta_bias)
    du, ddelta, dA, dB, dbias = _scan_cuda.bwd(u_k, delta_k, A_k, B_k, bias_k, delta_softplus, _contiguous(states),
                                               _contiguous(dstates.float()))
    if B.dim() == 3:
        dB = dB.squeeze(1)
    return (du.to(u.dtype), ddelta.to(delta.dtype), dA.to(A.dtype), dB.to(B.dtype),
            None if delta_bias is None else dbias.to(delta_bias.dtype))


class SelectiveScanStatesFn(torch.autograd.Function):
    """CUDA selective scan returning every state; see :func:`selective_scan_states_ref`. (The model
    reaches the kernel through ``ops.selective_scan_states``, i.e. :mod:`ops.library`: the
    ``a2mamba::selective_scan_states`` op when compiled, its backend-generic Function in eager mode;
    this Function serves direct calls.)"""

    @staticmethod
    def forward(ctx, u: Tensor, delta: Tensor, A: Tensor, B: Tensor, delta_bias: Optional[Tensor],
                delta_softplus: bool) -> Tensor:
        _check_scan_args(u, delta, A, B, delta_bias)
        states = scan_cuda_forward(u, delta, A, B, delta_bias, delta_softplus)
        ctx.save_for_backward(u, delta, A, B, delta_bias, states)
        ctx.delta_softplus = delta_softplus
        return states

    @staticmethod
    def backward(ctx, dstates: Tensor):
        u, delta, A, B, delta_bias, states = ctx.saved_tensors
        return (*scan_cuda_backward(dstates, u, delta, A, B, delta_bias, ctx.delta_softplus, states), None)


def selective_scan_states_cuda(u: Tensor, delta: Tensor, A: Tensor, B: Tensor,
                               delta_bias: Optional[Tensor] = None, delta_softplus: bool = True) -> Tensor:
    """CUDA twin of :func:`selective_scan_states_ref` (state size ``N <= 4``), differentiable."""
    return SelectiveScanStatesFn.apply(u, delta, A, B, delta_bias, delta_softplus)
