"""Reading A2Mamba checkpoints safely and loading them strictly.

Every file is unpickled with ``torch.load(weights_only=True)``: only tensors, plain containers
and the objects on an explicit allow-list are rebuilt, so a file that carries code (a
``__reduce__`` payload) is refused before anything of it runs. Importing this package puts
numpy's array and scalar reconstructors on torch's allow-list (mmengine checkpoints pickle
numpy metadata); :mod:`mmengine_ext` adds mmengine's ``HistoryBuffer``. The allow-list is
process-wide, so mmengine's own loaders (``load_from``, ``resume``, ``init_detector``, ...)
read the project's checkpoints without any environment override.

Loading is strict: a checkpoint that leaves a weight of the model unloaded, or holds a tensor of
another shape, raises with the keys. The classifier (``head_prefixes``) may be absent or sized
for another number of classes, and the stage-4 global attention bias of another training
resolution is resized, as the model's forward would resize it; ``strict=False`` loads what fits.
"""
import importlib
import logging
import os
import pickle
from typing import Callable, Dict, NamedTuple, Optional, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from .hub import cached_path

logger = logging.getLogger('a2mamba')

# Where each flavour of weights lives in a training checkpoint, in order of preference.
CHECKPOINT_KEYS = {'plain': ('state_dict', 'model'), 'ema': ('state_dict_ema', 'model_ema')}
PREFIXES = ('module.', 'backbone.')
# The classification head: may be missing from a checkpoint (a backbone one) or sized for another
# number of classes (fine-tuning); it then keeps its initialisation.
HEAD_PREFIXES = ('classifier.',)
# The stage-4 global attention bias, (1, heads, tokens, tokens) at the training resolution.
GLOBAL_BIAS_SUFFIX = '.token_mixer.rpb.2'
MAX_LISTED_KEYS = 50


def _numpy_safe_globals() -> list:
    """numpy's pickle reconstructors for arrays, scalars and dtypes, under both module paths
    (``numpy.core`` in files saved with numpy 1, ``numpy._core`` with numpy 2). They rebuild
    values only; an object array's elements pass through the same restricted unpickler."""
    multiarray = importlib.import_module('numpy._core.multiarray' if np.lib.NumpyVersion(np.__version__) >= '2.0.0'
                                         else 'numpy.core.multiarray')
    entries = [np.ndarray, np.dtype]
    for name in ('_reconstruct', 'scalar'):
        entries += [(getattr(multiarray, name), f'numpy.{package}.multiarray.{name}') for package in ('core', '_core')]
    # numpy >= 1.25 gives each dtype its own class (numpy.dtypes.Float64DType, ...): a pickled
    # dtype is rebuilt through np.dtype and then has its state set, which the unpickler allows
    # only for listed types
    entries += sorted({type(np.dtype(code)) for code in '?bBhHiIlLqQefdgFDGSUVOMm'} - {np.dtype}, key=str)
    return entries


torch.serialization.add_safe_globals(_numpy_safe_globals())


class LoadResult(NamedTuple):
    """What :func:`load_pretrained` left out: keys of the model the file did not set (or set with
    another shape) and keys of the file the model does not have."""
    missing_keys: list
    unexpected_keys: list


def _listing(keys: Sequence[str]) -> str:
    shown = ', '.join(keys[:MAX_LISTED_KEYS])
    return shown + (f', ... ({len(keys) - MAX_LISTED_KEYS} more)' if len(keys) > MAX_LISTED_KEYS else '')


