"""The model zoo: the index files, mmpretrain's lookups and inference by name, weights by URL in
mm contexts, the backbone's ``pretrained=`` alias, the documented inferencer calls, the wheel.

Checkpoints come from a local HTTP server on 127.0.0.1 or are placed in a temporary
``$TORCH_HOME`` cache; nothing reaches the network.
"""
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import mmpretrain
import numpy as np
import pytest
import torch
from checkpoint_server import CheckpointServer, official_checkpoint
from conftest import REPO
from mmengine.config import Config
from mmengine.model import BaseModel
from mmengine.registry import init_default_scope
from modelindex.load_model_index import load as load_model_index
from PIL import Image

import mmdet_ext  # noqa: F401  (registers A2MambaBackbone in mmdet)
import mmpretrain_ext  # noqa: F401  (registers the classification models)
import mmseg_ext  # noqa: F401
from mmengine_ext import A2MambaBackbone, cli, model_zoo

RELEASE = 'https://huggingface.co/LMMM2025/A2Mamba/resolve/main/a2mamba_pretrained_weights/'
SIZES = {'n': 'nano', 't': 'tiny', 's': 'small', 'b': 'base', 'l': 'large'}
CLS_MODELS = [f'a2mamba-{k}_3rdparty_in1k' for k in SIZES] + ['a2mamba-n_1xb64_mnist5k-32px',
                                                              'a2mamba-t_1xb64_mnist5k-224px']


def _coco(box, mask):
    return {'Object Detection': {'box AP': box}, 'Instance Segmentation': {'mask AP': mask}}


# The paper's numbers (README, docs/detection.md, docs/segmentation.md); every other entry has none.
REPORTED = {
    **{f'a2mamba-{k}_3rdparty_in1k': {'Image Classification': {'Top 1 Accuracy': top1}}
       for k, top1 in dict(n=78.7, t=83.0, s=84.7, b=85.7, l=86.1).items()},
    'cascade-mask-rcnn_a2mamba-s_fpn_3x_coco': _coco(54.0, 46.6),
    'cascade-mask-rcnn_a2mamba-b_fpn_3x_coco': _coco(55.4, 47.6),
    'cascade-mask-rcnn_a2mamba-l_fpn_3x_coco': _coco(55.6, 48.1),
    'mask-rcnn_a2mamba-s_fpn_3x_coco': _coco(51.5, 45.3),
    'mask-rcnn_a2mamba-b_fpn_3x_coco': _coco(52.7, 46.8),
    'mask-rcnn_a2mamba-l_fpn_3x_coco': _coco(53.0, 46.8),
    **{f'upernet_a2mamba-{k}_8xb2-160k_ade20k-512x512': {'Semantic Segmentation': {'mIoU': single}}
       for k, single in dict(s=51.6, b=53.3, l=53.7).items()},
    **{f'upernet_a2mamba-{k}_8xb2-160k_ade20k-512x512-ms-flip-test':
       {'Semantic Segmentation': {'mIoU(ms+flip)': multi}} for k, multi in dict(s=52.0, b=53.9, l=54.1).items()},
}


@pytest.fixture(scope='module')
def index():
    return model_zoo.model_index()


@pytest.fixture
def no_network(monkeypatch):
    def refuse(url, *args, **kwargs):
        raise AssertionError(f'unexpected download of {url}')
    monkeypatch.setattr(torch.hub, 'download_url_to_file', refuse)


@pytest.fixture(scope='module')
def source():
    """A random A2Mamba-N in the authors' layout: the stand-in for a released file."""
    torch.manual_seed(3)
    return official_checkpoint('a2mamba_n')


def place_in_cache(torch_home: Path, file_name: str, checkpoint: dict) -> Path:
    """Puts a file where the offline error message tells users to put the released one."""
    path = torch_home / 'hub' / 'checkpoints' / file_name
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(checkpoint, path)
    return path


def test_index_is_valid_and_covers_every_config(index):
    configs = {p.relative_to(REPO).as_posix() for p in (REPO / 'configs').glob('*/*.py')}
    assert {Path(m['Config']).relative_to(REPO).as_posix() for m in index.values()} == configs
    assert len(index) == len(configs)  # one entry per config
    parsed = load_model_index(str(REPO / 'model-index.yml'))
    parsed.build_models_with_collections()
    assert sorted(m.name for m in parsed.models) == sorted(index)
    for model in parsed.models:
        assert model.in_collection == 'A2Mamba'
        assert (REPO / model.config).is_file()
        assert model.results and all(r.task and r.dataset for r in model.results)
    for name, entry in index.items():
        assert name == entry['Name']
        if name not in REPORTED:
            assert 'reports no result' in entry['Notes'] or 'demo' in entry['Notes']


