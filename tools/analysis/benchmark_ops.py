"""Times the GPU ops against their references and reports achieved bandwidth.

Achieved GB/s counts the fewest bytes an op must move (each input read once, each output
written once) over its median time; ``%copy`` compares it with a device-to-device copy
measured in the same run. Shapes: A2Mamba-T's scans (224 px, batch 128, and detection size)
and the neighborhood-attention calls of A2Mamba-T (both scales of stages 1-3) at 224 px batch 128 and 800x1344 batch 2.

The fused table compares ``ops.na2d_triton`` (scores recomputed, maps never stored) with the
unfused Triton path ``na2d_av(softmax(na2d_qk(q, k)), v)`` on the same calls; ``--fused-configs``
also times other launch settings of the fused kernels (halo rows per step, the same with
d rpb, warps, queries per tile) on the 224-px calls. ``--compile-only`` runs every op once at
batch 1 and exits: it fills Triton's kernel cache (e.g. in parallel with other work), since the
kernels depend on the map size but not on the batch. ``--cuda-graphs`` times each call as the
replay of a CUDA graph: the kernels' time without the host's, as a model compiled with CUDA graphs
sees it. ``--tables`` picks the tables.

Usage: ``python tools/analysis/benchmark_ops.py [--skip-reference] [--fused-configs 4,2,4 2,1,2,32] [--out results.md]``
"""
import argparse
import sys
from pathlib import Path
from typing import Callable, List, Optional, Tuple

import torch
from triton.testing import do_bench, do_bench_cudagraph

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import ops  # noqa: E402
from ops import neighborhood_attention_fused as fused_mod  # noqa: E402
from ops import selective_scan as scan_mod  # noqa: E402

TABLES = ('scan', 'fused', 'unfused')
SCAN_SHAPES = [(128, 48, 3136), (128, 96, 784), (2, 64, 67200)]
# A2Mamba-T stages 1-3: (stride, channels per head, window); heads per scale = heads / 2
T_STAGES = [(4, 24, 11, 1), (8, 24, 9, 2), (16, 32, 7, 4)]


def median_ms(fn: Callable[[], object]) -> float:
    return do_bench(fn, warmup=25, rep=100, return_mode='median')


def graph_median_ms(fn: Callable[[], object]) -> float:
    fn()  # compiles the kernels and warms the allocator outside the capture
    torch.cuda.synchronize()
    return do_bench_cudagraph(fn, rep=100, return_mode='median')


