"""Active-set selection on a device: the tables, the counting and the choice stay there.

An :class:`~lshcore.training.selector.ActiveSelector` on a device backend
(``backend.on_device``) whose functions can hash on the device (a family with
``device_hash``: DWTA, WTA, SRP; no MIPS transform, or one with the ``device_*`` methods
of :mod:`lshcore.hashing.mips`; sorted tables; either tie-break) keeps its tables here,
as arrays of the backend (CuPy on a GPU), built there from the layer's device weights
(``fit_device``) or moved up from a host fit (``attach``):

* :class:`DeviceTables`: each row's codes ``(n_out, L)`` and, per table, the codes in
  ascending order with their row ids ``(L, n_out)`` (the layout of the host tables); the
  transform (its scale M a host float) and ``tiebreak="norm"``'s priorities
  (:func:`norm_priorities`);
* the query codes come from ``family.device_hash`` of ``[x, 1]`` built on the device
  (:func:`dense_query`), through the transform's ``device_query`` when there is one;
* the kernel ``table_hit_counts`` fills a dense ``(B, n_out)`` hit counter (atomic adds);
* the pick is array code: every neuron gets one int64 key ``class << 48 | priority << 32
  | id`` (class: a forced label above any hit count, then the hit count; priority: the
  seeded ``tiebreak_priority`` hash, or the norm rank), and the ``m`` largest keys win.

The keys are the NumPy reference's (``kernels._np_layer.select_active`` and
``batch_select_from_tables``) and are distinct (the id is in the low bits), so the set
of the ``m`` largest does not depend on how a sort or partition breaks ties: the device
choice is the reference's choice, id for id, on the same codes. Only the work tally goes
to the host: four int64 per call, in the reference kernels' slots (bucket entries read,
counters touched, keys ranked, binary-search steps).

The policies that score against the weights run here too, on the layer's device
weights: ``rerank`` (:func:`rerank_rows`: ``topk``'s candidates, their rows gathered at
the input's columns, the reference's ``layer_forward`` formula) and ``exact``
(:func:`select_exact`: the dense product); both keep the ``m`` best with
:func:`top_by_score`, whose ties go to the smaller id (the host selector uses it too).
``random`` (:func:`select_random`) is the ranking with no hits. Their multiplications
come down with the tally.

Every dense temporary is bounded: the batch is counted, ranked and scored in chunks of
rows so that one ``(rows, n_out)`` (or ``rows x candidates x input width``) array holds
at most :data:`DENSE_BUDGET` elements; the result does not depend on the chunking.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from lshcore.core.backend import Backend

__all__ = [
    "DENSE_BUDGET",
    "LABEL_CLASS",
    "DeviceActiveSet",
    "DeviceTables",
    "dense_query",
    "norm_priorities",
    "rerank_rows",
    "select_batch",
    "select_exact",
    "select_random",
    "select_rows",
    "top_by_score",
    "score_inputs",
]

#: rank class of a forced label neuron (above any hit count): the reference kernels'
#: value (``kernels._np_layer.LABEL_CLASS``, which this layer may not import; a test
#: checks that they agree)
LABEL_CLASS = 32767
#: the most elements of one dense (rows, n_out) temporary of a selection (hit counts,
#: rank keys: int64, 128 MiB each): a batch is counted and ranked in chunks of rows
#: under it, so a wide layer (670,000 outputs x a batch of 128) needs no GBs of scratch
DENSE_BUDGET = 1 << 24


@dataclass
class DeviceActiveSet:
    """The neurons a device selection picked: ``ids`` on the device, ``(B, m)`` int64
    ascending per row with -1 padding last, or ``(m,)`` for one set shared by the batch
    (``shared``); ``hash_mults`` / ``work`` as in ``ActiveSet``."""

    ids: Any
    hash_mults: int = 0
    work: int = 0
    shared: bool = False


class DeviceTables:
    """The LSH functions and their tables on the device, replaced as a whole.

    ``codes (n_out, L)`` int64; ``sorted_codes`` / ``sorted_ids`` ``(L, n_out)`` int64:
    table t's codes ascending and the row ids in that order (what ``table_hit_counts``
    binary-searches). ``direct``: whether the host tables would address this key space
    directly (the work tally counts a lookup as the host kernels do, two comparisons
    then, else ``search_steps`` of a binary search), so reports agree across backends.
    ``transform``: the MIPS transform the rows were hashed through (its scale M a host
    float), or None; ``tie``: ``tiebreak="norm"``'s fixed priorities ``(n_out,)`` int64
    on the device (:func:`norm_priorities`), or None.
    """

    def __init__(
        self, xp: Any, family: Any, codes: Any, direct: bool, transform: Any = None,
        tie: Any = None,
    ):  # fmt: skip
        prepare = getattr(family, "prepare_device", None)
        if callable(prepare):  # the functions' own arrays go up now, not at a query
            prepare()
        self.family = family
        self.transform = transform
        self.tie = tie
        self.codes = codes
        order = xp.argsort(codes, axis=0, kind="stable")  # (n_out, L)
        sorted_codes = xp.take_along_axis(codes, order, axis=0)
        self.sorted_ids = xp.ascontiguousarray(order.T.astype(xp.int64))
        self.sorted_codes = xp.ascontiguousarray(sorted_codes.T)
        self.direct = bool(direct)
        self.search_steps = 2 * max(int(codes.shape[0]).bit_length(), 1)


def norm_priorities(xp: Any, rows: Any) -> Any:
    """``tiebreak="norm"``'s fixed priorities of the rows ``[w, b]`` ``(n, d)`` float32 of
    the device -> ``(n,)`` int64 in 0..65535, larger rows higher: the host selector's
    ranking (``ActiveSelector._set_tie``), computed there: the squared norms in float32
    as the host sums them (``einsum``), ranked by a stable sort (equal norms: the smaller
    id ranks lower), the rank scaled to 16 bits."""
    n = int(rows.shape[0])
    norms = xp.einsum("ij,ij->i", rows, rows)
    rank = xp.empty(n, dtype=xp.int64)
    rank[xp.argsort(norms, kind="stable")] = xp.arange(n, dtype=xp.int64)
    return (rank * 65535) // max(n - 1, 1)


def dense_query(xp: Any, x: Any, n_in: int) -> Any:
    """``[x, 1]`` as a dense (B, n_in + 1) float32 array of the device, built there.

    ``x``: a dense (B, n_in) device array, or a device SparseBatch (``dev_ids`` set:
    per-row ids (B, w) -1 padded, or a shared set, its columns in ``dev_ids[0]``)."""
    dev_ids = getattr(x, "dev_ids", None)
    if dev_ids is None:  # dense
        batch = x.shape[0]
        ones = xp.ones((batch, 1), dtype=xp.float32)
        return xp.concatenate([x.astype(xp.float32), ones], axis=1)
    vals = x.vals.astype(xp.float32)
    batch = vals.shape[0]
    if x.shared:
        q = xp.zeros((batch, n_in + 1), dtype=xp.float32)
        q[:, dev_ids[0]] = vals
    else:
        # one spare column takes the padding (-1) entries, then is dropped
        q = xp.zeros((batch, n_in + 2), dtype=xp.float32)
        rows = xp.broadcast_to(xp.arange(batch)[:, None], dev_ids.shape)
        ok = dev_ids >= 0
        q[rows, xp.where(ok, dev_ids, n_in + 1)] = xp.where(ok, vals, xp.float32(0))
        q = xp.ascontiguousarray(q[:, : n_in + 1])
    q[:, n_in] = 1.0
    return q


def _top_keys(xp: Any, key: Any, m: int, n_out: int) -> Any:
    """Ids (B, m) int64 of the ``m`` largest keys of each row of ``key (B, n_out)``
    (ascending, -1 for a chosen key < 0 and for the columns beyond n_out, last)."""
    batch = key.shape[0]
    if m < n_out:
        top = xp.partition(key, n_out - m, axis=1)[:, n_out - m :]
    else:
        top = key
    ids = xp.where(top >= 0, top & 0xFFFFFFFF, n_out)
    ids = xp.sort(ids, axis=1)
    ids = xp.where(ids == n_out, -1, ids)
    if ids.shape[1] < m:  # more places than neurons
        pad = xp.full((batch, m - ids.shape[1]), -1, dtype=xp.int64)
        ids = xp.concatenate([ids, pad], axis=1)
    return xp.ascontiguousarray(ids.astype(xp.int64))


def _label_mask(xp: Any, labels: Any, batch: int, n_out: int) -> Any:
    """(B, n_out) bool: the labels (B, n) int64 of each row (-1 ignored)."""
    mark = xp.zeros((batch, n_out + 1), dtype=bool)
    if labels.shape[1]:
        rows = xp.broadcast_to(xp.arange(batch)[:, None], labels.shape)
        mark[rows, xp.where(labels >= 0, labels, n_out)] = True
    return mark[:, :n_out]


def _row_chunks(batch: int, per_row: int) -> list[slice]:
    """Consecutive row ranges of a batch of ``batch`` rows such that a dense temporary of
    ``per_row`` elements per row stays within :data:`DENSE_BUDGET` (one row at least)."""
    rows = max(1, DENSE_BUDGET // max(per_row, 1))
    return [slice(start, min(start + rows, batch)) for start in range(0, batch, rows)]


def _rank_rows(
    xp: Any,
    kernels: Any,
    counts: Any,
    labels: Any,
    row0: int,
    n_out: int,
    m: int,
    min_count: int,
    use_counts: bool,
    pad_random: bool,
    seed: int,
    tie: Any = None,
) -> tuple[Any, Any]:
    """The choice of rows ``row0 ..`` of a batch from their hit counts ``counts (r,
    n_out)`` int64 and forced ``labels (r, n)`` -> (ids (r, m) int64, the tally (3,) of
    these rows: bucket entries read, counters touched, keys ranked; device arrays).
    ``tie``: fixed priorities ``(n_out,)`` int64 in place of the seeded ones, or None."""
    batch = counts.shape[0]
    hit = counts >= min_count
    value = xp.clip(counts, 1, LABEL_CLASS - 1) if use_counts else xp.ones_like(counts)
    is_label = _label_mask(xp, labels, batch, n_out)
    cls = xp.where(is_label, LABEL_CLASS, xp.where(hit, value, 0))
    all_ids = xp.arange(n_out, dtype=xp.int64)
    if tie is None:
        rows = xp.arange(row0, row0 + batch, dtype=xp.int64)  # the priority hashes the row
        prio = kernels.tiebreak_priority(seed, rows[:, None], all_ids[None, :])
    else:  # one priority per neuron, the same in every row (the reference's broadcast)
        prio = xp.reshape(tie, (1, n_out))
    key = (cls << 48) | (prio << 32) | all_ids[None, :]
    if not pad_random:
        key = xp.where(cls > 0, key, -1)
    ids = _top_keys(xp, key, m, n_out)
    # the reference's tally: each entry read bumps one counter; a row ranks its
    # competitors (every neuron when padding fills it) only when more than m compete
    competing = xp.sum((cls > 0).astype(xp.int64), axis=1)
    if pad_random:
        competing = xp.where(competing < m, n_out, competing)
    ranked = xp.sum(xp.where(competing > m, competing, 0))
    tally = xp.stack([xp.sum(counts), xp.sum((counts > 0).astype(xp.int64)), ranked])
    return ids, tally


def select_rows(
    backend: Backend,
    tables: DeviceTables,
    qcodes: Any,
    labels: Any,
    n_out: int,
    m: int,
    min_count: int,
    use_counts: bool,
    pad_random: bool,
    seed: int,
    tie: Any = None,
) -> tuple[Any, Any]:
    """Per-row sets (``topk``, ``union``, ``threshold``) from query codes ``qcodes (B, L)``
    and forced ``labels (B, n)`` (-1 padded), device arrays -> (ids (B, m) int64, the
    work tally (4,) int64), both on the device (the caller reads the tally with whatever
    else comes down). The reference's ``select_active`` rules: class = forced label, else the hit count (1 for any hit unless
    ``use_counts``) when at least ``min_count``; ties and (with ``pad_random``) padding
    by the seeded priority, or by ``tie`` ((n_out,) int64 fixed priorities,
    ``tiebreak="norm"``) when given; without ``pad_random`` unhit neurons are never
    chosen. The batch is counted and ranked in chunks of rows (:data:`DENSE_BUDGET`)."""
    xp = backend.xp
    kernels = backend.kernels
    batch = qcodes.shape[0]
    parts, tallies = [], []
    for rows in _row_chunks(batch, n_out):
        counts = kernels.table_hit_counts(
            qcodes[rows], tables.sorted_codes, tables.sorted_ids, n_out
        ).astype(xp.int64)
        ids, tally = _rank_rows(
            xp, kernels, counts, labels[rows], rows.start, n_out, m,
            min_count, use_counts, pad_random, seed, tie,
        )  # fmt: skip
        parts.append(ids)
        tallies.append(tally)
    ids = parts[0] if len(parts) == 1 else xp.concatenate(parts, axis=0)
    steps = xp.asarray([int(qcodes.shape[0] * qcodes.shape[1] * tables.search_steps)])
    work = xp.concatenate([xp.sum(xp.stack(tallies), axis=0), steps.astype(xp.int64)])
    return ids, work.astype(xp.int64)


def select_batch(
    backend: Backend,
    tables: DeviceTables,
    qcodes: Any,
    labels: Any,
    n_out: int,
    m: int,
    seed: int,
) -> tuple[Any, np.ndarray]:
    """One set for the batch (``batch_union``, ``batch_rerank``): the ``m`` neurons with
    the most hits summed over the queries ``qcodes (B, L)``, every label of ``labels
    (B, n)`` (-1 padded) kept, ties and padding by the seeded priority of row 0 -> (ids
    (min(m, n_out),) int64 ascending on the device, the work tally (4,) on the host).
    The hits are counted in chunks of rows (:data:`DENSE_BUDGET`)."""
    xp = backend.xp
    kernels = backend.kernels
    total = xp.zeros(n_out, dtype=xp.int64)
    for rows in _row_chunks(qcodes.shape[0], n_out):
        counts = kernels.table_hit_counts(
            qcodes[rows], tables.sorted_codes, tables.sorted_ids, n_out
        )
        total += xp.sum(counts.astype(xp.int64), axis=0)
    flat = xp.reshape(labels, (1, -1))
    is_label = _label_mask(xp, flat, 1, n_out)[0]
    cls = xp.where(is_label, LABEL_CLASS, xp.minimum(total, LABEL_CLASS - 1))
    all_ids = xp.arange(n_out, dtype=xp.int64)
    prio = kernels.tiebreak_priority(seed, xp.zeros((1, 1), dtype=xp.int64), all_ids[None, :])
    key = (cls[None, :] << 48) | (prio << 32) | all_ids[None, :]
    m = min(m, n_out)
    ids = _top_keys(xp, key, m, n_out)[0]
    competing = xp.sum((cls > 0).astype(xp.int64))
    competing = xp.where(competing < m, n_out, competing)
    steps = 2 if tables.direct else tables.search_steps
    work = xp.stack(
        [
            xp.sum(total),
            xp.sum((total > 0).astype(xp.int64)),
            xp.where(competing > m, competing, 0),
            xp.asarray(int(qcodes.shape[0] * qcodes.shape[1] * steps)),
        ]
    )
    return ids, backend.to_host(work.astype(xp.int64), "selection_work")


def top_by_score(xp: Any, z: Any, ids: Any, m: int, n_out: int) -> Any:
    """The ``m`` best-scored ids of each row: scores ``z (B, c)`` float32 of the ids
    ``ids (B, c)`` int64 (ascending per row, -1 padding last, whose scores are ignored)
    -> (B, m) int64 ascending, -1 padding last; arrays of ``xp`` (NumPy or CuPy).

    Equal scores go to the smaller id (the earlier column), so the kept set is one set
    whatever a partition does with ties: the host and a device choose the same ids
    from the same scores (``rerank`` and ``exact`` on either side). A NaN score ranks
    as -inf (last, but still chosen before padding)."""
    c = z.shape[1]
    if m >= c:
        return xp.ascontiguousarray(ids.astype(xp.int64))
    valid = ids >= 0
    z = xp.where(valid & ~xp.isnan(z), z, -xp.inf)
    kth = xp.partition(z, c - m, axis=1)[:, c - m : c - m + 1]  # each row's m-th largest
    above = z > kth
    tie = z == kth
    need = m - xp.sum(above.astype(xp.int64), axis=1, keepdims=True)
    keep = above | (tie & (xp.cumsum(tie.astype(xp.int64), axis=1) <= need))
    # exactly m marked per row (padding last): a partition finds them, no sort of the row
    chosen = xp.partition(xp.where(keep & valid, ids, n_out), m - 1, axis=1)[:, :m]
    chosen = xp.sort(chosen, axis=1)
    return xp.ascontiguousarray(xp.where(chosen == n_out, -1, chosen).astype(xp.int64))


def score_inputs(xp: Any, x: Any, n_in: int) -> tuple[Any, Any]:
    """The input as ``(ids (B, w) int64, vals (B, w) float32)`` device arrays for
    :func:`rerank_rows`: a dense (B, n_in) array as every column, a device SparseBatch
    as its ids (a shared set's columns repeated per row)."""
    dev_ids = getattr(x, "dev_ids", None)
    if dev_ids is None:
        batch = x.shape[0]
        cols = xp.broadcast_to(xp.arange(n_in, dtype=xp.int64)[None, :], (batch, n_in))
        return cols, x.astype(xp.float32)
    vals = x.vals.astype(xp.float32)
    if x.shared:
        return xp.broadcast_to(dev_ids[0][None, :], vals.shape), vals
    return dev_ids, vals


def rerank_rows(
    xp: Any,
    weight: Any,
    bias: Any,
    in_ids: Any,
    in_vals: Any,
    cand: Any,
    labels: Any,
    m: int,
    n_out: int,
) -> tuple[Any, Any]:
    """``rerank``'s second stage on the device: the ``m`` candidates ``cand (B, c)``
    (ascending, -1 padded) of largest exact activation ``[x, 1] . [w, b]`` (labels
    ``(B, n)`` -1 padded kept) -> (ids (B, m) int64, the multiplications as a (1,) int64
    device array: each row's non-zero inputs x its candidates, as the host counts them).

    ``weight (n_out, n_in)``/``bias (n_out,)``: the layer's device arrays; the input
    ``in_ids``/``in_vals (B, w)`` (:func:`score_inputs`). The candidate rows are
    gathered at the input's columns, (r, c, w) per chunk of r rows within
    :data:`DENSE_BUDGET`; the scores are the host reference's formula
    (``layer_forward``), the choice :func:`top_by_score`."""
    batch, c = cand.shape
    in_ok = (in_ids >= 0) & (in_vals != 0)
    cand_ok = cand >= 0
    mults = xp.sum(
        xp.sum(in_ok.astype(xp.int64), axis=1) * xp.sum(cand_ok.astype(xp.int64), axis=1)
    )
    parts = []
    for rows in _row_chunks(batch, c * int(in_ids.shape[1])):
        out_rows = xp.where(cand_ok[rows], cand[rows], 0)
        cols = xp.where(in_ok[rows], in_ids[rows], 0)
        vals = xp.where(in_ok[rows], in_vals[rows], xp.float32(0)).astype(xp.float32)
        gathered = weight[out_rows[:, :, None], cols[:, None, :]]  # (r, c, w)
        z = xp.einsum("bjt,bt->bj", gathered, vals).astype(xp.float32) + bias[out_rows]
        lab = labels[rows]
        if lab.shape[1]:
            is_label = xp.any(cand[rows][:, :, None] == lab[:, None, :], axis=2)
            z = xp.where(is_label & cand_ok[rows], xp.inf, z)
        parts.append(top_by_score(xp, z, cand[rows], m, n_out))
    ids = parts[0] if len(parts) == 1 else xp.concatenate(parts, axis=0)
    return ids, xp.reshape(mults.astype(xp.int64), (1,))


def select_exact(
    xp: Any, weight: Any, bias: Any, x: Any, labels: Any, m: int, n_out: int
) -> tuple[Any, Any]:
    """``exact`` on the device: the ``m`` largest activations ``x @ w.T + b`` of each row
    of the dense input ``x (B, n_in)`` float32 (labels ``(B, n)`` -1 padded kept), in
    chunks of rows within :data:`DENSE_BUDGET` -> (ids (B, m) int64, the multiplications
    as a (1,) int64 device array: non-zero inputs x n_out, as the host counts them)."""
    batch = x.shape[0]
    nnz = xp.sum((x != 0).astype(xp.int64))
    all_ids = xp.arange(n_out, dtype=xp.int64)
    parts = []
    for rows in _row_chunks(batch, n_out):
        z = x[rows] @ weight.T + bias
        is_label = _label_mask(xp, labels[rows], z.shape[0], n_out)
        z = xp.where(is_label, xp.inf, z)
        ids = xp.broadcast_to(all_ids[None, :], z.shape)
        parts.append(top_by_score(xp, z, ids, m, n_out))
    ids = parts[0] if len(parts) == 1 else xp.concatenate(parts, axis=0)
    return ids, xp.reshape(nnz * n_out, (1,))


def select_random(backend: Backend, labels: Any, batch: int, n_out: int, m: int, seed: int) -> Any:
    """``random`` on the device: ``m`` neurons per row by the seeded priority (labels
    ``(B, n)`` -1 padded kept), the reference's ``select_active`` with no candidates ->
    ids (B, m) int64, ranked in chunks of rows within :data:`DENSE_BUDGET`."""
    xp = backend.xp
    parts = []
    for rows in _row_chunks(batch, n_out):
        no_hits = xp.zeros((rows.stop - rows.start, n_out), dtype=xp.int64)
        ids, _ = _rank_rows(
            xp, backend.kernels, no_hits, labels[rows], rows.start, n_out, m, 1, True, True, seed
        )
        parts.append(ids)
    return parts[0] if len(parts) == 1 else xp.concatenate(parts, axis=0)
