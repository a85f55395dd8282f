"""The mmengine module shared by the dense-prediction plugins (``mmdet_ext``, ``mmseg_ext``) and
``mmpretrain_ext``; importing it (every plugin does) lets torch's weights-only unpickler read
mmengine Runner checkpoints."""
import torch
from mmengine.logging import HistoryBuffer

from .backbone import ARCHS, A2MambaBackbone
from .hooks import EpochResumeCheck

# A Runner checkpoint pickles its message hub's HistoryBuffers (numpy arrays inside, allowed by
# a2mamba_core); with the class allowed, torch.load(weights_only=True) -- the default of the
# loaders in mmengine, mmdet, mmseg and mmpretrain -- rebuilds them without running any code.
torch.serialization.add_safe_globals([HistoryBuffer])

__all__ = ['A2MambaBackbone', 'ARCHS', 'EpochResumeCheck']
