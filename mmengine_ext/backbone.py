"""A2Mamba as a backbone for every task (mmpretrain, mmdet, mmsegmentation).

One ``mmengine`` module; ``mmdet_ext`` and ``mmseg_ext`` only register it in their framework's
registry, and ``mmpretrain_ext`` subclasses it for classification (no output norms). The network
is :mod:`a2mamba_core`'s, and its parameters keep the authors' names (``patch_embed.*``,
``layers.N.*``), so the released classification checkpoints load unchanged; only the per-stage
output norms (``norm{i}``) are new.
"""
import warnings
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch.nn as nn
from mmengine.logging import MMLogger
from mmengine.model import BaseModule
from torch import Tensor
from torch.nn.modules.batchnorm import _BatchNorm

from a2mamba_core import ARCHS, MODEL_SPECS, A2Mamba, LayerNorm2d, compile_in_place, create_model, load_pretrained
from a2mamba_core.hub import is_url


def resolve_out_indices(out_indices: Union[int, Sequence[int]], num_stages: int) -> Tuple[int, ...]:
    """Validates ``out_indices`` (negative ones count from the last stage) and sorts them.

    Raises:
        ValueError: empty, repeated or outside ``[-num_stages, num_stages - 1]``.
    """
    indices = [out_indices] if isinstance(out_indices, int) else list(out_indices)
    if not indices:
        raise ValueError('out_indices must name at least one stage')
    resolved = []
    for index in indices:
        if not isinstance(index, int) or not -num_stages <= index < num_stages:
            raise ValueError(f'out_indices must be stage indices in [{-num_stages}, {num_stages - 1}], '
                             f'got {out_indices!r}')
        resolved.append(index % num_stages)
    if len(set(resolved)) != len(resolved):
        raise ValueError(f'out_indices repeats a stage: {out_indices!r}')
    return tuple(sorted(resolved))


def checkpointed_blocks(with_cp: Union[bool, Sequence[int]], depths: Sequence[int]) -> List[int]:
    """Per stage, how many leading blocks recompute their activations in backward.

    Raises:
        ValueError: ``with_cp`` is neither a bool nor one count in ``[0, depth]`` per stage.
    """
    if isinstance(with_cp, bool):
        return list(depths) if with_cp else [0] * len(depths)
    counts = list(with_cp) if isinstance(with_cp, Sequence) else None
    if (counts is None or len(counts) != len(depths)
            or not all(isinstance(c, int) and 0 <= c <= d for c, d in zip(counts, depths))):
        raise ValueError(f'with_cp must be a bool or {len(depths)} block counts, each between 0 and the '
                         f'stage depth {tuple(depths)}; got {with_cp!r}')
    return counts


