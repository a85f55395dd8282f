"""Training and inference speed and peak memory of mmdet / mmseg configs on synthetic batches.

For each config of the list, in one process: builds the model from the config with random weights
(every ``Pretrained`` init and ``pretrained=`` path is dropped: timing needs no download) and its
optimizer wrapper, then times

* ``infer``: ``model.test_step`` (the data preprocessor, predict and its post-processing) under
  ``no_grad``, autocast with the training dtype; random weights score few detections above the
  configs' thresholds, so the mask head and post-processing do less work than with trained ones;
* ``train``: ``model.train_step`` (forward, losses, backward, optimizer step), AMP as the
  config's optimizer wrapper says (``AmpOptimWrapper``: autocast) unless ``--amp`` overrides it;
  every loss is checked finite on every iteration;
* ``backbone-fwd`` / ``backbone-train``: the config's backbone alone (forward under ``no_grad``;
  forward + backward of the mean of its outputs), at the size the model's backbone sees; a
  backbone already timed in the run (same settings, input, batch and dtype) is not timed again.

Batches are synthetic but shaped as the real ones. Detection: images of the largest size the
config's test ``Resize`` gives (COCO: 800x1333), each with ``--instances`` objects (boxes of
COCO-like sizes and aspect ratios, labels, polygon masks inside the boxes, rasterised to bitmaps
unless the config loads polygons: ``poly2mask=False``), when the model has a mask head. Segmentation: crops
of the config's training size (ADE20K: 512x512) with piecewise-constant label maps over the
decode head's classes and some ignored (255) regions. Each mode runs ``--warmup`` untimed
iterations, then ``--iters`` timed ones (synchronised at both ends); ``--budget-s`` bounds the
whole run by stopping each timed loop early at its share of the time left.

``--compile-backbone static|dynamic`` compiles each config's backbone in place (the same call for
A2Mamba's and the peers'), to time the compiled backbone beside the eager one; ``dynamic`` keeps
one graph for detection's varying image sizes.

Prints one Markdown table row per (config, mode), with the card, torch, dtype, batch and counts;
``--out FILE`` appends the rows (and the header, to a new file). Peak memory is
``torch.cuda.max_memory_allocated`` over the timed loop (n/a on a CPU). Exits with status 1 if a
config failed or a loss was not finite.

Configs are paths or ``mmdet::`` / ``mmseg::`` names resolved in the installed packages as
``Config.fromfile`` resolves ``_base_`` entries::

    python tools/analysis/benchmark_dense.py configs/mmdet/mask-rcnn_a2mamba-t_fpn_1x_coco.py \\
        mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py --amp fp16 --batch-size 2 \\
        --modes train infer backbone-fwd backbone-train --out bench.md
    python tools/analysis/benchmark_dense.py configs/mmseg/upernet_a2mamba-n_nuclei-demo.py \\
        --device cpu --amp fp32 --batch-size 2 --size 64 64 --warmup 1 --iters 2
"""
import argparse
import gc
import logging
import math
import os.path as osp
import sys
import time
import traceback
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from mmengine.config import Config, DictAction

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

MODES = ('train', 'infer', 'backbone-fwd', 'backbone-train')
MODE_LABELS = {'train': 'train', 'infer': 'inference', 'backbone-fwd': 'backbone forward',
               'backbone-train': 'backbone forward+backward'}