def test_metrics_are_the_reported_ones(index):
    for name, entry in index.items():
        metrics = {r['Task']: r['Metrics'] for r in entry['Results'] if r['Metrics']}
        assert metrics == REPORTED.get(name, {}), name
        if name in REPORTED:
            assert 'reported in the paper' in entry['Notes']


def test_weights_and_backbone_checkpoints_are_the_release_urls(index):
    for name, entry in index.items():
        if name.endswith('_3rdparty_in1k'):
            assert entry['Weights'] == f'{RELEASE}a2mamba_{SIZES[name[8]]}.pth'
        else:
            assert 'Weights' not in entry, name  # no detection/segmentation weights are released


@pytest.mark.parametrize('task', ['mmdet', 'mmseg'])
def test_dense_configs_load_the_release_by_url(index, task):
    for name, entry in index.items():
        if f'/configs/{task}/' not in entry['Config']:
            continue
        cfg = Config.fromfile(entry['Config'])
        model = cfg.model.get('module', cfg.model)  # the -ms-flip-test configs wrap it
        backbone = model.backbone
        if 'demo' in name:
            assert backbone.init_cfg is None
            continue
        assert backbone.init_cfg == dict(type='Pretrained', checkpoint=f'{RELEASE}a2mamba_{backbone.arch}.pth')
        assert entry['Metadata']['Pretrained'] == backbone.init_cfg.checkpoint
        assert entry['Metadata']['Batch Size'] == 8 * cfg.train_dataloader.batch_size
        if task == 'mmdet':
            assert entry['Metadata']['Epochs'] == cfg.train_cfg.max_epochs
        else:
            assert entry['Metadata']['Iterations'] == cfg.train_cfg.max_iters


def test_config_paths_from_the_index(index):
    assert model_zoo.zoo_root() == REPO
    path = model_zoo.get_config('Mask-RCNN_a2mamba-t_fpn_1x_coco')
    assert path == str(REPO / 'configs' / 'mmdet' / 'mask-rcnn_a2mamba-t_fpn_1x_coco.py')
    assert model_zoo.get_weights('a2mamba-t_3rdparty_in1k') == RELEASE + 'a2mamba_tiny.pth'
    assert model_zoo.get_weights('upernet_a2mamba-t_8xb2-160k_ade20k-512x512') is None
    assert model_zoo.list_models('*a2mamba-l*') == sorted(n for n in index if 'a2mamba-l' in n)
    with pytest.raises(ValueError, match='a2mamba-t_3rdparty_in1k'):
        model_zoo.get_config('a2mamba-x_3rdparty_in1k')


def test_mmpretrain_lists_the_classification_models():
    assert mmpretrain.list_models('*a2mamba*') == sorted(CLS_MODELS)
    assert mmpretrain.list_models('a2mamba', task='Image Classification') == sorted(CLS_MODELS)


@pytest.mark.parametrize('name', CLS_MODELS)
def test_get_model_by_name_builds_the_config(name, fast_weight_init):
    model = mmpretrain.get_model(name)  # pretrained=False: random weights, no download
    arch = SIZES[name[8]]
    assert model.backbone.arch == arch
    assert model.head.num_classes == (10 if 'mnist' in name else 1000)
    assert model._metainfo.name == name


