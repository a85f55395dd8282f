"""The command-line tools as a user calls them: tools/test.py's --show-dir/--tta on tiny CPU runs,
the launch scripts, the demo schedules under command-line overrides, and
tools/analysis/visualize_attention.py."""
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO, load_tool
from mmengine.config import Config
from PIL import Image

CLS_DEMO = str(REPO / 'configs/mmpretrain/a2mamba-n_1xb64_mnist5k-32px.py')
SEG_DEMO = str(REPO / 'configs/mmseg/upernet_a2mamba-n_nuclei-demo.py')
DET_DEMO = str(REPO / 'configs/mmdet/cascade-mask-rcnn_a2mamba-n_fpn_nuclei-demo.py')
SCRIPTS = {'dist_train.sh': 2, 'dist_test.sh': 3, 'slurm_train.sh': 3, 'slurm_test.sh': 4}


def run_tool(tool: str, *args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS='1')
    return subprocess.run([sys.executable, str(REPO / tool), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


def build_model(cfg: Config) -> torch.nn.Module:
    from mmengine.registry import MODELS, init_default_scope
    from mmengine.utils import import_modules_from_strings
    import_modules_from_strings(**cfg.custom_imports)
    init_default_scope(cfg.default_scope)
    return MODELS.build(cfg.model)


def random_checkpoint(config: str, path: Path, **overrides) -> str:
    """A complete checkpoint (every parameter and buffer) of the config's model, random weights."""
    cfg = Config.fromfile(config)
    cfg.merge_from_dict(overrides)
    torch.save(dict(state_dict=build_model(cfg).state_dict(), meta=dict()), path)
    return str(path)


def write_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def digits(root: Path, per_class: int, split: str = 'test') -> None:
    """mmpretrain CustomDataset folders of random 28 x 28 grey images, 10 classes."""
    rng = np.random.default_rng(0)
    for digit in range(10):
        for i in range(per_class):
            write_png(root / split / str(digit) / f'{digit}_{i}.png', rng.integers(0, 256, (28, 28), dtype=np.uint8))


def nuclei(root: Path, size: int = 64) -> None:
    """The nuclei demo's layout (the same image in train and val): a bright disc on noise, its
    0/1 map and its COCO instance."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size]
    disc = (yy - 30) ** 2 + (xx - 24) ** 2 < 10 ** 2
    image = rng.integers(0, 60, (size, size, 3), dtype=np.uint8)
    image[disc] = 220
    write_png(root / 'images/val/tile.png', image)
    write_png(root / 'seg_maps/val/tile.png', disc.astype(np.uint8))
    polygon = [float(v) for angle in np.linspace(0, 2 * np.pi, 12, endpoint=False)
               for v in (24 + 10 * np.cos(angle), 30 + 10 * np.sin(angle))]
    coco = dict(images=[dict(id=1, file_name='tile.png', height=size, width=size)],
                annotations=[dict(id=1, image_id=1, category_id=1, bbox=[14, 20, 20, 20], area=314.0, iscrowd=0,
                                  segmentation=[polygon])],
                categories=[dict(id=1, name='nucleus')])
    (root / 'annotations').mkdir(parents=True)
    (root / 'annotations/instances_val.json').write_text(json.dumps(coco))
    # mmseg's visualization hook reads runner.iter, which builds the training loop and its data
    for name in ('images', 'seg_maps'):
        shutil.copytree(root / name / 'val', root / name / 'train')


def images_under(path: Path) -> list:
    return sorted(p for p in path.rglob('*') if p.suffix in ('.png', '.jpg'))


# ---------------------------------------------------------------- tools/test.py


def test_cls_show_dir_paints_every_test_image_and_tta_needs_a_tta_config(tmp_path):
    digits(tmp_path / 'mnist', per_class=2)
    checkpoint = random_checkpoint(CLS_DEMO, tmp_path / 'cls.pth')
    common = ['--cfg-options', f'test_dataloader.dataset.data_root={tmp_path / "mnist"}',
              'test_dataloader.num_workers=0', 'test_dataloader.persistent_workers=False']
    done = run_tool('tools/test.py', CLS_DEMO, checkpoint, '--work-dir', str(tmp_path / 'work'),
                    '--show-dir', 'painted', *common, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert 'accuracy/top1' in done.stdout + done.stderr
    # mmpretrain's hook writes to the directory as given
    assert len(images_under(tmp_path / 'painted')) == 20

    refused = run_tool('tools/test.py', CLS_DEMO, checkpoint, '--work-dir', str(tmp_path / 'work'), '--tta',
                       *common, cwd=REPO)
    assert refused.returncode != 0
    assert '--tta needs tta_model and tta_pipeline in the config' in refused.stderr


def test_seg_tta_and_show_dir_on_a_tiny_run(tmp_path):
    nuclei(tmp_path / 'nuclei')
    checkpoint = random_checkpoint(SEG_DEMO, tmp_path / 'seg.pth')
    done = run_tool('tools/test.py', SEG_DEMO, checkpoint, '--work-dir', str(tmp_path / 'work'), '--tta',
                    '--show-dir', str(tmp_path / 'painted'),
                    '--cfg-options', f'test_dataloader.dataset.data_root={tmp_path / "nuclei"}',
                    f'train_dataloader.dataset.data_root={tmp_path / "nuclei"}')
    assert done.returncode == 0, done.stderr[-3000:]
    assert 'mIoU' in done.stdout + done.stderr
    # mmseg's visualizer writes under its save_dir
    assert len(images_under(tmp_path / 'painted')) == 1
    # the logged config is the wrapped one
    assert "type='SegTTAModel'" in done.stdout + done.stderr and "type='TestTimeAug'" in done.stdout + done.stderr

    again = run_tool('tools/test.py', SEG_DEMO.replace('nuclei-demo', '8xb2-160k_ade20k-512x512-ms-flip-test'),
                     checkpoint, '--tta', cwd=REPO)
    assert again.returncode != 0 and 'already wraps its model in SegTTAModel' in again.stderr


def test_det_show_dir_on_a_tiny_run(tmp_path):
    nuclei(tmp_path / 'nuclei')
    checkpoint = random_checkpoint(DET_DEMO, tmp_path / 'det.pth')
    root = f'{tmp_path / "nuclei"}/'
    done = run_tool('tools/test.py', DET_DEMO, checkpoint, '--work-dir', str(tmp_path / 'work'),
                    '--show-dir', 'painted', '--cfg-options', f'test_dataloader.dataset.data_root={root}',
                    f'test_evaluator.ann_file={root}annotations/instances_val.json', cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    assert 'coco/bbox_mAP' in done.stdout + done.stderr
    painted = images_under(tmp_path / 'work')
    assert [p.name for p in painted] == ['tile.png'] and painted[0].parent.name == 'painted'


def test_show_options_reach_each_frameworks_hook():
    test_tool = load_tool('test.py')

    for config, key in ((CLS_DEMO, 'enable'), (SEG_DEMO, 'draw'), (DET_DEMO, 'draw')):
        cfg = Config.fromfile(config)
        test_tool.enable_visualization(cfg, show=True, show_dir=None, wait_time=0.5)
        hook = cfg.default_hooks.visualization
        assert hook[key] is True and hook.show is True and hook.wait_time == 0.5
    cfg = Config.fromfile(CLS_DEMO)
    del cfg.default_hooks['visualization']
    with pytest.raises(ValueError, match='default_hooks.visualization'):
        test_tool.enable_visualization(cfg, show=True, show_dir=None, wait_time=1)
    with pytest.raises(SystemExit):
        test_tool.parse_args([CLS_DEMO, 'x.pth', '--wait-time', '-1'])


# ---------------------------------------------------------------- launch scripts


def fake_executable(path: Path, name: str) -> Path:
    """A stand-in that prints its name and arguments, one per line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f'#!/bin/sh\necho {name}\nfor a in "$@"; do echo "$a"; done\n')
    path.chmod(0o755)
    return path


@pytest.mark.parametrize('script', sorted(SCRIPTS))
def test_scripts_print_their_usage_without_arguments(script):
    done = subprocess.run(['bash', str(REPO / 'tools' / script)], capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.startswith('usage:') and 'unbound variable' not in done.stderr
    assert 'CONFIG' in done.stderr


def test_scripts_use_the_repository_venv_unless_python_is_set(tmp_path):
    repo = tmp_path / 'repo'
    (repo / 'tools').mkdir(parents=True)
    for script in [*SCRIPTS, 'launch_common.sh']:
        shutil.copy(REPO / 'tools' / script, repo / 'tools' / script)
    venv_python = fake_executable(repo / '.venv/bin/python', 'venv-python')
    other = fake_executable(tmp_path / 'other/python', 'other-python')
    fake_executable(tmp_path / 'bin/srun', 'srun')
    env = {k: v for k, v in os.environ.items() if k != 'PYTHON'}
    env['PATH'] = f'{tmp_path / "bin"}:{env["PATH"]}'

    def run(script, *args, **extra):
        done = subprocess.run(['bash', str(repo / 'tools' / script), *args], env=dict(env, **extra),
                              capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        return done.stdout.splitlines()

    lines = run('dist_train.sh', 'a.py', '2', '--amp')
    assert lines[:3] == ['venv-python', '-m', 'torch.distributed.run'] and '--nproc_per_node=2' in lines
    assert lines[-5:] == [str(repo / 'tools/train.py'), 'a.py', '--launcher', 'pytorch', '--amp']
    assert run('dist_test.sh', 'a.py', 'c.pth', '1', PYTHON=str(other))[0] == 'other-python'
    lines = run('slurm_test.sh', 'part', 'job', 'a.py', 'c.pth', '--tta', GPUS='4')
    assert lines[0] == 'srun' and '--ntasks=4' in lines and '--gres=gpu:4' in lines
    assert lines[lines.index(str(venv_python)):] == [str(venv_python), '-u', str(repo / 'tools/test.py'), 'a.py',
                                                      'c.pth', '--launcher', 'slurm', '--tta']
    venv_python.unlink()
    assert run('slurm_train.sh', 'part', 'job', 'a.py')[-6] == 'python'

    bad = subprocess.run(['bash', str(repo / 'tools/dist_train.sh'), 'a.py', 'two'], env=env, capture_output=True,
                         text=True)
    assert bad.returncode == 2 and "GPUS must be a positive integer, got 'two'" in bad.stderr


# ---------------------------------------------------------------- demo schedules


def learning_rates(cfg: Config, work_dir: Path) -> list:
    """The learning rate of every training iteration, as the Runner's schedulers set it (the
    optimizer never steps: no training runs)."""
    from mmengine.runner import Runner

    cfg.work_dir = str(work_dir)
    runner = Runner.from_cfg(cfg)
    runner._train_loop = runner.build_train_loop(runner._train_loop)
    runner.optim_wrapper = runner.build_optim_wrapper(runner.optim_wrapper)
    runner.param_schedulers = runner.build_param_scheduler(runner.param_schedulers)
    group = runner.optim_wrapper.optimizer.param_groups[0]
    rates = []
    for _ in range(runner.max_iters):
        rates.append(group['lr'])
        for scheduler in runner.param_schedulers:
            scheduler.step()
    return rates


@pytest.mark.parametrize('max_epochs', [1, 3])
def test_classification_demo_schedule_follows_max_epochs(tmp_path, max_epochs):
    digits(tmp_path / 'mnist', per_class=8, split='train')  # 80 images: 10 iterations per epoch at 8
    cfg = Config.fromfile(CLS_DEMO)
    cfg.merge_from_dict({'train_cfg.max_epochs': max_epochs, 'train_dataloader.batch_size': 8,
                         'train_dataloader.dataset.data_root': str(tmp_path / 'mnist'),
                         'train_dataloader.num_workers': 0, 'train_dataloader.persistent_workers': False})
    rates = learning_rates(cfg, tmp_path / 'work')
    total, warmup, base, eta_min = 10 * max_epochs, 5, 2e-3, 1e-5  # warm-up: half an epoch
    # mmengine's LinearLR reaches the full lr at its last step (end - 1); the cosine then runs
    # over the remaining iterations towards eta_min, which it would reach one step after the last
    expected = [base * (0.01 + 0.99 * t / (warmup - 1)) for t in range(warmup)]
    expected += [eta_min + (base - eta_min) * (1 + math.cos(math.pi * t / (total - warmup))) / 2
                 for t in range(total - warmup)]
    assert rates == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize('max_iters', [5, 20])
def test_segmentation_demo_schedule_follows_max_iters(tmp_path, max_iters):
    nuclei(tmp_path / 'nuclei')
    cfg = Config.fromfile(SEG_DEMO)
    cfg.merge_from_dict({'train_cfg.max_iters': max_iters, 'train_dataloader.dataset.data_root':
                         str(tmp_path / 'nuclei')})
    rates = learning_rates(cfg, tmp_path / 'work')
    base = 1e-3
    # the 10-iteration warm-up's factor times the poly decay, which reaches 0 at the last iteration
    expected = [base * (0.01 + 0.99 * min(t, 9) / 9) * (1 - t / (max_iters - 1)) for t in range(max_iters)]
    assert len(rates) == max_iters
    assert rates == pytest.approx(expected, rel=1e-6, abs=1e-12)


# ---------------------------------------------------------------- visualize_attention.py


def attention_tool():
    return load_tool('analysis/visualize_attention.py')


@pytest.mark.parametrize('config, image_shape, pixels', [
    (CLS_DEMO, (28, 28), [('3', '4'), ('20', '30')]),  # the 28-px digit reaches the model at 32 px
    (DET_DEMO, (64, 64, 3), [('10', '50')]),
])
def test_visualize_attention_for_classification_and_detection(tmp_path, config, image_shape, pixels):
    tool = attention_tool()
    checkpoint = random_checkpoint(config, tmp_path / 'model.pth')
    image = tmp_path / 'image.png'
    write_png(image, np.random.default_rng(2).integers(0, 256, image_shape, dtype=np.uint8))
    out = tmp_path / 'attention.png'
    args = [config, checkpoint, str(image), '--stage', '1', '--head', '0', '--out', str(out)]
    tool.main(args + [item for pixel in pixels for item in ('--pixel', *pixel)])
    with Image.open(out) as png:
        png.verify()
    with Image.open(out) as png:
        several = png.size
    tool.main(args)  # the default: one pixel, the centre
    with Image.open(out) as png:
        one = png.size
    # one row per pixel under the input and prediction row
    assert several[0] == one[0] and (several[1] > one[1] if len(pixels) > 1 else several[1] == one[1])

    with pytest.raises(ValueError, match='--head 9 is out of range'):
        tool.main(args[:-2] + ['--head', '9', '--out', str(out)])
    with pytest.raises(ValueError, match='outside the'):
        tool.main(args + ['--pixel', '500', '0'])


def test_attention_maps_are_distributions_over_the_window():
    """Each scale's map of a query sums to 1 over the keys of its window (softmax), for the mean
    over heads and for one head, and puts no weight outside the (dilated) window."""
    tool = attention_tool()
    import a2mamba_core
    model = a2mamba_core.create_model('a2mamba_n').eval()
    stage = model.stages[0]
    captured = {}
    handle = stage.blocks[0].token_mixer.register_forward_pre_hook(
        lambda module, inputs: captured.setdefault('x', inputs))
    with torch.no_grad():
        model.forward_features(torch.randn(1, 3, 96, 128))
    handle.remove()
    mixer = stage.blocks[0].token_mixer
    x, pos_enc = captured['x']
    row, col = 3, 20  # near the top border, where the window shifts inward
    for head in (None, 0, mixer.num_heads // 2 - 1):
        maps = tool.pixel_attention(mixer, x, pos_enc, row, col, head)
        assert [dilation for _, dilation in maps] == [(1, 1), mixer.dilation(24, 32)]
        k = mixer.window_size[0]
        for attention, (dh, dw) in maps:
            assert attention.sum() == pytest.approx(1.0, abs=1e-5)
            rows, cols = np.nonzero(attention)
            assert np.all(np.abs(rows - row) <= (k - 1) * dh) and np.all(np.abs(cols - col) <= (k - 1) * dw)
            # the dilated scale only reaches keys of the query's own dilation group
            assert np.all((rows - row) % dh == 0) and np.all((cols - col) % dw == 0)