class A2MambaBackbone(BaseModule):
    """A2Mamba's four stages as a feature pyramid (strides 4, 8, 16, 32), for any ``H x W``.

    Args:
        arch: model size, one of ``'nano'``, ``'tiny'``, ``'small'``, ``'base'``, ``'large'``.
        out_indices: stages whose maps are returned (0-3, negatives count from the end); each
            passes through its own LayerNorm2d (``norm{i}``) when ``out_norms``.
        out_norms: add those output norms (dense tasks); without them the maps are the
            stages' own, as the authors' classifier head reads stage 4.
        in_channels: input channels.
        img_size: training resolution; sizes the stage-4 global attention bias, which is
            resized to other inputs at run time (224 in the released checkpoints).
        frozen_stages: ``-1`` freezes nothing, ``0`` the stem, ``k >= 1`` the stem and stages
            ``1..k`` (each with the downsampling into it and its output norm): eval mode and
            ``requires_grad=False``, re-applied by every ``train()``.
        norm_eval: keep every BatchNorm (stem, downsamples, MASS gates) in eval mode while
            training, so their running statistics stay those of the checkpoint.
        drop_path_rate: stochastic depth, rising linearly over all blocks to this rate.
        with_cp: activation checkpointing: ``True`` for every block, or per stage the number of
            leading blocks to checkpoint (e.g. ``(0, 0, 6, 0)``).
        torch_compile: ``True`` or a dict of ``torch.compile`` arguments compiles this backbone's
            forward in place (:func:`a2mamba_core.compile_in_place`: state_dict names unchanged,
            the whole backbone one graph, its ops included; ``dict(mode='reduce-overhead')`` adds
            CUDA graphs). Use it rather than mmengine's ``compile=True``, which compiles the whole
            ``train_step`` including the optimizer step and fails there with torch 2.14. Shapes
            are static by default (``dynamic=False``): each new input size compiles again, which
            suits fixed-size training (classification, segmentation crops); for detection's
            varying image sizes pass ``dict(dynamic=True)``: one graph for every size (CUDA graphs
            need static shapes).
        init_cfg: ``None`` (random initialisation) or
            ``dict(type='Pretrained', checkpoint=PATH[, weights='plain'|'ema'][, strict=True])`` to
            load an A2Mamba checkpoint (the authors' classification release, or a
            ``backbone.``-prefixed one); the classifier is dropped. A missing file raises, and so
            does, unless ``strict=False``, a checkpoint that leaves a weight of the backbone
            (other than the output norms) unloaded or holds one of another shape. ``PATH`` may be
            an ``http(s)://`` URL (downloaded once into torch.hub's cache).
        pretrained: deprecated alias, as in mmdet/mmseg's own backbones: ``pretrained=PATH``
            is ``init_cfg=dict(type='Pretrained', checkpoint=PATH)``.
    """

    def __init__(self, arch: str = 'tiny', out_indices: Union[int, Sequence[int]] = (0, 1, 2, 3),
                 frozen_stages: int = -1, norm_eval: bool = False, drop_path_rate: float = 0.0,
                 with_cp: Union[bool, Sequence[int]] = False, out_norms: bool = True, in_channels: int = 3,
                 img_size: int = 224, torch_compile: Union[bool, dict] = False, init_cfg: Optional[dict] = None,
                 pretrained: Optional[str] = None):
        if pretrained is not None:
            init_cfg = _init_cfg_from_pretrained(pretrained, init_cfg)
        super().__init__(init_cfg=init_cfg)
        if arch not in ARCHS:
            raise ValueError(f'unknown A2Mamba arch {arch!r}; choose one of {list(ARCHS)}')
        depths = MODEL_SPECS[ARCHS[arch]]['depths']
        num_stages = len(depths)
        if not isinstance(frozen_stages, int) or not -1 <= frozen_stages <= num_stages:
            raise ValueError(f'frozen_stages must be an int in [-1, {num_stages}] (-1: nothing, 0: the stem, '
                             f'k: the stem and stages 1..k), got {frozen_stages!r}')
        if not 0.0 <= drop_path_rate < 1.0:
            raise ValueError(f'drop_path_rate must be in [0, 1), got {drop_path_rate}')
        if _is_pretrained(init_cfg):
            if (not init_cfg.get('checkpoint') or not set(init_cfg) <= {'type', 'checkpoint', 'weights', 'strict'}
                    or not isinstance(init_cfg.get('strict', True), bool)):
                raise ValueError("init_cfg must be dict(type='Pretrained', checkpoint=PATH[, weights='plain'|'ema']"
                                 f'[, strict=True|False]), got {init_cfg}')
        self.arch = arch
        self.out_indices = resolve_out_indices(out_indices, num_stages)
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        self.out_norms = out_norms
        self.in_channels = in_channels

        network = create_model(ARCHS[arch], num_classes=0, drop_path_rate=drop_path_rate,
                               use_checkpoint=checkpointed_blocks(with_cp, depths), in_chans=in_channels,
                               image_size=img_size)
        self.embed_dims = network.embed_dims
        self.num_stages = num_stages
        # The stages after the last returned one and the classifier are left behind (unused
        # parameters would stall DDP). This module owns the network's stem and layers under the
        # authors' names; the network itself is held unregistered, as the reader of its layout.
        network.prune_intermediate_layers(self.out_indices, prune_head=True)
        self.__dict__['_network'] = network
        self.patch_embed = network.patch_embed
        self.layers = network.layers
        for i in self.out_indices if out_norms else ():
            self.add_module(f'norm{i}', LayerNorm2d(self.embed_dims[i]))
        self._freeze_stages()
        compile_in_place(self, torch_compile)

    @property
    def network(self) -> A2Mamba:
        """The core model whose stem and stages this backbone runs (its classifier pruned)."""
        return self._network

    def _stage_modules(self, stage: int) -> List[nn.Module]:
        """Stage ``stage`` (1-based): the downsampling into it, its blocks, its output norm."""
        downsample = self.network.downsample(stage - 1)
        modules = ([downsample] if downsample is not None else []) + [self.network.stage(stage - 1)]
        if self.out_norms and stage - 1 in self.out_indices:
            modules.append(getattr(self, f'norm{stage - 1}'))
        return modules

    def _freeze_stages(self) -> None:
        frozen = [self.patch_embed] if self.frozen_stages >= 0 else []
        for stage in range(1, min(self.frozen_stages, self.out_indices[-1] + 1) + 1):
            frozen += self._stage_modules(stage)
        for module in frozen:
            module.eval()
            for param in module.parameters():
                param.requires_grad = False

    def train(self, mode: bool = True) -> 'A2MambaBackbone':
        """Sets the mode, keeping frozen stages (and, with ``norm_eval``, every BatchNorm) in eval."""
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for module in self.modules():
                if isinstance(module, _BatchNorm):
                    module.eval()
        return self

    def init_weights(self) -> None:
        """Loads the ``Pretrained`` checkpoint of ``init_cfg``; without one, keeps the random init.

        Raises:
            RuntimeError: the checkpoint leaves a weight of this backbone (other than the
                output norms) unloaded or has a tensor of another shape, unless ``strict=False``.
        """
        logger = MMLogger.get_current_instance()
        if self.init_cfg is None:
            logger.warning(f'No pretrained weights for {self.__class__.__name__} ({self.arch}): '
                           'training starts from random initialisation')
        elif _is_pretrained(self.init_cfg):
            path = self.init_cfg['checkpoint']
            output_norms = tuple(f'norm{i}.' for i in self.out_indices) if self.out_norms else ()
            # load_pretrained reports missing, unexpected and resized keys into the run's log
            load_pretrained(self, path, weights=self.init_cfg.get('weights', 'plain'),
                            state_dict_filter=self._backbone_part, strict=self.init_cfg.get('strict', True),
                            head_prefixes=output_norms, log_to=logger)
            fresh = ' (the output norms start fresh)' if self.out_norms else ''
            logger.info(f'{self.__class__.__name__}: loaded {path}{fresh}')
        else:
            super().init_weights()
            return
        self._is_init = True

    def forward(self, x: Tensor) -> Tuple[Tensor, ...]:
        """Args:
            x: ``(B, in_channels, H, W)`` images, any ``H, W``.

        Returns:
            one ``(B, C_i, ceil(H / 2^(i+2)), ...)`` map per index of ``out_indices`` (normalised
            when ``out_norms``).
        """
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f'{self.__class__.__name__} expects (B, {self.in_channels}, H, W) images, '
                             f'got shape {tuple(x.shape)}')
        maps = self.network.forward_intermediates(x, self.out_indices, intermediates_only=True)
        if self.out_norms:
            maps = [getattr(self, f'norm{i}')(m) for i, m in zip(self.out_indices, maps)]
        return tuple(maps)

    def _backbone_part(self, state_dict: Dict[str, Tensor]) -> Dict[str, Tensor]:
        """Drops the classifier and the stages this backbone does not run from a checkpoint. The
        stage-4 bias keeps its 224^2 shape: the model resizes it to the input at run time."""
        unused = ('classifier.',) + tuple(f'layers.{j}.' for j in range(len(self.layers), 2 * self.num_stages))
        return {k: v for k, v in state_dict.items() if not k.startswith(unused)}


