"""mmseg: every config builds; UperNet + A2Mamba-N trains and predicts at any image size; the
attention visualisation tool writes a PNG."""
import glob
import os.path as osp

import numpy as np
import pytest
import torch
from conftest import REPO, build_model, load_tool
from mmengine.config import Config
from mmengine.model import revert_sync_batchnorm
from mmengine.optim import build_optim_wrapper
from PIL import Image

from mmengine_ext import A2MambaBackbone

CONFIG_DIR = osp.join(REPO, 'configs', 'mmseg')
CONFIGS = sorted(glob.glob(osp.join(CONFIG_DIR, '*.py')))
DEMO = osp.join(CONFIG_DIR, 'upernet_a2mamba-n_nuclei-demo.py')
ADE_N = osp.join(CONFIG_DIR, 'upernet_a2mamba-n_8xb2-160k_ade20k-512x512.py')


def test_all_variants_have_configs():
    names = {osp.basename(p) for p in CONFIGS}
    for size in 'ntsbl':
        assert f'upernet_a2mamba-{size}_8xb2-160k_ade20k-512x512.py' in names
        assert f'upernet_a2mamba-{size}_8xb2-160k_ade20k-512x512-ms-flip-test.py' in names


@pytest.mark.parametrize('path', CONFIGS, ids=osp.basename)
def test_config_builds(path, fast_weight_init):
    cfg = Config.fromfile(path)
    model = build_model(cfg, 'mmseg')
    segmentor_cfg = cfg.model.get('module', cfg.model)
    if 'ms-flip' in path:
        assert type(model).__name__ == 'SegTTAModel'
        ratios = [t.scale_factor for t in cfg.test_dataloader.dataset.pipeline[1].transforms[0]]
        assert ratios == [0.5, 0.75, 1.0, 1.25, 1.5, 1.75]
        model = model.module
    assert isinstance(model.backbone, A2MambaBackbone)
    assert set(segmentor_cfg.backbone) <= {'type', 'arch', 'out_indices', 'drop_path_rate', 'init_cfg'}
    dims = model.backbone.embed_dims
    assert model.decode_head.in_channels == dims
    assert model.auxiliary_head.in_channels == dims[2] and model.auxiliary_head.in_index == 2
    assert model.auxiliary_head.loss_decode.loss_weight == 0.4
    if 'demo' not in path:
        assert model.decode_head.channels == 512 and segmentor_cfg.decode_head.pool_scales == (1, 2, 3, 6)
        assert cfg.optim_wrapper.type == 'AmpOptimWrapper' and cfg.sync_bn == 'torch'
        assert cfg.optim_wrapper.optimizer.lr == 6e-5 and cfg.optim_wrapper.optimizer.weight_decay == 0.01
        assert cfg.train_cfg.max_iters == 160000 and cfg.train_dataloader.batch_size == 2
        warmup, poly = cfg.param_scheduler
        assert (warmup.type, warmup.end, poly.type, poly.power) == ('LinearLR', 1500, 'PolyLR', 1.0)
    paramwise = cfg.optim_wrapper.paramwise_cfg
    assert paramwise.norm_decay_mult == 0.0 and set(paramwise.custom_keys) == {'rpb', 'A_logs', 'Ds'}


def seg_batch(shapes, num_classes):
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    generator = torch.Generator().manual_seed(0)
    inputs, samples = [], []
    for shape in shapes:
        inputs.append(torch.randint(0, 256, (3, *shape), dtype=torch.uint8, generator=generator))
        sample = SegDataSample(metainfo=dict(img_shape=shape, ori_shape=shape))
        sample.gt_sem_seg = PixelData(data=torch.randint(0, num_classes, (1, *shape), generator=generator))
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)


def test_upernet_train_and_test_step_on_odd_sizes():
    torch.manual_seed(0)
    cfg = Config.fromfile(ADE_N)
    cfg.model.backbone.init_cfg = None
    cfg.model.decode_head.channels = 64  # the size of the head is not under test
    cfg.model.data_preprocessor.size = (224, 240)  # training pads to this (the crop size)
    model = revert_sync_batchnorm(build_model(cfg, 'mmseg'))
    model.init_weights()
    optim_wrapper = build_optim_wrapper(model, dict(cfg.optim_wrapper, type='OptimWrapper'))
    shapes = [(161, 227), (215, 133)]
    losses = model.train_step(seg_batch(shapes, 150), optim_wrapper)
    assert {'decode.loss_ce', 'aux.loss_ce'} <= set(losses)
    assert all(torch.isfinite(v).all() for v in losses.values())

    model.eval()
    for shape in shapes:  # whole-image inference, one size per batch, no padding
        with torch.no_grad():
            (result,) = model.test_step(seg_batch([shape], 150))
        assert result.pred_sem_seg.data.shape == (1, *shape)
        assert result.seg_logits.data.shape == (150, *shape)


def random_checkpoint(cfg: Config, path: str, runner_meta: bool = False) -> None:
    """A segmentor checkpoint with random weights and the dataset meta; ``runner_meta`` adds a
    pickled numpy scalar as mmengine's Runner does, which torch's default weights_only load refuses."""
    model = build_model(cfg, 'mmseg')
    meta = dict(dataset_meta=dict(classes=cfg.metainfo['classes'], palette=cfg.metainfo['palette']))
    if runner_meta:
        meta['seed'] = np.int64(0)
    torch.save(dict(state_dict=model.state_dict(), meta=meta), path)


def test_inference_api_on_an_image_smaller_than_224(tmp_path):
    from mmseg.apis import inference_model, init_model
    cfg = Config.fromfile(DEMO)
    random_checkpoint(cfg, str(tmp_path / 'demo.pth'))
    image = np.random.default_rng(0).integers(0, 256, (97, 150, 3), dtype=np.uint8)
    model = init_model(DEMO, str(tmp_path / 'demo.pth'), device='cpu')
    result = inference_model(model, image)
    assert result.pred_sem_seg.data.shape == (1, 97, 150)
    assert set(result.pred_sem_seg.data.unique().tolist()) <= {0, 1}


def test_visualize_attention_writes_a_png(tmp_path):
    tool = load_tool('analysis/visualize_attention.py')
    cfg = Config.fromfile(DEMO)
    random_checkpoint(cfg, str(tmp_path / 'demo.pth'), runner_meta=True)
    image = tmp_path / 'cells.png'
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (120, 90, 3), dtype=np.uint8)).save(image)
    out = tmp_path / 'attention.png'
    tool.main([DEMO, str(tmp_path / 'demo.pth'), str(image), '--pixel', '60', '30', '--stage', '2',
               '--out', str(out)])
    assert out.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    with Image.open(out) as png:
        png.verify()
    with Image.open(out) as png:
        assert png.width > 4 * 90 and png.height > 120

    with pytest.raises(ValueError, match='outside'):
        tool.main([DEMO, str(tmp_path / 'demo.pth'), str(image), '--pixel', '500', '30', '--out', str(out)])
