"""Backend choice of each op: the model calls ``ops.na2d`` etc. and never names a backend.

Each op has an explicit priority list of backends, each with an availability check on the
input tensor (device, dtype); the first available one runs. A backend is a differentiable
callable (the references, test doubles) or, for the ops registered with ``torch.library``
(:mod:`ops.library`), a :class:`Kernel`: a forward and a backward that run below autograd.

Forcing: :func:`use_backend` forces a backend for one op or for every op, in the calling
thread only (a forward in another thread keeps its own choice); ``A2MAMBA_OPS_BACKEND`` sets
a process default, ``name`` for every op or ``op=name,op=name`` per op. A forced backend that
cannot serve a call raises instead of silently running another.

Failures: a kernel that cannot be built or loaded here (:class:`KernelUnavailable`, a Triton
compile error, a CUDA binary without code for this GPU) is disabled for the process with one
warning and the next backend runs. Any other error (out of memory, bad arguments) propagates:
it would fail the same way, more slowly, on the next backend.
"""
import contextlib
import logging
import os
import threading
from typing import Callable, Dict, Iterator, List, NamedTuple, Optional, Tuple

from torch import Tensor

logger = logging.getLogger('a2mamba.ops')

BACKEND_ENV = 'A2MAMBA_OPS_BACKEND'
REFERENCE = 'reference'
_EVERY_OP = '*'


class KernelUnavailable(RuntimeError):
    """A fast kernel cannot run in this process (not built, not importable, no code for this GPU)."""


class Kernel(NamedTuple):
    """A kernel pair for a ``torch.library`` op: ``forward`` returns the op's outputs (plus what
    ``backward`` needs, see :mod:`ops.library`), ``backward`` returns the input gradients."""
    forward: Callable
    backward: Callable


class Backend(NamedTuple):
    name: str
    fn: Callable  # a differentiable callable, or a Kernel
    available: Callable[[Tensor], bool]

    @property
    def is_kernel(self) -> bool:
        return isinstance(self.fn, Kernel)


_REGISTRY: Dict[str, List[Backend]] = {}
_disabled: set = set()  # (op, backend) pairs that cannot run in this process
_warned: set = set()
_local = threading.local()


def register_backend(op: str, name: str, fn: Callable, available: Callable[[Tensor], bool],
                     first: bool = True) -> None:
    """Adds (or replaces) backend ``name`` of ``op``; ``first=True`` puts it ahead of the others."""
    unregister_backend(op, name)
    entries = _REGISTRY.setdefault(op, [])
    entries.insert(0 if first else len(entries), Backend(name, fn, available))


def unregister_backend(op: str, name: str) -> None:
    """Removes backend ``name`` of ``op`` (no error if it is not registered)."""
    if op in _REGISTRY:
        _REGISTRY[op][:] = [b for b in _REGISTRY[op] if b.name != name]


def backends(op: str) -> List[str]:
    """Names of the backends of ``op``, in priority order."""
    if op not in _REGISTRY:
        raise ValueError(f'unknown op {op!r}; ops: {sorted(_REGISTRY)}')
    return [b.name for b in _REGISTRY[op]]


def _forced_stack() -> List[Tuple[Optional[str], Optional[str]]]:
    if not hasattr(_local, 'forced'):
        _local.forced = []
    return _local.forced


def _env_choice(op: str) -> Optional[str]:
    value = os.environ.get(BACKEND_ENV, '').strip()
    if not value or value == 'auto':
        return None
    if '=' not in value:
        return value
    choices = dict(item.split('=', 1) for item in value.split(',') if '=' in item)
    return choices.get(op) or choices.get(_EVERY_OP)


def forced_backend(op: str = _EVERY_OP) -> Optional[str]:
    """The backend forced for ``op`` in this thread (innermost :func:`use_backend`), else by
    ``A2MAMBA_OPS_BACKEND``; ``None`` when the choice is automatic."""
    for forced_op, name in reversed(_forced_stack()):
        if forced_op in (op, None):
            return name
    return _env_choice(op)


@contextlib.contextmanager
def use_backend(name: Optional[str], op: Optional[str] = None) -> Iterator[None]:
    """Forces backend ``name`` (``None`` or ``'auto'``: automatic) for ``op``, or for every op
    when ``op`` is ``None``, inside the block and in this thread only."""
    if op is not None:
        backends(op)  # validates the op name
    stack = _forced_stack()
    stack.append((op, None if name == 'auto' else name))
    try:
        yield
    finally:
        stack.pop()


def resolve(op: str, tensor: Tensor) -> Backend:
    """The backend of ``op`` that serves ``tensor``."""
    candidates = _REGISTRY[op]
    name = forced_backend(op)
    if name:
        for backend in candidates:
            if backend.name == name:
                if not backend.available(tensor):
                    raise RuntimeError(f'backend {name!r} of {op} cannot run on {tensor.device} {tensor.dtype}; '
                                       f'unset {BACKEND_ENV} / use_backend or pick one of {backends(op)}')
                return backend
        raise ValueError(f'forced backend {name!r}: {op} has backends {backends(op)}')
    for backend in candidates:
        if (op, backend.name) in _disabled or not backend.available(tensor):
            continue
        if backend.name == REFERENCE and tensor.device.type != 'cpu' and op not in _warned:
            _warned.add(op)
            logger.warning('%s: no fast kernel available on %s, running the PyTorch reference (slow, '
                           'memory-hungry); backends: %s', op, tensor.device, backends(op))
        return backend
    raise RuntimeError(f'no backend of {op} can run on {tensor.device} {tensor.dtype}')


def disable(op: str, name: str) -> None:
    """Never picks backend ``name`` of ``op`` again in this process (benchmarks compare paths)."""
    if name not in backends(op):
        raise ValueError(f'{op} has no backend {name!r}; it has {backends(op)}')
    _disabled.add((op, name))


def uses_reference(op: str, tensor: Tensor) -> bool:
    """Whether ``op`` on ``tensor`` would run the PyTorch reference."""
    return resolve(op, tensor).name == REFERENCE


def _cannot_run_here(error: BaseException) -> bool:
    if isinstance(error, KernelUnavailable):
        return True
    if type(error).__module__.startswith('triton') and type(error).__name__ in ('CompilationError', 'OutOfResources'):
        return True
    return isinstance(error, RuntimeError) and 'no kernel image is available' in str(error)


def call(op: str, tensor: Tensor, run: Callable[[Backend], object]) -> object:
    """``run(backend)`` with the backend of ``op`` for ``tensor``; a kernel that cannot run in this
    process is disabled (one warning) and the call is retried on the next backend."""
    while True:
        backend = resolve(op, tensor)
        try:
            return run(backend)
        except Exception as error:
            if not _cannot_run_here(error) or forced_backend(op) or backend.name == REFERENCE:
                raise
            _disabled.add((op, backend.name))
            logger.warning('%s: backend %r cannot run here (%s: %s); disabled for this process, using the next '
                           'of %s', op, backend.name, type(error).__name__, error, backends(op))
