"""NumPy reference kernels of the hashed sparse layer (vectorized over the batch).

Sparse batches are padded 2-D arrays: ``ids (B, m)`` int64 with -1 padding and
``vals (B, m)`` float32. Every kernel that multiplies returns the number of
multiply-adds it performed; entries it skips (padding, zero inputs, zero gradients)
are not counted because they are not computed. ``lshcore.kernels._numba_layer`` has
the same functions with the same signatures; tests check that both agree.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = [
    "dense_to_sparse",
    "layer_forward",
    "layer_backward",
    "sparse_update",
    "select_active",
    "sorted_table_candidates",
    "table_hit_counts",
    "select_from_tables",
    "tiebreak_priority",
    "batch_select_from_tables",
    "block_update",
]

#: the optimizer's multiply-adds per updated entry (SGD, momentum, Adagrad, Adam): the
#: products, divisions and square roots of the update formulas, counted as one each
OPT_MULTS = (1, 2, 4, 8)
#: slots of the ``work`` tally of the selection kernels: bucket entries read (each one a
#: counter increment), distinct candidates whose counter was touched, keys ranked
#: (partitioned) to pick the active set, binary-search steps to find the buckets
WORK_ENTRIES, WORK_COUNTERS, WORK_RANKED, WORK_SEARCH = 0, 1, 2, 3

# optimizer kinds shared by ``sparse_update`` in both backends
SGD, MOMENTUM, ADAGRAD, ADAM = 0, 1, 2, 3
LABEL_CLASS = 32767  # rank class of a forced label neuron (above any hit count)

_M1 = np.uint64(0x9E3779B97F4A7C15)
_M2 = np.uint64(0xBF58476D1CE4E5B9)
_M3 = np.uint64(0x94D049BB133111EB)
_M4 = np.uint64(0xD6E8FEB86659FD93)


def tiebreak_priority(seed: int, rows: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """A 16-bit pseudo-random priority per (row, id), a pure function of the seed.

    Used to break ties (and to pick random padding) identically in both backends.
    """
    with np.errstate(over="ignore"):  # uint64 arithmetic wraps on purpose
        z = (
            np.uint64(seed) * _M1
            + np.asarray(rows).astype(np.uint64) * _M2
            + np.asarray(ids).astype(np.uint64) * _M3
        )
        z ^= z >> np.uint64(31)
        z *= _M4
        z ^= z >> np.uint64(32)
    return (z & np.uint64(0xFFFF)).astype(np.int64)


def dense_to_sparse(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The non-zeros of each row of ``x`` (B, d) as padded ``(ids, vals)`` of width max nnz."""
    nonzero = x != 0
    width = max(int(nonzero.sum(axis=1).max(initial=0)), 1)
    order = np.argsort(~nonzero, axis=1, kind="stable")[:, :width]
    vals = np.take_along_axis(x, order, axis=1).astype(np.float32)
    valid = np.take_along_axis(nonzero, order, axis=1)
    ids = np.where(valid, order, -1).astype(np.int64)
    vals = np.where(valid, vals, np.float32(0))
    return np.ascontiguousarray(ids), np.ascontiguousarray(vals)


def layer_forward(
    weight: np.ndarray,
    bias: np.ndarray,
    in_ids: np.ndarray,
    in_vals: np.ndarray,
    out_ids: np.ndarray,
) -> tuple[np.ndarray, int]:
    """Pre-activations ``z (B, m)`` of the neurons ``out_ids`` for a sparse input.

    ``z[b, j] = bias[o] + sum_t weight[o, in_ids[b, t]] * in_vals[b, t]`` with
    ``o = out_ids[b, j]``; padded outputs are 0. Returns ``(z, multiply_adds)``.
    """
    out_ok = out_ids >= 0
    in_ok = (in_ids >= 0) & (in_vals != 0)
    rows = np.where(out_ok, out_ids, 0)
    cols = np.where(in_ok, in_ids, 0)
    vals = np.where(in_ok, in_vals, np.float32(0)).astype(np.float32)
    gathered = weight[rows[:, :, None], cols[:, None, :]]  # (B, m, k)
    z = np.einsum("bjt,bt->bj", gathered, vals).astype(np.float32) + bias[rows]
    z = np.where(out_ok, z, np.float32(0)).astype(np.float32)
    mults = int((out_ok.sum(axis=1) * in_ok.sum(axis=1)).sum())
    return z, mults


