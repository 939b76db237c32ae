"""numba kernels of the hash tables and of the exact top-k re-rank.

Same names, signatures and results as the NumPy reference in ``_np_tables`` (read its
docstring for the layouts and conventions). Compiled ``nogil=True, cache=True``; the
query and re-rank kernels run over queries in parallel (``numba.prange``) with
per-thread scratch. Importing this module imports numba.
"""

from __future__ import annotations

import numba
import numpy as np
from llvmlite import ir
from numba import prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from lshcore.kernels import _numba_setup  # noqa: F401  (numba's pool: passive wait)
from lshcore.kernels._np_tables import METRIC_COSINE, METRIC_IP, METRIC_L2  # noqa: F401 (re-exported)
from lshcore.kernels._np_tables import SKETCH_EXTRA as _SKETCH_EXTRA

_jit = numba.njit(nogil=True, cache=True)
_pjit = numba.njit(nogil=True, cache=True, parallel=True)

_M1 = np.uint64(0x9E3779B97F4A7C15)
_M2 = np.uint64(0xBF58476D1CE4E5B9)
_M3 = np.uint64(0x94D049BB133111EB)
# id ranges up to this use a dense per-thread counter array; larger ones sort instead
_MARKER_LIMIT = 1 << 23
# id ranges up to this use a per-thread bitset in the fused query + re-rank (16 MiB)
_BITSET_LIMIT = 1 << 27
# raw entries (or multiply-adds / 8) below which a call runs on one thread
_PARALLEL_WORK = 1 << 19


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


@_jit
def _fixed_sizes(fill, qbuckets):  # type: ignore[no-untyped-def]
    """Offsets of each query's raw (undeduplicated) entries, (m + 1,)."""
    m, n_tables, n_probes = qbuckets.shape
    raw_ptr = np.zeros(m + 1, dtype=np.int64)
    for i in range(m):
        tot = 0
        for t in range(n_tables):
            for p in range(n_probes):
                b = qbuckets[i, t, p]
                if b >= 0:
                    tot += fill[t, b]
        raw_ptr[i + 1] = raw_ptr[i] + tot
    return raw_ptr


@_jit
def _fixed_chunk(slots, fill, head, qbuckets, id_bound, use_marker, raw, raw_ptr, used, lo, hi):  # type: ignore[no-untyped-def]
    """Distinct ids of queries lo..hi-1 into ``raw`` (own scratch: thread-safe per range)."""
    n_tables, table_size, cap = slots.shape
    n_probes = qbuckets.shape[2]
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


@_pjit
def _fixed_parallel(
    slots, fill, head, qbuckets, id_bound, use_marker, raw, raw_ptr, used, n_chunks
):  # type: ignore[no-untyped-def]
    m = qbuckets.shape[0]
    for c in prange(n_chunks):
        _fixed_chunk(
            slots,
            fill,
            head,
            qbuckets,
            id_bound,
            use_marker,
            raw,
            raw_ptr,
            used,
            c * m // n_chunks,
            (c + 1) * m // n_chunks,
        )


def _chunks(m: int, work: int) -> int:
    """Parallel chunks for ``m`` queries with ``work`` raw entries (1 = run serially).

    Small calls stay serial: waking a thread team costs more than it saves, and far
    more on a loaded machine (OpenMP threads spin).
    """
    threads = numba.get_num_threads()
    if threads < 2 or m < 2 or work < _PARALLEL_WORK:
        return 1
    return min(m, 2 * threads)


def fixed_query(slots, fill, head, qbuckets, id_bound):  # type: ignore[no-untyped-def]
    """Candidates of queries with buckets ``qbuckets`` (m, L, P) (-1 = skip) as CSR."""
    bound = max(int(id_bound), 1)
    use_marker = bound <= _MARKER_LIMIT
    m = qbuckets.shape[0]
    raw_ptr = _fixed_sizes(fill, qbuckets)
    raw = np.empty((2, int(raw_ptr[m])), dtype=np.int64)
    used = np.zeros(m, dtype=np.int64)
    n_chunks = _chunks(m, int(raw_ptr[m]))
    if n_chunks == 1:
        _fixed_chunk(slots, fill, head, qbuckets, bound, use_marker, raw, raw_ptr, used, 0, m)
    else:
        _fixed_parallel(
            slots, fill, head, qbuckets, bound, use_marker, raw, raw_ptr, used, n_chunks
        )
    return _finish_query(raw, raw_ptr, used, m)


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
def _sorted_remove(keys, ids, del_keys, del_ids, order):  # type: ignore[no-untyped-def]
    """Tombstone the entries (del_keys, del_ids) visited in ascending key ``order``: each
    search gallops forward from the previous one (short hops through nearby memory
    instead of a full binary search of a large run per entry)."""
    n = keys.shape[0]
    removed = 0
    base = 0
    for o in range(order.shape[0]):
        e = order[o]
        key = del_keys[e]
        # first j >= base with keys[j] >= key (every key before base is smaller)
        lo = base
        if lo < n and keys[lo] < key:
            prev = lo  # keys[prev] < key
            step = 1
            hi = lo + 1
            while hi < n and keys[hi] < key:
                prev = hi
                step *= 2
                hi = base + step
            if hi > n:
                hi = n
            lo = prev + 1
            while lo < hi:
                mid = (lo + hi) // 2
                if keys[mid] < key:
                    lo = mid + 1
                else:
                    hi = mid
        base = lo
        j = lo
        while j < n and keys[j] == key:
            if ids[j] == del_ids[e]:
                ids[j] = -1
                removed += 1
            j += 1
    return removed


