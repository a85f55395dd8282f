"""Reading a config as the tools need it."""
from typing import Optional

from mmengine.config import Config
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
