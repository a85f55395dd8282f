"""A2Mamba as an mmpretrain backbone: the modules of :mod:`a2mamba_core`, mmpretrain's knobs.

The backbone owns the core model's ``patch_embed`` and ``layers`` under their official
names, so an ``ImageClassifier`` holds ``backbone.patch_embed.*``/``backbone.layers.*`` and
the authors' checkpoints map onto it by prefix alone (:mod:`mmpretrain_ext.convert`).
"""
import logging
from typing import Dict, Optional, Sequence, Tuple, Union

from mmengine.logging import print_log
from mmpretrain.models.backbones.base_backbone import BaseBackbone
from mmpretrain.registry import MODELS
from torch import Tensor
from torch.nn.modules.batchnorm import _BatchNorm

from a2mamba_core import MODEL_SPECS, load_pretrained
from a2mamba_core import A2Mamba as A2MambaCore

from .convert import BACKBONE_PREFIXES, rename_official_keys_inplace


def _backbone_keys(state_dict: Dict[str, Tensor]) -> Dict[str, Tensor]:
    """Keeps the stem and stage tensors of a whole-model checkpoint (official or mmpretrain,
    whose ``backbone.`` prefix the reader has stripped) and drops the classifier/head."""
    return {k: v for k, v in state_dict.items() if k.startswith(BACKBONE_PREFIXES)}


