"""A formulation of the four ops that ``torch.export`` and the ONNX exporter can trace.

The references (:mod:`ops.neighborhood_attention`, :mod:`ops.selective_scan`) cache host
index tensors per shape, branch on host booleans and loop over the sequence length; traced,
each of those freezes the input size into the graph. The functions here compute the same
results with tensor ops only, so ``H``, ``W`` (and the second scale's dilation, derived
from them) stay symbolic, and every op they use has a standard ONNX equivalent:

* neighborhood attention gathers the ``kh x kw`` window of every query with one index
  tensor computed from the runtime sizes (:func:`ops.neighborhood_attention.window_indices`)
  and always applies the small-map mask (a no-op where every slot is valid);
* the scan runs the reference's doubling scan for a fixed number of shift-and-combine
  steps, ``ceil(log2(max_scan_length))``, shifting by padding (zeros for the states, ones for
  the decays) so that steps past the actual length change nothing. Positions past the
  covered length would be wrong, so they are set to NaN instead: a too-long input gives a
  NaN output, never a silently wrong one.

Inside ``with ops.traceable(...)`` the public ops (``ops.na2d_qk`` etc.) run these
functions. They trade memory for traceability: each window is materialised, ``kh*kw``
times the size of the keys or values.
"""
import contextlib
import math
from typing import Iterator, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor
from torch._guards import detect_fake_mode

from .neighborhood_attention import IntOrPair, check_na2d_args, window_indices
from .selective_scan import scan_steps

# 2048 x 2048 px at A2Mamba's stride-4 first stage.
DEFAULT_MAX_SCAN_LENGTH = 512 * 512

_active = False
_max_scan_length = DEFAULT_MAX_SCAN_LENGTH
# The window indices of each (size, kernel, dilation) seen inside the current traceable()
# context: all ops of a stage share one set, which keeps a traced graph (and its export
# time) several times smaller.
_window_memo: dict = {}


@contextlib.contextmanager
def traceable(max_scan_length: int = DEFAULT_MAX_SCAN_LENGTH) -> Iterator[None]:
    """Runs the public ops with the traceable formulation inside the block.

    Args:
        max_scan_length: the longest sequence the scan covers; longer ones give NaN states.
    """
    global _active, _max_scan_length, _window_memo
    if not isinstance(max_scan_length, int) or max_scan_length < 1:
        raise ValueError(f'max_scan_length must be a positive int, got {max_scan_length!r}')
    previous = _active, _max_scan_length, _window_memo
    _active, _max_scan_length, _window_memo = True, max_scan_length, {}
    try:
        yield
    finally:
        _active, _max_scan_length, _window_memo = previous


def is_traceable() -> bool:
    """Whether the public ops run the traceable formulation (inside :func:`traceable`)."""
    return _active


def max_scan_length() -> int:
    return _max_scan_length


SizeOrPair = Union[int, torch.SymInt, Sequence[Union[int, torch.SymInt]]]


def _window_args(kernel_size: IntOrPair, dilation: SizeOrPair) -> Tuple[Tuple[int, int], tuple]:
    """Like :func:`ops.normalize_window_args`, but a dilation may be symbolic (derived from the
    map size under tracing); a concrete one is validated, a symbolic one checked by torch."""
    def pair(value, name):
        if isinstance(value, (int, torch.SymInt)):
            return value, value
        value = tuple(value)
        if len(value) != 2:
            raise ValueError(f'{name} must be an int or a pair, got {value}')
        return value

    kernel, dil = pair(kernel_size, 'kernel_size'), pair(dilation, 'dilation')
    if any(not isinstance(k, int) or k < 1 or k % 2 == 0 for k in kernel):
        raise ValueError(f'kernel_size must be odd and positive ints, got {kernel}')
    for d in dil:
        if isinstance(d, int):
            if d < 1:
                raise ValueError(f'dilation must be >= 1, got {dil}')
        else:
            torch._check(d >= 1, lambda: f'dilation must be >= 1, got {dil}')
    return kernel, dil


def _as_operand(size, device: torch.device):
    """A symbolic size as a 0-d tensor: the ONNX exporter translates tensor-tensor integer
    arithmetic, not every op with a symbolic scalar operand (``remainder`` fails)."""
    return size if isinstance(size, int) else torch.full((), size, dtype=torch.long, device=device)


def _windows(height, width, kernel: Tuple[int, int], dilation: tuple,
             device: torch.device) -> Tuple[Tensor, Tensor, Tensor]:
    """Per query and window slot ``(H, W, kh*kw)``: the key's flat index into ``H * W``,
    the flat index into an rpb table ``(2*kh - 1) * (2*kw - 1)``, and whether it is valid."""
    # A symbolic size is keyed by its expression; the fake mode tells one trace from another
    # (eager: None), so tensors of one trace are never reused in the next.
    key = (str(height), str(width), kernel, tuple(str(d) for d in dilation), str(device),
           id(detect_fake_mode()))
    if key not in _window_memo:
        _window_memo[key] = _compute_windows(height, width, kernel, dilation, device)
    return _window_memo[key]


