"""Checkpoints through mmpretrain: the authors' files converted or loaded as they are, the round
trip official -> mmpretrain -> official, EMA weights, backbone init_cfg, bad files, and the
official model's golden logits."""
import importlib.util
import json
import os

import pytest
import torch
from conftest import conformance_dir, load_mmpretrain_config, load_tool
from mmengine.runner import load_checkpoint
from mmpretrain.registry import MODELS

import a2mamba_core
from mmpretrain_ext import A2Mamba, mmpretrain_to_official, official_to_mmpretrain

convert_checkpoint = load_tool('model_converters/convert_checkpoint.py')


def official_state_dict(name: str) -> dict:
    """A random official-layout state_dict: core model init plus random BN statistics."""
    model = a2mamba_core.create_model(name)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.normal_(0, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    return model.state_dict()



def test_official_checkpoint_through_mmpretrain_gives_the_core_logits(tmp_path):
    official = official_state_dict('a2mamba_n')
    core = a2mamba_core.create_model('a2mamba_n').eval()
    core.load_state_dict(official)
    official_path = tmp_path / 'a2mamba_nano.pth'
    torch.save({'state_dict': official}, official_path)

    cfg = load_mmpretrain_config('a2mamba-n_8xb256_in1k.py')
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        expected = core(x)
    # 1. converted with tools/model_converters/convert_checkpoint.py, loaded strictly
    converted_path = tmp_path / 'converted.pth'
    convert_checkpoint.main([str(official_path), str(converted_path)])
    classifier = MODELS.build(cfg.model).eval()
    classifier.load_state_dict(torch.load(converted_path, weights_only=True)['state_dict'], strict=True)
    with torch.no_grad():
        torch.testing.assert_close(classifier(x, mode='tensor'), expected, rtol=0, atol=0)
    # 2. the official file as is, through the classifier's load_state_dict pre-hook (load_from)
    direct = MODELS.build(cfg.model).eval()
    load_checkpoint(direct, str(official_path), strict=True)
    with torch.no_grad():
        torch.testing.assert_close(direct(x, mode='tensor'), expected, rtol=0, atol=0)


def test_checkpoint_round_trip_official_mmpretrain_official_is_exact(tmp_path):
    official = official_state_dict('a2mamba_t')
    src, mid, back = tmp_path / 'official.pth', tmp_path / 'mm.pth', tmp_path / 'back.pth'
    torch.save({'model': official}, src)
    convert_checkpoint.main([str(src), str(mid)])
    convert_checkpoint.main([str(mid), str(back), '--to', 'official'])
    result = torch.load(back, weights_only=True)['state_dict']
    assert list(result) == list(official)
    assert all(torch.equal(result[k], official[k]) for k in official)


def test_ema_weights_of_an_official_training_checkpoint(tmp_path):
    plain, ema = official_state_dict('a2mamba_n'), official_state_dict('a2mamba_n')
    src = tmp_path / 'train.pth'
    torch.save({'state_dict': plain, 'state_dict_ema': {'module.' + k: v for k, v in ema.items()}}, src)
    converted = convert_checkpoint.convert(str(src), str(tmp_path / 'ema.pth'), weights='ema')
    assert all(torch.equal(converted[k], v) for k, v in official_to_mmpretrain(ema).items())


def test_backbone_pretrained_init_loads_official_and_mmpretrain_checkpoints(tmp_path):
    official = official_state_dict('a2mamba_n')
    torch.save(official, tmp_path / 'official.pth')
    torch.save({'state_dict': official_to_mmpretrain(official)}, tmp_path / 'mm.pth')
    for path in ('official.pth', 'mm.pth'):
        backbone = A2Mamba(arch='nano', init_cfg=dict(type='Pretrained', checkpoint=str(tmp_path / path)))
        backbone.init_weights()
        for key, value in backbone.state_dict().items():
            assert torch.equal(value, official[key]), key


def test_bad_checkpoints_raise(tmp_path):
    missing = str(tmp_path / 'missing.pth')
    with pytest.raises(FileNotFoundError, match='missing.pth'):
        A2Mamba(arch='nano', init_cfg=dict(type='Pretrained', checkpoint=missing)).init_weights()
    with pytest.raises(FileNotFoundError):
        convert_checkpoint.main([missing, str(tmp_path / 'out.pth')])
    with pytest.raises(FileNotFoundError):
        convert_checkpoint.main([missing, str(tmp_path / 'out.pth'), '--to', 'official'])
    foreign = tmp_path / 'foreign.pth'
    torch.save({'state_dict': {'fc.weight': torch.zeros(2, 2)}}, foreign)
    with pytest.raises(RuntimeError, match='no key'):
        A2Mamba(arch='nano', init_cfg=dict(type='Pretrained', checkpoint=str(foreign))).init_weights()
    with pytest.raises(KeyError, match='fc.weight'):
        convert_checkpoint.main([str(foreign), str(tmp_path / 'out.pth')])
    wrapped = tmp_path / 'wrapped.pth'
    torch.save({'model': official_state_dict('a2mamba_n')}, wrapped)
    cfg = load_mmpretrain_config('a2mamba-n_8xb256_in1k.py')
    with pytest.raises(RuntimeError, match='convert_checkpoint'):
        load_checkpoint(MODELS.build(cfg.model), str(wrapped))
    with pytest.raises(KeyError):
        mmpretrain_to_official({'neck.weight': torch.zeros(1)})


def test_matches_the_official_golden_logits():
    """The authors' model's logits (independent of this code) through the mmpretrain classifier."""
    directory = conformance_dir()
    if not directory.is_dir():
        if os.environ.get('CI'):
            pytest.fail(f'conformance data missing at {directory} (set A2MAMBA_CONFORMANCE)')
        pytest.skip(f'conformance data not found at {directory}')
    spec = importlib.util.spec_from_file_location('conformance_weights', directory / 'weights.py')
    weights = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(weights)
    golden = torch.load(directory / 'nano_cls_224.pt', weights_only=True)
    assert golden['variant'] == 'a2mamba_n' and golden['mode'] == 'cls'
    manifest = json.loads((directory / 'state_dict_manifest.json').read_text())['a2mamba_n']
    official = weights.fill({k: torch.zeros(shape) if 'num_batches' not in k else torch.zeros((), dtype=torch.long)
                             for k, shape in manifest.items()})
    classifier = MODELS.build(load_mmpretrain_config('a2mamba-n_8xb256_in1k.py').model).eval()
    classifier.load_state_dict(official, strict=True)  # official names, mapped by the pre-hook
    x = torch.randn(*golden['shape'], generator=torch.Generator().manual_seed(golden['x_seed']))
    with torch.no_grad():
        logits = classifier(x, mode='tensor')
    ref = golden['out'][0]
    assert ((logits.double() - ref.double()).norm() / ref.double().norm()).item() < 1e-4
