"""NumPy reference kernels of the XMC network (sparse input -> dense hidden -> hashed output).

The network: ``h = relu(x W1 + b1)`` with ``x`` a CSR batch (never densified) and ``W1``
``(D, H)`` (one row per input feature); logits ``z[b, j] = W2[act[b, j]] . h[b] + b2[act[b, j]]``
over each sample's active output neurons ``act (B, m)`` (-1 padding); loss: softmax over the
active set, target ``1/|Y|`` on each label (labels always active in training), mean over the
batch. Gradients come back as *row-compact* arrays (``rows (T,)``, ``grad (T, H)``) so that
memory grows with the rows touched, never with the layer; the optimizer
(:func:`xmc_adam_rows`) updates only those rows.

``slot`` arguments are ``(n_rows,)`` int64 scratch arrays filled with -1 (one per worker);
every kernel leaves them at -1 again. Rows are listed in the order of first touch
(sample by sample, then active position / feature order).
"""

from __future__ import annotations

from collections.abc import Iterator

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

_MASK = (1 << 64) - 1


def _mix(x: int) -> int:
    """splitmix64 finaliser on a 64-bit unsigned integer (Python int)."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


def _rnd(seed: int, row: int, salt: int) -> int:
    return _mix(_mix(_mix(seed & _MASK) ^ (row & _MASK)) ^ (salt & _MASK))


def _row_ids(indptr: np.ndarray) -> np.ndarray:
    return np.repeat(np.arange(indptr.shape[0] - 1), np.diff(indptr))


def xmc_hidden_forward(
    indptr: np.ndarray, indices: np.ndarray, data: np.ndarray, w1: np.ndarray, b1: np.ndarray
) -> np.ndarray:
    """CSR batch (indptr (B+1,) int64, indices (nnz,) int64/int32, data (nnz,) float32),
    w1 (D, H), b1 (H,) float32 -> h (B, H) float32 = relu(x W1 + b1)."""
    batch = indptr.shape[0] - 1
    out = np.zeros((batch, w1.shape[1]), np.float32)
    np.add.at(out, _row_ids(indptr), data[:, None].astype(np.float32) * w1[indices])
    out += b1
    np.maximum(out, 0, out=out)
    return out


def xmc_output_forward(
    h: np.ndarray, w2: np.ndarray, b2: np.ndarray, act: np.ndarray
) -> np.ndarray:
    """h (B, H), w2 (L, H), b2 (L,) float32, act (B, m) int64 (-1 padded) -> logits (B, m)
    float32; 0 at padding."""
    ok = act >= 0
    safe = np.where(ok, act, 0)
    z = np.einsum("bmh,bh->bm", w2[safe], h) + b2[safe]
    return np.where(ok, z, 0).astype(np.float32)


def _first_touch(ids: np.ndarray) -> np.ndarray:
    """Unique ids (>= 0) in order of first appearance."""
    ids = ids[ids >= 0]
    uniq, first = np.unique(ids, return_index=True)
    return uniq[np.argsort(first, kind="stable")].astype(np.int64)


def _softmax_grad(
    act: np.ndarray, logits: np.ndarray, labels: np.ndarray
) -> tuple[float, np.ndarray]:
    """(mean loss, dL/dlogits (B, m)) of the softmax over each row's active set."""
    batch = act.shape[0]
    ok = act >= 0
    z = np.where(ok, logits.astype(np.float64), -np.inf)
    zmax = z.max(axis=1, keepdims=True)
    zmax = np.where(np.isfinite(zmax), zmax, 0.0)
    e = np.where(ok, np.exp(z - zmax), 0.0)
    s = e.sum(axis=1, keepdims=True)
    p = e / np.where(s > 0, s, 1.0)
    is_label = np.zeros(act.shape, bool)
    for j in range(labels.shape[1]):
        lab = labels[:, j : j + 1]
        is_label |= (act == lab) & (lab >= 0) & ok
    n_lab = is_label.sum(axis=1, keepdims=True)
    has = n_lab > 0
    t = np.where(is_label, 1.0 / np.maximum(n_lab, 1), 0.0)
    logp = np.where(ok, z - zmax - np.log(np.where(s > 0, s, 1.0)), 0.0)
    loss = float(-(t * logp).sum() / batch)
    g = np.where(has & ok, (p - t) / batch, 0.0)
    return loss, g.astype(np.float32)


