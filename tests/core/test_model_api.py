"""timm's model API on A2Mamba: intermediates, pruning, parameter groups, checkpointing."""
import re
from typing import List

import pytest
import torch
from conftest import rel_err
from timm.models._manipulate import group_parameters

from a2mamba_core import create_model


def official_stage_maps(model: torch.nn.Module, x: torch.Tensor) -> List[torch.Tensor]:
    """The authors' forward: the stem, then every entry of ``layers`` in order, keeping the
    output of each stage (the even entries)."""
    x = model.patch_embed(x)
    maps = []
    for i, layer in enumerate(model.layers):
        x = layer(x)
        if i % 2 == 0:
            maps.append(x)
    return maps


@pytest.fixture(scope='module')
def model_and_input():
    torch.manual_seed(0)
    model = create_model('a2mamba_n', num_classes=10).eval()
    return model, torch.randn(2, 3, 64, 64)


@torch.no_grad()
def test_forward_intermediates_are_the_stage_maps(model_and_input):
    model, x = model_and_input
    reference = official_stage_maps(model, x)
    assert [m.shape[1:] for m in reference] == [(32, 16, 16), (64, 8, 8), (128, 4, 4), (192, 2, 2)]
    maps = model.forward_intermediates(x, intermediates_only=True)
    assert len(maps) == 4 and all(torch.equal(m, r) for m, r in zip(maps, reference))
    assert all(torch.equal(m, r) for m, r in zip(model.forward_features(x), reference))
    final, maps = model.forward_intermediates(x)
    assert torch.equal(final, reference[-1]) and all(torch.equal(m, r) for m, r in zip(maps, reference))
    assert torch.equal(model.forward_head(final), model(x))
    assert model(x).shape == (2, 10)


@pytest.mark.parametrize('indices, expected', [
    (None, [0, 1, 2, 3]), (1, [3]), (3, [1, 2, 3]), ([0, 2], [0, 2]), ((2, 0), [0, 2]), ([-1], [3]),
    ((-4, -2), [0, 2]),
])
@torch.no_grad()
def test_forward_intermediates_indices(model_and_input, indices, expected):
    model, x = model_and_input
    reference = official_stage_maps(model, x)
    maps = model.forward_intermediates(x, indices, intermediates_only=True)
    assert len(maps) == len(expected) and all(torch.equal(m, reference[i]) for m, i in zip(maps, expected))
    final, _ = model.forward_intermediates(x, indices, stop_early=True)
    assert torch.equal(final, reference[expected[-1]])
    final, _ = model.forward_intermediates(x, indices)
    assert torch.equal(final, reference[-1])


@pytest.mark.parametrize('kwargs, match', [
    (dict(indices=0), 'last 0 stages'), (dict(indices=5), 'last 5 stages'), (dict(indices=[4]), r'\[-4, 3\]'),
    (dict(indices=[-5]), r'\[-4, 3\]'), (dict(indices=[]), 'non-empty'), (dict(indices=[1, -3]), 'repeats'),
    (dict(indices=True), 'non-empty sequence'), (dict(indices=[1.0]), r'\[-4, 3\]'), (dict(indices='0'), 'sequence'),
    (dict(norm=True), 'no final norm'), (dict(output_fmt='NHWC'), 'NCHW'),
])
def test_forward_intermediates_rejects_bad_arguments(model_and_input, kwargs, match):
    model, x = model_and_input
    with pytest.raises(ValueError, match=match):
        model.forward_intermediates(x, **kwargs)


@torch.no_grad()
def test_prune_intermediate_layers_keeps_names_and_maps(model_and_input):
    model, x = model_and_input
    reference = official_stage_maps(model, x)
    pruned = create_model('a2mamba_n', num_classes=10).eval()
    pruned.load_state_dict(model.state_dict())
    assert pruned.prune_intermediate_layers((0, -3)) == [0, 1]
    assert len(pruned.layers) == 3 and pruned.num_stages == 2 and pruned.num_classes == 0
    kept = pruned.state_dict()
    assert set(kept) == {k for k in model.state_dict() if k.startswith(('patch_embed.', 'layers.0.', 'layers.1.',
                                                                         'layers.2.'))}
    assert all(torch.equal(kept[k], v) for k, v in model.state_dict().items() if k in kept)
    maps = pruned.forward_intermediates(x, intermediates_only=True)
    assert len(maps) == 2 and all(torch.equal(m, r) for m, r in zip(maps, reference[:2]))
    maps = pruned.forward_intermediates(x, [1], intermediates_only=True)
    assert len(maps) == 1 and torch.equal(maps[0], reference[1])
    with pytest.raises(ValueError, match=r'\[-2, 1\]'):
        pruned.forward_intermediates(x, [2])
    with pytest.raises(RuntimeError, match='pruned'):
        pruned(x)
    with pytest.raises(IndexError, match=r'\[0, 1\]'):
        pruned.stage(2)