COLUMNS = ('config', 'mode', 'card', 'torch', 'dtype', 'batch', 'input', 'warm-up', 'iterations', 'it/s',
           'img/s', 'peak memory (GiB)', 'losses finite')


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('configs', nargs='+', help='config paths or mmdet::/mmseg:: config names')
    parser.add_argument('--modes', nargs='+', choices=MODES, default=['train', 'infer'],
                        help='what to time for each config (default: train infer)')
    parser.add_argument('--batch-size', type=int, help="images per step (default: the config's training batch)")
    parser.add_argument('--size', type=int, nargs=2, metavar=('H', 'W'),
                        help="image size (default: the largest image the config's test Resize gives, "
                             "800x1333 for COCO's, or its segmentation crop)")
    parser.add_argument('--backbone-size', type=int, nargs=2, metavar=('H', 'W'),
                        help="backbone-alone input (default: the image size padded as the config's data "
                             'preprocessor pads it, i.e. what the model\'s backbone sees)')
    parser.add_argument('--amp', choices=['config', 'fp32', 'fp16', 'bf16'], default='config',
                        help="mixed precision: as the config's optimizer wrapper says (default), or forced "
                             'for every config (one dtype for all rows of a comparison)')
    parser.add_argument('--iters', type=int, default=100, help='timed iterations per mode (default: 100)')
    parser.add_argument('--warmup', type=int, default=10, help='untimed iterations first (default: 10)')
    parser.add_argument('--budget-s', type=float, default=math.inf,
                        help='seconds for the whole run: each timed loop stops early at its share of the '
                             'time left (at least one iteration; the rates stay exact)')
    parser.add_argument('--instances', type=int, default=7,
                        help='objects per detection image (default: 7, the COCO mean)')
    parser.add_argument('--compile-backbone', choices=['static', 'dynamic'],
                        help="compile every config's backbone in place (nn.Module.compile, the same for "
                             'A2Mamba and its peers): static shapes (each new input size compiles again) or '
                             "dynamic (one graph for every size: detection's varying images); the first "
                             'warm-up iteration then compiles')
    parser.add_argument('--compile-backend', default='inductor',
                        help='torch.compile backend of --compile-backbone (default: inductor)')
    parser.add_argument('--device', default='cuda', help='torch device (default: cuda)')
    parser.add_argument('--out', help='append the table rows to this Markdown file')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override entries of every config, key=value')
    args = parser.parse_args(argv)
    for name in ('batch_size', 'iters', 'instances'):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f'--{name.replace("_", "-")} must be at least 1, got {value}')
    if args.warmup < 0:
        parser.error(f'--warmup must be 0 or more, got {args.warmup}')
    for name in ('size', 'backbone_size'):
        value = getattr(args, name)
        if value is not None and min(value) < 32:
            parser.error(f'--{name.replace("_", "-")} must be at least 32 x 32, got {value}')
    return args


def load_config(spec: str) -> Config:
    """A config from a path, or from an installed package for ``mmdet::``/``mmseg::`` names.

    Raises:
        FileNotFoundError: no such file (in the package).
        ModuleNotFoundError: the named package is not installed.
    """
    if '::' in spec:
        # the resolution Config.fromfile applies to `_base_` entries: the package's model index,
        # else its .mim/configs folder
        path, _ = Config._get_cfg_path(spec, '')
    else:
        path = spec
        if not osp.isfile(path):
            raise FileNotFoundError(f'no config file {path!r}')
    return Config.fromfile(path)


def config_name(spec: str) -> str:
    name = osp.splitext(osp.basename(spec))[0]
    return f'{spec.partition("::")[0]}::{name}' if '::' in spec else name


def _is_pretrained(init_cfg: Any) -> bool:
    return isinstance(init_cfg, dict) and init_cfg.get('type') == 'Pretrained'


def drop_pretrained(node: Any, path: str = 'model') -> List[str]:
    """Sets every ``Pretrained`` ``init_cfg`` and every ``pretrained`` path under ``node`` to None,
    in place; other initialisations stay. Returns the keys it changed."""
    dropped = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key == 'init_cfg' and (_is_pretrained(value) or (
                    isinstance(value, list) and any(_is_pretrained(v) for v in value))):
                node[key] = None
                dropped.append(f'{path}.{key}')
            elif key == 'pretrained' and isinstance(value, str):
                node[key] = None
                dropped.append(f'{path}.{key}')
            else:
                dropped += drop_pretrained(value, f'{path}.{key}')
    elif isinstance(node, (list, tuple)):
        for i, value in enumerate(node):
            dropped += drop_pretrained(value, f'{path}[{i}]')
    return dropped


def _walk(node: Any) -> Iterator[dict]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, (list, tuple)):
        for value in node:
            yield from _walk(value)


