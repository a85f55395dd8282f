"""One dispatch point per op: the model calls ``ops.na2d_qk`` etc. and never names a backend.

Each op has backends registered in priority order, each with an availability check on the
input tensor (device, dtype). The first available one runs. ``A2MAMBA_OPS_BACKEND=<name>``
or :func:`use_backend` forces one backend for every op (for tests and benchmarks); forcing
one that cannot serve a call raises instead of silently running another. Running the
reference on an accelerator is logged once per op, since it is the slow path there. A fast
backend that fails at run time (a kernel built for another GPU, a Triton compile error) is
disabled for the rest of the process with one logged warning, and the next backend runs.
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
_disabled: set = set()  # (op, backend) pairs that failed at run time


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
        if (op, backend.name) in _disabled or not backend.available(tensor):
            continue
        if backend.name == REFERENCE:
            if tensor.device.type != 'cpu' and op not in _warned:
                _warned.add(op)
                logger.warning('%s: no fast kernel available on %s, running the PyTorch reference '
                               '(slow, memory-hungry); registered backends: %s', op, tensor.device, backends(op))
            return backend.fn
        return _falling_back(op, backend, tensor)
    raise RuntimeError(f'no backend of {op} can run on {tensor.device} {tensor.dtype}')


def disable(op: str, name: str) -> None:
    """Never picks backend ``name`` of ``op`` again in this process (benchmarks compare paths)."""
    if name not in backends(op):
        raise ValueError(f'{op} has no backend {name!r}; it has {backends(op)}')
    _disabled.add((op, name))


def runs_kernel(op: str, tensor: Tensor) -> bool:
    """Whether ``op`` on ``tensor`` would run a fast kernel rather than the PyTorch reference.

    Lets a caller pick between formulations (e.g. a fused op against a stored intermediate)
    without naming a backend; honours a forced backend and backends disabled after a failure.
    """
    name = forced_backend()
    if name and name != 'auto':
        return name != REFERENCE and any(b.name == name and b.available(tensor) for b in _REGISTRY[op])
    for backend in _REGISTRY[op]:
        if (op, backend.name) not in _disabled and backend.available(tensor):
            return backend.name != REFERENCE
    return False


def _falling_back(op: str, backend: Backend, tensor: Tensor) -> Callable:
    """``backend.fn``; if it raises RuntimeError, disables it and reruns the call on the next one."""
    def call(*args, **kwargs):
        try:
            return backend.fn(*args, **kwargs)
        except RuntimeError as error:
            _disabled.add((op, backend.name))
            logger.warning('%s: backend %r failed (%s); disabled, falling back', op, backend.name, error)
            return resolve(op, tensor)(*args, **kwargs)
    return call