def test_stage_and_downsample_lookups(model_and_input):
    model, _ = model_and_input
    assert [model.stage(i) for i in range(4)] == model.stages == [model.layers[i] for i in (0, 2, 4, 6)]
    assert model.downsample(0) is None
    assert [model.downsample(i) for i in (1, 2, 3)] == [model.layers[i] for i in (1, 3, 5)]
    with pytest.raises(IndexError, match=r'\[0, 3\]'):
        model.downsample(4)


@pytest.mark.parametrize('coarse', [False, True])
def test_group_matcher_covers_every_parameter_once(model_and_input, coarse):
    model, _ = model_and_input
    matcher = model.group_matcher(coarse=coarse)
    patterns = [spec if isinstance(spec, str) else spec[0]
                for value in matcher.values() for spec in ([value] if isinstance(value, str) else value)]
    for name, _ in model.named_parameters():
        assert sum(bool(re.match(p, name)) for p in patterns) == 1, name


def test_group_matcher_orders_groups_for_layer_decay(model_and_input):
    model, _ = model_and_input
    depths = [2, 2, 8, 2]
    groups = group_parameters(model, model.group_matcher())
    layer_of = {name: layer for layer, names in groups.items() for name in names}
    # the stem, one group per block (the downsample with the first block it feeds), the head
    assert len(groups) == 1 + sum(depths) + 1
    assert layer_of['patch_embed.0.weight'] == 0
    assert layer_of['layers.0.blocks.1.token_mixer.qkv.weight'] == 2
    assert layer_of['layers.1.0.weight'] == layer_of['layers.2.blocks.0.norm1.weight'] == 3
    assert layer_of['layers.4.blocks.7.mlp.fc2.weight'] == 1 + 2 + 2 + 7
    assert layer_of['layers.5.1.bias'] == layer_of['layers.6.blocks.0.norm2.bias'] == 13
    assert layer_of['classifier.4.weight'] == 15
    coarse = group_parameters(model, model.group_matcher(coarse=True))
    coarse_of = {name: layer for layer, names in coarse.items() for name in names}
    assert len(coarse) == 6
    assert coarse_of['layers.3.0.weight'] == coarse_of['layers.4.blocks.5.norm1.weight'] == 3


def test_set_grad_checkpointing_keeps_outputs_and_grads():
    torch.manual_seed(0)
    plain = create_model('a2mamba_n', num_classes=10).train()
    checkpointed = create_model('a2mamba_n', num_classes=10).train()
    checkpointed.load_state_dict(plain.state_dict())
    checkpointed.set_grad_checkpointing()
    assert [s.use_checkpoint for s in checkpointed.stages] == [2, 2, 8, 2]
    x = torch.randn(2, 3, 64, 64)
    outs, grads = [], []
    for model in (plain, checkpointed):
        out = model(x)
        out.square().sum().backward()
        outs.append(out.detach())
        grads.append({k: p.grad for k, p in model.named_parameters()})
    assert rel_err(outs[1], outs[0]) < 1e-6
    assert grads[0].keys() == grads[1].keys()
    assert all(rel_err(grads[1][k], grads[0][k]) < 1e-5 for k in grads[0] if grads[0][k].abs().sum() > 0)
    assert all(torch.equal(b.running_mean, a.running_mean)
               for a, b in zip(plain.modules(), checkpointed.modules()) if isinstance(a, torch.nn.BatchNorm2d))
    checkpointed.set_grad_checkpointing(3)
    assert [s.use_checkpoint for s in checkpointed.stages] == [2, 2, 3, 2]
    checkpointed.set_grad_checkpointing(False)
    assert [s.use_checkpoint for s in checkpointed.stages] == [0, 0, 0, 0]
    with pytest.raises(ValueError, match='use_checkpoint'):
        checkpointed.set_grad_checkpointing((1, 2))
