"""The dense-prediction backbone shared by mmdet and mmseg (mmengine_ext.A2MambaBackbone)."""
import logging
import math
from typing import List, Tuple

import pytest
import torch
from conftest import grads_of_summed_outputs
from mmengine.logging import MMLogger
from torch.nn.modules.batchnorm import _BatchNorm

from a2mamba_core import MODEL_SPECS, create_model
from mmengine_ext import A2MambaBackbone

NANO = MODEL_SPECS['a2mamba_n']


def stage_sizes(height: int, width: int) -> List[Tuple[int, int]]:
    """Map sizes of a stride-2, kernel-3, padding-1 conv chain: two in the stem, one per stage."""
    sizes = []
    for _ in range(2):
        height, width = math.ceil(height / 2), math.ceil(width / 2)
    for _ in range(4):
        sizes.append((height, width))
        height, width = math.ceil(height / 2), math.ceil(width / 2)
    return sizes


@pytest.mark.parametrize('size', [(97, 131), (33, 250), (64, 64)])
def test_output_shapes_for_odd_and_small_inputs(size):
    model = A2MambaBackbone('nano').eval()
    with torch.no_grad():
        outs = model(torch.randn(2, 3, *size))
    assert [tuple(o.shape) for o in outs] == [
        (2, c, h, w) for c, (h, w) in zip(NANO['embed_dims'], stage_sizes(*size))]
    assert all(torch.isfinite(o).all() for o in outs)


def test_out_indices_select_normalise_and_prune():
    model = A2MambaBackbone('nano', out_indices=(-3, 0)).eval()
    assert model.out_indices == (0, 1)
    names = {name.split('.')[0] for name, _ in model.named_children()}
    assert names == {'patch_embed', 'layers', 'norm0', 'norm1'}
    assert len(model.layers) == 3  # stage 1, downsample, stage 2: later stages are not built
    outs = model(torch.randn(1, 3, 64, 96))
    assert [o.shape[1] for o in outs] == [32, 64]
    # each returned map is layer-normalised over channels
    mean = outs[1].mean(dim=1)
    assert torch.allclose(mean, torch.zeros_like(mean), atol=1e-4)


@pytest.mark.parametrize('kwargs, message', [
    (dict(out_indices=(4,)), 'out_indices'),
    (dict(out_indices=(-5,)), 'out_indices'),
    (dict(out_indices=()), 'out_indices'),
    (dict(out_indices=(1, -3)), 'repeats'),
    (dict(frozen_stages=5), 'frozen_stages'),
    (dict(frozen_stages=-2), 'frozen_stages'),
    (dict(arch='huge'), 'arch'),
    (dict(with_cp=(1, 2)), 'with_cp'),
    (dict(with_cp=(3, 0, 0, 0)), 'with_cp'),
    (dict(drop_path_rate=1.0), 'drop_path_rate'),
    (dict(init_cfg=dict(type='Pretrained')), 'checkpoint'),
    (dict(init_cfg=dict(type='Pretrained', checkpoint='a.pth', prefix='backbone.')), 'checkpoint'),
])
def test_bad_arguments_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        A2MambaBackbone(**dict(dict(arch='nano'), **kwargs))


def test_bad_input_is_rejected():
    with pytest.raises(ValueError, match=r'\(B, 3, H, W\)'):
        A2MambaBackbone('nano')(torch.randn(1, 1, 64, 64))


def test_frozen_stages_stay_frozen_through_a_training_step():
    torch.manual_seed(0)
    model = A2MambaBackbone('nano', frozen_stages=2)
    model.train()
    frozen = [model.patch_embed, model.layers[0], model.layers[1], model.layers[2], model.norm0, model.norm1]
    trainable = [model.layers[3], model.layers[4], model.norm2, model.norm3]
    for module in frozen:
        assert not module.training
        assert all(not p.requires_grad for p in module.parameters())
    for module in trainable:
        assert module.training
        assert all(p.requires_grad for p in module.parameters())

    before = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    loss = sum(o.square().mean() for o in model(torch.randn(2, 3, 64, 64)))
    loss.backward()
    optimizer.step()
    after = model.state_dict()
    frozen_prefixes = ('patch_embed.', 'layers.0.', 'layers.1.', 'layers.2.', 'norm0.', 'norm1.')
    for key, value in before.items():
        if key.startswith(frozen_prefixes):
            assert torch.equal(value, after[key]), f'{key} changed although frozen'
    assert not torch.equal(before['layers.3.0.weight'], after['layers.3.0.weight'])
    assert not torch.equal(before['norm3.weight'], after['norm3.weight'])


def test_norm_eval_keeps_batchnorm_statistics():
    model = A2MambaBackbone('nano', norm_eval=True)
    model.train()
    batchnorms = [m for m in model.modules() if isinstance(m, _BatchNorm)]
    assert batchnorms and all(not bn.training for bn in batchnorms)
    stats = [bn.running_mean.clone() for bn in batchnorms]
    model(torch.randn(2, 3, 64, 64))
    assert all(torch.equal(s, bn.running_mean) for s, bn in zip(stats, batchnorms))


def test_drop_path_rate_is_honoured():
    rate = 0.3
    model = A2MambaBackbone('nano', drop_path_rate=rate)
    probs = [getattr(block.drop_path, 'drop_prob', 0.0) for stage in model.layers[0::2] for block in stage.blocks]
    depth = sum(NANO['depths'])
    assert probs == pytest.approx([rate * i / (depth - 1) for i in range(depth)])

    x = torch.randn(4, 3, 32, 32)
    torch.manual_seed(0)
    stochastic = A2MambaBackbone('nano', drop_path_rate=0.5).train()
    assert not torch.allclose(stochastic(x)[-1], stochastic(x)[-1])
    stochastic.eval()
    assert torch.equal(stochastic(x)[-1], stochastic(x)[-1])
    deterministic = A2MambaBackbone('nano', drop_path_rate=0.0).train()
    assert torch.equal(deterministic(x)[-1], deterministic(x)[-1])


