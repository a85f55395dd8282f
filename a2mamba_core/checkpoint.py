"""Loading the authors' released checkpoints (``a2mamba_{nano,tiny,small,base,large}.pth``)."""
import logging
import os
from typing import Dict, NamedTuple, Optional

import torch
import torch.nn as nn
from torch import Tensor

from .hub import cached_path

logger = logging.getLogger('a2mamba')

# Where each flavour of weights lives in a training checkpoint, in order of preference.
CHECKPOINT_KEYS = {'plain': ('state_dict', 'model'), 'ema': ('state_dict_ema', 'model_ema')}
PREFIXES = ('module.', 'backbone.')


class LoadResult(NamedTuple):
    missing_keys: list
    unexpected_keys: list


def read_checkpoint(path: str, weights: str = 'plain') -> Dict[str, Tensor]:
    """Reads a ``.pth`` file and returns its state_dict with ``module.``/``backbone.`` stripped.

    Args:
        path: checkpoint file: a bare state_dict, or a dict holding one under ``state_dict``
            or ``model`` (``weights='plain'``), ``state_dict_ema`` or ``model_ema`` (``'ema'``).
        weights: ``'plain'`` or ``'ema'``.

    Raises:
        FileNotFoundError: no file at ``path``.
        RuntimeError: the file cannot be read as a checkpoint.
        KeyError: the requested weights are not in it.
    """
    path = cached_path(path)  # an http(s) URL becomes its downloaded, cached copy
    if weights not in CHECKPOINT_KEYS:
        raise ValueError(f"weights must be one of {sorted(CHECKPOINT_KEYS)}, got {weights!r}")
    if not os.path.isfile(path):
        raise FileNotFoundError(f'A2Mamba checkpoint not found: {path!r}')
    try:
        checkpoint = torch.load(path, map_location='cpu', weights_only=False)
    except Exception as exc:  # torch raises many types for a corrupt or foreign file
        raise RuntimeError(f'cannot read A2Mamba checkpoint {path!r}: {exc}') from exc
    if not isinstance(checkpoint, dict):
        raise RuntimeError(f'{path!r} holds a {type(checkpoint).__name__}, not a state_dict')
    state_dict = None
    for key in CHECKPOINT_KEYS[weights]:
        if isinstance(checkpoint.get(key), dict):
            state_dict = checkpoint[key]
            break
    if state_dict is None:
        if weights == 'ema':
            raise KeyError(f'{path!r} has no EMA weights (looked for {CHECKPOINT_KEYS["ema"]}); '
                           f'top-level keys: {sorted(checkpoint)[:10]}')
        state_dict = checkpoint
    if not all(isinstance(v, Tensor) for v in state_dict.values()):
        raise RuntimeError(f'{path!r} holds no state_dict under {CHECKPOINT_KEYS[weights]} and is not a bare one')
    return {strip_prefixes(k): v for k, v in state_dict.items()}


def strip_prefixes(key: str) -> str:
    changed = True
    while changed:
        changed = False
        for prefix in PREFIXES:
            if key.startswith(prefix):
                key, changed = key[len(prefix):], True
    return key


def load_state_dict_logged(model: nn.Module, state_dict: Dict[str, Tensor], source: str) -> LoadResult:
    """``load_state_dict(strict=False)`` that logs what did not match and refuses a file that
    matches nothing (the wrong model or a foreign checkpoint) instead of leaving random weights."""
    own = model.state_dict()
    matched = [k for k in state_dict if k in own]
    if not matched:
        raise RuntimeError(f'no key of {source!r} matches the model (first keys: {list(state_dict)[:5]}); '
                           'is it an A2Mamba checkpoint?')
    mismatched = [k for k in matched if state_dict[k].shape != own[k].shape]
    if mismatched:
        details = ', '.join(f'{k}: {tuple(state_dict[k].shape)} vs {tuple(own[k].shape)}' for k in mismatched[:5])
        raise RuntimeError(f'{source!r} does not fit this model size ({details})')
    result = model.load_state_dict(state_dict, strict=False)
    if result.missing_keys:
        logger.warning('%s: %d missing keys (left as initialised): %s', source, len(result.missing_keys),
                       result.missing_keys)
    if result.unexpected_keys:
        logger.warning('%s: %d unexpected keys (ignored): %s', source, len(result.unexpected_keys),
                       result.unexpected_keys)
    logger.info('loaded %d tensors from %s', len(matched), source)
    return LoadResult(list(result.missing_keys), list(result.unexpected_keys))


def load_pretrained(model: nn.Module, path: str, weights: str = 'plain',
                    state_dict_filter: Optional[callable] = None) -> LoadResult:
    """Loads an A2Mamba checkpoint into ``model``; see :func:`read_checkpoint` for the formats.

    ``state_dict_filter`` may rename or drop keys first (dense backbones drop the classifier).
    Returns the missing and unexpected keys (both are also logged).
    """
    state_dict = read_checkpoint(path, weights)
    if state_dict_filter is not None:
        state_dict = state_dict_filter(state_dict)
    return load_state_dict_logged(model, state_dict, path)
