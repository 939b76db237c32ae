"""pluggy hook specifications of lshcore.

A plugin is a module (or object) with functions marked ``@lshcore.hookimpl`` and
named like the specs below. Each hook receives a ``register`` callback::

    @lshcore.hookimpl
    def lshcore_register_hash_families(register):
        register("my_family", MyFamily)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pluggy

PROJECT_NAME = "lshcore"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)

Register = Callable[[str, Any], None]


@hookspec
def lshcore_register_hash_families(register: Register) -> None:
    """Register hash families: ``register(name, cls)`` with ``cls`` a HashFamily subclass."""


@hookspec
def lshcore_register_transforms(register: Register) -> None:
    """Register MIPS transforms: ``register(name, cls)`` with ``cls`` a Transform subclass."""


@hookspec
def lshcore_register_backends(register: Register) -> None:
    """Register compute backends: ``register(name, backend)`` with a Backend instance."""
