"""numba kernels of the XMC network (nogil, cached); same API as ``_np_xmc``.

One call handles one batch on one thread without the GIL, so Hogwild workers calling
them run in parallel. Results agree with the NumPy reference up to float32 rounding.
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = [
    "xmc_hidden_forward",
    "xmc_output_forward",
    "xmc_output_backward",
    "xmc_hidden_backward",
    "xmc_adam_rows",
    "xmc_build_tables",
    "xmc_select",
    "xmc_select_batch",
    "xmc_batch_output_step",
    "xmc_infer_candidates",
    "xmc_infer_topk",
    "xmc_topk_rows",
]

_G = np.uint64(0x9E3779B97F4A7C15)
_A = np.uint64(0xBF58476D1CE4E5B9)
_C = np.uint64(0x94D049BB133111EB)


@numba.njit(nogil=True, cache=True)
def _mix(x):  # type: ignore[no-untyped-def]
    x = x + _G
    x = (x ^ (x >> np.uint64(30))) * _A
    x = (x ^ (x >> np.uint64(27))) * _C
    return x ^ (x >> np.uint64(31))


@numba.njit(nogil=True, cache=True)
def _rnd(seed, row, salt):  # type: ignore[no-untyped-def]
    return _mix(_mix(_mix(np.uint64(seed)) ^ np.uint64(row)) ^ np.uint64(salt))


_jit = numba.njit(nogil=True, cache=True, fastmath=True)


@_jit
def xmc_hidden_forward(indptr, indices, data, w1, b1):  # type: ignore[no-untyped-def]
    batch = indptr.shape[0] - 1
    hid = w1.shape[1]
    out = np.empty((batch, hid), np.float32)
    for b in range(batch):
        acc = b1.copy()
        for t in range(indptr[b], indptr[b + 1]):
            f = indices[t]
            v = data[t]
            for k in range(hid):
                acc[k] += v * w1[f, k]
        for k in range(hid):
            out[b, k] = acc[k] if acc[k] > 0 else np.float32(0)
    return out


@_jit
def xmc_output_forward(h, w2, b2, act):  # type: ignore[no-untyped-def]
    batch, m = act.shape
    hid = h.shape[1]
    out = np.zeros((batch, m), np.float32)
    for b in range(batch):
        for j in range(m):
            r = act[b, j]
            if r < 0:
                continue
            acc = np.float32(0)
            for k in range(hid):
                acc += w2[r, k] * h[b, k]
            out[b, j] = acc + b2[r]
    return out


@_jit
def xmc_output_backward(h, w2, act, logits, labels, slot):  # type: ignore[no-untyped-def]
    batch, m = act.shape
    hid = h.shape[1]
    # rows in order of first touch
    rows_buf = np.empty(batch * m, np.int64)
    n_rows = 0
    for b in range(batch):
        for j in range(m):
            r = act[b, j]
            if r >= 0 and slot[r] < 0:
                slot[r] = n_rows
                rows_buf[n_rows] = r
                n_rows += 1
    grad_w = np.zeros((n_rows, hid), np.float32)
    grad_b = np.zeros(n_rows, np.float32)
    grad_h = np.zeros((batch, hid), np.float32)
    g = np.zeros(m, np.float64)
    is_lab = np.zeros(m, np.bool_)
    loss = 0.0
    inv_b = 1.0 / batch
    for b in range(batch):
        zmax = -np.inf
        for j in range(m):
            is_lab[j] = False
            if act[b, j] >= 0 and logits[b, j] > zmax:
                zmax = np.float64(logits[b, j])
        n_lab = 0
        for j in range(m):
            r = act[b, j]
            if r < 0:
                continue
            for q in range(labels.shape[1]):
                if labels[b, q] == r:
                    is_lab[j] = True
            if is_lab[j]:
                n_lab += 1
        if n_lab == 0:
            continue
        s = 0.0
        for j in range(m):
            if act[b, j] >= 0:
                g[j] = np.exp(np.float64(logits[b, j]) - zmax)
                s += g[j]
        log_s = np.log(s)
        t = 1.0 / n_lab
        for j in range(m):
            r = act[b, j]
            if r < 0:
                continue
            p = g[j] / s
            if is_lab[j]:
                loss -= t * (np.float64(logits[b, j]) - zmax - log_s)
                gj = np.float32((p - t) * inv_b)
            else:
                gj = np.float32(p * inv_b)
            sl = slot[r]
            grad_b[sl] += gj
            for k in range(hid):
                grad_h[b, k] += gj * w2[r, k]
                grad_w[sl, k] += gj * h[b, k]
    rows = rows_buf[:n_rows].copy()
    for i in range(n_rows):
        slot[rows[i]] = -1
    return loss * inv_b, grad_h, rows, grad_w, grad_b


@_jit
def xmc_hidden_backward(indptr, indices, data, h, grad_h, slot):  # type: ignore[no-untyped-def]
    batch = indptr.shape[0] - 1
    hid = h.shape[1]
    nnz = indptr[batch]
    rows_buf = np.empty(nnz, np.int64)
    n_rows = 0
    for t in range(nnz):
        f = indices[t]
        if slot[f] < 0:
            slot[f] = n_rows
            rows_buf[n_rows] = f
            n_rows += 1
    grad_w = np.zeros((n_rows, hid), np.float32)
    grad_b = np.zeros(hid, np.float32)
    dz = np.empty(hid, np.float32)
    for b in range(batch):
        for k in range(hid):
            dz[k] = grad_h[b, k] if h[b, k] > 0 else np.float32(0)
            grad_b[k] += dz[k]
        for t in range(indptr[b], indptr[b + 1]):
            sl = slot[indices[t]]
            v = data[t]
            for k in range(hid):
                grad_w[sl, k] += v * dz[k]
    rows = rows_buf[:n_rows].copy()
    for i in range(n_rows):
        slot[rows[i]] = -1
    return rows, grad_w, grad_b


@_jit
def xmc_adam_rows(param, m, v, last, rows, grad, step, lr, beta1, beta2, eps, catch_up=True):  # type: ignore[no-untyped-def]
    cols = param.shape[1]
    c1 = 1.0 - beta1**step
    c2 = 1.0 - beta2**step
    # lr * (m / c1) / (sqrt(v / c2) + eps) == lr_t * m / (sqrt(v) + eps_t)
    lr_t = np.float32(lr * np.sqrt(c2) / c1)
    eps_t = np.float32(eps * np.sqrt(c2))
    a1 = np.float32(beta1)
    a2 = np.float32(beta2)
    o1 = np.float32(1.0 - beta1)
    o2 = np.float32(1.0 - beta2)
    for i in range(rows.shape[0]):
        r = rows[i]
        d1 = a1
        d2 = a2
        if catch_up and last[r] > 0:
            skipped = step - 1 - last[r]
            if skipped > 0:
                d1 = np.float32(beta1 ** (skipped + 1))
                d2 = np.float32(beta2 ** (skipped + 1))
        for k in range(cols):
            gk = grad[i, k]
            mk = d1 * m[r, k] + o1 * gk
            vk = d2 * v[r, k] + o2 * gk * gk
            m[r, k] = mk
            v[r, k] = vk
            param[r, k] -= lr_t * mk / (np.sqrt(vk) + eps_t)
        last[r] = step


@_jit
def xmc_build_tables(codes, n_buckets):  # type: ignore[no-untyped-def]
    n, n_tables = codes.shape
    offsets = np.zeros((n_tables, n_buckets + 1), np.int64)
    ids = np.empty((n_tables, n), np.int64)
    fill = np.empty(n_buckets, np.int64)
    for t in range(n_tables):
        for i in range(n):
            offsets[t, codes[i, t] + 1] += 1
        for c in range(n_buckets):
            offsets[t, c + 1] += offsets[t, c]
            fill[c] = offsets[t, c]
        for i in range(n):
            c = codes[i, t]
            ids[t, fill[c]] = i
            fill[c] += 1
    return offsets, ids


@numba.njit(nogil=True, cache=True)
def xmc_select(qcodes, offsets, ids, labels, n_out, m, bucket_size, pad, seed, shared=0):  # type: ignore[no-untyped-def]
    batch, n_tables = qcodes.shape
    mark = np.zeros(n_out, np.bool_)
    # the batch's labels (distinct, in order of appearance), at most `shared` of them
    union = np.empty(max(0, min(shared, labels.size)), np.int64)
    n_union = 0
    for b in range(batch):
        for q in range(labels.shape[1]):
            lab = labels[b, q]
            if n_union < union.shape[0] and lab >= 0 and not mark[lab]:
                mark[lab] = True
                union[n_union] = lab
                n_union += 1
    for i in range(n_union):
        mark[union[i]] = False
    width = max(m, labels.shape[1]) + n_union
    out = np.full((batch, width), -1, np.int64)
    nt = np.uint64(n_tables)
    nout = np.uint64(n_out)
    for b in range(batch):
        n = 0
        for q in range(labels.shape[1]):
            lab = labels[b, q]
            if lab >= 0 and not mark[lab]:
                mark[lab] = True
                out[b, n] = lab
                n += 1
        mb = m
        for i in range(n_union):
            r = union[i]
            if not mark[r]:
                mark[r] = True
                out[b, n] = r
                n += 1
                mb += 1
        t0 = np.int64(_rnd(seed, b, 0) % nt)
        for s in range(n_tables):
            if n >= mb:
                break
            t = (t0 + s) % n_tables
            c = qcodes[b, t]
            lo = offsets[t, c]
            size = offsets[t, c + 1] - lo
            if size == 0:
                continue
            start = np.int64(_rnd(seed, b, t + 1) % np.uint64(size))
            for i in range(min(size, bucket_size)):
                if n >= mb:
                    break
                r = ids[t, lo + (start + i) % size]
                if not mark[r]:
                    mark[r] = True
                    out[b, n] = r
                    n += 1
        if pad:
            for a in range(4 * m):
                if n >= mb:
                    break
                r = np.int64(_rnd(seed, b, n_tables + 1 + a) % nout)
                if not mark[r]:
                    mark[r] = True
                    out[b, n] = r
                    n += 1
        for i in range(n):
            mark[out[b, i]] = False
    return out


@numba.njit(nogil=True, cache=True)
def xmc_select_batch(
    qcodes, offsets, ids, labels, n_out, m, n_random, bucket_size, pad, seed, slot
):  # type: ignore[no-untyped-def]
    batch, n_tables = qcodes.shape
    cand = np.empty(labels.size + m + n_random, np.int64)
    labcols = np.full(labels.shape, -1, np.int64)
    n = 0
    for b in range(batch):
        for q in range(labels.shape[1]):
            lab = labels[b, q]
            if lab < 0:
                continue
            if slot[lab] < 0:
                slot[lab] = n
                cand[n] = lab
                n += 1
            labcols[b, q] = slot[lab]
    target = n + m
    nt = np.uint64(n_tables)
    t0 = np.empty(batch, np.int64)
    cur_s = np.zeros(batch, np.int64)
    cur_i = np.zeros(batch, np.int64)
    for b in range(batch):
        t0[b] = np.int64(_rnd(seed, b, 0) % nt)
    progressed = True
    while n < target and progressed:
        progressed = False
        for b in range(batch):
            if n >= target:
                break
            while cur_s[b] < n_tables:
                t = (t0[b] + cur_s[b]) % n_tables
                c = qcodes[b, t]
                lo = offsets[t, c]
                size = offsets[t, c + 1] - lo
                if cur_i[b] >= min(size, bucket_size):
                    cur_s[b] += 1
                    cur_i[b] = 0
                    continue
                start = np.int64(_rnd(seed, b, t + 1) % np.uint64(size))
                r = ids[t, lo + (start + cur_i[b]) % size]
                cur_i[b] += 1
                if slot[r] < 0:
                    slot[r] = n
                    cand[n] = r
                    n += 1
                    progressed = True
                    break
    goal = target + n_random if pad else n + n_random
    nout = np.uint64(n_out)
    for a in range(4 * (m + n_random)):
        if n >= goal:
            break
        r = np.int64(_rnd(seed, batch, n_tables + 1 + a) % nout)
        if slot[r] < 0:
            slot[r] = n
            cand[n] = r
            n += 1
    out = cand[:n].copy()
    for i in range(n):
        slot[out[i]] = -1
    return out, labcols


@numba.njit(nogil=True, cache=True)
def xmc_batch_output_step(h, w2, b2, cand, labcols):  # type: ignore[no-untyped-def]
    batch, hid = h.shape
    n_c = cand.shape[0]
    w = np.empty((n_c, hid), np.float32)
    grad_b = np.zeros(n_c, np.float32)
    for i in range(n_c):
        w[i, :] = w2[cand[i], :]
    z = np.dot(h, w.T)
    inv_b = 1.0 / batch
    loss = 0.0
    for b in range(batch):
        n_lab = 0
        for q in range(labcols.shape[1]):
            c = labcols[b, q]
            if c < 0:
                continue
            dup = False
            for q2 in range(q):
                if labcols[b, q2] == c:
                    dup = True
            if not dup:
                n_lab += 1
        if n_lab == 0 or n_c == 0:
            for j in range(n_c):
                z[b, j] = 0
            continue
        for j in range(n_c):
            z[b, j] += b2[cand[j]]
        zmax = np.float64(z[b, 0])
        for j in range(n_c):
            if z[b, j] > zmax:
                zmax = np.float64(z[b, j])
        s = 0.0
        for j in range(n_c):
            s += np.exp(np.float64(z[b, j]) - zmax)
        log_s = np.log(s)
        t = 1.0 / n_lab
        for q in range(labcols.shape[1]):
            c = labcols[b, q]
            if c < 0:
                continue
            dup = False
            for q2 in range(q):
                if labcols[b, q2] == c:
                    dup = True
            if not dup:
                loss -= t * (np.float64(z[b, c]) - zmax - log_s)
        for j in range(n_c):
            z[b, j] = np.float32(np.exp(np.float64(z[b, j]) - zmax - log_s) * inv_b)
        for q in range(labcols.shape[1]):
            c = labcols[b, q]
            if c < 0:
                continue
            dup = False
            for q2 in range(q):
                if labcols[b, q2] == c:
                    dup = True
            if not dup:
                z[b, c] -= np.float32(t * inv_b)
        for j in range(n_c):
            grad_b[j] += z[b, j]
    # z now holds the logit gradient G (B, C)
    grad_h = np.dot(z, w)
    grad_w = np.dot(z.T, h)
    return loss * inv_b, grad_h, grad_w, grad_b


@numba.njit(nogil=True, cache=True)
def _row_candidates(qcodes, b, offsets, ids, extra, n_cand, n_probes, cnt, touched, hist, cand):  # type: ignore[no-untyped-def]
    """Row b's candidates of ``xmc_infer_candidates`` into ``cand[:n]`` -> (n, bucket
    entries read). Scratch: cnt (n_out,) int32 zeros (left at zero), touched (n_out,)
    int64, hist (qcodes.shape[1] + 2,) int64."""
    n_cols = qcodes.shape[1]
    reads = 0
    n_t = 0
    for j in range(n_cols):
        t = j // n_probes
        c = qcodes[b, j]
        seen = False
        for j2 in range(t * n_probes, j):  # a probe repeated in its table: read once
            if qcodes[b, j2] == c:
                seen = True
        if seen:
            continue
        for p in range(offsets[t, c], offsets[t, c + 1]):
            r = ids[t, p]
            if cnt[r] == 0:
                touched[n_t] = r
                n_t += 1
            cnt[r] += 1
        reads += offsets[t, c + 1] - offsets[t, c]
    n = 0
    for i in range(extra.shape[0]):
        r = extra[i]
        if cnt[r] >= 0:
            cand[n] = r
            n += 1
            cnt[r] = -cnt[r] - 1  # taken (reset below)
    # threshold count: take every row above it, then rows at it in order of first touch
    for i in range(hist.shape[0]):
        hist[i] = 0
    for i in range(n_t):
        if cnt[touched[i]] > 0:
            hist[cnt[touched[i]]] += 1
    thr = n_cols + 1
    above = 0
    while thr > 1 and above + hist[thr - 1] <= n_cand:
        thr -= 1
        above += hist[thr]
    # rows with cnt >= thr all fit; rows with cnt == thr - 1 fill what is left
    left = n_cand - above
    for i in range(n_t):
        c = cnt[touched[i]]
        if c >= thr or (c == thr - 1 and c > 0 and left > 0):
            if c == thr - 1:
                left -= 1
            cand[n] = touched[i]
            n += 1
    for i in range(n_t):
        cnt[touched[i]] = 0
    for i in range(extra.shape[0]):
        cnt[extra[i]] = 0
    return n, reads


@numba.njit(nogil=True, cache=True)
def xmc_infer_candidates(qcodes, offsets, ids, extra, n_cand, n_probes=1):  # type: ignore[no-untyped-def]
    batch, n_cols = qcodes.shape
    n_out = ids.shape[1]
    cnt = np.zeros(n_out, np.int32)
    touched = np.empty(n_out, np.int64)
    hist = np.zeros(n_cols + 2, np.int64)
    out = np.full((batch, n_cand + extra.shape[0]), -1, np.int64)
    reads = np.int64(0)
    widest = 0
    for b in range(batch):
        n, row_reads = _row_candidates(
            qcodes, b, offsets, ids, extra, n_cand, n_probes, cnt, touched, hist, out[b]
        )
        reads += row_reads
        widest = max(widest, n)
    return out[:, :widest].copy(), reads


@numba.njit(nogil=True, cache=True, fastmath=True)
def xmc_infer_topk(qcodes, offsets, ids, h, w2, b2, extra, n_cand, k, n_probes=1):  # type: ignore[no-untyped-def]
    batch, n_cols = qcodes.shape
    n_out, hid = w2.shape
    cnt = np.zeros(n_out, np.int32)
    touched = np.empty(n_out, np.int64)
    cand = np.empty(n_cand + extra.shape[0], np.int64)
    score = np.empty(n_cand + extra.shape[0], np.float32)
    hist = np.zeros(n_cols + 2, np.int64)
    top = np.full((batch, k), -1, np.int64)
    taken = np.zeros(n_cand + extra.shape[0], np.bool_)
    reads = np.int64(0)
    macs = np.int64(0)
    for b in range(batch):
        n, row_reads = _row_candidates(
            qcodes, b, offsets, ids, extra, n_cand, n_probes, cnt, touched, hist, cand
        )
        reads += row_reads
        for i in range(n):
            r = cand[i]
            acc = np.float32(0)
            for q in range(hid):
                acc += w2[r, q] * h[b, q]
            score[i] = acc + b2[r]
            taken[i] = False
        macs += n * hid
        for j in range(min(k, n)):
            best = -1
            for i in range(n):
                if not taken[i] and (best < 0 or score[i] > score[best]):
                    best = i
            top[b, j] = cand[best]
            taken[best] = True
    return top, reads, macs


@numba.njit(nogil=True, cache=True)
def xmc_topk_rows(scores, k):  # type: ignore[no-untyped-def]
    n, c = scores.shape
    kk = min(k, c)
    out = np.empty((n, kk), np.int64)
    vals = np.empty(max(kk, 1), scores.dtype)
    for i in range(n):
        cnt = 0
        for j in range(c):
            s = scores[i, j]
            if cnt == kk and not s > vals[kk - 1]:
                continue
            p = cnt if cnt < kk else kk - 1
            while p > 0 and s > vals[p - 1]:
                vals[p] = vals[p - 1]
                out[i, p] = out[i, p - 1]
                p -= 1
            vals[p] = s
            out[i, p] = j
            if cnt < kk:
                cnt += 1
    return out
