"""The mmengine module shared by the dense-prediction plugins (``mmdet_ext``, ``mmseg_ext``)."""
from .backbone import ARCHS, A2MambaBackbone

__all__ = ['A2MambaBackbone', 'ARCHS']
