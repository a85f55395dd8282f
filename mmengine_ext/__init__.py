"""The mmengine module shared by the dense-prediction plugins (``mmdet_ext``, ``mmseg_ext``) and
``mmpretrain_ext``, and the model zoo (:mod:`mmengine_ext.model_zoo`: configs, model index,
released weights); importing it (every plugin does) lets torch's weights-only unpickler read
mmengine Runner checkpoints."""
import pickle
from typing import Callable

import torch
from mmengine.logging import HistoryBuffer

from . import model_zoo
from .backbone import ARCHS, A2MambaBackbone
from .config import load_config
from .hooks import EpochResumeCheck

HISTORY_BUFFER_STATISTICS = ('min', 'max', 'current', 'mean')


def history_buffer_statistic(owner: type, name: str) -> Callable:
    """Stands in for ``getattr`` in torch's weights-only unpickler, for HistoryBuffer only.

    A HistoryBuffer pickles its statistics methods, and pickle protocol 2 (``torch.save``'s)
    writes a method as ``getattr(HistoryBuffer, 'mean')``. Allowing ``getattr`` itself would let
    a file reach any attribute of any allowed object; this resolves the four built-in statistics
    of HistoryBuffer and refuses everything else.
    """
    if owner is not HistoryBuffer or name not in HISTORY_BUFFER_STATISTICS:
        raise pickle.UnpicklingError(f'refusing getattr({owner!r}, {name!r}) in a checkpoint: only '
                                     f'HistoryBuffer.{{{", ".join(HISTORY_BUFFER_STATISTICS)}}} are allowed')
    return getattr(HistoryBuffer, name)


# A Runner checkpoint pickles its message hub's HistoryBuffers (numpy arrays inside, allowed by
# a2mamba_core); with these allowed, torch.load(weights_only=True) -- the default of the loaders
# in mmengine, mmdet, mmseg and mmpretrain -- rebuilds them without running any other code.
torch.serialization.add_safe_globals([HistoryBuffer, (history_buffer_statistic, 'builtins.getattr')])

__all__ = ['A2MambaBackbone', 'ARCHS', 'EpochResumeCheck', 'load_config', 'model_zoo']
