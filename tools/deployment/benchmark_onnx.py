"""Forward time of an A2Mamba classifier in ONNX Runtime (CPU) next to PyTorch (CPU).

    OMP_NUM_THREADS=1 python tools/deployment/benchmark_onnx.py a2mamba_n a2mamba_t [--shape 224 224]

Exports each model statically (random weights: the time does not depend on them), then times
batch-1 forwards, one warm-up and ``--runs`` timed, and prints the medians. Both runtimes use
``torch.get_num_threads()`` threads (set by ``OMP_NUM_THREADS``).
"""
import argparse
import os.path as osp
import statistics
import sys
import tempfile
import time
from typing import Callable, List

import torch

sys.path.insert(0, osp.abspath(osp.join(osp.dirname(__file__), '..', '..')))

import a2mamba_core  # noqa: E402


def median_seconds(fn: Callable[[], object], runs: int) -> float:
    fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: List[str] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('models', nargs='+', choices=a2mamba_core.list_models())
    parser.add_argument('--shape', type=int, nargs=2, default=(224, 224), metavar=('H', 'W'))
    parser.add_argument('--runs', type=int, default=7)
    args = parser.parse_args(argv)
    import onnxruntime
    threads = torch.get_num_threads()
    print(f'threads: {threads}, input 1x3x{args.shape[0]}x{args.shape[1]}, median of {args.runs} runs')
    print('| model | PyTorch eager (ms) | ONNX Runtime (ms) |\n|---|---|---|')
    for name in args.models:
        model = a2mamba_core.create_model(name).eval()
        x = torch.randn(1, 3, *args.shape)
        with tempfile.TemporaryDirectory() as directory:
            path = osp.join(directory, f'{name}.onnx')
            a2mamba_core.export_onnx(model, path, tuple(args.shape))
            options = onnxruntime.SessionOptions()
            options.intra_op_num_threads = threads
            session = onnxruntime.InferenceSession(path, options, providers=['CPUExecutionProvider'])
        feed = {session.get_inputs()[0].name: x.numpy()}
        with torch.no_grad():
            eager = median_seconds(lambda: model(x), args.runs)
        onnx_time = median_seconds(lambda: session.run(None, feed), args.runs)
        print(f'| {name} | {eager * 1e3:.0f} | {onnx_time * 1e3:.0f} |', flush=True)


if __name__ == '__main__':
    main()
