"""numba kernels of the hashed sparse layer (nogil, cached); same API as ``_np_layer``.

Each kernel runs on one thread without the GIL, so Hogwild worker threads calling
them run in parallel. Results agree with the NumPy reference up to float32 rounding
(summation order differs).
"""

from __future__ import annotations

import numba
import numpy as np

from lshcore.kernels._np_layer import LABEL_CLASS, OPT_MULTS

__all__ = [
    "dense_to_sparse",
    "layer_forward",
    "layer_backward",
    "sparse_update",
    "select_active",
    "sorted_table_candidates",
    "select_from_tables",
    "tiebreak_priority",
    "batch_select_from_tables",
    "block_update",
]

_OPT_MULTS = np.array(OPT_MULTS, np.int64)

_jit = numba.njit(nogil=True, cache=True)

_M1 = np.uint64(0x9E3779B97F4A7C15)
_M2 = np.uint64(0xBF58476D1CE4E5B9)
_M3 = np.uint64(0x94D049BB133111EB)
_M4 = np.uint64(0xD6E8FEB86659FD93)


@_jit
def _prio(seed: int, row: int, ident: int) -> np.int64:
    z = np.uint64(seed) * _M1 + np.uint64(row) * _M2 + np.uint64(ident) * _M3
    z = z ^ (z >> np.uint64(31))
    z = z * _M4
    z = z ^ (z >> np.uint64(32))
    return np.int64(z & np.uint64(0xFFFF))


@_jit
def _tiebreak_priority(seed, rows, ids):  # type: ignore[no-untyped-def]
    out = np.empty((rows.shape[0], ids.shape[0]), np.int64)
    for i in range(rows.shape[0]):
        for j in range(ids.shape[0]):
            out[i, j] = _prio(seed, rows[i], ids[j])
    return out


