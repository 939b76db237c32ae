"""CuPy kernels of the hash tables and the exact top-k re-rank.

The NumPy reference kernels in ``_np_tables`` are array-generic (they take the array
module from their arguments and use only functions CuPy also has: sort, searchsorted,
unique, take_along_axis, lexsort), so the GPU backend runs those same functions on CuPy
arrays. Importing this module imports cupy.

Untested here: this machine has no CUDA device (the tests skip with the reason that
``lshcore.get_backend("cupy")`` gives).
"""

from __future__ import annotations

import cupy  # noqa: F401  (this module is the GPU backend: fail early without cupy)

from lshcore.kernels._np_tables import (
    METRIC_COSINE,
    METRIC_IP,
    METRIC_L2,
    bucket_offsets,
    fixed_insert,
    fixed_query,
    fixed_remove,
    rerank_topk,
    reservoir_draw,
    sorted_insert,
    sorted_query,
    sorted_remove,
)

__all__ = [
    "fixed_insert",
    "fixed_remove",
    "fixed_query",
    "sorted_insert",
    "sorted_remove",
    "sorted_query",
    "bucket_offsets",
    "rerank_topk",
    "reservoir_draw",
    "METRIC_IP",
    "METRIC_COSINE",
    "METRIC_L2",
]
