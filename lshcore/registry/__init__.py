"""Plugins and names: the pluggy hook specs, the registry that loads plugins, and the
catalog that looks families, transforms and backends up by name.

Imports point one way: ``hookspecs`` <- ``manager`` <- ``catalog``. The registry API
(``lookup``, ``registrations``, ``register_plugin`` ...) lives in :mod:`.manager` and is
re-exported here, so ``lshcore.registry.lookup`` keeps working.
"""

from lshcore.registry.manager import (
    AUTOLOAD_ENV,
    BUILTIN_PLUGINS,
    KINDS,
    Registration,
    autoload_enabled,
    lookup,
    plugin_manager,
    plugins,
    register_plugin,
    registrations,
    reset,
    unregister_plugin,
)

__all__ = [
    "AUTOLOAD_ENV",
    "BUILTIN_PLUGINS",
    "KINDS",
    "Registration",
    "autoload_enabled",
    "lookup",
    "plugin_manager",
    "plugins",
    "register_plugin",
    "registrations",
    "reset",
    "unregister_plugin",
]