def test_with_cp_sets_counts_and_keeps_results():
    counts = A2MambaBackbone('nano', with_cp=(0, 1, 8, 2)).layers[0::2]
    assert [stage.use_checkpoint for stage in counts] == [0, 1, 8, 2]
    torch.manual_seed(0)
    plain = A2MambaBackbone('nano')
    checkpointed = A2MambaBackbone('nano', with_cp=True)
    assert [stage.use_checkpoint for stage in checkpointed.layers[0::2]] == list(NANO['depths'])
    checkpointed.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 64, 80)
    weight = 'layers.4.blocks.0.token_mixer.qkv.weight'
    assert torch.allclose(grads_of_summed_outputs(plain, x)[weight], grads_of_summed_outputs(checkpointed, x)[weight],
                          rtol=1e-4, atol=1e-6)


def random_classifier_checkpoint(name: str) -> dict:
    """A classification model's state_dict with every floating tensor drawn at random (``rpb.1``
    repeats ``rpb.0``: the authors' model ties them)."""
    generator = torch.Generator().manual_seed(1)
    state_dict = {k: torch.randn(v.shape, generator=generator) if v.is_floating_point() else v
                  for k, v in create_model(name).state_dict().items()}
    for key in state_dict:
        if key.endswith('.rpb.1'):
            state_dict[key] = state_dict[key.replace('.rpb.1', '.rpb.0')]
    return state_dict


@pytest.mark.parametrize('wrap', ['model', 'mmdet'])
def test_pretrained_classification_checkpoint_loads(tmp_path, wrap):
    state_dict = random_classifier_checkpoint('a2mamba_n')
    path = tmp_path / 'a2mamba_nano.pth'
    if wrap == 'model':  # the authors' release layout
        torch.save({'model': state_dict}, path)
    else:  # a detector checkpoint: backbone weights under 'backbone.'
        torch.save({'state_dict': {f'backbone.{k}': v for k, v in state_dict.items()}}, path)
    model = A2MambaBackbone('nano', init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    model.init_weights()
    loaded = model.state_dict()
    assert not any(k.startswith('classifier.') for k in loaded)
    for key, value in loaded.items():
        if not key.startswith('norm'):
            assert torch.equal(value, state_dict[key]), key
    # the stage-4 global bias keeps its 224^2 shape (7x7 tokens); forward resizes it
    assert loaded['layers.6.blocks.0.token_mixer.rpb.2'].shape == (1, 8, 49, 49)
    assert model(torch.randn(1, 3, 96, 160))[-1].shape == (1, 192, 3, 5)


def test_pretrained_into_pruned_backbone(tmp_path):
    state_dict = random_classifier_checkpoint('a2mamba_n')
    path = tmp_path / 'a2mamba_nano.pth'
    torch.save(state_dict, path)
    model = A2MambaBackbone('nano', out_indices=(0, 1), init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    model.init_weights()
    assert torch.equal(model.layers[2].blocks[1].mlp.fc1.weight, state_dict['layers.2.blocks.1.mlp.fc1.weight'])


def test_keys_a_lenient_load_skips_are_reported_once_in_the_run_log(tmp_path):
    state_dict = random_classifier_checkpoint('a2mamba_n')
    state_dict.pop('layers.2.blocks.1.mlp.fc1.weight')
    state_dict['layers.2.blocks.1.mlp.extra'] = torch.zeros(1)
    path = tmp_path / 'partial.pth'
    torch.save(state_dict, path)
    model = A2MambaBackbone('nano', init_cfg=dict(type='Pretrained', checkpoint=str(path), strict=False))
    # what the user sees: the run's log and the core's own logger
    records = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append
    loggers = [MMLogger.get_current_instance(), logging.getLogger('a2mamba')]
    for logger in loggers:
        logger.addHandler(handler)
    try:
        model.init_weights()
    finally:
        for logger in loggers:
            logger.removeHandler(handler)
    messages = [record.getMessage() for record in records]
    assert sum('layers.2.blocks.1.mlp.fc1.weight' in m for m in messages) == 1, messages
    assert sum('layers.2.blocks.1.mlp.extra' in m for m in messages) == 1, messages


def test_missing_checkpoint_raises(tmp_path):
    model = A2MambaBackbone('nano', init_cfg=dict(type='Pretrained', checkpoint=str(tmp_path / 'absent.pth')))
    with pytest.raises(FileNotFoundError, match='absent.pth'):
        model.init_weights()


def test_checkpoint_of_another_size_raises(tmp_path):
    path = tmp_path / 'a2mamba_tiny.pth'
    torch.save(create_model('a2mamba_t').state_dict(), path)
    model = A2MambaBackbone('nano', init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    with pytest.raises(RuntimeError, match='does not fit'):
        model.init_weights()


def test_torch_compile_option_matches_eager():
    """``torch_compile=True`` compiles the backbone in place (same state_dict names, the ops inside
    the graph as custom ops) and the compiled forward gives the eager result (Inductor's CPU
    kernels reorder float32 sums: 1e-5 relative and absolute differences were seen). Inference
    only: compiling the backward too takes minutes on CI."""
    torch.manual_seed(0)
    eager = A2MambaBackbone('nano').eval()
    compiled = A2MambaBackbone('nano', torch_compile=True).eval()
    assert compiled.load_state_dict(eager.state_dict()).missing_keys == []
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        for out, ref in zip(compiled(x), eager(x)):
            torch.testing.assert_close(out, ref, rtol=1e-4, atol=5e-5)
