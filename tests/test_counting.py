"""The work counts (multiply-adds and selection work) against independent tallies."""

from __future__ import annotations

import numpy as np
import pytest

from lshcore.registry.catalog import get_backend
from lshcore.training.layer import Counts, DenseLayer, HashedLayer
from lshcore.training.optim import make_optimizer


def _tables(rng: np.random.Generator, n_tables: int = 3, n: int = 12, buckets: int = 4):
    codes = rng.integers(0, buckets, (n_tables, n)).astype(np.int64)
    order = np.argsort(codes, axis=1, kind="stable")
    sorted_codes = np.ascontiguousarray(np.take_along_axis(codes, order, axis=1))
    sorted_ids = np.ascontiguousarray(order.astype(np.int64))
    qcodes = rng.integers(0, buckets, (5, n_tables)).astype(np.int64)
    return qcodes, sorted_codes, sorted_ids, n


def _brute_force(qcodes, sorted_codes, sorted_ids):
    """Entries read and distinct candidates, by comparing every stored code."""
    entries = 0
    distinct = 0
    for b in range(qcodes.shape[0]):
        seen = set()
        for t in range(qcodes.shape[1]):
            hit = sorted_ids[t][sorted_codes[t] == qcodes[b, t]]
            entries += hit.size
            seen.update(hit.tolist())
        distinct += len(seen)
    return entries, distinct


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_selection_work_matches_a_brute_force_tally(backend: str) -> None:
    kernels = get_backend(backend).kernels
    qcodes, sc, si, n = _tables(np.random.default_rng(3))
    entries, distinct = _brute_force(qcodes, sc, si)
    work = np.zeros(4, np.int64)
    labels = np.full((qcodes.shape[0], 0), -1, np.int64)
    kernels.select_from_tables(qcodes, sc, si, n, labels, 2, 1, True, True, 7, None, work)
    assert work[0] == entries and work[1] == distinct
    # a binary search of 12 entries: 2 searches (lo, hi) of 4 steps per (query, table)
    assert work[3] == qcodes.size * 2 * 4
    # every row ranks its candidates (or, padded, all 12) when more than 2 compete
    assert 0 < work[2] <= qcodes.shape[0] * n
    batch_work = np.zeros(4, np.int64)
    none = np.zeros((0, 0), np.int64)
    ids = kernels.batch_select_from_tables(
        qcodes, sc, si, n, np.zeros(0, np.int64), 3, 7, batch_work, none
    )
    assert batch_work[0] == entries and ids.shape == (3,)
    direct_work = np.zeros(4, np.int64)
    offsets = np.stack([np.searchsorted(row, np.arange(5)) for row in sc]).astype(np.int64)
    same = kernels.batch_select_from_tables(
        qcodes, sc, si, n, np.zeros(0, np.int64), 3, 7, direct_work, offsets
    )
    np.testing.assert_array_equal(same, ids)  # direct addressing finds the same buckets
    assert direct_work[0] == entries and direct_work[3] == qcodes.size * 2
    all_hit = set()
    for b in range(qcodes.shape[0]):
        for t in range(qcodes.shape[1]):
            all_hit.update(si[t][sc[t] == qcodes[b, t]].tolist())
    assert batch_work[1] == len(all_hit)


def test_selection_work_agrees_between_backends() -> None:
    qcodes, sc, si, n = _tables(np.random.default_rng(5), n_tables=4, n=30, buckets=3)
    labels = np.full((qcodes.shape[0], 1), -1, np.int64)
    labels[2, 0] = 7
    got = []
    for name in ("numpy", "numba"):
        work = np.zeros(4, np.int64)
        ids = get_backend(name).kernels.select_from_tables(
            qcodes, sc, si, n, labels, 4, 1, True, True, 11, None, work
        )
        got.append((ids, work))
    np.testing.assert_array_equal(got[0][0], got[1][0])
    np.testing.assert_array_equal(got[0][1], got[1][1])


def test_block_layer_counts_match_a_hand_tally() -> None:
    # 6 inputs (all non-zero in the batch), 20 neurons, a batch set of 4 (active 0.1 *
    # batch_factor 2), then a dense 20 -> 3 output layer over the 4 active inputs
    rng = np.random.default_rng(0)
    x = rng.random((3, 6)).astype(np.float32) + 0.1
    hidden = HashedLayer(6, 20, "relu", seed=1, active=0.1, policy="batch_union", batch_factor=2)
    out = DenseLayer(20, 3, "linear", seed=2)
    wh, wo = hidden.new_workspace(), out.new_workspace()
    c = Counts()
    h = hidden.forward(x, wh, c, training=True)
    assert h.shared and h.ids.shape == (3, 4)
    z = out.forward(h, wo, c)
    assert c.forward == 3 * 4 * 6 + 3 * 3 * 4  # batch x set x inputs, per layer
    g = out.backward(wo, np.ones_like(z), True, c)
    hidden.backward(wh, g, False, c)
    # output: weight gradient and input gradient (2 x 36); hidden: weight gradient only
    assert c.backward == 2 * (3 * 3 * 4) + 3 * 4 * 6
    opt = make_optimizer("adam")
    for layer in (hidden, out):
        layer.init_optimizer(opt)
    hidden.apply_update(wh, opt, c)
    out.apply_update(wo, opt, c)
    # Adam, 8 per entry: the hidden block 4x6 + 4 biases, the output block 3x4 + 3 biases
    assert c.optimizer == 8 * (4 * 6 + 4) + 8 * (3 * 4 + 3)
    assert c.selection > 0 and c.hashing == 0  # DWTA: comparisons, no multiplications
    assert hidden.selector.work[4] > 0  # the hash comparisons are tallied


def test_block_update_changes_only_the_block() -> None:
    for name in ("numpy", "numba"):
        kernels = get_backend(name).kernels
        param = np.ones((5, 4), np.float32)
        grad = np.ones((2, 2), np.float32)
        s1, s2 = np.zeros_like(param), np.zeros_like(param)
        mults = kernels.block_update(
            3, param, grad, np.array([1, 3]), np.array([0, 2]), s1, s2, 0.1, 0.9, 0.999, 1e-8, 1
        )
        assert mults == 4 * 8
        changed = param != 1
        assert changed.sum() == 4 and changed[1, 0] and changed[3, 2] and not changed[0].any()
