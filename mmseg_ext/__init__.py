"""Registers A2Mamba in mmsegmentation: load it in a config with
``custom_imports = dict(imports=['mmseg_ext'], allow_failed_imports=False)`` and use
``backbone=dict(type='A2MambaBackbone', arch='tiny', ...)``."""
from mmseg.registry import MODELS

from mmengine_ext import A2MambaBackbone

MODELS.register_module(module=A2MambaBackbone)

__all__ = ['A2MambaBackbone']