def load_checkpoint_file(path: str) -> object:
    """Unpickles ``path`` with ``weights_only=True`` onto the CPU.

    Raises:
        IsADirectoryError: ``path`` is a directory.
        FileNotFoundError: no file at ``path``.
        RuntimeError: the file is not a checkpoint, or it holds objects outside the allow-list
            (refused without running them).
    """
    if os.path.isdir(path):
        raise IsADirectoryError(f'A2Mamba checkpoint {path!r} is a directory; give the path of a .pth file in it')
    if not os.path.isfile(path):
        raise FileNotFoundError(f'A2Mamba checkpoint not found: {path!r}')
    try:
        return torch.load(path, map_location='cpu', weights_only=True)
    except pickle.UnpicklingError as exc:
        try:
            names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
        except Exception:  # a legacy (non-zip) file: torch's message names the global
            names = []
        # torch's message goes on to suggest weights_only=False; only its diagnosis is kept
        reason = str(exc).split('WeightsUnpickler error:')[-1].split('Check the documentation')[0].strip()
        if not names and not any(word in reason for word in ('global', 'safe_globals', 'unrecognized')):
            raise RuntimeError(f'cannot read A2Mamba checkpoint {path!r}: {reason}') from exc
        found = f'it holds {names}, which are' if names else 'it holds objects'
        raise RuntimeError(
            f'refusing to unpickle {path!r}: {found} not on the allow-list of checkpoint contents (tensors, '
            'containers, numpy arrays and scalars, and after `import mmengine_ext` or any A2Mamba plugin, '
            f"mmengine's HistoryBuffer); unpickling them could run code ({reason})") from exc
    except Exception as exc:  # torch raises many types for a corrupt or foreign file
        raise RuntimeError(f'cannot read A2Mamba checkpoint {path!r}: {exc}') from exc


def check_finite(state_dict: Dict[str, Tensor], source: str) -> None:
    """Raises ValueError naming every floating tensor of ``state_dict`` that holds NaN or Inf
    (a corrupt or diverged checkpoint would otherwise turn every output into NaN)."""
    bad = [k for k, v in state_dict.items()
           if isinstance(v, Tensor) and (v.is_floating_point() or v.is_complex()) and not torch.isfinite(v).all()]
    if bad:
        raise ValueError(f'{source!r} holds NaN or Inf values in {len(bad)} tensors: {_listing(bad)}')


def read_checkpoint(path: str, weights: str = 'plain') -> Dict[str, Tensor]:
    """Reads a ``.pth`` file and returns its state_dict with ``module.``/``backbone.`` stripped.

    Args:
        path: checkpoint file: a bare state_dict, or a dict holding one under ``state_dict``
            or ``model`` (``weights='plain'``), ``state_dict_ema`` or ``model_ema`` (``'ema'``).
        weights: ``'plain'`` or ``'ema'``.

    Raises:
        IsADirectoryError, FileNotFoundError, RuntimeError: see :func:`load_checkpoint_file`.
        KeyError: the requested weights are not in it.
        ValueError: a tensor holds NaN or Inf.
    """
    path = cached_path(path)  # an http(s) URL becomes its downloaded, cached copy
    if weights not in CHECKPOINT_KEYS:
        raise ValueError(f"weights must be one of {sorted(CHECKPOINT_KEYS)}, got {weights!r}")
    checkpoint = load_checkpoint_file(path)
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
        ema_keys = [k for k in CHECKPOINT_KEYS['ema'] if isinstance(checkpoint.get(k), dict)]
        if ema_keys:
            raise KeyError(f"{path!r} holds only EMA weights (under {ema_keys[0]!r}); pass weights='ema'")
        state_dict = checkpoint
    if not all(isinstance(v, Tensor) for v in state_dict.values()):
        raise RuntimeError(f'{path!r} holds no state_dict under {CHECKPOINT_KEYS[weights]} and is not a bare one')
    state_dict = {strip_prefixes(k): v for k, v in state_dict.items()}
    check_finite(state_dict, path)
    return state_dict


def strip_prefixes(key: str) -> str:
    changed = True
    while changed:
        changed = False
        for prefix in PREFIXES:
            if key.startswith(prefix):
                key, changed = key[len(prefix):], True
    return key


def resize_global_bias(bias: Tensor, tokens: int) -> Tensor:
    """The stage-4 bias ``(1, heads, L, L)`` resized to ``(1, heads, tokens, tokens)`` as
    :meth:`a2mamba_core.MASS.global_attention` resizes it at run time (bicubic)."""
    return F.interpolate(bias.float(), size=(tokens, tokens), mode='bicubic', align_corners=False).to(bias.dtype)