def _is_pretrained(init_cfg: Optional[Union[dict, list]]) -> bool:
    return isinstance(init_cfg, dict) and init_cfg.get('type') == 'Pretrained'


def _init_cfg_from_pretrained(pretrained: str, init_cfg: Optional[dict]) -> dict:
    """The ``init_cfg`` of the deprecated ``pretrained=PATH`` argument.

    Raises:
        TypeError: ``pretrained`` is not a string.
        ValueError: ``init_cfg`` is set too, or ``pretrained`` names another model's weights
            (``open-mmlab://``, ``torchvision://``: a base config's model-level ``pretrained``).
    """
    if not isinstance(pretrained, str):
        raise TypeError(f'pretrained must be a checkpoint path or URL, or None; got {pretrained!r}')
    # mmseg's segmentors hand their own `pretrained=` (e.g. a ResNet's in a ResNet-based base
    # config) down to the backbone, so say where it comes from.
    hint = 'set model.pretrained=None in the config if it comes from a base config\'s model-level pretrained='
    if '://' in pretrained and not is_url(pretrained):
        raise ValueError(f'pretrained={pretrained!r} is not an A2Mamba checkpoint (a path or http(s) URL); {hint}')
    if init_cfg is not None:
        raise ValueError(f'pretrained={pretrained!r} and init_cfg={init_cfg} are both set; give the checkpoint '
                         f'only in init_cfg=dict(type=\'Pretrained\', checkpoint=...) and {hint}')
    warnings.warn("A2MambaBackbone: pretrained= is deprecated, use init_cfg=dict(type='Pretrained', "
                  f'checkpoint={pretrained!r})', FutureWarning, stacklevel=3)
    return dict(type='Pretrained', checkpoint=pretrained)
