"""Where the fused attention's forward + backward time goes, per call (GPU): kernel times from
torch.profiler against the wall time of a call, for A2Mamba-T's stage-3 call at 224 px and a
detection-size call."""
import sys
import time
from pathlib import Path

import torch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile
from triton.testing import do_bench

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
import ops  # noqa: E402

CALLS = [(128, 4, 14, 14, 32, 7, (2, 2)), (2, 1, 50, 84, 24, 11, (4, 7)), (128, 1, 56, 56, 24, 11, (5, 5))]
for b, heads, h, w, c, k, d in CALLS:
    q, kk, v = (torch.randn(b, heads, h, w, c, device='cuda', dtype=torch.bfloat16, requires_grad=True)
                for _ in range(3))
    rpb = torch.randn(heads, 2 * k - 1, 2 * k - 1, device='cuda', requires_grad=True)
    g = torch.randn(b, heads, h, w, c, device='cuda', dtype=torch.bfloat16)

    def fwd():
        return ops.na2d(q, kk, v, k, d, rpb)

    def both():
        return torch.autograd.grad(ops.na2d(q, kk, v, k, d, rpb), (q, kk, v, rpb), g)

    for fn in (fwd, both):
        fn()
    torch.cuda.synchronize()
    t_f, t_b = do_bench(fwd, return_mode='median'), do_bench(both, return_mode='median')
    torch.cuda.synchronize()
    start = time.perf_counter()
    n = 20
    for _ in range(n):
        both()
    torch.cuda.synchronize()
    host = (time.perf_counter() - start) / n * 1e3
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(5):
            both()
        torch.cuda.synchronize()
    kernels = sorted((e for e in prof.key_averages() if e.device_type == DeviceType.CUDA),
                     key=lambda e: -e.self_device_time_total)
    print(f'\nB{b} heads{heads} {h}x{w} C{c} k{k} d{d}: do_bench fwd {t_f:.3f} ms, fwd+bwd {t_b:.3f} ms; '
          f'loop of fwd+bwd {host:.3f} ms/call')
    for e in kernels[:8]:
        print(f'  {e.key[:70]:70s} {e.count // 5:3d}/call {e.self_device_time_total / 5 / 1e3:.3f} ms')
    cpu = sorted((e for e in prof.key_averages() if e.device_type == DeviceType.CPU),
                 key=lambda e: -e.cpu_time_total)
    for e in cpu[:10]:
        print(f'  cpu {e.key[:66]:66s} {e.count // 5:3d}/call {e.cpu_time_total / 5 / 1e3:.3f} ms')
