"""lshcore: hashing-based deep learning.

Locality-sensitive hash families, tables and an index behind framework-neutral
interfaces; hashed sparse layers that compute only the neurons LSH selects; an LSH
one-shot memory. ``import lshcore`` imports no deep-learning framework and no numba.
"""

from __future__ import annotations

import importlib
from typing import Any

from lshcore.backend import Backend, backends, get_backend, to_numpy
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
from lshcore.family import HashFamily, Transform
from lshcore.hookspecs import hookimpl, hookspec
from lshcore.registry import plugin_manager, register_plugin, unregister_plugin

__version__ = "0.1.0"

# Heavier public names, imported on first use so that `import lshcore` stays light.
_LAZY = {
    "families": "lshcore.catalog",
    "transforms": "lshcore.catalog",
    "hash_family": "lshcore.catalog",
    "transform": "lshcore.catalog",
    "LSHIndex": "lshcore.index",
    "IndexParams": "lshcore.index",
    "LSHTables": "lshcore.tables",
    "load_dataset": "lshcore.datasets",
    "ActiveSelector": "lshcore.selector",
    "HashedLayer": "lshcore.layer",
    "DenseLayer": "lshcore.layer",
    "Model": "lshcore.model",
    "Trainer": "lshcore.engine",
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
    "get_backend",
    "hookimpl",
    "hookspec",
    "plugin_manager",
    "register_plugin",
    "to_numpy",
    "unregister_plugin",
    *_LAZY,
]
