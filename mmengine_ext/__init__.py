"""The mmengine module shared by the dense-prediction plugins (``mmdet_ext``, ``mmseg_ext``), and
the model zoo (:mod:`mmengine_ext.model_zoo`: configs, model index, released weights)."""
from . import model_zoo
from .backbone import ARCHS, A2MambaBackbone

__all__ = ['A2MambaBackbone', 'ARCHS', 'model_zoo']
