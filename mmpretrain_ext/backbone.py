"""A2Mamba as an mmpretrain backbone: the shared :class:`mmengine_ext.A2MambaBackbone`, set up
for classification, plus mmpretrain's hooks for official checkpoints and layer-wise lr decay.

The backbone owns the core model's ``patch_embed`` and ``layers`` under their official names, so
an ``ImageClassifier`` holds ``backbone.patch_embed.*``/``backbone.layers.*`` and the authors'
checkpoints map onto it by prefix alone (:mod:`mmpretrain_ext.convert`).
"""
from typing import Dict, Optional, Sequence, Tuple, Union

from mmengine.logging import print_log
from mmpretrain.registry import MODELS
from torch import Tensor

from mmengine_ext import A2MambaBackbone

from .convert import rename_official_keys_inplace


@MODELS.register_module()
class A2Mamba(A2MambaBackbone):
    """A2Mamba backbone (arXiv 2507.16624) for mmpretrain.

    The arguments are :class:`mmengine_ext.A2MambaBackbone`'s; only the defaults differ: the last
    stage alone (``out_indices=-1``) and no output norms, since the authors' head
    (:class:`~mmpretrain_ext.A2MambaClsHead`) reads the raw stage-4 map. ``frozen_stages``:
    ``-1`` freezes nothing, ``0`` the stem, ``k`` the stem and stages ``1..k``.
    """

    def __init__(self, arch: str = 'tiny', out_indices: Union[int, Sequence[int]] = -1, frozen_stages: int = -1,
                 norm_eval: bool = False, drop_path_rate: float = 0.0, with_cp: Union[bool, Sequence[int]] = False,
                 out_norms: bool = False, in_channels: int = 3, img_size: int = 224,
                 torch_compile: Union[bool, dict] = False, init_cfg: Optional[dict] = None):
        super().__init__(arch=arch, out_indices=out_indices, frozen_stages=frozen_stages, norm_eval=norm_eval,
                         drop_path_rate=drop_path_rate, with_cp=with_cp, out_norms=out_norms,
                         in_channels=in_channels, img_size=img_size, torch_compile=torch_compile,
                         init_cfg=init_cfg)

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
        depths = [self.layers[2 * i].depth for i in range((len(self.layers) + 1) // 2)]
        num_layers = sum(depths) + 2
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
                return 1 + sum(depths[:stage + 1]), num_layers
            if parts[2] == 'blocks':
                return 1 + sum(depths[:stage]) + int(parts[3]), num_layers
        return num_layers - 1, num_layers
