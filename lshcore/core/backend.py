"""Compute backends: an array namespace plus a kernels module.

``numpy`` is the reference and always usable; ``numba`` (fast CPU kernels, the
default when numba is installed) runs on NumPy arrays; ``cupy`` runs on a CUDA GPU and
is usable only when a device answers. Nothing here imports numba or cupy until a
backend is actually used.
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType
from typing import Any

import numpy as np

from lshcore.errors import BackendUnavailableError

__all__ = ["Backend", "CupyBackend", "to_numpy"]


class Backend:
    """A named backend: ``xp`` (array module) and ``kernels`` (a module of kernels).

    ``kernels`` falls back to the NumPy reference for any kernel the backend's module
    does not define, when the backend works on NumPy arrays (``host_arrays``).
    """

    def __init__(
        self,
        name: str,
        kernel_module: str,
        array_module: str = "numpy",
        requires: tuple[str, ...] = (),
        host_arrays: bool = True,
    ):
        self.name = name
        self.kernel_module = kernel_module
        self.array_module = array_module
        self.requires = requires
        self.host_arrays = host_arrays
        self._kernels: ModuleType | None = None
        self._available: bool | None = None
        self._reason = ""

    def available(self) -> bool:
        """Whether this backend can run here (packages installed, device present)."""
        if self._available is None:
            try:
                missing = [m for m in self.requires if importlib.util.find_spec(m) is None]
                if missing:
                    available, reason = False, f"package(s) not installed: {', '.join(missing)}"
                else:
                    available, reason = self._probe()
            except Exception as exc:  # a probe that raises means "not usable", never a crash
                available, reason = False, f"probe failed ({type(exc).__name__}: {exc})"
            self._available, self._reason = bool(available), str(reason)
        return self._available

    def _probe(self) -> tuple[bool, str]:
        return True, ""

    def why_unavailable(self) -> str:
        """A human-readable reason when :meth:`available` is False (else "")."""
        self.available()
        return self._reason

    def require(self) -> Backend:
        """Self, or BackendUnavailableError with the reason."""
        if not self.available():
            raise BackendUnavailableError(f"backend {self.name!r} is unavailable: {self._reason}")
        return self

    @property
    def xp(self) -> Any:
        """The array namespace (numpy or cupy)."""
        self.require()
        return importlib.import_module(self.array_module)

    @property
    def kernels(self) -> ModuleType:
        """The kernels module of this backend (imported on first use)."""
        if self._kernels is None:
            self.require()
            self._kernels = importlib.import_module(self.kernel_module)
        return self._kernels

    def kernel(self, name: str) -> Any:
        """One kernel by name, falling back to the NumPy reference on host backends."""
        fn = getattr(self.kernels, name, None)
        if fn is None and self.host_arrays:
            from lshcore.kernels import numpy_ref

            fn = getattr(numpy_ref, name, None)
        if fn is None:
            raise NotImplementedError(f"backend {self.name!r} has no kernel {name!r}")
        return fn

    def asarray(self, x: Any, dtype: Any = None) -> Any:
        """``x`` as an array of this backend."""
        return self.xp.asarray(x, dtype=dtype)

    def to_numpy(self, x: Any) -> np.ndarray:
        """``x`` as a NumPy array (copies from the GPU when needed)."""
        return to_numpy(x)

    def __repr__(self) -> str:
        return f"Backend({self.name!r})"


class CupyBackend(Backend):
    """The CuPy backend: usable only when a CUDA device answers."""

    def _probe(self) -> tuple[bool, str]:
        try:
            import cupy

            count = cupy.cuda.runtime.getDeviceCount()
            if count < 1:
                return False, "no CUDA device found"
            cupy.zeros(1).sum()  # a real launch: fails without a working driver
            return True, ""
        except Exception as exc:  # any failure means "no GPU" (cupy raises many kinds)
            return False, f"no usable CUDA device ({type(exc).__name__}: {exc})"


def to_numpy(x: Any) -> np.ndarray:
    """Any array (NumPy, CuPy, or anything with ``__array__``) as a NumPy array."""
    if hasattr(x, "get") and type(x).__module__.split(".")[0] == "cupy":
        return x.get()
    return np.asarray(x)
