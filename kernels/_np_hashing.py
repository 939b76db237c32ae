"""NumPy reference kernels of the comparison-based hash families (WTA, DWTA, MinHash).

Every kernel is vectorized over points (Python loops run over bin positions, probe
attempts or permutations only). The numba kernels in ``_numba_hashing`` have the same
names and signatures and must return identical arrays.

Shared conventions:

* A "bin code" array holds one int64 per (point, bin); ``-1`` marks an empty bin.
* WTA/DWTA bins: slot ``s`` of the concatenated permutations belongs to bin ``s // b``
  at position ``s % b``; ``bin_coords[j, q]`` is the coordinate at slot ``j*b + q`` and
  ``coord_ptr``/``coord_slots`` list, per coordinate, the slots it occupies (CSR form).
* MinHash groups: ``coord_rank[g, c]`` is coordinate ``c``'s position under permutation
  ``g``; position ``r`` lies in bin ``r * n_bins // dim`` of that group.
* Densification (Shrivastava, ICML 2017): an empty bin ``j`` of group ``g`` probes bins
  ``((a_g * (j * attempts + t) + c_g) mod PROBE_PRIME) mod n_bins`` for ``t < attempts``,
  then ``j+1, j+2, ...`` circularly, and borrows the code of the first bin that was
  non-empty before densification. Every probe is in range; the sequence is bounded.
  A point whose bins are all empty (the zero vector) gets code 0 everywhere.
* SRP multiprobe (``srp_probes``): a table's code has bit ``j`` set when projection
  ``j`` is ``>= 0``. Its bits are ranked by margin ``|projection|`` (ties: lower bit
  first); over the ``r = min(k, n_probes - 1)`` least certain bits, the flip sets are
  every single bit ``b`` (cost ``m_b``) and pair ``a < b`` of ranks (cost ``m_a + m_b``
  in float32), in canonical order ``(b, a)`` with the single ``b`` after the pairs
  ``(a, b)`` (index ``b * (b + 1) / 2 + a``, ``a = b`` for the single); probes are the
  code, then the code with the ``n_probes - 1`` cheapest sets flipped (ties: canonical
  order), then the code again when there are fewer sets than probes.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "PROBE_PRIME",
    "wta_bins_dense",
    "wta_bins_csr",
    "densify_bins",
    "minhash_bins_dense",
    "minhash_bins_csr",
    "srp_probes",
]

#: the Mersenne prime 2**31 - 1 of the 2-universal probe hash
PROBE_PRIME = 2147483647


def wta_bins_dense(x: np.ndarray, bin_coords: np.ndarray, densify: bool) -> np.ndarray:
    """Winner-take-all bin codes of dense rows.

    x: (n, dim) float; bin_coords: (n_bins, b) int64. Returns (n, n_bins) int64: the
    position (0..b-1) of the largest entry of each bin, ties to the lowest position.
    With ``densify`` only non-zero entries compete and a bin without one is ``-1``
    (DWTA); without it every entry, zeros included, competes (WTA).
    """
    n = x.shape[0]
    n_bins, bin_size = bin_coords.shape
    best_val = np.full((n, n_bins), -np.inf, dtype=np.float64)
    best_pos = np.full((n, n_bins), -1, dtype=np.int64)
    for q in range(bin_size):
        vals = x[:, bin_coords[:, q]].astype(np.float64)
        better = vals > best_val  # strict: ties keep the lower position
        if densify:
            better &= vals != 0
        best_val = np.where(better, vals, best_val)
        best_pos[better] = q
    return best_pos


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
    """The same codes as :func:`wta_bins_dense`, from a CSR matrix's non-zeros only.

    indptr/indices/data: the CSR arrays (sorted, duplicate-free, no stored zeros).
    Returns (n, n_bins) int64. Absent entries are zeros: for WTA a bin whose stored
    values are all negative (or absent) takes its lowest zero position.
    """
    n = indptr.shape[0] - 1
    indptr = np.asarray(indptr, dtype=np.int64)
    rows = np.repeat(np.arange(n, dtype=np.int64), np.diff(indptr))
    cols = np.asarray(indices, dtype=np.int64)
    # expand every non-zero into the slots its coordinate occupies
    starts = coord_ptr[cols]
    counts = coord_ptr[cols + 1] - starts
    owner = np.repeat(np.arange(cols.shape[0], dtype=np.int64), counts)
    first = np.cumsum(counts) - counts
    within = np.arange(owner.shape[0], dtype=np.int64) - np.repeat(first, counts)
    slots = coord_slots[starts[owner] + within]
    key = rows[owner] * n_bins + slots // bin_size
    pos = slots % bin_size
    vals = np.asarray(data, dtype=np.float64)[owner]

    out = np.full(n * n_bins, -1 if densify else 0, dtype=np.int64)
    if key.shape[0]:
        # the winner of a bin: largest value, then lowest position
        order = np.lexsort((pos, -vals, key))
        key_s = key[order]
        head = np.ones(key_s.shape[0], dtype=bool)
        head[1:] = key_s[1:] != key_s[:-1]
        win_key = key_s[head]
        win_pos = pos[order][head]
        out[win_key] = win_pos
        if not densify:
            # WTA: zeros compete too; the lowest absent position is the number of
            # leading positions 0, 1, 2, ... present in the bin
            win_val = vals[order][head]
            order_p = np.lexsort((pos, key))
            key_p = key[order_p]
            pos_p = pos[order_p]
            head_p = np.ones(key_p.shape[0], dtype=bool)
            head_p[1:] = key_p[1:] != key_p[:-1]
            group = np.cumsum(head_p) - 1
            group_start = np.flatnonzero(head_p)
            rank = np.arange(key_p.shape[0]) - group_start[group]
            lowest_zero = np.bincount(group, weights=(pos_p == rank)).astype(np.int64)
            zero_wins = (lowest_zero < bin_size) & (win_val < 0)  # win_key == key_p[head_p]
            out[win_key[zero_wins]] = lowest_zero[zero_wins]
    return out.reshape(n, n_bins)


def densify_bins(
    codes: np.ndarray, probe_a: np.ndarray, probe_c: np.ndarray, attempts: int
) -> np.ndarray:
    """Fill the empty (``-1``) bins of each group by borrowing (optimal densification).

    codes: (n, groups, n_bins) int64; probe_a, probe_c: (groups,) int64 in
    [0, PROBE_PRIME). Returns a new array, every entry >= 0; a group with no non-empty
    bin gets 0 everywhere.
    """
    n, groups, n_bins = codes.shape
    out = codes.copy()
    bins = np.arange(n_bins, dtype=np.int64)
    for g in range(groups):
        orig = codes[:, g, :]
        filled = out[:, g, :]
        any_full = (orig >= 0).any(axis=1)
        todo = (orig < 0) & any_full[:, None]
        for t in range(attempts):
            if not todo.any():
                break
            target = ((probe_a[g] * (bins * attempts + t) + probe_c[g]) % PROBE_PRIME) % n_bins
            cand = orig[:, target]
            take = todo & (cand >= 0)
            filled[take] = cand[take]
            todo &= ~take
        if todo.any():
            # the first non-empty bin after j, circularly: a suffix minimum over the
            # row written twice (positions j+1 .. j+n_bins-1 cover every other bin)
            full = np.concatenate([orig >= 0, orig >= 0], axis=1)
            where_full = np.where(full, np.arange(2 * n_bins), 2 * n_bins)
            after = np.minimum.accumulate(where_full[:, ::-1], axis=1)[:, ::-1]
            nearest = after[:, 1 : n_bins + 1] % n_bins
            cand = np.take_along_axis(orig, nearest, axis=1)
            filled[todo] = cand[todo]
        filled[~any_full, :] = 0
    return out


def minhash_bins_dense(x: np.ndarray, coord_rank: np.ndarray, n_bins: int) -> np.ndarray:
    """Per group and bin, the smallest permuted position among the non-zeros of a row.

    x: (n, dim) float; coord_rank: (groups, dim) int64 (each row a permutation).
    Returns (n, groups, n_bins) int64, ``-1`` for an empty bin.
    """
    rows, cols = np.nonzero(x)
    return _minhash_bins(
        rows.astype(np.int64), cols.astype(np.int64), x.shape[0], coord_rank, n_bins
    )


def minhash_bins_csr(
    indptr: np.ndarray, indices: np.ndarray, coord_rank: np.ndarray, n_bins: int
) -> np.ndarray:
    """:func:`minhash_bins_dense` from a CSR matrix's structure (no stored zeros)."""
    n = indptr.shape[0] - 1
    rows = np.repeat(np.arange(n, dtype=np.int64), np.diff(np.asarray(indptr, dtype=np.int64)))
    return _minhash_bins(rows, np.asarray(indices, dtype=np.int64), n, coord_rank, n_bins)


