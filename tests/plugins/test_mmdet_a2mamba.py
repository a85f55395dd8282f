"""mmdet: every config builds; Cascade Mask R-CNN + A2Mamba-N trains and predicts masks."""
import glob
import os.path as osp

import pytest
import torch
from conftest import REPO, build_model
from mmengine.config import Config
from mmengine.model import revert_sync_batchnorm
from mmengine.optim import build_optim_wrapper

from mmengine_ext import A2MambaBackbone

CONFIG_DIR = osp.join(REPO, 'configs', 'mmdet')
CONFIGS = sorted(glob.glob(osp.join(CONFIG_DIR, '*.py')))
DEMO = osp.join(CONFIG_DIR, 'cascade-mask-rcnn_a2mamba-n_fpn_nuclei-demo.py')


def test_all_variants_have_configs():
    names = {osp.basename(p) for p in CONFIGS}
    for size in 'tsbl':
        assert f'cascade-mask-rcnn_a2mamba-{size}_fpn_3x_coco.py' in names
        for schedule in ('1x', '3x'):
            assert f'mask-rcnn_a2mamba-{size}_fpn_{schedule}_coco.py' in names


@pytest.mark.parametrize('path', CONFIGS, ids=osp.basename)
def test_config_builds(path, fast_weight_init):
    cfg = Config.fromfile(path)
    model = build_model(cfg, 'mmdet')
    assert isinstance(model.backbone, A2MambaBackbone)
    assert set(cfg.model.backbone) <= {'type', 'arch', 'out_indices', 'drop_path_rate', 'init_cfg'}
    assert model.neck.in_channels == [model.backbone.embed_dims[i] for i in model.backbone.out_indices]
    paramwise = cfg.optim_wrapper.paramwise_cfg
    assert paramwise.norm_decay_mult == 0.0
    assert {k: v.decay_mult for k, v in paramwise.custom_keys.items()} == {'rpb': 0.0, 'A_logs': 0.0, 'Ds': 0.0}
    assert cfg.optim_wrapper.optimizer.type == 'AdamW'
    if 'demo' not in path:
        assert cfg.optim_wrapper.type == 'AmpOptimWrapper'
        assert cfg.sync_bn == 'torch'
        assert cfg.model.backbone.init_cfg.checkpoint.endswith(f'a2mamba_{cfg.model.backbone.arch}.pth')
        epochs, milestones = (12, [8, 11]) if '_1x_' in path else (36, [27, 33])
        assert cfg.train_cfg.max_epochs == epochs
        assert [s for s in cfg.param_scheduler if s.type == 'MultiStepLR'][0].milestones == milestones


def test_cascade_config_recipe():
    cfg = Config.fromfile(osp.join(CONFIG_DIR, 'cascade-mask-rcnn_a2mamba-b_fpn_3x_coco.py'))
    assert cfg.optim_wrapper.optimizer.lr == 2e-4 and cfg.optim_wrapper.optimizer.weight_decay == 0.05
    heads = cfg.model.roi_head.bbox_head
    assert len(heads) == 3
    assert all(h.num_shared_convs == 4 and h.num_shared_fcs == 1 and h.loss_bbox.type == 'GIoULoss'
               and h.norm_cfg.type == 'SyncBN' for h in heads)
    scales = [t for t in cfg.train_pipeline if t.type == 'RandomChoice'][0].transforms[0][0].scales
    assert (min(s[0] for s in scales), max(s[0] for s in scales)) == (480, 800)


def test_no_weight_decay_groups():
    cfg = Config.fromfile(osp.join(CONFIG_DIR, 'mask-rcnn_a2mamba-t_fpn_1x_coco.py'))
    model = build_model(cfg, 'mmdet')
    optim_wrapper = build_optim_wrapper(model, dict(cfg.optim_wrapper, type='OptimWrapper'))  # AMP needs a GPU
    decay = {id(p): group['weight_decay'] for group in optim_wrapper.optimizer.param_groups for p in group['params']}
    named = dict(model.named_parameters())
    for name in ('backbone.layers.0.blocks.0.token_mixer.rpb.0', 'backbone.layers.2.blocks.0.token_mixer.ssm.A_logs',
                 'backbone.layers.4.blocks.1.token_mixer.ssm.Ds', 'backbone.norm2.weight',
                 'backbone.patch_embed.1.weight', 'backbone.layers.2.blocks.0.norm1.weight'):
        assert decay[id(named[name])] == 0.0, name
    for name in ('backbone.layers.2.blocks.0.token_mixer.qkv.weight', 'neck.fpn_convs.0.conv.weight'):
        assert decay[id(named[name])] == 0.05, name


def nuclei_like_batch(shapes):
    """Two images with instance masks (label 0: the demo's one class)."""
    from mmdet.testing import demo_mm_inputs
    data = demo_mm_inputs(len(shapes), [(3, *s) for s in shapes], num_items=[6] * len(shapes), with_mask=True)
    for sample in data['data_samples']:
        sample.gt_instances.labels = torch.zeros_like(sample.gt_instances.labels)
        sample.set_metainfo(dict(scale_factor=(1.0, 1.0)))
    return data


def test_cascade_mask_rcnn_train_and_test_step():
    torch.manual_seed(0)
    cfg = Config.fromfile(DEMO)
    cfg.model.backbone.frozen_stages = 1
    cfg.model.test_cfg.rcnn.score_thr = 0.0  # one step from random weights: keep every detection
    model = revert_sync_batchnorm(build_model(cfg, 'mmdet'))
    model.init_weights()
    optim_wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    frozen = {k: v.clone() for k, v in model.backbone.state_dict().items()
              if k.startswith(('patch_embed.', 'layers.0.'))}
    assert all(not p.requires_grad for p in model.backbone.patch_embed.parameters())
    trained = model.backbone.layers[2].blocks[0].token_mixer.qkv.weight.clone()

    model.train()
    losses = model.train_step(nuclei_like_batch([(256, 256), (256, 256)]), optim_wrapper)
    for key in ('loss_rpn_cls', 's0.loss_cls', 's2.loss_bbox', 's0.loss_mask', 's2.loss_mask'):
        assert key in losses
    assert all(torch.isfinite(v).all() for v in losses.values())
    state = model.backbone.state_dict()
    assert all(torch.equal(v, state[k]) for k, v in frozen.items())
    assert not torch.equal(trained, model.backbone.layers[2].blocks[0].token_mixer.qkv.weight)

    model.eval()
    shapes = [(256, 256), (211, 253)]  # odd sizes: padded to 32 by the data preprocessor
    with torch.no_grad():
        results = model.test_step(nuclei_like_batch(shapes))
    for result, shape in zip(results, shapes):
        pred = result.pred_instances
        assert pred.masks.shape[1:] == shape and pred.masks.dtype == torch.bool
        assert len(pred.masks) == len(pred.bboxes) == len(pred.scores) > 0
