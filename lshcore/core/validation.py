"""Input checks shared by every public entry point.

Each check raises :class:`~lshcore.errors.InputError` naming the argument, and never
modifies its input.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

from lshcore.errors import ConfigError, InputError

__all__ = [
    "is_sparse",
    "is_cupy",
    "as_batch",
    "as_ids",
    "check_int",
    "check_float",
    "check_choice",
]


def is_sparse(x: Any) -> bool:
    """True for a scipy.sparse matrix or array (checked without importing scipy)."""
    return "scipy.sparse" in sys.modules and hasattr(x, "tocsr") and hasattr(x, "nnz")


def is_cupy(x: Any) -> bool:
    """True for a CuPy array (checked without importing cupy)."""
    return "cupy" in sys.modules and type(x).__module__.split(".")[0] == "cupy"


def as_batch(
    x: Any,
    dim: int,
    name: str = "x",
    *,
    allow_sparse: bool = False,
    dtype: Any = np.float32,
    xp: Any = np,
) -> Any:
    """Validate a batch of vectors of shape (n, dim) and return it as ``dtype``.

    Dense input becomes a C-contiguous array of the backend ``xp``; sparse input
    (when allowed) becomes a CSR matrix with sorted indices. Raises InputError for a
    wrong shape or dtype, an empty batch, or non-finite values.
    """
    if is_sparse(x):
        if not allow_sparse:
            raise InputError(f"{name}: sparse input is not supported here; pass a dense array")
        csr = x.tocsr()
        if csr.ndim != 2 or csr.shape[1] != dim:
            raise InputError(f"{name}: expected shape (n, {dim}), got {tuple(csr.shape)}")
        if csr.shape[0] == 0:
            raise InputError(f"{name}: empty batch (0 rows)")
        if csr.dtype.kind not in "fiu":
            raise InputError(f"{name}: expected a real-valued matrix, got dtype {csr.dtype}")
        if not np.all(np.isfinite(csr.data)):
            raise InputError(f"{name}: contains NaN or infinite values")
        csr = csr.astype(dtype, copy=True)
        csr.sum_duplicates()
        csr.sort_indices()
        return csr
    if is_cupy(x) and xp is np:
        raise InputError(
            f"{name}: got a CuPy (GPU) array but this object uses a CPU backend; "
            "use backend='cupy' or move the array with .get()"
        )
    arr = xp.asarray(x)
    if arr.dtype.kind not in "fiu" or arr.dtype == np.bool_:
        raise InputError(f"{name}: expected a real-valued array, got dtype {arr.dtype}")
    if arr.ndim != 2 or arr.shape[1] != dim:
        raise InputError(f"{name}: expected shape (n, {dim}), got {tuple(arr.shape)}")
    if arr.shape[0] == 0:
        raise InputError(f"{name}: empty batch (0 rows)")
    arr = xp.ascontiguousarray(arr, dtype=dtype)
    if arr.dtype.kind == "f" and not bool(xp.isfinite(arr).all()):
        raise InputError(f"{name}: contains NaN or infinite values")
    return arr


def as_ids(
    ids: Any, name: str = "ids", *, n: int | None = None, upper: int = 2**31 - 1
) -> np.ndarray:
    """Validate integer ids (1-D, ``0 <= id < upper``, length ``n`` if given) as int64."""
    arr = np.asarray(ids)
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.ndim != 1:
        raise InputError(f"{name}: expected a 1-D array of ids, got shape {arr.shape}")
    if arr.size and arr.dtype.kind not in "iu":
        if arr.dtype.kind == "f" and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)):
            arr = arr.astype(np.int64)
        else:
            raise InputError(f"{name}: expected integer ids, got dtype {arr.dtype}")
    arr = arr.astype(np.int64, copy=False)
    if n is not None and arr.shape[0] != n:
        raise InputError(f"{name}: expected {n} ids, got {arr.shape[0]}")
    if arr.size and (arr.min() < 0 or arr.max() >= upper):
        bad = arr[(arr < 0) | (arr >= upper)][0]
        raise InputError(f"{name}: id {int(bad)} is out of range [0, {upper})")
    return arr


def check_int(value: Any, name: str, *, low: int | None = None, high: int | None = None) -> int:
    """An integer parameter in [low, high]; ConfigError otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ConfigError(f"{name} must be an integer, got {value!r}")
    value = int(value)
    if low is not None and value < low:
        raise ConfigError(f"{name} must be >= {low}, got {value}")
    if high is not None and value > high:
        raise ConfigError(f"{name} must be <= {high}, got {value}")
    return value


def check_float(
    value: Any,
    name: str,
    *,
    low: float | None = None,
    high: float | None = None,
    open_low: bool = False,
) -> float:
    """A finite float parameter in [low, high] (or (low, high] with ``open_low``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ConfigError(f"{name} must be a number, got {value!r}")
    value = float(value)
    if not np.isfinite(value):
        raise ConfigError(f"{name} must be finite, got {value}")
    if low is not None and (value < low or (open_low and value == low)):
        raise ConfigError(f"{name} must be {'>' if open_low else '>='} {low}, got {value}")
    if high is not None and value > high:
        raise ConfigError(f"{name} must be <= {high}, got {value}")
    return value


def check_choice(value: Any, name: str, allowed: tuple[str, ...]) -> str:
    """One of a fixed set of strings; ConfigError naming the allowed values otherwise."""
    if value not in allowed:
        raise ConfigError(f"{name} must be one of {', '.join(map(repr, allowed))}; got {value!r}")
    return str(value)
