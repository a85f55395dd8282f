"""MESA with EMA: the MESA loss against torch's soft-target cross entropy, and a real Runner
where MESA starts at its epoch with the EMA model as teacher."""
import tempfile
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import mmpretrain_batch
from mmengine.hooks import Hook
from mmengine.registry import init_default_scope
from mmengine.runner import Runner
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample
from torch.utils.data import Dataset

from mmpretrain_ext import MESAHook
from mmpretrain_ext.mesa import soft_target_cross_entropy


def test_mesa_loss_is_soft_target_cross_entropy_against_the_teacher():
    torch.manual_seed(0)
    cfg = dict(type='MESAImageClassifier', backbone=dict(type='A2Mamba', arch='nano'),
               head=dict(type='A2MambaClsHead', num_classes=5, in_channels=192, hidden_channels=16))
    init_default_scope('mmpretrain')
    student, teacher = MODELS.build(cfg), MODELS.build(cfg)
    student.eval(), teacher.eval()
    data = student.data_preprocessor(mmpretrain_batch(3, 32, num_classes=5), True)
    plain = student.loss(**data)
    student.set_mesa_teacher(teacher, 1.5)
    with_mesa = student.loss(**data)
    assert set(plain) == {'loss'} and set(with_mesa) == {'loss_cls', 'loss_mesa'}
    torch.testing.assert_close(with_mesa['loss_cls'], plain['loss'])
    logits = student(data['inputs'], mode='tensor')
    target = teacher(data['inputs'], mode='tensor').softmax(-1)
    # torch's cross_entropy with probability targets is an independent reference
    torch.testing.assert_close(with_mesa['loss_mesa'], 1.5 * F.cross_entropy(logits, target))
    torch.testing.assert_close(soft_target_cross_entropy(logits, target), F.cross_entropy(logits, target))
    with_mesa['loss_mesa'].backward()
    assert all(p.grad is None for p in teacher.parameters())


class RandomDigits(Dataset):
    """32 x 32 single-channel images whose class is the brightness bucket, for a real Runner."""

    def __init__(self, num: int = 16, num_classes: int = 4):
        generator = torch.Generator().manual_seed(0)
        self.labels = torch.randint(0, num_classes, (num,), generator=generator)
        self.images = (self.labels[:, None, None, None] * 60 + torch.randint(0, 40, (num, 1, 32, 32),
                                                                             generator=generator)).to(torch.uint8)
        self.metainfo = dict(classes=[str(i) for i in range(num_classes)])

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict:
        return dict(inputs=self.images[index], data_samples=DataSample().set_gt_label(int(self.labels[index])))


class LossRecorder(Hook):
    def __init__(self):
        self.losses = []

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        self.losses.append((runner.epoch, {k: float(v) for k, v in outputs.items()}))


def _runner(work_dir: str, mesa_hook: dict, max_epochs: int = 3, with_ema: bool = True) -> Runner:
    init_default_scope('mmpretrain')
    model = dict(type='MESAImageClassifier', backbone=dict(type='A2Mamba', arch='nano', in_channels=1, img_size=32),
                 head=dict(type='A2MambaClsHead', num_classes=4, in_channels=192, hidden_channels=16),
                 data_preprocessor=dict(type='ClsDataPreprocessor', num_classes=4, mean=[127.5], std=[64.0]),
                 train_cfg=dict(augments=[dict(type='Mixup', alpha=0.8)]))
    hooks = [dict(type='EMAHook', momentum=0.1, update_buffers=True)] if with_ema else []
    return Runner(
        model=model, work_dir=work_dir,
        train_dataloader=dict(dataset=RandomDigits(), batch_size=8, sampler=dict(type='DefaultSampler', shuffle=True),
                              num_workers=0),
        train_cfg=dict(by_epoch=True, max_epochs=max_epochs),
        optim_wrapper=dict(optimizer=dict(type='AdamW', lr=1e-3)),
        custom_hooks=hooks + [mesa_hook],
        default_hooks=dict(logger=dict(type='LoggerHook', interval=1), checkpoint=dict(type='CheckpointHook',
                                                                                        interval=max_epochs)),
        randomness=dict(seed=0), default_scope='mmpretrain')


def test_ema_and_mesa_run_together_and_mesa_starts_at_its_epoch():
    with tempfile.TemporaryDirectory() as work_dir:
        runner = _runner(work_dir, dict(type='MESAHook', weight=1.0, start_epoch=2))
        recorder = LossRecorder()
        runner.register_hook(recorder)
        runner.train()
        checkpoint = torch.load(Path(work_dir) / 'epoch_3.pth', weights_only=True)
    assert 'ema_state_dict' in checkpoint
    assert [epoch for epoch, _ in recorder.losses] == [0, 0, 1, 1, 2, 2]
    for epoch, losses in recorder.losses:
        if epoch < 2:
            assert set(losses) == {'loss'}
        else:
            assert set(losses) == {'loss', 'loss_cls', 'loss_mesa'} and losses['loss_mesa'] > 0
            assert losses['loss'] == pytest.approx(losses['loss_cls'] + losses['loss_mesa'])
    hook = next(h for h in runner.hooks if isinstance(h, MESAHook))
    assert hook.teacher is next(h for h in runner.hooks if type(h).__name__ == 'EMAHook').ema_model.module
    assert not hook.teacher.training
    assert runner.model.mesa is None  # dropped after training


def test_mesa_hook_needs_ema_and_a_mesa_classifier():
    with tempfile.TemporaryDirectory() as work_dir:
        runner = _runner(work_dir, dict(type='MESAHook', weight=1.0), with_ema=False)
        with pytest.raises(RuntimeError, match='EMAHook'):
            runner.train()
    with pytest.raises(ValueError):
        MESAHook(weight=0.0)
    with pytest.raises(ValueError):
        MESAHook(weight=1.0, start_epoch=-1)
