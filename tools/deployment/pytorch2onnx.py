"""Export an A2Mamba model to ONNX, and optionally check the file with ONNX Runtime.

    # a create_model classifier (logits), from an official-layout checkpoint
    python tools/deployment/pytorch2onnx.py a2mamba_t --checkpoint a2mamba_tiny.pth --verify
    # an mmpretrain classifier config (logits), any batch and size
    python tools/deployment/pytorch2onnx.py configs/mmpretrain/a2mamba-t_8xb256_in1k.py \\
        --checkpoint epoch_300.pth --dynamic-export --verify
    # an mmseg UperNet config: the whole segmentor, logits at the input size
    python tools/deployment/pytorch2onnx.py configs/mmseg/upernet_a2mamba-t_8xb2-160k_ade20k-512x512.py \\
        --checkpoint iter_160000.pth --shape 512 512 --verify
    # an mmdet config: backbone + neck (the FPN maps)
    python tools/deployment/pytorch2onnx.py configs/mmdet/mask-rcnn_a2mamba-t_fpn_1x_coco.py \\
        --shape 800 1344 --verify

The graph's input is the preprocessed image ``(B, C, H, W)`` float32 (mean/std applied, as
the config's ``data_preprocessor`` does). For mmdet only the backbone and the neck are
exported: the RoI heads of (Cascade) Mask R-CNN need mmcv ops (RoIAlign, NMS) that standard
ONNX lacks; export the whole detector with mmdeploy, which provides them.
``--verify`` compares ONNX Runtime (CPU) with PyTorch and exits non-zero on a mismatch.
"""
import argparse
import os.path as osp
import sys
from typing import List, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

sys.path.insert(0, osp.abspath(osp.join(osp.dirname(__file__), '..', '..')))
import a2mamba_core  # noqa: E402
from a2mamba_core.export import DEFAULT_MAX_SHAPE, MIN_DYNAMIC_SIDE, export_onnx, verify_onnx  # noqa: E402

DETECTION_NOTE = ('mmdet: exported the backbone and the neck only. The RoI heads need mmcv ops (RoIAlign, '
                  'NMS) that standard ONNX lacks; export the whole detector with mmdeploy.')


class SegmentorLogits(nn.Module):
    """An mmseg ``EncoderDecoder`` as one tensor function: per-class logits at the input size
    (what its ``encode_decode`` computes before the argmax)."""

    def __init__(self, segmentor: nn.Module):
        super().__init__()
        self.segmentor = segmentor

    def forward(self, x: Tensor) -> Tensor:
        head = self.segmentor.decode_head
        logits = head(self.segmentor.extract_feat(x))
        return F.interpolate(logits, size=x.shape[2:], mode='bilinear', align_corners=head.align_corners)


class ClassifierLogits(nn.Module):
    """An mmpretrain classifier's logits (``mode='tensor'``, no softmax)."""

    def __init__(self, classifier: nn.Module):
        super().__init__()
        self.classifier = classifier

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(x, mode='tensor')


class BackboneNeck(nn.Module):
    """An mmdet detector's feature pyramid: ``neck(backbone(x))``."""

    def __init__(self, detector: nn.Module):
        super().__init__()
        self.backbone, self.neck = detector.backbone, detector.neck

    def forward(self, x: Tensor) -> Tuple[Tensor, ...]:
        return tuple(self.neck(self.backbone(x)))


def build_from_config(path: str, checkpoint: Optional[str]) -> Tuple[nn.Module, int, str]:
    """The exportable module of a config, its input channels, and the task name."""
    from mmengine.config import Config
    from mmengine.model import revert_sync_batchnorm
    from mmengine.registry import init_default_scope
    from mmengine.runner import load_checkpoint

    import mmengine_ext  # noqa: F401  (mmengine checkpoints on torch's weights-only allow-list)

    cfg = Config.fromfile(path)  # also runs the config's custom_imports
    scope = cfg.get('default_scope')
    if scope not in ('mmpretrain', 'mmseg', 'mmdet'):
        raise ValueError(f'{path}: default_scope {scope!r} is none of mmpretrain, mmseg, mmdet')
    init_default_scope(scope)
    if scope == 'mmpretrain':
        from mmpretrain.registry import MODELS
    elif scope == 'mmseg':
        from mmseg.registry import MODELS
    else:
        from mmdet.registry import MODELS
    model_cfg = cfg.model.copy()
    model_cfg.pop('data_preprocessor', None)
    if checkpoint is not None and 'backbone' in model_cfg:
        # the checkpoint replaces every weight: skip loading the backbone's pretrained ones
        model_cfg.backbone.init_cfg = None
    # SyncBN (the segmentation configs) would need a process group; in eval mode it is a BN
    model = revert_sync_batchnorm(MODELS.build(model_cfg))
    if checkpoint is not None:
        if not osp.isfile(checkpoint):
            raise FileNotFoundError(f'checkpoint not found: {checkpoint!r}')
        load_checkpoint(model, checkpoint, map_location='cpu', strict=True)
    else:
        model.init_weights()
    in_channels = model_cfg.get('backbone', {}).get('in_channels', 3)
    if scope == 'mmpretrain':
        return ClassifierLogits(model), in_channels, 'classification'
    if scope == 'mmseg':
        if not hasattr(model, 'decode_head'):
            raise ValueError(f'{path}: {type(model).__name__} has no decode_head; an EncoderDecoder is expected')
        return SegmentorLogits(model), in_channels, 'segmentation'
    if not getattr(model, 'with_neck', False):
        raise ValueError(f'{path}: the detector has no neck; backbone + neck is what this tool exports')
    return BackboneNeck(model), in_channels, 'detection'


