"""How many compute ops one forward issues: a CPU-side proxy for the GPU kernel launches that
bound A2Mamba in eager mode (docs/BENCHMARKS.md, "Second run").

    python tools/analysis/count_ops.py --model a2mamba_t [--image-size 64] [--amp bf16]

Counts ATen calls that compute (views, reshapes and allocations are left out) in one inference
forward. The GPU path's fused attention and selective scan are one op each here (stand-ins that
return the right shape), so the count matches what a GPU forward launches up to those kernels'
own helpers; the attention maps of the CPU reference path are not counted.
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


class OpCounter(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.counts = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = str(func)
        if not name.startswith(NOT_COMPUTE):
            self.counts[name] += 1
        return func(*args, **(kwargs or {}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--model', default='a2mamba_t', choices=a2mamba_core.list_models())
    parser.add_argument('--image-size', type=int, default=64)
    parser.add_argument('--amp', choices=['none', 'bf16'], default='bf16')
    parser.add_argument('--top', type=int, default=15)
    args = parser.parse_args()
    ops.register_backend('na2d', 'one-op-stand-in', lambda q, k, v, *rest: v * 1.0, lambda t: True)
    ops.register_backend('selective_scan_states', 'one-op-stand-in',
                         lambda u, *rest, **kwargs: u.float()[:, :, None] * 1.0, lambda t: True)
    model = a2mamba_core.create_model(args.model).eval()
    x = torch.randn(1, 3, args.image_size, args.image_size)
    amp = torch.autocast('cpu', dtype=torch.bfloat16, enabled=args.amp == 'bf16')
    with torch.no_grad(), amp, OpCounter() as counter:
        model(x)
    print(f'{args.model}, {args.image_size}^2, amp {args.amp}: {sum(counter.counts.values())} compute ops per forward '
          f'(fused attention and scan counted as one op each)')
    for name, count in counter.counts.most_common(args.top):
        print(f'{count:6d}  {name}')


if __name__ == '__main__':
    main()