def task_of(cfg: Config) -> str:
    scope = cfg.get('default_scope')
    if scope not in ('mmdet', 'mmseg'):
        raise ValueError(f"expected an mmdet or mmseg config (default_scope 'mmdet' or 'mmseg'), got {scope!r}")
    return scope


def default_image_size(cfg: Config, task: str) -> Tuple[int, int]:
    """``(H, W)`` of a synthetic image: the largest landscape image the test ``Resize`` gives
    (detection: 800x1333 for COCO's scale (1333, 800) with ``keep_ratio``), or the training crop
    (segmentation: the data preprocessor's ``size``).

    Raises:
        ValueError: the config has neither; pass ``--size``.
    """
    if task == 'mmseg':
        size = cfg.model.get('data_preprocessor', {}).get('size')
        if size:
            return int(size[0]), int(size[1])
    else:
        for transform in _walk(cfg.get('test_dataloader', {})):
            if transform.get('type') == 'Resize' and transform.get('scale'):
                w, h = transform['scale']
                if transform.get('keep_ratio', False):
                    short, long = sorted((w, h))
                    return int(short), int(long)
                return int(h), int(w)
    where = ('model.data_preprocessor.size' if task == 'mmseg'
             else 'a Resize with a scale in test_dataloader')
    raise ValueError(f'the config sets no image size ({where}); pass --size H W')


def padded_size(cfg: Config, task: str, size: Tuple[int, int]) -> Tuple[int, int]:
    """What the data preprocessor makes of an image of ``size`` in training."""
    preprocessor = cfg.model.get('data_preprocessor', {})
    if task == 'mmseg' and preprocessor.get('size'):
        return tuple(max(s, p) for s, p in zip(size, preprocessor['size']))
    divisor = preprocessor.get('pad_size_divisor' if task == 'mmdet' else 'size_divisor') or 1
    return tuple(int(math.ceil(s / divisor)) * divisor for s in size)


def num_classes_of(cfg: Config, task: str) -> int:
    if task == 'mmseg':
        head = cfg.model.get('decode_head')
    else:
        head = cfg.model.get('roi_head', {}).get('bbox_head') or cfg.model.get('bbox_head')
        head = head[-1] if isinstance(head, (list, tuple)) else head
    if not head or 'num_classes' not in head:
        where = 'model.decode_head' if task == 'mmseg' else 'model.roi_head.bbox_head or model.bbox_head'
        raise ValueError(f'cannot tell the number of classes: no num_classes in {where}')
    return int(head['num_classes'])


def mask_kind(cfg: Config) -> Optional[str]:
    """``None`` without a mask head; else ``'polygon'`` if the training pipeline loads polygons
    (``LoadAnnotations(poly2mask=False)``), else ``'bitmap'`` (mmdet's default)."""
    if 'mask_head' not in cfg.model.get('roi_head', {}) and 'mask_head' not in cfg.model:
        return None
    for transform in _walk(cfg.get('train_dataloader', {})):
        if transform.get('type') == 'LoadAnnotations' and transform.get('with_mask'):
            return 'bitmap' if transform.get('poly2mask', True) else 'polygon'
    return 'bitmap'


