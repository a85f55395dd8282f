"""A2Mamba (arXiv 2507.16624) in pure PyTorch: the one model behind every task."""
from .a2mamba import (
                      A2SSM,
                      ARCHS,
                      DEFAULT_CFGS,
                      MASS,
                      MODEL_SPECS,
                      A2Mamba,
                      Block,
                      LayerNorm2d,
                      RoPE,
                      Stage,
                      a2mamba_b,
                      a2mamba_l,
                      a2mamba_n,
                      a2mamba_s,
                      a2mamba_t,
                      compile_in_place,
                      create_model,
                      list_models,
)
from .checkpoint import check_finite, load_checkpoint_file, load_pretrained, read_checkpoint
from .export import export_onnx, verify_onnx
from .hub import RELEASED_WEIGHTS, DownloadError, cached_path

__version__ = '0.1.0'

__all__ = [
    'A2Mamba', 'MASS', 'A2SSM', 'Block', 'Stage', 'LayerNorm2d', 'RoPE', 'create_model', 'compile_in_place',
    'list_models',
    'MODEL_SPECS', 'ARCHS', 'DEFAULT_CFGS', 'load_pretrained', 'read_checkpoint', 'load_checkpoint_file',
    'check_finite',
    'a2mamba_n', 'a2mamba_t', 'a2mamba_s', 'a2mamba_b', 'a2mamba_l',
    'RELEASED_WEIGHTS', 'cached_path', 'DownloadError', 'export_onnx', 'verify_onnx',
]
