"""Model-level numbers: parameters, forward latency, and (on a GPU) throughput and peak memory.

    python tools/benchmark.py                                   # CPU: params of all sizes, N/T forward at 224^2 batch 1
    python tools/benchmark.py --device cuda --batch-size 128 --amp bf16 --train \
        --models a2mamba_n a2mamba_t a2mamba_s --yardsticks swin_tiny_patch4_window7_224 convnext_tiny
    ... --compile                                               # the same under torch.compile (all models)

Prints a Markdown table (the format of docs/BENCHMARKS.md) and the machine it ran on.
Timing: warm-up iterations, then the median over ``--iters`` timed iterations (synchronised
on GPU). Training steps are forward + backward + SGD step on random labels. ``--compile``
wraps every model (yardsticks too) in ``torch.compile``; compilation happens in the warm-up,
whose duration is printed. A2Mamba's own kernels run as opaque calls between compiled regions.
"""
import argparse
import platform
import statistics
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import torch
import torch.nn as nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import a2mamba_core  # noqa: E402
import ops  # noqa: E402

SEED_PARAMS_M = {'a2mamba_n': 4, 'a2mamba_t': 15, 'a2mamba_s': 31, 'a2mamba_b': 51, 'a2mamba_l': 95}


def machine_description(device: torch.device) -> str:
    if device.type == 'cuda':
        return f'{torch.cuda.get_device_name(device)}, torch {torch.__version__}, CUDA {torch.version.cuda}'
    threads = torch.get_num_threads()
    return f'{platform.processor() or platform.machine()} CPU, {threads} threads, torch {torch.__version__}'


def build(name: str, image_size: int) -> nn.Module:
    if name in a2mamba_core.MODEL_SPECS:
        return a2mamba_core.create_model(name)
    import timm  # yardsticks only
    return timm.create_model(name, pretrained=False, img_size=image_size) if 'swin' in name \
        else timm.create_model(name, pretrained=False)


