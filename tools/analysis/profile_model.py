"""Where a model's GPU time goes: the CUDA kernels of its inference and training steps, and the
host (CPU) time of the ops that launch them.

    python tools/analysis/profile_model.py --model a2mamba_t --batch-size 128 --amp bf16 [--unfused-na]
    python tools/analysis/profile_model.py --model a2mamba_t --batch-size 2 --image-size 800 1344 --amp fp16

After warm-up steps, ``--steps`` steps of each kind run under torch.profiler. Printed per
kind: the wall time of a step, the summed time of its kernels (a wall time well above it
means the GPU waits on the CPU, e.g. launch overhead), the kernels by total time, and the host
ops by their own CPU time (where a launch-bound step spends it).
"""
import argparse
import sys
import time
from pathlib import Path
from typing import Callable, List, Tuple

import torch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # also when loaded by path, not run

from benchmark import model_steps  # noqa: E402

import a2mamba_core  # noqa: E402
import ops  # noqa: E402


def op_table(events, device_type: DeviceType, label: str, steps: int, top: int) -> Tuple[float, List[str]]:
    """The ops of one device type in a profile (``prof.key_averages()``) by their own time on it:
    ``(total ms per step, Markdown table of the ``top`` ones)``."""
    def own_us(e) -> float:
        return e.self_device_time_total if device_type == DeviceType.CUDA else e.self_cpu_time_total

    chosen = sorted((e for e in events if e.device_type == device_type), key=own_us, reverse=True)
    total_ms = sum(own_us(e) for e in chosen) / 1e3 / steps
    lines = [f'| {label} | calls/step | ms/step | share |', '|---|---|---|---|']
    for e in chosen[:top]:
        ms = own_us(e) / 1e3 / steps
        lines.append(f'| {e.key[:100]} | {e.count // steps} | {ms:.2f} | {100 * ms / max(total_ms, 1e-9):.1f}% |')
    return total_ms, lines


def host_table(events, steps: int, top: int) -> List[str]:
    """The CPU-side ops of a profile by their own CPU time per step."""
    total_ms, lines = op_table(events, DeviceType.CPU, 'host op', steps, top)
    return [f'host ops: {total_ms:.1f} ms of own CPU time per step', ''] + lines


def profile_steps(step: Callable[[], None], steps: int, warmup: int, top: int) -> List[str]:
    for _ in range(warmup):
        step()
    torch.cuda.synchronize()
    start = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            step()
        torch.cuda.synchronize()
    wall_ms = (time.perf_counter() - start) * 1e3 / steps
    events = prof.key_averages()
    total_ms, kernels = op_table(events, DeviceType.CUDA, 'kernel', steps, top)
    return ([f'step wall {wall_ms:.1f} ms (under the profiler), kernels {total_ms:.1f} ms', ''] + kernels + ['']
            + host_table(events, steps, top))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--model', default='a2mamba_t', choices=list(a2mamba_core.MODEL_SPECS))
    parser.add_argument('--batch-size', type=int, default=128)
    parser.add_argument('--image-size', type=int, nargs='+', default=[224], metavar='SIZE',
                        help='H, or H W (default: 224)')
    parser.add_argument('--amp', choices=['none', 'bf16', 'fp16'], default='bf16')
    parser.add_argument('--steps', type=int, default=3)
    parser.add_argument('--warmup', type=int, default=3)
    parser.add_argument('--top', type=int, default=30, help='kernels listed per kind')
    parser.add_argument('--mode', choices=['eager', 'compile'], default='eager',
                        help='compile: torch.compile(model, dynamic=False), the kernels Inductor generates')
    parser.add_argument('--unfused-na', action='store_true',
                        help='disable the fused attention kernel: maps are stored and applied twice')
    args = parser.parse_args()
    if len(args.image_size) > 2:
        parser.error(f'--image-size takes H or H W, got {args.image_size}')
    height, width = args.image_size * 2 if len(args.image_size) == 1 else args.image_size
    if args.unfused_na:
        ops.dispatch.disable('na2d', 'triton')
    torch.backends.cudnn.benchmark = True
    model = a2mamba_core.create_model(args.model).cuda()
    x = torch.randn(args.batch_size, 3, height, width, device='cuda')
    infer, train_step = model_steps(torch.compile(model, dynamic=False) if args.mode == 'compile' else model, x,
                                    args.amp)

    print(f'{args.model}, {torch.cuda.get_device_name()}, batch {args.batch_size}, {height}x{width}, '
          f'amp {args.amp}, mode {args.mode}, na2d -> {ops.dispatch.resolve("na2d", x).name}, '
          f'scan -> {ops.dispatch.resolve("selective_scan_states", x).name}')
    model.eval()
    print('\n## inference\n\n' + '\n'.join(profile_steps(infer, args.steps, args.warmup, args.top)), flush=True)
    model.train()
    print('\n## training step\n\n' + '\n'.join(profile_steps(train_step, args.steps, args.warmup, args.top)))


if __name__ == '__main__':
    main()
