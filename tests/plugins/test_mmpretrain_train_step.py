"""One mmpretrain train step and one predict step of the A2Mamba-T ImageNet config."""
import torch
from conftest import load_mmpretrain_config, mmpretrain_batch
from mmengine.optim import build_optim_wrapper
from mmpretrain.registry import MODELS


def test_one_train_step_and_one_predict_step():
    cfg = load_mmpretrain_config('a2mamba-t_8xb256_in1k.py')
    # as the Runner does: the config's data preprocessor (normalisation; mixup/cutmix from train_cfg)
    model = MODELS.build(dict(cfg.model, data_preprocessor=cfg.data_preprocessor))
    model.init_weights()
    optim_cfg = dict(type='OptimWrapper', optimizer=dict(type='AdamW', lr=1e-3), clip_grad=dict(max_norm=5.0))
    optim_wrapper = build_optim_wrapper(model, optim_cfg)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    log_vars = model.train_step(mmpretrain_batch(4, 64), optim_wrapper)
    assert set(log_vars) == {'loss'} and torch.isfinite(log_vars['loss'])
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, before[k])]
    assert any(k.startswith('backbone.') for k in changed) and any(k.startswith('head.') for k in changed)
    model.eval()
    predictions = model.val_step(mmpretrain_batch(2, 64))
    assert len(predictions) == 2
    for sample in predictions:
        assert sample.pred_score.shape == (1000,)
        assert torch.allclose(sample.pred_score.sum(), torch.tensor(1.0))
        assert sample.pred_label.item() == sample.pred_score.argmax().item()
