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
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np

from lshcore.core.contract import KERNEL_NAMES, Kernels, declared_kernels
from lshcore.errors import BackendUnavailableError, PluginError

__all__ = [
    "Backend",
    "CupyBackend",
    "Transfer",
    "TransferLog",
    "count_transfers",
    "device_kind",
    "is_device_array",
    "to_numpy",
]


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

    @property
    def on_device(self) -> bool:
        """Whether this backend's arrays live on a device (``host_arrays`` False): then
        every copy between host and device goes through :meth:`to_device` /
        :meth:`to_host`, which count it (:func:`count_transfers`)."""
        return not self.host_arrays

    def asarray(self, x: Any, dtype: Any = None) -> Any:
        """``x`` as an array of this backend (on a device backend a counted
        host-to-device copy, tag ``"asarray"``)."""
        if self.on_device:
            return self.to_device(x, "asarray", dtype=dtype)
        return self.xp.asarray(x, dtype=dtype)

    def to_numpy(self, x: Any, tag: str = "to_numpy") -> np.ndarray:
        """``x`` as a NumPy array (copies from the GPU when needed; counted on a device
        backend, see :meth:`to_host`)."""
        return self.to_host(x, tag)

    def to_device(self, x: Any, tag: str, dtype: Any = None) -> Any:
        """``x`` (host or device) as a C-contiguous array of this backend. On a device
        backend this is the one host-to-device path, recorded under ``tag`` unless ``x``
        is already a device array; elsewhere ``np.ascontiguousarray``."""
        if not self.on_device:
            return np.ascontiguousarray(x, dtype=dtype)
        xp = self.xp
        if not is_device_array(x):
            _record("h2d", tag, x)
        return xp.ascontiguousarray(xp.asarray(x, dtype=dtype))

    def to_host(self, x: Any, tag: str) -> np.ndarray:
        """``x`` as a NumPy array. On a device backend this is the one device-to-host
        path, recorded under ``tag``: under the simulator the "device" arrays are NumPy
        arrays and the copy is recorded all the same (the code path is the device's)."""
        if self.on_device and type(x) not in (int, float, bool):  # np.float64 is a float
            _record("d2h", tag, x)
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


@dataclass(frozen=True)
class Transfer:
    """One copy between host and device: ``direction`` ``"h2d"`` or ``"d2h"``, the
    caller's ``tag`` (what crossed: ``"input"``, ``"loss"``, ...), its size in bytes."""

    direction: str
    tag: str
    nbytes: int
    shape: tuple[int, ...]


@dataclass
class TransferLog:
    """The copies recorded while a :func:`count_transfers` block ran."""

    transfers: list[Transfer] = field(default_factory=list)

    def _pick(self, tag: str | None, direction: str | None) -> list[Transfer]:
        return [
            t for t in self.transfers if tag in (None, t.tag) and direction in (None, t.direction)
        ]

    def tags(self, direction: str | None = None) -> set[str]:
        """The tags recorded (in one direction, or both)."""
        return {t.tag for t in self._pick(None, direction)}

    def nbytes(self, tag: str | None = None, direction: str | None = None) -> int:
        """Bytes copied (of one tag and/or direction, or all)."""
        return sum(t.nbytes for t in self._pick(tag, direction))

    def count(self, tag: str | None = None, direction: str | None = None) -> int:
        """Copies made (of one tag and/or direction, or all)."""
        return len(self._pick(tag, direction))


_LOGS: list[TransferLog] = []
_LOGS_LOCK = threading.Lock()


def _record(direction: str, tag: str, x: Any) -> None:
    if not _LOGS:
        return
    shape = tuple(int(n) for n in getattr(x, "shape", ()))
    nbytes = getattr(x, "nbytes", None)
    if nbytes is None:
        nbytes = np.asarray(x).nbytes  # a list or scalar from the host
    item = Transfer(direction, tag, int(nbytes), shape)
    with _LOGS_LOCK:
        for log in _LOGS:
            log.transfers.append(item)


@contextmanager
def count_transfers() -> Iterator[TransferLog]:
    """Record every host/device copy made through a device backend's
    :meth:`Backend.to_device` / :meth:`Backend.to_host` while the block runs (every
    thread)::

        with count_transfers() as log:
            model.train_step(x, y, wss, counts)
        assert "weight" not in log.tags()
    """
    log = TransferLog()
    with _LOGS_LOCK:
        _LOGS.append(log)
    try:
        yield log
    finally:
        with _LOGS_LOCK:
            _LOGS.remove(log)


#: DLPack device types (``__dlpack_device__()[0]``) of CUDA memory the GPU backend can
#: work on: kDLCUDA (2) and kDLCUDAManaged (13); host memory: kDLCPU (1), kDLCUDAHost (3)
_DLPACK_CUDA = (2, 13)
_DLPACK_CPU = (1, 3)


def device_kind(x: Any) -> str | None:
    """Where the array or tensor ``x`` lives: ``"cuda"``, ``"cpu"``, or None (not an
    array, or memory the GPU backend does not support: ROCm, Metal, ...).

    Imports nothing: asks the object (``__dlpack_device__``, ``__cuda_array_interface__``)
    and, for TensorFlow and MXNet tensors, their device attribute (recognized by the
    type's module name, as einops does)."""
    if isinstance(x, np.ndarray):
        return "cpu"
    try:
        dev = getattr(x, "__dlpack_device__", None)
        if callable(dev):
            kind = int(dev()[0])
            if kind in _DLPACK_CUDA:
                return "cuda"
            return "cpu" if kind in _DLPACK_CPU else None
    except Exception:  # a framework that raises here: try the other signs
        pass
    try:
        if hasattr(x, "__cuda_array_interface__"):
            return "cuda"
    except Exception:  # some torch versions raise on a CPU tensor's attribute lookup
        pass
    root = type(x).__module__.split(".")[0]
    try:
        if root == "tensorflow":
            name = str(getattr(x, "device", "") or "")
            return "cuda" if ":GPU:" in name.upper() else "cpu"
        if root == "mxnet":
            ctx = getattr(x, "ctx", None) or getattr(x, "context", None)
            dtype = str(getattr(ctx, "device_type", "cpu"))
            return "cuda" if dtype == "gpu" else "cpu" if dtype.startswith("cpu") else None
    except Exception:
        return None
    if hasattr(x, "__array_interface__") or hasattr(x, "__array__"):
        return "cpu"
    return None


def is_device_array(x: Any) -> bool:
    """Whether ``x`` lives on a CUDA device (CuPy array, torch/TensorFlow/MXNet CUDA
    tensor, numba device array: see :func:`device_kind`); imports nothing."""
    return device_kind(x) == "cuda"


def to_numpy(x: Any) -> np.ndarray:
    """Any array (NumPy, CuPy, a CUDA tensor, or anything with ``__array__``) as NumPy."""
    if hasattr(x, "get") and type(x).__module__.split(".")[0] == "cupy":
        return x.get()
    if type(x).__module__.split(".")[0] == "torch" and is_device_array(x):
        return x.detach().cpu().numpy()
    return np.asarray(x)
