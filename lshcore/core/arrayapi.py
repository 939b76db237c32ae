"""Array-level glue of the GPU path, written once against the array API standard.

Every function takes its namespace from its arguments (``array_api_compat``), so the same
code runs on NumPy, CuPy and ``array_api_strict`` (the CI run that proves nothing
NumPy-only slips into the device path: no ``np.add.at``, no ``repeat`` with array
repeats, no ``lexsort``, no integer-array assignment). ``array_api_compat`` is imported
on first use, never by ``import lshcore``.
"""

from __future__ import annotations

import importlib
from typing import Any

from lshcore.errors import BackendUnavailableError

__all__ = [
    "namespace",
    "owners",
    "ranges",
    "group_ranks",
    "stable_order",
    "csr_from_pairs",
    "pad_csr",
]


def namespace(*arrays: Any) -> Any:
    """The array-API namespace of ``arrays`` (array_api_compat's wrapper for NumPy/CuPy).

    BackendUnavailableError when ``array-api-compat`` is not installed (the GPU extra).
    """
    try:
        compat = importlib.import_module("array_api_compat")
    except ImportError as exc:
        raise BackendUnavailableError(
            "the GPU path needs array-api-compat (pip install 'lshcore[gpu]')"
        ) from exc
    return compat.array_namespace(*arrays)


def owners(xp: Any, counts: Any) -> Any:
    """counts (n,) int64 >= 0 -> (sum(counts),) int64: j repeated counts[j] times.

    The array-API form of ``repeat(arange(n), counts)`` (CuPy rejects array repeats).
    """
    ends = xp.cumulative_sum(xp.astype(counts, xp.int64))
    total = int(ends[-1]) if ends.shape[0] else 0
    return xp.searchsorted(ends, xp.arange(total, dtype=xp.int64), side="right")


def ranges(xp: Any, lo: Any, hi: Any) -> tuple[Any, Any]:
    """Concatenated ``arange(lo[j], hi[j])`` (int64) and the owner j of each element."""
    lens = xp.astype(hi - lo, xp.int64)
    owner = owners(xp, lens)
    starts = xp.cumulative_sum(lens) - lens
    lo64 = xp.astype(lo, xp.int64)
    pos = (
        xp.arange(owner.shape[0], dtype=xp.int64)
        - xp.take(starts, owner, axis=0)
        + xp.take(lo64, owner, axis=0)
    )
    return pos, owner


def group_ranks(xp: Any, keys: Any) -> tuple[Any, Any, Any, Any]:
    """Stable order of keys (n,), the sorted keys, each one's rank in its group (arrival
    order), and its group's size; all int64."""
    order = xp.argsort(keys, stable=True)
    sk = xp.take(keys, order, axis=0)
    start = xp.searchsorted(sk, sk, side="left")
    end = xp.searchsorted(sk, sk, side="right")
    rank = xp.arange(sk.shape[0], dtype=xp.int64) - xp.astype(start, xp.int64)
    return order, sk, rank, xp.astype(end - start, xp.int64)


def stable_order(xp: Any, *keys: Any) -> Any:
    """Indices sorting by ``keys[0]`` first, then ``keys[1]``, ... (all (n,)); stable.

    The array-API form of ``lexsort(keys[::-1])``: successive stable argsorts.
    """
    n = keys[0].shape[0]
    order = xp.arange(n, dtype=xp.int64)
    for key in reversed(keys):
        order = xp.take(order, xp.argsort(xp.take(key, order, axis=0), stable=True), axis=0)
    return order


def csr_from_pairs(xp: Any, qidx: Any, ids: Any, m: int, id_bound: int) -> tuple[Any, Any, Any]:
    """Unique (query, id) pairs with their multiplicity as CSR: indptr (m+1,) int64, ids
    int64 ascending per query, counts int32."""
    key = xp.astype(qidx, xp.int64) * id_bound + xp.astype(ids, xp.int64)
    uk, counts = xp.unique_counts(key)
    order = xp.argsort(uk)  # the standard leaves the order of unique values free
    uk, counts = xp.take(uk, order, axis=0), xp.take(counts, order, axis=0)
    q_of = uk // id_bound
    indptr = xp.searchsorted(q_of, xp.arange(m + 1, dtype=xp.int64), side="left")
    return xp.astype(indptr, xp.int64), uk % id_bound, xp.astype(counts, xp.int32)


def pad_csr(xp: Any, indptr: Any, values: Any, k: int, fill: Any) -> Any:
    """The first ``k`` values of each CSR row as a dense (m, k) array padded with ``fill``."""
    m = indptr.shape[0] - 1
    counts = indptr[1:] - indptr[:-1]
    col = xp.arange(k, dtype=xp.int64)
    where = xp.reshape(indptr[:-1], (m, 1)) + xp.reshape(col, (1, k))
    valid = xp.reshape(col, (1, k)) < xp.reshape(counts, (m, 1))
    if values.shape[0] == 0:
        return xp.full((m, k), fill, dtype=values.dtype)
    safe = xp.reshape(xp.clip(where, 0, values.shape[0] - 1), (-1,))
    got = xp.reshape(xp.take(values, safe, axis=0), (m, k))
    return xp.where(valid, got, xp.full((m, k), fill, dtype=values.dtype))
