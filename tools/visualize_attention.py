"""Shows what A2Mamba attends to: the input, the predicted segmentation and, for one pixel, the
attention maps of one MASS token mixer (its k x k window and its dilated second scale, averaged
over heads), painted onto the image. Works with any mmseg config whose backbone is
``A2MambaBackbone``.

    python tools/visualize_attention.py CONFIG CHECKPOINT IMAGE [--pixel ROW COL] [--stage 3]
        [--block -1] [--out attention.png] [--device cpu]
"""
import argparse
import os.path as osp
import sys
from typing import List, Optional, Sequence, Tuple

import matplotlib

matplotlib.use('Agg')  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import mmcv  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import Tensor  # noqa: E402

sys.path.insert(0, osp.abspath(osp.join(osp.dirname(__file__), '..')))

from a2mamba_core import MASS  # noqa: E402
import mmengine_ext  # noqa: E402,F401  (mmengine checkpoints on torch's weights-only allow-list)
from ops.neighborhood_attention import axis_neighbors  # noqa: E402


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Plot the MASS attention of one pixel of an A2Mamba segmentor')
    parser.add_argument('config', help='mmseg config with an A2MambaBackbone')
    parser.add_argument('checkpoint', help='trained segmentor checkpoint')
    parser.add_argument('image', help='input image file')
    parser.add_argument('--pixel', type=int, nargs=2, metavar=('ROW', 'COL'),
                        help='query pixel in image coordinates (default: the centre)')
    parser.add_argument('--stage', type=int, default=3, choices=(1, 2, 3, 4), help='backbone stage (1-4)')
    parser.add_argument('--block', type=int, default=-1, help='block within the stage (negative: from the end)')
    parser.add_argument('--out', default='attention.png', help='output PNG file')
    parser.add_argument('--device', default='cpu', help='torch device, e.g. cpu or cuda:0')
    return parser.parse_args(argv)


def find_mixer(model: torch.nn.Module, stage: int, block: int) -> MASS:
    """The token mixer of ``block`` in ``stage`` (1-based) of the segmentor's backbone."""
    layers = getattr(model.backbone, 'layers', None)
    if layers is None:
        raise ValueError(f'the backbone is a {type(model.backbone).__name__}, not an A2MambaBackbone')
    if 2 * stage - 2 >= len(layers):
        raise ValueError(f'stage {stage} is not run by this backbone (out_indices={model.backbone.out_indices})')
    blocks = layers[2 * stage - 2].blocks
    if not -len(blocks) <= block < len(blocks):
        raise ValueError(f'stage {stage} has {len(blocks)} blocks; --block {block} is out of range')
    return blocks[block].token_mixer


def pixel_attention(mixer: MASS, x: Tensor, pos_enc: Tuple[Tensor, Tensor], row: int, col: int
                    ) -> List[Tuple[np.ndarray, Tuple[int, int]]]:
    """Head-averaged attention of the query at ``(row, col)`` over the ``H x W`` map, per scale.

    Args:
        x: ``(1, C, H, W)``, the mixer's input; ``pos_enc``: its RoPE ``(sin, cos)``.

    Returns:
        ``[(map (H, W), dilation), ...]`` for the window scale and the dilated scale.
    """
    height, width = x.shape[-2:]
    with torch.no_grad():
        q, k, _ = mixer.split_heads(mixer.qkv(x), pos_enc)
        scales = zip(mixer.attention_maps(q, k, height, width), ((1, 1), mixer.dilation(height, width)))
        maps = []
        for attn, dilation in scales:
            rows = axis_neighbors(height, mixer.window_size[0], dilation[0], torch.device('cpu'))
            cols = axis_neighbors(width, mixer.window_size[1], dilation[1], torch.device('cpu'))
            # the query's kh x kw neighbors, row-major like the map's last axis
            keys = (rows.key[row][:, None] * width + cols.key[col][None, :]).flatten()
            valid = (rows.valid[row][:, None] & cols.valid[col][None, :]).flatten()
            weights = attn[0, :, row, col].float().mean(dim=0).cpu()  # [kh * kw]
            flat = torch.zeros(height * width).index_add_(0, keys[valid], weights[valid])
            maps.append((flat.view(height, width).numpy(), dilation))
    return maps


