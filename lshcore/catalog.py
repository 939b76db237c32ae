"""Looking up hash families and transforms by name, and the list of built-ins."""

from __future__ import annotations

from typing import Any

from lshcore import registry
from lshcore.errors import ConfigError
from lshcore.family import HashFamily, Transform
from lshcore.family_minhash import MinHash
from lshcore.family_projection import SRP, CrossPolytope, PStable, SparseSRP
from lshcore.family_wta import DWTA, WTA
from lshcore.mips import SignALSH, SimpleLSH

__all__ = [
    "families",
    "transforms",
    "hash_family",
    "transform",
    "family_class",
    "BUILTIN_FAMILIES",
    "BUILTIN_TRANSFORMS",
]


#: lshcore's own families and transforms, registered by ``lshcore.plugins.builtin``
BUILTIN_FAMILIES: list[type[HashFamily]] = [
    SRP,
    SparseSRP,
    CrossPolytope,
    PStable,
    WTA,
    DWTA,
    MinHash,
]
# lshcore.mips, not lshcore.transforms (a module would shadow transforms())
BUILTIN_TRANSFORMS: list[type[Transform]] = [SimpleLSH, SignALSH]


def families() -> list[str]:
    """Names of every registered hash family (built-in and plugins), sorted."""
    return sorted(registry.registrations("hash family"))


def transforms() -> list[str]:
    """Names of every registered MIPS transform, sorted."""
    return sorted(registry.registrations("transform"))


def family_class(name: str) -> type[HashFamily]:
    """The class registered under ``name``; UnknownNameError lists the known names."""
    cls: type[HashFamily] = registry.lookup("hash family", name)
    return cls


def hash_family(name: str, dim: int, k: int, l: int, seed: int = 0, **params: Any) -> HashFamily:  # noqa: E741
    """Construct the hash family ``name`` as ``cls(dim, k, l, seed=seed, **params)``."""
    cls = family_class(name)
    try:
        return cls(dim, k, l, seed=seed, **params)
    except TypeError as exc:  # an unknown keyword for this family
        raise ConfigError(f"hash family {name!r}: {exc}") from exc


def transform(name: str, dim: int, **params: Any) -> Transform:
    """Construct the MIPS transform ``name`` for vectors of size ``dim``."""
    cls: type[Transform] = registry.lookup("transform", name)
    try:
        return cls(dim, **params)
    except TypeError as exc:
        raise ConfigError(f"transform {name!r}: {exc}") from exc
