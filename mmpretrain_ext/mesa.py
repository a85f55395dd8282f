"""MESA: the EMA model as a teacher of the model it averages (the A2Mamba recipe for T/S/B/L).

From its start epoch on, each training step adds::

    loss_mesa = weight * CE(student_logits, softmax(ema_logits))

where ``ema_logits`` are the EMA model's logits on the *same* (mixup/cutmix-mixed) batch,
computed without gradient. The EMA model is the one mmengine's ``EMAHook`` maintains; it
runs in eval mode, as timm's EMA copy does in the authors' training script.

Two pieces, because a hook cannot see the mixed batch and a model knows neither epochs nor
the EMA copy: :class:`MESAImageClassifier` computes the extra loss when given a teacher, and
:class:`MESAHook` hands it the ``EMAHook``'s model from ``start_epoch`` on.
"""
import warnings
from dataclasses import dataclass
from typing import Dict, List, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.hooks import EMAHook, Hook
from mmengine.logging import MMLogger
from mmengine.model import is_model_wrapper
from mmengine.runner import EpochBasedTrainLoop
from mmpretrain.models import ImageClassifier
from mmpretrain.models.heads import ClsHead
from mmpretrain.registry import HOOKS, MODELS
from mmpretrain.structures import DataSample
from torch import Tensor


def soft_target_cross_entropy(logits: Tensor, target: Tensor) -> Tensor:
    """Mean over the batch of ``-sum(target * log_softmax(logits))``; ``target: (B, classes)``."""
    return torch.sum(-target * F.log_softmax(logits, dim=-1), dim=-1).mean()


@dataclass
class MESATeacher:
    """The teacher and the loss weight; a plain object, so the teacher is not registered as
    a submodule (it must stay out of the optimizer, state_dict and DDP)."""
    model: nn.Module
    weight: float


@MODELS.register_module()
class MESAImageClassifier(ImageClassifier):
    """``ImageClassifier`` that adds the MESA loss while :class:`MESAHook` has set a teacher.

    Without a teacher it is exactly an ``ImageClassifier`` (arguments are the same). With
    one, ``loss`` returns ``loss_cls`` (the head's loss) and ``loss_mesa``.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if not isinstance(self.head, ClsHead):
            raise TypeError(f'MESAImageClassifier needs a ClsHead subclass as head, got {type(self.head).__name__}')
        self.mesa: Optional[MESATeacher] = None

    def set_mesa_teacher(self, teacher: Optional[nn.Module], weight: float = 0.0) -> None:
        """Turns MESA on with ``teacher`` (called as ``teacher(inputs, mode='tensor')``) and
        ``weight``, or off with ``None``."""
        self.mesa = None if teacher is None else MESATeacher(teacher, weight)

    def loss(self, inputs: Tensor, data_samples: List[DataSample]) -> Dict[str, Tensor]:
        feats = self.extract_feat(inputs)
        if self.mesa is None:
            return self.head.loss(feats, data_samples)
        logits = self.head(feats)
        losses = self.head._get_loss(logits, data_samples)
        # mmengine logs the sum of all loss terms as 'loss': the head's term gets its own name
        losses['loss_cls'] = losses.pop('loss')
        with torch.no_grad():
            teacher_logits = self.mesa.model(inputs, mode='tensor')
        losses['loss_mesa'] = self.mesa.weight * soft_target_cross_entropy(logits, teacher_logits.softmax(dim=-1))
        return losses


@HOOKS.register_module()
class MESAHook(Hook):
    """Gives :class:`MESAImageClassifier` the ``EMAHook``'s model as teacher from ``start_epoch``
    (0-based, as ``runner.epoch``) on. Needs an ``EMAHook`` and an epoch-based train loop.

    Args:
        weight: factor of the MESA loss (1.0 for A2Mamba-T/S, 1.5 for B, 2.0 for L).
        start_epoch: first epoch with MESA.
    """

    priority = 'NORMAL'

    def __init__(self, weight: float, start_epoch: int = 0):
        if weight <= 0:
            raise ValueError(f'MESA weight must be positive, got {weight}')
        if start_epoch < 0:
            raise ValueError(f'start_epoch must be >= 0, got {start_epoch}')
        self.weight = weight
        self.start_epoch = start_epoch
        self.teacher: Optional[nn.Module] = None

    @staticmethod
    def _student(runner) -> MESAImageClassifier:
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        if not isinstance(model, MESAImageClassifier):
            raise TypeError(f"MESAHook needs model type='MESAImageClassifier', got {type(model).__name__}")
        return model

    def before_train(self, runner) -> None:
        """Finds the EMA model and checks the model and the train loop."""
        self._student(runner)
        if not isinstance(runner.train_loop, EpochBasedTrainLoop):
            raise TypeError(f'MESAHook counts epochs; use an epoch-based train loop, got '
                            f'{type(runner.train_loop).__name__}')
        ema_hooks = [hook for hook in runner.hooks if isinstance(hook, EMAHook)]
        if not ema_hooks:
            raise RuntimeError("MESAHook needs an EMAHook in custom_hooks: MESA's teacher is the EMA model")
        if self.start_epoch >= runner.max_epochs:
            warnings.warn(f'MESAHook: start_epoch {self.start_epoch} >= max_epochs {runner.max_epochs}, '
                          'MESA will never be active')
        self.teacher = ema_hooks[0].ema_model.module
        self.teacher.eval()

    def before_train_epoch(self, runner) -> None:
        """Turns MESA on from ``start_epoch``; off before it (also after a resume)."""
        active = runner.epoch >= self.start_epoch
        self._student(runner).set_mesa_teacher(self.teacher if active else None, self.weight)
        if active and runner.epoch == self.start_epoch:
            MMLogger.get_current_instance().info(f'MESA on from epoch {runner.epoch + 1} (weight {self.weight})')

    def after_train(self, runner) -> None:
        """Drops the teacher reference."""
        self._student(runner).set_mesa_teacher(None)
