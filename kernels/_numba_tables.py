"""numba kernels of the hash tables and of the exact top-k re-rank.

Same names, signatures and results as the NumPy reference in ``_np_tables`` (read its
docstring for the layouts and conventions). Compiled ``nogil=True, cache=True``; the
query and re-rank kernels run over queries in parallel (``numba.prange``) with
per-thread scratch. Importing this module imports numba.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import prange

from lshcore.kernels._np_tables import METRIC_COSINE, METRIC_IP, METRIC_L2

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

_jit = numba.njit(nogil=True, cache=True)
_pjit = numba.njit(nogil=True, cache=True, parallel=True)
_fjit = numba.njit(nogil=True, cache=True, parallel=True, fastmath=True)

_M1 = np.uint64(0x9E3779B97F4A7C15)
_M2 = np.uint64(0xBF58476D1CE4E5B9)
_M3 = np.uint64(0x94D049BB133111EB)
# id ranges up to this use a dense per-thread counter array; larger ones sort instead
_MARKER_LIMIT = 1 << 23


@_jit
def _draw(seed, bucket, n):  # type: ignore[no-untyped-def]
    z = np.uint64(seed) * _M1 ^ np.uint64(bucket) * _M2 ^ np.uint64(n) * _M3
    z = (z ^ (z >> np.uint64(30))) * _M2
    z = (z ^ (z >> np.uint64(27))) * _M3
    z = z ^ (z >> np.uint64(31))
    return np.int64(z % np.uint64(n))


@_jit
def _reservoir_draw(seed, bucket, n):  # type: ignore[no-untyped-def]
    out = np.empty(n.shape[0], dtype=np.int64)
    for i in range(n.shape[0]):
        out[i] = _draw(seed, bucket[i], n[i])
    return out


def reservoir_draw(seed, bucket, n):  # type: ignore[no-untyped-def]
    """Uniform integer in [0, n) for the n-th arrival to global bucket ``bucket`` (vectorized)."""
    b = np.ascontiguousarray(np.broadcast_to(np.asarray(bucket, dtype=np.int64), np.shape(n)))
    nn = np.ascontiguousarray(np.asarray(n, dtype=np.int64))
    return _reservoir_draw(int(seed), b.ravel(), nn.ravel()).reshape(nn.shape)


@_jit
def fixed_insert(slots, fill, head, seen, buckets, ids, reservoir, seed):  # type: ignore[no-untyped-def]
    n_tables, table_size, cap = slots.shape
    n = ids.shape[0]
    for t in range(n_tables):
        for i in range(n):
            b = buckets[i, t]
            f = fill[t, b]
            h = head[t, b]
            s = seen[t, b] + 1
            seen[t, b] = s
            if f < cap:
                slots[t, b, (h + f) % cap] = ids[i]
                fill[t, b] = f + 1
            elif reservoir:
                j = _draw(seed, t * table_size + b, s)
                if j < cap:
                    slots[t, b, (h + j) % cap] = ids[i]
            else:
                slots[t, b, h] = ids[i]
                head[t, b] = (h + 1) % cap


@_jit
def fixed_remove(slots, fill, head, buckets, ids):  # type: ignore[no-untyped-def]
    n_tables, table_size, cap = slots.shape
    tmp = np.empty(cap, dtype=slots.dtype)
    for t in range(n_tables):
        for i in range(ids.shape[0]):
            b = buckets[i, t]
            f = fill[t, b]
            h = head[t, b]
            kept = 0
            for j in range(f):
                v = slots[t, b, (h + j) % cap]
                if v != ids[i]:
                    tmp[kept] = v
                    kept += 1
            for j in range(kept):
                slots[t, b, j] = tmp[j]
            for j in range(kept, cap):
                slots[t, b, j] = -1
            fill[t, b] = kept
            head[t, b] = 0


@_jit
def _finish_query(raw, raw_ptr, used, m):  # type: ignore[no-untyped-def]
    """Compact per-query results written at ``raw_ptr`` offsets into CSR arrays."""
    indptr = np.zeros(m + 1, dtype=np.int64)
    for i in range(m):
        indptr[i + 1] = indptr[i] + used[i]
    ids = np.empty(indptr[m], dtype=np.int64)
    counts = np.empty(indptr[m], dtype=np.int32)
    for i in range(m):
        src = raw_ptr[i]
        dst = indptr[i]
        for j in range(used[i]):
            ids[dst + j] = raw[0, src + j]
            counts[dst + j] = raw[1, src + j]
    return indptr, ids, counts


@_jit
def _emit(raw, start, touched, n_touched, marker, use_marker):  # type: ignore[no-untyped-def]
    """Write a query's distinct ids (ascending) with counts at raw[:, start:]; reset scratch."""
    if use_marker:
        ts = np.sort(touched[:n_touched])
        for j in range(n_touched):
            v = ts[j]
            raw[0, start + j] = v
            raw[1, start + j] = marker[v]
            marker[v] = 0
        return n_touched
    ts = np.sort(touched[:n_touched])  # touched holds every occurrence here
    out = 0
    j = 0
    while j < n_touched:
        v = ts[j]
        c = 1
        while j + c < n_touched and ts[j + c] == v:
            c += 1
        raw[0, start + out] = v
        raw[1, start + out] = c
        out += 1
        j += c
    return out