def load_state_dict_checked(model: nn.Module, state_dict: Dict[str, Tensor], source: str, strict: bool = True,
                            head_prefixes: Sequence[str] = HEAD_PREFIXES,
                            log_to: Optional[logging.Logger] = None) -> LoadResult:
    """Loads ``state_dict`` into ``model`` and refuses to leave weights at random.

    Args:
        model: the module to fill.
        state_dict: its weights, under the model's own names.
        source: the file name, for messages.
        strict: raise when a key of the model outside ``head_prefixes`` is missing from
            ``state_dict`` or has another shape there; ``False`` logs them and keeps their
            initialisation.
        head_prefixes: keys that may be missing or of another shape (a new classifier).
        log_to: where the report goes (a framework's logger, e.g. mmengine's ``MMLogger``);
            default the ``a2mamba`` logger.

    Returns:
        the keys left at initialisation and the keys of ``state_dict`` the model lacks (logged).

    Raises:
        RuntimeError: no key matches (not an A2Mamba checkpoint), or, with ``strict``, the
            missing and mismatched keys.
    """
    log = logger if log_to is None else log_to
    own = model.state_dict()
    matched = [k for k in state_dict if k in own]
    if not matched:
        raise RuntimeError(f'no key of {source!r} matches the model (first keys: {list(state_dict)[:5]}); '
                           'is it an A2Mamba checkpoint?')
    state_dict = dict(state_dict)
    for key in matched:
        value, target = state_dict[key], own[key]
        if (key.endswith(GLOBAL_BIAS_SUFFIX) and value.dim() == target.dim() == 4
                and value.shape[:2] == target.shape[:2] and value.shape[2:] != target.shape[2:]):
            state_dict[key] = resize_global_bias(value, target.shape[2])
    mismatched = [k for k in matched if state_dict[k].shape != own[k].shape]
    shapes = {k: f'{k}: {tuple(state_dict.pop(k).shape)} in the file, {tuple(own[k].shape)} in the model'
              for k in mismatched}
    result = model.load_state_dict(state_dict, strict=False)
    head = tuple(head_prefixes)
    # the tensors of another shape were taken out, so they are among the missing keys
    missing = [k for k in result.missing_keys if not k.startswith(head) and k not in shapes]
    wrong_shape = [shapes[k] for k in mismatched if not k.startswith(head)]
    if strict and (missing or wrong_shape):
        problems = []
        if wrong_shape:
            problems.append(f'it does not fit this model size ({len(wrong_shape)} tensors of another shape: '
                            f'{_listing(wrong_shape)})')
        if missing:
            problems.append(f'{len(missing)} weights of the model are missing from it: {_listing(missing)}')
        raise RuntimeError(f'{source!r}: ' + '; '.join(problems) +
                           '. Pass strict=False to load only what fits and keep the rest as initialised.')
    details = list(shapes.values())
    if details:
        log.warning('%s: %d tensors of another shape (left as initialised): %s', source, len(details),
                    _listing(details))
    absent = [k for k in result.missing_keys if k not in shapes]
    if absent:
        log.warning('%s: %d missing keys (left as initialised): %s', source, len(absent), _listing(absent))
    if result.unexpected_keys:
        log.warning('%s: %d unexpected keys (ignored): %s', source, len(result.unexpected_keys),
                    _listing(list(result.unexpected_keys)))
    log.info('loaded %d tensors from %s', len(matched) - len(mismatched), source)
    return LoadResult(list(result.missing_keys), list(result.unexpected_keys))


def load_pretrained(model: nn.Module, path: str, weights: str = 'plain',
                    state_dict_filter: Optional[Callable[[Dict[str, Tensor]], Dict[str, Tensor]]] = None,
                    strict: bool = True, head_prefixes: Sequence[str] = HEAD_PREFIXES,
                    log_to: Optional[logging.Logger] = None) -> LoadResult:
    """Loads an A2Mamba checkpoint into ``model``; see :func:`read_checkpoint` for the formats
    and :func:`load_state_dict_checked` for ``strict``, ``head_prefixes`` and ``log_to``.

    ``state_dict_filter`` may rename or drop keys first (dense backbones drop the classifier).
    Returns the keys left at initialisation and the unexpected keys (both are also logged).
    """
    state_dict = read_checkpoint(path, weights)
    if state_dict_filter is not None:
        state_dict = state_dict_filter(state_dict)
    return load_state_dict_checked(model, state_dict, path, strict=strict, head_prefixes=head_prefixes, log_to=log_to)
