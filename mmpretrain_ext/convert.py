"""Key mapping between the authors' checkpoints and mmpretrain's ``ImageClassifier``.

The official model names its parts ``patch_embed``, ``layers`` and ``classifier``; in
mmpretrain the same tensors live under ``backbone.patch_embed``, ``backbone.layers`` (the
:class:`~mmpretrain_ext.A2Mamba` backbone) and ``head.classifier``
(:class:`~mmpretrain_ext.A2MambaClsHead`). Nothing else differs: no tensor is reshaped.
"""
from typing import Dict, Iterable, List, Mapping, Tuple, TypeVar

Value = TypeVar('Value')

# (official prefix, mmpretrain prefix)
PREFIX_MAP: Tuple[Tuple[str, str], ...] = (
    ('patch_embed.', 'backbone.patch_embed.'),
    ('layers.', 'backbone.layers.'),
    ('classifier.', 'head.classifier.'),
)


def _rename(key: str, pairs: Iterable[Tuple[str, str]]) -> str:
    for src, dst in pairs:
        if key.startswith(src):
            return dst + key[len(src):]
    raise KeyError(key)


def _convert(state_dict: Mapping[str, Value], pairs: Tuple[Tuple[str, str], ...],
             layout: str) -> Dict[str, Value]:
    converted, unmapped = {}, []
    for key, value in state_dict.items():
        try:
            converted[_rename(key, pairs)] = value
        except KeyError:
            unmapped.append(key)
    if unmapped:
        expected = ', '.join(src for src, _ in pairs)
        raise KeyError(f'{len(unmapped)} keys are not in the {layout} layout (expected prefixes {expected}): '
                       f'{unmapped[:10]}')
    return converted


def official_to_mmpretrain(state_dict: Mapping[str, Value]) -> Dict[str, Value]:
    """Renames an official state_dict (``patch_embed.*``, ``layers.*``, ``classifier.*``) to
    mmpretrain's (``backbone.*``, ``head.classifier.*``).

    Raises:
        KeyError: a key has none of the official prefixes.
    """
    return _convert(state_dict, PREFIX_MAP, 'official')


def mmpretrain_to_official(state_dict: Mapping[str, Value]) -> Dict[str, Value]:
    """The inverse of :func:`official_to_mmpretrain`.

    Raises:
        KeyError: a key is neither ``backbone.patch_embed/layers.*`` nor ``head.classifier.*``.
    """
    return _convert(state_dict, tuple((dst, src) for src, dst in PREFIX_MAP), 'mmpretrain')


def is_official_key(key: str) -> bool:
    return any(key.startswith(src) for src, _ in PREFIX_MAP)


def rename_official_keys_inplace(state_dict: Dict[str, Value], prefix: str = '') -> List[str]:
    """Renames, in place, the keys ``prefix + <official key>`` to ``prefix + <mmpretrain key>``
    and leaves every other key alone. Returns the renamed official keys."""
    renamed = [key for key in state_dict if key.startswith(prefix) and is_official_key(key[len(prefix):])]
    for key in renamed:
        state_dict[prefix + _rename(key[len(prefix):], PREFIX_MAP)] = state_dict.pop(key)
    return renamed
