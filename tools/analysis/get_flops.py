"""FLOPs and parameters of A2Mamba models at a given input size, the custom ops included.

    python tools/analysis/get_flops.py a2mamba_t [a2mamba_s ...] [--shape 224 224]
    python tools/analysis/get_flops.py CONFIG [CONFIG ...] [--shape H W] [--backbone] [--cfg-options k=v ...]

CONFIG is any classification, detection or segmentation config (mmpretrain, mmdet, mmseg). Its
whole model is built with its registries and run once in ``mode='tensor'`` on a random image of
``--shape`` that went through the model's own data preprocessor (normalisation, padding), with
the data-sample metadata (image and pad shapes) that detectors need; ``--backbone`` counts the
backbone alone. A detector's RoI heads cost in proportion to the proposals the RPN keeps from
that image, so the count of proposals is printed too.

FLOPs are multiply-accumulates, the convention of the paper's table (and of fvcore).
Convolutions and matrix products are counted by torch's ``FlopCounterMode`` (which reports
two FLOPs per MAC). The custom ops run through a counting backend of :mod:`ops` that
computes nothing and counts from the shapes:

* ``na2d_qk`` and ``na2d_av``: ``B * heads * H * W * (kh * kw) * head_dim`` each;
* the selective scan: ``4 * B * D * N * L`` (per state and step: ``delta * A``,
  ``delta * u * B`` and the recurrence ``a * h + b``).

Element-wise operations, normalisations and softmax are not counted. Parameters are counted
once even where shared (the tied ``rpb``).
"""
import argparse
import contextlib
import importlib
import os.path as osp
import sys
from collections import defaultdict
from typing import Dict, Iterator, List, NamedTuple, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from torch import Tensor
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, osp.abspath(osp.join(osp.dirname(__file__), '..', '..')))

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


# The data-sample class each framework's models read their image metadata from.
DATA_SAMPLES = {'mmdet': ('mmdet.structures', 'DetDataSample'), 'mmseg': ('mmseg.structures', 'SegDataSample'),
                'mmpretrain': ('mmpretrain.structures', 'DataSample')}


def model_inputs(model: nn.Module, scope: str, shape: Sequence[int]) -> Tuple[Tensor, list]:
    """A random ``H x W`` image as the model sees it in a test step: through its data
    preprocessor (normalised, padded), with data samples that carry the image metadata."""
    if scope not in DATA_SAMPLES:
        raise ValueError(f'default_scope {scope!r} is none of {sorted(DATA_SAMPLES)}: '
                         'cannot make the data samples its model expects')
    module, name = DATA_SAMPLES[scope]
    sample_type = getattr(importlib.import_module(module), name)
    backbone = getattr(model, 'backbone', None)
    channels = getattr(backbone, 'in_channels', 3)
    height, width = shape
    # a random image rather than zeros, so the RPN's proposals are those of a textured input
    image = torch.randint(0, 256, (channels, height, width), dtype=torch.uint8,
                          generator=torch.Generator().manual_seed(0))
    sample = sample_type(metainfo=dict(img_shape=(height, width), ori_shape=(height, width),
                                       scale_factor=(1.0, 1.0)))
    data = model.data_preprocessor(dict(inputs=[image], data_samples=[sample]), False)
    return data['inputs'], data['data_samples']


def config_complexity(config: str, shape: Sequence[int], backbone_only: bool = False,
                      cfg_options: Optional[dict] = None) -> Tuple[Complexity, Optional[int]]:
    """Complexity of a config's whole model (or of its backbone alone) at ``shape = (H, W)``.

    Returns:
        The complexity, and for a two-stage detector the number of proposals its RoI head ran on
        (None otherwise).
    """
    from mmengine.model import BaseTTAModel
    from mmengine.registry import MODELS

    from mmengine_ext import load_config

    cfg = load_config(config, cfg_options)
    model = MODELS.build(cfg.model)
    if isinstance(model, BaseTTAModel):
        raise ValueError(f'{config} wraps its model in test-time augmentation ({type(model).__name__}); '
                         'count the config it wraps')
    inputs, data_samples = model_inputs(model, cfg.get('default_scope'), shape)
    if backbone_only:
        if not hasattr(model, 'backbone'):
            raise ValueError(f'{type(model).__name__} has no backbone; drop --backbone')
        return count_complexity(model.backbone, inputs), None
    roi_head = getattr(model, 'roi_head', None)
    if roi_head is None:
        return count_complexity(model, inputs, data_samples=data_samples, mode='tensor'), None
    # mmdet calls roi_head.forward(x, rpn_results_list, ...) directly, past any module hook
    proposals = []
    roi_forward = roi_head.forward

    def counting_forward(x, rpn_results_list, *args, **kwargs):
        proposals.append(sum(len(result) for result in rpn_results_list))
        return roi_forward(x, rpn_results_list, *args, **kwargs)

    roi_head.forward = counting_forward
    try:
        result = count_complexity(model, inputs, data_samples=data_samples, mode='tensor')
    finally:
        del roi_head.forward
    return result, proposals[0]


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    from mmengine.config import DictAction

    parser = argparse.ArgumentParser(description='FLOPs (MACs) and parameters of A2Mamba models')
    parser.add_argument('models', nargs='+', help=f'model names ({", ".join(a2mamba_core.list_models())}) '
                                                  'or config files (classification, detection, segmentation)')
    parser.add_argument('--shape', type=int, nargs='+', default=[224, 224], help='input H [W]')
    parser.add_argument('--backbone', action='store_true', help='count only the backbone of a config model')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config entries, e.g. model.backbone.arch=small')
    args = parser.parse_args(argv)
    if len(args.shape) not in (1, 2) or min(args.shape) <= 0:
        parser.error(f'--shape takes one or two positive sizes, got {args.shape}')
    args.shape = args.shape * 2 if len(args.shape) == 1 else args.shape
    if args.cfg_options and all(name in a2mamba_core.list_models() for name in args.models):
        parser.error('--cfg-options applies to config files, not to model names')
    return args


def main(argv: Optional[List[str]] = None) -> None:
    args = parse_args(argv)
    print(f'input 1 x {args.shape[0]} x {args.shape[1]}; FLOPs are multiply-accumulates')
    print(f'{"model":<48} {"params (M)":>11} {"FLOPs (G)":>10}   breakdown (G)')
    for name in args.models:
        proposals = None
        if name in a2mamba_core.list_models():
            result = core_complexity(name, args.shape)
        elif osp.isfile(name):
            result, proposals = config_complexity(name, args.shape, args.backbone, args.cfg_options)
        else:
            raise SystemExit(f'{name!r} is neither a model ({a2mamba_core.list_models()}) nor a config file')
        breakdown = ', '.join(f'{op} {macs / 1e9:.3f}' for op, macs in result.macs_by_op.items())
        note = f' (RoI heads on {proposals} proposals)' if proposals is not None else ''
        print(f'{name:<48} {result.params / 1e6:>11.2f} {result.macs / 1e9:>10.2f}   {breakdown}{note}')


if __name__ == '__main__':
    main()