def xmc_output_backward(
    h: np.ndarray,
    w2: np.ndarray,
    act: np.ndarray,
    logits: np.ndarray,
    labels: np.ndarray,
    slot: np.ndarray,
) -> tuple[float, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Softmax over each sample's active set with target 1/|Y| on its labels (labels
    (B, n) int64, -1 padded; a label outside the active set is ignored; a sample with no
    active label contributes nothing), loss and gradients averaged over the batch.

    -> (loss float, grad_h (B, H) float32, rows (T,) int64 output rows touched, in order of
    first touch, grad_w (T, H) float32, grad_b (T,) float32). ``slot`` (L,) int64 scratch
    of -1s, left as it was."""
    loss, g = _softmax_grad(act, logits, labels)
    ok = act >= 0
    safe = np.where(ok, act, 0)
    grad_h = np.einsum("bm,bmh->bh", g, w2[safe]).astype(np.float32)
    rows = _first_touch(act.ravel())
    pos = np.full(w2.shape[0], -1, np.int64)
    pos[rows] = np.arange(rows.size)
    grad_w = np.zeros((rows.size, w2.shape[1]), np.float32)
    grad_b = np.zeros(rows.size, np.float32)
    bb, jj = np.nonzero(ok)
    np.add.at(grad_w, pos[act[bb, jj]], g[bb, jj][:, None] * h[bb])
    np.add.at(grad_b, pos[act[bb, jj]], g[bb, jj])
    return loss, grad_h, rows, grad_w, grad_b


def xmc_hidden_backward(
    indptr: np.ndarray,
    indices: np.ndarray,
    data: np.ndarray,
    h: np.ndarray,
    grad_h: np.ndarray,
    slot: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Back through the ReLU and the sparse product: -> (rows (T,) int64 input features
    touched (order of first touch), grad_w1 (T, H) float32, grad_b1 (H,) float32).
    ``slot`` (D,) int64 scratch of -1s, left as it was."""
    dz = np.where(h > 0, grad_h, 0).astype(np.float32)
    rows = _first_touch(np.asarray(indices, np.int64))
    pos = np.full(slot.shape[0], -1, np.int64)
    pos[rows] = np.arange(rows.size)
    grad_w = np.zeros((rows.size, h.shape[1]), np.float32)
    rid = _row_ids(indptr)
    np.add.at(grad_w, pos[np.asarray(indices, np.int64)], data[:, None] * dz[rid])
    return rows, grad_w, dz.sum(axis=0).astype(np.float32)


def xmc_adam_rows(
    param: np.ndarray,
    m: np.ndarray,
    v: np.ndarray,
    last: np.ndarray,
    rows: np.ndarray,
    grad: np.ndarray,
    step: int,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    catch_up: bool = True,
) -> None:
    """Lazy Adam on the rows ``rows (T,)`` of ``param (R, C)`` only (``grad (T, C)``;
    moments ``m``, ``v`` (R, C) float32; ``last (R,)`` int64 the step each row was last
    updated, 0 = never). ``step`` is the 1-based global step (bias correction).

    Moments are caught up for the steps a row skipped (it had no gradient there, so
    ``m *= beta1**skipped``, ``v *= beta2**skipped``: exactly dense Adam's moments); the
    parameter movement dense Adam would have made in those steps from the decaying
    moments is not applied (lazy). A row updated at every step is exactly dense Adam.
    With ``catch_up=False`` the moments of a skipped row stay as they were (PyTorch
    ``SparseAdam``, TF ``LazyAdam``). In place; repeated rows are not allowed."""
    r = np.asarray(rows, np.int64)
    skipped = np.where((last[r] > 0) & catch_up, step - 1 - last[r], 0).astype(np.float64)
    d1 = (beta1**skipped).astype(np.float32)[:, None]
    d2 = (beta2**skipped).astype(np.float32)[:, None]
    mr = np.float32(beta1) * (m[r] * d1) + np.float32(1 - beta1) * grad
    vr = np.float32(beta2) * (v[r] * d2) + np.float32(1 - beta2) * grad * grad
    c1 = np.float32(1.0 - beta1**step)
    c2 = np.float32(1.0 - beta2**step)
    m[r] = mr
    v[r] = vr
    param[r] -= np.float32(lr) * (mr / c1) / (np.sqrt(vr / c2) + np.float32(eps))
    last[r] = step


