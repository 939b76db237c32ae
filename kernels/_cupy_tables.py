"""The GPU backend's hash-table and re-rank kernels (arrays of the backend: CuPy on a device).

Same names, signatures and results as ``_np_tables`` (see there for the layouts). The
fixed-capacity buckets use numba.cuda kernels with atomics (``_cuda_kernels``): an
arrival's slot is computed by array glue, the highest-ranked arrival of each slot wins by
``atomic.max``, and the last arrival of each bucket writes its state. Everything else is
array-API glue (``lshcore.core.arrayapi``), run in CI on NumPy and on array-api-strict, so
nothing NumPy-only (``repeat`` with array repeats, ``add.at``, ``lexsort``, integer-array
assignment) is left on the device path. numba.cuda is imported on the first fixed-table
call only, so the array-API functions here import without it.
"""

from __future__ import annotations

from typing import Any

from lshcore.core.arrayapi import csr_from_pairs, group_ranks, namespace, pad_csr, ranges
from lshcore.kernels._np_tables import METRIC_COSINE, METRIC_IP, METRIC_L2  # noqa: F401 (re-exported)

_M1 = 0x9E3779B97F4A7C15
_M2 = 0xBF58476D1CE4E5B9
_M3 = 0x94D049BB133111EB
_CHUNK_ELEMENTS = 1 << 22


def _ck() -> Any:
    # numba.cuda only when a fixed-table kernel runs (the array-API tests do without)
    from lshcore.kernels import _cuda_kernels

    return _cuda_kernels


def reservoir_draw(seed: Any, bucket: Any, n: Any) -> Any:
    """Uniform int64 in [0, n) for the n-th (1-based) arrival at global ``bucket`` (the
    splitmix64 finalizer of ``_np_tables.reservoir_draw``, in uint64 array arithmetic)."""
    xp = namespace(n)
    u64 = xp.uint64

    def u(v: Any) -> Any:
        return xp.astype(xp.asarray(v), u64) if not isinstance(v, int) else xp.asarray(v, dtype=u64)

    nn = u(n)
    z = u(seed) * u(_M1) ^ u(bucket) * u(_M2) ^ nn * u(_M3)
    z = (z ^ (z >> u(30))) * u(_M2)
    z = (z ^ (z >> u(27))) * u(_M3)
    z = z ^ (z >> u(31))
    return xp.astype(z % nn, xp.int64)


def _arrivals(xp: Any, slots: Any, buckets: Any, ids: Any) -> tuple[Any, Any]:
    """Global bucket (L*n,) int64 of every arrival, table-major then row, and its id."""
    n_tables, table_size = slots.shape[0], slots.shape[1]
    off = xp.reshape(xp.arange(n_tables, dtype=xp.int64) * table_size, (n_tables, 1))
    g = xp.reshape(off + xp.permute_dims(xp.astype(buckets, xp.int64), (1, 0)), (-1,))
    id_flat = xp.reshape(
        xp.broadcast_to(xp.reshape(xp.astype(ids, xp.int32), (1, -1)), (n_tables, ids.shape[0])),
        (-1,),
    )
    return g, id_flat


def fixed_insert(slots, fill, head, seen, buckets, ids, reservoir, seed):  # type: ignore[no-untyped-def]
    """Insert ids (n,) at buckets (n, L) into slots (L, T, C) int32 in place (FIFO, or
    Algorithm R with ``reservoir``); same result as the reference for any arrival order."""
    xp = namespace(slots)
    cap = slots.shape[2]
    if ids.shape[0] == 0:
        return
    g, id_flat = _arrivals(xp, slots, buckets, ids)
    order, gs, r, cnt = group_ranks(xp, g)
    id_s = xp.take(id_flat, order, axis=0)
    fill_f, head_f, seen_f = (xp.reshape(a, (-1,)) for a in (fill, head, seen))
    f = xp.astype(xp.take(fill_f, gs, axis=0), xp.int64)
    h = xp.astype(xp.take(head_f, gs, axis=0), xp.int64)
    appended = f + r < cap
    if reservoir:
        draw = reservoir_draw(seed, gs, xp.take(seen_f, gs, axis=0) + r + 1)
        keep = appended | (draw < cap)
        pos = xp.where(appended, (h + f + r) % cap, (h + draw) % cap)
    else:
        keep = r >= cnt - cap  # only the newest C arrivals of this call can survive
        pos = (h + f + r) % cap
    flat = xp.where(keep, gs * cap + pos, xp.full_like(pos, -1))
    winner = xp.full((slots.size,), -1, dtype=xp.int64)
    ck = _ck()
    ck.launch_insert_winner(flat, r, winner)
    ck.launch_insert_write(
        flat,
        r,
        id_s,
        winner,
        xp.reshape(slots, (-1,)),
        gs,
        cnt,
        fill_f,
        head_f,
        seen_f,
        cap,
        bool(reservoir),
    )