@_pjit
def _fixed_query(slots, fill, head, qbuckets, id_bound, use_marker, n_threads):  # type: ignore[no-untyped-def]
    n_tables, table_size, cap = slots.shape
    m, _, n_probes = qbuckets.shape
    raw_ptr = np.zeros(m + 1, dtype=np.int64)
    for i in range(m):
        tot = 0
        for t in range(n_tables):
            for p in range(n_probes):
                b = qbuckets[i, t, p]
                if b >= 0:
                    tot += fill[t, b]
        raw_ptr[i + 1] = raw_ptr[i] + tot
    raw = np.empty((2, raw_ptr[m]), dtype=np.int64)
    used = np.zeros(m, dtype=np.int64)
    n_chunks = min(m, n_threads * 4)
    for c in prange(n_chunks):
        lo = c * m // n_chunks
        hi = (c + 1) * m // n_chunks
        marker = np.zeros(id_bound if use_marker else 1, dtype=np.int32)
        width = 0
        for i in range(lo, hi):
            width = max(width, raw_ptr[i + 1] - raw_ptr[i])
        touched = np.empty(width, dtype=np.int64)
        for i in range(lo, hi):
            nt = 0
            for t in range(n_tables):
                for p in range(n_probes):
                    b = qbuckets[i, t, p]
                    if b < 0:
                        continue
                    f = fill[t, b]
                    h = head[t, b]
                    for j in range(f):
                        v = slots[t, b, (h + j) % cap]
                        if use_marker:
                            if marker[v] == 0:
                                touched[nt] = v
                                nt += 1
                            marker[v] += 1
                        else:
                            touched[nt] = v
                            nt += 1
            used[i] = _emit(raw, raw_ptr[i], touched, nt, marker, use_marker)
    return _finish_query(raw, raw_ptr, used, m)


def fixed_query(slots, fill, head, qbuckets, id_bound):  # type: ignore[no-untyped-def]
    """Candidates of queries with buckets ``qbuckets`` (m, L, P) (-1 = skip) as CSR."""
    id_bound = int(id_bound)
    return _fixed_query(
        slots, fill, head, qbuckets, max(id_bound, 1), id_bound <= _MARKER_LIMIT, numba.get_num_threads()
    )


@_jit
def _sorted_insert(keys, ids, nk, ni):  # type: ignore[no-untyped-def]
    live = 0
    for j in range(ids.shape[0]):
        if ids[j] >= 0:
            live += 1
    total = live + nk.shape[0]
    out_k = np.empty(total, dtype=np.int64)
    out_i = np.empty(total, dtype=np.int32)
    a = 0
    b = 0
    o = 0
    while o < total:
        while a < keys.shape[0] and ids[a] < 0:
            a += 1
        if a < keys.shape[0] and (b >= nk.shape[0] or keys[a] <= nk[b]):
            out_k[o] = keys[a]
            out_i[o] = ids[a]
            a += 1
        else:
            out_k[o] = nk[b]
            out_i[o] = ni[b]
            b += 1
        o += 1
    return out_k, out_i


def sorted_insert(keys, ids, new_keys, new_ids):  # type: ignore[no-untyped-def]
    """Merge entries into a sorted run; returns new ``(keys, ids)`` without tombstones."""
    order = np.argsort(new_keys, kind="stable")
    nk = np.ascontiguousarray(new_keys[order], dtype=np.int64)
    ni = np.ascontiguousarray(new_ids[order], dtype=np.int32)
    return _sorted_insert(keys, ids, nk, ni)


@_jit
def sorted_remove(keys, ids, del_keys, del_ids):  # type: ignore[no-untyped-def]
    removed = 0
    for e in range(del_keys.shape[0]):
        j = np.searchsorted(keys, del_keys[e], side="left")
        while j < keys.shape[0] and keys[j] == del_keys[e]:
            if ids[j] == del_ids[e]:
                ids[j] = -1
                removed += 1
            j += 1
    return removed


