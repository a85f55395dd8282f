"""The mmpretrain A2Mamba backbone: outputs, argument and input checks, frozen stages, activation
checkpointing, and layer depths for layer-wise lr decay."""
import pytest
import torch
from conftest import grads_of_summed_outputs

import a2mamba_core
from mmpretrain_ext import A2Mamba


def test_backbone_out_indices_and_any_input_size():
    backbone = A2Mamba(arch='nano', out_indices=(0, 1, 2, -1)).eval()
    with torch.no_grad():
        outs = backbone(torch.randn(1, 3, 112, 137))
    assert [tuple(o.shape) for o in outs] == [(1, 32, 28, 35), (1, 64, 14, 18), (1, 128, 7, 9), (1, 192, 4, 5)]
    core = a2mamba_core.create_model('a2mamba_n').eval()
    core.load_state_dict(backbone.state_dict(), strict=False)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        for out, ref in zip(backbone(x), core.forward_features(x)):
            torch.testing.assert_close(out, ref, rtol=0, atol=0)


@pytest.mark.parametrize('kwargs, error', [
    (dict(arch='huge'), ValueError), (dict(out_indices=4), ValueError), (dict(out_indices=()), ValueError),
    (dict(frozen_stages=5), ValueError), (dict(frozen_stages=-2), ValueError), (dict(with_cp=(1, 2)), ValueError),
    (dict(init_cfg=dict(type='Pretrained')), ValueError),
])
def test_backbone_rejects_bad_arguments(kwargs, error):
    with pytest.raises(error):
        A2Mamba(**dict(dict(arch='nano'), **kwargs))


def test_backbone_rejects_bad_input():
    with pytest.raises(ValueError, match=r'\(B, 3, H, W\)'):
        A2Mamba(arch='nano')(torch.randn(1, 1, 64, 64))


def test_frozen_stages_and_norm_eval():
    assert all(p.requires_grad for p in A2Mamba(arch='nano').train().parameters())
    stem_only = A2Mamba(arch='nano', frozen_stages=0).train()
    assert not any(p.requires_grad for p in stem_only.patch_embed.parameters())
    assert all(p.requires_grad for p in stem_only.layers.parameters())
    backbone = A2Mamba(arch='nano', frozen_stages=2, norm_eval=True)
    backbone.train()
    frozen = [backbone.patch_embed, backbone.layers[0], backbone.layers[1], backbone.layers[2]]
    for module in frozen:
        assert not module.training and all(not p.requires_grad for p in module.parameters())
    assert all(p.requires_grad for p in backbone.layers[3].parameters())
    assert backbone.layers[4].training
    assert all(not m.training for m in backbone.modules() if isinstance(m, torch.nn.BatchNorm2d))


def test_with_cp_gives_the_same_output_and_grads():
    torch.manual_seed(0)
    plain = A2Mamba(arch='nano', out_indices=(0, 1, 2, 3))
    checkpointed = A2Mamba(arch='nano', out_indices=(0, 1, 2, 3), with_cp=True)
    checkpointed.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(grads_of_summed_outputs(checkpointed, x), grads_of_summed_outputs(plain, x))


def test_layer_depth_covers_every_parameter():
    backbone = A2Mamba(arch='nano')
    depths = {name: backbone.get_layer_depth(name)[0] for name, _ in backbone.named_parameters()}
    num_layers = sum(a2mamba_core.MODEL_SPECS['a2mamba_n']['depths']) + 2
    assert depths['patch_embed.0.weight'] == 0
    assert depths['layers.0.blocks.0.cpe1.weight'] == 1
    assert depths['layers.1.0.weight'] == depths['layers.2.blocks.0.cpe1.weight'] == 3
    assert depths['layers.6.blocks.1.cpe1.weight'] == num_layers - 2
    assert backbone.get_layer_depth('head.classifier.4.weight', 'backbone.') == (num_layers - 1, num_layers)
