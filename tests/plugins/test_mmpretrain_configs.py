"""mmpretrain configs: the authors' ImageNet recipe per size, the MNIST-5k demos, and the
parameters trained without weight decay."""
import copy

import pytest
import torch
from conftest import load_mmpretrain_config, load_tool, mmpretrain_batch
from mmengine.optim import build_optim_wrapper
from mmpretrain.registry import MODELS

import a2mamba_core
from mmpretrain_ext import MESAImageClassifier, official_to_mmpretrain

get_flops = load_tool('analysis/get_flops.py')

SIZES = ['n', 't', 's', 'b', 'l']
# The per-size recipe: (core model, lr, drop path, warm-up epochs, EMA decay, MESA weight, checkpointed blocks)
RECIPE = {
    'n': ('a2mamba_n', 4e-3, 0.0, 5, None, None, (0, 0, 0, 0)),
    't': ('a2mamba_t', 2e-3, 0.1, 5, 0.99984, 1.0, (0, 0, 0, 0)),
    's': ('a2mamba_s', 2e-3, 0.2, 5, 0.9999, 1.0, (0, 0, 0, 0)),
    'b': ('a2mamba_b', 2e-3, 0.4, 20, 0.9999, 1.5, (4, 0, 0, 0)),
    'l': ('a2mamba_l', 2e-3, 0.5, 20, 0.9999, 2.0, (4, 4, 0, 0)),
}



@pytest.mark.parametrize('size', SIZES)
def test_config_builds_the_recipe(size):
    cfg = load_mmpretrain_config(f'a2mamba-{size}_8xb256_in1k.py')
    name, lr, drop_path, warmup, ema_decay, mesa, with_cp = RECIPE[size]
    model = MODELS.build(cfg.model)
    core = a2mamba_core.create_model(name)
    assert get_flops.count_parameters(model) == get_flops.count_parameters(core)
    assert sorted(official_to_mmpretrain(core.state_dict())) == sorted(model.state_dict())
    assert cfg.model.backbone.drop_path_rate == drop_path
    assert tuple(model.backbone.layers[2 * i].use_checkpoint for i in range(4)) == with_cp
    assert cfg.optim_wrapper.optimizer.lr == lr and cfg.optim_wrapper.clip_grad.max_norm == 5.0
    assert cfg.optim_wrapper.type == 'AmpOptimWrapper'
    warm, cosine = cfg.param_scheduler
    assert warm.end == warmup == cosine.begin and warm.start_factor * lr == pytest.approx(1e-6)
    assert cosine.eta_min == 1e-5 and cfg.train_cfg.max_epochs == 300
    assert cfg.train_dataloader.batch_size * 8 == cfg.auto_scale_lr.base_batch_size == 2048
    crop_pct = a2mamba_core.DEFAULT_CFGS[name]['crop_pct']
    resize = cfg.test_dataloader.dataset.pipeline[1]
    assert resize.scale == int(224 / crop_pct) and resize.interpolation == 'bicubic'
    hooks = {hook.type: hook for hook in cfg.custom_hooks}
    if ema_decay is None:
        assert not hooks and type(model).__name__ == 'ImageClassifier'
    else:
        assert hooks['EMAHook'].momentum == pytest.approx(1 - ema_decay)
        assert hooks['MESAHook'].weight == mesa and hooks['MESAHook'].start_epoch == 75
        assert isinstance(model, MESAImageClassifier)


@pytest.mark.parametrize('config, in_channels, img_size', [
    ('a2mamba-n_1xb64_mnist5k-32px.py', 1, 32), ('a2mamba-t_1xb64_mnist5k-224px.py', 3, 64)])
def test_mnist5k_configs_build_and_classify_ten_digits(config, in_channels, img_size):
    cfg = load_mmpretrain_config(config)
    model = MODELS.build(dict(cfg.model, data_preprocessor=cfg.data_preprocessor)).eval()
    assert cfg.train_dataloader.dataset.type == cfg.val_dataloader.dataset.type == 'CustomDataset'
    assert cfg.train_dataloader.dataset.data_root == 'data/mnist5k'
    assert len(cfg.data_preprocessor.mean) == in_channels
    with torch.no_grad():
        predictions = model.val_step(mmpretrain_batch(2, img_size, channels=in_channels, num_classes=10))
    assert [p.pred_score.shape for p in predictions] == [(10,), (10,)]


def test_no_weight_decay_on_norms_biases_rpb_alogs_ds():
    cfg = load_mmpretrain_config('a2mamba-n_8xb256_in1k.py')
    model = MODELS.build(cfg.model)
    optim_cfg = copy.deepcopy(cfg.optim_wrapper)
    optim_cfg.type = 'OptimWrapper'  # AMP needs a GPU; the parameter groups are the same
    optim_cfg.pop('loss_scale')
    groups = build_optim_wrapper(model, optim_cfg).optimizer.param_groups
    decay = {id(p): g['weight_decay'] for g in groups for p in g['params']}
    names = dict(model.named_parameters())
    assert len(decay) == len(names)
    norms = {id(p) for m in model.modules() if isinstance(m, (torch.nn.BatchNorm2d, torch.nn.LayerNorm))
             for p in m.parameters()}
    for name, param in names.items():
        no_decay = (id(param) in norms or name.endswith('bias')
                    or any(key in name for key in ('.rpb.', '.A_logs', '.Ds')))
        assert decay[id(param)] == (0.0 if no_decay else 0.05), name
