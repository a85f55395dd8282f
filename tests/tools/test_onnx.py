"""ONNX export: the traceable ops against the references, A2Mamba-N and the UperNet demo run
with ONNX Runtime against PyTorch, and ``--verify`` failing on a corrupted file."""
import os.path as osp

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from conftest import REPO, load_tool
from mmengine.config import Config
from mmengine.registry import init_default_scope
from onnx import numpy_helper

import a2mamba_core
import ops
from ops import traceable_ops

pytorch2onnx = load_tool('deployment/pytorch2onnx.py')
UPERNET_DEMO = osp.join(REPO, 'configs', 'mmseg', 'upernet_a2mamba-n_nuclei-demo.py')


def rel_l2(actual: np.ndarray, expected: np.ndarray) -> float:
    return float(np.linalg.norm(actual.astype(np.float64) - expected) / np.linalg.norm(expected.astype(np.float64)))


def ort_session(path: str) -> onnxruntime.InferenceSession:
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    return onnxruntime.InferenceSession(path, options, providers=['CPUExecutionProvider'])


def perturbed(model: torch.nn.Module) -> torch.nn.Module:
    """Non-zero biases, rpb tables and BN statistics, so that a wrong index or a dropped term shows."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
        for name, b in model.named_buffers():
            if name.endswith('running_mean'):
                b.copy_(torch.randn_like(b) * 0.1)
            elif name.endswith('running_var'):
                b.copy_(1 + torch.rand_like(b))
    return model.eval()


# (H, W, kernel, dilation): plain and dilated windows, maps smaller than the window
# (global axes), dilated axes whose groups are shorter than the window, odd sizes.
WINDOW_CASES = [(9, 7, 3, (1, 1)), (14, 14, 7, (2, 2)), (5, 4, 7, (1, 1)), (20, 13, 5, (3, 2)),
                (6, 11, 7, (1, 2)), (23, 17, 7, (3, 2)), (3, 30, 11, (1, 2))]


@pytest.mark.parametrize('height, width, kernel, dilation', WINDOW_CASES)
def test_traceable_neighborhood_attention_matches_reference(height, width, kernel, dilation):
    q, k, v = (torch.randn(2, 3, height, width, 8) for _ in range(3))
    rpb = torch.randn(3, 2 * kernel - 1, 2 * kernel - 1)
    ref = ops.na2d_qk_ref(q, k, kernel, dilation, rpb)
    with ops.traceable():
        scores = ops.na2d_qk(q, k, kernel, dilation, rpb)
        attn = ref.softmax(-1)
        # masked slots of attn are ignored whatever they hold
        garbage = attn.masked_fill(torch.isinf(ref), 5.0)
        out = ops.na2d_av(garbage, v, kernel, dilation)
        fused = ops.na2d(q, k, v, kernel, dilation, rpb)
    assert torch.equal(torch.isinf(scores), torch.isinf(ref))
    finite = torch.isfinite(ref)
    torch.testing.assert_close(scores[finite], ref[finite], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out, ops.na2d_av_ref(attn, v, kernel, dilation), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fused, ops.na2d_ref(q, k, v, kernel, dilation, rpb), rtol=1e-5, atol=1e-5)
    if dilation == (1, 1) and height < kernel:
        assert torch.isinf(ref).any(), 'the case must exercise the small-map mask'


@pytest.mark.parametrize('length', [1, 2, 3, 7, 64, 100, 1000])
def test_traceable_scan_matches_reference(length):
    u, delta = torch.randn(2, 6, length), torch.randn(2, 6, length)
    A, B, bias = -torch.rand(6, 1) - 0.1, torch.randn(2, 1, length), torch.randn(6)
    with ops.traceable(max_scan_length=1000):
        states = ops.selective_scan_states(u, delta, A, B, bias)
    torch.testing.assert_close(states, ops.selective_scan_states_ref(u, delta, A, B, bias), rtol=1e-5, atol=1e-6)


def test_traceable_scan_is_nan_past_its_length():
    u, delta, A, B = torch.randn(1, 4, 100), torch.randn(1, 4, 100), -torch.rand(4, 1), torch.randn(1, 1, 100)
    with ops.traceable(max_scan_length=60):  # 6 steps: 64 positions covered
        states = ops.selective_scan_states(u, delta, A, B)
    torch.testing.assert_close(states[..., :64], ops.selective_scan_states_ref(u, delta, A, B)[..., :64])
    assert torch.isnan(states[..., 64:]).all()
    with pytest.raises(ValueError, match='max_scan_length'):
        with ops.traceable(max_scan_length=0):
            pass


def test_switch_is_scoped():
    assert not ops.is_traceable()
    q = torch.randn(1, 2, 6, 6, 4)
    with ops.traceable():
        assert ops.is_traceable()
        # every op runs the traceable formulation (here: the maps of one scale, computed once)
        scale = ops.Neighborhood(q, q, 3, 2)
        assert torch.allclose(scale(q), ops.na2d_ref(q, q, q, 3, 2), atol=1e-6)
        assert scale._maps is not None
    assert not ops.is_traceable()
    assert traceable_ops.max_scan_length() == traceable_ops.DEFAULT_MAX_SCAN_LENGTH


@pytest.fixture(scope='module')
def official_checkpoint(tmp_path_factory):
    """A random A2Mamba-N checkpoint in the authors' layout (a bare state_dict)."""
    torch.manual_seed(3)
    path = tmp_path_factory.mktemp('ckpt') / 'a2mamba_nano.pth'
    torch.save(perturbed(a2mamba_core.create_model('a2mamba_n')).state_dict(), path)
    return str(path)


