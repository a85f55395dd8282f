"""Shows what A2Mamba attends to: for one or more query pixels, the attention maps of one MASS
token mixer (its k x k window and its dilated second scale, averaged over heads or of one head),
painted onto the image the model sees, next to the model's prediction. Works with any mmseg,
mmdet or mmpretrain config whose backbone is ``A2MambaBackbone`` / ``A2Mamba``.

    python tools/analysis/visualize_attention.py CONFIG CHECKPOINT IMAGE [--pixel ROW COL [--pixel ROW COL ...]]
        [--stage 3] [--block -1] [--head H] [--score-thr 0.3] [--out attention.png] [--device cpu]
        [--cfg-options k=v ...]

Pixels are in the coordinates of the image as the config's test pipeline hands it to the model
(after its resize or crop; the first panel shows that image with axes in those coordinates). For
a pipeline that does not resize, as the segmentation demo's, that is the image file itself.
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

sys.path.insert(0, osp.abspath(osp.join(osp.dirname(__file__), '..', '..')))

import mmengine_ext  # noqa: E402  (also puts mmengine checkpoints on torch's weights-only allow-list)
from a2mamba_core import MASS, A2Mamba  # noqa: E402
from ops.neighborhood_attention import axis_neighbors  # noqa: E402


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    from mmengine.config import DictAction

    parser = argparse.ArgumentParser(description='Plot the MASS attention of query pixels of an A2Mamba model')
    parser.add_argument('config', help='mmseg, mmdet or mmpretrain config with an A2Mamba backbone')
    parser.add_argument('checkpoint', help='trained model checkpoint')
    parser.add_argument('image', help='input image file')
    parser.add_argument('--pixel', type=int, nargs=2, action='append', metavar=('ROW', 'COL'),
                        help='query pixel in model-input coordinates; repeat for several (default: the centre)')
    parser.add_argument('--stage', type=int, default=3, choices=(1, 2, 3, 4), help='backbone stage (1-4)')
    parser.add_argument('--block', type=int, default=-1, help='block within the stage (negative: from the end)')
    parser.add_argument('--head', type=int,
                        help='head within each scale (0 .. heads/2 - 1; default: the mean over heads)')
    parser.add_argument('--score-thr', type=float, default=0.3, help='detections drawn from this score on')
    parser.add_argument('--out', default='attention.png', help='output PNG file')
    parser.add_argument('--device', default='cpu', help='torch device, e.g. cpu or cuda:0')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, help='override config entries')
    return parser.parse_args(argv)


def load_model(config: str, checkpoint: str, device: str, cfg_options: Optional[dict] = None):
    """The config's model with the checkpoint's weights (and dataset meta), in eval mode, and the
    config (merged with ``cfg_options``, its custom imports done and its default scope set)."""
    from mmengine.model import BaseTTAModel
    from mmengine.registry import MODELS
    from mmengine.runner import load_checkpoint

    cfg = mmengine_ext.load_config(config, cfg_options)
    model = MODELS.build(cfg.model)
    if isinstance(model, BaseTTAModel):
        raise ValueError(f'{config} wraps its model in test-time augmentation ({type(model).__name__}); '
                         'use the config it wraps')
    # the weights come from the checkpoint: building does not load init_cfg's pretrained file
    meta = load_checkpoint(model, checkpoint, map_location='cpu').get('meta', {})
    if meta.get('dataset_meta'):
        model.dataset_meta = meta['dataset_meta']
    return model.to(device).eval(), cfg


def test_pipeline(cfg) -> list:
    """The config's test pipeline without annotation loading (an image file has none)."""
    dataset = cfg.test_dataloader.dataset
    while 'dataset' in dataset:  # through wrappers such as RepeatDataset
        dataset = dataset.dataset
    return [t for t in dataset.pipeline if not t['type'].split('.')[-1] == 'LoadAnnotations']