def detection_batch(batch_size: int, size: Tuple[int, int], num_classes: int, num_instances: int,
                    masks: Optional[str], seed: int = 0) -> Dict[str, list]:
    """COCO-like training batch on the CPU, as a dataloader yields it.

    Args:
        batch_size: images.
        size: ``(H, W)`` of every image (after the pipeline's resize).
        num_classes: labels are drawn from ``[0, num_classes)``.
        num_instances: objects per image.
        masks: ``None`` (no masks), ``'bitmap'`` or ``'polygon'``.

    Returns:
        ``dict(inputs=[uint8 (3, H, W)] * batch_size, data_samples=[DetDataSample])``; each object
        is a 16-gon inscribed in its box (the box is the polygon's extent), with a side of
        16 px to half the short image side, log-uniformly, and aspect ratio 1:2 to 2:1.
    """
    from mmdet.structures import DetDataSample
    from mmdet.structures.mask import BitmapMasks, PolygonMasks
    from mmengine.structures import InstanceData
    rng = np.random.default_rng(seed)
    h, w = size
    angles = np.linspace(0, 2 * np.pi, 16, endpoint=False)
    inputs, samples = [], []
    for index in range(batch_size):
        inputs.append(torch.from_numpy(rng.integers(0, 256, (3, h, w), dtype=np.uint8)))
        side = np.exp(rng.uniform(np.log(16), np.log(min(h, w) / 2), num_instances))
        aspect = np.exp(rng.uniform(np.log(0.5), np.log(2.0), num_instances))
        box_w, box_h = np.minimum(side * np.sqrt(aspect), w - 1), np.minimum(side / np.sqrt(aspect), h - 1)
        x0, y0 = rng.uniform(0, w - box_w), rng.uniform(0, h - box_h)
        radius = rng.uniform(0.7, 1.0, (num_instances, angles.size))
        xs = x0[:, None] + box_w[:, None] * (1 + radius * np.cos(angles)) / 2
        ys = y0[:, None] + box_h[:, None] * (1 + radius * np.sin(angles)) / 2
        boxes = np.stack([xs.min(1), ys.min(1), xs.max(1), ys.max(1)], axis=1)
        instances = InstanceData(bboxes=torch.from_numpy(boxes).float(),
                                 labels=torch.from_numpy(rng.integers(0, num_classes, num_instances)))
        if masks:
            polygons = PolygonMasks([[np.stack([x, y], 1).ravel()] for x, y in zip(xs, ys)], h, w)
            # uint8 bitmaps, as LoadAnnotations decodes them (mmdet's padding rejects bool arrays)
            instances.masks = polygons if masks == 'polygon' else \
                BitmapMasks(polygons.to_ndarray().astype(np.uint8), h, w)
        sample = DetDataSample(metainfo=dict(img_id=index, img_shape=(h, w), ori_shape=(h, w),
                                             scale_factor=(1.0, 1.0), flip=False, flip_direction=None))
        sample.gt_instances = instances
        sample.ignored_instances = InstanceData(bboxes=torch.zeros(0, 4), labels=torch.zeros(0, dtype=torch.long))
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)


