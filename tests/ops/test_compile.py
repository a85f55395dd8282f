"""The model under ``torch.compile`` and ``torch.export``: the ops are ``torch.library`` custom ops
(ops/library.py), so the whole network is one graph, in training and evaluation, on the CPU with
the reference backends and on a GPU with the kernels, and the compiled model computes the eager one."""
import pytest
import torch
from conftest import rel_err

import a2mamba_core

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


def test_export_captures_the_model():
    model = a2mamba_core.create_model('a2mamba_n', num_classes=10).eval()
    x = torch.randn(1, 3, 64, 64)
    program = torch.export.export(model, (x,))
    targets = {str(node.target) for node in program.graph.nodes if node.op == 'call_function'}
    assert 'a2mamba.na2d.default' in targets and 'a2mamba.selective_scan_states.default' in targets
    with torch.no_grad():
        assert rel_err(program.module()(x), model(x)) < 1e-5


def test_compiled_training_step_matches_eager_cpu():
    """Forward and backward through the custom ops' registered autograd (reference backends,
    recomputed forward) give autograd's gradients of the eager reference path."""
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = a2mamba_core.create_model('a2mamba_n', num_classes=10).eval()
    x = torch.randn(1, 3, 32, 48)
    compiled = torch.compile(model, backend='aot_eager', fullgraph=True)
    out, ref = compiled(x), model(x)
    assert rel_err(out, ref) < 1e-5
    params = [p for p in model.parameters()]
    grads = torch.autograd.grad(out.square().sum(), params, allow_unused=True)
    grads_ref = torch.autograd.grad(ref.square().sum(), params, allow_unused=True)
    for (name, _), g, g_ref in zip(model.named_parameters(), grads, grads_ref):
        assert (g is None) == (g_ref is None), name
        if g_ref is not None and g_ref.norm() > 0:
            assert rel_err(g, g_ref) < 1e-4, name


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU')
@pytest.mark.parametrize('mode', ['default', 'reduce-overhead'])
def test_compiled_equals_eager_on_gpu(mode):
    """fp32, TF32 off: Inductor's graph around the kernels computes the eager model (outputs and
    parameter gradients within 1e-4 relative)."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        torch._dynamo.reset()
        torch.manual_seed(0)
        model = a2mamba_core.create_model('a2mamba_n').cuda().eval()
        x = torch.randn(2, 3, 224, 224, device='cuda')
        compiled = torch.compile(model, mode=mode, fullgraph=True, dynamic=False)
        torch.compiler.cudagraph_mark_step_begin()
        out = compiled(x)
        ref = model(x)
        assert rel_err(out, ref) < 1e-4
        params = list(model.parameters())
        grads = torch.autograd.grad(out.square().sum(), params, allow_unused=True)
        grads_ref = torch.autograd.grad(ref.square().sum(), params, allow_unused=True)
        worst = max(rel_err(g, r) for g, r in zip(grads, grads_ref) if r is not None and r.norm() > 0)
        assert worst < 1e-4
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
