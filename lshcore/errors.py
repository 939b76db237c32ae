"""The exceptions lshcore raises.

Every error derives from :class:`LSHError`; each subclass also derives from the
built-in exception a caller would naturally catch (``ValueError``, ``LookupError``,
``ImportError``, ``RuntimeError``).
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = [
    "LSHError",
    "ConfigError",
    "InputError",
    "UnknownNameError",
    "BackendUnavailableError",
    "PluginError",
    "FileFormatError",
    "DataError",
    "NotFittedError",
]


class LSHError(Exception):
    """Base class of every error raised by lshcore."""


class ConfigError(LSHError, ValueError):
    """A parameter is out of its allowed range or inconsistent with another."""


class InputError(LSHError, ValueError):
    """An array argument has the wrong shape, dtype, or holds non-finite values."""


class UnknownNameError(LSHError, LookupError):
    """A name (family, transform, backend, policy, ...) is not registered."""

    def __init__(self, kind: str, name: str, known: Iterable[str]):
        self.kind = kind
        self.name = name
        self.known = sorted(known)
        listed = ", ".join(repr(k) for k in self.known) or "(none)"
        plural = kind[:-1] + "ies" if kind.endswith("y") else kind + "s"  # "hash families"
        super().__init__(f"unknown {kind} {name!r}; known {plural}: {listed}")

    def __str__(self) -> str:  # LookupError would quote the message otherwise
        return str(self.args[0])


class BackendUnavailableError(LSHError, ImportError):
    """A backend is registered but cannot run here (missing package or device)."""


class PluginError(LSHError, RuntimeError):
    """A plugin failed to load, or registered a name that is already taken."""


class FileFormatError(LSHError, ValueError):
    """A file is not an lshcore file, is truncated or corrupt, or has an unknown version."""


class DataError(LSHError, ValueError):
    """A dataset file is missing or malformed (the message names the file and line)."""


class NotFittedError(LSHError, RuntimeError):
    """An operation needs state (data, a fitted transform) that does not exist yet."""