def find_mixer(model: torch.nn.Module, stage: int, block: int) -> MASS:
    """The token mixer of ``block`` in ``stage`` (1-based) of the model's backbone."""
    network = getattr(getattr(model, 'backbone', None), 'network', None)
    if not isinstance(network, A2Mamba):
        raise ValueError(f'the model ({type(model).__name__}) has no A2Mamba backbone')
    if not 1 <= stage <= network.num_stages:
        raise ValueError(f'stage {stage} is not run by this backbone (out_indices={model.backbone.out_indices})')
    blocks = network.stage(stage - 1).blocks
    if not -len(blocks) <= block < len(blocks):
        raise ValueError(f'stage {stage} has {len(blocks)} blocks; --block {block} is out of range')
    return blocks[block].token_mixer


def pixel_attention(mixer: MASS, x: Tensor, pos_enc: Tuple[Tensor, Tensor], row: int, col: int,
                    head: Optional[int] = None) -> List[Tuple[np.ndarray, Tuple[int, int]]]:
    """Attention of the query at ``(row, col)`` over the ``H x W`` map, per scale.

    Args:
        x: ``(1, C, H, W)``, the mixer's input; ``pos_enc``: its stage's RoPE tables ``(cos, sin)``.
        head: head within each scale's half of the heads, or None for their mean.

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
            query = attn[0, :, row, col].float().cpu()  # [heads / 2, kh * kw]
            weights = query.mean(dim=0) if head is None else query[head]
            flat = torch.zeros(height * width).index_add_(0, keys[valid], weights[valid])
            maps.append((flat.view(height, width).numpy(), dilation))
    return maps


def class_palette(model: torch.nn.Module, num_classes: int) -> np.ndarray:
    palette = (getattr(model, 'dataset_meta', None) or {}).get('palette')
    if palette is None or len(palette) < num_classes:
        palette = np.random.default_rng(0).integers(0, 256, (num_classes, 3))
    return np.asarray(palette, dtype=np.float32)


def draw_prediction(ax, image: np.ndarray, result, model: torch.nn.Module, score_thr: float) -> str:
    """Paints a segmentation, detection or classification result on the original image; returns
    the panel's title."""
    classes = (getattr(model, 'dataset_meta', None) or {}).get('classes')
    if 'pred_sem_seg' in result:
        prediction = result.pred_sem_seg.data[0].cpu().numpy()
        palette = class_palette(model, int(prediction.max()) + 1)
        ax.imshow((0.5 * image + 0.5 * palette[prediction]).astype(np.uint8))
        return 'prediction'
    if 'pred_instances' in result:
        instances = result.pred_instances[result.pred_instances.scores >= score_thr].cpu()
        shown = image.astype(np.float32)
        palette = class_palette(model, int(instances.labels.max()) + 1 if len(instances) else 1)
        if 'masks' in instances:
            for mask, label in zip(instances.masks.numpy().astype(bool), instances.labels.tolist()):
                shown[mask] = 0.5 * shown[mask] + 0.5 * palette[label]
        ax.imshow(shown.astype(np.uint8))
        for (x1, y1, x2, y2), label in zip(instances.bboxes.tolist(), instances.labels.tolist()):
            ax.add_patch(plt.Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, lw=1.5,
                                       edgecolor=palette[label] / 255))
        return f'{len(instances)} detections, score >= {score_thr}'
    if 'pred_label' in result:
        label = int(result.pred_label[0])
        name = classes[label] if classes and label < len(classes) else str(label)
        ax.imshow(image)
        return f'predicted: {name} ({float(result.pred_score[label]):.2f})'
    raise ValueError(f'the model returned {type(result).__name__} with neither pred_sem_seg, pred_instances '
                     'nor pred_label')


