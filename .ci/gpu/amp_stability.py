"""bf16 training stability of A2Mamba: STEPS AdamW steps at a high learning rate on a fixed random
batch (so the loss can fall by memorising it), compiled or eager; prints the loss every 20 steps
and fails if a loss or gradient is not finite or the loss did not fall.

    python .ci/gpu/amp_stability.py --model a2mamba_t --steps 200 --lr 2e-3 --mode cudagraphs
"""
import argparse
import math
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
import a2mamba_core  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--model', default='a2mamba_t')
    parser.add_argument('--steps', type=int, default=200)
    parser.add_argument('--lr', type=float, default=2e-3)
    parser.add_argument('--batch-size', type=int, default=64)
    parser.add_argument('--image-size', type=int, default=224)
    parser.add_argument('--mode', choices=['eager', 'compile', 'cudagraphs'], default='cudagraphs')
    parser.add_argument('--device', default='cuda')
    args = parser.parse_args()
    torch.manual_seed(0)
    model = a2mamba_core.create_model(args.model, num_classes=100, drop_path_rate=0.1).to(args.device).train()
    run = model if args.mode == 'eager' else torch.compile(
        model, mode='reduce-overhead' if args.mode == 'cudagraphs' else None, dynamic=False)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.05)
    x = torch.randn(args.batch_size, 3, args.image_size, args.image_size, device=args.device)
    labels = torch.randint(0, 100, (args.batch_size,), device=args.device)
    losses = []
    for step in range(args.steps):
        if args.mode == 'cudagraphs':
            torch.compiler.cudagraph_mark_step_begin()
        with torch.autocast(x.device.type, dtype=torch.bfloat16):
            loss = F.cross_entropy(run(x), labels)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), float('inf'))
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        if not (math.isfinite(losses[-1]) and math.isfinite(grad_norm.item())):
            sys.exit(f'step {step}: loss {losses[-1]}, gradient norm {grad_norm.item()}: not finite')
        if step % 20 == 0 or step == args.steps - 1:
            print(f'step {step:4d}  loss {losses[-1]:.4f}  grad norm {grad_norm.item():.3f}', flush=True)
    first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
    print(f'{args.model} {args.mode} bf16, lr {args.lr}: mean loss of the first 10 steps {first:.4f}, '
          f'of the last 10 {last:.4f}; every loss and gradient finite')
    if not last < first:
        sys.exit('the loss did not fall')


if __name__ == '__main__':
    main()