def logits(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The core model's logits, or an mmpretrain classifier's (its ``tensor`` mode)."""
    with torch.no_grad():
        return model(x, mode='tensor') if isinstance(model, BaseModel) else model.eval()(x)


def test_get_model_with_weights_from_a_url(source, tmp_path, torch_home):
    """mmengine's own http loader (any URL): download into the cache, official keys mapped."""
    root = tmp_path / 'www'
    root.mkdir()
    torch.save(source.state_dict(), root / 'a2mamba_nano.pth')
    server = CheckpointServer(root)
    try:
        model = mmpretrain.get_model('a2mamba-n_3rdparty_in1k', pretrained=server.url + 'a2mamba_nano.pth')
        mmpretrain.get_model('a2mamba-n_3rdparty_in1k', pretrained=server.url + 'a2mamba_nano.pth')
    finally:
        server.close()
    assert server.requests == ['/a2mamba_nano.pth']  # the second build read the cache
    assert (torch_home / 'hub' / 'checkpoints' / 'a2mamba_nano.pth').is_file()
    x = torch.randn(2, 3, 224, 224)
    assert torch.equal(logits(model, x), logits(source, x))


@pytest.mark.parametrize('container', ['bare', 'model', 'state_dict'])
def test_get_model_pretrained_true_reads_the_release_from_the_cache(source, torch_home, no_network, container):
    state_dict = source.state_dict()
    place_in_cache(torch_home, 'a2mamba_nano.pth', state_dict if container == 'bare' else {container: state_dict})
    model = mmpretrain.get_model('a2mamba-n_3rdparty_in1k', pretrained=True)
    x = torch.randn(1, 3, 224, 224)
    assert torch.equal(logits(model, x), logits(source, x))


def test_release_url_offline_error_in_mm_loaders(torch_home, monkeypatch):
    from urllib.error import URLError

    def offline(url, *args, **kwargs):
        raise URLError('[Errno -2] Name or service not known')
    monkeypatch.setattr(torch.hub, 'download_url_to_file', offline)
    with pytest.raises(RuntimeError) as info:
        mmpretrain.get_model('a2mamba-n_3rdparty_in1k', pretrained=True)
    message = str(info.value)
    assert RELEASE + 'a2mamba_nano.pth' in message
    assert str(torch_home / 'hub' / 'checkpoints' / 'a2mamba_nano.pth') in message


def write_image(tmp_path: Path) -> Path:
    """A 248 x 248 RGB PNG: the ImageNet test pipeline's resize (short side 248) keeps it as it
    is, so the reference below needs only the centre crop. A real photograph when scikit-image
    is installed, otherwise a synthetic scene."""
    try:
        from skimage import data
        array = data.astronaut()
    except ImportError:
        yy, xx = np.mgrid[0:248, 0:248]
        array = np.stack([xx, yy, (xx + yy) // 2], axis=-1).astype(np.uint8)
        array[60:140, 90:200] = (200, 40, 40)
    path = tmp_path / 'image.png'
    Image.fromarray(array).convert('RGB').resize((248, 248), Image.BICUBIC).save(path)
    return path


def reference_scores(model: torch.nn.Module, image_path: Path) -> np.ndarray:
    """Softmax of the core model on the centre 224 crop, normalised with ImageNet statistics."""
    rgb = np.asarray(Image.open(image_path).convert('RGB'), dtype=np.float32)[12:236, 12:236]
    x = (torch.from_numpy(rgb) - torch.tensor([123.675, 116.28, 103.53])) / torch.tensor([58.395, 57.12, 57.375])
    with torch.no_grad():
        return torch.softmax(model.eval()(x.permute(2, 0, 1)[None]), dim=1)[0].numpy()


def test_inference_model_by_name_and_with_a_model(source, tmp_path, torch_home, no_network):
    from mmengine.registry import DefaultScope
    from mmpretrain.datasets.categories import IMAGENET_CATEGORIES

    place_in_cache(torch_home, 'a2mamba_nano.pth', source.state_dict())
    image = write_image(tmp_path)
    expected = reference_scores(source, image)
    # mmpretrain's inferencer builds its pipeline in the current default scope, which other tests of
    # this process may have left at mmdet's or mmseg's; a user's fresh process has none
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        by_name = mmpretrain.inference_model('a2mamba-n_3rdparty_in1k', str(image))
        model = mmpretrain.get_model('a2mamba-n_3rdparty_in1k', pretrained=True)
        with_model = mmpretrain.inference_model(model, str(image))
    np.testing.assert_allclose(by_name['pred_scores'], expected, rtol=0, atol=1e-6)
    assert by_name['pred_label'] == int(expected.argmax())
    assert by_name['pred_class'] == IMAGENET_CATEGORIES[int(expected.argmax())]
    np.testing.assert_allclose(with_model['pred_scores'], expected, rtol=0, atol=1e-6)


def test_backbone_init_cfg_and_pretrained_alias_take_a_url(source, tmp_path, torch_home):
    root = tmp_path / 'www'
    root.mkdir()
    torch.save({'model': source.state_dict()}, root / 'a2mamba_nano.pth')
    server = CheckpointServer(root)
    url = server.url + 'a2mamba_nano.pth'
    try:
        by_init_cfg = A2MambaBackbone('nano', out_norms=False, init_cfg=dict(type='Pretrained', checkpoint=url))
        by_init_cfg.init_weights()
        with pytest.warns(FutureWarning, match='pretrained= is deprecated'):
            by_alias = A2MambaBackbone('nano', out_norms=False, pretrained=url)
        assert by_alias.init_cfg == dict(type='Pretrained', checkpoint=url)
        by_alias.init_weights()
    finally:
        server.close()
    assert server.requests == ['/a2mamba_nano.pth']
    x = torch.randn(1, 3, 96, 128)
    with torch.no_grad():
        expected = source.forward_features(x)
        for backbone in (by_init_cfg, by_alias):
            outs = backbone.eval()(x)
            assert len(outs) == 4 and all(torch.equal(o, e) for o, e in zip(outs, expected))


def test_pretrained_alias_errors():
    with pytest.raises(TypeError, match='pretrained must be'):
        A2MambaBackbone('nano', pretrained=True)
    with pytest.raises(ValueError, match='both set'):
        A2MambaBackbone('nano', pretrained='a.pth', init_cfg=dict(type='Pretrained', checkpoint='b.pth'))
    with pytest.raises(ValueError, match=r'model\.pretrained=None'):
        A2MambaBackbone('nano', pretrained='open-mmlab://resnet50_v1c')


def write_config(tmp_path: Path, text: str) -> Config:
    path = tmp_path / 'swap.py'
    path.write_text(text)
    return Config.fromfile(str(path))


RESNET_UPERNET_SWAP = '''
_base_ = 'mmseg::_base_/models/upernet_r50.py'
model = dict(
    {model_keys}
    backbone=dict(_delete_=True, type='A2MambaBackbone', arch='nano', {backbone_keys}),
    decode_head=dict(in_channels=[32, 64, 128, 192]),
    auxiliary_head=dict(in_channels=128))
'''


def test_swap_into_a_resnet_based_mmseg_config(tmp_path, source, fast_weight_init):
    """mmseg's ResNet bases set a model-level pretrained= that the segmentor hands to the backbone."""
    from mmseg.registry import MODELS
    init_default_scope('mmseg')
    path = tmp_path / 'a2mamba_nano.pth'
    torch.save(source.state_dict(), path)
    backbone_keys = f"init_cfg=dict(type='Pretrained', checkpoint='{path}')"
    leftover = write_config(tmp_path, RESNET_UPERNET_SWAP.format(model_keys='', backbone_keys=backbone_keys))
    assert leftover.model.pretrained == 'open-mmlab://resnet50_v1c'
    with pytest.raises(ValueError, match=r'model\.pretrained=None'):
        MODELS.build(leftover.model)
    documented = write_config(tmp_path, RESNET_UPERNET_SWAP.format(model_keys='pretrained=None,',
                                                                 backbone_keys=backbone_keys))
    assert MODELS.build(documented.model).backbone.init_cfg == dict(type='Pretrained', checkpoint=str(path))
    # the deprecated way: the checkpoint as the segmentor's pretrained=
    deprecated = write_config(tmp_path, RESNET_UPERNET_SWAP.format(model_keys=f"pretrained='{path}',",
                                                                 backbone_keys=''))
    with pytest.warns(FutureWarning):
        segmentor = MODELS.build(deprecated.model)
    segmentor.backbone.init_weights()
    assert torch.equal(segmentor.backbone.layers[0].blocks[0].mlp.fc1.weight,
                       source.state_dict()['layers.0.blocks.0.mlp.fc1.weight'])


def saved_weights(tmp_path: Path, model: torch.nn.Module, classes) -> str:
    path = tmp_path / 'weights.pth'
    torch.save({'state_dict': model.state_dict(), 'meta': {'dataset_meta': {'classes': classes}}}, path)
    return str(path)


def test_documented_mmseg_inferencer_call(tmp_path):
    from mmseg.apis import MMSegInferencer
    from mmseg.registry import MODELS
    init_default_scope('mmseg')
    config = model_zoo.get_config('upernet_a2mamba-n_nuclei-demo')
    trained = MODELS.build(Config.fromfile(config).model)
    weights = saved_weights(tmp_path, trained, ('background', 'nucleus'))
    inferencer = MMSegInferencer(model=config, weights=weights, device='cpu')
    for key, value in trained.state_dict().items():
        assert torch.equal(inferencer.model.state_dict()[key], value), key
    image = np.random.default_rng(0).integers(0, 255, (64, 80, 3), dtype=np.uint8)
    prediction = inferencer(image, show=False)['predictions']
    assert prediction.shape == (64, 80) and set(np.unique(prediction)) <= {0, 1}


def test_documented_det_inferencer_call(tmp_path):
    from mmdet.apis import DetInferencer
    from mmdet.registry import MODELS
    init_default_scope('mmdet')
    config = model_zoo.get_config('cascade-mask-rcnn_a2mamba-n_fpn_nuclei-demo')
    trained = MODELS.build(Config.fromfile(config).model)
    weights = saved_weights(tmp_path, trained, ('nucleus', ))
    inferencer = DetInferencer(model=config, weights=weights, device='cpu')
    for key, value in trained.state_dict().items():
        assert torch.equal(inferencer.model.state_dict()[key], value), key
    image = np.random.default_rng(0).integers(0, 255, (96, 96, 3), dtype=np.uint8)
    prediction = inferencer(image)['predictions'][0]
    assert set(prediction) >= {'labels', 'scores', 'bboxes', 'masks'}


def build_wheel(tmp_path: Path) -> Path:
    """``pip wheel`` of a copy of the tracked sources (the build leaves the checkout untouched)."""
    tracked = subprocess.run(['git', 'ls-files'], cwd=REPO, capture_output=True, text=True, check=True).stdout
    source = tmp_path / 'src'
    for rel in tracked.split():
        if (REPO / rel).is_file():
            (source / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, source / rel)
    env = dict(os.environ, A2MAMBA_FORCE_CUDA='0')
    build = subprocess.run([sys.executable, '-m', 'pip', 'wheel', '--no-deps', '--no-build-isolation', '-q',
                            str(source), '-w', str(tmp_path / 'dist')], capture_output=True, text=True, env=env)
    assert build.returncode == 0, build.stderr
    assert 'NOT building the CUDA selective-scan extension' in build.stderr
    assert 'A2MAMBA_FORCE_CUDA=1 pip install --no-build-isolation -e .' in build.stderr
    (wheel, ) = (tmp_path / 'dist').glob('a2mamba_openmmlab-*.whl')
    return wheel


def test_wheel_carries_configs_index_and_license(tmp_path, index):
    wheel = build_wheel(tmp_path)
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        metadata = archive.read(next(n for n in names if n.endswith('.dist-info/METADATA'))).decode()
        licence = archive.read(next(n for n in names if n.endswith('.dist-info/licenses/LICENSE'))).decode()
        archive.extractall(tmp_path / 'site')
    for entry in index.values():
        assert 'mmengine_ext/.mim/' + Path(entry['Config']).relative_to(REPO).as_posix() in names
    assert {'mmengine_ext/.mim/model-index.yml', 'mmengine_ext/.mim/configs/mmpretrain/metafile.yml',
            'mmengine_ext/.mim/configs/mmdet/metafile.yml', 'mmengine_ext/.mim/configs/mmseg/metafile.yml'} <= names
    assert licence == (REPO / 'LICENSE').read_text() and 'Apache License' in licence
    assert 'Author: A2Mamba for OpenMMLab contributors' in metadata
    assert 'Apache-2.0' in metadata
    # The unpacked wheel (not installed): the configs and the index come from its .mim.
    probe = ("from mmengine.config import Config; from mmengine_ext import model_zoo; import mmpretrain, "
             "mmpretrain_ext; print('zoo:', model_zoo.zoo_root()); "
             "cfg = Config.fromfile(model_zoo.get_config('mask-rcnn_a2mamba-s_fpn_3x_coco')); "
             "print('zoo:', cfg.model.backbone.arch); "
             "print('zoo:', mmpretrain.get_model('a2mamba-n_3rdparty_in1k').backbone.arch)")
    env = dict(os.environ, PYTHONPATH=str(tmp_path / 'site'), OMP_NUM_THREADS='1')
    run = subprocess.run([sys.executable, '-c', probe], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    printed = [line.split(' ', 1)[1] for line in run.stdout.splitlines() if line.startswith('zoo: ')]
    assert printed == [str(tmp_path / 'site' / 'mmengine_ext' / '.mim'), 'small', 'nano']
    # the tools travel too, behind console entry points
    entry_points = archive_text(wheel, 'entry_points.txt')
    for name in ('train', 'test', 'flops', 'convert', 'export-onnx', 'benchmark'):
        assert f'a2mamba-{name} = mmengine_ext.cli:' in entry_points
    assert {f'mmengine_ext/.mim/tools/{script}' for script in cli.TOOLS.values()} <= names
    flops = subprocess.run([sys.executable, '-c', "import sys; sys.argv = ['a2mamba-flops', 'a2mamba_n']; "
                            "from mmengine_ext.cli import flops; flops()"],
                           capture_output=True, text=True, env=env, cwd=tmp_path)
    assert flops.returncode == 0, flops.stderr
    assert 'a2mamba_n' in flops.stdout and '4.20' in flops.stdout


def archive_text(wheel: Path, suffix: str) -> str:
    with zipfile.ZipFile(wheel) as archive:
        return archive.read(next(n for n in archive.namelist() if n.endswith(suffix))).decode()