def fixed_remove(slots, fill, head, buckets, ids):  # type: ignore[no-untyped-def]
    """Remove ids (n,) from their buckets (n, L), in place; each touched bucket is re-packed
    oldest first from slot 0 (head 0); evicted ids are ignored."""
    xp = namespace(slots)
    cap = slots.shape[2]
    if ids.shape[0] == 0:
        return
    g, id_flat = _arrivals(xp, slots, buckets, ids)
    flat_slots = xp.reshape(slots, (-1,))
    fill_f, head_f = xp.reshape(fill, (-1,)), xp.reshape(head, (-1,))
    kill = xp.zeros((slots.size,), dtype=xp.uint8)
    touched = xp.zeros((fill.size,), dtype=xp.uint8)
    ck = _ck()
    ck.launch_remove_mark(flat_slots, fill_f, head_f, g, id_flat, cap, kill, touched)
    src = xp.asarray(flat_slots, copy=True)
    ck.launch_remove_pack(src, flat_slots, fill_f, head_f, cap, kill, touched)


def fixed_query(slots, fill, head, qbuckets, id_bound):  # type: ignore[no-untyped-def]
    """Candidates of qbuckets (m, L, P) int64 (-1 = skip) -> CSR (indptr (m+1,) int64, ids
    int64 ascending per query, counts int32): a gather kernel, then array-API counting."""
    xp = namespace(slots)
    n_tables, table_size, cap = slots.shape
    m, _, n_probes = qbuckets.shape
    width = n_tables * n_probes * cap
    step = max(1, _CHUNK_ELEMENTS // max(1, width))
    flat_slots = xp.reshape(slots, (-1,))
    parts = []
    for lo in range(0, max(m, 1), step):
        qb = qbuckets[lo : min(lo + step, m), ...]
        mm = qb.shape[0]
        got = xp.full((mm, width), -1, dtype=xp.int32)
        if mm:
            _ck().launch_probe_gather(flat_slots, qb, table_size, cap, got)
        qi = xp.broadcast_to(xp.reshape(xp.arange(mm, dtype=xp.int64), (mm, 1)), (mm, width))
        valid = got >= 0
        parts.append(csr_from_pairs(xp, qi[valid], got[valid], mm, int(id_bound)))
    return _concat_csr(xp, parts)


def _concat_csr(xp: Any, parts: list[tuple[Any, Any, Any]]) -> tuple[Any, Any, Any]:
    if len(parts) == 1:
        return parts[0]
    offset = 0
    indptrs = [xp.zeros((1,), dtype=xp.int64)]
    for ip, _, _ in parts:
        indptrs.append(ip[1:] + offset)
        offset += int(ip[-1])
    return (
        xp.concat(indptrs),
        xp.concat([p[1] for p in parts]),
        xp.concat([p[2] for p in parts]),
    )


def sorted_insert(keys, ids, new_keys, new_ids):  # type: ignore[no-untyped-def]
    """Merge (new_keys (n,) int64, new_ids (n,)) into the sorted run (keys, ids) -> new
    (keys int64, ids int32): one stable sort of the concatenation (old entries of a bucket
    first, new ones in their order); tombstones dropped."""
    xp = namespace(keys)
    live = ids >= 0
    all_k = xp.concat([keys[live], xp.astype(new_keys, xp.int64)])
    all_i = xp.concat([xp.astype(ids[live], xp.int32), xp.astype(new_ids, xp.int32)])
    order = xp.argsort(all_k, stable=True)
    return xp.take(all_k, order, axis=0), xp.take(all_i, order, axis=0)


def sorted_remove(keys, ids, del_keys, del_ids):  # type: ignore[no-untyped-def]
    """Mark the entries (del_keys, del_ids) removed (id -1) in place -> how many (int).

    Membership by binary search on the pair packed into one int64 (key < 2**32).
    """
    xp = namespace(keys)
    if del_keys.shape[0] == 0 or keys.shape[0] == 0:
        return 0
    pair = xp.astype(keys, xp.int64) * (1 << 31) + xp.astype(ids, xp.int64)
    dels = xp.sort(xp.astype(del_keys, xp.int64) * (1 << 31) + xp.astype(del_ids, xp.int64))
    at = xp.clip(xp.searchsorted(dels, pair, side="left"), 0, dels.shape[0] - 1)
    hit = (xp.take(dels, at, axis=0) == pair) & (ids >= 0)
    ids[...] = xp.where(hit, xp.full_like(ids, -1), ids)
    return int(xp.sum(xp.astype(hit, xp.int64)))


def sorted_query(keys, ids, offsets, pkeys, pids, qkeys, id_bound):  # type: ignore[no-untyped-def]
    """Candidates of qkeys (m, L*P) int64 (-1 = skip) in the main run (keys, ids, offsets or
    empty) and the pending run (pkeys, pids) -> CSR (indptr, ids, counts)."""
    xp = namespace(keys)
    m, width = qkeys.shape
    flat = xp.reshape(qkeys, (-1,))
    ok = flat >= 0
    if offsets.shape[0] > 0:
        safe = xp.where(ok, flat, xp.zeros_like(flat))
        lo, hi = xp.take(offsets, safe, axis=0), xp.take(offsets, safe + 1, axis=0)
    else:
        lo = xp.searchsorted(keys, flat, side="left")
        hi = xp.searchsorted(keys, flat, side="right")
    hi = xp.where(ok, hi, lo)
    plo = xp.searchsorted(pkeys, flat, side="left")
    phi = xp.where(ok, xp.searchsorted(pkeys, flat, side="right"), plo)
    pos, owner = ranges(xp, lo, hi)
    ppos, powner = ranges(xp, plo, phi)
    got = xp.concat(
        [
            xp.astype(xp.take(ids, pos, axis=0), xp.int64),
            xp.astype(xp.take(pids, ppos, axis=0), xp.int64),
        ]
    )
    qi = xp.concat([owner, powner]) // width
    valid = got >= 0
    return csr_from_pairs(xp, qi[valid], got[valid], m, int(id_bound))


def bucket_offsets(keys, n_keys):  # type: ignore[no-untyped-def]
    """Start of every key 0..n_keys-1 in the sorted keys (N,) -> (n_keys + 1,) int64."""
    xp = namespace(keys)
    at = xp.searchsorted(keys, xp.arange(int(n_keys) + 1, dtype=xp.int64), side="left")
    return xp.astype(at, xp.int64)


def rerank_topk(vectors, xnorm, indptr, rows, queries, qnorm, k, metric):  # type: ignore[no-untyped-def]
    """Exact top-k of CSR candidate rows: vectors (N, d) float32, queries (m, d) ->
    (scores (m, k) float32 best first, ties to the smaller row, -inf padded; rows (m, k)
    int64, -1 padded)."""
    xp = namespace(vectors)
    m = queries.shape[0]
    nnz = int(indptr[-1])
    if nnz == 0:
        return (
            xp.full((m, k), -xp.inf, dtype=xp.float32),
            xp.full((m, k), -1, dtype=xp.int64),
        )
    qidx = ranges(xp, indptr[:-1], indptr[1:])[1]
    rows = xp.astype(rows, xp.int64)
    d = max(1, vectors.shape[1])
    step = max(1, _CHUNK_ELEMENTS // d)
    parts = []
    for lo in range(0, nnz, step):
        hi = min(lo + step, nnz)
        r, q = rows[lo:hi], qidx[lo:hi]
        dot = xp.sum(xp.take(vectors, r, axis=0) * xp.take(queries, q, axis=0), axis=1)
        if metric == METRIC_COSINE:
            den = xp.take(xnorm, r, axis=0) * xp.take(qnorm, q, axis=0)
            pos = den > 0
            dot = xp.where(pos, dot / xp.where(pos, den, xp.ones_like(den)), xp.zeros_like(dot))
        elif metric == METRIC_L2:
            sq = xp.take(xnorm, r, axis=0) + xp.take(qnorm, q, axis=0) - 2 * dot
            dot = -xp.sqrt(xp.clip(sq, 0, None))
        parts.append(xp.astype(dot, xp.float32))
    scores = xp.concat(parts) if len(parts) > 1 else parts[0]
    # by query, then best score, then smaller row: successive stable sorts
    order = xp.argsort(rows, stable=True)
    order = xp.take(order, xp.argsort(-xp.take(scores, order, axis=0), stable=True), axis=0)
    order = xp.take(order, xp.argsort(xp.take(qidx, order, axis=0), stable=True), axis=0)
    return (
        pad_csr(xp, indptr, xp.take(scores, order, axis=0), k, -xp.inf),
        pad_csr(xp, indptr, xp.take(rows, order, axis=0), k, -1),
    )


def sorted_query_rerank(
    keys, ids, offsets, pkeys, pids, qkeys, id_bound, vectors, xnorm, queries, qnorm, k, metric
):  # type: ignore[no-untyped-def]
    """:func:`sorted_query` then :func:`rerank_topk` -> (scores, rows, n_candidates int)."""
    indptr, rows, _ = sorted_query(keys, ids, offsets, pkeys, pids, qkeys, id_bound)
    scores, got = rerank_topk(vectors, xnorm, indptr, rows, queries, qnorm, k, metric)
    return scores, got, int(indptr[-1])
