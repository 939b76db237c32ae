"""numba kernels of the comparison-based hash families (WTA, DWTA, MinHash).

Same names, signatures and results as the NumPy reference in ``_np_hashing`` (read its
docstring for the conventions). Each kernel is compiled ``nogil=True, cache=True`` and
allocates its own scratch, so several threads may call it at once. Importing this
module imports numba.
"""

from __future__ import annotations

import numba
import numpy as np

from lshcore.kernels._np_hashing import PROBE_PRIME

__all__ = [
    "wta_bins_dense",
    "wta_bins_csr",
    "densify_bins",
    "minhash_bins_dense",
    "minhash_bins_csr",
    "srp_probes",
]

_jit = numba.njit(nogil=True, cache=True)


@_jit
def _wta_bins_dense(x, bin_coords, densify):  # type: ignore[no-untyped-def]
    n = x.shape[0]
    n_bins, bin_size = bin_coords.shape
    out = np.empty((n, n_bins), dtype=np.int64)
    for i in range(n):
        for j in range(n_bins):
            best = -np.inf
            best_pos = -1
            for q in range(bin_size):
                v = np.float64(x[i, bin_coords[j, q]])
                if v > best and (not densify or v != 0):
                    best = v
                    best_pos = q
            out[i, j] = best_pos
    return out


def wta_bins_dense(x: np.ndarray, bin_coords: np.ndarray, densify: bool) -> np.ndarray:
    """Winner-take-all bin codes of dense rows; see the NumPy reference."""
    return _wta_bins_dense(x, bin_coords, bool(densify))  # type: ignore[no-any-return]


@_jit
def _wta_bins_csr(indptr, indices, data, coord_ptr, coord_slots, n_bins, bin_size, densify):  # type: ignore[no-untyped-def]
    n = indptr.shape[0] - 1
    out = np.empty((n, n_bins), dtype=np.int64)
    best = np.full(n_bins, -np.inf)
    best_pos = np.full(n_bins, -1, dtype=np.int64)
    touched = np.empty(n_bins, dtype=np.int64)
    is_touched = np.zeros(n_bins, dtype=np.bool_)
    present = np.zeros(n_bins * bin_size, dtype=np.bool_)  # WTA: which positions are stored
    for i in range(n):
        n_touched = 0
        for k in range(indptr[i], indptr[i + 1]):
            c = indices[k]
            v = np.float64(data[k])
            for m in range(coord_ptr[c], coord_ptr[c + 1]):
                s = coord_slots[m]
                j = s // bin_size
                q = s % bin_size
                if not is_touched[j]:
                    is_touched[j] = True
                    touched[n_touched] = j
                    n_touched += 1
                if v > best[j] or (v == best[j] and q < best_pos[j]):
                    best[j] = v
                    best_pos[j] = q
                if not densify:
                    present[s] = True
        for j in range(n_bins):
            out[i, j] = -1 if densify else 0
        for t in range(n_touched):
            j = touched[t]
            code = best_pos[j]
            if not densify and best[j] < 0:
                # every stored value is negative: the lowest absent (zero) position wins
                for q in range(bin_size):
                    if not present[j * bin_size + q]:
                        code = q
                        break
            out[i, j] = code
            if not densify:
                for q in range(bin_size):
                    present[j * bin_size + q] = False
            best[j] = -np.inf
            best_pos[j] = -1
            is_touched[j] = False
    return out


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
    """Winner-take-all bin codes from a CSR matrix's non-zeros; see the NumPy reference."""
    return _wta_bins_csr(  # type: ignore[no-any-return]
        indptr, indices, data, coord_ptr, coord_slots, int(n_bins), int(bin_size), bool(densify)
    )


@_jit
def _densify_bins(codes, probe_a, probe_c, attempts):  # type: ignore[no-untyped-def]
    n, groups, n_bins = codes.shape
    out = codes.copy()
    # the probe targets depend on (group, bin, attempt) only: compute them once
    probe = np.empty((groups, n_bins, attempts), dtype=np.int64)
    for g in range(groups):
        for j in range(n_bins):
            for t in range(attempts):
                probe[g, j, t] = (
                    (probe_a[g] * (j * attempts + t) + probe_c[g]) % PROBE_PRIME
                ) % n_bins
    after = np.empty(n_bins, dtype=np.int64)
    for i in range(n):
        for g in range(groups):
            row = codes[i, g]
            # after[j]: the first non-empty bin after j, circularly (-1 if there is none)
            nearest = -1
            for pos in range(2 * n_bins - 1, -1, -1):
                j = pos % n_bins
                if pos < n_bins:
                    after[j] = nearest
                if row[j] >= 0:
                    nearest = j
            if nearest < 0:  # every bin empty (the zero vector)
                for j in range(n_bins):
                    out[i, g, j] = 0
                continue
            for j in range(n_bins):
                if row[j] >= 0:
                    continue
                source = after[j]
                for t in range(attempts):
                    if row[probe[g, j, t]] >= 0:
                        source = probe[g, j, t]
                        break
                out[i, g, j] = row[source]
    return out


def densify_bins(
    codes: np.ndarray, probe_a: np.ndarray, probe_c: np.ndarray, attempts: int
) -> np.ndarray:
    """Fill empty (``-1``) bins by borrowing; see the NumPy reference."""
    return _densify_bins(codes, probe_a, probe_c, int(attempts))  # type: ignore[no-any-return]