def tiebreak_priority(seed: int, rows: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Same as the NumPy reference, for broadcastable (B, 1) rows and (1, n) ids."""
    r = np.asarray(rows, np.int64).reshape(-1)
    i = np.asarray(ids, np.int64).reshape(-1)
    return _tiebreak_priority(int(seed), r, i)


@_jit
def dense_to_sparse(x):  # type: ignore[no-untyped-def]
    batch, dim = x.shape
    width = 1
    for b in range(batch):
        c = 0
        for t in range(dim):
            if x[b, t] != 0:
                c += 1
        width = max(width, c)
    ids = np.full((batch, width), -1, np.int64)
    vals = np.zeros((batch, width), np.float32)
    for b in range(batch):
        c = 0
        for t in range(dim):
            if x[b, t] != 0:
                ids[b, c] = t
                vals[b, c] = x[b, t]
                c += 1
    return ids, vals


@_jit
def layer_forward(weight, bias, in_ids, in_vals, out_ids):  # type: ignore[no-untyped-def]
    batch, m = out_ids.shape
    width = in_ids.shape[1]
    out = np.zeros((batch, m), np.float32)
    cols = np.empty(width, np.int64)
    vals = np.empty(width, np.float32)
    mults = 0
    for b in range(batch):
        nv = 0
        for t in range(width):
            c = in_ids[b, t]
            v = in_vals[b, t]
            if c >= 0 and v != 0:
                cols[nv] = c
                vals[nv] = v
                nv += 1
        for j in range(m):
            r = out_ids[b, j]
            if r < 0:
                continue
            acc = np.float32(0)
            for t in range(nv):
                acc += weight[r, cols[t]] * vals[t]
            out[b, j] = acc + bias[r]
            mults += nv
    return out, mults


@_jit
def layer_backward(  # type: ignore[no-untyped-def]
    weight,
    in_ids,
    in_vals,
    out_ids,
    grad_out,
    need_grad_in,
    grad_w,
    grad_b,
    mark_w,
    mark_b,
    touched_w,
    touched_b,
    n_w,
    n_b,
):
    batch, m = out_ids.shape
    width = in_ids.shape[1]
    n_in = weight.shape[1]
    grad_in = np.zeros((batch, width), np.float32)
    pos = np.empty(width, np.int64)
    mults = 0
    for b in range(batch):
        nv = 0
        for t in range(width):
            if in_ids[b, t] >= 0 and in_vals[b, t] != 0:
                pos[nv] = t
                nv += 1
        for j in range(m):
            r = out_ids[b, j]
            g = grad_out[b, j]
            if r < 0 or g == 0:
                continue
            grad_b[r] += g
            if mark_b[r] == 0:
                mark_b[r] = 1
                touched_b[n_b] = r
                n_b += 1
            base = r * n_in
            for s in range(nv):
                t = pos[s]
                c = in_ids[b, t]
                if need_grad_in:
                    grad_in[b, t] += g * weight[r, c]
                flat = base + c
                grad_w[flat] += g * in_vals[b, t]
                if mark_w[flat] == 0:
                    mark_w[flat] = 1
                    touched_w[n_w] = flat
                    n_w += 1
            mults += nv * (2 if need_grad_in else 1)
    return grad_in, n_w, n_b, mults


@_jit
def sparse_update(kind, param, grad, mark, touched, n, state1, state2, lr, h1, h2, eps, step):  # type: ignore[no-untyped-def]
    lr32 = np.float32(lr)
    eps32 = np.float32(eps)
    c1 = np.float32(1.0 - h1**step) if kind == 3 else np.float32(1.0)
    c2 = np.float32(1.0 - h2**step) if kind == 3 else np.float32(1.0)
    a1 = np.float32(h1)
    a2 = np.float32(h2)
    b1 = np.float32(1 - h1)
    b2 = np.float32(1 - h2)
    for i in range(n):
        idx = touched[i]
        g = grad[idx]
        if kind == 0:
            param[idx] -= lr32 * g
        elif kind == 1:
            state1[idx] = a1 * state1[idx] + g
            param[idx] -= lr32 * state1[idx]
        elif kind == 2:
            state1[idx] += g * g
            param[idx] -= lr32 * g / (np.sqrt(state1[idx]) + eps32)
        else:
            state1[idx] = a1 * state1[idx] + b1 * g
            state2[idx] = a2 * state2[idx] + b2 * g * g
            param[idx] -= lr32 * (state1[idx] / c1) / (np.sqrt(state2[idx] / c2) + eps32)
        grad[idx] = 0
        mark[idx] = 0
    return n * _OPT_MULTS[kind]


@_jit
def _finish_row(b, listed, nl, cls, keys, labels, pad_random, n_out, m, tie, seed, out):  # type: ignore[no-untyped-def]
    """Shared tail of the selection kernels: add row b's labels, pad at random, keep the
    m best of the ``nl`` listed neurons by (class, priority), reset ``cls``, write ``out[b]``.
    Returns the number of keys ranked (0 when no more than ``m`` competed)."""
    ranked = 0
    for q in range(labels.shape[1]):
        i = labels[b, q]
        if i < 0:
            continue
        if cls[i] == 0:
            listed[nl] = i
            nl += 1
        cls[i] = LABEL_CLASS
    if pad_random and nl < m:
        for i in range(n_out):
            if cls[i] == 0:
                listed[nl] = i
                nl += 1
    if nl > m:
        for s in range(nl):
            i = listed[s]
            if tie is None:
                keys[s] = (cls[i] << 48) | (_prio(seed, b, i) << 32) | i
            else:  # a fixed per-neuron priority in [0, 65535] (e.g. the row norm's rank)
                keys[s] = (cls[i] << 48) | (np.int64(tie[i]) << 32) | i
        ranked = nl
        # keys are unique: the m largest are those >= the (nl - m)-th smallest
        cut = np.partition(keys[:nl], nl - m)[nl - m]
        c = 0
        for s in range(nl):
            if keys[s] >= cut:
                listed[c] = listed[s]
                c += 1
        for s in range(nl):
            cls[keys[s] & 0xFFFFFFFF] = 0
        nl = c
    else:
        for s in range(nl):
            cls[listed[s]] = 0
    chosen = np.sort(listed[:nl])
    for s in range(nl):
        out[b, s] = chosen[s]
    return ranked


@_jit
def select_active(
    indptr,
    cand_ids,
    cand_counts,
    labels,
    n_out,
    m,
    min_count,
    use_counts,
    pad_random,
    seed,
    tie=None,
):  # type: ignore[no-untyped-def]
    batch = indptr.shape[0] - 1
    out = np.full((batch, m), -1, np.int64)
    cls = np.zeros(n_out, np.int64)
    listed = np.empty(n_out, np.int64)
    keys = np.empty(n_out, np.int64)
    for b in range(batch):
        nl = 0
        for p in range(indptr[b], indptr[b + 1]):
            cnt = np.int64(cand_counts[p])
            if cnt < min_count:
                continue
            i = cand_ids[p]
            val = min(max(cnt, 1), LABEL_CLASS - 1) if use_counts else 1
            if cls[i] == 0:
                listed[nl] = i
                nl += 1
            cls[i] = val
        _finish_row(b, listed, nl, cls, keys, labels, pad_random, n_out, m, tie, seed, out)
    return out


@_jit
def sorted_table_candidates(qcodes, sorted_codes, sorted_ids, n_out):  # type: ignore[no-untyped-def]
    batch, n_tables = qcodes.shape
    counts = np.zeros(n_out, np.int32)
    listed = np.empty(n_out, np.int64)
    indptr = np.zeros(batch + 1, np.int64)
    cap = max(16, batch * 64)
    out_ids = np.empty(cap, np.int64)
    out_counts = np.empty(cap, np.int32)
    nnz = 0
    for b in range(batch):
        nl = 0
        for t in range(n_tables):
            code = qcodes[b, t]
            lo = np.searchsorted(sorted_codes[t], code, side="left")
            hi = np.searchsorted(sorted_codes[t], code, side="right")
            for p in range(lo, hi):
                i = sorted_ids[t, p]
                if counts[i] == 0:
                    listed[nl] = i
                    nl += 1
                counts[i] += 1
        if nnz + nl > cap:
            cap = max(2 * cap, nnz + nl)
            grown_ids = np.empty(cap, np.int64)
            grown_counts = np.empty(cap, np.int32)
            grown_ids[:nnz] = out_ids[:nnz]
            grown_counts[:nnz] = out_counts[:nnz]
            out_ids = grown_ids
            out_counts = grown_counts
        if nl * 8 > n_out:  # many hits: a scan of the counters is cheaper than a sort
            s = 0
            for i in range(n_out):
                if counts[i] > 0:
                    out_ids[nnz + s] = i
                    out_counts[nnz + s] = counts[i]
                    counts[i] = 0
                    s += 1
        else:
            row = np.sort(listed[:nl])
            for s in range(nl):
                out_ids[nnz + s] = row[s]
                out_counts[nnz + s] = counts[row[s]]
                counts[row[s]] = 0
        nnz += nl
        indptr[b + 1] = nnz
    return indptr, out_ids[:nnz].copy(), out_counts[:nnz].copy()


@_jit
def select_from_tables(  # type: ignore[no-untyped-def]
    qcodes,
    sorted_codes,
    sorted_ids,
    n_out,
    labels,
    m,
    min_count,
    use_counts,
    pad_random,
    seed,
    tie=None,
    work=None,
):
    batch, n_tables = qcodes.shape
    steps = 2 * max(_bit_length(sorted_codes.shape[1]), 1)
    entries = 0
    distinct = 0
    ranked = 0
    out = np.full((batch, m), -1, np.int64)
    counts = np.zeros(n_out, np.int64)
    cls = np.zeros(n_out, np.int64)
    hit = np.empty(n_out, np.int64)
    listed = np.empty(n_out, np.int64)
    keys = np.empty(n_out, np.int64)
    for b in range(batch):
        nh = 0
        for t in range(n_tables):
            code = qcodes[b, t]
            lo = np.searchsorted(sorted_codes[t], code, side="left")
            hi = np.searchsorted(sorted_codes[t], code, side="right")
            entries += hi - lo
            for p in range(lo, hi):
                i = sorted_ids[t, p]
                if counts[i] == 0:
                    hit[nh] = i
                    nh += 1
                counts[i] += 1
        distinct += nh
        nl = 0
        for s in range(nh):
            i = hit[s]
            cnt = counts[i]
            counts[i] = 0
            if cnt < min_count:
                continue
            cls[i] = min(max(cnt, 1), LABEL_CLASS - 1) if use_counts else 1
            listed[nl] = i
            nl += 1
        ranked += _finish_row(
            b, listed, nl, cls, keys, labels, pad_random, n_out, m, tie, seed, out
        )
    if work is not None:
        work[0] += entries
        work[1] += distinct
        work[2] += ranked
        work[3] += batch * n_tables * steps
    return out


@_jit
def _bit_length(n):  # type: ignore[no-untyped-def]
    c = 0
    while n > 0:
        n >>= 1
        c += 1
    return c


@_jit
def batch_select_from_tables(
    qcodes, sorted_codes, sorted_ids, n_out, labels, m, seed, work, offsets
):  # type: ignore[no-untyped-def]
    batch, n_tables = qcodes.shape
    direct = offsets.shape[1] > 0
    steps = 2 if direct else 2 * max(_bit_length(sorted_codes.shape[1]), 1)
    total = np.zeros(n_out, np.int64)
    hit = np.empty(n_out, np.int64)
    nh = 0
    entries = 0
    for b in range(batch):
        for t in range(n_tables):
            code = qcodes[b, t]
            if direct:
                lo = offsets[t, code]
                hi = offsets[t, code + 1]
            else:
                lo = np.searchsorted(sorted_codes[t], code, side="left")
                hi = np.searchsorted(sorted_codes[t], code, side="right")
            entries += hi - lo
            for p in range(lo, hi):
                i = sorted_ids[t, p]
                if total[i] == 0:
                    hit[nh] = i
                    nh += 1
                total[i] += 1
    work[0] += entries
    work[1] += nh
    work[3] += batch * n_tables * steps
    cls = np.zeros(n_out, np.int64)
    listed = np.empty(n_out, np.int64)
    keys = np.empty(n_out, np.int64)
    for s in range(nh):
        i = hit[s]
        cls[i] = min(total[i], LABEL_CLASS - 1)
        listed[s] = i
    mm = min(m, n_out)
    out = np.full((1, mm), -1, np.int64)
    lab = np.empty((1, labels.shape[0]), np.int64)
    for q in range(labels.shape[0]):
        lab[0, q] = labels[q]
    work[2] += _finish_row(0, listed, nh, cls, keys, lab, True, n_out, mm, None, seed, out)
    return out[0]


@_jit
def block_update(kind, param, grad, rows, cols, state1, state2, lr, h1, h2, eps, step):  # type: ignore[no-untyped-def]
    lr32 = np.float32(lr)
    eps32 = np.float32(eps)
    c1 = np.float32(1.0 - h1**step) if kind == 3 else np.float32(1.0)
    c2 = np.float32(1.0 - h2**step) if kind == 3 else np.float32(1.0)
    a1 = np.float32(h1)
    a2 = np.float32(h2)
    b1 = np.float32(1 - h1)
    b2 = np.float32(1 - h2)
    for i in range(rows.shape[0]):
        r = rows[i]
        for j in range(cols.shape[0]):
            c = cols[j]
            g = grad[i, j]
            if kind == 0:
                param[r, c] -= lr32 * g
            elif kind == 1:
                state1[r, c] = a1 * state1[r, c] + g
                param[r, c] -= lr32 * state1[r, c]
            elif kind == 2:
                state1[r, c] += g * g
                param[r, c] -= lr32 * g / (np.sqrt(state1[r, c]) + eps32)
            else:
                m1 = a1 * state1[r, c] + b1 * g
                v1 = a2 * state2[r, c] + b2 * g * g
                state1[r, c] = m1
                state2[r, c] = v1
                param[r, c] -= lr32 * (m1 / c1) / (np.sqrt(v1 / c2) + eps32)
    return rows.shape[0] * cols.shape[0] * _OPT_MULTS[kind]