def layer_backward(
    weight: np.ndarray,
    in_ids: np.ndarray,
    in_vals: np.ndarray,
    out_ids: np.ndarray,
    grad_out: np.ndarray,
    need_grad_in: bool,
    grad_w: np.ndarray,
    grad_b: np.ndarray,
    mark_w: np.ndarray,
    mark_b: np.ndarray,
    touched_w: np.ndarray,
    touched_b: np.ndarray,
    n_w: int,
    n_b: int,
) -> tuple[np.ndarray, int, int, int]:
    """Backward of :func:`layer_forward` for the gradient ``grad_out (B, m)`` on z.

    Accumulates the weight gradient into the flat buffer ``grad_w`` (n_out*n_in) and
    the bias gradient into ``grad_b``; element (bias) indices touched for the first
    time are marked in ``mark_w`` (``mark_b``) and appended to ``touched_w``
    (``touched_b``) after position ``n_w`` (``n_b``). Returns ``(grad_in (B, k),
    n_w, n_b, multiply_adds)``; ``grad_in`` is the gradient on ``in_vals`` (zeros when
    ``need_grad_in`` is False).
    """
    n_in = weight.shape[1]
    out_ok = (out_ids >= 0) & (grad_out != 0)
    in_ok = (in_ids >= 0) & (in_vals != 0)
    rows = np.where(out_ok, out_ids, 0)
    cols = np.where(in_ok, in_ids, 0)
    go = np.where(out_ok, grad_out, np.float32(0)).astype(np.float32)
    vals = np.where(in_ok, in_vals, np.float32(0)).astype(np.float32)
    pair = out_ok[:, :, None] & in_ok[:, None, :]
    n_pairs = int(pair.sum())
    grad_in = np.zeros(in_ids.shape, dtype=np.float32)
    if need_grad_in:
        gathered = weight[rows[:, :, None], cols[:, None, :]]
        grad_in = np.einsum("bjt,bj->bt", gathered, go).astype(np.float32)
        grad_in = np.where(in_ok, grad_in, np.float32(0)).astype(np.float32)
    flat = (rows[:, :, None] * n_in + cols[:, None, :])[pair]
    contrib = (go[:, :, None] * vals[:, None, :])[pair]
    np.add.at(grad_w, flat, contrib)
    np.add.at(grad_b, rows[out_ok], go[out_ok])
    n_w = _append_new(flat, mark_w, touched_w, n_w)
    n_b = _append_new(rows[out_ok], mark_b, touched_b, n_b)
    mults = n_pairs * (2 if need_grad_in else 1)
    return grad_in, n_w, n_b, mults


def _append_new(idx: np.ndarray, mark: np.ndarray, touched: np.ndarray, n: int) -> int:
    uniq = np.unique(idx)
    new = uniq[mark[uniq] == 0]
    mark[new] = 1
    touched[n : n + new.size] = new
    return n + int(new.size)


def optimizer_step(
    kind: int,
    param: Any,
    g: Any,
    ix: Any,
    state1: Any,
    state2: Any,
    lr: float,
    h1: float,
    h2: float,
    eps: float,
    step: int,
    sqrt: Any = np.sqrt,
) -> None:
    """The optimizer formulas on the entries ``param[ix]`` (any index: flat ids, an
    ``np.ix_`` block) from their gradient ``g``, in place: 0 SGD, 1 momentum (``h1``),
    2 Adagrad, 3 Adam (betas ``h1``, ``h2``, 1-based ``step``). ``sqrt`` is the arrays'
    own (``xp.sqrt`` for device arrays)."""
    f = np.float32
    if kind == SGD:
        param[ix] -= f(lr) * g
    elif kind == MOMENTUM:
        state1[ix] = f(h1) * state1[ix] + g
        param[ix] -= f(lr) * state1[ix]
    elif kind == ADAGRAD:
        state1[ix] += g * g
        param[ix] -= f(lr) * g / (sqrt(state1[ix]) + f(eps))
    else:
        state1[ix] = f(h1) * state1[ix] + f(1 - h1) * g
        state2[ix] = f(h2) * state2[ix] + f(1 - h2) * g * g
        c1 = f(1.0 - h1**step)
        c2 = f(1.0 - h2**step)
        param[ix] -= f(lr) * (state1[ix] / c1) / (sqrt(state2[ix] / c2) + f(eps))


