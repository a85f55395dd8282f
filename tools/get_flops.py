"""FLOPs and parameters of A2Mamba at a given input size, its custom ops included.

    python tools/get_flops.py a2mamba_t [a2mamba_s ...] [--shape 224 224]
    python tools/get_flops.py configs/mmpretrain/a2mamba-t_8xb256_in1k.py [--shape H W]

FLOPs are multiply-accumulates, the convention of the paper's table (and of fvcore).
Convolutions and matrix products are counted by torch's ``FlopCounterMode`` (which reports
two FLOPs per MAC). The custom ops run through a counting backend of :mod:`ops` that
computes nothing and counts from the shapes:

* ``na2d_qk`` and ``na2d_av``: ``B * heads * H * W * (kh * kw) * head_dim`` each;
* the selective scan: ``4 * B * D * N * L`` (per state and step: ``delta * A``,
  ``delta * u * B`` and the recurrence ``a * h + b``).

Element-wise operations, normalisations and softmax are not counted. A config's model is
built with its registries and called in ``mode='tensor'`` (or its backbone alone with
``--backbone``). Parameters are counted once even where shared (the tied ``rpb``).
"""
import argparse
import contextlib
import os.path as osp
import sys
from collections import defaultdict
from typing import Dict, Iterator, List, NamedTuple, Optional, Sequence

import torch
import torch.nn as nn
from torch import Tensor
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, osp.abspath(osp.join(osp.dirname(__file__), '..')))

import a2mamba_core  # noqa: E402
import ops  # noqa: E402

COUNTING_BACKEND = 'flop_count'


class Complexity(NamedTuple):
    macs: int
    macs_by_op: Dict[str, int]
    params: int


@contextlib.contextmanager
def count_custom_ops() -> Iterator[Dict[str, int]]:
    """Inside the block every custom op runs the counting backend: its MACs are added to the
    yielded dict and it returns zeros of the right shape instead of computing."""
    counts: Dict[str, int] = defaultdict(int)

    def na2d_qk(query: Tensor, key: Tensor, kernel_size, dilation=1, rpb: Optional[Tensor] = None) -> Tensor:
        (kh, kw), _ = ops.normalize_window_args(kernel_size, dilation)
        b, heads, height, width, dim = query.shape
        counts['na2d_qk'] += b * heads * height * width * kh * kw * dim
        return query.new_zeros(b, heads, height, width, kh * kw)

    def na2d_av(attn: Tensor, value: Tensor, kernel_size, dilation=1) -> Tensor:
        (kh, kw), _ = ops.normalize_window_args(kernel_size, dilation)
        b, heads, height, width, dim = value.shape
        counts['na2d_av'] += b * heads * height * width * kh * kw * dim
        return value.new_zeros(value.shape, dtype=torch.promote_types(attn.dtype, value.dtype))

    def selective_scan_states(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, delta_bias=None,
                              delta_softplus: bool = True) -> Tensor:
        b, d, length = u.shape
        n = A.shape[1]
        counts['selective_scan'] += 4 * b * d * n * length
        return u.new_zeros(b, d, n, length, dtype=torch.float32)

    # Appended after the reference, so it only ever runs when forced below.
    for name, fn in (('na2d_qk', na2d_qk), ('na2d_av', na2d_av), ('selective_scan_states', selective_scan_states)):
        ops.register_backend(name, COUNTING_BACKEND, fn, lambda _: True, first=False)
    with contextlib.ExitStack() as forced:
        for name in ('na2d_qk', 'na2d_av', 'selective_scan_states'):
            forced.enter_context(ops.use_backend(COUNTING_BACKEND, op=name))
        yield counts


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_complexity(model: nn.Module, inputs: Tensor, **forward_kwargs) -> Complexity:
    """MACs and parameters of ``model(inputs, **forward_kwargs)`` (see the module doc)."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), count_custom_ops() as custom, FlopCounterMode(display=False) as counter:
            model(inputs, **forward_kwargs)
    finally:
        model.train(was_training)
    dense = counter.get_total_flops() // 2
    macs_by_op = {'conv+matmul': dense, **custom}
    return Complexity(sum(macs_by_op.values()), macs_by_op, count_parameters(model))


def core_complexity(name: str, shape: Sequence[int] = (224, 224)) -> Complexity:
    """Complexity of the classification model ``a2mamba_{n,t,s,b,l}`` at ``shape = (H, W)``."""
    model = a2mamba_core.create_model(name)
    return count_complexity(model, torch.zeros(1, model.in_chans, *shape))


def config_complexity(config: str, shape: Sequence[int], backbone_only: bool) -> Complexity:
    """Complexity of a config's model, or of its backbone alone."""
    from mmengine.config import Config
    from mmengine.registry import MODELS, init_default_scope
    from mmengine.utils import import_modules_from_strings

    cfg = Config.fromfile(config)
    if cfg.get('custom_imports'):
        import_modules_from_strings(**cfg.custom_imports)
    init_default_scope(cfg.get('default_scope', 'mmengine'))
    model = MODELS.build(cfg.model)
    in_channels = getattr(model.backbone, 'in_channels', 3) if hasattr(model, 'backbone') else 3
    inputs = torch.zeros(1, in_channels, *shape)
    if backbone_only:
        if not hasattr(model, 'backbone'):
            raise ValueError(f'{type(model).__name__} has no backbone; drop --backbone')
        return count_complexity(model.backbone, inputs)
    return count_complexity(model, inputs, mode='tensor')


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='FLOPs (MACs) and parameters of A2Mamba models')
    parser.add_argument('models', nargs='+', help=f'model names ({", ".join(a2mamba_core.list_models())}) '
                                                  'or config files')
    parser.add_argument('--shape', type=int, nargs='+', default=[224, 224], help='input H [W]')
    parser.add_argument('--backbone', action='store_true', help='count only the backbone of a config model')
    args = parser.parse_args(argv)
    if len(args.shape) not in (1, 2) or min(args.shape) <= 0:
        parser.error(f'--shape takes one or two positive sizes, got {args.shape}')
    args.shape = args.shape * 2 if len(args.shape) == 1 else args.shape
    return args


def main(argv: Optional[List[str]] = None) -> None:
    args = parse_args(argv)
    print(f'input 1 x {args.shape[0]} x {args.shape[1]}; FLOPs are multiply-accumulates')
    print(f'{"model":<48} {"params (M)":>11} {"FLOPs (G)":>10}   breakdown (G)')
    for name in args.models:
        if name in a2mamba_core.list_models():
            result = core_complexity(name, args.shape)
        elif osp.isfile(name):
            result = config_complexity(name, args.shape, args.backbone)
        else:
            raise SystemExit(f'{name!r} is neither a model ({a2mamba_core.list_models()}) nor a config file')
        breakdown = ', '.join(f'{op} {macs / 1e9:.3f}' for op, macs in result.macs_by_op.items())
        print(f'{name:<48} {result.params / 1e6:>11.2f} {result.macs / 1e9:>10.2f}   {breakdown}')


if __name__ == '__main__':
    main()
