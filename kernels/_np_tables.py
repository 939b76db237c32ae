"""NumPy reference kernels of the hash tables and of the exact top-k re-rank.

Two table layouts (see ``lshcore.search.tables``):

* **fixed** buckets (policies ``fifo`` and ``reservoir``): ``slots`` (L, T, C) int32 holds
  ids (-1 = empty slot); a bucket is a ring of capacity C whose ``fill`` (L, T) int32
  valid entries start at ``head`` (L, T) int32, oldest first; ``seen`` (L, T) int64
  counts every arrival (the reservoir's n).
* **sorted** runs (policy ``unbounded``): ``keys`` (N,) int64 sorted ascending, the global
  bucket key ``t * T + b`` of each entry, and ``ids`` (N,) int32 (-1 = removed entry, a
  tombstone, dropped when the run is next rewritten). A query reads a large main run and
  a small pending run of recent inserts.

Arrival order is table-major then row order: entry (i, t) of ``buckets`` (n, L) arrives
before (i + 1, t). Query buckets of -1 are skipped (a duplicate probe). A query returns
CSR arrays ``indptr`` (m + 1,) int64, ``ids`` (nnz,) int64 ascending within each query,
``counts`` (nnz,) int32 = how many (table, probe) buckets held the id.

These functions work on any array module with NumPy's API (NumPy, CuPy): the module is
taken from the arguments. The numba kernels in ``_numba_tables`` have the same names,
signatures and results.
"""

from __future__ import annotations

from typing import Any

import numpy as np

METRIC_IP = 0  #: score = x . q
METRIC_COSINE = 1  #: score = x . q / (|x| |q|)   (norm arrays hold |x|, |q|)
METRIC_L2 = 2  #: score = -|x - q|                 (norm arrays hold |x|^2, |q|^2)

_M1 = 0x9E3779B97F4A7C15
_M2 = 0xBF58476D1CE4E5B9
_M3 = 0x94D049BB133111EB

# scratch elements a vectorized query may materialize at once (bounds memory)
_CHUNK_ELEMENTS = 1 << 22


def _xp(a: Any) -> Any:
    """The array module of ``a`` (cupy for CuPy arrays, else numpy); no import of cupy."""
    mod = type(a).__module__.split(".")[0]
    if mod == "cupy":
        import cupy

        return cupy
    return np


def reservoir_draw(seed: Any, bucket: Any, n: Any) -> Any:
    """Uniform integer in [0, n) for the n-th arrival (1-based) to global bucket ``bucket``.

    A counter-based hash (splitmix64 finalizer), so that the NumPy and numba kernels draw
    the same numbers without sharing generator state.
    """
    xp = _xp(n)
    u64 = xp.uint64
    with np.errstate(over="ignore"):
        z = (
            xp.asarray(seed, dtype=u64) * u64(_M1)
            ^ xp.asarray(bucket, dtype=u64) * u64(_M2)
            ^ xp.asarray(n, dtype=u64) * u64(_M3)
        )
        z = (z ^ (z >> u64(30))) * u64(_M2)
        z = (z ^ (z >> u64(27))) * u64(_M3)
        z = z ^ (z >> u64(31))
    return (z % xp.asarray(n, dtype=u64)).astype(np.int64)


def _group_ranks(keys: Any) -> tuple[Any, Any, Any, Any]:
    """Stable order of ``keys``, the sorted keys, each one's rank in its group, group sizes."""
    xp = _xp(keys)
    order = xp.argsort(keys, kind="stable")
    sk = keys[order]
    first = xp.ones(sk.shape[0], dtype=bool)
    first[1:] = sk[1:] != sk[:-1]
    starts = xp.nonzero(first)[0]
    sizes = xp.diff(xp.concatenate([starts, xp.asarray([sk.shape[0]])]))
    rank = xp.arange(sk.shape[0]) - xp.repeat(starts, sizes)
    return order, sk, rank, xp.repeat(sizes, sizes)


