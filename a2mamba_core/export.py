"""ONNX export of A2Mamba models, and a check of the exported file with ONNX Runtime.

The model is traced with :func:`torch.export.export` inside :func:`ops.traceable`, so the
graph holds the tensor-op formulation of the neighborhood attention and the scan (standard
ONNX ops only: Gather, MatMul, Softmax, Pad, ...), then converted by ``torch.onnx.export``.

What is dynamic: with ``dynamic=True`` the batch size and the input height and width, each
side from :data:`MIN_DYNAMIC_SIDE` px to ``max_shape``; the second attention scale's
dilation, the small-map masking and the resized stage-4 bias follow the runtime size inside
the graph. What is fixed: the channels, the dtype (float32), and the longest scan, set by
``max_shape`` (by ``shape`` without ``dynamic``): larger inputs give NaN outputs.
"""
import math
from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from torch import Tensor

import ops

# The scan runs over the stage-1 map, ceil(H / 4) x ceil(W / 4) tokens.
SCAN_STRIDE = 4
# Below 33 px a side of the stride-32 stage-4 map is one pixel, which torch.export traces
# into a different graph (size-1 broadcasting): export such a size statically.
MIN_DYNAMIC_SIDE = 33
DEFAULT_MAX_SHAPE = (2048, 2048)

Outputs = Union[Tensor, Sequence[Tensor]]


def max_scan_length(height: int, width: int) -> int:
    """Scan length of A2Mamba's first stage for an ``H x W`` input."""
    return math.ceil(height / SCAN_STRIDE) * math.ceil(width / SCAN_STRIDE)


def _check_shape(name: str, shape: Sequence[int], minimum: int = 1) -> Tuple[int, int]:
    shape = tuple(shape)
    if len(shape) != 2 or not all(isinstance(s, int) and s >= minimum for s in shape):
        raise ValueError(f'{name} must be (H, W) with ints >= {minimum}, got {shape!r}')
    return shape


def export_onnx(model: nn.Module, path: str, shape: Sequence[int] = (224, 224), *, batch_size: int = 1,
                in_channels: int = 3, dynamic: bool = False, max_shape: Sequence[int] = DEFAULT_MAX_SHAPE,
                opset: Optional[int] = None, output_names: Optional[Sequence[str]] = None,
                optimize: bool = False) -> str:
    """Exports ``model`` (one image tensor in, a tensor or a tuple of tensors out) to ONNX.

    Args:
        model: e.g. :func:`a2mamba_core.create_model`'s classifier, or any module whose
            forward takes ``(B, in_channels, H, W)`` float32 images; traced in eval mode (its
            mode is restored afterwards), on the device of its parameters.
        path: the ``.onnx`` file to write (weights included).
        shape: ``(H, W)`` of the traced input; the only size of a static export.
        batch_size: batch of a static export (a dynamic one traces batch 2, since batch 1
            would be specialised, and then runs any batch).
        in_channels: input channels.
        dynamic: make batch, ``H`` and ``W`` dynamic (see the module doc for the ranges).
        max_shape: largest ``(H, W)`` of a dynamic export; sizes the scan.
        opset: ONNX opset (``None``: the exporter's default).
        output_names: names of the graph outputs (default: the exporter's).
        optimize: run the exporter's graph optimisation (onnxscript's rewriter and constant
            folding) on the file. Off by default: it takes longer than the export itself on
            this graph, and ONNX Runtime folds the constants when it loads the file anyway.

    Returns:
        ``path``.

    Raises:
        ValueError: bad shapes; ``shape`` outside ``max_shape`` or below the dynamic minimum.
    """
    height, width = _check_shape('shape', shape)
    if dynamic:
        max_h, max_w = _check_shape('max_shape', max_shape, MIN_DYNAMIC_SIDE)
        if not (MIN_DYNAMIC_SIDE <= height <= max_h and MIN_DYNAMIC_SIDE <= width <= max_w):
            raise ValueError(f'a dynamic export traces a shape between ({MIN_DYNAMIC_SIDE}, {MIN_DYNAMIC_SIDE}) '
                             f'and max_shape {tuple(max_shape)}, got {tuple(shape)}')
        batch_size = 2
        dims = {0: torch.export.Dim('batch', min=1, max=4096),
                2: torch.export.Dim('height', min=MIN_DYNAMIC_SIDE, max=max_h),
                3: torch.export.Dim('width', min=MIN_DYNAMIC_SIDE, max=max_w)}
        scan_length = max_scan_length(max_h, max_w)
    else:
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f'batch_size must be a positive int, got {batch_size!r}')
        dims = None
        scan_length = max_scan_length(height, width)
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device('cpu')
    example = torch.randn(batch_size, in_channels, height, width, device=device)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), ops.traceable(max_scan_length=scan_length):
            program = torch.export.export(model, (example,), dynamic_shapes=None if dims is None else (dims,),
                                          strict=False)
        onnx_program = torch.onnx.export(program, (example,), dynamo=True, opset_version=opset,
                                         input_names=['input'], output_names=list(output_names or []) or None,
                                         optimize=optimize)
    finally:
        model.train(was_training)
    onnx_program.save(path, external_data=False)
    return path


