"""A2Mamba (arXiv 2507.16624) in pure PyTorch: the one model behind every task."""
from .a2mamba import (A2SSM, DEFAULT_CFGS, MASS, MODEL_SPECS, A2Mamba, Block, LayerNorm2d, Stage, a2mamba_b,
                      a2mamba_l, a2mamba_n, a2mamba_s, a2mamba_t, create_model, list_models)
from .checkpoint import load_pretrained, read_checkpoint
from .export import export_onnx, verify_onnx

__version__ = '0.1.0'

__all__ = [
    'A2Mamba', 'MASS', 'A2SSM', 'Block', 'Stage', 'LayerNorm2d', 'create_model', 'list_models',
    'MODEL_SPECS', 'DEFAULT_CFGS', 'load_pretrained', 'read_checkpoint',
    'a2mamba_n', 'a2mamba_t', 'a2mamba_s', 'a2mamba_b', 'a2mamba_l',
]