def fixed_insert(slots, fill, head, seen, buckets, ids, reservoir, seed):  # type: ignore[no-untyped-def]
    """Insert ``ids`` (n,) at ``buckets`` (n, L) into every table, in place.

    FIFO: a full bucket overwrites its oldest entry. Reservoir (Algorithm R): a bucket
    that is not full appends; the n-th arrival to a full bucket draws j uniform in
    [0, n) and replaces ring slot j when j < C (kept with probability C/n).
    """
    xp = _xp(slots)
    n_tables, table_size, cap = slots.shape
    n = ids.shape[0]
    if n == 0:
        return
    g = (xp.arange(n_tables, dtype=np.int64)[:, None] * table_size + buckets.T).ravel()
    id_flat = xp.tile(ids.astype(np.int32), n_tables)
    order, gs, r, cnt = _group_ranks(g)
    id_s = id_flat[order]
    fill_f, head_f, seen_f = fill.reshape(-1), head.reshape(-1), seen.reshape(-1)
    f = fill_f[gs].astype(np.int64)
    h = head_f[gs].astype(np.int64)
    s = seen_f[gs]
    appended = f + r < cap
    if reservoir:
        draw = reservoir_draw(seed, gs, s + r + 1)
        keep = appended | (draw < cap)
        pos = xp.where(appended, (h + f + r) % cap, (h + draw) % cap)
    else:
        keep = r >= cnt - cap  # only the newest C arrivals of this call can survive
        pos = (h + f + r) % cap
    flat = gs[keep] * cap + pos[keep]
    vals = id_s[keep]
    # several arrivals may land in one slot: the last one (highest rank) wins
    last = xp.ones(flat.shape[0], dtype=bool)
    o2 = xp.argsort(flat, kind="stable")
    fs = flat[o2]
    last[:-1] = fs[1:] != fs[:-1]
    slots.reshape(-1)[fs[last]] = vals[o2][last]
    # per-bucket state, written once per bucket (its last entry in sorted order)
    end = xp.ones(gs.shape[0], dtype=bool)
    end[:-1] = gs[1:] != gs[:-1]
    ge, fe, he, ce, se = gs[end], f[end], h[end], cnt[end], s[end]
    total = fe + ce
    fill_f[ge] = xp.minimum(total, cap).astype(fill.dtype)
    if not reservoir:
        head_f[ge] = ((he + xp.maximum(total - cap, 0)) % cap).astype(head.dtype)
    seen_f[ge] = se + ce


def fixed_remove(slots, fill, head, buckets, ids):  # type: ignore[no-untyped-def]
    """Remove every occurrence of ``ids`` (n,) from their ``buckets`` (n, L), in place.

    Each touched bucket is re-packed oldest first from slot 0 (head = 0); an id that is
    no longer in its bucket (evicted) is ignored.
    """
    xp = _xp(slots)
    n_tables, table_size, cap = slots.shape
    if ids.shape[0] == 0:
        return
    g = (xp.arange(n_tables, dtype=np.int64)[:, None] * table_size + buckets.T).ravel()
    id_flat = xp.tile(ids.astype(np.int32), n_tables)
    ug, inv = xp.unique(g, return_inverse=True)
    rows = slots.reshape(-1, cap)
    fill_f, head_f = fill.reshape(-1), head.reshape(-1)
    ar = xp.arange(cap)
    ring_idx = (head_f[ug].astype(np.int64)[:, None] + ar[None, :]) % cap
    ring = xp.take_along_axis(rows[ug], ring_idx, axis=1)  # (u, C) oldest first
    valid = ar[None, :] < fill_f[ug][:, None]
    kill = xp.zeros(ring.shape, dtype=np.int32)
    hit = (ring[inv] == id_flat[:, None]).astype(np.int32)
    if xp is np:
        np.add.at(kill, inv, hit)
    else:  # cupy
        import cupyx

        cupyx.scatter_add(kill, inv, hit)
    keep = valid & (kill == 0)
    order = xp.argsort(~keep, axis=1, kind="stable")
    packed = xp.take_along_axis(ring, order, axis=1)
    kept = keep.sum(axis=1)
    packed[ar[None, :] >= kept[:, None]] = -1
    rows[ug] = packed
    fill_f[ug] = kept.astype(fill.dtype)
    head_f[ug] = 0


