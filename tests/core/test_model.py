"""Model API: sizes, inputs of any size, bad input, checkpointing, drop path, factories."""
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import a2mamba_core
import ops
from a2mamba_core import create_model
from a2mamba_core.a2mamba import A2SSM
from ops import library


@pytest.fixture(scope='module')
def nano():
    return create_model('a2mamba_n').eval()


@pytest.mark.parametrize('height,width', [(32, 32), (33, 47), (64, 64), (97, 131), (160, 96), (223, 225),
                                          (512, 512), (511, 384)])
def test_any_input_size(nano, height, width):
    x = torch.randn(1, 3, height, width)
    with torch.no_grad():
        features = nano.forward_features(x)
        logits = nano.forward_head(features[-1])
    expected = [((height + 3) // 4, (width + 3) // 4)]  # stem: two stride-2 convs with padding 1
    for _ in range(3):
        expected.append(((expected[-1][0] + 1) // 2, (expected[-1][1] + 1) // 2))
    for feature, dim, size in zip(features, nano.embed_dims, expected):
        assert feature.shape == (1, dim, *size)
        assert torch.isfinite(feature).all()
    assert logits.shape == (1, 1000) and torch.isfinite(logits).all()


def test_small_map_axis_becomes_global(nano):
    """On an 8x8 stage-1 map the 11x11 window covers the whole map: every pixel attends to all 64."""
    mixer = nano.layers[0].blocks[0].token_mixer
    q = torch.randn(1, 2, 8, 8, 16)
    attn1, attn2 = mixer.attention_maps(q, q, 8, 8)
    for attn in (attn1, attn2):
        assert attn.shape == (1, 1, 8, 8, 121)
        assert ((attn > 0).sum(-1) == 64).all()
        torch.testing.assert_close(attn.sum(-1), torch.ones(1, 1, 8, 8))
    assert mixer.dilation(8, 8) == (1, 1) and mixer.dilation(56, 56) == (5, 5) and mixer.dilation(200, 33) == (11, 3)


def test_rope_rotates_channel_pairs_by_row_and_column_phases():
    """q and k of each pixel rotate as complex numbers ``x[2i] + 1j * x[2i+1]`` by ``row * angle``
    (first half of the pairs) and ``col * angle`` (second half); q is also scaled by head_dim^-0.5."""
    rope = a2mamba_core.RoPE(embed_dim=32, num_heads=2)  # head_dim 16: 8 pairs
    height, width, dim = 3, 5, 16
    qk = torch.randn(2, 1, 2, height, width, dim, dtype=torch.float64)
    rope = rope.double()
    rotated = a2mamba_core.a2mamba.apply_rope(qk, rope(height, width))
    angle = rope.angle[::2]  # one angle per pair, 4 of them
    expected = torch.empty_like(qk)
    for y in range(height):
        for x in range(width):
            phase = torch.cat([y * angle, x * angle])  # 8 pairs
            pairs = torch.complex(qk[..., y, x, 0::2], qk[..., y, x, 1::2]) * torch.exp(1j * phase)
            expected[..., y, x, 0::2], expected[..., y, x, 1::2] = pairs.real, pairs.imag
    expected[0] *= dim ** -0.5
    torch.testing.assert_close(rotated, expected)


def test_rope_tables_take_the_dtype_of_the_stage_under_autocast():
    stage = create_model('a2mamba_n').layers[0]
    seen = []
    stage.blocks[0].token_mixer.register_forward_pre_hook(lambda module, args: seen.append(args[1]))
    with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16):
        stage(torch.randn(1, stage.embed_dim, 8, 8))
    cos, sin = seen[0]
    assert cos.dtype == sin.dtype == torch.bfloat16 and cos.shape == (2, 1, 1, 8, 8, 16)
    # autocast does not cast float64: a float64 model keeps float64 tables
    with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16):
        stage.double()(torch.randn(1, stage.embed_dim, 8, 8, dtype=torch.float64))
    assert seen[1][0].dtype == seen[1][1].dtype == torch.float64


def test_dilation_of_static_sizes_is_python_ints(nano, monkeypatch):
    """Static sizes give plain ints without calling ``torch.sym_min``: Dynamo of torch 2.11 (the
    GPU image's) breaks the graph on it, once per block, and the compiled model then recompiles
    per drop-path rate until it falls back to eager."""
    mixer = nano.layers[0].blocks[0].token_mixer

    def no_symbolic_call(*args):
        raise AssertionError(f'torch.sym_min/sym_max called on {args}')

    monkeypatch.setattr(torch, 'sym_min', no_symbolic_call)
    monkeypatch.setattr(torch, 'sym_max', no_symbolic_call)
    dilation = mixer.dilation(56, 33)
    assert dilation == (5, 3) and all(type(d) is int for d in dilation)


@pytest.mark.parametrize('x,message', [
    (torch.randn(3, 64, 64), '4-D'),
    (torch.randn(1, 1, 64, 64), '3 input channels'),
    (torch.zeros(1, 3, 64, 64, dtype=torch.uint8), 'floating-point'),
])
def test_bad_input_raises(nano, x, message):
    with pytest.raises(ValueError, match=message):
        nano(x)


def test_unknown_model_name():
    with pytest.raises(ValueError, match='a2mamba_n'):
        create_model('a2mamba_xl')


def test_create_model_kwargs():
    model = create_model('a2mamba_n', num_classes=10, in_chans=1, drop_path_rate=0.3, use_checkpoint=[2, 0, 0, 0])
    assert model(torch.randn(2, 1, 64, 64)).shape == (2, 10)
    rates = [b.drop_path.drop_prob for s in model.stages for b in s.blocks if hasattr(b.drop_path, 'drop_prob')]
    assert rates[-1] == pytest.approx(0.3) and rates == sorted(rates)
    assert [s.use_checkpoint for s in model.stages] == [2, 0, 0, 0]
    headless = create_model('a2mamba_n', num_classes=0)
    assert headless(torch.randn(1, 3, 64, 64)).shape == (1, 1024)


def test_factories_match_create_model():
    assert set(a2mamba_core.list_models()) == {'a2mamba_n', 'a2mamba_t', 'a2mamba_s', 'a2mamba_b', 'a2mamba_l'}
    model = a2mamba_core.a2mamba_t(num_classes=5)
    assert model.embed_dims == [48, 96, 256, 448] and model.num_classes == 5


def test_window_biases_are_tied(nano):
    mixer = nano.layers[0].blocks[0].token_mixer
    assert mixer.rpb[0] is mixer.rpb[1]
    names = [n for n, _ in nano.named_parameters() if n.startswith('layers.0.blocks.0.token_mixer.rpb')]
    assert names == ['layers.0.blocks.0.token_mixer.rpb.0']


def test_gradient_checkpointing_is_exact():
    torch.manual_seed(0)
    plain = create_model('a2mamba_n', num_classes=10).train()
    ckpt = create_model('a2mamba_n', num_classes=10, use_checkpoint=2).train()
    ckpt.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 64, 64)
    outs = []
    for model in (plain, ckpt):
        out = model(x)
        out.square().sum().backward()
        outs.append(out)
    torch.testing.assert_close(outs[0], outs[1])
    for (name, p1), p2 in zip(plain.named_parameters(), ckpt.parameters()):
        torch.testing.assert_close(p1.grad, p2.grad, msg=name)


def test_every_parameter_gets_a_gradient():
    model = create_model('a2mamba_n', num_classes=10).train()
    model(torch.randn(2, 3, 64, 80)).sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing


def test_drop_path_active_only_in_training():
    model = create_model('a2mamba_n', num_classes=10, drop_path_rate=0.5)
    x = torch.randn(4, 3, 64, 64)
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(x))
        reference = model(x)
    model.train()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.eval()  # isolate drop path from batch statistics
    with torch.no_grad():
        assert not torch.allclose(model(x), reference)