@_jit
def _minhash_bins_dense(x, coord_rank, n_bins):  # type: ignore[no-untyped-def]
    n, dim = x.shape
    groups = coord_rank.shape[0]
    out = np.full((n, groups, n_bins), -1, dtype=np.int64)
    for i in range(n):
        for c in range(dim):
            if x[i, c] != 0:
                for g in range(groups):
                    r = coord_rank[g, c]
                    j = r * n_bins // dim
                    if out[i, g, j] < 0 or r < out[i, g, j]:
                        out[i, g, j] = r
    return out


def minhash_bins_dense(x: np.ndarray, coord_rank: np.ndarray, n_bins: int) -> np.ndarray:
    """Per group and bin, the smallest permuted position of a row's non-zeros."""
    return _minhash_bins_dense(x, coord_rank, int(n_bins))  # type: ignore[no-any-return]


@_jit
def _minhash_bins_csr(indptr, indices, coord_rank, n_bins):  # type: ignore[no-untyped-def]
    n = indptr.shape[0] - 1
    groups, dim = coord_rank.shape
    out = np.full((n, groups, n_bins), -1, dtype=np.int64)
    for i in range(n):
        for k in range(indptr[i], indptr[i + 1]):
            c = indices[k]
            for g in range(groups):
                r = coord_rank[g, c]
                j = r * n_bins // dim
                if out[i, g, j] < 0 or r < out[i, g, j]:
                    out[i, g, j] = r
    return out


def minhash_bins_csr(
    indptr: np.ndarray, indices: np.ndarray, coord_rank: np.ndarray, n_bins: int
) -> np.ndarray:
    """:func:`minhash_bins_dense` from a CSR matrix's structure (no stored zeros)."""
    return _minhash_bins_csr(indptr, indices, coord_rank, int(n_bins))  # type: ignore[no-any-return]


@_jit
def _srp_probes_rows(proj, n_probes, out, lo, hi):  # type: ignore[no-untyped-def]
    n, n_tables, k = proj.shape
    r = min(k, n_probes - 1)
    n_extra = min(n_probes - 1, r * (r + 1) // 2)
    for i in range(lo, hi):
        ms = np.empty(k, dtype=np.float32)
        bits = np.empty(k, dtype=np.int64)
        best_c = np.empty(max(n_extra, 1), dtype=np.float32)
        best_i = np.empty(max(n_extra, 1), dtype=np.int64)
        best_m = np.empty(max(n_extra, 1), dtype=np.int64)
        for t in range(n_tables):
            code = np.int64(0)
            for j in range(k):
                v = proj[i, t, j]
                if v >= 0:
                    code |= np.int64(1) << j
                # insertion sort by (margin, bit): stable
                m = np.float32(abs(v))
                pos = j
                while pos > 0 and ms[pos - 1] > m:
                    ms[pos] = ms[pos - 1]
                    bits[pos] = bits[pos - 1]
                    pos -= 1
                ms[pos] = m
                bits[pos] = j
            for p in range(n_probes):
                out[i, t, p] = code
            if n_extra == 0:
                continue
            # the n_extra cheapest flip sets by (cost, canonical index), kept sorted
            filled = 0
            for b in range(r):
                if filled == n_extra and ms[b] > best_c[filled - 1]:
                    break  # every later set costs at least ms[b]
                for a in range(b + 1):
                    c = ms[b] if a == b else np.float32(ms[a] + ms[b])
                    idx = b * (b + 1) // 2 + a
                    if filled == n_extra and not (
                        c < best_c[filled - 1]
                        or (c == best_c[filled - 1] and idx < best_i[filled - 1])
                    ):
                        continue
                    pos = filled if filled < n_extra else n_extra - 1
                    while pos > 0 and (
                        c < best_c[pos - 1] or (c == best_c[pos - 1] and idx < best_i[pos - 1])
                    ):
                        best_c[pos] = best_c[pos - 1]
                        best_i[pos] = best_i[pos - 1]
                        best_m[pos] = best_m[pos - 1]
                        pos -= 1
                    best_c[pos] = c
                    best_i[pos] = idx
                    best_m[pos] = (np.int64(1) << bits[a]) | (np.int64(1) << bits[b])
                    if filled < n_extra:
                        filled += 1
            for p in range(filled):
                out[i, t, 1 + p] = code ^ best_m[p]


@numba.njit(nogil=True, cache=True, parallel=True)
def _srp_probes_parallel(proj, n_probes, out, n_chunks):  # type: ignore[no-untyped-def]
    n = proj.shape[0]
    for c in numba.prange(n_chunks):
        _srp_probes_rows(proj, n_probes, out, c * n // n_chunks, (c + 1) * n // n_chunks)


#: (row, table) pairs below which the probes are ranked on one thread (waking the
#: thread pool costs more than it saves, far more on a loaded machine)
_PARALLEL_PAIRS = 4096


def srp_probes(proj: np.ndarray, n_probes: int) -> np.ndarray:
    """SRP multiprobe codes (see the NumPy reference)."""
    p = np.ascontiguousarray(proj, dtype=np.float32)
    n = p.shape[0]
    out = np.empty((n, p.shape[1], int(n_probes)), dtype=np.int64)
    threads = numba.get_num_threads()
    if threads < 2 or n < 2 or n * p.shape[1] < _PARALLEL_PAIRS:
        _srp_probes_rows(p, int(n_probes), out, 0, n)
    else:
        _srp_probes_parallel(p, int(n_probes), out, min(n, 2 * threads))
    return out