def xmc_build_tables(codes: np.ndarray, n_buckets: int) -> tuple[np.ndarray, np.ndarray]:
    """codes (n, L) int64 in [0, n_buckets) -> (offsets (L, n_buckets + 1) int64, ids (L, n)
    int64): table t's bucket c holds ``ids[t, offsets[t, c]:offsets[t, c + 1]]``, ascending
    (a stable counting sort)."""
    n, n_tables = codes.shape
    offsets = np.zeros((n_tables, n_buckets + 1), np.int64)
    ids = np.empty((n_tables, n), np.int64)
    for t in range(n_tables):
        col = codes[:, t]
        ids[t] = np.argsort(col, kind="stable")
        np.cumsum(np.bincount(col, minlength=n_buckets), out=offsets[t, 1:])
    return offsets, ids


def xmc_select(
    qcodes: np.ndarray,
    offsets: np.ndarray,
    ids: np.ndarray,
    labels: np.ndarray,
    n_out: int,
    m: int,
    bucket_size: int,
    pad: bool,
    seed: int,
    shared: int = 0,
) -> np.ndarray:
    """Active sets from bucket tables (``xmc_build_tables``) for query codes (B, L) int64.

    Per row b: its labels (B, n) int64 (-1 padded) first, then the buckets of tables
    ``t0, t0+1, ...`` (mod L, ``t0 = rnd(seed, b, 0) % L``), at most ``bucket_size`` ids
    from each bucket (a window starting at ``rnd(seed, b, t + 1) % size``, wrapping), no
    repeats, until m ids; with ``pad`` then random ids (``rnd(seed, b, L + 1 + a) % n_out``,
    a < 4m) until m. With ``shared`` > 0, the batch's labels (distinct, in order of
    appearance, the first ``shared`` of them: U) are every row's shared negatives: after its
    own labels, each row takes the ids of U it lacks (s_b of them), and buckets/padding then
    fill up to m + s_b. -> (B, max(m, labels) + |U|) int64, -1 padded, in insertion order."""
    batch, n_tables = qcodes.shape
    union: list[int] = []
    for lab in labels.reshape(-1):
        if len(union) >= shared:
            break
        if lab >= 0 and int(lab) not in union:
            union.append(int(lab))
    width = max(m, labels.shape[1]) + len(union)
    out = np.full((batch, width), -1, np.int64)
    for b in range(batch):
        seen: set[int] = set()
        row: list[int] = []
        for lab in labels[b]:
            if lab >= 0 and int(lab) not in seen:
                seen.add(int(lab))
                row.append(int(lab))
        mb = m
        for r in union:
            if r not in seen:
                seen.add(r)
                row.append(r)
                mb += 1
        t0 = _rnd(seed, b, 0) % n_tables
        for s in range(n_tables):
            if len(row) >= mb:
                break
            t = (t0 + s) % n_tables
            c = int(qcodes[b, t])
            lo, hi = int(offsets[t, c]), int(offsets[t, c + 1])
            size = hi - lo
            if size == 0:
                continue
            start = _rnd(seed, b, t + 1) % size
            for i in range(min(size, bucket_size)):
                if len(row) >= mb:
                    break
                r = int(ids[t, lo + (start + i) % size])
                if r not in seen:
                    seen.add(r)
                    row.append(r)
        if pad:
            for a in range(4 * m):
                if len(row) >= mb:
                    break
                r = _rnd(seed, b, n_tables + 1 + a) % n_out
                if r not in seen:
                    seen.add(r)
                    row.append(r)
        out[b, : len(row)] = row
    return out


