"""Model-level numbers: parameters, forward latency, and (on a GPU) throughput and peak memory.

    python tools/analysis/benchmark.py                          # CPU: params of all sizes, N/T forward at 224^2 batch 1
    python tools/analysis/benchmark.py --device cuda --batch-size 128 --amp bf16 --train \
        --models a2mamba_n a2mamba_t a2mamba_s --yardsticks swin_tiny_patch4_window7_224 convnext_tiny \
        --modes eager compile cudagraphs --repeats 3

Protocol, printed with the results: the card, torch/CUDA versions, dtype (autocast), the TF32
setting, batch, image size, warm-up and timed iterations, and the mode. Every model, A2Mamba and
the timm yardsticks alike, runs in every mode of ``--modes`` in the same process:

* ``eager``: the model as it is;
* ``compile``: ``torch.compile(model, dynamic=False)`` (Inductor's default mode);
* ``cudagraphs``: ``torch.compile(model, mode='reduce-overhead', dynamic=False)``: the same, replayed
  as CUDA graphs (no host work per kernel).

Timing: ``--warmup`` steps (compilation happens there: its duration is printed as the first-step
time), then the median over ``--iters`` timed steps, synchronised. ``--repeats`` repeats the timed
part and reports min-max of the medians (the run-to-run spread). Training steps are forward +
cross-entropy on random labels + backward + SGD step (the optimizer is not compiled).

Training-memory variants of an A2Mamba model, timed as rows of their own (training only: neither
changes inference), e.g. ``--models a2mamba_t a2mamba_t@checkpoint=2,0,0,0 a2mamba_t@memory_budget=0.5``:

* ``@checkpoint=N`` or ``=n1,n2,n3,n4``: activation checkpointing of the first ``N`` (per stage:
  ``n_i``) blocks, the model's ``use_checkpoint``;
* ``@memory_budget=F`` (compiled modes): the compiler's activation memory budget
  (``torch._functorch.config.activation_memory_budget``, ``0 < F <= 1``): the backward recomputes
  more of the forward's cheap ops so that at most about that fraction of the activations is kept.
"""
import argparse
import platform
import statistics
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Callable, Dict, List, NamedTuple, Optional, Tuple, Union

import torch
import torch.nn as nn

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import a2mamba_core  # noqa: E402
import ops  # noqa: E402


def machine_description(device: torch.device) -> str:
    if device.type == 'cuda':
        return f'{torch.cuda.get_device_name(device)}, torch {torch.__version__}, CUDA {torch.version.cuda}'
    threads = torch.get_num_threads()
    return f'{platform.processor() or platform.machine()} CPU, {threads} threads, torch {torch.__version__}'


class ModelSpec(NamedTuple):
    """A model to time: its name and the training-memory variant (:func:`parse_model_spec`)."""
    name: str
    checkpoint: Union[int, Tuple[int, ...]] = 0
    memory_budget: Optional[float] = None

    @property
    def label(self) -> str:
        options = []
        if self.checkpoint != 0:
            counts = self.checkpoint if isinstance(self.checkpoint, tuple) else (self.checkpoint,)
            options.append('checkpoint=' + ','.join(map(str, counts)))
        if self.memory_budget is not None:
            options.append(f'memory_budget={self.memory_budget:g}')
        return '@'.join([self.name] + options)

    @property
    def is_variant(self) -> bool:
        return self.checkpoint != 0 or self.memory_budget is not None


def parse_model_spec(spec: str) -> ModelSpec:
    """``name[@checkpoint=N|n1,n2,...][@memory_budget=F]`` (see the module's docstring).

    Raises:
        ValueError: an unknown option or value, or a variant of a model that is not A2Mamba.
    """
    name, *options = spec.split('@')
    fields = {}
    for option in options:
        key, _, value = option.partition('=')
        try:
            if key == 'checkpoint':
                counts = tuple(int(n) for n in value.split(','))
                fields[key] = counts[0] if len(counts) == 1 else counts
            elif key == 'memory_budget':
                fields[key] = float(value)
                if not 0.0 < fields[key] <= 1.0:
                    raise ValueError
            else:
                raise KeyError(key)
        except KeyError:
            raise ValueError(f'{spec!r}: unknown option {key!r}; expected checkpoint=N|n1,n2,... or memory_budget=F')
        except ValueError:
            raise ValueError(f'{spec!r}: bad value {value!r} for {key}; expected checkpoint=N or n1,n2,... (block '
                             f'counts) or memory_budget=F with 0 < F <= 1')
    if fields and name not in a2mamba_core.MODEL_SPECS:
        raise ValueError(f'{spec!r}: training-memory variants are for A2Mamba models, not {name!r}')
    return ModelSpec(name, **fields)


