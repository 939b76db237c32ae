"""Looking things up by name: hash families, MIPS transforms and compute backends.

The catalog sits above the registry (:mod:`lshcore.registry.manager`); the built-in
lists live with the built-in plugin (:mod:`lshcore.plugins.builtin`). ``Backend``,
``CupyBackend`` and ``to_numpy`` are re-exported so the old ``lshcore.backend`` path
keeps working.
"""

from __future__ import annotations

import os
from typing import Any

from lshcore.core.backend import Backend, CupyBackend, to_numpy
from lshcore.errors import ConfigError
from lshcore.hashing.base import HashFamily, Transform
from lshcore.registry import manager

__all__ = [
    "BACKEND_ENV",
    "Backend",
    "CupyBackend",
    "backends",
    "default_backend_name",
    "families",
    "family_class",
    "get_backend",
    "hash_family",
    "to_numpy",
    "transform",
    "transform_class",
    "transforms",
]

BACKEND_ENV = "LSHCORE_BACKEND"


def families() -> list[str]:
    """Names of every registered hash family (built-in and plugins), sorted."""
    return sorted(manager.registrations("hash family"))


def transforms() -> list[str]:
    """Names of every registered MIPS transform, sorted."""
    return sorted(manager.registrations("transform"))


def family_class(name: str) -> type[HashFamily]:
    """The class registered under ``name``; UnknownNameError lists the known names."""
    cls: type[HashFamily] = manager.lookup("hash family", name)
    return cls


def hash_family(name: str, dim: int, k: int, l: int, seed: int = 0, **params: Any) -> HashFamily:  # noqa: E741
    """Construct the hash family ``name`` as ``cls(dim, k, l, seed=seed, **params)``."""
    cls = family_class(name)
    try:
        return cls(dim, k, l, seed=seed, **params)
    except TypeError as exc:  # an unknown keyword for this family
        raise ConfigError(f"hash family {name!r}: {exc}") from exc


def transform_class(name: str) -> type[Transform]:
    """The MIPS transform class registered under ``name``; UnknownNameError lists the
    known names."""
    cls: type[Transform] = manager.lookup("transform", name)
    return cls


def transform(name: str, dim: int, **params: Any) -> Transform:
    """Construct the MIPS transform ``name`` for vectors of size ``dim``."""
    cls = transform_class(name)
    try:
        return cls(dim, **params)
    except TypeError as exc:
        raise ConfigError(f"transform {name!r}: {exc}") from exc


def backends(usable_only: bool = True) -> list[str]:
    """Names of the registered backends (only the usable ones by default)."""
    regs = manager.registrations("backend")
    return sorted(n for n, r in regs.items() if not usable_only or r.obj.available())


def default_backend_name() -> str:
    """``$LSHCORE_BACKEND`` if set, else ``numba`` when usable, else ``numpy``."""
    env = os.environ.get(BACKEND_ENV)
    if env:
        return env
    regs = manager.registrations("backend")
    if "numba" in regs and regs["numba"].obj.available():
        return "numba"
    return "numpy"


def get_backend(backend: str | Backend | None = None) -> Backend:
    """A usable backend by name (None means the default); UnknownNameError lists names."""
    if isinstance(backend, Backend):
        return backend.require()
    name = default_backend_name() if backend is None else backend
    obj: Backend = manager.lookup("backend", name)
    return obj.require()