def sorted_remove(keys, ids, del_keys, del_ids):  # type: ignore[no-untyped-def]
    """Tombstone entries (see the NumPy reference); returns how many were removed."""
    dk = np.ascontiguousarray(del_keys, dtype=np.int64)
    order = np.argsort(dk, kind="stable")
    return _sorted_remove(keys, ids, dk, np.ascontiguousarray(del_ids), order)


@_jit
def _sorted_remove_at(ids, offsets, del_keys, del_ids):  # type: ignore[no-untyped-def]
    removed = 0
    n = del_keys.shape[0]
    for e in range(n):
        # two-stage prefetch: the bucket start of an entry far ahead, the bucket itself
        # of a nearer one (whose start has arrived by then): the misses overlap
        if e + 2 * _REMOVE_AHEAD < n:
            _prefetch1(offsets, del_keys[e + 2 * _REMOVE_AHEAD])
        if e + _REMOVE_AHEAD < n:
            _prefetch1(ids, offsets[del_keys[e + _REMOVE_AHEAD]])
        q = del_keys[e]
        for j in range(offsets[q], offsets[q + 1]):
            if ids[j] == del_ids[e]:
                ids[j] = -1
                removed += 1
    return removed


def sorted_remove_at(keys, ids, offsets, del_keys, del_ids):  # type: ignore[no-untyped-def]
    """Tombstone entries using the bucket starts (see the NumPy reference)."""
    if offsets.shape[0] == 0:
        return sorted_remove(keys, ids, del_keys, del_ids)
    dk = np.ascontiguousarray(del_keys, dtype=np.int64)
    return _sorted_remove_at(ids, offsets, dk, np.ascontiguousarray(del_ids))


@_jit
def _run_bounds(keys, offsets, qkeys, lo, hi):  # type: ignore[no-untyped-def]
    """Entry range [lo, hi) of every query bucket in one sorted run (offsets or binary search)."""
    m, width = qkeys.shape
    for i in range(m):
        for w in range(width):
            q = qkeys[i, w]
            if q < 0:
                continue
            if offsets.shape[0] > 0:
                lo[i, w] = offsets[q]
                hi[i, w] = offsets[q + 1]
            elif keys.shape[0] > 0:
                lo[i, w] = np.searchsorted(keys, q, side="left")
                hi[i, w] = np.searchsorted(keys, q, side="right")


@_jit
def _sorted_bounds(keys, offsets, pkeys, qkeys):  # type: ignore[no-untyped-def]
    """Ranges in the main and the pending run, and each query's raw offsets."""
    m, width = qkeys.shape
    lo = np.zeros((2, m, width), dtype=np.int64)
    hi = np.zeros((2, m, width), dtype=np.int64)
    _run_bounds(keys, offsets, qkeys, lo[0], hi[0])
    _run_bounds(pkeys, offsets[:0], qkeys, lo[1], hi[1])
    raw_ptr = np.zeros(m + 1, dtype=np.int64)
    for i in range(m):
        tot = 0
        for r in range(2):
            for w in range(width):
                tot += hi[r, i, w] - lo[r, i, w]
        raw_ptr[i + 1] = raw_ptr[i] + tot
    return lo, hi, raw_ptr


