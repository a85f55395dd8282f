"""A2Mamba in mmpretrain: registers the backbone, the official head, MESA and its hook.

Configs load it with ``custom_imports=dict(imports=['mmpretrain_ext'], allow_failed_imports=False)``.
Importing it also registers the model zoo's classification models with mmpretrain
(``list_models``, ``get_model``, ``inference_model``; see :mod:`mmpretrain_ext.model_zoo`).
"""
from .backbone import A2Mamba
from .convert import mmpretrain_to_official, official_to_mmpretrain
from .head import A2MambaClsHead
from .mesa import MESAHook, MESAImageClassifier
from .model_zoo import register_models

register_models()

__all__ = ['A2Mamba', 'A2MambaClsHead', 'MESAImageClassifier', 'MESAHook', 'official_to_mmpretrain',
           'mmpretrain_to_official']
