"""The model under ``torch.compile`` and ``torch.export``: the ops are ``torch.library`` custom ops
(ops/library.py), so the whole network is one graph, in training and evaluation, on the CPU with
the reference backends and on a GPU with the kernels, and the compiled model computes the eager one."""
import copy

import pytest
import torch
from conftest import rel_err

import a2mamba_core
import ops

DEVICES = ['cpu', pytest.param('cuda', marks=pytest.mark.skipif(not torch.cuda.is_available(),
                                                                  reason='needs a CUDA GPU'))]



@pytest.mark.parametrize('device', DEVICES)
@pytest.mark.parametrize('training', [False, True], ids=['eval', 'train'])
def test_whole_model_is_one_graph(device, training):
    torch._dynamo.reset()
    model = a2mamba_core.create_model('a2mamba_n', drop_path_rate=0.1).to(device).train(training)
    x = torch.randn(2, 3, 64, 96, device=device)
    explanation = torch._dynamo.explain(model)(x)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1
    ops_in_graph = {str(node.target) for graph in explanation.graphs for node in graph.graph.nodes
                    if node.op == 'call_function'}
    assert {'a2mamba.na2d.default', 'a2mamba.selective_scan_states.default'} <= ops_in_graph


def test_dynamic_shapes_trace_once_for_every_input_size():
    """``torch_compile=dict(dynamic=True)`` (detection's varying image sizes): one graph serves
    inputs of other sizes and aspect ratios without tracing again, and computes the eager model."""
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    torch.manual_seed(0)
    model = a2mamba_core.create_model('a2mamba_n', num_classes=0).train()
    compiled = a2mamba_core.create_model('a2mamba_n', num_classes=0,
                                         torch_compile=dict(dynamic=True, fullgraph=True, backend='eager')).train()
    compiled.load_state_dict(model.state_dict())
    for h, w in ((64, 96), (96, 128), (128, 64)):
        x = torch.randn(2, 3, h, w)
        out, ref = compiled(x), model(x)
        assert rel_err(out, ref) < 1e-5, (h, w)
        out.sum().backward()
    assert torch._dynamo.utils.counters['stats']['unique_graphs'] == 1


def test_export_captures_the_model():
    model = a2mamba_core.create_model('a2mamba_n', num_classes=10).eval()
    x = torch.randn(1, 3, 64, 64)
    program = torch.export.export(model, (x,))
    targets = {str(node.target) for node in program.graph.nodes if node.op == 'call_function'}
    assert 'a2mamba.na2d.default' in targets and 'a2mamba.selective_scan_states.default' in targets
    with torch.no_grad():
        assert rel_err(program.module()(x), model(x)) < 1e-5


def _output_and_parameter_grads(run, model: torch.nn.Module, x: torch.Tensor):
    out = run(x)
    return out, torch.autograd.grad(out.square().sum(), list(model.parameters()), allow_unused=True)


def _flat(grads) -> torch.Tensor:
    return torch.cat([g.double().flatten() for g in grads if g is not None])


def test_compiled_training_step_matches_eager_cpu():
    """Forward and backward through the custom ops' registered autograd (reference backends,
    recomputed forward) give autograd's gradients of the eager reference path."""
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = a2mamba_core.create_model('a2mamba_n', num_classes=10).eval()
    x = torch.randn(1, 3, 32, 48)
    compiled = torch.compile(model, backend='aot_eager', fullgraph=True)
    out, grads = _output_and_parameter_grads(compiled, model, x)
    ref, grads_ref = _output_and_parameter_grads(model, model, x)
    assert rel_err(out, ref) < 1e-5
    for (name, _), g, g_ref in zip(model.named_parameters(), grads, grads_ref):
        assert (g is None) == (g_ref is None), name
        if g_ref is not None and g_ref.norm() > 0:
            assert rel_err(g, g_ref) < 1e-4, name


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU')
@pytest.mark.parametrize('mode', ['default', 'reduce-overhead'])
def test_compiled_equals_eager_on_gpu(mode):
    """fp32, TF32 off: Inductor's graph around the kernels computes the eager model: outputs and
    all parameter gradients (as one vector) within 1e-4 relative, and each parameter's gradient as
    exact as eager's, both measured against the float64 reference (two float32 computations in
    different orders cannot agree better than their own errors: a gradient with cancellations has
    a larger one)."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        torch._dynamo.reset()
        torch.manual_seed(0)
        model = a2mamba_core.create_model('a2mamba_n').cuda().eval()
        x = torch.randn(2, 3, 224, 224, device='cuda')
        compiled = torch.compile(model, mode=mode, fullgraph=True, dynamic=False)
        torch.compiler.cudagraph_mark_step_begin()
        out, grads = _output_and_parameter_grads(compiled, model, x)
        ref, grads_ref = _output_and_parameter_grads(model, model, x)
        model64 = copy.deepcopy(model).double()
        with ops.use_backend(ops.REFERENCE):
            _, grads64 = _output_and_parameter_grads(model64, model64, x.double())
        assert rel_err(out, ref) < 1e-4
        assert rel_err(_flat(grads), _flat(grads_ref)) < 1e-4
        less_exact = []
        for (name, _), g, g_ref, g64 in zip(model.named_parameters(), grads, grads_ref, grads64):
            if g64 is None or g64.norm() == 0:
                continue
            compiled_err, eager_err = rel_err(g, g64), rel_err(g_ref, g64)
            if compiled_err > max(1e-4, 2 * eager_err):
                less_exact.append(f'{name}: {compiled_err:.2e} (eager {eager_err:.2e})')
        assert not less_exact, f'compiled gradients less exact than eager against float64: {less_exact}'
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
