"""A CuPy stand-in strict about the host/device line, for tests without a GPU.

Under numba's CUDA simulator the GPU backend's "device" arrays are NumPy arrays, so a
NumPy call on a device array (``np.where(z, ...)``, ``np.asarray(weight)``) passes there
and fails only on a real device, where CuPy refuses implicit conversion. Here:

* :class:`StrictArray` wraps a NumPy array and behaves as a CuPy array does at the line:
  operators, indexing and the usual methods work; ``np.asarray`` / ``__array__``, any
  NumPy function or ufunc on it, and mixing it with a NumPy array in an operator raise
  TypeError. ``.get()`` is the explicit copy to the host.
* the module ``_strict_xp`` (registered by :func:`install`) is its namespace: NumPy's
  functions on unwrapped arrays, refusing NumPy array arguments except in
  ``asarray``/``array`` (the explicit host-to-device copy), results wrapped. Where CuPy
  is installed, only the functions CuPy has, with the keywords its signatures take, are
  offered (read once in a subprocess: this process must not import cupy), so a
  NumPy-only function or keyword fails here as it would on the device.
* the module ``_strict_kernels`` runs the GPU backend's kernels (under the simulator) on
  the unwrapped arrays, in place; the layer kernels, and any kernel given a device
  array, refuse host arrays (on a device, numba would silently copy them per launch)
  and return device arrays.

:func:`strict_backend` is a device backend on these two modules.
"""

from __future__ import annotations

import json
import subprocess
import sys
import types
from typing import Any

import numpy as np


