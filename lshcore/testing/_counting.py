"""A kernel module that counts the comparisons the hashing kernels do (for the kit).

The NumPy reference kernels, with the WTA/DWTA and MinHash bin kernels wrapped to add
to :data:`COUNTS` the value comparisons their inputs require: a WTA bin of b competing
entries costs b - 1; a CSR row costs one per (stored entry, slot it occupies); MinHash
one per (coordinate read, permutation). The conformance kit's cost check compares a
family's ``hash_comparisons`` with these counts. Not thread-safe (the kit runs serially).
"""

from __future__ import annotations

import numpy as np

from lshcore.kernels import numpy_ref as _ref
from lshcore.kernels.numpy_ref import (
    batch_select_from_tables,
    block_update,
    bucket_offsets,
    dense_to_sparse,
    densify_bins,
    fixed_insert,
    fixed_query,
    fixed_remove,
    layer_backward,
    layer_forward,
    rerank_topk,
    reservoir_draw,
    select_active,
    select_from_tables,
    sorted_insert,
    sorted_query,
    sorted_query_rerank,
    sorted_remove,
    sorted_remove_at,
    sorted_table_candidates,
    sparse_update,
    srp_probes,
    tiebreak_priority,
)

#: comparisons counted since the last reset
COUNTS: dict[str, int] = {"comparisons": 0}


def reset() -> None:
    COUNTS["comparisons"] = 0


def wta_bins_dense(x: np.ndarray, bin_coords: np.ndarray, densify: bool) -> np.ndarray:
    n_bins, b = bin_coords.shape
    COUNTS["comparisons"] += int(x.shape[0] * n_bins * (b - 1))
    return _ref.wta_bins_dense(x, bin_coords, densify)


def wta_bins_csr(
    indptr: np.ndarray,
    indices: np.ndarray,
    data: np.ndarray,
    coord_ptr: np.ndarray,
    coord_slots: np.ndarray,
    n_bins: int,
    bin_size: int,
    densify: bool,
) -> np.ndarray:
    slots_per_coord = np.diff(coord_ptr)
    COUNTS["comparisons"] += int(slots_per_coord[indices].sum())
    return _ref.wta_bins_csr(
        indptr, indices, data, coord_ptr, coord_slots, n_bins, bin_size, densify
    )


def minhash_bins_dense(x: np.ndarray, coord_rank: np.ndarray, n_bins: int) -> np.ndarray:
    COUNTS["comparisons"] += int(x.shape[0] * x.shape[1] * coord_rank.shape[0])
    return _ref.minhash_bins_dense(x, coord_rank, n_bins)


def minhash_bins_csr(
    indptr: np.ndarray, indices: np.ndarray, coord_rank: np.ndarray, n_bins: int
) -> np.ndarray:
    COUNTS["comparisons"] += int(indices.shape[0] * coord_rank.shape[0])
    return _ref.minhash_bins_csr(indptr, indices, coord_rank, n_bins)


__all__ = [
    "wta_bins_dense",
    "wta_bins_csr",
    "densify_bins",
    "minhash_bins_dense",
    "minhash_bins_csr",
    "srp_probes",
    "tiebreak_priority",
    "dense_to_sparse",
    "layer_forward",
    "layer_backward",
    "sparse_update",
    "select_active",
    "sorted_table_candidates",
    "select_from_tables",
    "reservoir_draw",
    "fixed_insert",
    "fixed_remove",
    "fixed_query",
    "sorted_insert",
    "sorted_remove",
    "sorted_remove_at",
    "sorted_query",
    "bucket_offsets",
    "rerank_topk",
    "sorted_query_rerank",
    "batch_select_from_tables",
    "block_update",
]
