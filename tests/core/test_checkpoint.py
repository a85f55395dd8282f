"""load_pretrained: every container format, prefixes, stray keys, bad files."""
import logging

import pytest
import torch

from a2mamba_core import create_model, load_pretrained


@pytest.fixture(scope='module')
def source():
    torch.manual_seed(1)
    model = create_model('a2mamba_n', num_classes=10)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    return model.state_dict()


def assert_loaded(model, state_dict):
    own = model.state_dict()
    for k, v in state_dict.items():
        assert torch.equal(own[k], v), k


@pytest.mark.parametrize('container', ['bare', 'state_dict', 'model'])
def test_formats(tmp_path, source, container):
    path = tmp_path / 'ckpt.pth'
    torch.save(source if container == 'bare' else {container: source, 'epoch': 3}, path)
    model = create_model('a2mamba_n', num_classes=10)
    result = load_pretrained(model, str(path))
    assert result.missing_keys == [] and result.unexpected_keys == []
    assert_loaded(model, source)


def test_ema_weights_chosen_by_argument(tmp_path, source):
    ema = {k: v + 1 if v.is_floating_point() else v for k, v in source.items()}
    path = tmp_path / 'ckpt.pth'
    torch.save({'model': source, 'state_dict_ema': ema}, path)
    model = create_model('a2mamba_n', num_classes=10)
    load_pretrained(model, str(path))
    assert_loaded(model, source)
    load_pretrained(model, str(path), weights='ema')
    assert_loaded(model, ema)
    torch.save({'model': source}, path)
    with pytest.raises(KeyError, match='EMA'):
        load_pretrained(model, str(path), weights='ema')


@pytest.mark.parametrize('prefix', ['module.', 'backbone.', 'module.backbone.'])
def test_prefixes_stripped(tmp_path, source, prefix):
    path = tmp_path / 'ckpt.pth'
    torch.save({'state_dict': {prefix + k: v for k, v in source.items()}}, path)
    model = create_model('a2mamba_n', num_classes=10)
    load_pretrained(model, str(path))
    assert_loaded(model, source)


def test_wrong_and_missing_keys_logged(tmp_path, source, caplog):
    state = dict(source)
    dropped = state.pop('classifier.4.weight')
    state['not.a.key'] = torch.zeros(1)
    path = tmp_path / 'ckpt.pth'
    torch.save(state, path)
    model = create_model('a2mamba_n', num_classes=10)
    before = model.classifier[4].weight.detach().clone()
    with caplog.at_level(logging.WARNING, logger='a2mamba'):
        result = load_pretrained(model, str(path))
    assert result.missing_keys == ['classifier.4.weight'] and result.unexpected_keys == ['not.a.key']
    assert 'classifier.4.weight' in caplog.text and 'not.a.key' in caplog.text
    assert torch.equal(model.classifier[4].weight, before) and not torch.equal(before, dropped)


def test_wrong_size_raises(tmp_path, source):
    path = tmp_path / 'ckpt.pth'
    torch.save(source, path)
    with pytest.raises(RuntimeError, match='does not fit'):
        load_pretrained(create_model('a2mamba_t', num_classes=10), str(path))


def test_missing_file_raises(tmp_path):
    with pytest.raises(FileNotFoundError, match='not found'):
        load_pretrained(create_model('a2mamba_n'), str(tmp_path / 'nope.pth'))


def test_unreadable_and_foreign_files_raise(tmp_path):
    garbage = tmp_path / 'garbage.pth'
    garbage.write_bytes(b'not a checkpoint')
    with pytest.raises(RuntimeError, match='cannot read'):
        load_pretrained(create_model('a2mamba_n'), str(garbage))
    foreign = tmp_path / 'foreign.pth'
    torch.save({'fc.weight': torch.zeros(2, 2)}, foreign)
    with pytest.raises(RuntimeError, match='no key'):
        load_pretrained(create_model('a2mamba_n'), str(foreign))
