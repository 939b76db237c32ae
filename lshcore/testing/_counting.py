"""A kernel module that counts the comparisons the hashing kernels do (for the kit).

The NumPy reference kernels, with the WTA/DWTA and MinHash bin kernels wrapped to add
to :data:`COUNTS` the value comparisons their inputs require: a WTA bin of b competing
entries costs b - 1; a CSR row costs one per (stored entry, slot it occupies); MinHash
one per (coordinate read, permutation). The conformance kit's cost check compares a
family's ``hash_comparisons`` with these counts. Not thread-safe (the kit runs serially).
"""

from __future__ import annotations

import numpy as np

from lshcore.core.contract import KERNEL_NAMES
from lshcore.kernels import numpy_ref as _ref

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


# every other kernel is the reference's
globals().update({n: getattr(_ref, n) for n in KERNEL_NAMES if n not in globals()})

__all__ = list(KERNEL_NAMES)
