"""Train with an mmengine Runner: the same entry point for mmpretrain, mmdet and mmseg configs.

    python tools/train.py CONFIG [--work-dir DIR] [--resume [CKPT]] [--amp] [--cfg-options k=v ...]
    bash tools/dist_train.sh CONFIG GPUS [args...]

An epoch-based run resumes at the start of the epoch after its checkpoint, so it resumes only
from checkpoints saved at an epoch end (the configs save by epoch); one saved mid-epoch is
refused (:class:`mmengine_ext.EpochResumeCheck`) rather than replaying the epoch from batch 0.
"""
import argparse
import os.path as osp
import sys

from mmengine.config import Config
from mmengine.runner import Runner

# The plugin packages live in the repository root; make them importable by custom_imports
# when this script runs from a checkout without `pip install -e .`.
sys.path.insert(0, osp.abspath(osp.join(osp.dirname(__file__), '..')))

# Puts what mmengine checkpoints hold on torch's weights-only allow-list, so that --resume and
# load_from read them (and refuse a file that would run code), whatever the config imports.
from mmengine_ext import EpochResumeCheck  # noqa: E402
from mmengine_ext.config import add_runner_arguments, parse_runner_args, runner_config  # noqa: E402


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Train an A2Mamba model')
    parser.add_argument('config', help='config file')
    parser.add_argument('--work-dir', help='where logs and checkpoints go (default: work_dirs/<config name>)')
    parser.add_argument('--resume', nargs='?', type=str, const='auto',
                        help='resume from this checkpoint, or from the latest one in the work dir if no path')
    parser.add_argument('--amp', action='store_true', help='automatic mixed precision')
    parser.add_argument('--auto-scale-lr', action='store_true', help='scale the lr by the actual total batch size')
    add_runner_arguments(parser, 'train_dataloader.batch_size=32')
    return parse_runner_args(parser)


def build_config(args: argparse.Namespace) -> Config:
    cfg = runner_config(args)
    if args.amp:
        optim_wrapper = cfg.optim_wrapper.get('type', 'OptimWrapper')
        if optim_wrapper == 'AmpOptimWrapper':
            print('AMP is already on in the config', file=sys.stderr)
        else:
            cfg.optim_wrapper.type = 'AmpOptimWrapper'
            cfg.optim_wrapper.setdefault('loss_scale', 'dynamic')
    if args.resume == 'auto':
        cfg.resume, cfg.load_from = True, None
    elif args.resume is not None:
        cfg.resume, cfg.load_from = True, args.resume
    if args.auto_scale_lr:
        if 'auto_scale_lr' not in cfg or 'base_batch_size' not in cfg.auto_scale_lr:
            raise ValueError('--auto-scale-lr needs auto_scale_lr.base_batch_size in the config')
        cfg.auto_scale_lr.enable = True
    return cfg


def distribute_without_gpus(cfg: Config) -> None:
    """Distributed training on CPUs (``--launcher pytorch`` where torch sees no GPU): mmengine's
    launcher assumes GPUs (it calls ``torch.cuda.set_device``), so the process group is made here
    with gloo, and DDP wraps the model without device ids."""
    import torch
    import torch.distributed as dist

    if cfg.launcher != 'pytorch' or torch.cuda.is_available():
        return
    if not dist.is_initialized():
        dist.init_process_group('gloo')
    if dist.get_rank() == 0:
        print(f'no GPU: {dist.get_world_size()} processes train on the CPU through gloo', file=sys.stderr)
    cfg.model_wrapper_cfg = dict(cfg.get('model_wrapper_cfg') or {}, device_ids=None)


def main() -> None:
    args = parse_args()
    cfg = build_config(args)
    distribute_without_gpus(cfg)
    runner = Runner.from_cfg(cfg)
    runner.register_hook(EpochResumeCheck())
    runner.train()


if __name__ == '__main__':
    main()