def _minhash_bins(
    rows: np.ndarray, cols: np.ndarray, n: int, coord_rank: np.ndarray, n_bins: int
) -> np.ndarray:
    groups, dim = coord_rank.shape
    out = np.full((n, groups, n_bins), dim, dtype=np.int64)
    for g in range(groups):
        rank = coord_rank[g, cols]
        key = rows * n_bins + rank * n_bins // dim
        flat = out[:, g, :].reshape(-1)  # a copy (non-contiguous view): write back below
        np.minimum.at(flat, key, rank)
        out[:, g, :] = flat.reshape(n, n_bins)
    out[out == dim] = -1
    return out


def srp_probes(proj: np.ndarray, n_probes: int) -> np.ndarray:
    """SRP multiprobe codes: proj (n, l, k) float32 projections -> (n, l, n_probes)
    int64 (the code first, then the cheapest one- and two-bit flips; see the module
    docstring for the order)."""
    n, n_tables, k = proj.shape
    weights = np.left_shift(np.int64(1), np.arange(k, dtype=np.int64))
    codes = ((proj >= 0).astype(np.int64) * weights).sum(axis=2)
    out = np.repeat(codes[:, :, None], n_probes, axis=2)
    r = min(k, n_probes - 1)
    if r <= 0 or n == 0:
        return out
    margin = np.abs(proj)
    rank = np.argsort(margin, axis=2, kind="stable")[:, :, :r]  # bit of each rank
    ms = np.take_along_axis(margin, rank, axis=2)  # ascending margins (n, l, r)
    b_of = np.concatenate([np.full(b + 1, b) for b in range(r)]).astype(np.int64)
    a_of = np.concatenate([np.arange(b + 1) for b in range(r)]).astype(np.int64)
    single = a_of == b_of
    cost = np.where(single, ms[:, :, b_of], ms[:, :, a_of] + ms[:, :, b_of]).astype(np.float32)
    n_extra = min(n_probes - 1, a_of.shape[0])
    order = np.argsort(cost, axis=2, kind="stable")[:, :, :n_extra]
    bit_a = np.take_along_axis(rank, a_of[order], axis=2)
    bit_b = np.take_along_axis(rank, b_of[order], axis=2)
    one = np.int64(1)
    masks = np.left_shift(one, bit_a) | np.left_shift(one, bit_b)
    out[:, :, 1 : 1 + n_extra] ^= masks
    return out
