"""Reference selective scan that returns every hidden state, in pure PyTorch.

A2SSM does not read the scan's output ``C . h``: it aggregates the hidden states ``h``
spatially with the attention maps first. So the op returns all states::

    delta_t = softplus(delta_t + delta_bias)            (if delta_softplus)
    h_t     = exp(delta_t * A) * h_{t-1} + delta_t * B_t * u_t,    h_{-1} = 0

Shapes: ``u, delta: r(B D L)``, ``A: r(D N)``, ``B: r(B N L)`` or ``r(B G N L)`` (``D``
split into ``G`` equal groups), ``delta_bias: r(D)``; result ``r(B D N L)`` in float32.

Instead of a Python loop over ``L``, the sequence is cut into chunks of ``chunk_size``.
Inside a chunk, ``h_t = sum_{s<=t} exp(S_t - S_s) * x_s`` with ``S`` the cumulative sum of
``delta * A`` (only differences of ``S`` are exponentiated, so nothing overflows), computed
as one masked matrix product; a short recurrence over chunks carries the last state.
Autograd differentiates through it.
"""
import functools
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor


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


def selective_scan_states_ref(u: Tensor, delta: Tensor, A: Tensor, B: Tensor,
                              delta_bias: Optional[Tensor] = None, delta_softplus: bool = True,
                              chunk_size: int = 64) -> Tensor:
    """All hidden states of the selective scan, ``r(B D N L)`` float32 (see module doc)."""
    _check_scan_args(u, delta, A, B, delta_bias)
    batch, dim, length = u.shape
    n = A.shape[1]
    dt = delta.float()
    if delta_bias is not None:
        dt = dt + delta_bias.float()[:, None]
    if delta_softplus:
        dt = F.softplus(dt)
    Bf = B.float()
    if Bf.dim() == 4:
        # [B, G, N, L] -> [B, D, N, L]: each group of D/G channels shares its B
        Bf = Bf.repeat_interleave(dim // Bf.shape[1], dim=1)
    else:
        Bf = Bf[:, None]
    decay_log = dt[:, :, None, :] * A.float()[None, :, :, None]  # [B, D, N, L]
    inputs = (dt * u.float())[:, :, None, :] * Bf  # [B, D, N, L]

    chunk = max(1, min(chunk_size, length))
    pad = (-length) % chunk
    if pad:
        # zeros after the end change no earlier state
        decay_log = F.pad(decay_log, (0, pad))
        inputs = F.pad(inputs, (0, pad))
    num_chunks = decay_log.shape[-1] // chunk
    decay_log = decay_log.reshape(batch, dim, n, num_chunks, chunk)
    inputs = inputs.reshape(batch, dim, n, num_chunks, chunk)

    cum = decay_log.cumsum(-1)  # S_t inside each chunk
    causal = torch.ones(chunk, chunk, dtype=torch.bool, device=u.device).tril()
    # [.., t, s] = exp(S_t - S_s) for s <= t; the masked half would overflow, so it is set
    # to -inf before exp (also keeps its gradient at exactly zero)
    transfer = (cum[..., :, None] - cum[..., None, :]).masked_fill(~causal, float('-inf')).exp()
    local = (transfer @ inputs[..., None]).squeeze(-1)  # states with a zero start per chunk
    entry = cum.exp()  # how a chunk's incoming state decays to each of its steps

    states = []
    carry = torch.zeros_like(local[..., 0, 0])
    for c in range(num_chunks):
        chunk_states = local[..., c, :] + entry[..., c, :] * carry[..., None]
        states.append(chunk_states)
        carry = chunk_states[..., -1]
    return torch.cat(states, dim=-1)[..., :length]


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
        raise RuntimeError(f'the CUDA selective-scan extension is not available ({_SCAN_IMPORT_ERROR}); '
                           f'{_BUILD_HINT}')


def _contiguous(t: Tensor) -> Tensor:
    return t if t.is_contiguous() else t.contiguous()


# Autocast bookkeeping for backward; the kernel reads fp32/fp16/bf16 itself, so nothing is cast.
_custom_fwd = functools.partial(torch.amp.custom_fwd, device_type='cuda')
_custom_bwd = functools.partial(torch.amp.custom_bwd, device_type='cuda')


class SelectiveScanStatesFn(torch.autograd.Function):
    """CUDA selective scan returning every state; see :func:`selective_scan_states_ref`."""

    @staticmethod
    @_custom_fwd
    def forward(ctx, u: Tensor, delta: Tensor, A: Tensor, B: Tensor, delta_bias: Optional[Tensor],
                delta_softplus: bool) -> Tensor:
        _check_scan_cuda()
        _check_scan_args(u, delta, A, B, delta_bias)
        # one input dtype for the kernel: the widest of u, delta and B
        dtype = torch.promote_types(torch.promote_types(u.dtype, delta.dtype), B.dtype)
        ctx.dtypes = (u.dtype, delta.dtype, A.dtype, B.dtype, None if delta_bias is None else delta_bias.dtype)
        ctx.b_is_3d = B.dim() == 3
        u_k = _contiguous(u.to(dtype))
        delta_k = _contiguous(delta.to(dtype))
        B_k = _contiguous(B.to(dtype))
        if ctx.b_is_3d:
            B_k = B_k.unsqueeze(1)  # [B, N, L] -> [B, 1, N, L]: one group
        A_k = _contiguous(A.float())
        bias_k = None if delta_bias is None else _contiguous(delta_bias.float())
        states = _scan_cuda.fwd(u_k, delta_k, A_k, B_k, bias_k, delta_softplus)
        # The states are the output; backward reads h_{t-1} from them instead of rescanning.
        ctx.save_for_backward(u_k, delta_k, A_k, B_k, bias_k, states)
        ctx.delta_softplus = delta_softplus
        return states

    @staticmethod
    @_custom_bwd
    def backward(ctx, dstates: Tensor):
        u, delta, A, B, delta_bias, states = ctx.saved_tensors
        du, ddelta, dA, dB, ddelta_bias = _scan_cuda.bwd(u, delta, A, B, delta_bias, ctx.delta_softplus, states,
                                                         _contiguous(dstates.float()))
        if ctx.b_is_3d:
            dB = dB.squeeze(1)
        u_dtype, delta_dtype, A_dtype, B_dtype, bias_dtype = ctx.dtypes
        return (du.to(u_dtype), ddelta.to(delta_dtype), dA.to(A_dtype), dB.to(B_dtype),
                None if delta_bias is None else ddelta_bias.to(bias_dtype), None)


def selective_scan_states_cuda(u: Tensor, delta: Tensor, A: Tensor, B: Tensor,
                               delta_bias: Optional[Tensor] = None, delta_softplus: bool = True) -> Tensor:
    """CUDA twin of :func:`selective_scan_states_ref` (state size ``N <= 4``), differentiable."""
    return SelectiveScanStatesFn.apply(u, delta, A, B, delta_bias, delta_softplus)
