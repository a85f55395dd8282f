"""One dispatch point per op: the model calls ``ops.na2d_qk`` etc. and never names a backend.

Each op has backends registered in priority order, each with an availability check on the
input tensor (device, dtype). The first available one runs. ``A2MAMBA_OPS_BACKEND=<name>``
or :func:`use_backend` forces one backend for every op (for tests and benchmarks); forcing
one that cannot serve a call raises instead of silently running another. Running the
reference on an accelerator is logged once per op, since it is the slow path there.
"""
import contextlib
import logging
import os
from typing import Callable, Dict, Iterator, List, NamedTuple, Optional

from torch import Tensor

logger = logging.getLogger('a2mamba.ops')

BACKEND_ENV = 'A2MAMBA_OPS_BACKEND'
REFERENCE = 'reference'


class Backend(NamedTuple):
    name: str
    fn: Callable
    available: Callable[[Tensor], bool]


_REGISTRY: Dict[str, List[Backend]] = {}
_forced: Optional[str] = None
_warned: set = set()


def register_backend(op: str, name: str, fn: Callable, available: Callable[[Tensor], bool],
                     first: bool = True) -> None:
    """Adds a backend for ``op``; ``first=True`` gives it priority over those registered."""
    backends = _REGISTRY.setdefault(op, [])
    backends[:] = [b for b in backends if b.name != name]
    backends.insert(0 if first else len(backends), Backend(name, fn, available))


def backends(op: str) -> List[str]:
    """Names of the registered backends of ``op``, in priority order."""
    return [b.name for b in _REGISTRY[op]]


def forced_backend() -> Optional[str]:
    return _forced or os.environ.get(BACKEND_ENV) or None


@contextlib.contextmanager
def use_backend(name: Optional[str]) -> Iterator[None]:
    """Forces backend ``name`` for every op inside the block (``None``: automatic)."""
    global _forced
    previous, _forced = _forced, name
    try:
        yield
    finally:
        _forced = previous


def resolve(op: str, tensor: Tensor) -> Callable:
    """The implementation of ``op`` that serves ``tensor``."""
    candidates = _REGISTRY[op]
    name = forced_backend()
    if name and name != 'auto':
        for backend in candidates:
            if backend.name == name:
                if not backend.available(tensor):
                    raise RuntimeError(f'backend {name!r} of {op} cannot run on {tensor.device} '
                                       f'{tensor.dtype}; unset {BACKEND_ENV} or pick one of {backends(op)}')
                return backend.fn
        raise ValueError(f'{BACKEND_ENV}={name!r}: {op} has backends {backends(op)}')
    for backend in candidates:
        if backend.available(tensor):
            if backend.name == REFERENCE and tensor.device.type != 'cpu' and op not in _warned:
                _warned.add(op)
                logger.warning('%s: no fast kernel available on %s, running the PyTorch reference '
                               '(slow, memory-hungry)', op, tensor.device)
            return backend.fn
    raise RuntimeError(f'no backend of {op} can run on {tensor.device} {tensor.dtype}')