@_pjit
def _sorted_query(keys, ids, offsets, qkeys, id_bound, use_marker, n_threads):  # type: ignore[no-untyped-def]
    m, width = qkeys.shape
    lo = np.empty((m, width), dtype=np.int64)
    hi = np.empty((m, width), dtype=np.int64)
    raw_ptr = np.zeros(m + 1, dtype=np.int64)
    for i in prange(m):
        for w in range(width):
            q = qkeys[i, w]
            if q < 0:
                lo[i, w] = 0
                hi[i, w] = 0
            elif offsets.shape[0] > 0:
                lo[i, w] = offsets[q]
                hi[i, w] = offsets[q + 1]
            else:
                lo[i, w] = np.searchsorted(keys, q, side="left")
                hi[i, w] = np.searchsorted(keys, q, side="right")
    for i in range(m):
        tot = 0
        for w in range(width):
            tot += hi[i, w] - lo[i, w]
        raw_ptr[i + 1] = raw_ptr[i] + tot
    raw = np.empty((2, raw_ptr[m]), dtype=np.int64)
    used = np.zeros(m, dtype=np.int64)
    n_chunks = min(m, n_threads * 4)
    for c in prange(n_chunks):
        qlo = c * m // n_chunks
        qhi = (c + 1) * m // n_chunks
        marker = np.zeros(id_bound if use_marker else 1, dtype=np.int32)
        cap = 0
        for i in range(qlo, qhi):
            cap = max(cap, raw_ptr[i + 1] - raw_ptr[i])
        touched = np.empty(cap, dtype=np.int64)
        for i in range(qlo, qhi):
            nt = 0
            for w in range(width):
                for j in range(lo[i, w], hi[i, w]):
                    v = ids[j]
                    if v < 0:
                        continue
                    if use_marker:
                        if marker[v] == 0:
                            touched[nt] = v
                            nt += 1
                        marker[v] += 1
                    else:
                        touched[nt] = v
                        nt += 1
            used[i] = _emit(raw, raw_ptr[i], touched, nt, marker, use_marker)
    return _finish_query(raw, raw_ptr, used, m)


def sorted_query(keys, ids, offsets, qkeys, id_bound):  # type: ignore[no-untyped-def]
    """Candidates of queries with global bucket keys ``qkeys`` (m, L*P) (-1 = skip) as CSR."""
    id_bound = int(id_bound)
    return _sorted_query(
        keys, ids, offsets, qkeys, max(id_bound, 1), id_bound <= _MARKER_LIMIT, numba.get_num_threads()
    )


@_jit
def bucket_offsets(keys, n_keys):  # type: ignore[no-untyped-def]
    out = np.zeros(n_keys + 1, dtype=np.int64)
    for j in range(keys.shape[0]):
        out[keys[j] + 1] += 1
    for j in range(n_keys):
        out[j + 1] += out[j]
    return out


@_fjit
def rerank_topk(vectors, xnorm, indptr, rows, queries, qnorm, k, metric):  # type: ignore[no-untyped-def]
    m = queries.shape[0]
    d = vectors.shape[1]
    out_s = np.full((m, k), -np.inf, dtype=np.float32)
    out_r = np.full((m, k), -1, dtype=np.int64)
    for i in prange(m):
        filled = 0
        for j in range(indptr[i], indptr[i + 1]):
            r = rows[j]
            acc = np.float32(0.0)
            for c in range(d):
                acc += vectors[r, c] * queries[i, c]
            if metric == METRIC_COSINE:
                den = xnorm[r] * qnorm[i]
                s = acc / den if den > 0 else np.float32(0.0)
            elif metric == METRIC_L2:
                s = -np.sqrt(max(xnorm[r] + qnorm[i] - 2 * acc, np.float32(0.0)))
            else:
                s = acc
            s = np.float32(s)
            if filled == k and not s > out_s[i, k - 1]:
                continue
            # insert keeping (score desc, row asc); rows arrive ascending, so ties stay behind
            pos = filled if filled < k else k - 1
            while pos > 0 and s > out_s[i, pos - 1]:
                if pos < k:
                    out_s[i, pos] = out_s[i, pos - 1]
                    out_r[i, pos] = out_r[i, pos - 1]
                pos -= 1
            out_s[i, pos] = s
            out_r[i, pos] = r
            if filled < k:
                filled += 1
    return out_s, out_r