def sparse_update(
    kind: int,
    param: np.ndarray,
    grad: np.ndarray,
    mark: np.ndarray,
    touched: np.ndarray,
    n: int,
    state1: np.ndarray,
    state2: np.ndarray,
    lr: float,
    h1: float,
    h2: float,
    eps: float,
    step: int,
) -> int:
    """Apply one optimizer step to the flat entries ``touched[:n]`` only, then clear them;
    returns the multiply-adds (``OPT_MULTS[kind]`` per entry).

    ``kind``: 0 SGD, 1 momentum (``h1`` = momentum), 2 Adagrad, 3 Adam (``h1``, ``h2``
    = betas, ``step`` = 1-based step for bias correction). State arrays have the
    shape of ``param`` (unused ones may be empty). ``grad`` and ``mark`` are zeroed.
    """
    idx = touched[:n]
    optimizer_step(kind, param, grad[idx], idx, state1, state2, lr, h1, h2, eps, step)
    grad[idx] = 0
    mark[idx] = 0
    return int(n) * OPT_MULTS[kind]


def select_active(
    indptr: np.ndarray,
    cand_ids: np.ndarray,
    cand_counts: np.ndarray,
    labels: np.ndarray,
    n_out: int,
    m: int,
    min_count: int,
    use_counts: bool,
    pad_random: bool,
    seed: int,
    tie: np.ndarray | None = None,
) -> np.ndarray:
    """Pick up to ``m`` neurons per row from CSR candidates; returns ids (B, m), -1 padded.

    Rank = forced label (``labels`` (B, n_labels), -1 padded) above everything, then the
    hit count (or 1 for any candidate when ``use_counts`` is False), candidates with a
    count below ``min_count`` dropped; ties go to a seeded random priority, and with
    ``pad_random`` non-candidates fill the remaining places in random order. Ids in a
    row are sorted ascending, padding last. ``tie`` ((n_out,) ints in [0, 65535]), when
    given, replaces the random priority by a fixed one per neuron (larger first).
    """
    batch = indptr.shape[0] - 1
    rows = np.arange(batch, dtype=np.int64)
    cls = np.zeros((batch, n_out), dtype=np.int64)
    row_of = np.repeat(rows, np.diff(indptr))
    counts = cand_counts.astype(np.int64)
    keep = counts >= min_count
    value = np.clip(counts, 1, LABEL_CLASS - 1) if use_counts else np.ones_like(counts)
    cls[row_of[keep], cand_ids[keep]] = value[keep]
    lab_ok = labels >= 0
    if lab_ok.any():
        lab_rows = np.broadcast_to(rows[:, None], labels.shape)
        cls[lab_rows[lab_ok], labels[lab_ok]] = LABEL_CLASS
    all_ids = np.arange(n_out, dtype=np.int64)
    if tie is None:
        prio = tiebreak_priority(seed, rows[:, None], all_ids[None, :])
    else:
        prio = np.broadcast_to(np.asarray(tie, np.int64)[None, :], (batch, n_out))
    key = (cls << 48) | (prio << 32) | all_ids[None, :]
    if not pad_random:
        key = np.where(cls > 0, key, -1)
    if m < n_out:
        top = np.argpartition(-key, m - 1, axis=1)[:, :m]
    else:
        top = np.broadcast_to(all_ids, (batch, n_out))
    chosen = np.take_along_axis(key, top, axis=1)
    ids = np.where(chosen >= 0, top, n_out)
    ids = np.sort(ids, axis=1)
    out = np.where(ids == n_out, -1, ids).astype(np.int64)
    if out.shape[1] < m:
        out = np.concatenate([out, np.full((batch, m - out.shape[1]), -1, np.int64)], axis=1)
    return np.ascontiguousarray(out)


