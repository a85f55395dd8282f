"""How many compute ops one forward issues: a CPU-side proxy for the GPU kernel launches (and
their host time) that bound A2Mamba in eager mode at small batches.

    python tools/analysis/count_ops.py --model a2mamba_t [--image-size 64] [--amp bf16]

Counts ATen calls that compute (views, reshapes and allocations are left out) in one inference
forward. The model takes its GPU path through the custom ops, whose kernels are stand-ins here that
return the right shapes: each fused attention and each selective scan is one op
(``a2mamba.na2d``, ``a2mamba.selective_scan_states``), so the count matches what a GPU forward
launches up to those kernels' own helpers.
"""
import argparse
import sys
from collections import Counter
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import a2mamba_core  # noqa: E402
import ops  # noqa: E402

NOT_COMPUTE = ('aten.view', 'aten._unsafe_view', 'aten.permute', 'aten.t.', 'aten.unsqueeze', 'aten.squeeze',
               'aten.expand', 'aten.slice', 'aten.split', 'aten.chunk', 'aten.unbind', 'aten.select',
               'aten.transpose', 'aten.alias', 'aten.detach', 'aten.as_strided', 'aten.unflatten', 'aten.empty',
               'aten.lift_fresh', 'aten.reshape', 'aten._reshape_alias', 'aten.sym_')

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
    input, by ATen name (the two custom ops, ``a2mamba.na2d`` and ``a2mamba.selective_scan_states``,
    one each per kernel call)."""
    # The ops' fake implementations (outputs of the right shapes, nothing computed) registered as
    # kernels, so that the model takes the GPU path through the custom ops (a CPU reference would
    # instead compute each attention map once, in many small ops).
    stand_ins = {'na2d': ops.library.na2d_fake, 'selective_scan_states': ops.library.selective_scan_states_fake}
    for op, forward in stand_ins.items():
        ops.register_backend(op, STAND_IN, ops.Kernel(forward, _no_backward), lambda t: True)
    try:
        model = a2mamba_core.create_model(model_name).eval()
        x = torch.randn(1, 3, image_size, image_size)
        with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16, enabled=amp), OpCounter() as counter:
            model(x)
    finally:
        for op in stand_ins:
            ops.unregister_backend(op, STAND_IN)
    return counter.counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--model', default='a2mamba_t', choices=a2mamba_core.list_models())
    parser.add_argument('--image-size', type=int, default=64)
    parser.add_argument('--amp', choices=['none', 'bf16'], default='bf16')
    parser.add_argument('--top', type=int, default=15)
    args = parser.parse_args()
    counts = count_ops(args.model, args.image_size, args.amp == 'bf16')
    print(f'{args.model}, {args.image_size}^2, amp {args.amp}: {sum(counts.values())} compute ops per forward '
          f'(fused attention and scan counted as one op each)')
    for name, count in counts.most_common(args.top):
        print(f'{count:6d}  {name}')


if __name__ == '__main__':
    main()
