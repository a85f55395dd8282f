"""tools/analysis/benchmark_dense.py: synthetic batches, config resolution, and CPU runs of tiny
A2Mamba-N Mask R-CNN and UperNet models that produce table rows with finite losses."""
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO, load_tool

bench = load_tool('analysis/benchmark_dense.py')

MASK_RCNN_T = str(REPO / 'configs' / 'mmdet' / 'mask-rcnn_a2mamba-t_fpn_1x_coco.py')
UPERNET_DEMO = str(REPO / 'configs' / 'mmseg' / 'upernet_a2mamba-n_nuclei-demo.py')
# A2Mamba-N, and fewer proposals, RoIs and mask-head channels: a CPU iteration in about a second
NANO = ['model.backbone.arch=nano', 'model.neck.in_channels=[32,64,128,192]', 'model.train_cfg.rcnn.sampler.num=64',
        'model.train_cfg.rpn_proposal.max_per_img=200', 'model.test_cfg.rpn.max_per_img=200',
        'model.roi_head.mask_head.conv_out_channels=64']
CPU = ['--device', 'cpu', '--amp', 'fp32']


def table_rows(path: Path):
    lines = path.read_text().splitlines()
    assert lines[0] == '| ' + ' | '.join(bench.COLUMNS) + ' |' and set(lines[1]) == {'|', '-'}
    rows = [[cell.strip() for cell in line.strip('|').split('|')] for line in lines[2:]]
    assert all(len(row) == len(bench.COLUMNS) for row in rows)
    return [dict(zip(bench.COLUMNS, row)) for row in rows]


@pytest.mark.parametrize('masks', ['bitmap', 'polygon'])
def test_detection_batch(masks):
    batch = bench.detection_batch(2, (120, 200), num_classes=80, num_instances=5, masks=masks)
    assert [tuple(x.shape) for x in batch['inputs']] == [(3, 120, 200)] * 2
    assert all(x.dtype == torch.uint8 for x in batch['inputs'])
    for sample in batch['data_samples']:
        instances = sample.gt_instances
        boxes = instances.bboxes.numpy()
        assert boxes.shape == (5, 4) and instances.labels.shape == (5,)
        assert ((0 <= instances.labels) & (instances.labels < 80)).all()
        assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= 200).all() and (boxes[:, 3] <= 120).all()
        assert (boxes[:, 2:] - boxes[:, :2] >= 4).all()
        assert type(instances.masks).__name__ == {'bitmap': 'BitmapMasks', 'polygon': 'PolygonMasks'}[masks]
        bitmaps = instances.masks.masks if masks == 'bitmap' else instances.masks.to_ndarray()
        assert bitmaps.shape == (5, 120, 200)
        assert masks == 'polygon' or bitmaps.dtype == np.uint8
        for bitmap, (x0, y0, x1, y1) in zip(bitmaps, boxes):
            ys, xs = np.nonzero(bitmap)
            # the mask fills its box: its pixel extent is the box, to the pixel
            assert abs(xs.min() - x0) <= 1.5 and abs(xs.max() + 1 - x1) <= 1.5
            assert abs(ys.min() - y0) <= 1.5 and abs(ys.max() + 1 - y1) <= 1.5
            # a 16-gon with radii in [0.7, 1] of the ellipse: between half and all of the ellipse
            ellipse = math.pi * (x1 - x0) * (y1 - y0) / 4
            assert 0.45 * ellipse <= bitmap.sum() <= 1.1 * ellipse


def test_segmentation_batch():
    batch = bench.segmentation_batch(3, (96, 160), num_classes=150)
    labels = torch.stack([s.gt_sem_seg.data for s in batch['data_samples']])
    assert labels.shape == (3, 1, 96, 160) and labels.dtype == torch.int64
    valid = labels[labels != 255]
    assert valid.min() >= 0 and valid.max() < 150 and valid.unique().numel() > 20
    assert 0.03 < (labels == 255).float().mean() < 0.2
    # regions of 32x32 pixels: constant inside each
    blocks = labels[0, 0].reshape(3, 32, 5, 32)
    assert (blocks == blocks[:, :1, :, :1]).all()


def test_package_configs_resolve_and_lose_their_weights():
    swin = bench.load_config('mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py')
    assert swin.model.backbone.type == 'SwinTransformer' and swin.model.backbone.init_cfg.type == 'Pretrained'
    assert bench.drop_pretrained(swin.model) == ['model.backbone.init_cfg']
    assert swin.model.backbone.init_cfg is None
    assert bench.default_image_size(swin, 'mmdet') == (800, 1333)
    assert bench.padded_size(swin, 'mmdet', (800, 1333)) == (800, 1344)
    assert bench.mask_kind(swin) == 'bitmap' and bench.num_classes_of(swin, 'mmdet') == 80
    assert bench.amp_dtype_of(swin) is None
    bench.apply_amp(swin, 'bf16')
    assert swin.optim_wrapper.type == 'AmpOptimWrapper' and bench.amp_dtype_of(swin) == torch.bfloat16

    upernet = bench.load_config('mmseg::swin/swin-tiny-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k-512x512.py')
    assert bench.task_of(upernet) == 'mmseg' and upernet.model.backbone.type == 'SwinTransformer'
    assert set(bench.drop_pretrained(upernet.model)) == {'model.backbone.init_cfg'}
    assert bench.default_image_size(upernet, 'mmseg') == (512, 512)
    assert bench.num_classes_of(upernet, 'mmseg') == 150

    with pytest.raises(FileNotFoundError):
        bench.load_config('mmdet::swin/no-such-config.py')
    with pytest.raises(FileNotFoundError, match='no config file'):
        bench.load_config('configs/mmdet/no-such-config.py')


