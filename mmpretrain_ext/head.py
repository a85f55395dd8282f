"""The authors' classifier head with mmpretrain's loss/predict API."""
from typing import Optional, Tuple, Union

import torch.nn as nn
from mmpretrain.models.heads import ClsHead
from mmpretrain.registry import MODELS
from torch import Tensor


@MODELS.register_module()
class A2MambaClsHead(ClsHead):
    """1x1 conv to ``hidden_channels`` -> BatchNorm -> SiLU -> global average pool -> 1x1 conv
    to ``num_classes``: the official A2Mamba head, stored as ``classifier.{0,1,4}`` as in
    the released checkpoints.

    Args:
        num_classes: number of classes.
        in_channels: channels of the last backbone map.
        hidden_channels: channels of the first 1x1 conv (1024 in every released model).
        loss, topk, cal_acc: as :class:`mmpretrain.models.heads.ClsHead`.
        init_cfg: defaults to the authors' truncated-normal (std 0.02) convs with zero bias.
    """

    def __init__(self, num_classes: int, in_channels: int, hidden_channels: int = 1024,
                 loss: Optional[dict] = None, topk: Union[int, Tuple[int, ...]] = (1,), cal_acc: bool = False,
                 init_cfg: Optional[Union[dict, list]] = None):
        if init_cfg is None:
            init_cfg = dict(type='TruncNormal', layer='Conv2d', std=0.02, bias=0.0)
        super().__init__(loss=loss or dict(type='CrossEntropyLoss', loss_weight=1.0), topk=topk,
                         cal_acc=cal_acc, init_cfg=init_cfg)
        for name, value in (('num_classes', num_classes), ('in_channels', in_channels),
                            ('hidden_channels', hidden_channels)):
            if value <= 0:
                raise ValueError(f'{name} must be positive, got {value}')
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.classifier = nn.Sequential(
            nn.Conv2d(in_channels, hidden_channels, kernel_size=1), nn.BatchNorm2d(hidden_channels), nn.SiLU(),
            nn.AdaptiveAvgPool2d(1), nn.Conv2d(hidden_channels, num_classes, kernel_size=1))

    def pre_logits(self, feats: Tuple[Tensor, ...]) -> Tensor:
        """Pooled ``(B, hidden_channels)`` features of the last map ``feats[-1]: (B, C, H, W)``."""
        x = feats[-1]
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f'A2MambaClsHead expects a (B, {self.in_channels}, H, W) map, got {tuple(x.shape)}')
        return self.classifier[:4](x).flatten(1)

    def forward(self, feats: Tuple[Tensor, ...]) -> Tensor:
        """Logits ``(B, num_classes)``."""
        pooled = self.pre_logits(feats)
        return self.classifier[4](pooled[:, :, None, None]).flatten(1)