def synchronize(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def time_it(step: Callable[[], None], device: torch.device, warmup: int, iters: int, label: str = '') -> float:
    """Median seconds of one call of ``step``."""
    start = time.perf_counter()
    for _ in range(warmup):
        step()
    synchronize(device)
    if label:
        print(f'[{label}] warm-up ({warmup} steps): {time.perf_counter() - start:.1f} s', file=sys.stderr, flush=True)
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        step()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def model_steps(model: nn.Module, x: torch.Tensor, amp: str) -> Tuple[Callable[[], None], Callable[[], None]]:
    """``(infer, train_step)`` on the batch ``x``: a no-grad forward, and forward + cross-entropy on
    random labels + backward + SGD step; both under autocast when ``amp`` is ``'bf16'``/``'fp16'``.
    Shared with tools/profile_model.py, so the profile shows the steps timed here."""
    amp_dtype = {'bf16': torch.bfloat16, 'fp16': torch.float16}.get(amp)
    autocast = (lambda: torch.autocast(x.device.type, dtype=amp_dtype)) if amp_dtype else nullcontext
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4)
    labels = torch.randint(0, 1000, (x.shape[0],), device=x.device)

    def infer() -> None:
        with torch.no_grad(), autocast():
            model(x)

    def train_step() -> None:
        with autocast():
            loss = nn.functional.cross_entropy(model(x), labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return infer, train_step


def measure(name: str, args: argparse.Namespace, device: torch.device) -> Dict[str, float]:
    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
    model = build(name, args.image_size).to(device, memory_format=memory_format)
    params = sum(p.numel() for p in model.parameters()) / 1e6
    x = torch.randn(args.batch_size, 3, args.image_size, args.image_size, device=device)
    x = x.contiguous(memory_format=memory_format)
    if args.compile:
        # static shapes: one specialisation per stage shape rather than dynamic-shape kernels
        model = torch.compile(model, dynamic=False)
    infer, train_step = model_steps(model, x, args.amp)
    result = {'params_m': params}

    model.eval()
    if device.type == 'cuda':
        torch.cuda.reset_peak_memory_stats(device)
    seconds = time_it(infer, device, args.warmup, args.iters, f'{name} inference')
    result['infer_s'] = seconds
    result['infer_img_s'] = args.batch_size / seconds
    # the row is printed after training; this line survives a run cut short while training compiles
    print(f'[{name} inference] {result["infer_img_s"]:.1f} img/s', file=sys.stderr, flush=True)
    if device.type == 'cuda':
        result['infer_mem_gb'] = torch.cuda.max_memory_allocated(device) / 2 ** 30

    if args.train:
        model.train()
        if device.type == 'cuda':
            torch.cuda.reset_peak_memory_stats(device)
        seconds = time_it(train_step, device, args.warmup, args.iters, f'{name} training')
        result['train_s'] = seconds
        result['train_img_s'] = args.batch_size / seconds
        if device.type == 'cuda':
            result['train_mem_gb'] = torch.cuda.max_memory_allocated(device) / 2 ** 30
    del model
    return result


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--models', nargs='+', default=['a2mamba_n', 'a2mamba_t'],
                        help='models to time (params are always listed for all five sizes)')
    parser.add_argument('--yardsticks', nargs='*', default=[], help='timm models timed in the same run')
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--batch-size', type=int, default=1)
    parser.add_argument('--image-size', type=int, default=224)
    parser.add_argument('--amp', choices=['none', 'bf16', 'fp16'], default='none')
    parser.add_argument('--train', action='store_true', help='also time training steps')
    parser.add_argument('--warmup', type=int, default=3)
    parser.add_argument('--iters', type=int, default=10)
    parser.add_argument('--threads', type=int, help='CPU threads (default: torch default)')
    parser.add_argument('--compile', action='store_true', help='torch.compile every model (default mode)')
    parser.add_argument('--channels-last', action='store_true', help='model and input in channels_last memory format')
    parser.add_argument('--unfused-na', action='store_true',
                        help='disable the fused attention kernel: maps are stored and applied twice')
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.unfused_na:
        ops.dispatch.disable('na2d', 'triton')
    if device.type == 'cuda':
        torch.backends.cudnn.benchmark = True
    if args.compile:
        # the same code runs at 4 stage shapes, in eval and train mode, around A2Mamba's kernels
        torch._dynamo.config.recompile_limit = 64

    print(f'machine: {machine_description(device)}')
    probe = torch.empty(0, device=device)
    print(f'ops backends: na2d={ops.backends("na2d")} (fused kernel here: {ops.runs_kernel("na2d", probe)}), '
          f'scan={ops.backends("selective_scan_states")}, forced={ops.dispatch.forced_backend() or "auto"}\n')
    print('| model | params (M) | seed table (M) |\n|---|---|---|')
    for name in a2mamba_core.list_models():
        params = sum(p.numel() for p in a2mamba_core.create_model(name).parameters()) / 1e6
        print(f'| {name} | {params:.2f} | {SEED_PARAMS_M[name]} |')

    print(f'\n{args.image_size}^2, batch {args.batch_size}, amp {args.amp}, {device.type}, '
          f'median of {args.iters} after {args.warmup} warm-up'
          + (', torch.compile' if args.compile else '') + (', channels_last' if args.channels_last else ''))
    header = '| model | forward (s) | inference (img/s) |'
    if device.type == 'cuda':
        header += ' infer peak mem (GiB) |'
    if args.train:
        header += ' train step (s) | training (img/s) |' + (' train peak mem (GiB) |' if device.type == 'cuda' else '')
    print(header + '\n' + '|---' * (header.count('|') - 1) + '|')
    for name in args.models + args.yardsticks:
        r = measure(name, args, device)
        row = f'| {name} | {r["infer_s"]:.4f} | {r["infer_img_s"]:.1f} |'
        if device.type == 'cuda':
            row += f' {r["infer_mem_gb"]:.2f} |'
        if args.train:
            row += f' {r["train_s"]:.4f} | {r["train_img_s"]:.1f} |'
            if device.type == 'cuda':
                row += f' {r["train_mem_gb"]:.2f} |'
        print(row, flush=True)


if __name__ == '__main__':
    main()
