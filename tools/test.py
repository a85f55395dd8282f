"""Evaluate a checkpoint with an mmengine Runner (mmpretrain, mmdet and mmseg configs).

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--out FILE] [--cfg-options k=v ...]
    bash tools/dist_test.sh CONFIG CHECKPOINT GPUS [args...]
"""
import argparse
import os
import os.path as osp
import pickle
import re
import sys

import torch.nn as nn
from mmengine.config import Config, DictAction
from mmengine.model import is_model_wrapper
from mmengine.runner import Runner
from mmengine.runner.checkpoint import _load_checkpoint

sys.path.insert(0, osp.abspath(osp.join(osp.dirname(__file__), '..')))

# Puts what mmengine checkpoints hold on torch's weights-only allow-list (see mmengine_ext).
from a2mamba_core import check_finite  # noqa: E402
import mmengine_ext  # noqa: E402,F401


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Test an A2Mamba model')
    parser.add_argument('config', help='config file')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--work-dir', help='where logs and metrics go (default: work_dirs/<config name>)')
    parser.add_argument('--out', help='dump the raw predictions to this pickle file')
    parser.add_argument('--amp', action='store_true', help='test with automatic mixed precision')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config entries, e.g. test_dataloader.batch_size=32')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none',
                        help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args()
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
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


def main() -> None:
    args = parse_args()
    if not osp.isfile(args.checkpoint):
        raise FileNotFoundError(f'checkpoint not found: {args.checkpoint}')
    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    cfg.work_dir = args.work_dir or cfg.get('work_dir') or osp.join(
        'work_dirs', osp.splitext(osp.basename(args.config))[0])
    cfg.load_from = args.checkpoint
    if args.amp:
        cfg.test_cfg = dict(cfg.get('test_cfg') or {}, fp16=True)
    runner = Runner.from_cfg(cfg)
    check_checkpoint_fits(runner.model.module if is_model_wrapper(runner.model) else runner.model, args.checkpoint)
    if args.out:
        from mmengine.evaluator import DumpResults
        runner.test_evaluator.metrics.append(DumpResults(out_file_path=args.out))
    runner.test()


if __name__ == '__main__':
    main()
