"""Training-loop guards shared by every task."""
from mmengine.hooks import Hook
from mmengine.registry import HOOKS
from mmengine.runner import EpochBasedTrainLoop


@HOOKS.register_module()
class EpochResumeCheck(Hook):
    """Refuses to continue an epoch-based run from a checkpoint saved in the middle of an epoch.

    mmengine's ``EpochBasedTrainLoop`` resumes at batch 0 of the checkpoint's epoch, so from a
    mid-epoch checkpoint it would train that epoch's first batches twice, run more iterations
    than an uninterrupted run and end an iteration-based LR schedule early, at its floor.
    Checkpoints saved at epoch ends (``CheckpointHook(by_epoch=True)``, the configs' setting)
    resume exactly. ``tools/train.py`` registers this hook in every run; iteration-based loops
    are left alone.
    """

    priority = 'VERY_HIGH'

    def before_train(self, runner) -> None:
        """Raises RuntimeError when the loop's iteration is not at an epoch boundary."""
        if not isinstance(runner.train_loop, EpochBasedTrainLoop):
            return
        per_epoch = len(runner.train_dataloader)
        if runner.iter != runner.epoch * per_epoch:
            raise RuntimeError(
                f'cannot resume this epoch-based run from iteration {runner.iter}: the checkpoint was saved in '
                f'the middle of epoch {runner.epoch + 1} ({runner.iter - runner.epoch * per_epoch} of its '
                f'{per_epoch} iterations done), or with another dataset or batch size, and mmengine would '
                'replay that epoch from its first batch. Resume from a checkpoint saved at the end of an epoch '
                '(CheckpointHook with by_epoch=True).')
