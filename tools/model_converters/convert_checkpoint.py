"""Convert A2Mamba classification checkpoints between the authors' layout and mmpretrain's.

    # a released checkpoint -> an mmpretrain ImageClassifier checkpoint (for tools/test.py, load_from)
    python tools/model_converters/convert_checkpoint.py a2mamba_tiny.pth a2mamba-t_in1k.pth [--weights ema]
    # an mmpretrain checkpoint (e.g. work_dirs/.../epoch_300.pth) -> the authors' layout
    python tools/model_converters/convert_checkpoint.py epoch_300.pth a2mamba_tiny_mm.pth --to official

Official keys are ``patch_embed.*``, ``layers.*``, ``classifier.*``; mmpretrain's are
``backbone.patch_embed.*``, ``backbone.layers.*``, ``head.classifier.*``. Tensors are copied
unchanged; a key of neither layout is an error. An mmpretrain checkpoint trained with
``EMAHook`` already holds the EMA weights under ``state_dict`` (mmengine swaps them in when
saving), so ``--weights`` only applies to official checkpoints.
"""
import argparse
import os
import os.path as osp
import sys
from typing import Dict, List, Optional

import torch
from torch import Tensor

sys.path.insert(0, osp.abspath(osp.join(osp.dirname(__file__), '..', '..')))

from a2mamba_core import check_finite, load_checkpoint_file, read_checkpoint  # noqa: E402

# (importing the plugin also allows mmengine's HistoryBuffer in torch's weights-only unpickler)
from mmpretrain_ext.convert import mmpretrain_to_official, official_to_mmpretrain  # noqa: E402


def read_mmpretrain_checkpoint(path: str) -> Dict[str, Tensor]:
    """The ``state_dict`` of an mmengine checkpoint (``module.`` prefixes stripped), unpickled
    with ``weights_only=True`` (:func:`a2mamba_core.load_checkpoint_file`)."""
    checkpoint = load_checkpoint_file(path)
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get('state_dict'), dict):
        raise RuntimeError(f'{path!r} is not an mmengine checkpoint (no state_dict)')
    state_dict = {k[len('module.'):] if k.startswith('module.') else k: v for k, v in checkpoint['state_dict'].items()}
    check_finite(state_dict, path)
    return state_dict


def convert(src: str, dst: str, to: str = 'mmpretrain', weights: str = 'plain') -> Dict[str, Tensor]:
    """Converts ``src`` to the ``to`` layout and saves it to ``dst``; returns the new state_dict.

    The official reader strips ``module.`` and ``backbone.`` and accepts a bare state_dict or
    one under ``state_dict``/``model`` (``state_dict_ema``/``model_ema`` for ``weights='ema'``).
    """
    if to == 'mmpretrain':
        state_dict = official_to_mmpretrain(read_checkpoint(src, weights))
        checkpoint = {'state_dict': state_dict, 'meta': {'converted_from': osp.basename(src), 'weights': weights}}
    elif to == 'official':
        if weights != 'plain':
            raise ValueError('--weights applies to official checkpoints only (see the module doc)')
        state_dict = mmpretrain_to_official(read_mmpretrain_checkpoint(src))
        checkpoint = {'state_dict': state_dict}
    else:
        raise ValueError(f"to must be 'mmpretrain' or 'official', got {to!r}")
    os.makedirs(osp.dirname(osp.abspath(dst)), exist_ok=True)
    torch.save(checkpoint, dst)
    return state_dict


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description='Convert A2Mamba checkpoints (official <-> mmpretrain)')
    parser.add_argument('src', help='checkpoint to read')
    parser.add_argument('dst', help='where to write the converted checkpoint')
    parser.add_argument('--to', choices=['mmpretrain', 'official'], default='mmpretrain',
                        help='target layout (default: mmpretrain, i.e. src is an official checkpoint)')
    parser.add_argument('--weights', choices=['plain', 'ema'], default='plain',
                        help='which weights of an official training checkpoint to take')
    args = parser.parse_args(argv)
    state_dict = convert(args.src, args.dst, args.to, args.weights)
    print(f'wrote {len(state_dict)} tensors ({args.to} layout) to {args.dst}')


if __name__ == '__main__':
    main()
