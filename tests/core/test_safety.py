"""Checkpoints: nothing in a file runs on load, partial or foreign weights raise, mmengine Runner
checkpoints load everywhere without an environment override; BatchNorm statistics under
activation checkpointing; argument validation; resuming epoch-based runs."""
import importlib
import os
import pickle
import subprocess
import sys
from pathlib import Path
from typing import List

import numpy as np
import pytest
import torch
from conftest import MNIST, REPO, build_model, load_tool, write_digits
from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.registry import init_default_scope
from mmengine.runner import Runner, load_checkpoint
from PIL import Image

import a2mamba_core
from a2mamba_core import create_model, load_pretrained, read_checkpoint
from mmengine_ext import A2MambaBackbone, EpochResumeCheck
from mmpretrain_ext import A2Mamba as MMPretrainA2Mamba

convert_checkpoint, test_tool, train_tool = (
    load_tool(path) for path in ('model_converters/convert_checkpoint.py', 'test.py', 'train.py'))

DET_DEMO = REPO / 'configs' / 'mmdet' / 'cascade-mask-rcnn_a2mamba-n_fpn_nuclei-demo.py'
SEG_DEMO = REPO / 'configs' / 'mmseg' / 'upernet_a2mamba-n_nuclei-demo.py'
TRAIN_IMAGES, TEST_IMAGES, BATCH = 10, 10, 5  # one image per digit, two iterations per epoch


@pytest.fixture(autouse=True)
def _no_weights_only_override(monkeypatch):
    """Everything here must work under torch's own default, weights_only=True."""
    monkeypatch.delenv('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD', raising=False)
    monkeypatch.delenv('TORCH_FORCE_WEIGHTS_ONLY_LOAD', raising=False)


