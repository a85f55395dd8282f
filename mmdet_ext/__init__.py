"""Registers A2Mamba in mmdet: load it in a config with
``custom_imports = dict(imports=['mmdet_ext'], allow_failed_imports=False)`` and use
``backbone=dict(type='A2MambaBackbone', arch='tiny', ...)``."""
from mmdet.registry import MODELS

from mmengine_ext import A2MambaBackbone

MODELS.register_module(module=A2MambaBackbone)

__all__ = ['A2MambaBackbone']