@_jit
def _sorted_chunk(ids, pids, lo, hi, id_bound, use_marker, raw, raw_ptr, used, qlo, qhi):  # type: ignore[no-untyped-def]
    width = lo.shape[2]
    marker = np.zeros(id_bound if use_marker else 1, dtype=np.int32)
    cap = 0
    for i in range(qlo, qhi):
        cap = max(cap, raw_ptr[i + 1] - raw_ptr[i])
    touched = np.empty(cap, dtype=np.int64)
    for i in range(qlo, qhi):
        nt = 0
        for r in range(2):
            run = ids if r == 0 else pids
            for w in range(width):
                for j in range(lo[r, i, w], hi[r, i, w]):
                    v = run[j]
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


@_pjit
def _sorted_parallel(ids, pids, lo, hi, id_bound, use_marker, raw, raw_ptr, used, n_chunks):  # type: ignore[no-untyped-def]
    m = lo.shape[1]
    for c in prange(n_chunks):
        _sorted_chunk(
            ids,
            pids,
            lo,
            hi,
            id_bound,
            use_marker,
            raw,
            raw_ptr,
            used,
            c * m // n_chunks,
            (c + 1) * m // n_chunks,
        )


def sorted_query(keys, ids, offsets, pkeys, pids, qkeys, id_bound):  # type: ignore[no-untyped-def]
    """Candidates of queries with global bucket keys ``qkeys`` (m, L*P) (-1 = skip) as CSR."""
    bound = max(int(id_bound), 1)
    return _sorted_query_mode(keys, ids, offsets, pkeys, pids, qkeys, bound, bound <= _MARKER_LIMIT)


def _sorted_query_mode(keys, ids, offsets, pkeys, pids, qkeys, bound, use_marker):  # type: ignore[no-untyped-def]
    m = qkeys.shape[0]
    lo, hi, raw_ptr = _sorted_bounds(keys, offsets, pkeys, qkeys)
    raw = np.empty((2, int(raw_ptr[m])), dtype=np.int64)
    used = np.zeros(m, dtype=np.int64)
    n_chunks = _chunks(m, int(raw_ptr[m]))
    if n_chunks == 1:
        _sorted_chunk(ids, pids, lo, hi, bound, use_marker, raw, raw_ptr, used, 0, m)
    else:
        _sorted_parallel(ids, pids, lo, hi, bound, use_marker, raw, raw_ptr, used, n_chunks)
    return _finish_query(raw, raw_ptr, used, m)


@_jit
def bucket_offsets(keys, n_keys):  # type: ignore[no-untyped-def]
    out = np.zeros(n_keys + 1, dtype=np.int64)
    for j in range(keys.shape[0]):
        out[keys[j] + 1] += 1
    for j in range(n_keys):
        out[j + 1] += out[j]
    return out


@numba.njit(nogil=True, cache=True, fastmath=True)
def _rerank_rows(vectors, xnorm, indptr, rows, queries, qnorm, k, metric, out_s, out_r, qlo, qhi):  # type: ignore[no-untyped-def]
    d = vectors.shape[1]
    for i in range(qlo, qhi):
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
                out_s[i, pos] = out_s[i, pos - 1]
                out_r[i, pos] = out_r[i, pos - 1]
                pos -= 1
            out_s[i, pos] = s
            out_r[i, pos] = r
            if filled < k:
                filled += 1


@_pjit
def _rerank_parallel(
    vectors, xnorm, indptr, rows, queries, qnorm, k, metric, out_s, out_r, n_chunks
):  # type: ignore[no-untyped-def]
    m = queries.shape[0]
    for c in prange(n_chunks):
        _rerank_rows(
            vectors,
            xnorm,
            indptr,
            rows,
            queries,
            qnorm,
            k,
            metric,
            out_s,
            out_r,
            c * m // n_chunks,
            (c + 1) * m // n_chunks,
        )


def rerank_topk(vectors, xnorm, indptr, rows, queries, qnorm, k, metric):  # type: ignore[no-untyped-def]
    """Exact top-``k`` of each query's candidate rows (see the NumPy reference)."""
    m = queries.shape[0]
    out_s = np.full((m, k), -np.inf, dtype=np.float32)
    out_r = np.full((m, k), -1, dtype=np.int64)
    nnz = int(indptr[m]) if m else 0
    n_chunks = _chunks(m, nnz * max(vectors.shape[1], 1) // 8)
    args = (vectors, xnorm, indptr, rows, queries, qnorm, int(k), int(metric), out_s, out_r)
    if n_chunks == 1:
        _rerank_rows(*args, 0, m)
    else:
        _rerank_parallel(*args, n_chunks)
    return out_s, out_r


def _emit_prefetch(context, builder, signature, args):  # type: ignore[no-untyped-def]
    """LLVM ``prefetch`` (read, high temporal locality, data cache) of the element of
    ``args[0]`` at the indices ``args[1:]``: the codegen of both prefetch intrinsics."""
    aryty = signature.args[0]
    ary = context.make_array(aryty)(context, builder, args[0])
    idx = [
        context.cast(builder, arg, ty, types.intp)
        for arg, ty in zip(args[1:], signature.args[1:], strict=True)
    ]
    ptr = cgutils.get_item_pointer(context, builder, aryty, ary, idx)
    i8p = ir.IntType(8).as_pointer()
    i32 = ir.IntType(32)
    fnty = ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32])
    fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0i8")
    flags = [ir.Constant(i32, 0), ir.Constant(i32, 3), ir.Constant(i32, 1)]
    builder.call(fn, [builder.bitcast(ptr, i8p), *flags])
    return context.get_dummy_value()