def render(model_input: np.ndarray, original: np.ndarray, result, model: torch.nn.Module,
           pixels: List[Tuple[int, int]], maps: List[List[Tuple[np.ndarray, Tuple[int, int]]]],
           input_size: Tuple[int, int], title: str, score_thr: float, out: str) -> None:
    """Writes a PNG: the model input with the numbered pixels and the prediction on top, then
    per pixel a row with its window and dilated attention over the model input."""
    height, width = model_input.shape[:2]
    grey = model_input.mean(axis=-1)
    fig, axes = plt.subplots(1 + len(pixels), 2, figsize=(9, 4.2 * (1 + len(pixels))), squeeze=False)
    axes[0, 0].imshow(model_input)
    axes[0, 0].set_title(f'model input {height}x{width}')
    for number, (row, col) in enumerate(pixels, 1):
        axes[0, 0].plot(col, row, marker='+', color='cyan', markersize=14, mew=2)
        axes[0, 0].annotate(str(number), (col, row), xytext=(4, 4), textcoords='offset points', color='cyan')
    axes[0, 1].set_title(draw_prediction(axes[0, 1], original, result, model, score_thr))
    axes[0, 1].axis('off')
    for number, ((row, col), pixel_maps) in enumerate(zip(pixels, maps), 1):
        for ax, scale, (attention, dilation) in zip(axes[number], ('window', 'dilated'), pixel_maps):
            # nearest upsampling to the (padded) backbone input, cropped to the image
            rows = np.arange(height) * attention.shape[0] // input_size[0]
            cols = np.arange(width) * attention.shape[1] // input_size[1]
            ax.imshow(grey, cmap='gray')
            shown = ax.imshow(attention[rows][:, cols], cmap='inferno', alpha=0.6)
            fig.colorbar(shown, ax=ax, fraction=0.046)
            ax.plot(col, row, marker='+', color='cyan', markersize=14, mew=2)
            ax.set_title(f'pixel {number} ({row}, {col}): {scale} scale, dilation {dilation[0]}x{dilation[1]}')
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out, format='png', dpi=100)
    plt.close(fig)


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parse_args(argv)
    from mmengine.dataset import Compose, pseudo_collate

    for path in (args.config, args.checkpoint, args.image):
        if not osp.isfile(path):
            raise FileNotFoundError(f'no such file: {path}')
    model, cfg = load_model(args.config, args.checkpoint, args.device, args.cfg_options)
    mixer = find_mixer(model, args.stage, args.block)
    if args.head is not None and not 0 <= args.head < mixer.num_heads // 2:
        raise ValueError(f'stage {args.stage} has {mixer.num_heads // 2} heads per scale; '
                         f'--head {args.head} is out of range')

    data = Compose(test_pipeline(cfg))(dict(img_path=args.image, img_id=0))
    inputs = data['inputs']  # (C, H, W) uint8, after the pipeline's resize or crop
    height, width = inputs.shape[-2:]
    pixels = [tuple(p) for p in args.pixel] if args.pixel else [(height // 2, width // 2)]
    for row, col in pixels:
        if not (0 <= row < height and 0 <= col < width):
            raise ValueError(f'--pixel {row} {col} lies outside the {height}x{width} model input')

    captured = {}
    hooks = [mixer.register_forward_pre_hook(lambda module, inputs: captured.setdefault('mixer', inputs)),
             model.backbone.register_forward_pre_hook(lambda module, inputs: captured.setdefault('input', inputs))]
    try:
        with torch.no_grad():
            result = model.test_step(pseudo_collate([data]))[0]
    finally:
        for handle in hooks:
            handle.remove()
    x, pos_enc = captured['mixer']
    input_size = tuple(captured['input'][0].shape[-2:])  # the backbone input, padded by the preprocessor
    map_height, map_width = x.shape[-2:]
    cells = [(row * map_height // input_size[0], col * map_width // input_size[1]) for row, col in pixels]
    maps = [pixel_attention(mixer, x, pos_enc, cell_row, cell_col, args.head) for cell_row, cell_col in cells]

    # the loaders give BGR for colour images (the data preprocessor turns them into RGB)
    picture = inputs.permute(1, 2, 0).numpy()
    picture = np.repeat(picture, 3, axis=-1) if picture.shape[-1] == 1 else picture[..., ::-1]
    original = mmcv.imread(args.image, channel_order='rgb')
    heads = 'mean of heads' if args.head is None else f'head {args.head}'
    title = (f'{osp.basename(args.image)}: stage {args.stage} ({map_height}x{map_width} map), block {args.block}, '
             f'{heads}, window {mixer.window_size[0]}')
    render(np.ascontiguousarray(picture), original, result, model, pixels, maps, input_size, title,
           args.score_thr, args.out)
    for number, (pixel, cell) in enumerate(zip(pixels, cells), 1):
        print(f'pixel {number} {pixel} -> stage-map cell {cell}')
    print(f'wrote {args.out}')


if __name__ == '__main__':
    main()
