"""The GPU backend's XMC kernels: the dense and row-compact steps as array code where
the arrays live (CuPy on a device; NumPy under the simulator and for host arrays).

Same names, signatures and results as the NumPy reference (``_np_xmc``), with two
differences a device needs: ``xmc_batch_output_step`` returns the loss as a 0-d array
(the caller copies it down, counted, instead of an implicit sync), and the ``slot``
scratch arrays are not read (first touches come from a stable sort, not from a
per-row table), so a device caller may pass an empty one. Duplicate-index sums use
``add.at`` of the arrays' own module (``cupy.add.at``, CuPy >= 12: atomic adds), the
one NumPy-style call the array API lacks.

The LSH tables (``xmc_build_tables``, ``xmc_select*``, ``xmc_infer_candidates``,
``xmc_infer_topk``) and the per-sample output kernels stay the host reference: the
trainer keeps the tables on the host (it scores hashed inference's candidates on the
device, ``XMCModel.predict_topk``) and refuses per-sample active sets on a device
backend.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lshcore.core.arrayapi import namespace, owners

__all__ = [
    "xmc_hidden_forward",
    "xmc_hidden_backward",
    "xmc_adam_rows",
    "xmc_batch_output_step",
    "xmc_topk_rows",
]


def _module(x: Any) -> Any:
    """The array's own module (numpy or cupy) for ``add.at``; imports cupy only for a
    CuPy array."""
    if type(x).__module__.split(".")[0] == "cupy":
        import cupy

        return cupy
    return np


def _row_ids(xp: Any, indptr: Any) -> Any:
    """The CSR row of each stored entry, (nnz,) int64."""
    return owners(xp, indptr[1:] - indptr[:-1])


def _first_touch(xp: Any, ids: Any) -> tuple[Any, Any]:
    """ids (n,) int64 >= 0 -> (distinct ids in order of first appearance (T,), the
    position of each input id in that list (n,)), by stable sorts (no (n_rows,) table)."""
    n = ids.shape[0]
    if n == 0:
        empty = xp.zeros(0, dtype=xp.int64)
        return empty, empty
    order = xp.argsort(ids, stable=True)
    ordered = xp.take(ids, order, axis=0)
    head = xp.concat([xp.ones(1, dtype=xp.bool), ordered[1:] != ordered[:-1]])
    group = xp.cumulative_sum(xp.astype(head, xp.int64)) - 1  # each sorted id's group
    first = order[head]  # stable: the earliest position of each distinct id
    by_first = xp.argsort(first, stable=True)
    rows = xp.take(ordered[head], by_first, axis=0)
    rank = xp.argsort(by_first, stable=True)  # group -> its place in rows
    pos_sorted = xp.take(rank, group, axis=0)
    pos = xp.take(pos_sorted, xp.argsort(order, stable=True), axis=0)
    return xp.astype(rows, xp.int64), xp.astype(pos, xp.int64)


def xmc_hidden_forward(indptr: Any, indices: Any, data: Any, w1: Any, b1: Any) -> Any:
    """CSR batch (indptr (B+1,) int64, indices (nnz,) int64, data (nnz,) float32), w1
    (D, H), b1 (H,) float32 -> h (B, H) float32 = relu(x W1 + b1), where w1 lives."""
    xp = namespace(w1)
    out = xp.zeros((indptr.shape[0] - 1, w1.shape[1]), dtype=xp.float32)
    gathered = xp.take(w1, xp.astype(indices, xp.int64), axis=0)
    contrib = xp.reshape(xp.astype(data, xp.float32), (-1, 1)) * gathered
    _module(out).add.at(out, _row_ids(xp, indptr), contrib)
    out += b1
    return xp.maximum(out, xp.zeros(1, dtype=xp.float32))


def xmc_hidden_backward(
    indptr: Any, indices: Any, data: Any, h: Any, grad_h: Any, slot: Any
) -> tuple[Any, Any, Any]:
    """Back through the ReLU and the sparse product -> (rows (T,) int64 input features
    touched, order of first touch; grad_w1 (T, H) float32; grad_b1 (H,) float32).
    ``slot`` is not read (see the module doc)."""
    xp = namespace(h)
    dz = xp.astype(xp.where(h > 0, grad_h, xp.zeros_like(grad_h)), xp.float32)
    rows, pos = _first_touch(xp, xp.astype(indices, xp.int64))
    grad_w = xp.zeros((rows.shape[0], h.shape[1]), dtype=xp.float32)
    contrib = xp.reshape(data, (-1, 1)) * xp.take(dz, _row_ids(xp, indptr), axis=0)
    _module(grad_w).add.at(grad_w, pos, contrib)
    return rows, grad_w, xp.astype(xp.sum(dz, axis=0), xp.float32)


def xmc_adam_rows(
    param: Any,
    m: Any,
    v: Any,
    last: Any,
    rows: Any,
    grad: Any,
    step: int,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    catch_up: bool = True,
) -> None:
    """Lazy row Adam in place (the reference's formulas and ``last`` bookkeeping, see
    ``_np_xmc.xmc_adam_rows``): param, m, v (R, C) float32, last (R,) int64, rows (T,)
    int64 distinct, grad (T, C) float32, all where param lives."""
    xp = namespace(param)
    r = xp.astype(rows, xp.int64)
    seen = xp.take(last, r, axis=0)
    gap = xp.where((seen > 0) & bool(catch_up), step - 1 - seen, xp.zeros_like(seen))
    skipped = xp.astype(gap, xp.float64)
    d1 = xp.reshape(xp.astype(beta1**skipped, xp.float32), (-1, 1))
    d2 = xp.reshape(xp.astype(beta2**skipped, xp.float32), (-1, 1))
    mr = np.float32(beta1) * (m[r] * d1) + np.float32(1 - beta1) * grad
    vr = np.float32(beta2) * (v[r] * d2) + np.float32(1 - beta2) * grad * grad
    c1 = np.float32(1.0 - beta1**step)
    c2 = np.float32(1.0 - beta2**step)
    # integer-array assignment (NumPy and CuPy; rows are distinct, so no lost updates)
    m[r] = mr
    v[r] = vr
    param[r] = param[r] - np.float32(lr) * (mr / c1) / (xp.sqrt(vr / c2) + np.float32(eps))
    last[r] = step


def xmc_batch_output_step(
    h: Any, w2: Any, b2: Any, cand: Any, labcols: Any
) -> tuple[Any, Any, Any, Any]:
    """The reference's shared-set output step where the arrays live: h (B, H), w2 (L, H),
    b2 (L,) float32, cand (C,) int64, labcols (B, n) int64 -> (loss as a 0-d float64
    array, grad_h (B, H), grad_w (C, H), grad_b (C,) float32)."""
    xp = namespace(h)
    batch, n_cand = h.shape[0], cand.shape[0]
    w = xp.take(w2, cand, axis=0)
    if n_cand == 0:  # nothing active: no loss, no gradient (as the reference)
        zero = xp.zeros((), dtype=xp.float64)
        return zero, xp.zeros_like(h), xp.zeros((0, h.shape[1]), dtype=xp.float32), w[:, 0]
    z = xp.astype(h @ w.T + xp.take(b2, cand, axis=0), xp.float64)
    # target 1/|distinct label columns| on each row's labels (duplicates count once)
    ok = labcols >= 0
    row_of = xp.broadcast_to(xp.reshape(xp.arange(batch, dtype=xp.int64), (-1, 1)), ok.shape)
    is_label = xp.zeros((batch, n_cand), dtype=xp.bool)
    is_label[row_of[ok], labcols[ok]] = True
    n_lab = xp.sum(xp.astype(is_label, xp.float64), axis=1, keepdims=True)
    target = xp.where(is_label, 1.0 / xp.maximum(n_lab, 1.0), xp.zeros_like(z))
    has = n_lab > 0
    z = z - xp.max(z, axis=1, keepdims=True)
    logp = z - xp.log(xp.sum(xp.exp(z), axis=1, keepdims=True))
    loss = -xp.sum(xp.where(has, target * logp, xp.zeros_like(z))) / batch
    g = xp.astype(xp.where(has, xp.exp(logp) - target, xp.zeros_like(z)) / batch, xp.float32)
    return loss, g @ w, g.T @ h, xp.sum(g, axis=0)


def xmc_topk_rows(scores: Any, k: int) -> Any:
    """Column ids of each row's min(k, C) largest scores (B, C) float32, best first, ties
    to the lower column -> (B, min(k, C)) int64, where the scores live."""
    xp = namespace(scores)
    kk = min(k, scores.shape[1])
    return xp.astype(xp.argsort(-scores, axis=1, stable=True)[:, :kk], xp.int64)