@intrinsic
def _prefetch(typingctx, arr, i, j):  # type: ignore[no-untyped-def]
    """Hint the CPU to load ``arr[i, j]`` (2-d) into cache; no effect on results."""
    return types.void(arr, i, j), _emit_prefetch


@intrinsic
def _prefetch1(typingctx, arr, i):  # type: ignore[no-untyped-def]
    """Hint the CPU to load ``arr[i]`` (1-d) into cache; no effect on results."""
    return types.void(arr, i), _emit_prefetch


#: entries ahead whose bucket is prefetched when tombstoning (twice that for its start)
_REMOVE_AHEAD = 16

#: bucket probes ahead whose offsets / first entries are prefetched
_PROBE_AHEAD = 16

#: candidates ahead whose key rows are prefetched while one is scored
_PREFETCH_AHEAD = 8


@numba.njit(nogil=True, cache=True, fastmath=True)
def _bucket_ranges(qkeys, i, offsets, keys, blo, bhi):  # type: ignore[no-untyped-def]
    """Query ``i``'s bucket ranges in the main run: ``blo[w]:bhi[w]`` for each probe key
    ``qkeys[i, w]`` (empty for -1), by the bucket-start array ``offsets`` when there is
    one (prefetched a few probes ahead) or by binary search in ``keys``."""
    width = qkeys.shape[1]
    has_offsets = offsets.shape[0] > 0
    for w in range(width):
        if has_offsets and w + _PROBE_AHEAD < width:
            ahead = qkeys[i, w + _PROBE_AHEAD]
            if ahead >= 0:
                _prefetch1(offsets, ahead)
        q = qkeys[i, w]
        if q < 0:
            blo[w] = 0
            bhi[w] = 0
        elif has_offsets:
            blo[w] = offsets[q]
            bhi[w] = offsets[q + 1]
        elif keys.shape[0] > 0:
            blo[w] = np.searchsorted(keys, q, side="left")
            bhi[w] = np.searchsorted(keys, q, side="right")


@numba.njit(nogil=True, cache=True, fastmath=True)
def _collect_distinct(run_ids, lo, hi, words, cand, nc):  # type: ignore[no-untyped-def]
    """Append the ids ``run_ids[lo:hi]`` not yet marked in the bitset ``words`` to
    ``cand[:nc]`` (grown by doubling when full; -1 slots skipped), marking them;
    returns ``(cand, nc)``."""
    for j in range(lo, hi):
        r = run_ids[j]
        if r < 0:
            continue
        word = r >> 6
        bit = np.uint64(1) << np.uint64(r & 63)
        if words[word] & bit:
            continue
        words[word] |= bit
        if nc == cand.shape[0]:
            grown = np.empty(2 * nc, dtype=np.int64)
            grown[:nc] = cand
            cand = grown
        cand[nc] = r
        nc += 1
    return cand, nc