class StrictArray:
    """A NumPy array that, like a CuPy array, refuses to become a NumPy array implicitly."""

    __array_ufunc__ = None  # NumPy ufuncs and NumPy-on-the-left operators defer to us

    def __init__(self, a: np.ndarray):
        self._a = a

    # -- the line ----------------------------------------------------------------------
    def __array__(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError("Implicit conversion to a NumPy array is not allowed (device array)")

    def __array_function__(self, func: Any, types: Any, args: Any, kwargs: Any) -> Any:
        raise TypeError(f"numpy.{func.__name__} called on a device array")

    def get(self) -> np.ndarray:
        """The explicit device-to-host copy."""
        return self._a.copy()

    @property
    def __cuda_array_interface__(self) -> dict[str, Any]:
        return {"shape": self._a.shape, "typestr": self._a.dtype.str, "version": 3}

    # -- array attributes ---------------------------------------------------------------
    shape = property(lambda self: self._a.shape)
    dtype = property(lambda self: self._a.dtype)
    ndim = property(lambda self: self._a.ndim)
    size = property(lambda self: self._a.size)
    nbytes = property(lambda self: self._a.nbytes)
    T = property(lambda self: StrictArray(self._a.T))
    flags = property(lambda self: self._a.flags)

    def __len__(self) -> int:
        return len(self._a)

    def __repr__(self) -> str:
        return f"StrictArray({self._a!r})"

    def __float__(self) -> float:  # CuPy allows these on 0-d arrays (a sync)
        return float(self._a)

    def __int__(self) -> int:
        return int(self._a)

    def __bool__(self) -> bool:
        return bool(self._a)

    def __getitem__(self, key: Any) -> Any:
        return _wrap(self._a[_index(key)])

    def __setitem__(self, key: Any, value: Any) -> None:
        self._a[_index(key)] = _operand(value)

    def astype(self, dtype: Any, copy: bool = True) -> StrictArray:
        return StrictArray(self._a.astype(dtype, copy=copy))

    def reshape(self, *shape: Any) -> StrictArray:
        return StrictArray(self._a.reshape(*shape))

    def copy(self) -> StrictArray:
        return StrictArray(self._a.copy())

    def ravel(self) -> StrictArray:
        return StrictArray(self._a.ravel())

    def sum(self, *args: Any, **kwargs: Any) -> Any:
        return _wrap(self._a.sum(*args, **kwargs))

    def any(self, *args: Any, **kwargs: Any) -> Any:
        return _wrap(self._a.any(*args, **kwargs))

    def all(self, *args: Any, **kwargs: Any) -> Any:
        return _wrap(self._a.all(*args, **kwargs))

    def max(self, *args: Any, **kwargs: Any) -> Any:
        return _wrap(self._a.max(*args, **kwargs))

    def min(self, *args: Any, **kwargs: Any) -> Any:
        return _wrap(self._a.min(*args, **kwargs))


def _binary(name: str) -> Any:
    def op(self: StrictArray, other: Any) -> Any:
        return _wrap(getattr(self._a, name)(_operand(other)))

    return op


def _inplace(name: str) -> Any:
    def op(self: StrictArray, other: Any) -> StrictArray:
        getattr(self._a, name)(_operand(other))
        return self

    return op


for _n in (
    "add sub mul truediv floordiv mod pow matmul and or xor lshift rshift eq ne lt le gt ge".split()
):  # fmt: skip
    setattr(StrictArray, f"__{_n}__", _binary(f"__{_n}__"))
    if _n not in ("eq", "ne", "lt", "le", "gt", "ge"):
        setattr(StrictArray, f"__r{_n}__", _binary(f"__r{_n}__"))
        setattr(StrictArray, f"__i{_n}__", _inplace(f"__i{_n}__"))
StrictArray.__neg__ = lambda self: StrictArray(-self._a)  # type: ignore[attr-defined]
StrictArray.__invert__ = lambda self: StrictArray(~self._a)  # type: ignore[attr-defined]
StrictArray.__module__ = "cupy._strict_stand_in"  # lshcore's to_numpy treats it as CuPy


def _wrap(x: Any) -> Any:
    if isinstance(x, np.ndarray):
        return StrictArray(x)
    if isinstance(x, tuple):
        return tuple(_wrap(v) for v in x)
    return x  # NumPy scalars come back as scalars (CuPy gives 0-d arrays; both fine here)


def _operand(x: Any) -> Any:
    """An operand of an operator: a device array, or a scalar. A NumPy array is refused,
    as CuPy refuses mixing host and device arrays."""
    if isinstance(x, StrictArray):
        return x._a
    if isinstance(x, np.ndarray) and x.ndim > 0:
        raise TypeError("a NumPy (host) array in an operation with a device array")
    return x


def _index(key: Any) -> Any:
    # CuPy takes device index arrays (and, converting them, host ones)
    if isinstance(key, tuple):
        return tuple(_index(k) for k in key)
    if isinstance(key, StrictArray):
        return key._a
    return key


def _unwrap_arg(x: Any, allow_host: bool) -> Any:
    if isinstance(x, StrictArray):
        return x._a
    if isinstance(x, np.ndarray) and x.ndim > 0 and not allow_host:
        raise TypeError("a NumPy (host) array passed to a device namespace function")
    if isinstance(x, (list, tuple)):
        return type(x)(_unwrap_arg(v, allow_host) for v in x)
    return x


_HOST_OK = {"asarray", "array"}  # the explicit host-to-device copies

_CUPY_PROBE = """
import inspect, json
import cupy
out = {}
for name in dir(cupy):
    f = getattr(cupy, name)
    if name.startswith("_") or isinstance(f, type) or not callable(f):
        continue
    try:
        ps = inspect.signature(f).parameters.values()
        out[name] = None if any(p.kind == p.VAR_KEYWORD for p in ps) else [p.name for p in ps]
    except (TypeError, ValueError):  # a Cython function without a signature
        out[name] = None
print(json.dumps({"version": cupy.__version__, "functions": out}))
"""
_cupy_surface: dict[str, Any] | None = None


def cupy_surface() -> dict[str, Any]:
    """CuPy's functions and their keyword names (None: not known), read once from a
    subprocess; empty when CuPy is not installed (then nothing is restricted)."""
    global _cupy_surface
    if _cupy_surface is None:
        proc = subprocess.run(
            [sys.executable, "-c", _CUPY_PROBE], capture_output=True, text=True, timeout=120
        )
        _cupy_surface = json.loads(proc.stdout) if proc.returncode == 0 else {}
    return _cupy_surface


def _xp_getattr(name: str) -> Any:
    attr = getattr(np, name)
    if isinstance(attr, type) or not callable(attr):
        return attr  # dtypes, constants
    surface = cupy_surface()
    functions = surface.get("functions")
    if functions is not None and name not in functions:
        raise AttributeError(f"cupy {surface['version']} has no function {name!r} (NumPy only)")
    keywords = None if functions is None else functions[name]

    def fn(*args: Any, **kwargs: Any) -> Any:
        if keywords is not None and not set(kwargs) <= set(keywords):
            raise TypeError(
                f"cupy.{name} takes no keyword {sorted(set(kwargs) - set(keywords))} "
                f"(cupy {surface['version']})"
            )
        allow = name in _HOST_OK
        a = [_unwrap_arg(v, allow) for v in args]
        k = {key: _unwrap_arg(v, allow) for key, v in kwargs.items()}
        return _wrap(attr(*a, **k))

    fn.__name__ = name
    return fn


#: kernels that work on a layer's parameters and buffers: device arrays only
_DEVICE_ONLY = {"layer_forward", "layer_backward", "sparse_update", "block_update"}


def _kernel(name: str, func: Any) -> Any:
    def run(*args: Any) -> Any:
        # a kernel given device arrays runs on the device: its results stay there, and a
        # host array among its arguments would be copied by numba per launch
        on_device = name in _DEVICE_ONLY or any(isinstance(v, StrictArray) for v in args)
        if on_device:
            for i, v in enumerate(args):
                if isinstance(v, np.ndarray) and v.size:
                    raise TypeError(f"{name}: argument {i} is a host array (a copy per launch)")
        a = [v._a if isinstance(v, StrictArray) else v for v in args]
        out = func(*a)
        return _wrap(out) if on_device else out

    run.__name__ = name
    return run


def install() -> None:
    """Register ``_strict_xp`` and ``_strict_kernels`` as importable modules."""
    if "_strict_xp" in sys.modules:
        return
    xp = types.ModuleType("_strict_xp")
    xp.__getattr__ = _xp_getattr  # type: ignore[method-assign]
    sys.modules["_strict_xp"] = xp
    from lshcore.core.contract import KERNEL_NAMES
    from lshcore.kernels import cupy_gpu

    kern = types.ModuleType("_strict_kernels")
    for name in KERNEL_NAMES:
        setattr(kern, name, _kernel(name, getattr(cupy_gpu, name)))
    sys.modules["_strict_kernels"] = kern


def strict_backend() -> Any:
    """A device backend whose arrays are :class:`StrictArray` (see the module doc)."""
    from lshcore.core.backend import Backend

    install()
    return Backend("cuda-strict", "_strict_kernels", array_module="_strict_xp", host_arrays=False)