def _compute_windows(height, width, kernel: Tuple[int, int], dilation: tuple,
                     device: torch.device) -> Tuple[Tensor, Tensor, Tensor]:
    (kh, kw), (dh, dw) = kernel, (_as_operand(d, device) for d in dilation)
    row_key, row_valid, row_bias = window_indices(height, kh, dh, device)
    col_key, col_valid, col_bias = window_indices(width, kw, dw, device)
    # [H, 1, kh, 1] x [1, W, 1, kw] -> [H, W, kh, kw], the slot index row-major over the window
    key = row_key[:, None, :, None] * width + col_key[None, :, None, :]
    bias = row_bias[:, None, :, None] * (2 * kw - 1) + col_bias[None, :, None, :]
    valid = row_valid[:, None, :, None] & col_valid[None, :, None, :]
    return key.flatten(-2), bias.flatten(-2), valid.flatten(-2)


def _gather_windows(x: Tensor, key: Tensor) -> Tensor:
    """``x: (B, n, H, W, C)`` -> ``(B, n, H, W, kh*kw, C)``, the window of every query.

    One gather with the ``(H, W, kh*kw)`` index: splitting a flat gather's result by view
    would make torch.export guard on the divisibility of symbolic sizes."""
    return x.flatten(2, 3)[:, :, key]


def na2d_qk(query: Tensor, key: Tensor, kernel_size: IntOrPair, dilation: SizeOrPair = 1,
            rpb: Optional[Tensor] = None) -> Tensor:
    """Traceable :func:`ops.na2d_qk_ref`: ``(B, heads, H, W, kh*kw)`` scores, ``-inf`` on
    masked slots."""
    (kh, kw), dil = check_na2d_args(kernel_size, dilation, query=query, key=key, rpb=rpb, window_args=_window_args)
    b, heads, height, width, dim = query.shape
    index, bias_index, valid = _windows(height, width, (kh, kw), dil, query.device)
    keys = _gather_windows(key, index)
    attn = (keys @ query.unsqueeze(-1)).squeeze(-1)  # [B, n, H, W, kh*kw]
    if rpb is not None:
        bias = rpb.flatten(1)[:, bias_index]  # [n, H, W, kh*kw]
        attn = attn + bias.to(attn.dtype)
    return attn.masked_fill(~valid, float('-inf'))


def na2d_av(attn: Tensor, value: Tensor, kernel_size: IntOrPair, dilation: SizeOrPair = 1) -> Tensor:
    """Traceable :func:`ops.na2d_av_ref`: ``(B, heads, H, W, C)``; masked slots of ``attn``
    are ignored whatever they hold."""
    (kh, kw), dil = check_na2d_args(kernel_size, dilation, value=value, attn=attn, window_args=_window_args)
    b, heads, height, width, dim = value.shape
    index, _, valid = _windows(height, width, (kh, kw), dil, value.device)
    dtype = torch.promote_types(attn.dtype, value.dtype)
    weights = attn.to(dtype).masked_fill(~valid, 0)
    values = _gather_windows(value.to(dtype), index)
    return (weights.unsqueeze(-2) @ values).squeeze(-2)


def na2d(query: Tensor, key: Tensor, value: Tensor, kernel_size: IntOrPair, dilation: SizeOrPair = 1,
         rpb: Optional[Tensor] = None) -> Tensor:
    """Traceable :func:`ops.na2d_ref`: ``softmax(q . k + rpb) @ v`` over each window."""
    check_na2d_args(kernel_size, dilation, query=query, key=key, value=value, rpb=rpb, window_args=_window_args)
    return na2d_av(na2d_qk(query, key, kernel_size, dilation, rpb).softmax(dim=-1), value, kernel_size, dilation)


def _shift(x: Tensor, span: int, fill: float) -> Tensor:
    """``x`` moved ``span`` steps along the last axis, the first ``span`` filled with ``fill``."""
    length = x.shape[-1]
    return F.pad(x, (span, 0), value=fill)[..., :length]


def selective_scan_states(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, delta_bias: Optional[Tensor] = None,
                          delta_softplus: bool = True) -> Tensor:
    """Traceable :func:`ops.selective_scan_states_ref`, ``r(B D N L)``, for ``L`` up to the
    ``max_scan_length`` of :func:`traceable` (states past it are NaN)."""
    decay, states = scan_steps(u, delta, A, B, delta_bias, delta_softplus)
    steps = max(1, math.ceil(math.log2(_max_scan_length)))
    for step in range(steps):
        span = 2 ** step
        # (a, x)_t <- (a_t a_{t-s}, x_t + a_t x_{t-s}); the padding is the identity step (1, 0)
        states = torch.addcmul(states, decay, _shift(states, span, 0.0))
        if step < steps - 1:
            decay = decay * _shift(decay, span, 1.0)
    covered = torch.arange(states.shape[-1], device=states.device) < 2 ** steps
    return states.masked_fill(~covered, float('nan'))
