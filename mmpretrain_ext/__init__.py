"""A2Mamba in mmpretrain: registers the backbone, the official head, MESA and its hook.

Configs load it with ``custom_imports=dict(imports=['mmpretrain_ext'], allow_failed_imports=False)``.
"""
from .backbone import A2Mamba
from .convert import mmpretrain_to_official, official_to_mmpretrain
from .head import A2MambaClsHead
from .mesa import MESAHook, MESAImageClassifier

__all__ = ['A2Mamba', 'A2MambaClsHead', 'MESAImageClassifier', 'MESAHook', 'official_to_mmpretrain',
           'mmpretrain_to_official']
