"""Old module paths, kept importable after the move into subpackages.

``import lshcore.selector`` (and ``from lshcore.selector import ActiveSelector``) give
the very module object now at ``lshcore.training.selector``: same classes, same globals.
A meta-path finder resolves the old names on first import only, so nothing here
costs anything for code that uses the new paths.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import types
from collections.abc import Sequence

__all__ = ["MOVED", "install"]

#: old module path -> the module it now lives in
MOVED: dict[str, str] = {
    "lshcore.backend": "lshcore.registry.catalog",
    "lshcore.catalog": "lshcore.registry.catalog",
    "lshcore.hookspecs": "lshcore.registry.hookspecs",
    "lshcore.validation": "lshcore.core.validation",
    "lshcore.fileformat": "lshcore.core.fileformat",
    "lshcore.family": "lshcore.hashing.base",
    "lshcore.family_projection": "lshcore.hashing.projection",
    "lshcore.family_wta": "lshcore.hashing.wta",
    "lshcore.family_minhash": "lshcore.hashing.minhash",
    "lshcore.mips": "lshcore.hashing.mips",
    "lshcore.tables": "lshcore.search.tables",
    "lshcore.index": "lshcore.search.index",
    "lshcore.selector": "lshcore.training.selector",
    "lshcore.schedule": "lshcore.training.schedule",
    "lshcore.layer": "lshcore.training.layer",
    "lshcore.model": "lshcore.training.model",
    "lshcore.optim": "lshcore.training.optim",
    "lshcore.engine": "lshcore.training.engine",
    "lshcore.datasets": "lshcore.data.datasets",
    "lshcore.cli_plugins": "lshcore.cli.plugins",
    "lshcore.cli_index": "lshcore.cli.index",
    "lshcore.cli_train": "lshcore.cli.train",
    "lshcore.memory.cli": "lshcore.cli.memory",
    "lshcore.memory.keras": "lshcore.memory.tensorflow",
    "lshcore.memory.gluon": "lshcore.memory.mxnet",
}


class _MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds an old module path and loads it as the module at its new path."""

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: types.ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in MOVED:
            return None
        return importlib.machinery.ModuleSpec(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        module = importlib.import_module(MOVED[spec.name])
        # the import system overwrites __spec__ of whatever we return: keep the real one
        spec.loader_state = module.__spec__
        return module

    def exec_module(self, module: types.ModuleType) -> None:
        # restore the real spec (the module already ran at its new path)
        module.__spec__ = module.__spec__.loader_state if module.__spec__ else None


def install() -> None:
    """Put the finder on ``sys.meta_path`` once."""
    if not any(isinstance(f, _MovedModuleFinder) for f in sys.meta_path):
        sys.meta_path.append(_MovedModuleFinder())