@MODELS.register_module()
class A2Mamba(BaseBackbone):
    """A2Mamba backbone (arXiv 2507.16624): the stem and stages of :class:`a2mamba_core.A2Mamba`.

    Args:
        arch: ``'nano'``, ``'tiny'``, ``'small'``, ``'base'``, ``'large'`` (or ``n/t/s/b/l``),
            or a dict of :class:`a2mamba_core.A2Mamba` arguments (``embed_dims``, ``depths``,
            ``num_heads``, ...).
        in_channels: input channels.
        img_size: training resolution; sizes the stage-4 global attention bias (resized at
            run time for other inputs). 224 for the released checkpoints.
        drop_path_rate: stochastic depth, rising linearly over all blocks.
        out_indices: stages (0-3, negatives count from the end) whose maps are returned.
        frozen_stages: freeze the stem and the first ``frozen_stages`` stages (each with
            the downsample feeding it); 0 freezes nothing.
        norm_eval: keep every BatchNorm in eval mode while training.
        with_cp: gradient checkpointing: ``True`` for every block, or per stage the number
            of leading blocks that recompute their activations in backward.
        init_cfg: ``dict(type='Pretrained', checkpoint=PATH, weights='plain'|'ema')`` loads
            the stem and stages of an official or mmpretrain checkpoint (the classifier is
            dropped); other init configs are mmengine's.
    """

    arch_aliases = {
        'n': 'a2mamba_n', 'nano': 'a2mamba_n', 't': 'a2mamba_t', 'tiny': 'a2mamba_t',
        's': 'a2mamba_s', 'small': 'a2mamba_s', 'b': 'a2mamba_b', 'base': 'a2mamba_b',
        'l': 'a2mamba_l', 'large': 'a2mamba_l',
    }

    def __init__(self, arch: Union[str, dict] = 'tiny', in_channels: int = 3, img_size: int = 224,
                 drop_path_rate: float = 0.0, out_indices: Union[int, Sequence[int]] = -1,
                 frozen_stages: int = 0, norm_eval: bool = False, with_cp: Union[bool, Sequence[int]] = False,
                 init_cfg: Optional[Union[dict, list]] = None):
        pretrained, init_cfg = self._split_pretrained(init_cfg)
        super().__init__(init_cfg=init_cfg)
        self.pretrained = pretrained
        if isinstance(arch, str):
            if arch not in self.arch_aliases:
                raise ValueError(f'unknown A2Mamba arch {arch!r}; choose one of {sorted(self.arch_aliases)} '
                                 'or pass a dict of a2mamba_core.A2Mamba arguments')
            spec = dict(MODEL_SPECS[self.arch_aliases[arch]])
        elif isinstance(arch, dict):
            spec = dict(arch)
        else:
            raise TypeError(f'arch must be a str or a dict, got {type(arch).__name__}')
        num_stages = len(spec['depths'])
        self.num_stages = num_stages
        self.out_indices = self._resolve_out_indices(out_indices, num_stages)
        if not 0 <= frozen_stages <= num_stages:
            raise ValueError(f'frozen_stages must be in [0, {num_stages}], got {frozen_stages}')
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        self.in_channels = in_channels

        core = A2MambaCore(**dict(
            spec, num_classes=0, in_chans=in_channels, image_size=img_size, drop_path_rate=drop_path_rate,
            use_checkpoint=self._checkpoint_counts(with_cp, spec['depths'])))
        # Only the stem and the stages: the classifier belongs to the head.
        self.patch_embed = core.patch_embed
        self.layers = core.layers
        self.embed_dims = core.embed_dims
        self.depths = core.depths
        self._freeze_stages()

    @staticmethod
    def _split_pretrained(init_cfg: Optional[Union[dict, list]]) -> Tuple[Optional[dict], Optional[list]]:
        """Takes the ``Pretrained`` entry out of ``init_cfg``: this backbone loads it itself."""
        if init_cfg is None:
            return None, None
        cfgs = [init_cfg] if isinstance(init_cfg, dict) else list(init_cfg)
        pretrained = [c for c in cfgs if c.get('type') == 'Pretrained']
        if len(pretrained) > 1:
            raise ValueError(f'init_cfg has {len(pretrained)} Pretrained entries; give one')
        if pretrained and 'checkpoint' not in pretrained[0]:
            raise ValueError(f'init_cfg Pretrained needs a checkpoint path, got {pretrained[0]}')
        others = [c for c in cfgs if c.get('type') != 'Pretrained']
        return (pretrained[0] if pretrained else None), (others or None)

    @staticmethod
    def _resolve_out_indices(out_indices: Union[int, Sequence[int]], num_stages: int) -> Tuple[int, ...]:
        indices = (out_indices,) if isinstance(out_indices, int) else tuple(out_indices)
        if not indices:
            raise ValueError('out_indices is empty')
        resolved = []
        for index in indices:
            if not -num_stages <= index < num_stages:
                raise ValueError(f'out_indices must be in [-{num_stages}, {num_stages - 1}], got {index}')
            resolved.append(index % num_stages)
        return tuple(sorted(set(resolved)))

    @staticmethod
    def _checkpoint_counts(with_cp: Union[bool, Sequence[int]], depths: Sequence[int]) -> Tuple[int, ...]:
        if isinstance(with_cp, bool):
            return tuple(depths) if with_cp else (0,) * len(depths)
        counts = tuple(int(c) for c in with_cp)
        if len(counts) != len(depths) or any(not 0 <= c <= d for c, d in zip(counts, depths)):
            raise ValueError(f'with_cp must be a bool or one block count per stage within depths {tuple(depths)}, '
                             f'got {with_cp}')
        return counts

    def _freeze_stages(self) -> None:
        if self.frozen_stages == 0:
            return
        # the stem, then stage 0, downsample 0, ..., stage k-1 (a downsample feeds the next stage)
        frozen = [self.patch_embed] + list(self.layers[:2 * self.frozen_stages - 1])
        for module in frozen:
            module.eval()
            for param in module.parameters():
                param.requires_grad = False

    def train(self, mode: bool = True) -> 'A2Mamba':
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for module in self.modules():
                if isinstance(module, _BatchNorm):
                    module.eval()
        return self

    def init_weights(self) -> None:
        """mmengine's init_cfg, then the ``Pretrained`` checkpoint if any. Without one the
        weights keep a2mamba_core's initialisation (training from scratch)."""
        first_call = not self.is_init
        super().init_weights()
        if not first_call:
            return
        if self.pretrained is None:
            print_log('A2Mamba backbone: no pretrained checkpoint, training from scratch', logger='current')
            return
        path = self.pretrained['checkpoint']
        load_pretrained(self, path, weights=self.pretrained.get('weights', 'plain'), state_dict_filter=_backbone_keys)
        print_log(f'A2Mamba backbone: loaded {path}', logger='current', level=logging.INFO)

    def forward(self, x: Tensor) -> Tuple[Tensor, ...]:
        """Args:
            x: ``(B, in_channels, H, W)``.

        Returns:
            The maps of the stages in ``out_indices``, ``(B, C_i, H / 2^(i+2), W / 2^(i+2))``.
        """
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f'A2Mamba expects a (B, {self.in_channels}, H, W) input, got {tuple(x.shape)}')
        x = self.patch_embed(x)
        outs = []
        for i in range(self.out_indices[-1] + 1):
            if i > 0:
                x = self.layers[2 * i - 1](x)  # the downsample into stage i
            x = self.layers[2 * i](x)
            if i in self.out_indices:
                outs.append(x)
        return tuple(outs)

    @staticmethod
    def _checkpoint_filter(state_dict: Dict[str, Tensor], prefix: str, local_metadata: dict, strict: bool,
                           missing_keys: list, unexpected_keys: list, error_msgs: list) -> None:
        """``load_state_dict`` pre-hook that ``ImageClassifier`` registers: renames the keys of
        an official checkpoint (``patch_embed.*``, ``layers.*``, ``classifier.*``) to this
        classifier's, so the released ``a2mamba_*.pth`` load by ``load_from``/``--checkpoint``."""
        wrapped = [k for k, v in state_dict.items() if k.startswith(prefix) and isinstance(v, dict)]
        if wrapped:
            raise RuntimeError(f'the checkpoint holds nested dicts under {wrapped[:5]} instead of tensors; '
                               'convert it with tools/convert_checkpoint.py first')
        renamed = rename_official_keys_inplace(state_dict, prefix)
        if renamed:
            print_log(f'A2Mamba: mapped {len(renamed)} keys of an official checkpoint to mmpretrain names',
                      logger='current')

    def get_layer_depth(self, param_name: str, prefix: str = '') -> Tuple[int, int]:
        """Layer-wise depth for layer-wise lr decay: the stem is 0, then one depth per block
        (a downsample shares the depth of the first block it feeds), the rest is last."""
        num_layers = sum(self.depths) + 2
        if not param_name.startswith(prefix):
            return num_layers - 1, num_layers
        name = param_name[len(prefix):]
        if name.startswith('patch_embed.'):
            return 0, num_layers
        if name.startswith('layers.'):
            parts = name.split('.')
            layer = int(parts[1])
            stage = layer // 2
            if layer % 2:  # the downsample after stage `stage`
                return 1 + sum(self.depths[:stage + 1]), num_layers
            if parts[2] == 'blocks':
                return 1 + sum(self.depths[:stage]) + int(parts[3]), num_layers
        return num_layers - 1, num_layers