def _csr_from_pairs(qidx, ids, m, id_bound):  # type: ignore[no-untyped-def]
    """Unique (query, id) pairs with their multiplicity, as CSR (ids ascending)."""
    xp = _xp(ids)
    key = qidx.astype(np.int64) * np.int64(id_bound) + ids.astype(np.int64)
    uk, counts = xp.unique(key, return_counts=True)
    q_of = uk // id_bound
    indptr = xp.searchsorted(q_of, xp.arange(m + 1), side="left").astype(np.int64)
    return indptr, (uk % id_bound).astype(np.int64), counts.astype(np.int32)


def _concat_csr(parts, xp):  # type: ignore[no-untyped-def]
    indptrs, idss, cnts = zip(*parts, strict=True)
    offset = 0
    out = [xp.zeros(1, dtype=np.int64)]
    for ip in indptrs:
        out.append(ip[1:] + offset)
        offset += int(ip[-1])
    return xp.concatenate(out), xp.concatenate(idss), xp.concatenate(cnts)


def fixed_query(slots, fill, head, qbuckets, id_bound):  # type: ignore[no-untyped-def]
    """Candidates of queries with buckets ``qbuckets`` (m, L, P) (-1 = skip) as CSR."""
    xp = _xp(slots)
    n_tables, table_size, cap = slots.shape
    m = qbuckets.shape[0]
    per_query = max(1, qbuckets.shape[1] * qbuckets.shape[2] * cap)
    step = max(1, _CHUNK_ELEMENTS // per_query)
    rows = slots.reshape(-1, cap)
    parts = []
    for lo in range(0, m, step):
        qb = qbuckets[lo : lo + step]
        mm = qb.shape[0]
        g = xp.arange(n_tables, dtype=np.int64)[None, :, None] * table_size + qb
        ok = qb >= 0
        got = rows[xp.where(ok, g, 0)]  # (mm, L, P, C)
        got = xp.where(ok[..., None], got, -1)
        qi = xp.broadcast_to(xp.arange(mm)[:, None, None, None], got.shape)
        valid = got >= 0
        parts.append(_csr_from_pairs(qi[valid], got[valid], mm, id_bound))
    if not parts:
        return xp.zeros(1, dtype=np.int64), xp.zeros(0, dtype=np.int64), xp.zeros(0, dtype=np.int32)
    return _concat_csr(parts, xp)


def sorted_insert(keys, ids, new_keys, new_ids):  # type: ignore[no-untyped-def]
    """Merge entries (``new_keys`` (n,) int64, ``new_ids`` (n,)) into a sorted run.

    Returns new ``(keys, ids)``; tombstones (id -1) are dropped; a new entry goes after
    the existing entries of its bucket, and new entries of one bucket keep their order.
    """
    xp = _xp(keys)
    live = ids >= 0
    k0, i0 = keys[live], ids[live]
    order = xp.argsort(new_keys, kind="stable")
    nk, ni = new_keys[order].astype(np.int64), new_ids[order].astype(np.int32)
    pos = xp.searchsorted(k0, nk, side="right") + xp.arange(nk.shape[0])
    total = k0.shape[0] + nk.shape[0]
    out_k = xp.empty(total, dtype=np.int64)
    out_i = xp.empty(total, dtype=np.int32)
    old = xp.ones(total, dtype=bool)
    old[pos] = False
    out_k[pos], out_i[pos] = nk, ni
    out_k[old], out_i[old] = k0, i0
    return out_k, out_i


def _ranges(lo, hi, xp):  # type: ignore[no-untyped-def]
    """Concatenated ``arange(lo[j], hi[j])`` and the owner j of each element."""
    lens = hi - lo
    owner = xp.repeat(xp.arange(lo.shape[0]), lens)
    starts = xp.cumsum(lens) - lens
    pos = xp.arange(int(lens.sum())) - xp.repeat(starts, lens) + xp.repeat(lo, lens)
    return pos, owner


def sorted_remove(keys, ids, del_keys, del_ids):  # type: ignore[no-untyped-def]
    """Mark every entry (``del_keys``, ``del_ids``) as removed (id -1) in place; returns how many."""
    xp = _xp(keys)
    lo = xp.searchsorted(keys, del_keys, side="left")
    hi = xp.searchsorted(keys, del_keys, side="right")
    pos, owner = _ranges(lo, hi, xp)
    hit = pos[ids[pos] == del_ids[owner].astype(ids.dtype)]
    hit = xp.unique(hit)
    ids[hit] = -1
    return int(hit.shape[0])


def sorted_remove_at(keys, ids, offsets, del_keys, del_ids):  # type: ignore[no-untyped-def]
    """:func:`sorted_remove` with the run's bucket starts ``offsets`` (``bucket_offsets``;
    empty = none, then binary search): the same result, found without a search."""
    if offsets.shape[0] == 0:
        return sorted_remove(keys, ids, del_keys, del_ids)
    xp = _xp(keys)
    lo, hi = offsets[del_keys], offsets[del_keys + 1]
    pos, owner = _ranges(lo, hi, xp)
    hit = pos[ids[pos] == del_ids[owner].astype(ids.dtype)]
    hit = xp.unique(hit)
    ids[hit] = -1
    return int(hit.shape[0])


def sorted_query(keys, ids, offsets, pkeys, pids, qkeys, id_bound):  # type: ignore[no-untyped-def]
    """Candidates of queries with global bucket keys ``qkeys`` (m, L*P) (-1 = skip) as CSR.

    Two sorted runs are searched: the main run (``keys``, ``ids``; ``offsets`` (L*T + 1,)
    holds where each bucket starts (``bucket_offsets``), or is empty: then binary search)
    and a small pending run of recent inserts (``pkeys``, ``pids``; binary search).
    """
    xp = _xp(keys)
    m, width = qkeys.shape
    flat = qkeys.reshape(-1)
    if offsets.shape[0] > 0:
        safe = xp.maximum(flat, 0)
        lo, hi = offsets[safe], offsets[safe + 1]
    else:
        lo = xp.searchsorted(keys, flat, side="left")
        hi = xp.searchsorted(keys, flat, side="right")
    hi = xp.where(flat >= 0, hi, lo)
    plo = xp.searchsorted(pkeys, flat, side="left")
    phi = xp.where(flat >= 0, xp.searchsorted(pkeys, flat, side="right"), plo)
    pos, owner = _ranges(lo, hi, xp)
    ppos, powner = _ranges(plo, phi, xp)
    got = xp.concatenate([ids[pos], pids[ppos]])
    qi = xp.concatenate([owner, powner]) // width
    valid = got >= 0
    return _csr_from_pairs(qi[valid], got[valid], m, id_bound)


def bucket_offsets(keys, n_keys):  # type: ignore[no-untyped-def]
    """Start of every global bucket key 0..n_keys-1 in a sorted run, (n_keys + 1,) int64."""
    xp = _xp(keys)
    out = xp.zeros(n_keys + 1, dtype=np.int64)
    out[1:] = xp.cumsum(xp.bincount(keys, minlength=n_keys))
    return out


def rerank_topk(vectors, xnorm, indptr, rows, queries, qnorm, k, metric):  # type: ignore[no-untyped-def]
    """Exact top-``k`` of each query's candidate ``rows`` (CSR ``indptr``, ``rows``).

    ``vectors`` (N, d) float32 are indexed by row; ``xnorm`` (N,), ``qnorm`` (m,) hold
    |x| (cosine) or |x|^2 (l2) and are ignored for inner product. Returns ``scores``
    (m, k) float32, best first (ties: smaller row first), -inf padding, and ``rows``
    (m, k) int64, -1 padding. A zero vector has cosine 0 with everything.
    """
    xp = _xp(vectors)
    m = queries.shape[0]
    out_s = xp.full((m, k), -np.inf, dtype=np.float32)
    out_r = xp.full((m, k), -1, dtype=np.int64)
    nnz = int(indptr[-1])
    if nnz == 0:
        return out_s, out_r
    counts = xp.diff(indptr)
    qidx = xp.repeat(xp.arange(m), counts)
    d = max(1, vectors.shape[1])
    scores = xp.empty(nnz, dtype=np.float32)
    step = max(1, _CHUNK_ELEMENTS // d)
    for lo in range(0, nnz, step):
        r = rows[lo : lo + step]
        q = qidx[lo : lo + step]
        dot = xp.einsum("ij,ij->i", vectors[r], queries[q])
        if metric == METRIC_COSINE:
            den = xnorm[r] * qnorm[q]
            dot = xp.where(den > 0, dot / xp.where(den > 0, den, 1), 0)
        elif metric == METRIC_L2:
            dot = -xp.sqrt(xp.maximum(xnorm[r] + qnorm[q] - 2 * dot, 0))
        scores[lo : lo + step] = dot
    order = xp.lexsort(xp.stack([rows, -scores.astype(np.float64), qidx]))
    rank = xp.arange(nnz) - xp.repeat(indptr[:-1], counts)
    sel = order[rank < k]
    rk = rank[rank < k]
    out_s[qidx[sel], rk] = scores[sel]
    out_r[qidx[sel], rk] = rows[sel]
    return out_s, out_r


def sorted_query_rerank(
    keys, ids, offsets, pkeys, pids, qkeys, id_bound, vectors, xnorm, queries, qnorm, k, metric
):  # type: ignore[no-untyped-def]
    """:func:`sorted_query` then :func:`rerank_topk` of the candidates, in one call.

    Returns ``(scores, rows, n_candidates)``: the top-``k`` as :func:`rerank_topk` gives
    them and the total number of distinct (query, candidate) pairs scored. The numba
    version fuses the two (no candidate lists are built or sorted).
    """
    indptr, rows, _ = sorted_query(keys, ids, offsets, pkeys, pids, qkeys, id_bound)
    scores, got = rerank_topk(vectors, xnorm, indptr, rows, queries, qnorm, k, metric)
    return scores, got, int(indptr[-1])


def pending_directory(pkeys, n_keys):  # type: ignore[no-untyped-def]
    """Directory of a sorted pending run ``pkeys`` over global keys ``[0, n_keys)``:
    ``(pdir, pshift)`` with ``pdir[g]`` the first entry whose key ``>> pshift`` is at
    least ``g`` (about two entries per group), for ``g`` up to ``(n_keys - 1) >> pshift``
    plus one."""
    xp = _xp(pkeys)
    groups = 1 << max(0, (int(pkeys.shape[0]) // 2).bit_length())
    groups = min(groups, 1 << 20)
    span = max(1, (int(n_keys) - 1).bit_length())
    pshift = max(0, span - (groups.bit_length() - 1))
    n_groups = ((int(n_keys) - 1) >> pshift) + 1 if n_keys > 0 else 1
    pdir = (
        bucket_offsets(pkeys >> pshift, n_groups)
        if pkeys.shape[0]
        else xp.zeros(n_groups + 1, dtype=np.int64)
    )
    return pdir, pshift


#: candidates of a query scored in the sketch re-rank's first stage, beyond its k
SKETCH_EXTRA = 8


def sketch_hmax(score, n_bits, delta):  # type: ignore[no-untyped-def]
    """Largest sign-sketch Hamming distance a candidate may have and still be scored,
    given the current k-th best cosine ``score`` (float), ``n_bits`` sketch bits and the
    per-candidate miss probability ``delta``.

    With ``n_bits`` independent Gaussian sign projections, the distance of a vector at
    angle theta is Binomial(n_bits, p = theta / pi); Bernstein's inequality bounds
    P(h >= n_bits p + t) <= delta for t = L/3 + sqrt(L^2/9 + 2 n_bits p (1 - p) L),
    L = ln(1/delta). A candidate whose cosine is at least ``score`` has p no larger, so
    it lies beyond the returned distance with probability at most ``delta``.
    Returns ``n_bits`` (score everything) when ``score`` is not finite.
    """
    if not np.isfinite(score):
        return int(n_bits)
    p = float(np.arccos(min(1.0, max(-1.0, float(score))))) / np.pi
    big_l = float(np.log(1.0 / delta))
    var = n_bits * p * (1.0 - p)
    t = big_l / 3.0 + float(np.sqrt(big_l * big_l / 9.0 + 2.0 * var * big_l))
    return int(min(n_bits, np.floor(n_bits * p + t)))


def _popcount_rows(x):  # type: ignore[no-untyped-def]
    """Set bits of each row of a uint64 array (n, w) -> (n,) int64."""
    b = np.ascontiguousarray(x).view(np.uint8)
    return np.unpackbits(b, axis=1).sum(axis=1, dtype=np.int64)


def sorted_query_sketch_rerank(
    keys,
    ids,
    offsets,
    pkeys,
    pids,
    qkeys,
    id_bound,
    vectors,
    xnorm,
    queries,
    qnorm,
    k,
    metric,
    pdir,
    pshift,
    sketches,
    qsketches,
    n_bits,
    delta,
):  # type: ignore[no-untyped-def]
    """Top-``k`` of the candidates (as :func:`sorted_query_rerank`), scoring exactly only
    those a sign sketch does not rule out (host arrays; the index uses it for cosine).

    ``sketches`` (N, W) uint64 holds ``n_bits`` sign bits of every row (zero above), and
    ``qsketches`` (m, W) those of the queries; ``h`` = Hamming distance. Per query, with
    ``first = k + SKETCH_EXTRA``: when it has at most ``first`` distinct candidates all
    are scored; otherwise stage 1 scores every candidate with ``h <= h1``, ``h1`` the
    ``first``-th smallest distance (ties included), and stage 2 every other candidate
    with ``h <= sketch_hmax(s_k, n_bits, delta)``, ``s_k`` the k-th best stage-1 score.
    A candidate that belongs in the exact top-k is skipped with probability at most
    ``delta`` (see :func:`sketch_hmax`). The result is the exact top-k (ties: smaller
    row) of the scored candidates. Returns ``(scores, rows, n_candidates, n_scored)``.

    ``pdir`` / ``pshift``: the pending run's directory (:func:`pending_directory`), which
    lets the numba kernel find a bucket of the pending run without a binary search; the
    result does not depend on it (this reference does not read it).
    """
    indptr, rows, _ = sorted_query(keys, ids, offsets, pkeys, pids, qkeys, id_bound)
    m = qkeys.shape[0]
    nnz = int(indptr[-1])
    counts = np.diff(indptr)
    qidx = np.repeat(np.arange(m), counts)
    h = _popcount_rows(sketches[rows] ^ qsketches[qidx]) if nnz else np.zeros(0, np.int64)
    keep = np.ones(nnz, dtype=bool)
    first = int(k) + SKETCH_EXTRA
    for i in range(m):
        lo, hi = int(indptr[i]), int(indptr[i + 1])
        if hi - lo <= first:
            continue
        hq = h[lo:hi]
        h1 = int(np.partition(hq, first - 1)[first - 1])
        stage1 = hq <= h1
        sel = rows[lo:hi][stage1]
        one = np.zeros(2, dtype=np.int64)
        one[1] = sel.shape[0]
        s1, _ = rerank_topk(
            vectors, xnorm, one, sel, queries[i : i + 1], qnorm[i : i + 1], k, metric
        )
        hmax = sketch_hmax(float(s1[0, k - 1]), int(n_bits), float(delta))
        keep[lo:hi] = hq <= max(h1, hmax)
    kept_counts = np.bincount(qidx[keep], minlength=m)
    kept_indptr = np.zeros(m + 1, dtype=np.int64)
    kept_indptr[1:] = np.cumsum(kept_counts)
    scores, got = rerank_topk(vectors, xnorm, kept_indptr, rows[keep], queries, qnorm, k, metric)
    return scores, got, nnz, int(keep.sum())
