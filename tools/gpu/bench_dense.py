"""Training speed of an mmdet or mmseg config on synthetic batches: iterations/s and peak memory.

Builds the config's model (random weights: the backbone's ``init_cfg`` is dropped) and its optimizer
wrapper (AMP where the config says so), then times ``train_step`` on one fixed random batch after a
warm-up. Prints one JSON line, for docs/BENCHMARKS.md.

    python tools/gpu/bench_dense.py configs/mmdet/cascade-mask-rcnn_a2mamba-t_fpn_3x_coco.py \
        --batch-size 2 --size 800 1333 --iters 100
    python tools/gpu/bench_dense.py configs/mmseg/upernet_a2mamba-t_8xb2-160k_ade20k-512x512.py \
        --batch-size 8 --size 512 512 --iters 200
"""
import argparse
import json
import os.path as osp
import sys
import time
from typing import Dict, List, Tuple

import torch
from mmengine.config import Config, DictAction
from mmengine.model import revert_sync_batchnorm
from mmengine.optim import build_optim_wrapper
from mmengine.registry import MODELS, init_default_scope

sys.path.insert(0, osp.abspath(osp.join(osp.dirname(__file__), '..', '..')))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Time train_step of a dense config on synthetic data')
    parser.add_argument('config')
    parser.add_argument('--batch-size', type=int, required=True)
    parser.add_argument('--size', type=int, nargs=2, required=True, metavar=('H', 'W'))
    parser.add_argument('--iters', type=int, default=100, help='timed iterations')
    parser.add_argument('--warmup', type=int, default=10, help='untimed iterations first')
    parser.add_argument('--max-seconds', type=float, default=float('inf'),
                        help='stop the timed loop early after this long (the rate is still exact)')
    parser.add_argument('--device', default='cuda', help='torch device (cpu: a smoke run, no memory figure)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, help='override config entries')
    return parser.parse_args()


def detection_batch(batch_size: int, size: Tuple[int, int], num_classes: int, device: torch.device) -> Dict[str, list]:
    from mmdet.testing import demo_mm_inputs
    return demo_mm_inputs(batch_size, [(3, *size)] * batch_size, num_items=[20] * batch_size,
                          num_classes=num_classes, with_mask=True, device=device)


def segmentation_batch(batch_size: int, size: Tuple[int, int], num_classes: int, device: torch.device) -> Dict[str, list]:
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    generator = torch.Generator().manual_seed(0)
    inputs: List[torch.Tensor] = []
    samples: List[SegDataSample] = []
    for _ in range(batch_size):
        inputs.append(torch.randint(0, 256, (3, *size), dtype=torch.uint8, generator=generator).to(device))
        sample = SegDataSample(metainfo=dict(img_shape=size, ori_shape=size, pad_shape=size))
        labels = torch.randint(0, num_classes, (1, *size), generator=generator)
        sample.gt_sem_seg = PixelData(data=labels.to(device))
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)


def main() -> None:
    args = parse_args()
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    scope = cfg.get('default_scope')
    init_default_scope(scope)
    cfg.model.backbone.init_cfg = None  # speed does not depend on the weights
    device = torch.device(args.device)
    on_gpu = device.type == 'cuda'
    model = revert_sync_batchnorm(MODELS.build(cfg.model)).to(device)  # one GPU: plain BN
    model.init_weights()
    model.train()
    optim_wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    size = tuple(args.size)
    if scope == 'mmdet':
        num_classes = cfg.model.roi_head.bbox_head[0].num_classes if isinstance(
            cfg.model.roi_head.bbox_head, list) else cfg.model.roi_head.bbox_head.num_classes
        batch = detection_batch(args.batch_size, size, num_classes, device)
    else:
        batch = segmentation_batch(args.batch_size, size, cfg.model.decode_head.num_classes, device)

    for _ in range(args.warmup):
        model.train_step(batch, optim_wrapper)
    if on_gpu:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    done = 0
    losses = {}
    while done < args.iters and time.perf_counter() - start < args.max_seconds:
        losses = model.train_step(batch, optim_wrapper)
        done += 1
    if on_gpu:
        torch.cuda.synchronize(device)
    elapsed = time.perf_counter() - start
    finite = all(torch.isfinite(v).all().item() for v in losses.values() if isinstance(v, torch.Tensor))
    print(json.dumps(dict(
        config=osp.basename(args.config), device=torch.cuda.get_device_name(device) if on_gpu else 'cpu',
        torch=torch.__version__,
        optim_wrapper=cfg.optim_wrapper.type, batch_size=args.batch_size, size=list(size), iters=done,
        seconds=round(elapsed, 2), it_per_s=round(done / elapsed, 3), img_per_s=round(done * args.batch_size / elapsed, 2),
        peak_mem_gib=round(torch.cuda.max_memory_allocated(device) / 2 ** 30, 2) if on_gpu else None,
        losses_finite=finite)))


if __name__ == '__main__':
    main()
