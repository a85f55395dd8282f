"""Reading a config, and the command-line options for it, as the tools need them."""
import argparse
import os
import os.path as osp
from typing import Optional, Sequence

from mmengine.config import Config, DictAction
from mmengine.registry import init_default_scope
from mmengine.utils import import_modules_from_strings


def load_config(config: str, cfg_options: Optional[dict] = None) -> Config:
    """The config with ``cfg_options`` merged, its ``custom_imports`` imported and its default
    scope set, ready for ``MODELS.build(cfg.model)``."""
    cfg = Config.fromfile(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    if cfg.get('custom_imports'):
        import_modules_from_strings(**cfg.custom_imports)
    init_default_scope(cfg.get('default_scope', 'mmengine'))
    return cfg


def add_runner_arguments(parser: argparse.ArgumentParser, override_example: str) -> None:
    """Adds the options that tools/train.py and tools/test.py share, as mmengine's tools spell
    them: ``--cfg-options`` (``override_example`` shows one in the help), ``--launcher``, and the
    ``--local_rank`` that older launchers pass."""
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help=f'override config entries, e.g. {override_example}')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none',
                        help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)


def runner_config(args: argparse.Namespace) -> Config:
    """The config ``args.config`` set up from the options of :func:`add_runner_arguments` and
    ``args.work_dir``: launcher, ``--cfg-options`` merged, and the work dir (``--work-dir``, else
    the config's, else ``work_dirs/<config name>``)."""
    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    cfg.work_dir = args.work_dir or cfg.get('work_dir') or osp.join(
        'work_dirs', osp.splitext(osp.basename(args.config))[0])
    return cfg


def parse_runner_args(parser: argparse.ArgumentParser, argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """``parser.parse_args(argv)``, with ``LOCAL_RANK`` set from ``--local_rank`` unless the
    launcher set it (mmengine's distributed setup reads the variable)."""
    args = parser.parse_args(argv)
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args
