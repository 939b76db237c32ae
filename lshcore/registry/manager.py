"""The plugin registry: built-in and third-party families, transforms and backends.

Built-ins (:mod:`lshcore.plugins.builtin`) are registered through the same hooks as
third-party plugins, which come from the entry-point group ``lshcore`` and are loaded
lazily, once, on the first lookup. ``LSHCORE_DISABLE_PLUGIN_AUTOLOAD=1`` skips the
entry points (the built-ins still load).

Loading is all-or-nothing: a plugin that fails to import, raises in a hook, registers
a name that is already taken or an object of the wrong type raises :class:`PluginError`
naming the plugin, and the registry keeps the state it had before.
"""

from __future__ import annotations

import importlib
import os
import threading
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import Any

import pluggy

from lshcore.core.backend import Backend
from lshcore.errors import PluginError, UnknownNameError
from lshcore.hashing.base import HashFamily, Transform
from lshcore.registry import hookspecs

__all__ = [
    "Registration",
    "KINDS",
    "AUTOLOAD_ENV",
    "plugin_manager",
    "register_plugin",
    "unregister_plugin",
    "plugins",
    "lookup",
    "registrations",
    "autoload_enabled",
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
    """One registered name: what it is, which plugin provided it, and where that came from.

    ``origin`` is ``"built-in"``, ``"entry point <value> (<distribution> <version>)"`` or
    ``"run time"``.
    """

    kind: str
    name: str
    obj: Any
    plugin: str
    origin: str = ""


def autoload_enabled() -> bool:
    """False when ``$LSHCORE_DISABLE_PLUGIN_AUTOLOAD`` is set to 1/true/yes."""
    return os.environ.get(AUTOLOAD_ENV, "").strip().lower() not in ("1", "true", "yes")


def _plugin_entry_points() -> list[EntryPoint]:
    """The entry points of group ``lshcore`` (one per distribution and name)."""
    return list(entry_points(group=hookspecs.PROJECT_NAME))


def _entry_point_origin(ep: EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    where = f" ({dist.name} {dist.version})" if dist is not None else ""
    return f"entry point {ep.value!r}{where}"


def _new_plugin_manager() -> pluggy.PluginManager:
    pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    return pm


def _check_object(kind: str, name: str, obj: Any, plugin: str) -> None:
    """PluginError unless ``obj`` is what a ``kind`` registration must be."""
    if kind == "hash family":
        ok, expected = (
            isinstance(obj, type) and issubclass(obj, HashFamily),
            "a HashFamily subclass",
        )
    elif kind == "transform":
        ok, expected = isinstance(obj, type) and issubclass(obj, Transform), "a Transform subclass"
    else:
        ok, expected = isinstance(obj, Backend), "a Backend instance"
    if not ok:
        raise PluginError(
            f"plugin {plugin!r} registered {kind} {name!r} as {obj!r}, which is not {expected}"
        )
    if kind == "backend":
        # read from the module's source, not imported: no numba or cupy at registration
        try:
            missing = obj.missing_kernels()
        except PluginError as exc:
            raise PluginError(f"plugin {plugin!r} registered backend {name!r}: {exc}") from exc
        if missing:
            raise PluginError(
                f"plugin {plugin!r} registered backend {name!r} whose kernel module "
                f"{obj.kernel_module!r} lacks kernel(s) {', '.join(missing)} "
                f"(the contract is lshcore.core.contract.Kernels)"
            )


class _Registry:
    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.pm = _new_plugin_manager()
        self.loaded = False
        self.entries: dict[str, dict[str, Registration]] = {kind: {} for kind in KINDS}
        self.origins: dict[str, str] = {}

    # -- loading ----------------------------------------------------------------------
    def load(self) -> None:
        """Register the built-ins and (unless disabled) the entry points, all or nothing."""
        with self.lock:
            if self.loaded:
                return
            pm = _new_plugin_manager()
            entries: dict[str, dict[str, Registration]] = {kind: {} for kind in KINDS}
            origins: dict[str, str] = {}
            found: list[tuple[str, object, str]] = []
            for module_name in BUILTIN_PLUGINS:
                found.append((module_name, importlib.import_module(module_name), "built-in"))
            if autoload_enabled():
                for ep in _plugin_entry_points():
                    origin = _entry_point_origin(ep)
                    taken = [f for f in found if f[0] == ep.name]
                    if taken:
                        raise PluginError(
                            f"plugin {ep.name!r} from {origin} has the same name as the plugin "
                            f"from {taken[0][2]}; rename one of the entry points"
                        )
                    try:
                        plugin = ep.load()
                    except Exception as exc:
                        raise PluginError(
                            f"plugin {ep.name!r} ({origin}) failed to load: "
                            f"{type(exc).__name__}: {exc}"
                        ) from exc
                    found.append((ep.name, plugin, origin))
            for name, plugin, origin in found:
                self._register(pm, name, plugin)
                origins[name] = origin
                self._collect(pm, entries, name, origin)
            # commit only once everything succeeded
            self.pm, self.entries, self.origins, self.loaded = pm, entries, origins, True

    @staticmethod
    def _register(pm: pluggy.PluginManager, name: str, plugin: object) -> None:
        """Add ``plugin`` to ``pm``; PluginError for a clash or an unknown/misspelled hook."""
        if pm.has_plugin(name):
            raise PluginError(f"a plugin named {name!r} is already registered")
        if pm.is_registered(plugin):
            raise PluginError(
                f"plugin {name!r} is already registered under the name {pm.get_name(plugin)!r}"
            )
        try:
            pm.register(plugin, name=name)
        except Exception as exc:  # pluggy.PluginValidationError, ValueError
            raise PluginError(f"plugin {name!r} is not a valid lshcore plugin: {exc}") from exc
        callers = pm.get_hookcallers(plugin) or []
        unknown = sorted(c.name for c in callers if not c.has_spec())
        if unknown or not callers:
            pm.unregister(name=name)
            detail = (
                f"implements unknown hook(s) {', '.join(unknown)}"
                if unknown
                else "has no hook implementation (did you forget @lshcore.hookimpl?)"
            )
            raise PluginError(
                f"plugin {name!r} {detail}; the hooks are: {', '.join(sorted(KINDS.values()))}"
            )

    def _collect(
        self,
        pm: pluggy.PluginManager,
        entries: dict[str, dict[str, Registration]],
        plugin_name: str,
        origin: str,
    ) -> None:
        """Call the hooks of one plugin, adding what it registers to ``entries``."""
        for kind, hook_name in KINDS.items():
            caller = getattr(pm.hook, hook_name)
            for impl in caller.get_hookimpls():
                if impl.plugin_name != plugin_name or impl.hookwrapper or impl.wrapper:
                    continue
                open_ = [True]

                def register(
                    name: str, obj: Any, _kind: str = kind, _open: list[bool] = open_
                ) -> None:
                    if not _open[0]:
                        raise PluginError(
                            f"plugin {plugin_name!r} called register() after its hook returned"
                        )
                    self._add(entries, Registration(_kind, name, obj, plugin_name, origin))

                kwargs = {"register": register}
                try:
                    impl.function(*[kwargs[arg] for arg in impl.argnames])
                except PluginError:
                    raise
                except Exception as exc:
                    raise PluginError(
                        f"plugin {plugin_name!r} raised in {hook_name}: {type(exc).__name__}: {exc}"
                    ) from exc
                finally:
                    open_[0] = False

    @staticmethod
    def _add(entries: dict[str, dict[str, Registration]], reg: Registration) -> None:
        if not isinstance(reg.name, str) or not reg.name.strip():
            raise PluginError(
                f"plugin {reg.plugin!r} registered a {reg.kind} with an invalid name {reg.name!r}"
            )
        table = entries[reg.kind]
        if reg.name in table:
            raise PluginError(
                f"plugin {reg.plugin!r} registered {reg.kind} {reg.name!r}, "
                f"which plugin {table[reg.name].plugin!r} already registered"
            )
        _check_object(reg.kind, reg.name, reg.obj, reg.plugin)
        table[reg.name] = reg

    # -- run-time plugins -------------------------------------------------------------
    def register_plugin(self, plugin: object, name: str | None = None) -> str:
        with self.lock:
            self.load()
            plugin_name = name or getattr(plugin, "__name__", None) or repr(plugin)
            entries = {kind: dict(table) for kind, table in self.entries.items()}
            self._register(self.pm, plugin_name, plugin)
            try:
                self._collect(self.pm, entries, plugin_name, "run time")
            except BaseException:
                self.pm.unregister(name=plugin_name)  # leave the registry as it was
                raise
            self.entries = entries
            self.origins[plugin_name] = "run time"
            return plugin_name

    def unregister_plugin(self, name: str) -> None:
        with self.lock:
            self.load()
            if not self.pm.has_plugin(name):
                raise UnknownNameError("plugin", name, [n for n, _ in self.pm.list_name_plugin()])
            self.pm.unregister(name=name)
            self.origins.pop(name, None)
            self.entries = {
                kind: {key: reg for key, reg in table.items() if reg.plugin != name}
                for kind, table in self.entries.items()
            }


_REGISTRY = _Registry()


def plugin_manager() -> pluggy.PluginManager:
    """The pluggy PluginManager (project name ``lshcore``), with plugins loaded."""
    _REGISTRY.load()
    return _REGISTRY.pm


def register_plugin(plugin: object, name: str | None = None) -> str:
    """Register a plugin module or object at run time; returns the name it was given.

    All or nothing: PluginError (naming the plugin) when it raises, registers a taken
    name or a wrong object; the registry is then unchanged.
    """
    return _REGISTRY.register_plugin(plugin, name)


def unregister_plugin(name: str) -> None:
    """Remove a plugin by name, and everything it registered."""
    _REGISTRY.unregister_plugin(name)


def plugins() -> dict[str, str]:
    """Loaded plugin names mapped to where each came from (built-in, entry point, run time)."""
    _REGISTRY.load()
    return dict(_REGISTRY.origins)


def registrations(kind: str) -> dict[str, Registration]:
    """All registrations of one kind ("hash family", "transform" or "backend")."""
    if kind not in KINDS:
        raise UnknownNameError("registration kind", str(kind), KINDS)
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
