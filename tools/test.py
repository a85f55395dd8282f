"""Evaluate a checkpoint with an mmengine Runner (mmpretrain, mmdet and mmseg configs).

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--out FILE] [--show] [--show-dir DIR]
        [--wait-time S] [--tta] [--amp] [--cfg-options k=v ...]
    bash tools/dist_test.sh CONFIG CHECKPOINT GPUS [args...]

``--show``/``--show-dir`` switch on the config's ``default_hooks.visualization`` the way each
framework's own tools/test.py does, painting every test image; they go to
``WORK_DIR/<timestamp>/DIR`` (mmdet), ``DIR`` (mmpretrain) or ``DIR/vis_data/vis_image`` (mmseg).
``--tta`` wraps the model in ``cfg.tta_model`` and tests with ``cfg.tta_pipeline``.
"""
import argparse
import os.path as osp
import pickle
import re
import sys
from typing import Optional, Sequence

import torch.nn as nn
from mmengine.config import Config, ConfigDict
from mmengine.model import is_model_wrapper
from mmengine.runner import Runner
from mmengine.runner.checkpoint import _load_checkpoint

sys.path.insert(0, osp.abspath(osp.join(osp.dirname(__file__), '..')))

# Puts what mmengine checkpoints hold on torch's weights-only allow-list (see mmengine_ext).
import mmengine_ext  # noqa: E402,F401
from a2mamba_core import check_finite  # noqa: E402
from mmengine_ext.config import add_runner_arguments, parse_runner_args, runner_config  # noqa: E402


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Test an A2Mamba model')
    parser.add_argument('config', help='config file')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--work-dir', help='where logs and metrics go (default: work_dirs/<config name>)')
    parser.add_argument('--out', help='dump the raw predictions to this pickle file')
    parser.add_argument('--show', action='store_true', help='show each painted prediction in a window')
    parser.add_argument('--show-dir', help='save the painted predictions: under WORK_DIR/<timestamp>/SHOW_DIR '
                                           '(mmdet), SHOW_DIR (mmpretrain) or SHOW_DIR/vis_data/vis_image (mmseg)')
    parser.add_argument('--wait-time', type=float, default=2, help='seconds each image is shown with --show')
    parser.add_argument('--tta', action='store_true',
                        help="test-time augmentation with the config's tta_model and tta_pipeline")
    parser.add_argument('--amp', action='store_true', help='test with automatic mixed precision')
    add_runner_arguments(parser, 'test_dataloader.batch_size=32')
    args = parse_runner_args(parser, argv)
    if args.wait_time < 0:
        parser.error(f'--wait-time must be >= 0 seconds, got {args.wait_time}')
    return args


def check_checkpoint_fits(model: nn.Module, checkpoint: str) -> None:
    """Loads ``checkpoint`` into ``model`` and exits non-zero unless it sets every weight.

    The Runner's ``load_from`` is not strict: it would log a warning and score whatever was left
    at random initialisation (another model size, another input channel count, a file with a
    part of the keys or none). The Runner loads the file again afterwards, with its hooks.
    """
    try:
        loaded = _load_checkpoint(checkpoint, map_location='cpu')
    except pickle.UnpicklingError as exc:
        raise SystemExit(f'refusing to unpickle {checkpoint}: it holds objects that are not on the allow-list of '
                         f'checkpoint contents and could run code ({exc})') from exc
    state_dict = loaded.get('state_dict', loaded) if isinstance(loaded, dict) else None
    if not isinstance(state_dict, dict):
        raise SystemExit(f'{checkpoint} holds a {type(loaded).__name__}, not a checkpoint')
    state_dict = {re.sub(r'^module\.', '', key): value for key, value in state_dict.items()}
    try:
        check_finite(state_dict, checkpoint)
        result = model.load_state_dict(state_dict, strict=False)
    except (ValueError, RuntimeError) as exc:  # NaN/Inf, or tensors of another shape
        raise SystemExit(f'{checkpoint} does not fit the model of the config: {exc}') from exc
    if result.missing_keys:
        shown = ', '.join(result.missing_keys[:20])
        more = f', ... ({len(result.missing_keys) - 20} more)' if len(result.missing_keys) > 20 else ''
        raise SystemExit(f'{checkpoint} does not fit the model of the config: {len(result.missing_keys)} of its '
                         f'{len(model.state_dict())} weights are not in it ({shown}{more}); evaluating them at '
                         'random initialisation would be meaningless')