def xmc_select_batch(
    qcodes: np.ndarray,
    offsets: np.ndarray,
    ids: np.ndarray,
    labels: np.ndarray,
    n_out: int,
    m: int,
    n_random: int,
    bucket_size: int,
    pad: bool,
    seed: int,
    slot: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """One active set shared by the batch (Mongoose / sampled-softmax style).

    ``cand``: the batch's labels (B, n) int64 -1 padded (distinct, in order of appearance),
    then up to ``m`` LSH ids taken round-robin over the rows (each round, row b takes the
    next id not yet in the set from its own probe sequence: tables ``t0_b, t0_b + 1, ...``
    (mod L, ``t0_b = rnd(seed, b, 0) % L``), at most ``bucket_size`` ids per bucket from a
    window starting at ``rnd(seed, b, t + 1) % size``), then ``n_random`` uniform random
    ids (``rnd(seed, B, L + 1 + a) % n_out``, a < 4 (m + n_random), no repeats), and with
    ``pad`` as many more as the buckets fell short of m. ``labcols`` (B, n):
    each label's column in ``cand`` (-1 at padding). ``slot`` (n_out,) int64 scratch of
    -1s, left at -1. -> (cand (C,) int64, labcols (B, n) int64)."""
    batch, n_tables = qcodes.shape
    pos: dict[int, int] = {}
    cand: list[int] = []
    labcols = np.full(labels.shape, -1, np.int64)
    for b in range(batch):
        for q, lab in enumerate(labels[b]):
            if lab < 0:
                continue
            if int(lab) not in pos:
                pos[int(lab)] = len(cand)
                cand.append(int(lab))
            labcols[b, q] = pos[int(lab)]
    target = len(cand) + m

    def probes(b: int) -> Iterator[int]:
        t0 = _rnd(seed, b, 0) % n_tables
        for s in range(n_tables):
            t = (t0 + s) % n_tables
            c = int(qcodes[b, t])
            lo, size = int(offsets[t, c]), int(offsets[t, c + 1] - offsets[t, c])
            if size == 0:
                continue
            start = _rnd(seed, b, t + 1) % size
            for i in range(min(size, bucket_size)):
                yield int(ids[t, lo + (start + i) % size])

    gens = [probes(b) for b in range(batch)]
    alive = [True] * batch
    while len(cand) < target and any(alive):
        for b in range(batch):
            if len(cand) >= target:
                break
            if not alive[b]:
                continue
            for r in gens[b]:
                if r not in pos:
                    pos[r] = len(cand)
                    cand.append(r)
                    break
            else:
                alive[b] = False
    goal = target + n_random if pad else len(cand) + n_random
    for a in range(4 * (m + n_random)):
        if len(cand) >= goal:
            break
        r = _rnd(seed, batch, n_tables + 1 + a) % n_out
        if r not in pos:
            pos[r] = len(cand)
            cand.append(r)
    return np.asarray(cand, np.int64), labcols


def xmc_batch_output_step(
    h: np.ndarray, w2: np.ndarray, b2: np.ndarray, cand: np.ndarray, labcols: np.ndarray
) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
    """Forward and backward of the output layer over one shared set: h (B, H), w2 (L, H),
    b2 (L,) float32, cand (C,) int64 distinct, labcols (B, n) int64 columns of each row's
    labels in cand (-1 padded). Softmax over the C logits ``h w2[cand]^T + b2[cand]``,
    target 1/|Y| on the labels (a row without labels adds nothing), mean over B ->
    (loss, grad_h (B, H), grad_w (C, H) for rows cand, grad_b (C,)); three BLAS products."""
    batch = h.shape[0]
    w = w2[cand]
    z = (h @ w.T + b2[cand]).astype(np.float64)
    target = np.zeros_like(z)
    for b in range(batch):
        cols = np.unique(labcols[b][labcols[b] >= 0])
        if cols.size:
            target[b, cols] = 1.0 / cols.size
    has = target.sum(axis=1) > 0
    z -= z.max(axis=1, keepdims=True) if z.shape[1] else 0.0
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True)) if z.shape[1] else z
    loss = float(-(target * logp)[has].sum() / batch)
    g = np.where(has[:, None], np.exp(logp) - target, 0.0) / batch
    g = g.astype(np.float32)
    return loss, g @ w, g.T @ h, g.sum(axis=0)