def test_amp_config_on_cpu_is_refused(capsys):
    with pytest.raises(SystemExit) as exit_info:
        bench.main([MASK_RCNN_T, '--device', 'cpu', '--modes', 'backbone-fwd', '--cfg-options', *NANO])
    assert exit_info.value.code == 1
    assert 'pass --amp fp32' in capsys.readouterr().err


def test_mask_rcnn_nano_on_cpu(tmp_path):
    out = tmp_path / 'bench.md'
    rows = bench.main([MASK_RCNN_T, *CPU, '--batch-size', '1', '--size', '96', '128', '--warmup', '0', '--iters', '2',
                       '--out', str(out), '--modes', 'train', 'infer', 'backbone-fwd', 'backbone-train',
                       '--cfg-options', *NANO])
    assert [r.mode for r in rows] == ['infer', 'train', 'backbone-fwd', 'backbone-train']
    assert all(r.iters == 2 and r.batch == 1 and r.dtype == 'fp32' and r.peak_gib is None for r in rows)
    assert [r.losses_finite for r in rows] == [None, True, None, True]
    assert [r.input for r in rows] == [(96, 128), (96, 128), (96, 128), (96, 128)]  # 128 is a multiple of 32
    table = table_rows(out)
    assert [r['mode'] for r in table] == ['inference', 'train', 'backbone forward', 'backbone forward+backward']
    assert table[0]['config'] == 'mask-rcnn_a2mamba-t_fpn_1x_coco'
    assert table[2]['config'] == 'mask-rcnn_a2mamba-t_fpn_1x_coco (backbone)'
    assert all(r['card'] == 'cpu' and r['peak memory (GiB)'] == 'n/a' and r['iterations'] == '2' for r in table)
    assert [r['losses finite'] for r in table] == ['-', 'yes', '-', 'yes']
    for row, result in zip(table, rows):
        assert float(row['it/s']) == pytest.approx(result.it_per_s, abs=6e-4) and result.it_per_s > 0
        assert float(row['img/s']) == pytest.approx(result.it_per_s, abs=6e-3)  # batch 1


def test_upernet_nano_on_cpu(tmp_path):
    out = tmp_path / 'bench.md'
    # batch 2: UPerHead's pooling branch (BatchNorm over 1x1 maps) cannot train on one image
    rows = bench.main([UPERNET_DEMO, *CPU, '--batch-size', '2', '--size', '64', '96', '--warmup', '1', '--iters', '2',
                       '--out', str(out)])
    assert [(r.mode, r.iters, r.input, r.losses_finite) for r in rows] == [
        ('infer', 2, (64, 96), None), ('train', 2, (64, 96), True)]
    assert [r['config'] for r in table_rows(out)] == ['upernet_a2mamba-n_nuclei-demo'] * 2

    # a NaN loss is caught (and fails the run); no budget left: one timed iteration of the five
    with pytest.raises(SystemExit) as exit_info:
        bench.main([UPERNET_DEMO, *CPU, '--batch-size', '2', '--size', '64', '64', '--warmup', '0', '--iters', '5',
                    '--budget-s', '0', '--modes', 'train', '--out', str(out),
                    '--cfg-options', 'model.decode_head.loss_decode.loss_weight=nan'])
    assert exit_info.value.code == 1
    last = table_rows(out)[-1]
    assert (last['losses finite'], last['iterations'], last['input']) == ('no', '1 (of 5)', '64×64')


def test_compiled_backbone_rows(tmp_path):
    """--compile-backbone compiles the backbone in place (here with Dynamo's eager backend, which
    traces without generating code) and labels the rows."""
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    out = tmp_path / 'bench.md'
    rows = bench.main([UPERNET_DEMO, *CPU, '--batch-size', '2', '--size', '64', '96', '--warmup', '1', '--iters', '2',
                       '--modes', 'train', 'backbone-fwd', '--compile-backbone', 'dynamic',
                       '--compile-backend', 'eager', '--out', str(out)])
    assert [(r.mode, r.iters, r.losses_finite) for r in rows] == [('train', 2, True), ('backbone-fwd', 2, None)]
    assert [r['config'] for r in table_rows(out)] == [
        'upernet_a2mamba-n_nuclei-demo [backbone compiled, dynamic]',
        'upernet_a2mamba-n_nuclei-demo [backbone compiled, dynamic] (backbone)']
    assert torch._dynamo.utils.counters['stats']['unique_graphs'] >= 2  # the model's backbone, the backbone alone
