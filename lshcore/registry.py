"""The plugin registry: built-in and third-party families, transforms and backends.

Built-ins (:mod:`lshcore.plugins.builtin`) are registered through the same hooks as
third-party plugins, which come from the entry-point group ``lshcore`` and are loaded
lazily, once, on the first lookup. ``LSHCORE_DISABLE_PLUGIN_AUTOLOAD=1`` skips the
entry points (the built-ins still load).
"""

from __future__ import annotations

import importlib
import os
import threading
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

import pluggy

from lshcore import hookspecs
from lshcore.errors import PluginError, UnknownNameError

__all__ = [
    "Registration",
    "plugin_manager",
    "register_plugin",
    "lookup",
    "registrations",
    "reset",
]

KINDS = {
    "hash family": "lshcore_register_hash_families",
    "transform": "lshcore_register_transforms",
    "backend": "lshcore_register_backends",
}
AUTOLOAD_ENV = "LSHCORE_DISABLE_PLUGIN_AUTOLOAD"
BUILTIN_PLUGINS = ("lshcore.plugins.builtin",)


@dataclass(frozen=True)
class Registration:
    """One registered name: what it is and which plugin provided it."""

    kind: str
    name: str
    obj: Any
    plugin: str


class _Registry:
    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        self.pm.add_hookspecs(hookspecs)
        self.loaded = False
        self.entries: dict[str, dict[str, Registration]] = {kind: {} for kind in KINDS}

    def load(self) -> None:
        with self.lock:
            if self.loaded:
                return
            for module_name in BUILTIN_PLUGINS:
                module = importlib.import_module(module_name)
                if self.pm.get_plugin(module_name) is None:
                    self.pm.register(module, name=module_name)
            if os.environ.get(AUTOLOAD_ENV, "") not in ("1", "true", "yes"):
                for ep in entry_points(group=hookspecs.PROJECT_NAME):
                    if self.pm.get_plugin(ep.name) is not None:
                        continue
                    try:
                        plugin = ep.load()
                    except Exception as exc:
                        raise PluginError(
                            f"plugin {ep.name!r} (entry point {ep.value!r}) failed to load: "
                            f"{type(exc).__name__}: {exc}"
                        ) from exc
                    self.pm.register(plugin, name=ep.name)
            self.loaded = True
            for name, plugin in self.pm.list_name_plugin():
                self._collect(name, plugin)

    def _collect(self, plugin_name: str, plugin: object) -> None:
        for kind, hook_name in KINDS.items():
            hook = getattr(plugin, hook_name, None)
            if hook is None:
                continue

            def register(name: str, obj: Any, _kind: str = kind) -> None:
                self._add(Registration(_kind, name, obj, plugin_name))

            try:
                hook(register=register)
            except PluginError:
                raise
            except Exception as exc:
                raise PluginError(
                    f"plugin {plugin_name!r} raised in {hook_name}: {type(exc).__name__}: {exc}"
                ) from exc

    def _add(self, reg: Registration) -> None:
        if not isinstance(reg.name, str) or not reg.name:
            raise PluginError(
                f"plugin {reg.plugin!r} registered a {reg.kind} with an invalid name {reg.name!r}"
            )
        table = self.entries[reg.kind]
        if reg.name in table:
            raise PluginError(
                f"plugin {reg.plugin!r} registered {reg.kind} {reg.name!r}, "
                f"which plugin {table[reg.name].plugin!r} already registered"
            )
        table[reg.name] = reg

    def register_plugin(self, plugin: object, name: str | None = None) -> str:
        with self.lock:
            self.load()
            plugin_name = name or getattr(plugin, "__name__", None) or repr(plugin)
            if self.pm.get_plugin(plugin_name) is not None:
                raise PluginError(f"a plugin named {plugin_name!r} is already registered")
            before = {kind: dict(table) for kind, table in self.entries.items()}
            self.pm.register(plugin, name=plugin_name)
            try:
                self._collect(plugin_name, plugin)
            except Exception:
                # leave the registry as it was
                self.entries = before
                self.pm.unregister(name=plugin_name)
                raise
            return plugin_name

    def unregister_plugin(self, name: str) -> None:
        with self.lock:
            self.pm.unregister(name=name)
            for table in self.entries.values():
                for key in [k for k, reg in table.items() if reg.plugin == name]:
                    del table[key]


_REGISTRY = _Registry()


def plugin_manager() -> pluggy.PluginManager:
    """The pluggy PluginManager (project name ``lshcore``), with plugins loaded."""
    _REGISTRY.load()
    return _REGISTRY.pm


def register_plugin(plugin: object, name: str | None = None) -> str:
    """Register a plugin object or module at run time; returns the name it was given."""
    return _REGISTRY.register_plugin(plugin, name)


def unregister_plugin(name: str) -> None:
    """Remove a plugin registered with :func:`register_plugin` and everything it registered."""
    _REGISTRY.unregister_plugin(name)


def registrations(kind: str) -> dict[str, Registration]:
    """All registrations of one kind ("hash family", "transform" or "backend")."""
    _REGISTRY.load()
    return dict(_REGISTRY.entries[kind])


def lookup(kind: str, name: str) -> Any:
    """The object registered under ``name``; UnknownNameError lists the known names."""
    table = registrations(kind)
    if not isinstance(name, str) or name not in table:
        raise UnknownNameError(kind, str(name), table)
    return table[name].obj


def reset() -> None:
    """Forget every plugin and load again on next use (for tests)."""
    global _REGISTRY
    _REGISTRY = _Registry()