def test_model_under_the_switch_matches(official_checkpoint):
    model = a2mamba_core.create_model('a2mamba_n')
    a2mamba_core.load_pretrained(model, official_checkpoint)
    model.eval()
    for shape in [(1, 3, 97, 61), (2, 3, 40, 72)]:
        x = torch.randn(shape)
        with torch.no_grad():
            expected = model(x)
            with ops.traceable():
                actual = model(x)
        torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5)


def test_classifier_dynamic_export_runs_in_onnx_runtime(official_checkpoint, tmp_path):
    path = str(tmp_path / 'a2mamba_n.onnx')
    pytorch2onnx.main(['a2mamba_n', '--checkpoint', official_checkpoint, '--dynamic-export',
                      '--max-shape', '320', '320', '--output-file', path])
    model = a2mamba_core.create_model('a2mamba_n')
    a2mamba_core.load_pretrained(model, official_checkpoint)
    model.eval()
    session = ort_session(path)
    for shape in [(1, 3, 224, 224), (1, 3, 256, 320), (2, 3, 97, 61)]:
        x = torch.randn(shape)
        with torch.no_grad():
            expected = model(x).numpy()
        (actual,) = session.run(None, {'input': x.numpy()})
        assert actual.shape == expected.shape == (shape[0], 1000)
        assert rel_l2(actual, expected) <= 1e-4, shape


@pytest.fixture(scope='module')
def upernet_export(tmp_path_factory):
    """The UperNet demo segmentor with random weights, its checkpoint, and its ONNX file."""
    from mmseg.registry import MODELS
    torch.manual_seed(4)
    directory = tmp_path_factory.mktemp('upernet')
    init_default_scope('mmseg')
    cfg = Config.fromfile(UPERNET_DEMO)
    cfg.model.pop('data_preprocessor')
    segmentor = perturbed(MODELS.build(cfg.model))
    checkpoint, path = str(directory / 'demo.pth'), str(directory / 'demo.onnx')
    torch.save(dict(state_dict=segmentor.state_dict()), checkpoint)
    pytorch2onnx.main([UPERNET_DEMO, '--checkpoint', checkpoint, '--shape', '128', '96', '--output-file', path,
                       '--verify'])
    return segmentor, path


def test_upernet_logits_match(upernet_export):
    segmentor, path = upernet_export
    x = torch.randn(1, 3, 128, 96)
    with torch.no_grad():
        # mmseg's own inference path: decode head, then resize to the image shape
        expected = segmentor.encode_decode(x, [dict(img_shape=(128, 96))]).numpy()
    (actual,) = ort_session(path).run(None, {'input': x.numpy()})
    assert actual.shape == expected.shape == (1, 2, 128, 96)
    np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-4 * np.abs(expected).max())
    assert rel_l2(actual, expected) <= 1e-4


def corrupt(path: str, out: str, what: str) -> str:
    model = onnx.load(path)
    graph = model.graph
    if what == 'weights':
        tensor = max(graph.initializer, key=lambda t: np.prod(t.dims))
        array = numpy_helper.to_array(tensor).copy()
        array.flat[::7] *= 1.5
        tensor.CopyFrom(numpy_helper.from_array(array, tensor.name))
    else:
        node = next(n for n in graph.node if n.op_type == 'Softmax')
        node.op_type = 'LogSoftmax'
    onnx.save(model, out)
    return out


@pytest.mark.parametrize('what', ['weights', 'graph'])
def test_verify_fails_on_a_corrupted_file(upernet_export, tmp_path, what):
    from a2mamba_core.export import verify_onnx
    segmentor, path = upernet_export
    wrapper = pytorch2onnx.SegmentorLogits(segmentor)
    x = [torch.randn(1, 3, 128, 96)]
    assert verify_onnx(path, wrapper, x)[0][0] <= 1e-4
    with pytest.raises(RuntimeError, match='does not match PyTorch'):
        verify_onnx(corrupt(path, str(tmp_path / 'bad.onnx'), what), wrapper, x)