class Payload:
    """Unpickling this creates ``marker``: the stand-in for code an attacker would run."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, 'w')


def malicious_checkpoint(path: Path, state_dict: dict) -> Path:
    """A checkpoint with real weights and a payload in its metadata; returns the marker path."""
    marker = path.with_suffix('.ran')
    torch.save({'state_dict': state_dict, 'meta': {'note': Payload(marker)}}, path)
    return marker


def nano_state_dict(**kwargs) -> dict:
    torch.manual_seed(1)
    return create_model('a2mamba_n', **kwargs).state_dict()


def tiny_mnist_config(tmp: Path, data_root: Path, checkpoint: dict) -> Path:
    """The demo config on a few images, with ``checkpoint`` overriding its CheckpointHook."""
    loader = (f'dict(batch_size={BATCH}, num_workers=0, persistent_workers=False, '
              f'dataset=dict(data_root={str(data_root)!r}))')
    path = tmp / 'tiny_mnist.py'
    path.write_text(f'_base_ = [{str(MNIST)!r}]\n'
                    f'train_dataloader = {loader}\nval_dataloader = {loader}\ntest_dataloader = {loader}\n'
                    f'default_hooks = dict(logger=dict(interval=1), checkpoint={checkpoint!r})\n'
                    "custom_hooks = [dict(type='EMAHook', momentum=0.1, update_buffers=True)]\n")
    return path


class LearningRates(Hook):
    def __init__(self):
        self.lrs = []

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        self.lrs.append(runner.optim_wrapper.get_lr()['lr'][0])


def train(config: Path, work_dir: Path, resume: str = None, check: bool = True) -> LearningRates:
    cfg = Config.fromfile(str(config))
    cfg.work_dir = str(work_dir)
    if resume:
        cfg.resume, cfg.load_from = True, resume
    runner = Runner.from_cfg(cfg)
    recorder = LearningRates()
    runner.register_hook(recorder)
    if check:
        runner.register_hook(EpochResumeCheck())
    runner.train()
    return recorder


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
    """Two real 2-epoch runs of the demo recipe (AdamW, warm-up + cosine, EMA, validation): one
    saving at epoch ends, one every 3 iterations (mid-epoch)."""
    tmp = tmp_path_factory.mktemp('runs')
    write_digits(tmp / 'digits', TRAIN_IMAGES, TEST_IMAGES)
    by_epoch = tiny_mnist_config(tmp, tmp / 'digits', dict(type='CheckpointHook', interval=1, max_keep_ckpts=-1))
    recorder = train(by_epoch, tmp / 'by_epoch')
    by_iter = tmp / 'by_iter_cfg'
    by_iter.mkdir()
    by_iter = tiny_mnist_config(by_iter, tmp / 'digits',
                                dict(type='CheckpointHook', interval=3, by_epoch=False, max_keep_ckpts=-1))
    train(by_iter, tmp / 'by_iter')
    return dict(tmp=tmp, config=by_epoch, data=tmp / 'digits', lrs=recorder.lrs,
                checkpoint=tmp / 'by_epoch' / 'epoch_2.pth', epoch_1=tmp / 'by_epoch' / 'epoch_1.pth',
                mid_epoch=tmp / 'by_iter' / 'iter_3.pth')


# ---------------------------------------------------------------- nothing in a file runs on load


def test_the_payload_runs_under_plain_unpickling(tmp_path):
    """The control: the payload is live, so the tests below would see it run."""
    marker = malicious_checkpoint(tmp_path / 'evil.pth', {})
    torch.load(tmp_path / 'evil.pth', weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize('path', ['load_pretrained', 'read_checkpoint', 'A2MambaBackbone init_cfg',
                                  'mmpretrain A2Mamba init_cfg', 'convert_checkpoint',
                                  'convert_checkpoint --to official', 'mmengine load_checkpoint'])
def test_a_malicious_checkpoint_is_refused_without_running(tmp_path, path):
    evil = tmp_path / 'evil.pth'
    marker = malicious_checkpoint(evil, nano_state_dict())
    pretrained = dict(type='Pretrained', checkpoint=str(evil))
    loads = {
        'load_pretrained': lambda: load_pretrained(create_model('a2mamba_n'), str(evil)),
        'read_checkpoint': lambda: read_checkpoint(str(evil)),
        'A2MambaBackbone init_cfg': lambda: A2MambaBackbone('nano', init_cfg=pretrained).init_weights(),
        'mmpretrain A2Mamba init_cfg': lambda: MMPretrainA2Mamba('nano', init_cfg=pretrained).init_weights(),
        'convert_checkpoint': lambda: convert_checkpoint.main([str(evil), str(tmp_path / 'out.pth')]),
        'convert_checkpoint --to official': lambda: convert_checkpoint.main(
            [str(evil), str(tmp_path / 'out.pth'), '--to', 'official']),
        'mmengine load_checkpoint': lambda: load_checkpoint(A2MambaBackbone('nano'), str(evil)),
    }
    with pytest.raises((RuntimeError, pickle.UnpicklingError), match='refusing to unpickle|Weights only load failed'):
        loads[path]()
    assert not marker.exists()
    assert not (tmp_path / 'out.pth').exists()


def test_tools_refuse_a_malicious_checkpoint(runs, tmp_path, monkeypatch):
    evil = tmp_path / 'evil.pth'
    marker = malicious_checkpoint(evil, torch.load(runs['checkpoint'])['state_dict'])
    monkeypatch.setattr(sys, 'argv', ['test.py', str(runs['config']), str(evil), '--work-dir', str(tmp_path / 'w')])
    with pytest.raises(SystemExit, match='refusing to unpickle'):
        test_tool.main()
    monkeypatch.setattr(sys, 'argv', ['train.py', str(runs['config']), '--resume', str(evil),
                                      '--work-dir', str(tmp_path / 'w')])
    with pytest.raises(pickle.UnpicklingError):
        train_tool.main()
    assert not marker.exists()


class AttributeOf:
    """Unpickles as ``getattr(owner, name)``."""

    def __init__(self, owner, name: str):
        self.owner, self.name = owner, name

    def __reduce__(self):
        return getattr, (self.owner, self.name)


def test_only_history_buffer_statistics_pass_for_getattr(tmp_path):
    """HistoryBuffer pickles its statistics as getattr(HistoryBuffer, 'mean'); the allow-list
    resolves exactly those, not getattr in general."""
    from mmengine.logging import HistoryBuffer
    path = tmp_path / 'attr.pth'
    torch.save({'mean': AttributeOf(HistoryBuffer, 'mean')}, path)
    assert torch.load(path)['mean'] is HistoryBuffer.mean
    for owner, name in ((HistoryBuffer, '__init__'), (HistoryBuffer, 'update'), (np.ndarray, 'tofile')):
        torch.save({'x': AttributeOf(owner, name)}, path)
        with pytest.raises(pickle.UnpicklingError, match='refusing getattr'):
            torch.load(path)


def test_tools_set_no_weights_only_override():
    tools = sorted(REPO.joinpath('tools').rglob('*.py'))
    assert REPO / 'tools' / 'model_converters' / 'convert_checkpoint.py' in tools
    for tool in tools:
        assert 'TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD' not in tool.read_text(), tool.name


# ---------------------------------------------------------------- real Runner checkpoints load everywhere


def test_a_runner_checkpoint_holds_what_the_allow_list_covers(runs):
    checkpoint = torch.load(runs['checkpoint'])  # torch's default: weights_only=True
    assert {'state_dict', 'ema_state_dict', 'optimizer', 'param_schedulers', 'message_hub', 'meta'} <= set(checkpoint)
    buffers = checkpoint['message_hub']['log_scalars']
    assert type(buffers['train/loss']).__name__ == 'HistoryBuffer'
    assert isinstance(buffers['train/loss'].data[0], np.ndarray)
    assert checkpoint['meta']['epoch'] == 2 and checkpoint['meta']['iter'] == 4
    # the control: without the allow-list, torch refuses the same file
    allowed = torch.serialization.get_safe_globals()
    torch.serialization.clear_safe_globals()
    try:
        with pytest.raises(pickle.UnpicklingError):
            torch.load(runs['checkpoint'])
    finally:
        torch.serialization.add_safe_globals(allowed)


def assert_weights_of(model: torch.nn.Module, state_dict: dict, prefix: str = '') -> None:
    own = model.state_dict()
    loaded = [k for k in state_dict if k.startswith(prefix)]
    assert loaded
    for key in loaded:
        assert torch.equal(own[key], state_dict[key]), key


def test_runner_checkpoint_through_mmengine_and_mmpretrain_apis(runs):
    from mmpretrain import ImageClassificationInferencer, get_model
    from mmpretrain.registry import MODELS
    state_dict = torch.load(runs['checkpoint'])['state_dict']
    init_default_scope('mmpretrain')
    model = MODELS.build(Config.fromfile(str(MNIST)).model)
    load_checkpoint(model, str(runs['checkpoint']), strict=True)
    assert_weights_of(model, state_dict)
    assert_weights_of(get_model(str(MNIST), pretrained=str(runs['checkpoint'])), state_dict)
    inferencer = ImageClassificationInferencer(str(MNIST), pretrained=str(runs['checkpoint']), device='cpu')
    assert_weights_of(inferencer.model, state_dict)
    # an array: the inferencer reads image files in colour, and the demo model takes grey digits
    image = np.asarray(Image.open(next((runs['data'] / 'test').rglob('*.png'))))[:, :, None]
    (result,) = inferencer(image)
    assert 0 <= result['pred_label'] < 10 and len(result['pred_scores']) == 10


def runner_checkpoint_for(cfg: Config, model: torch.nn.Module, runner_checkpoint: Path, path: Path) -> dict:
    """The Runner checkpoint's metadata (message hub, optimizer, EMA, ...) around ``model``'s weights
    and the dataset meta of ``cfg``, as a Runner training that config would write."""
    checkpoint = torch.load(runner_checkpoint)
    checkpoint['state_dict'] = model.state_dict()
    checkpoint['meta']['dataset_meta'] = dict(cfg.metainfo)
    torch.save(checkpoint, path)
    return checkpoint['state_dict']


def dense_api_models(scope: str, config: str, checkpoint: str) -> List[torch.nn.Module]:
    """The models that framework ``scope``'s high-level APIs (``init_*`` and its inferencer) build
    from ``config`` and ``checkpoint``, on the CPU."""
    if scope == 'mmdet':
        from mmdet.apis import DetInferencer, init_detector
        return [init_detector(config, checkpoint, device='cpu'),
                DetInferencer(config, checkpoint, device='cpu', show_progress=False).model]
    from mmseg.apis import MMSegInferencer, init_model
    return [init_model(config, checkpoint, device='cpu'), MMSegInferencer(config, checkpoint, device='cpu').model]


@pytest.mark.parametrize('scope, config', [('mmdet', DET_DEMO), ('mmseg', SEG_DEMO)], ids=['mmdet', 'mmseg'])
def test_runner_checkpoint_through_the_framework_apis(scope, config, runs, tmp_path, fast_weight_init):
    importlib.import_module(f'{scope}_ext')
    path = tmp_path / f'{scope}.pth'
    cfg = Config.fromfile(str(config))
    state_dict = runner_checkpoint_for(cfg, build_model(cfg, scope), runs['checkpoint'], path)
    for model in dense_api_models(scope, str(config), str(path)):
        assert_weights_of(model, state_dict, 'backbone.')


# ---------------------------------------------------------------- tools/test.py scores only complete weights


def test_test_tool_exits_non_zero_for_an_empty_checkpoint(runs, tmp_path):
    empty = tmp_path / 'empty.pth'
    torch.save({'state_dict': {}}, empty)
    env = {k: v for k, v in os.environ.items() if k != 'TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD'}
    env.update(PYTHONPATH=str(REPO), OMP_NUM_THREADS='1')
    done = subprocess.run([sys.executable, str(REPO / 'tools' / 'test.py'), str(runs['config']), str(empty),
                           '--work-dir', str(tmp_path / 'work')], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode != 0
    assert 'does not fit the model' in done.stderr and 'backbone.patch_embed.0.weight' in done.stderr


def test_test_tool_checks_the_checkpoint_against_the_model(runs, tmp_path):
    from mmpretrain.registry import MODELS
    init_default_scope('mmpretrain')
    model = MODELS.build(Config.fromfile(str(MNIST)).model)
    state_dict = torch.load(runs['checkpoint'])['state_dict']
    test_tool.check_checkpoint_fits(model, str(runs['checkpoint']))
    assert_weights_of(model, state_dict)
    half = tmp_path / 'half.pth'
    torch.save({'state_dict': dict(list(state_dict.items())[::2])}, half)
    with pytest.raises(SystemExit, match='weights are not in it'):
        test_tool.check_checkpoint_fits(model, str(half))
    rgb = tmp_path / 'rgb.pth'  # the same recipe for 3-channel images
    torch.save({'state_dict': MODELS.build(dict(Config.fromfile(str(MNIST)).model,
                                                backbone=dict(type='A2Mamba', arch='nano'))).state_dict()}, rgb)
    with pytest.raises(SystemExit, match='patch_embed.0.weight'):
        test_tool.check_checkpoint_fits(model, str(rgb))
    nan = tmp_path / 'nan.pth'
    broken = dict(state_dict)
    broken['backbone.layers.2.blocks.0.token_mixer.gate.1.running_mean'] = torch.full((128,), float('nan'))
    torch.save({'state_dict': broken}, nan)
    with pytest.raises(SystemExit, match='NaN or Inf .*gate.1.running_mean'):
        test_tool.check_checkpoint_fits(model, str(nan))


def test_test_tool_evaluates_a_complete_checkpoint(runs, tmp_path, monkeypatch):
    monkeypatch.setattr(sys, 'argv', ['test.py', str(runs['config']), str(runs['checkpoint']),
                                      '--work-dir', str(tmp_path / 'w')])
    test_tool.main()


# ---------------------------------------------------------------- strict loading


@pytest.fixture(scope='module')
def nano_checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp('ckpt') / 'a2mamba_nano.pth'
    state_dict = nano_state_dict()
    torch.save({'model': state_dict}, path)
    return path, state_dict


def test_partial_checkpoints_raise_with_the_missing_keys(tmp_path, nano_checkpoint):
    _, state_dict = nano_checkpoint
    one = tmp_path / 'one.pth'
    torch.save({'patch_embed.0.weight': state_dict['patch_embed.0.weight']}, one)
    with pytest.raises(RuntimeError, match=r'\d+ weights of the model are missing from it: patch_embed.1.weight'):
        load_pretrained(create_model('a2mamba_n'), str(one))
    half = tmp_path / 'half.pth'
    dropped = 'layers.4.blocks.3.mlp.fc2.weight'
    torch.save({k: v for k, v in state_dict.items() if k != dropped}, half)
    with pytest.raises(RuntimeError, match=f'1 weights of the model are missing from it: {dropped}'):
        load_pretrained(create_model('a2mamba_n'), str(half))
    model = create_model('a2mamba_n')
    before = model.state_dict()[dropped].clone()
    result = load_pretrained(model, str(half), strict=False)
    assert result.missing_keys == [dropped] and torch.equal(model.state_dict()[dropped], before)
    assert_weights_of(model, {k: v for k, v in state_dict.items() if k != dropped})


def test_wrong_variant_and_wrong_channels_raise(tmp_path, nano_checkpoint):
    path, _ = nano_checkpoint
    with pytest.raises(RuntimeError, match='does not fit this model size'):
        load_pretrained(create_model('a2mamba_t'), str(path))
    with pytest.raises(RuntimeError, match=r'patch_embed.0.weight: \(16, 3, 3, 3\) in the file, \(16, 1, 3, 3\)'):
        load_pretrained(create_model('a2mamba_n', in_chans=1), str(path))


def test_the_classifier_may_be_absent_or_of_another_size(tmp_path, nano_checkpoint):
    path, state_dict = nano_checkpoint
    model = create_model('a2mamba_n', num_classes=10)
    result = load_pretrained(model, str(path))
    assert result.missing_keys == ['classifier.4.weight', 'classifier.4.bias']
    assert_weights_of(model, {k: v for k, v in state_dict.items() if not k.startswith('classifier.4.')})
    backbone_only = tmp_path / 'backbone.pth'
    torch.save({k: v for k, v in state_dict.items() if not k.startswith('classifier.')}, backbone_only)
    assert all(k.startswith('classifier.') for k in load_pretrained(create_model('a2mamba_n'),
                                                                    str(backbone_only)).missing_keys)


def test_the_global_bias_of_another_resolution_is_resized(nano_checkpoint):
    """Trained at 224 px, loaded into a model built for 64 px: the same as the 224 model resizing
    the bias at run time."""
    path, state_dict = nano_checkpoint
    at_224 = create_model('a2mamba_n').eval()
    at_224.load_state_dict(state_dict)
    at_64 = create_model('a2mamba_n', image_size=64).eval()
    assert at_64.state_dict()['layers.6.blocks.0.token_mixer.rpb.2'].shape == (1, 8, 4, 4)
    load_pretrained(at_64, str(path))
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(at_64(x), at_224(x))


def test_nan_and_inf_raise_naming_the_keys(tmp_path, nano_checkpoint):
    _, state_dict = nano_checkpoint
    broken = dict(state_dict)
    broken['layers.2.blocks.1.token_mixer.gate.1.running_mean'] = torch.full((128,), float('nan'))
    broken['patch_embed.0.weight'] = torch.full((16, 3, 3, 3), float('inf'))
    path = tmp_path / 'nan.pth'
    torch.save(broken, path)
    with pytest.raises(ValueError, match=r'NaN or Inf values in 2 tensors: patch_embed.0.weight, '
                                         r'layers.2.blocks.1.token_mixer.gate.1.running_mean'):
        load_pretrained(create_model('a2mamba_n'), str(path))
    with pytest.raises(ValueError, match='NaN or Inf'):
        load_pretrained(create_model('a2mamba_n'), str(path), strict=False)


def test_directory_and_ema_only_files_get_clear_errors(tmp_path, nano_checkpoint):
    _, state_dict = nano_checkpoint
    with pytest.raises(IsADirectoryError, match='is a directory'):
        load_pretrained(create_model('a2mamba_n'), str(tmp_path))
    ema_only = tmp_path / 'ema.pth'
    torch.save({'state_dict_ema': state_dict}, ema_only)
    with pytest.raises(KeyError, match="weights='ema'"):
        load_pretrained(create_model('a2mamba_n'), str(ema_only))
    load_pretrained(create_model('a2mamba_n'), str(ema_only), weights='ema')


@pytest.mark.parametrize('backbone_type', [A2MambaBackbone, MMPretrainA2Mamba])
def test_backbone_init_cfg_is_strict_with_an_opt_out(tmp_path, nano_checkpoint, backbone_type):
    _, state_dict = nano_checkpoint
    dropped = 'layers.2.blocks.0.token_mixer.ssm.Ds'
    partial = tmp_path / 'partial.pth'
    torch.save({k: v for k, v in state_dict.items() if k != dropped}, partial)
    with pytest.raises(RuntimeError, match=f'missing from it: {dropped}'):
        backbone_type('nano', init_cfg=dict(type='Pretrained', checkpoint=str(partial))).init_weights()
    backbone = backbone_type('nano', init_cfg=dict(type='Pretrained', checkpoint=str(partial), strict=False))
    backbone.init_weights()
    assert_weights_of(backbone, {k: v for k, v in state_dict.items() if k != dropped and not k.startswith('class')})
    with pytest.raises(ValueError, match='strict=True|False'):
        backbone_type('nano', init_cfg=dict(type='Pretrained', checkpoint=str(partial), strict='no'))


# ---------------------------------------------------------------- BatchNorm statistics under checkpointing


def batch_norm_buffers(model: torch.nn.Module) -> dict:
    return {k: v.clone() for k, v in model.state_dict().items()
            if k.endswith(('running_mean', 'running_var', 'num_batches_tracked'))}


def two_sgd_steps(model: torch.nn.Module, loss_of) -> dict:
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    model.train()
    generator = torch.Generator().manual_seed(3)
    for _ in range(2):
        optimizer.zero_grad()
        loss_of(model(torch.randn(4, 3, 32, 32, generator=generator))).backward()
        optimizer.step()
    return batch_norm_buffers(model)


@pytest.mark.parametrize('build, loss_of', [
    (lambda cp: create_model('a2mamba_n', num_classes=10, use_checkpoint=cp), lambda out: out.square().mean()),
    (lambda cp: A2MambaBackbone('nano', with_cp=cp), lambda outs: sum(o.square().mean() for o in outs)),
    (lambda cp: MMPretrainA2Mamba('nano', with_cp=cp), lambda outs: outs[-1].square().mean()),
], ids=['core use_checkpoint', 'dense backbone with_cp (mmdet, mmseg)', 'mmpretrain backbone with_cp'])
def test_batch_norm_statistics_are_the_same_with_checkpointing(build, loss_of):
    torch.manual_seed(0)
    plain, checkpointed = build(False), build(True)
    checkpointed.load_state_dict(plain.state_dict())
    assert all(stage.use_checkpoint == stage.depth for stage in checkpointed.layers[0::2])
    expected, got = two_sgd_steps(plain, loss_of), two_sgd_steps(checkpointed, loss_of)
    gates = [k for k in expected if '.token_mixer.gate.1.' in k]
    assert gates and all(k in expected for k in gates)
    for key, value in expected.items():
        if key.endswith('num_batches_tracked'):
            assert value.item() == got[key].item() == 2, key
        else:
            torch.testing.assert_close(got[key], value, rtol=1e-5, atol=1e-6, msg=key)


# ---------------------------------------------------------------- create_model arguments


@pytest.mark.parametrize('kwargs, message', [
    (dict(drop_path_rate=1.0), r'drop_path_rate must be a number in \[0, 1\)'),
    (dict(drop_path_rate=2), r'drop_path_rate must be a number in \[0, 1\)'),
    (dict(drop_path_rate=-0.1), r'drop_path_rate must be a number in \[0, 1\)'),
    (dict(drop_path_rate='0.1'), r'drop_path_rate must be a number'),
    (dict(num_classes=-1), 'num_classes must be an int >= 0'),
    (dict(num_classes=10.0), 'num_classes must be an int >= 0'),
    (dict(num_classes=True), 'num_classes must be an int >= 0'),
    (dict(use_checkpoint=9), r'use_checkpoint=9 is outside \[0, 8\]'),
    (dict(use_checkpoint=-1), r'outside \[0, 8\]'),
    (dict(use_checkpoint=(1, 2)), '4 block counts'),
    (dict(use_checkpoint=(3, 0, 0, 0)), r'stage depth \(2, 2, 8, 2\)'),
    (dict(use_checkpoint='all'), '4 block counts'),
    (dict(in_chans=0), 'in_chans must be a positive int'),
    (dict(image_size=(224,)), 'image_size must be'),
])
def test_create_model_rejects_bad_arguments(kwargs, message, fast_weight_init):
    with pytest.raises(ValueError, match=message):
        create_model('a2mamba_n', **kwargs)


def test_use_checkpoint_true_means_every_block_as_with_cp(fast_weight_init):
    depths = list(a2mamba_core.MODEL_SPECS['a2mamba_n']['depths'])
    assert [s.use_checkpoint for s in create_model('a2mamba_n', use_checkpoint=True).stages] == depths
    assert [s.use_checkpoint for s in A2MambaBackbone('nano', with_cp=True).layers[0::2]] == depths
    assert [s.use_checkpoint for s in create_model('a2mamba_n', use_checkpoint=False).stages] == [0] * 4
    assert [s.use_checkpoint for s in create_model('a2mamba_n', use_checkpoint=3).stages] == [2, 2, 3, 2]


# ---------------------------------------------------------------- resuming epoch-based runs


def test_resuming_at_an_epoch_end_repeats_the_uninterrupted_schedule(runs, tmp_path):
    lrs = runs['lrs']
    assert len(lrs) == 2 * TRAIN_IMAGES // BATCH
    resumed = train(runs['config'], tmp_path / 'resumed', resume=str(runs['epoch_1']))
    assert resumed.lrs == pytest.approx(lrs[len(lrs) // 2:], rel=1e-12)
    assert torch.load(tmp_path / 'resumed' / 'epoch_2.pth')['meta']['iter'] == len(lrs)


def test_a_mid_epoch_checkpoint_is_refused_for_an_epoch_based_run(runs, tmp_path, monkeypatch):
    assert torch.load(runs['mid_epoch'])['meta']['iter'] == 3
    with pytest.raises(RuntimeError, match='middle of epoch 2'):
        train(runs['config'], tmp_path / 'refused', resume=str(runs['mid_epoch']))
    # what the check prevents: mmengine replays epoch 2 from its first batch, one iteration too many
    replayed = train(runs['config'], tmp_path / 'replayed', resume=str(runs['mid_epoch']), check=False)
    assert len(replayed.lrs) == 2 and 3 + len(replayed.lrs) > len(runs['lrs'])
    # tools/train.py registers the check in every run
    monkeypatch.setattr(sys, 'argv', ['train.py', str(runs['config']), '--resume', str(runs['mid_epoch']),
                                      '--work-dir', str(tmp_path / 'tool')])
    with pytest.raises(RuntimeError, match='middle of epoch 2'):
        train_tool.main()


def test_epoch_based_configs_save_checkpoints_at_epoch_ends():
    # a config that inherits from one of ours without touching the hooks or the loop saves as it does
    configs = [path for path in sorted((REPO / 'configs').rglob('*.py'))
               if any(word in path.read_text() for word in ('default_hooks', 'train_cfg', '::'))]
    epoch_based = 0
    for path in configs:
        cfg = Config.fromfile(str(path))
        if cfg.train_cfg.get('type', 'EpochBasedTrainLoop') == 'EpochBasedTrainLoop' and cfg.train_cfg.get(
                'by_epoch', True):
            epoch_based += 1
            assert cfg.default_hooks.checkpoint.get('by_epoch', True), path.name
    assert epoch_based >= 6
