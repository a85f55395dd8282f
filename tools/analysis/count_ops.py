"""How many compute ops one forward issues: a CPU-side proxy for the GPU kernel launches (and
their host time) that bound A2Mamba in eager mode at small batches.

    python tools/analysis/count_ops.py --model a2mamba_t [--image-size 64] [--amp bf16] [--host-time]

Counts ATen calls that compute (views, reshapes and allocations are left out) in one inference
forward. The model takes its GPU path, whose kernels are stand-ins here that return the right
shapes: each fused attention and each selective scan is one op (``a2mamba.na2d``,
``a2mamba.selective_scan_states``), so the count matches what a GPU forward launches up to those
kernels' own helpers. ``--host-time`` also times one eager call of each op through the
project's layers (argument checks, backend choice, autograd) with stand-in kernels: the host cost
of a call on top of its kernels' launches.
"""
import argparse
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Dict

import torch
from torch.utils._python_dispatch import TorchDispatchMode

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import a2mamba_core  # noqa: E402
import ops  # noqa: E402

NOT_COMPUTE = ('aten.view', 'aten._unsafe_view', 'aten.permute', 'aten.t.', 'aten.unsqueeze', 'aten.squeeze',
               'aten.expand', 'aten.slice', 'aten.split', 'aten.chunk', 'aten.unbind', 'aten.select',
               'aten.transpose', 'aten.alias', 'aten.detach', 'aten.as_strided', 'aten.unflatten', 'aten.empty',
               'aten.lift_fresh', 'aten.reshape', 'aten._reshape_alias', 'aten.sym_', 'aten.promote_types')

STAND_IN = 'one-op-stand-in'


class OpCounter(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.counts = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = str(func)
        if not name.startswith(NOT_COMPUTE):
            self.counts[name] += 1
        return func(*args, **(kwargs or {}))


def _no_backward(*args):
    raise RuntimeError('count_ops times inference only: the stand-in kernels have no backward')


def count_ops(model_name: str, image_size: int = 64, amp: bool = True) -> Counter:
    """Compute ops of one inference forward of ``model_name`` on a ``1 x 3 x image_size^2``
    input, by ATen name, and the kernel calls of the two ops, ``a2mamba.na2d`` and
    ``a2mamba.selective_scan_states`` (one each per call)."""
    counter = OpCounter()
    # The ops' fake implementations (outputs of the right shapes, nothing computed) registered as
    # kernels, so that the model takes its GPU path (a CPU reference would instead compute each
    # attention map once, in many small ops); each counts its calls.
    stand_ins = {'na2d': ops.library.na2d_fake, 'selective_scan_states': ops.library.selective_scan_states_fake}

    def counting(op: str, fake):
        def forward(*args):
            counter.counts[f'a2mamba.{op}'] += 1
            return fake(*args)
        return forward

    for op, fake in stand_ins.items():
        ops.register_backend(op, STAND_IN, ops.Kernel(counting(op, fake), _no_backward), lambda t: True)
    try:
        model = a2mamba_core.create_model(model_name).eval()
        x = torch.randn(1, 3, image_size, image_size)
        with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16, enabled=amp), counter:
            model(x)
    finally:
        for op in stand_ins:
            ops.unregister_backend(op, STAND_IN)
    return counter.counts


def host_time_per_call(iters: int = 300) -> Dict[str, float]:
    """Host time (µs) of one eager call of each op through the project's layers (argument checks,
    backend choice, autograd), forward and forward + backward, with stand-in kernels that only
    allocate their outputs: what each call costs the host on top of its kernels' launches.
    Shapes of A2Mamba-T's stage-1 calls at 800x1344, batch 2 (the host cost does not depend on them)."""
    def na_backward(grad_out, query, key, value, rpb, out, lse, kernel, dilation, tf32):
        return tuple(torch.empty_like(t) for t in (query, key, value, rpb))

    def scan_backward(grad_states, u, delta, A, B, delta_bias, softplus, states):
        return tuple(torch.empty_like(t) for t in (u, delta, A, B, delta_bias))

    kernels = {'na2d': ops.Kernel(ops.library.na2d_fake, na_backward),
               'selective_scan_states': ops.Kernel(ops.library.selective_scan_states_fake, scan_backward)}
    q, k, v = (torch.randn(2, 1, 200, 336, 24, requires_grad=True) for _ in range(3))
    rpb = torch.zeros(1, 21, 21, requires_grad=True)
    u, delta = (torch.randn(2, 48, 200 * 336, requires_grad=True) for _ in range(2))
    A, bias = -torch.ones(48, 1, requires_grad=True), torch.zeros(48, requires_grad=True)
    B = torch.randn(2, 1, 200 * 336, requires_grad=True)
    calls = {'na2d': lambda: ops.na2d(q, k, v, 11, 1, rpb),
             'selective_scan_states': lambda: ops.selective_scan_states(u, delta, A, B, bias)}
    inputs = {'na2d': (q, k, v, rpb), 'selective_scan_states': (u, delta, A, B, bias)}
    times = {}
    for op, kernel in kernels.items():
        ops.register_backend(op, STAND_IN, kernel, lambda t: True)
        try:
            for mode in ('forward', 'forward + backward'):
                def step() -> None:
                    if mode == 'forward':
                        with torch.no_grad():
                            calls[op]()
                    else:
                        out = calls[op]()
                        torch.autograd.grad(out, inputs[op], torch.empty_like(out))
                for _ in range(max(1, iters // 10)):
                    step()
                start = time.perf_counter()
                for _ in range(iters):
                    step()
                times[f'{op} {mode}'] = (time.perf_counter() - start) / iters * 1e6
        finally:
            ops.unregister_backend(op, STAND_IN)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--model', default='a2mamba_t', choices=a2mamba_core.list_models())
    parser.add_argument('--image-size', type=int, default=64)
    parser.add_argument('--amp', choices=['none', 'bf16'], default='bf16')
    parser.add_argument('--top', type=int, default=15)
    parser.add_argument('--host-time', action='store_true',
                        help="also time one eager call of each op through the project's layers (µs, stand-in kernels)")
    args = parser.parse_args()
    counts = count_ops(args.model, args.image_size, args.amp == 'bf16')
    print(f'{args.model}, {args.image_size}^2, amp {args.amp}: {sum(counts.values())} compute ops per forward '
          f'(fused attention and scan counted as one op each)')
    for name, count in counts.most_common(args.top):
        print(f'{count:6d}  {name}')
    if args.host_time:
        print('host time per eager call, stand-in kernels (this CPU):')
        for name, us in host_time_per_call().items():
            print(f'{us:8.1f} µs  {name}')


if __name__ == '__main__':
    main()