def copy_bandwidth() -> float:
    src = torch.empty(2 ** 30 // 4, device='cuda')
    dst = torch.empty_like(src)
    ms = median_ms(lambda: dst.copy_(src))
    return 2 * src.numel() * 4 / ms / 1e6  # GB/s, read + write


def maybe(fn: Callable[[], float]) -> Optional[float]:
    try:
        return fn()
    except torch.OutOfMemoryError:
        torch.cuda.empty_cache()
        return None


def fmt(ms: Optional[float], skipped: bool = False) -> str:
    return '-' if skipped else 'OOM' if ms is None else f'{ms:.3f}'


def bench_scan(dtype: torch.dtype, skip_ref: bool, copy_gbs: float) -> List[str]:
    rows = []
    for batch, dim, length in SCAN_SHAPES:
        elt = torch.tensor([], dtype=dtype).element_size()
        u = torch.randn(batch, dim, length, device='cuda', dtype=dtype)
        delta = (torch.randn_like(u, dtype=torch.float32) * 0.5 - 1).to(dtype)
        A = -torch.rand(dim, 1, device='cuda') - 0.1
        B = torch.randn(batch, 1, length, device='cuda', dtype=dtype)
        bias = torch.randn(dim, device='cuda') * 0.3
        B4 = B.unsqueeze(1)
        states = scan_mod._scan_cuda.fwd(u, delta, A, B4, bias, True)
        dstates = torch.randn_like(states)
        fwd = median_ms(lambda: scan_mod._scan_cuda.fwd(u, delta, A, B4, bias, True))
        bwd = median_ms(lambda: scan_mod._scan_cuda.bwd(u, delta, A, B4, bias, True, states, dstates))
        n = batch * dim * length
        fwd_bytes = 2 * n * elt + batch * length * elt + 4 * n
        bwd_bytes = 2 * n * elt + batch * length * elt + 2 * 4 * n + 2 * n * elt + 4 * batch * length
        ref_fwd = ref_bwd = None
        if not skip_ref:
            ref_fwd = maybe(lambda: median_ms(lambda: ops.selective_scan_states_ref(u, delta, A, B, bias, True)))
            leaves = [t.detach().requires_grad_() for t in (u, delta, B)]

            def ref_backward() -> None:
                out = ops.selective_scan_states_ref(leaves[0], leaves[1], A, leaves[2], bias, True)
                torch.autograd.grad(out, leaves, dstates)
            ref_bwd = maybe(lambda: median_ms(ref_backward))  # includes its forward: autograd needs it
        rows.append(f'| scan {batch}x{dim}x{length} {str(dtype)[6:]} | {fwd:.3f} | {fwd_bytes / fwd / 1e6:.0f} '
                    f'({100 * fwd_bytes / fwd / 1e6 / copy_gbs:.0f}%) | {bwd:.3f} | {bwd_bytes / bwd / 1e6:.0f} '
                    f'({100 * bwd_bytes / bwd / 1e6 / copy_gbs:.0f}%) | {fmt(ref_fwd, skip_ref)} '
                    f'| {fmt(ref_bwd, skip_ref)} |')
        print(rows[-1], flush=True)
    return rows


def na_calls(height: int, width: int) -> List[Tuple[str, int, int, int, int, Tuple[int, int]]]:
    calls = []
    heads = (2, 4, 8)
    for (stride, dim, kernel, _), stage_heads in zip(T_STAGES, heads):
        h, w = height // stride, width // stride
        dilation = (max(1, min(h // kernel, kernel)), max(1, min(w // kernel, kernel)))
        for scale, dil in (('s1', (1, 1)), ('s2', dilation)):
            calls.append((scale, stage_heads // 2, h, w, dim, kernel, dil))
    return calls


def bench_na(batch: int, height: int, width: int, skip_ref: bool, copy_gbs: float) -> List[str]:
    rows = []
    dtype = torch.bfloat16
    for scale, heads, h, w, dim, kernel, dil in na_calls(height, width):
        q, k, v = (torch.randn(batch, heads, h, w, dim, device='cuda', dtype=dtype) for _ in range(3))
        rpb = torch.randn(heads, 2 * kernel - 1, 2 * kernel - 1, device='cuda')
        attn = ops.na2d_qk_triton(q, k, kernel, dil, rpb).float().softmax(-1).to(dtype)
        g_attn, g_out = torch.randn_like(attn), torch.randn_like(v)
        tokens, maps = q.numel(), attn.numel()
        # qk: read q, k, write scores; av: read attn, v, write out (bytes of bf16)
        byte_counts = {'qk fwd': 2 * (2 * tokens + maps), 'av fwd': 2 * (maps + 2 * tokens),
                       'qk bwd': 2 * (maps + 4 * tokens), 'av bwd': 2 * (2 * maps + 3 * tokens)}
        for name, impl_qk, impl_av in (('triton', ops.na2d_qk_triton, ops.na2d_av_triton),
                                       ('reference', ops.na2d_qk_ref, ops.na2d_av_ref)):
            if name == 'reference' and skip_ref:
                continue
            leaves = [t.detach().requires_grad_() for t in (q, k, attn, v)]
            times = {
                'qk fwd': lambda: impl_qk(q, k, kernel, dil, rpb),
                'av fwd': lambda: impl_av(attn, v, kernel, dil),
                # backward timings include the forward they differentiate
                'qk bwd': lambda: torch.autograd.grad(impl_qk(leaves[0], leaves[1], kernel, dil, rpb),
                                                      leaves[:2], g_attn),
                'av bwd': lambda: torch.autograd.grad(impl_av(leaves[2], leaves[3], kernel, dil), leaves[2:], g_out),
            }
            cells = []
            for op_name, fn in times.items():
                ms = maybe(lambda: median_ms(fn))
                if ms is None:
                    cells.append('OOM')
                else:
                    gbs = byte_counts[op_name] / ms / 1e6
                    cells.append(f'{ms:.3f} ({100 * gbs / copy_gbs:.0f}%)')
            rows.append(f'| {name} B{batch} {h}x{w} {scale} heads{heads} C{dim} k{kernel} d{dil} | ' + ' | '.join(cells)
                        + ' |')
            print(rows[-1], flush=True)
    return rows


def fused_config(text: str) -> Optional[fused_mod.LaunchSettings]:
    """``'RS,RS_RPB_GRAD,WARPS[,TILE]'`` -> the fused kernels' launch settings; ``'auto'``: the
    library's choice per window (``ops.neighborhood_attention_fused.launch_settings``)."""
    if text == 'auto':
        return None
    values = tuple(int(v) for v in text.split(','))
    if len(values) not in (3, 4):
        raise argparse.ArgumentTypeError('expected auto or rows-per-step,rows-per-step-with-d-rpb,warps'
                                         f'[,queries-per-tile], got {text!r}')
    return fused_mod.LaunchSettings(*values)


def bench_fused(batch: int, height: int, width: int, config: Optional[fused_mod.LaunchSettings], copy_gbs: float,
                time_fn: Callable, with_unfused: bool = True) -> List[str]:
    """Fused (and unfused) Triton attention (bf16) per call: fwd, and fwd + bwd (all input grads);
    the fused kernels launch with ``config`` (``None``: the library's choice per window)."""
    rows = []
    dtype = torch.bfloat16
    for scale, heads, h, w, dim, kernel, dil in na_calls(height, width):
        q, k, v = (torch.randn(batch, heads, h, w, dim, device='cuda', dtype=dtype) for _ in range(3))
        rpb = torch.randn(heads, 2 * kernel - 1, 2 * kernel - 1, device='cuda')
        leaves = [t.detach().requires_grad_() for t in (q, k, v, rpb)]
        g_out = torch.randn_like(v)

        def fused(q, k, v, rpb):
            return ops.na2d_triton(q, k, v, kernel, dil, rpb, launch=config)

        def unfused(q, k, v, rpb):
            attn = ops.na2d_qk_triton(q, k, kernel, dil, rpb).softmax(-1)
            return ops.na2d_av_triton(attn, v, kernel, dil)

        cells = []
        for impl in (fused, unfused) if with_unfused else (fused,):
            fwd = time_fn(lambda: impl(q, k, v, rpb))
            both = time_fn(lambda: torch.autograd.grad(impl(*leaves), leaves, g_out))
            cells.append((fwd, both))
        tokens = q.numel()
        # fwd: read q, k, v, write out (bf16) and the float32 log-sum-exp; bwd adds reading
        # q, k, v, out, d out and writing dq, dk, dv
        fwd_bytes = 2 * 4 * tokens + 4 * tokens // dim
        both_bytes = fwd_bytes + 2 * 8 * tokens + 4 * tokens // dim
        f_fwd, f_both = cells[0]
        unfused_cells = '| - | - | - |'
        if with_unfused:
            u_fwd, u_both = cells[1]
            unfused_cells = f'| {u_fwd:.3f} | {u_both:.3f} | {u_fwd / f_fwd:.1f}x / {u_both / f_both:.1f}x |'
        launch = ','.join(map(str, config or fused_mod.launch_settings((kernel, kernel))))
        rows.append(f'| B{batch} {h}x{w} {scale} heads{heads} C{dim} k{kernel} d{dil} | {launch} '
                    f'| {f_fwd:.3f} ({100 * fwd_bytes / f_fwd / 1e6 / copy_gbs:.0f}%) '
                    f'| {f_both:.3f} ({100 * both_bytes / f_both / 1e6 / copy_gbs:.0f}%) ' + unfused_cells)
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--skip-reference', action='store_true', help='time only the fast backends')
    parser.add_argument('--fused-configs', type=fused_config, nargs='+', default=[None],
                        help='fused launch settings RS,RS_RPB_GRAD,WARPS[,TILE] (or auto: the library\'s per '
                             'window) to time; the first one on every call (default: auto)')
    parser.add_argument('--tables', nargs='+', choices=TABLES, default=list(TABLES),
                        help='which tables (default: all): the scan, the fused attention, the unfused one')
    parser.add_argument('--cuda-graphs', action='store_true',
                        help="time the fused table's calls as CUDA graph replays (kernel time, no host time)")
    parser.add_argument('--compile-only', action='store_true',
                        help='run each NA op once at batch 1 to fill the kernel cache, time nothing')
    parser.add_argument('--out', type=Path, help='also write the markdown tables here')
    args = parser.parse_args()
    torch.manual_seed(0)
    if args.compile_only:
        def once(fn: Callable[[], object]) -> float:
            fn()
            return 1.0
        for i, config in enumerate(args.fused_configs):
            for height, width in ((224, 224), (800, 1344))[:1 if i else 2]:
                bench_fused(1, height, width, config, 1.0, once, with_unfused=not i)
        return
    copy_gbs = copy_bandwidth()
    timer = graph_median_ms if args.cuda_graphs else median_ms
    lines = [f'Card: {torch.cuda.get_device_name()}, torch {torch.__version__}; '
             f'device-to-device copy {copy_gbs:.0f} GB/s (read + write); '
             f'{"CUDA graph replays (kernel time)" if args.cuda_graphs else "eager calls (host time included)"}']
    print(lines[0], flush=True)
    if 'scan' in args.tables:
        scan_mod._check_scan_cuda()
        lines += ['', '| scan (N=1) | fwd ms | fwd GB/s (%copy) | bwd ms | bwd GB/s (%copy) | ref fwd ms '
                  '| ref fwd+bwd ms |', '|---|---|---|---|---|---|---|']
        for dtype in (torch.float32, torch.bfloat16):
            lines += bench_scan(dtype, args.skip_reference, copy_gbs)
    if 'fused' in args.tables:
        lines += ['', 'Fused neighborhood attention vs unfused Triton (qk -> softmax -> av), bf16, ms '
                  '(%copy of minimum bytes); fwd+bwd = forward + backward to q, k, v, rpb', '',
                  '| call | RS,RS_rpb,warps,tile | fused fwd | fused fwd+bwd | unfused fwd | unfused fwd+bwd '
                  '| speed-up fwd / fwd+bwd |', '|---|---|---|---|---|---|---|']
        for i, config in enumerate(args.fused_configs):
            for batch, height, width in ((128, 224, 224), (2, 800, 1344))[:1 if i else 2]:
                try:
                    lines += bench_fused(batch, height, width, config, copy_gbs, timer, with_unfused=not i)
                except Exception as error:  # a setting the GPU cannot launch (registers, shared memory)
                    lines.append(f'| B{batch} {height}x{width} | {",".join(map(str, config or ()))} '
                                 f'| failed: {type(error).__name__}: {str(error)[:80]} | | | | |')
                    print(lines[-1], flush=True)
    if 'unfused' in args.tables:
        lines += ['', 'Neighborhood attention, bf16, ms (%copy of minimum bytes); bwd = fwd + bwd', '',
                  '| call | qk fwd | av fwd | qk bwd | av bwd |', '|---|---|---|---|---|']
        for batch, height, width in ((128, 224, 224), (2, 800, 1344)):
            lines += bench_na(batch, height, width, args.skip_reference, copy_gbs)
    text = '\n'.join(lines)
    print('\n' + text)
    if args.out:
        args.out.write_text(text + '\n')


if __name__ == '__main__':
    main()
