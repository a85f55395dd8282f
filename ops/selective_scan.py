"""Reference selective scan that returns every hidden state, in pure PyTorch.

A2SSM does not read the scan's output ``C . h``: it aggregates the hidden states ``h``
spatially with the attention maps first. So the op returns all states::

    delta_t = softplus(delta_t + delta_bias)            (if delta_softplus)
    h_t     = exp(delta_t * A) * h_{t-1} + delta_t * B_t * u_t,    h_{-1} = 0

Shapes: ``u, delta: r(B D L)``, ``A: r(D N)``, ``B: r(B N L)`` or ``r(B G N L)`` (``D``
split into ``G`` equal groups), ``delta_bias: r(D)``; result ``r(B D N L)`` in float32
(float64 when an input is float64, so the reference can be gradchecked).

Instead of a Python loop over ``L``, the sequence is cut into chunks of ``chunk_size``.
Inside a chunk, ``h_t = sum_{s<=t} exp(S_t - S_s) * x_s`` with ``S`` the cumulative sum of
``delta * A`` (only differences of ``S`` are exponentiated, so nothing overflows), computed
as one masked matrix product; a short recurrence over chunks carries the last state.
Autograd differentiates through it.
"""
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
    """All hidden states of the selective scan, ``r(B D N L)`` (see module doc)."""
    _check_scan_args(u, delta, A, B, delta_bias)
    batch, dim, length = u.shape
    n = A.shape[1]
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
    decay_log = dt[:, :, None, :] * A.to(dtype)[None, :, :, None]  # [B, D, N, L]
    inputs = (dt * u.to(dtype))[:, :, None, :] * Bf  # [B, D, N, L]

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