def sorted_table_candidates(
    qcodes: np.ndarray, sorted_codes: np.ndarray, sorted_ids: np.ndarray, n_out: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Candidates of queries ``qcodes (B, L)`` in L tables kept as code-sorted arrays.

    ``sorted_codes (L, n)`` / ``sorted_ids (L, n)``: table l's codes in ascending order
    and the neuron ids in the same order. Returns CSR ``(indptr, ids, counts)`` with ids
    ascending in each row and counts = number of tables in which the id collided.
    """
    batch, n_tables = qcodes.shape
    found_rows = []
    found_ids = []
    for t in range(n_tables):
        lo = np.searchsorted(sorted_codes[t], qcodes[:, t], side="left")
        hi = np.searchsorted(sorted_codes[t], qcodes[:, t], side="right")
        lengths = hi - lo
        total = int(lengths.sum())
        if total == 0:
            continue
        starts = np.repeat(lo - np.cumsum(lengths) + lengths, lengths)
        pos = starts + np.arange(total)
        found_rows.append(np.repeat(np.arange(batch), lengths))
        found_ids.append(sorted_ids[t][pos])
    if not found_rows:
        return np.zeros(batch + 1, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int32)
    key = np.concatenate(found_rows).astype(np.int64) * n_out + np.concatenate(found_ids)
    uniq, counts = np.unique(key, return_counts=True)
    rows = uniq // n_out
    indptr = np.zeros(batch + 1, np.int64)
    np.cumsum(np.bincount(rows, minlength=batch), out=indptr[1:])
    return indptr, (uniq % n_out).astype(np.int64), counts.astype(np.int32)


def table_hit_counts(
    qcodes: np.ndarray, sorted_codes: np.ndarray, sorted_ids: np.ndarray, n_out: int
) -> np.ndarray:
    """The dense hit counter of queries ``qcodes (B, L)`` in code-sorted tables
    (``sorted_codes``/``sorted_ids`` (L, n), as :func:`sorted_table_candidates`):
    (B, n_out) int32, entry (b, j) = the number of tables whose bucket for query b holds
    neuron j. The counter a device selection ranks without leaving the device."""
    batch = qcodes.shape[0]
    counts = np.zeros((batch, n_out), np.int32)
    indptr, ids, hits = sorted_table_candidates(qcodes, sorted_codes, sorted_ids, n_out)
    rows = np.repeat(np.arange(batch, dtype=np.int64), np.diff(indptr))
    counts[rows, ids] = hits
    return counts


def select_from_tables(
    qcodes: np.ndarray,
    sorted_codes: np.ndarray,
    sorted_ids: np.ndarray,
    n_out: int,
    labels: np.ndarray,
    m: int,
    min_count: int,
    use_counts: bool,
    pad_random: bool,
    seed: int,
    tie: np.ndarray | None = None,
    work: np.ndarray | None = None,
) -> np.ndarray:
    """:func:`sorted_table_candidates` followed by :func:`select_active` (fused in numba).

    ``work`` ((4,) int64 or None) accumulates the selection work (slots ``WORK_*``):
    bucket entries read, distinct candidates counted, keys ranked (the candidates plus
    labels and padding when more than ``m`` compete), binary-search steps."""
    indptr, ids, counts = sorted_table_candidates(qcodes, sorted_codes, sorted_ids, n_out)
    if work is not None:
        _tally_probe(qcodes, sorted_codes, work)
        work[WORK_COUNTERS] += ids.size
        for b in range(qcodes.shape[0]):
            row = ids[indptr[b] : indptr[b + 1]]
            row_counts = counts[indptr[b] : indptr[b + 1]]
            nl = int((row_counts >= min_count).sum())
            forced = set(labels[b][labels[b] >= 0].tolist())
            nl += len(forced - set(row[row_counts >= min_count].tolist()))
            if pad_random and nl < m:
                nl = n_out
            if nl > m:
                work[WORK_RANKED] += nl
    return select_active(
        indptr, ids, counts, labels, n_out, m, min_count, use_counts, pad_random, seed, tie
    )


def _search_steps(n: int) -> int:
    """Comparisons of one binary search over ``n`` sorted entries (two per bucket)."""
    return 2 * max(int(n).bit_length(), 1)


def _tally_probe(qcodes: np.ndarray, sorted_codes: np.ndarray, work: np.ndarray) -> None:
    for t in range(qcodes.shape[1]):
        lo = np.searchsorted(sorted_codes[t], qcodes[:, t], side="left")
        hi = np.searchsorted(sorted_codes[t], qcodes[:, t], side="right")
        work[WORK_ENTRIES] += int((hi - lo).sum())
    work[WORK_SEARCH] += qcodes.size * _search_steps(sorted_codes.shape[1])


def batch_select_from_tables(
    qcodes: np.ndarray,
    sorted_codes: np.ndarray,
    sorted_ids: np.ndarray,
    n_out: int,
    labels: np.ndarray,
    m: int,
    seed: int,
    work: np.ndarray,
    offsets: np.ndarray,
) -> np.ndarray:
    """One active set for a whole batch (Mongoose): the ``m`` neurons with the most
    table hits summed over the queries ``qcodes (B, L)``.

    ``offsets`` (L, n_buckets + 1) int64: where each bucket starts in the sorted arrays
    (direct addressing, two reads per lookup), or an empty (0, 0) array: binary search.

    ``labels`` (n,) int64 (-1 ignored) are always kept; ties (and padding when fewer
    than ``m`` were hit) go to the seeded priority of :func:`tiebreak_priority` (row 0).
    Returns ids (m,) int64 ascending (``min(m, n_out)`` of them). ``work`` ((4,) int64)
    accumulates the selection work as in :func:`select_from_tables`."""
    total = np.zeros(n_out, np.int64)
    direct = offsets.shape[1] > 0
    for t in range(qcodes.shape[1]):
        if direct:
            lo, hi = offsets[t, qcodes[:, t]], offsets[t, qcodes[:, t] + 1]
        else:
            lo = np.searchsorted(sorted_codes[t], qcodes[:, t], side="left")
            hi = np.searchsorted(sorted_codes[t], qcodes[:, t], side="right")
        for b in range(qcodes.shape[0]):
            np.add.at(total, sorted_ids[t, lo[b] : hi[b]], 1)
        work[WORK_ENTRIES] += int((hi - lo).sum())
    steps = 2 if direct else _search_steps(sorted_codes.shape[1])
    work[WORK_SEARCH] += qcodes.size * steps
    work[WORK_COUNTERS] += int((total > 0).sum())
    cls = np.minimum(total, LABEL_CLASS - 1)
    lab = labels[labels >= 0]
    cls[lab] = LABEL_CLASS
    m = min(m, n_out)
    nl = int((cls > 0).sum())
    if nl < m:
        nl = n_out
    if nl > m:
        work[WORK_RANKED] += nl
    all_ids = np.arange(n_out, dtype=np.int64)
    key = (cls << 48) | (tiebreak_priority(seed, np.zeros(1, np.int64), all_ids) << 32) | all_ids
    top = np.argpartition(-key, m - 1)[:m] if m < n_out else all_ids
    return np.sort(top).astype(np.int64)


def block_update(
    kind: int,
    param: np.ndarray,
    grad: np.ndarray,
    rows: np.ndarray,
    cols: np.ndarray,
    state1: np.ndarray,
    state2: np.ndarray,
    lr: float,
    h1: float,
    h2: float,
    eps: float,
    step: int,
) -> int:
    """One optimizer step on the block ``param[rows][:, cols]`` of a 2-D ``param`` from
    its dense gradient ``grad (len(rows), len(cols))`` (the block a shared active set
    touched), in place; states have ``param``'s shape (unused ones may be empty).
    Formulas as :func:`sparse_update`. Returns the multiply-adds (``OPT_MULTS`` per entry)."""
    ix = np.ix_(rows, cols)
    g = grad.astype(np.float32)
    optimizer_step(kind, param, g, ix, state1, state2, lr, h1, h2, eps, step)
    return int(rows.size * cols.size * OPT_MULTS[kind])