@numba.njit(nogil=True, cache=True, fastmath=True)
def _fused_rows(
    keys,
    ids,
    offsets,
    pkeys,
    pids,
    qkeys,
    vectors,
    xnorm,
    queries,
    qnorm,
    k,
    metric,
    id_bound,
    out_s,
    out_r,
    qlo,
    qhi,
):  # type: ignore[no-untyped-def]
    """Exact top-k of the distinct candidates of queries qlo..qhi-1.

    Per query, in three passes that each issue independent loads (so the CPU overlaps
    its cache misses): the bucket ranges, then the distinct candidates (a per-thread
    bitset of ``id_bound`` bits, small enough to stay in cache, cleared afterwards from
    the candidate list), then the scores, prefetching the key rows a few candidates
    ahead. Returns the number of distinct candidates scored.
    """
    width = qkeys.shape[1]
    d = vectors.shape[1]
    words = np.zeros((id_bound + 63) // 64, dtype=np.uint64)
    cand = np.empty(1024, dtype=np.int64)
    blo = np.zeros(width, dtype=np.int64)
    bhi = np.zeros(width, dtype=np.int64)
    total = 0
    for i in range(qlo, qhi):
        _bucket_ranges(qkeys, i, offsets, keys, blo, bhi)
        nc = 0
        for run_no in range(2):
            run_ids = ids if run_no == 0 else pids
            if run_ids.shape[0] == 0:
                continue
            for w in range(width):
                if run_no == 0:
                    lo = blo[w]
                    hi = bhi[w]
                    if w + _PROBE_AHEAD < width and blo[w + _PROBE_AHEAD] < bhi[w + _PROBE_AHEAD]:
                        _prefetch1(ids, blo[w + _PROBE_AHEAD])
                else:
                    q = qkeys[i, w]
                    if q < 0:
                        continue
                    lo = np.searchsorted(pkeys, q, side="left")
                    hi = np.searchsorted(pkeys, q, side="right")
                cand, nc = _collect_distinct(run_ids, lo, hi, words, cand, nc)
        filled = 0
        for j in range(nc):
            if j + _PREFETCH_AHEAD < nc:
                ahead = cand[j + _PREFETCH_AHEAD]
                for c in range(0, d, 16):  # one 64-byte line per 16 float32
                    _prefetch(vectors, ahead, c)
            r = cand[j]
            words[r >> 6] = np.uint64(0)
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
            if filled == k and not (
                s > out_s[i, k - 1] or (s == out_s[i, k - 1] and r < out_r[i, k - 1])
            ):
                continue
            # insert keeping (score desc, row asc); rows arrive in any order
            pos = filled if filled < k else k - 1
            while pos > 0 and (
                s > out_s[i, pos - 1] or (s == out_s[i, pos - 1] and r < out_r[i, pos - 1])
            ):
                out_s[i, pos] = out_s[i, pos - 1]
                out_r[i, pos] = out_r[i, pos - 1]
                pos -= 1
            out_s[i, pos] = s
            out_r[i, pos] = r
            if filled < k:
                filled += 1
        total += nc
    return total


@_pjit
def _fused_parallel(
    keys,
    ids,
    offsets,
    pkeys,
    pids,
    qkeys,
    vectors,
    xnorm,
    queries,
    qnorm,
    k,
    metric,
    id_bound,
    out_s,
    out_r,
    n_chunks,
):  # type: ignore[no-untyped-def]
    m = queries.shape[0]
    totals = np.zeros(n_chunks, dtype=np.int64)
    for c in prange(n_chunks):
        totals[c] = _fused_rows(
            keys,
            ids,
            offsets,
            pkeys,
            pids,
            qkeys,
            vectors,
            xnorm,
            queries,
            qnorm,
            k,
            metric,
            id_bound,
            out_s,
            out_r,
            c * m // n_chunks,
            (c + 1) * m // n_chunks,
        )
    return totals.sum()


def sorted_query_rerank(
    keys, ids, offsets, pkeys, pids, qkeys, id_bound, vectors, xnorm, queries, qnorm, k, metric
):  # type: ignore[no-untyped-def]
    """Candidates and their exact top-``k`` in one pass (see the NumPy reference)."""
    m = qkeys.shape[0]
    bound = max(int(id_bound), 1)
    out_s = np.full((m, k), -np.inf, dtype=np.float32)
    out_r = np.full((m, k), -1, dtype=np.int64)
    if bound > _BITSET_LIMIT:  # too many ids for a per-thread bitset: two passes
        indptr, rows, _ = sorted_query(keys, ids, offsets, pkeys, pids, qkeys, bound)
        s, r = rerank_topk(vectors, xnorm, indptr, rows, queries, qnorm, k, metric)
        return s, r, int(indptr[m])
    # work estimate: the mean bucket holds len(run) / buckets entries
    per_bucket = 1
    if offsets.shape[0] > 1:
        per_bucket = max(1, int(keys.shape[0]) // (int(offsets.shape[0]) - 1))
    work = int((qkeys >= 0).sum()) * per_bucket * max(vectors.shape[1], 1) // 8
    n_chunks = _chunks(m, work)
    args = (
        keys, ids, offsets, pkeys, pids, qkeys, vectors, xnorm, queries, qnorm, int(k),
        int(metric), bound, out_s, out_r,
    )  # fmt: skip
    if n_chunks == 1:
        total = _fused_rows(*args, 0, m)
    else:
        total = _fused_parallel(*args, n_chunks)
    return out_s, out_r, int(total)


@intrinsic
def _popcount(typingctx, x):  # type: ignore[no-untyped-def]
    """Set bits of a uint64 (llvm.ctpop: one instruction where the CPU has it)."""
    sig = types.uint64(types.uint64)

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        i64 = ir.IntType(64)
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(i64, [i64]), "llvm.ctpop.i64"
        )
        return builder.call(fn, [args[0]])

    return sig, codegen


@_jit
def _sketch_hmax(score, n_bits, delta):  # type: ignore[no-untyped-def]
    """:func:`lshcore.kernels._np_tables.sketch_hmax` (same formula, float64)."""
    if not np.isfinite(score):
        return n_bits
    s = min(1.0, max(-1.0, score))
    p = np.arccos(s) / np.pi
    big_l = np.log(1.0 / delta)
    var = n_bits * p * (1.0 - p)
    t = big_l / 3.0 + np.sqrt(big_l * big_l / 9.0 + 2.0 * var * big_l)
    return min(n_bits, np.int64(np.floor(n_bits * p + t)))


@numba.njit(nogil=True, cache=True, fastmath=True)
def _score_row(vectors, xnorm, queries, qnorm, i, r, metric):  # type: ignore[no-untyped-def]
    d = vectors.shape[1]
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
    return np.float32(s)


@_jit
def _topk_push(out_s, out_r, i, k, filled, s, r):  # type: ignore[no-untyped-def]
    """Insert (s, r) into query i's top-k (score desc, row asc); returns the new fill."""
    if filled == k and not (s > out_s[i, k - 1] or (s == out_s[i, k - 1] and r < out_r[i, k - 1])):
        return filled
    pos = filled if filled < k else k - 1
    while pos > 0 and (s > out_s[i, pos - 1] or (s == out_s[i, pos - 1] and r < out_r[i, pos - 1])):
        out_s[i, pos] = out_s[i, pos - 1]
        out_r[i, pos] = out_r[i, pos - 1]
        pos -= 1
    out_s[i, pos] = s
    out_r[i, pos] = r
    return filled + 1 if filled < k else filled


@numba.njit(nogil=True, cache=True, fastmath=True)
def _score_list(vectors, xnorm, queries, qnorm, i, k, metric, lst, n, out_s, out_r, filled):  # type: ignore[no-untyped-def]
    """Score rows lst[:n] for query i (prefetching rows ahead) into its top-k."""
    d = vectors.shape[1]
    for j in range(n):
        if j + _PREFETCH_AHEAD < n:
            ahead = lst[j + _PREFETCH_AHEAD]
            for c in range(0, d, 16):
                _prefetch(vectors, ahead, c)
        r = lst[j]
        s = _score_row(vectors, xnorm, queries, qnorm, i, r, metric)
        filled = _topk_push(out_s, out_r, i, k, filled, s, r)
    return filled


@numba.njit(nogil=True, cache=True, fastmath=True)
def _score_into(vectors, xnorm, queries, qnorm, i, metric, lst, n, buf_s, buf_r, nb):  # type: ignore[no-untyped-def]
    """Score rows lst[:n] for query i (prefetching rows ahead), appending to the buffers
    at nb; returns the new fill."""
    d = vectors.shape[1]
    for j in range(n):
        if j + _PREFETCH_AHEAD < n:
            ahead = lst[j + _PREFETCH_AHEAD]
            for c in range(0, d, 16):
                _prefetch(vectors, ahead, c)
        r = lst[j]
        buf_s[nb] = _score_row(vectors, xnorm, queries, qnorm, i, r, metric)
        buf_r[nb] = r
        nb += 1
    return nb


@_jit
def _kth_largest(buf_s, n, k):  # type: ignore[no-untyped-def]
    """The k-th largest of buf_s[:n] (1 <= k <= n): one selection, no sort."""
    tmp = np.empty(n, dtype=np.float32)
    for j in range(n):
        tmp[j] = -buf_s[j]
    return -np.partition(tmp, k - 1)[k - 1]


@_jit
def _write_topk(buf_s, buf_r, nb, k, out_s, out_r, i):  # type: ignore[no-untyped-def]
    """Top-k of the nb scored (score, row) pairs (distinct rows) into out[i], best first,
    ties to the smaller row: a selection of the k-th score, then a sort of k pairs (an
    insertion per candidate costs O(k) moves each, 2 ms per query at k = 256)."""
    kk = min(k, nb)
    if kk == 0:
        return
    thr = _kth_largest(buf_s, nb, kk) if nb > kk else -np.inf
    fs = np.empty(kk, dtype=np.float32)
    fr = np.empty(kk, dtype=np.int64)
    c = 0
    n_tie = 0
    for j in range(nb):
        if buf_s[j] > thr:
            fs[c] = buf_s[j]
            fr[c] = buf_r[j]
            c += 1
        elif buf_s[j] == thr:
            n_tie += 1
    if c < kk:  # the k-th score's ties: smaller rows first
        tie_r = np.empty(n_tie, dtype=np.int64)
        t = 0
        for j in range(nb):
            if buf_s[j] == thr and not buf_s[j] > thr:
                tie_r[t] = buf_r[j]
                t += 1
        tie_r.sort()
        for t in range(kk - c):
            fs[c + t] = thr
            fr[c + t] = tie_r[t]
    by_row = np.argsort(fr)
    fs2 = np.empty(kk, dtype=np.float32)
    for j in range(kk):
        fs2[j] = -fs[by_row[j]]
    order = np.argsort(fs2, kind="mergesort")  # stable: equal scores stay row-ascending
    for j in range(kk):
        out_s[i, j] = fs[by_row[order[j]]]
        out_r[i, j] = fr[by_row[order[j]]]


@numba.njit(nogil=True, cache=True, fastmath=True)
def _sketch_rows(
    keys,
    ids,
    offsets,
    pkeys,
    pids,
    qkeys,
    vectors,
    xnorm,
    queries,
    qnorm,
    k,
    metric,
    id_bound,
    pdir,
    pshift,
    sketches,
    qsketches,
    n_bits,
    delta,
    out_s,
    out_r,
    stats,
    qlo,
    qhi,
):  # type: ignore[no-untyped-def]
    """Queries qlo..qhi-1 of :func:`sorted_query_sketch_rerank`; adds (candidates,
    scored) to ``stats``. Candidates are collected as in ``_fused_rows`` (bitset), then
    their sketch distances computed (prefetching sketch rows ahead), then the two stages
    scored from compact lists of rows."""
    width = qkeys.shape[1]
    n_words = sketches.shape[1]
    words = np.zeros((id_bound + 63) // 64, dtype=np.uint64)
    cand = np.empty(1024, dtype=np.int64)
    hs = np.empty(1024, dtype=np.int64)
    lst = np.empty(1024, dtype=np.int64)
    buf_s = np.empty(1024, dtype=np.float32)
    buf_r = np.empty(1024, dtype=np.int64)
    hist = np.zeros(n_bits + 2, dtype=np.int64)
    blo = np.zeros(width, dtype=np.int64)
    bhi = np.zeros(width, dtype=np.int64)
    first = k + _SKETCH_EXTRA
    n_cand = 0
    n_scored = 0
    for i in range(qlo, qhi):
        _bucket_ranges(qkeys, i, offsets, keys, blo, bhi)
        nc = 0
        for run_no in range(2):
            run_ids = ids if run_no == 0 else pids
            if run_ids.shape[0] == 0:
                continue
            for w in range(width):
                if run_no == 0:
                    lo = blo[w]
                    hi = bhi[w]
                    if w + _PROBE_AHEAD < width and blo[w + _PROBE_AHEAD] < bhi[w + _PROBE_AHEAD]:
                        _prefetch1(ids, blo[w + _PROBE_AHEAD])
                else:
                    q = qkeys[i, w]
                    if q < 0:
                        continue
                    # the directory narrows the pending run to a group of ~2 entries
                    g = q >> pshift
                    lo = pdir[g]
                    end = pdir[g + 1]
                    while lo < end and pkeys[lo] < q:
                        lo += 1
                    hi = lo
                    while hi < end and pkeys[hi] == q:
                        hi += 1
                cand, nc = _collect_distinct(run_ids, lo, hi, words, cand, nc)
        for j in range(nc):
            words[cand[j] >> 6] = np.uint64(0)
        n_cand += nc
        if hs.shape[0] < nc:
            hs = np.empty(cand.shape[0], dtype=np.int64)
            lst = np.empty(cand.shape[0], dtype=np.int64)
            buf_s = np.empty(cand.shape[0], dtype=np.float32)
            buf_r = np.empty(cand.shape[0], dtype=np.int64)
        if nc <= first:
            nb = _score_into(vectors, xnorm, queries, qnorm, i, metric, cand, nc, buf_s, buf_r, 0)
            _write_topk(buf_s, buf_r, nb, k, out_s, out_r, i)
            n_scored += nc
            continue
        # sketch distances, with the histogram that gives the stage-1 cut
        for j in range(nc):
            if j + _PREFETCH_AHEAD < nc:
                _prefetch(sketches, cand[j + _PREFETCH_AHEAD], 0)
            r = cand[j]
            h = np.uint64(0)
            for w in range(n_words):
                h += _popcount(sketches[r, w] ^ qsketches[i, w])
            hv = min(np.int64(h), n_bits + 1)  # bits above n_bits would be a caller's error
            hs[j] = hv
            hist[hv] += 1
        h1 = 0
        seen = 0
        while h1 <= n_bits:
            seen += hist[h1]
            if seen >= first:
                break
            h1 += 1
        hist[:] = 0
        n = 0
        for j in range(nc):
            if hs[j] <= h1:
                lst[n] = cand[j]
                n += 1
        nb = _score_into(vectors, xnorm, queries, qnorm, i, metric, lst, n, buf_s, buf_r, 0)
        n_scored += n
        kth = _kth_largest(buf_s, nb, k)  # nb >= first > k
        hmax = _sketch_hmax(np.float64(kth), n_bits, delta)
        if hmax > h1:
            n = 0
            for j in range(nc):
                if hs[j] > h1 and hs[j] <= hmax:
                    lst[n] = cand[j]
                    n += 1
            nb = _score_into(vectors, xnorm, queries, qnorm, i, metric, lst, n, buf_s, buf_r, nb)
            n_scored += n
        _write_topk(buf_s, buf_r, nb, k, out_s, out_r, i)
    stats[0] += n_cand
    stats[1] += n_scored


@_pjit
def _sketch_parallel(
    keys, ids, offsets, pkeys, pids, qkeys, vectors, xnorm, queries, qnorm, k, metric,
    id_bound, pdir, pshift, sketches, qsketches, n_bits, delta, out_s, out_r, stats, n_chunks,
):  # type: ignore[no-untyped-def]  # fmt: skip
    m = queries.shape[0]
    for c in prange(n_chunks):
        _sketch_rows(
            keys, ids, offsets, pkeys, pids, qkeys, vectors, xnorm, queries, qnorm, k,
            metric, id_bound, pdir, pshift, sketches, qsketches, n_bits, delta, out_s, out_r, stats[c],
            c * m // n_chunks, (c + 1) * m // n_chunks,
        )  # fmt: skip


def sorted_query_sketch_rerank(
    keys, ids, offsets, pkeys, pids, qkeys, id_bound, vectors, xnorm, queries, qnorm, k,
    metric, pdir, pshift, sketches, qsketches, n_bits, delta,
):  # type: ignore[no-untyped-def]  # fmt: skip
    """Sketch-filtered top-``k`` of the candidates (see the NumPy reference)."""
    m = qkeys.shape[0]
    bound = max(int(id_bound), 1)
    pshift = int(pshift)
    if pids.shape[0] and qkeys.size:  # a directory too short would be read past its end
        top = int(qkeys.max())
        if pshift < 0 or pshift > 62 or pdir.shape[0] < (top >> pshift) + 2:
            raise ValueError("pdir: too short for the query keys (see pending_directory)")
    if bound > _BITSET_LIMIT:  # the reference path (candidate lists), same result
        from lshcore.kernels import _np_tables

        return _np_tables.sorted_query_sketch_rerank(
            keys, ids, offsets, pkeys, pids, qkeys, bound, vectors, xnorm, queries, qnorm,
            k, metric, pdir, pshift, sketches, qsketches, n_bits, delta,
        )  # fmt: skip
    out_s = np.full((m, k), -np.inf, dtype=np.float32)
    out_r = np.full((m, k), -1, dtype=np.int64)
    per_bucket = 1
    if offsets.shape[0] > 1:
        per_bucket = max(1, int(keys.shape[0]) // (int(offsets.shape[0]) - 1))
    work = int((qkeys >= 0).sum()) * per_bucket * max(sketches.shape[1], 1)
    n_chunks = _chunks(m, work)
    stats = np.zeros((max(n_chunks, 1), 2), dtype=np.int64)
    args = (
        keys, ids, offsets, pkeys, pids, qkeys, vectors, xnorm, queries, qnorm, int(k),
        int(metric), bound, pdir, pshift, sketches, qsketches, int(n_bits), float(delta),
        out_s, out_r,
    )  # fmt: skip
    if n_chunks == 1:
        _sketch_rows(*args, stats[0], 0, m)
    else:
        _sketch_parallel(*args, stats, n_chunks)
    return out_s, out_r, int(stats[:, 0].sum()), int(stats[:, 1].sum())