def _as_list(outputs: Outputs) -> List[Tensor]:
    return [outputs] if isinstance(outputs, Tensor) else list(outputs)


def relative_l2(actual, expected) -> float:
    """``||actual - expected|| / ||expected||`` in float64 (inf for NaN or a zero reference)."""
    actual = torch.as_tensor(actual, dtype=torch.float64)
    expected = torch.as_tensor(expected, dtype=torch.float64)
    norm = expected.norm().item()
    error = (actual - expected).norm().item()
    if not math.isfinite(error) or norm == 0:
        return math.inf
    return error / norm


def verify_onnx(path: str, model: nn.Module, inputs: Sequence[Tensor], tolerance: float = 1e-4,
                num_threads: Optional[int] = None) -> List[List[float]]:
    """Runs the ONNX file with ONNX Runtime on CPU and compares it with ``model`` in PyTorch.

    The reference is the model's ordinary forward (its dispatching ops, not the traceable
    formulation the file was traced with).

    Args:
        path: an ``.onnx`` file from :func:`export_onnx`.
        model: the PyTorch model it was exported from (run in eval mode, restored after).
        inputs: ``(B, C, H, W)`` images to compare on.
        tolerance: the largest relative L2 error accepted per output.
        num_threads: ONNX Runtime's intra-op threads (default: ``torch.get_num_threads()``).

    Returns:
        per input, the relative L2 error of each output.

    Raises:
        RuntimeError: an output's error exceeds ``tolerance`` (or is NaN), or the outputs
            differ in number or shape; the message lists every comparison.
    """
    try:
        import onnxruntime
    except ImportError as error:
        raise RuntimeError('verifying an ONNX file needs onnxruntime: pip install onnxruntime') from error
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = num_threads or torch.get_num_threads()
    session = onnxruntime.InferenceSession(path, options, providers=['CPUExecutionProvider'])
    input_name = session.get_inputs()[0].name
    was_training = model.training
    model.eval()
    errors, report, failed = [], [], False
    try:
        for x in inputs:
            with torch.no_grad():
                expected = [t.float().cpu() for t in _as_list(model(x))]
            actual = session.run(None, {input_name: x.detach().cpu().float().numpy()})
            if len(actual) != len(expected):
                raise RuntimeError(f'{path}: {len(actual)} ONNX outputs, PyTorch has {len(expected)}')
            row = []
            for i, (a, e) in enumerate(zip(actual, expected)):
                if tuple(a.shape) != tuple(e.shape):
                    failed = True
                    report.append(f'input {tuple(x.shape)} output {i}: shape {tuple(a.shape)} vs PyTorch '
                                  f'{tuple(e.shape)}')
                    row.append(math.inf)
                    continue
                err = relative_l2(a, e)
                failed |= not err <= tolerance
                report.append(f'input {tuple(x.shape)} output {i} {tuple(e.shape)}: relative L2 error {err:.3g}')
                row.append(err)
            errors.append(row)
    finally:
        model.train(was_training)
    if failed:
        raise RuntimeError(f'{path} does not match PyTorch within a relative L2 error of {tolerance:g}:\n  '
                           + '\n  '.join(report))
    return errors