def build(model_or_config: str, checkpoint: Optional[str], num_classes: int) -> Tuple[nn.Module, int, str]:
    if model_or_config.endswith('.py'):
        if not osp.isfile(model_or_config):
            raise FileNotFoundError(f'config not found: {model_or_config!r}')
        return build_from_config(model_or_config, checkpoint)
    if model_or_config not in a2mamba_core.list_models():
        raise ValueError(f'{model_or_config!r} is neither a config (.py) nor one of {a2mamba_core.list_models()}')
    model = a2mamba_core.create_model(model_or_config, num_classes=num_classes)
    if checkpoint is not None:
        a2mamba_core.load_pretrained(model, checkpoint)
    return model, model.in_chans, 'classification'


def verification_inputs(shape: Tuple[int, int], in_channels: int, batch: int, dynamic: bool,
                        max_shape: Tuple[int, int]) -> List[Tensor]:
    """The traced size and, for a dynamic export, another batch and size within the range."""
    height, width = shape
    inputs = [torch.randn(batch, in_channels, height, width)]
    if dynamic:
        other = (max(MIN_DYNAMIC_SIDE, min(max_shape[0], height * 3 // 4 + 1)),
                 max(MIN_DYNAMIC_SIDE, min(max_shape[1], width + 32)))
        inputs.append(torch.randn(batch + 1, in_channels, *other))
    return inputs


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Export an A2Mamba model to ONNX')
    parser.add_argument('model_or_config', help=f'a model name ({", ".join(a2mamba_core.list_models())}) '
                                                'or an mmpretrain / mmseg / mmdet config file')
    parser.add_argument('--checkpoint', help='weights: an official-layout .pth for a model name, an mmengine '
                                             'checkpoint for a config (default: random initialisation)')
    parser.add_argument('--shape', type=int, nargs=2, default=(224, 224), metavar=('H', 'W'),
                        help='input size to trace (default: 224 224)')
    parser.add_argument('--batch-size', type=int, default=1, help='batch of a static export (default: 1)')
    parser.add_argument('--dynamic-export', action='store_true',
                        help=f'dynamic batch, height and width (each side {MIN_DYNAMIC_SIDE} px to --max-shape)')
    parser.add_argument('--max-shape', type=int, nargs=2, default=DEFAULT_MAX_SHAPE, metavar=('H', 'W'),
                        help='largest input of a dynamic export (default: %(default)s); larger gives NaN')
    parser.add_argument('--num-classes', type=int, default=1000, help='classes of a model name (default: 1000)')
    parser.add_argument('--opset', type=int, default=None, help="ONNX opset (default: the exporter's)")
    parser.add_argument('--optimize', action='store_true',
                        help="run the exporter's graph optimisation on the file (slow; ONNX Runtime "
                             'optimises the graph when it loads it anyway)')
    parser.add_argument('--output-file', default=None, help='default: <model or config name>.onnx')
    parser.add_argument('--verify', action='store_true',
                        help='run the file with ONNX Runtime (CPU) and compare with PyTorch; fails on a mismatch')
    parser.add_argument('--tolerance', type=float, default=1e-4,
                        help='largest relative L2 error --verify accepts (default: 1e-4)')
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> None:
    args = parse_args(argv)
    model, in_channels, task = build(args.model_or_config, args.checkpoint, args.num_classes)
    model.eval()
    output = args.output_file or osp.splitext(osp.basename(args.model_or_config))[0] + '.onnx'
    names = {'classification': ['logits'], 'segmentation': ['seg_logits'], 'detection': None}[task]
    export_onnx(model, output, tuple(args.shape), batch_size=args.batch_size, in_channels=in_channels,
                dynamic=args.dynamic_export, max_shape=tuple(args.max_shape), opset=args.opset,
                output_names=names, optimize=args.optimize)
    print(f'exported {args.model_or_config} ({task}) to {output}')
    if task == 'detection':
        print(DETECTION_NOTE)
    if args.verify:
        inputs = verification_inputs(tuple(args.shape), in_channels, args.batch_size, args.dynamic_export,
                                     tuple(args.max_shape))
        errors = verify_onnx(output, model, inputs, args.tolerance)
        for x, row in zip(inputs, errors):
            print(f'verified input {tuple(x.shape)}: relative L2 error ' + ', '.join(f'{e:.2e}' for e in row))


if __name__ == '__main__':
    main()