def render(image: np.ndarray, prediction: np.ndarray, palette: np.ndarray, pixel: Tuple[int, int],
           maps: List[Tuple[np.ndarray, Tuple[int, int]]], title: str, out: str) -> None:
    """Writes a PNG: input, prediction overlay and each attention map, upsampled to the image."""
    height, width = image.shape[:2]
    overlay = (0.5 * image + 0.5 * palette[prediction]).astype(np.uint8)
    grey = image.mean(axis=-1)
    fig, axes = plt.subplots(1, 2 + len(maps), figsize=(4 * (2 + len(maps)), 4.4))
    panels = [(image, 'input'), (overlay, 'prediction')]
    for ax, (picture, name) in zip(axes, panels):
        ax.imshow(picture)
        ax.set_title(name)
    for ax, (attention, dilation) in zip(axes[2:], maps):
        # nearest upsampling: one block per stage-map cell
        rows = np.minimum(np.arange(height) * attention.shape[0] // height, attention.shape[0] - 1)
        cols = np.minimum(np.arange(width) * attention.shape[1] // width, attention.shape[1] - 1)
        ax.imshow(grey, cmap='gray')
        shown = ax.imshow(attention[rows][:, cols], cmap='inferno', alpha=0.6)
        fig.colorbar(shown, ax=ax, fraction=0.046)
        ax.set_title(f'attention, dilation {dilation[0]}x{dilation[1]}')
    for ax in axes:
        ax.plot(pixel[1], pixel[0], marker='+', color='cyan', markersize=14, mew=2)
        ax.axis('off')
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out, format='png', dpi=100)
    plt.close(fig)


def class_palette(model: torch.nn.Module, num_classes: int) -> np.ndarray:
    palette = (getattr(model, 'dataset_meta', None) or {}).get('palette')
    if palette is None or len(palette) < num_classes:
        palette = np.random.default_rng(0).integers(0, 256, (num_classes, 3))
    return np.asarray(palette, dtype=np.float32)


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parse_args(argv)
    from mmseg.apis import inference_model, init_model

    for path in (args.config, args.checkpoint, args.image):
        if not osp.isfile(path):
            raise FileNotFoundError(f'no such file: {path}')
    model = init_model(args.config, args.checkpoint, device=args.device)
    mixer = find_mixer(model, args.stage, args.block)
    image = mmcv.imread(args.image, channel_order='rgb')
    height, width = image.shape[:2]
    row, col = args.pixel if args.pixel else (height // 2, width // 2)
    if not (0 <= row < height and 0 <= col < width):
        raise ValueError(f'--pixel {row} {col} lies outside the {height}x{width} image')

    captured = []
    handle = mixer.register_forward_pre_hook(lambda module, inputs: captured.append(inputs))
    try:
        result = inference_model(model, args.image)
    finally:
        handle.remove()
    x, pos_enc = captured[0]
    map_height, map_width = x.shape[-2:]
    map_row, map_col = min(row * map_height // height, map_height - 1), min(col * map_width // width, map_width - 1)
    maps = pixel_attention(mixer, x, pos_enc, map_row, map_col)

    prediction = result.pred_sem_seg.data[0].cpu().numpy()
    palette = class_palette(model, model.decode_head.num_classes)
    title = (f'{osp.basename(args.image)}: pixel ({row}, {col}) -> stage {args.stage} cell ({map_row}, {map_col}) '
             f'of {map_height}x{map_width}, block {args.block}, window {mixer.window_size[0]}')
    render(image, prediction, palette, (row, col), maps, title, args.out)
    print(f'wrote {args.out}')


if __name__ == '__main__':
    main()
