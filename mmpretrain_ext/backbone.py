"""A2Mamba as an mmpretrain backbone: the shared :class:`mmengine_ext.A2MambaBackbone`, set up
for classification, plus mmpretrain's hooks for official checkpoints and layer-wise lr decay.

The backbone owns the core model's ``patch_embed`` and ``layers`` under their official names, so
an ``ImageClassifier`` holds ``backbone.patch_embed.*``/``backbone.layers.*`` and the authors'
checkpoints map onto it by prefix alone (:mod:`mmpretrain_ext.convert`).
"""
import re
from typing import Dict, Sequence, Tuple, Union

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

    def __init__(self, arch: str = 'tiny', *, out_indices: Union[int, Sequence[int]] = -1, out_norms: bool = False,
                 **kwargs):
        super().__init__(arch, out_indices=out_indices, out_norms=out_norms, **kwargs)

    @staticmethod
    def _checkpoint_filter(state_dict: Dict[str, Tensor], prefix: str, local_metadata: dict, strict: bool,
                           missing_keys: list, unexpected_keys: list, error_msgs: list) -> None:
        """``load_state_dict`` pre-hook that ``ImageClassifier`` registers: renames the keys of
        an official checkpoint (``patch_embed.*``, ``layers.*``, ``classifier.*``) to this
        classifier's, so the released ``a2mamba_*.pth`` load by ``load_from``/``--checkpoint``."""
        wrapped = [k for k, v in state_dict.items() if k.startswith(prefix) and isinstance(v, dict)]
        if wrapped:
            raise RuntimeError(f'the checkpoint holds nested dicts under {wrapped[:5]} instead of tensors; '
                               'convert it with tools/model_converters/convert_checkpoint.py first')
        renamed = rename_official_keys_inplace(state_dict, prefix)
        if renamed:
            print_log(f'A2Mamba: mapped {len(renamed)} keys of an official checkpoint to mmpretrain names',
                      logger='current')

    def get_layer_depth(self, param_name: str, prefix: str = '') -> Tuple[int, int]:
        """Layer-wise depth for layer-wise lr decay: the stem is 0, then one depth per block
        (a downsample shares the depth of the first block it feeds), the rest is last."""
        matcher = self.network.group_matcher()
        depths = [stage.depth for stage in self.network.stages]
        num_layers = sum(depths) + 2
        if not param_name.startswith(prefix):
            return num_layers - 1, num_layers
        name = param_name[len(prefix):]
        if re.match(matcher['stem'], name):
            return 0, num_layers
        for i, depth in enumerate(depths):
            for pattern, block in matcher[f'stage{i}']:
                match = re.match(pattern, name)
                if match:
                    # a block's number is its match; the downsample into the stage is block 0's
                    return 1 + sum(depths[:i]) + (int(match.group(1)) if block is None else block[0]), num_layers
        return num_layers - 1, num_layers
