"""lshcore: hashing-based deep learning.

Locality-sensitive hash families, tables and an index behind framework-neutral
interfaces; hashed sparse layers that compute only the neurons LSH selects; an LSH
one-shot memory. ``import lshcore`` imports no deep-learning framework and no numba.
"""

from __future__ import annotations

import importlib
from typing import Any

from lshcore import _compat
from lshcore.core.backend import Backend, to_numpy
from lshcore.errors import (
    BackendUnavailableError,
    ConfigError,
    DataError,
    FileFormatError,
    InputError,
    LSHError,
    NotFittedError,
    PluginError,
    UnknownNameError,
)
from lshcore.hashing.base import HashFamily, Transform
from lshcore.registry.catalog import (
    backends,
    families,
    get_backend,
    hash_family,
    transform,
    transforms,
)
from lshcore.registry.hookspecs import hookimpl, hookspec
from lshcore.registry.manager import plugin_manager, register_plugin, unregister_plugin

__version__ = "0.1.0"

_compat.install()  # old module paths (lshcore.selector, ...) stay importable

# Heavier public names, imported on first use so that `import lshcore` stays light.
_LAZY = {
    "LSHIndex": "lshcore.search.index",
    "IndexParams": "lshcore.search.index",
    "LSHTables": "lshcore.search.tables",
    "load_dataset": "lshcore.data.datasets",
    "ActiveSelector": "lshcore.training.selector",
    "HashedLayer": "lshcore.training.layer",
    "DenseLayer": "lshcore.training.layer",
    "Model": "lshcore.training.model",
    "Trainer": "lshcore.training.engine",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'lshcore' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "Backend",
    "BackendUnavailableError",
    "ConfigError",
    "DataError",
    "FileFormatError",
    "HashFamily",
    "InputError",
    "LSHError",
    "NotFittedError",
    "PluginError",
    "Transform",
    "UnknownNameError",
    "backends",
    "families",
    "hash_family",
    "transform",
    "transforms",
    "get_backend",
    "hookimpl",
    "hookspec",
    "plugin_manager",
    "register_plugin",
    "to_numpy",
    "unregister_plugin",
    *_LAZY,
]
