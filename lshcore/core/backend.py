"""Compute backends: an array namespace plus a kernels module.

``numpy`` is the reference and always usable; ``numba`` (fast CPU kernels, the
default when numba is installed) runs on NumPy arrays; ``cupy`` runs on a CUDA GPU and
is usable only when a device answers. Nothing here imports numba or cupy until a
backend is actually used. Every kernel is called one way, ``backend.kernels.<name>``,
typed by the contract :class:`lshcore.core.contract.Kernels`.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any, cast

import numpy as np

from lshcore.core.contract import KERNEL_NAMES, Kernels, declared_kernels
from lshcore.errors import BackendUnavailableError, PluginError

__all__ = ["Backend", "CupyBackend", "is_device_array", "to_numpy"]


class Backend:
    """A named backend: ``xp`` (array module) and ``kernels`` (its kernel module).

    ``kernel_module`` must define every kernel of the contract
    (:data:`lshcore.core.contract.KERNEL_NAMES`); there is no fallback. Registration
    checks it (:meth:`missing_kernels`) without importing the module.
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
        self._kernels: Kernels | None = None
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

    def missing_kernels(self) -> list[str]:
        """Contract kernels that ``kernel_module`` does not declare (read without import)."""
        declared = declared_kernels(self.kernel_module)
        return [name for name in KERNEL_NAMES if name not in declared]

    @property
    def kernels(self) -> Kernels:
        """The kernel module of this backend (imported on first use), typed by the contract.

        PluginError when the imported module lacks a kernel it was checked to declare.
        """
        if self._kernels is None:
            self.require()
            module = importlib.import_module(self.kernel_module)
            missing = [n for n in KERNEL_NAMES if not callable(getattr(module, n, None))]
            if missing:
                raise PluginError(
                    f"backend {self.name!r}: kernel module {self.kernel_module!r} does not "
                    f"define kernel(s) {', '.join(missing)}"
                )
            self._kernels = cast(Kernels, module)
        return self._kernels

    def asarray(self, x: Any, dtype: Any = None) -> Any:
        """``x`` as an array of this backend."""
        return self.xp.asarray(x, dtype=dtype)

    def to_numpy(self, x: Any) -> np.ndarray:
        """``x`` as a NumPy array (copies from the GPU when needed)."""
        return to_numpy(x)

    def __repr__(self) -> str:
        return f"Backend({self.name!r})"


class CupyBackend(Backend):
    """The GPU backend (CuPy arrays, numba.cuda kernels): usable only when a CUDA device
    answers both to CuPy and to numba.cuda. Any exception while probing means "no GPU"."""

    def _probe(self) -> tuple[bool, str]:
        # imports inside: cupy and numba.cuda only when this backend is asked for
        try:
            import cupy

            count = cupy.cuda.runtime.getDeviceCount()
            if count < 1:
                return False, "no CUDA device found"
            cupy.zeros(1).sum()  # a real launch: fails without a working driver
        except Exception as exc:  # any failure means "no GPU" (cupy raises many kinds)
            return False, f"no usable CUDA device ({type(exc).__name__}: {exc})"
        try:
            from numba import cuda

            if not cuda.is_available():
                return False, (
                    "cupy sees a device but numba.cuda does not (install numba-cuda and the "
                    "CUDA NVVM libraries: see docs/gpu.md)"
                )
        except Exception as exc:
            return False, f"numba.cuda unusable ({type(exc).__name__}: {exc})"
        return True, ""


def is_device_array(x: Any) -> bool:
    """Whether ``x`` lives on a CUDA device (CuPy array, torch CUDA tensor, numba device
    array: anything exposing ``__cuda_array_interface__``); imports nothing."""
    try:
        return hasattr(x, "__cuda_array_interface__")
    except Exception:  # torch raises on a CPU tensor's attribute lookup
        return False


def to_numpy(x: Any) -> np.ndarray:
    """Any array (NumPy, CuPy, a CUDA tensor, or anything with ``__array__``) as NumPy."""
    if hasattr(x, "get") and type(x).__module__.split(".")[0] == "cupy":
        return x.get()
    if type(x).__module__.split(".")[0] == "torch" and is_device_array(x):
        return x.detach().cpu().numpy()
    return np.asarray(x)