def test_a2ssm_copies_no_maps_but_the_cast_autocast_needs(scratch_registry):
    """Under bf16 autocast, the only map-sized copy A2SSM makes itself is autocast's cast of the
    float32 aggregated states for ``state_fusion``: its projections read the maps in place (a
    ``torch.matmul`` of the weight and the maps folds the batch into the pixels, copying the maps
    and its result), and the float32 readout widens its 16-bit operands inside the products. The
    ops run as stand-ins of the kernels' shapes, so that only the model's own ops are counted."""
    for op, fake in (('na2d', library.na2d_fake), ('selective_scan_states', library.selective_scan_states_fake)):
        ops.register_backend(op, 'stand-in', ops.Kernel(fake, None), lambda t: True)
    batch, dim, heads, side = 2, 32, 2, 8
    map_size = batch * dim * side * side

    class MapCopies(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.copies = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if func in (torch.ops.aten.clone.default, torch.ops.aten._to_copy.default, torch.ops.aten.copy_.default) \
                    and out.numel() >= map_size // heads:
                self.copies.append((str(func), args[0].dtype, out.dtype))
            return out

    ssm = A2SSM(dim, heads)
    x = torch.randn(batch, dim, side, side, dtype=torch.bfloat16)
    q, k = (torch.randn(batch, heads // 2, side, side, dim // heads, dtype=torch.bfloat16) for _ in range(2))
    scales = (ops.Neighborhood(q, k, 3), ops.Neighborhood(q, k, 3, 2))
    counter = MapCopies()
    with torch.autocast('cpu', dtype=torch.bfloat16), counter:
        y = ssm(x, scales)
    assert y.shape == (batch, dim, side, side) and y.dtype == torch.float32
    assert counter.copies == [('aten._to_copy.default', torch.float32, torch.bfloat16)]