def segmentation_batch(batch_size: int, size: Tuple[int, int], num_classes: int,
                       seed: int = 0) -> Dict[str, list]:
    """ADE20K-like training batch on the CPU: uint8 images and int64 ``(1, H, W)`` label maps of
    32x32-pixel regions, each one class of ``[0, num_classes)`` or, one in ten, ignored (255)."""
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    rng = np.random.default_rng(seed)
    h, w = size
    inputs, samples = [], []
    for _ in range(batch_size):
        inputs.append(torch.from_numpy(rng.integers(0, 256, (3, h, w), dtype=np.uint8)))
        regions = rng.integers(0, num_classes, (-(-h // 32), -(-w // 32)))
        regions[rng.random(regions.shape) < 0.1] = 255
        labels = regions.repeat(32, 0).repeat(32, 1)[:h, :w]
        sample = SegDataSample(metainfo=dict(img_shape=(h, w), ori_shape=(h, w), flip=False))
        sample.gt_sem_seg = PixelData(data=torch.from_numpy(labels)[None])
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)


def apply_amp(cfg: Config, amp: str) -> None:
    """Forces the optimizer wrapper's precision: ``fp32`` (``OptimWrapper``) or ``fp16``/``bf16``
    (``AmpOptimWrapper``); ``config`` keeps it."""
    if amp == 'config':
        return
    wrapper = cfg.optim_wrapper
    if amp == 'fp32':
        wrapper.type = 'OptimWrapper'
        for key in ('dtype', 'loss_scale'):
            wrapper.pop(key, None)
    else:
        wrapper.type = 'AmpOptimWrapper'
        wrapper.dtype = {'fp16': 'float16', 'bf16': 'bfloat16'}[amp]


def amp_dtype_of(cfg: Config) -> Optional[torch.dtype]:
    """The autocast dtype the config's optimizer wrapper trains with, None for full precision."""
    wrapper = cfg.optim_wrapper
    if wrapper.type.rpartition('.')[-1] != 'AmpOptimWrapper':
        return None
    dtype = wrapper.get('dtype')
    if dtype is None:  # AmpOptimWrapper then leaves autocast at its default, float16 on CUDA
        return torch.float16
    return getattr(torch, dtype) if isinstance(dtype, str) else dtype


def dtype_label(dtype: Optional[torch.dtype]) -> str:
    if dtype is None:
        return 'fp32'
    return {torch.float16: 'fp16', torch.bfloat16: 'bf16'}.get(dtype, str(dtype).replace('torch.', '')) + ' AMP'


def autocast(device: torch.device, dtype: Optional[torch.dtype]) -> Callable[[], Any]:
    return (lambda: torch.autocast(device.type, dtype=dtype)) if dtype else nullcontext


class Budget:
    """Splits the time left among the timed loops left."""

    def __init__(self, seconds: float, loops: int):
        self.end = time.perf_counter() + seconds
        self.loops = loops

    def deadline(self) -> float:
        now = time.perf_counter()
        share = (self.end - now) / max(self.loops, 1)
        self.loops -= 1
        return now + share

    def skip(self) -> None:
        self.loops -= 1


def synchronize(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def timed_loop(step: Callable[[], None], device: torch.device, warmup: int, iters: int,
               deadline: float) -> Tuple[int, float, Optional[float]]:
    """Runs ``step`` ``warmup`` times, then up to ``iters`` times, stopping after ``deadline``
    (``time.perf_counter``) once at least one iteration is done.

    Returns:
        ``(iterations timed, their seconds, peak GiB allocated during them or None on a CPU)``.
    """
    for _ in range(warmup):
        step()
    synchronize(device)
    if device.type == 'cuda':
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    done = 0
    while done < iters and (done == 0 or time.perf_counter() < deadline):
        step()
        done += 1
    synchronize(device)
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated(device) / 2 ** 30 if device.type == 'cuda' else None
    return done, seconds, peak


@dataclass
class Row:
    config: str
    mode: str
    card: str
    torch: str
    dtype: str
    batch: int
    input: Tuple[int, int]
    warmup: int
    iters: int
    planned_iters: int
    seconds: float
    peak_gib: Optional[float]
    losses_finite: Optional[bool]

    @property
    def it_per_s(self) -> float:
        return self.iters / self.seconds

    @property
    def img_per_s(self) -> float:
        return self.iters * self.batch / self.seconds

    def markdown(self) -> str:
        iters = str(self.iters) if self.iters == self.planned_iters else f'{self.iters} (of {self.planned_iters})'
        cells = (self.config, MODE_LABELS[self.mode], self.card, self.torch, self.dtype, str(self.batch),
                 f'{self.input[0]}×{self.input[1]}', str(self.warmup), iters, f'{self.it_per_s:.3f}',
                 f'{self.img_per_s:.2f}', 'n/a' if self.peak_gib is None else f'{self.peak_gib:.2f}',
                 {None: '-', True: 'yes', False: 'no'}[self.losses_finite])
        return '| ' + ' | '.join(cells) + ' |'


def table_header() -> str:
    return '| ' + ' | '.join(COLUMNS) + ' |\n|' + '---|' * len(COLUMNS)


def card_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'


def build_model(cfg: Config, device: torch.device) -> torch.nn.Module:
    from mmengine.model import revert_sync_batchnorm
    from mmengine.registry import MODELS
    model = revert_sync_batchnorm(MODELS.build(cfg))  # one process: plain BN, as the Runner does
    model.to(device)
    model.init_weights()
    return model


class DenseBenchmark:
    """Times the modes of one config after another, sharing one :class:`Budget`."""

    def __init__(self, args: argparse.Namespace, device: torch.device, emit: Callable[[Row], None]):
        self.args = args
        self.device = device
        self.emit = emit
        self.budget = Budget(args.budget_s, len(args.configs) * len(args.modes))
        self.timed_backbones: Dict[str, str] = {}  # backbone identity -> the config it was timed with

    def row(self, name: str, mode: str, dtype: Optional[torch.dtype], batch: int, size: Tuple[int, int],
            step: Callable[[], None], finite: Optional[Callable[[], bool]] = None) -> Row:
        done, seconds, peak = timed_loop(step, self.device, self.args.warmup, self.args.iters,
                                         self.budget.deadline())
        row = Row(name, mode, card_name(self.device), torch.__version__, dtype_label(dtype), batch, size,
                  self.args.warmup, done, self.args.iters, seconds, peak, finite() if finite else None)
        self.emit(row)
        return row

    def run(self, spec: str) -> List[Row]:
        args, device = self.args, self.device
        from mmengine.optim import build_optim_wrapper
        from mmengine.registry import init_default_scope
        cfg = load_config(spec)
        if args.cfg_options:
            cfg.merge_from_dict(args.cfg_options)
        name = config_name(spec) + (f' [backbone compiled, {args.compile_backbone}]' if args.compile_backbone else '')
        task = task_of(cfg)
        init_default_scope(task)
        dropped = drop_pretrained(cfg.model)
        if dropped:
            print(f'[{name}] random weights: {", ".join(dropped)} set to None', file=sys.stderr, flush=True)
        apply_amp(cfg, args.amp)
        size = tuple(args.size) if args.size else default_image_size(cfg, task)
        if task == 'mmseg' and args.size:
            cfg.model.data_preprocessor.size = size  # the training crop the preprocessor pads to
        batch_size = args.batch_size or cfg.get('train_dataloader', {}).get('batch_size')
        if not batch_size:
            raise ValueError(f'{name}: the config sets no train_dataloader.batch_size; pass --batch-size')
        torch.backends.cudnn.benchmark = cfg.get('env_cfg', {}).get('cudnn_benchmark', False)  # as the Runner
        torch.manual_seed(0)
        dtype = amp_dtype_of(cfg)
        if dtype and device.type != 'cuda':
            raise ValueError(f'{name}: the config trains with AMP (AmpOptimWrapper), which runs on a GPU only; '
                             f'pass --amp fp32 to time it on {device}')
        rows: List[Row] = []
        model_modes = [m for m in args.modes if not m.startswith('backbone')]
        if model_modes:
            from mmengine.optim import AmpOptimWrapper
            model = build_model(cfg.model, device)
            self.compile_backbone(model.backbone)
            optim_wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
            if isinstance(optim_wrapper, AmpOptimWrapper) != (dtype is not None):
                raise ValueError(f'{name}: optim_wrapper type {cfg.optim_wrapper.type!r} built a '
                                 f'{type(optim_wrapper).__name__}; expected AmpOptimWrapper or OptimWrapper')
            if task == 'mmdet':
                batch = detection_batch(batch_size, size, num_classes_of(cfg, task), args.instances, mask_kind(cfg))
            else:
                batch = segmentation_batch(batch_size, size, num_classes_of(cfg, task))
            rows += self.time_model(name, model, optim_wrapper, batch, dtype, batch_size, size, model_modes)
            del model, optim_wrapper, batch
            release(device)
        backbone_modes = [m for m in args.modes if m.startswith('backbone')]
        if backbone_modes:
            backbone_size = tuple(args.backbone_size) if args.backbone_size else padded_size(cfg, task, size)
            rows += self.time_backbone(name, cfg, dtype, batch_size, backbone_size, backbone_modes)
        return rows

    def compile_backbone(self, backbone: torch.nn.Module) -> None:
        if self.args.compile_backbone:
            backbone.compile(dynamic=self.args.compile_backbone == 'dynamic', backend=self.args.compile_backend)

    def time_model(self, name: str, model: torch.nn.Module, optim_wrapper: Any, batch: Dict[str, list],
                   dtype: Optional[torch.dtype], batch_size: int, size: Tuple[int, int],
                   modes: List[str]) -> List[Row]:
        rows = []
        if 'infer' in modes:  # first: its peak memory then holds no optimizer state
            model.eval()
            cast = autocast(self.device, dtype)

            def infer_step() -> None:
                with torch.no_grad(), cast():
                    model.test_step(batch)

            rows.append(self.row(name, 'infer', dtype, batch_size, size, infer_step))
        if 'train' in modes:
            model.train()
            finite = torch.ones((), dtype=torch.bool, device=self.device)

            def train_step() -> None:
                nonlocal finite
                log_vars = model.train_step(batch, optim_wrapper)
                losses = [v.detach().float() for k, v in log_vars.items() if 'loss' in k]
                # on the device: no synchronisation inside the timed loop
                finite = finite & torch.stack(losses).isfinite().all()

            rows.append(self.row(name, 'train', dtype, batch_size, size, train_step, lambda: bool(finite)))
        return rows

    def time_backbone(self, name: str, cfg: Config, dtype: Optional[torch.dtype], batch_size: int,
                      size: Tuple[int, int], modes: List[str]) -> List[Row]:
        identity = f'{cfg.default_scope}:{cfg.model.backbone!r}:{size}:{batch_size}:{dtype}'
        if identity in self.timed_backbones:
            print(f'[{name}] backbone already timed with {self.timed_backbones[identity]} (same backbone, '
                  'input, batch and dtype): no backbone rows', file=sys.stderr, flush=True)
            for _ in modes:
                self.budget.skip()
            return []
        self.timed_backbones[identity] = name
        torch.manual_seed(0)
        backbone = build_model(cfg.model.backbone, self.device)
        self.compile_backbone(backbone)
        x = torch.randn(batch_size, 3, *size, device=self.device)
        cast = autocast(self.device, dtype)
        rows = []
        label = f'{name} (backbone)'
        if 'backbone-fwd' in modes:
            backbone.eval()

            def forward() -> None:
                with torch.no_grad(), cast():
                    backbone(x)

            rows.append(self.row(label, 'backbone-fwd', dtype, batch_size, size, forward))
        if 'backbone-train' in modes:
            backbone.train()
            finite = torch.ones((), dtype=torch.bool, device=self.device)

            def forward_backward() -> None:
                nonlocal finite
                with cast():
                    outs = backbone(x)
                loss = sum(out.float().mean() for out in outs)
                loss.backward()
                backbone.zero_grad(set_to_none=True)
                finite = finite & loss.detach().isfinite()

            rows.append(self.row(label, 'backbone-train', dtype, batch_size, size, forward_backward,
                                 lambda: bool(finite)))
        del backbone, x
        release(self.device)
        return rows


def release(device: torch.device) -> None:
    gc.collect()
    if device.type == 'cuda':
        torch.cuda.empty_cache()


def main(argv: Optional[Sequence[str]] = None) -> List[Row]:
    args = parse_args(argv)
    device = torch.device(args.device)
    if device.type == 'cuda' and not torch.cuda.is_available():
        raise SystemExit('--device cuda: no GPU is visible; pass --device cpu (tiny sizes) to run on the CPU')
    from mmengine.logging import MMLogger
    # init_weights logs a line per parameter at INFO, on stdout, between the table's rows
    MMLogger.get_current_instance().setLevel(logging.WARNING)
    header = table_header()
    new_file = bool(args.out) and (not osp.exists(args.out) or osp.getsize(args.out) == 0)
    if new_file:
        with open(args.out, 'a', encoding='utf-8') as f:
            f.write(header + '\n')
    print(header, flush=True)

    def emit(row: Row) -> None:
        print(row.markdown(), flush=True)
        if args.out:
            with open(args.out, 'a', encoding='utf-8') as f:
                f.write(row.markdown() + '\n')

    bench = DenseBenchmark(args, device, emit)
    rows: List[Row] = []
    failed = []
    for spec in args.configs:
        loops_left = bench.budget.loops
        try:
            rows += bench.run(spec)
        except Exception:  # one broken config must not cost the others' rows; reported and in the status
            traceback.print_exc()
            print(f'[{config_name(spec)}] FAILED', file=sys.stderr, flush=True)
            failed.append(spec)
            bench.budget.loops = loops_left - len(args.modes)  # its loops' time goes to the next configs
            release(device)
    not_finite = [f'{r.config} {r.mode}' for r in rows if r.losses_finite is False]
    if failed or not_finite:
        print(f'failed: {failed}; losses not finite: {not_finite}', file=sys.stderr)
        sys.exit(1)
    return rows


if __name__ == '__main__':
    main()