def enable_visualization(cfg: Config, show: bool, show_dir: Optional[str], wait_time: float) -> None:
    """Switches on the config's visualization hook as mmdet's, mmseg's and mmpretrain's own
    tools/test.py do for ``--show``/``--show-dir``; each framework names the options differently."""
    hook = (cfg.get('default_hooks') or {}).get('visualization')
    if hook is None:
        raise ValueError('--show/--show-dir need default_hooks.visualization in the config, e.g. '
                         "dict(type='DetVisualizationHook') (mmdet), dict(type='SegVisualizationHook') "
                         "(mmseg) or dict(type='VisualizationHook') (mmpretrain)")
    hook_type = hook.get('type', '').split('.')[-1]
    if hook_type == 'DetVisualizationHook':
        hook.update(draw=True, show=show, wait_time=wait_time)
        if show_dir:
            hook.test_out_dir = show_dir
    elif hook_type == 'SegVisualizationHook':
        # interval=1: every test image (the hook's default paints one batch in 50)
        hook.update(draw=True, show=show, wait_time=wait_time, interval=1)
        if show_dir:
            cfg.visualizer.save_dir = show_dir
    elif hook_type == 'VisualizationHook' and cfg.get('default_scope') == 'mmpretrain':
        # interval=1: every test image (the hook's default paints one in 5000)
        hook.update(enable=True, show=show, wait_time=wait_time, interval=1)
        if show_dir:
            hook.out_dir = show_dir
    else:
        raise ValueError(f'--show/--show-dir do not know the visualization hook {hook.get("type")!r}; expected '
                         'DetVisualizationHook, SegVisualizationHook or mmpretrain\'s VisualizationHook')


def use_tta(cfg: Config) -> None:
    """Wraps the model in ``cfg.tta_model`` and gives the test dataset ``cfg.tta_pipeline``."""
    missing = [key for key in ('tta_model', 'tta_pipeline') if key not in cfg]
    if missing:
        raise ValueError(f'--tta needs {" and ".join(missing)} in the config (the test-time augmentation '
                         "wrapper, e.g. tta_model = dict(type='SegTTAModel'), and the pipeline that makes "
                         'the augmented views)')
    if cfg.model.get('type') == cfg.tta_model.get('type'):
        raise ValueError(f'the config already wraps its model in {cfg.model.type}; drop --tta')
    cfg.model = ConfigDict(**cfg.tta_model, module=cfg.model)
    dataset = cfg.test_dataloader.dataset
    while 'dataset' in dataset:  # through wrappers such as RepeatDataset
        dataset = dataset.dataset
    dataset.pipeline = cfg.tta_pipeline


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parse_args(argv)
    if not osp.isfile(args.checkpoint):
        raise FileNotFoundError(f'checkpoint not found: {args.checkpoint}')
    cfg = runner_config(args)
    cfg.load_from = args.checkpoint
    if args.show or args.show_dir:
        enable_visualization(cfg, args.show, args.show_dir, args.wait_time)
    if args.tta:
        use_tta(cfg)
    if args.amp:
        cfg.test_cfg = dict(cfg.get('test_cfg') or {}, fp16=True)
    runner = Runner.from_cfg(cfg)
    model = runner.model.module if is_model_wrapper(runner.model) else runner.model
    # a test-time-augmentation wrapper holds the model of the checkpoint as its .module
    check_checkpoint_fits(model.module if args.tta else model, args.checkpoint)
    if args.out:
        from mmengine.evaluator import DumpResults
        runner.test_evaluator.metrics.append(DumpResults(out_file_path=args.out))
    runner.test()


if __name__ == '__main__':
    main()