def build(spec: ModelSpec, image_size: int) -> nn.Module:
    name = spec.name
    if name in a2mamba_core.MODEL_SPECS:
        return a2mamba_core.create_model(name, use_checkpoint=spec.checkpoint)
    import timm  # yardsticks only
    return timm.create_model(name, pretrained=False, img_size=image_size) if 'swin' in name \
        else timm.create_model(name, pretrained=False)


def synchronize(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def time_it(step: Callable[[], None], device: torch.device, warmup: int, iters: int) -> float:
    """Median seconds of one call of ``step`` after ``warmup`` calls."""
    for _ in range(warmup):
        step()
    synchronize(device)
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        step()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def model_steps(model: nn.Module, x: torch.Tensor, amp: str, new_step: Callable[[], None] = lambda: None
                ) -> Tuple[Callable[[], None], Callable[[], None]]:
    """``(infer, train_step)`` on the batch ``x``: a no-grad forward, and forward + cross-entropy on
    random labels + backward + SGD step; both under autocast when ``amp`` is ``'bf16'``/``'fp16'``.
    ``new_step`` runs first in each (CUDA graphs: a new iteration begins). Shared with
    tools/analysis/profile_model.py, so the profile shows the steps timed here."""
    amp_dtype = {'bf16': torch.bfloat16, 'fp16': torch.float16}.get(amp)
    autocast = (lambda: torch.autocast(x.device.type, dtype=amp_dtype)) if amp_dtype else nullcontext
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4)
    labels = torch.randint(0, 1000, (x.shape[0],), device=x.device)

    def infer() -> None:
        new_step()
        with torch.no_grad(), autocast():
            model(x)

    def train_step() -> None:
        new_step()
        with autocast():
            loss = nn.functional.cross_entropy(model(x), labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return infer, train_step


MODES = ('eager', 'compile', 'cudagraphs')


def prepare(model: nn.Module, mode: str) -> Tuple[nn.Module, Callable[[], None]]:
    """``model`` in ``mode`` and the per-step hook the mode needs."""
    if mode == 'eager':
        return model, lambda: None
    if mode == 'compile':
        return torch.compile(model, dynamic=False), lambda: None
    if mode == 'cudagraphs':
        return torch.compile(model, mode='reduce-overhead', dynamic=False), torch.compiler.cudagraph_mark_step_begin
    raise ValueError(f'mode must be one of {MODES}, got {mode!r}')


def time_repeats(step: Callable[[], None], device: torch.device, args: argparse.Namespace,
                 label: str) -> Tuple[float, float, float]:
    """``(first_step_s, best_median_s, worst_median_s)`` over ``args.repeats`` timed runs."""
    synchronize(device)
    start = time.perf_counter()
    step()
    synchronize(device)
    first = time.perf_counter() - start
    medians = [time_it(step, device, max(args.warmup - 1, 0), args.iters) for _ in range(args.repeats)]
    print(f'[{label}] first step {first:.1f} s, medians {", ".join(f"{m * 1e3:.1f}" for m in medians)} ms',
          file=sys.stderr, flush=True)
    return first, min(medians), max(medians)


def measure(spec: ModelSpec, mode: str, args: argparse.Namespace, device: torch.device) -> Dict[str, float]:
    """Throughput and peak memory of ``spec`` in ``mode`` (a variant: training only)."""
    if spec.memory_budget is not None and mode == 'eager':
        raise ValueError(f'memory_budget applies to compiled modes, not {mode!r}')
    budget = 1.0 if spec.memory_budget is None else spec.memory_budget
    # the budget is read when the backward is partitioned, at the first training step
    with torch._functorch.config.patch(activation_memory_budget=budget):
        return _measure(spec, mode, args, device)


def _measure(spec: ModelSpec, mode: str, args: argparse.Namespace, device: torch.device) -> Dict[str, float]:
    name = spec.label
    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
    model = build(spec, args.image_size).to(device, memory_format=memory_format)
    params = sum(p.numel() for p in model.parameters()) / 1e6
    x = torch.randn(args.batch_size, 3, args.image_size, args.image_size, device=device)
    x = x.contiguous(memory_format=memory_format)
    compiled, new_step = prepare(model, mode)
    infer, train_step = model_steps(compiled, x, args.amp, new_step)
    result = {'params_m': params}

    def time_phase(step: Callable[[], None], key: str, label: str) -> None:
        # the first call (compilation, autotuning), images/s (worst, best), best seconds, peak memory
        if device.type == 'cuda':
            torch.cuda.reset_peak_memory_stats(device)
        result[f'{key}_first_s'], best, worst = time_repeats(step, device, args, f'{name} {mode} {label}')
        result[f'{key}_img_s'] = (args.batch_size / worst, args.batch_size / best)
        result[f'{key}_s'] = best
        if device.type == 'cuda':
            result[f'{key}_mem_gb'] = torch.cuda.max_memory_allocated(device) / 2 ** 30

    if not spec.is_variant:
        model.eval()
        time_phase(infer, 'infer', 'inference')
    if args.train:
        model.train()
        time_phase(train_step, 'train', 'training')
    del model, compiled
    if mode != 'eager':
        # the compiled code (and its CUDA-graph pools, counted as allocated memory) outlives the
        # model in Dynamo's cache: the next model's peak would include it, and every model adds
        # cache entries to the same forward, which Dynamo stops compiling after eight
        torch._dynamo.reset()
    if device.type == 'cuda':
        torch.cuda.empty_cache()
    return result


def span(values: Tuple[float, float]) -> str:
    low, high = values
    return f'{high:.0f}' if high - low < 0.005 * high else f'{low:.0f}-{high:.0f}'


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--models', nargs='+', default=['a2mamba_n', 'a2mamba_t'],
                        help='models to time (params are always listed for all five sizes)')
    parser.add_argument('--yardsticks', nargs='*', default=[], help='timm models timed in the same run and modes')
    parser.add_argument('--modes', nargs='+', choices=MODES, default=['eager'])
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--batch-size', type=int, default=1)
    parser.add_argument('--image-size', type=int, default=224)
    parser.add_argument('--amp', choices=['none', 'bf16', 'fp16'], default='none')
    parser.add_argument('--tf32', choices=['default', 'on', 'off'], default='default',
                        help="TF32 for float32 matmuls / convolutions (default: torch's, matmul off, cuDNN on)")
    parser.add_argument('--train', action='store_true', help='also time training steps')
    parser.add_argument('--warmup', type=int, default=3)
    parser.add_argument('--iters', type=int, default=10)
    parser.add_argument('--repeats', type=int, default=1, help='timed runs per model and mode (spread: min-max)')
    parser.add_argument('--threads', type=int, help='CPU threads (default: torch default)')
    parser.add_argument('--channels-last', action='store_true', help='model and input in channels_last memory format')
    parser.add_argument('--unfused-na', action='store_true',
                        help='disable the fused attention kernel: maps are stored and applied twice')
    parser.add_argument('--params', action='store_true', help='also list the parameters of all five sizes')
    args = parser.parse_args(argv)
    try:
        specs = [parse_model_spec(spec) for spec in args.models] + [ModelSpec(name) for name in args.yardsticks]
    except ValueError as error:
        parser.error(str(error))
    if any(spec.is_variant for spec in specs) and not args.train:
        parser.error('training-memory variants (@checkpoint, @memory_budget) are timed in training: add --train')
    if any(spec.memory_budget is not None for spec in specs) and 'eager' in args.modes:
        parser.error('@memory_budget applies to the compiled modes: leave eager out of --modes')
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.unfused_na:
        ops.dispatch.disable('na2d', 'triton')
    if args.tf32 != 'default':
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = args.tf32 == 'on'
    tf32 = f'matmul {torch.backends.cuda.matmul.allow_tf32}, cuDNN {torch.backends.cudnn.allow_tf32}'
    if device.type == 'cuda':
        torch.backends.cudnn.benchmark = True

    probe = torch.empty(0, device=device)
    print(f'machine: {machine_description(device)}')
    print(f'protocol: {args.image_size}^2, batch {args.batch_size}, autocast {args.amp}, TF32 ({tf32}), '
          f'{args.warmup} warm-up + median of {args.iters} timed steps, {args.repeats} repeat(s), modes {args.modes}'
          + (', channels_last' if args.channels_last else ''))
    print(f'ops: na2d -> {ops.dispatch.resolve("na2d", probe).name}, '
          f'scan -> {ops.dispatch.resolve("selective_scan_states", probe).name}\n')
    if args.params:
        print('| model | params (M) |\n|---|---|')
        for name in a2mamba_core.list_models():
            params = sum(p.numel() for p in a2mamba_core.create_model(name).parameters()) / 1e6
            print(f'| {name} | {params:.2f} |')
        print()
    header = '| model | mode | inference (img/s) |'
    if device.type == 'cuda':
        header += ' infer peak mem (GiB) |'
    if args.train:
        header += ' training (img/s) |' + (' train peak mem (GiB) |' if device.type == 'cuda' else '')
    header += ' first step infer / train (s) |'
    print(header + '\n' + '|---' * (header.count('|') - 1) + '|')
    for mode in args.modes:
        for spec in specs:
            r = measure(spec, mode, args, device)
            infer = 'infer_img_s' in r  # a training-memory variant times training only
            row = f'| {spec.label} | {mode} | {span(r["infer_img_s"]) if infer else "-"} |'
            if device.type == 'cuda':
                row += f' {r["infer_mem_gb"]:.2f} |' if infer else ' - |'
            if args.train:
                row += f' {span(r["train_img_s"])} |'
                if device.type == 'cuda':
                    row += f' {r["train_mem_gb"]:.2f} |'
            row += f' {r.get("infer_first_s", float("nan")):.1f} / {r.get("train_first_s", float("nan")):.1f} |'
            print(row, flush=True)


if __name__ == '__main__':
    main()