def xmc_infer_candidates(
    qcodes: np.ndarray,
    offsets: np.ndarray,
    ids: np.ndarray,
    extra: np.ndarray,
    n_cand: int,
    n_probes: int = 1,
) -> tuple[np.ndarray, int]:
    """The candidates of hashed inference (the integer half of ``xmc_infer_topk``).

    Per row b: every id of the L buckets its codes (B, L) hit is counted (hits per id);
    the candidates are ``extra`` (F,) int64 (e.g. the frequent labels, always scored;
    distinct, in their order), then the ``n_cand`` ids with the most hits (every id above
    the cut-off count, then ids at it in order of first touch: table 0's bucket first, in
    bucket order), kept in order of first touch. With ``n_probes`` > 1, qcodes is
    (B, L * n_probes): column j probes table ``j // n_probes`` (multiprobe); a code
    repeated within a table is read once. -> (cand (B, C) int64, each row's candidates
    in that order then -1 padding, C the longest row's count; bucket entries read)."""
    batch = qcodes.shape[0]
    rows: list[list[int]] = []
    reads = 0
    for b in range(batch):
        hits: dict[int, int] = {}  # insertion order = order of first touch
        for j in range(qcodes.shape[1]):
            t = j // n_probes
            c = int(qcodes[b, j])
            if c in qcodes[b, t * n_probes : j]:
                continue
            part = ids[t, offsets[t, c] : offsets[t, c + 1]]
            reads += part.size
            for r in part:
                hits[int(r)] = hits.get(int(r), 0) + 1
        cand: list[int] = []
        taken: set[int] = set()  # membership in cand (a list scan per id is quadratic)
        for r in extra:
            if int(r) not in taken:
                taken.add(int(r))
                cand.append(int(r))
        rest = [(-n, i, r) for i, (r, n) in enumerate(hits.items()) if r not in taken]
        rest.sort()  # most hits first, ties by first touch
        cand += [r for _, _, r in sorted(rest[:n_cand], key=lambda e: e[1])]
        rows.append(cand)
    out = np.full((batch, max((len(r) for r in rows), default=0)), -1, np.int64)
    for b, cand in enumerate(rows):
        out[b, : len(cand)] = cand
    return out, reads


def xmc_infer_topk(
    qcodes: np.ndarray,
    offsets: np.ndarray,
    ids: np.ndarray,
    h: np.ndarray,
    w2: np.ndarray,
    b2: np.ndarray,
    extra: np.ndarray,
    n_cand: int,
    k: int,
    n_probes: int = 1,
) -> tuple[np.ndarray, int, int]:
    """Hashed inference with exact re-scoring: each row's candidates of
    :func:`xmc_infer_candidates` (same arguments), scored exactly (``w2[r] . h[b] +
    b2[r]``, h (B, H), w2 (L, H), b2 (L,) float32); the k best by score, ties to the
    earlier candidate. -> (top (B, k) int64 -1 padded, bucket entries read,
    multiply-adds)."""
    cand, reads = xmc_infer_candidates(qcodes, offsets, ids, extra, n_cand, n_probes)
    top = np.full((qcodes.shape[0], k), -1, np.int64)
    macs = 0
    for b in range(cand.shape[0]):
        c_arr = cand[b][cand[b] >= 0]
        if not c_arr.size:
            continue
        score = w2[c_arr] @ h[b] + b2[c_arr]
        macs += c_arr.size * h.shape[1]
        order = np.argsort(-score, kind="stable")[:k]
        top[b, : order.size] = c_arr[order]
    return top, reads, macs


def xmc_topk_rows(scores: np.ndarray, k: int) -> np.ndarray:
    """Column ids of each row's min(k, C) largest scores (B, C) float32, best first, ties
    to the lower column -> (B, min(k, C)) int64 (full scoring's top k: one pass per row
    in the numba kernel)."""
    kk = min(k, scores.shape[1])
    return np.argsort(-scores, axis=1, kind="stable")[:, :kk].astype(np.int64)
