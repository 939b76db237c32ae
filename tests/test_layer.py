"""Tests of the layer kernels (NumPy reference vs numba) and of lshcore.training.layer."""

from __future__ import annotations

import numpy as np
import pytest

from lshcore.errors import ConfigError, InputError
from lshcore.kernels import _np_layer as ref
from lshcore.training.layer import Counts, DenseLayer, HashedLayer
from lshcore.training.optim import make_optimizer
from lshcore.training.selector import SparseBatch

jit = pytest.importorskip("lshcore.kernels._numba_layer")


def _sparse_case(seed: int = 0, batch: int = 12, n_in: int = 30, n_out: int = 25, m: int = 6):
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((n_out, n_in)).astype(np.float32)
    b = rng.standard_normal(n_out).astype(np.float32)
    x = rng.standard_normal((batch, n_in)).astype(np.float32)
    x[x < 0.2] = 0
    in_ids, in_vals = ref.dense_to_sparse(x)
    out_ids = np.sort(np.stack([rng.choice(n_out, m, replace=False) for _ in range(batch)]), axis=1)
    out_ids[::3, -2:] = -1  # padding
    grad = rng.standard_normal((batch, m)).astype(np.float32)
    grad[:, 0] = 0  # skipped entries
    return w, b, x, in_ids, in_vals, out_ids, grad


def test_dense_to_sparse_agrees_and_roundtrips() -> None:
    _, _, x, ids, vals, _, _ = _sparse_case()
    ids2, vals2 = jit.dense_to_sparse(x)
    assert np.array_equal(ids, ids2) and np.array_equal(vals, vals2)
    assert np.array_equal(SparseBatch(ids, vals, x.shape[1]).to_dense(), x)


def test_forward_kernels_agree_and_count() -> None:
    w, b, x, in_ids, in_vals, out_ids, _ = _sparse_case()
    z1, m1 = ref.layer_forward(w, b, in_ids, in_vals, out_ids)
    z2, m2 = jit.layer_forward(w, b, in_ids, in_vals, out_ids)
    np.testing.assert_allclose(z1, z2, rtol=1e-5, atol=1e-5)
    full = x @ w.T + b
    ok = out_ids >= 0
    rows = np.broadcast_to(np.arange(x.shape[0])[:, None], out_ids.shape)
    np.testing.assert_allclose(z1[ok], full[rows[ok], out_ids[ok]], rtol=1e-5, atol=1e-5)
    assert np.all(z1[~ok] == 0)
    expected = int(((out_ids >= 0).sum(axis=1) * (x != 0).sum(axis=1)).sum())
    assert m1 == m2 == expected


def _backward(kern, w, in_ids, in_vals, out_ids, grad):
    n_out, n_in = w.shape
    bufs = dict(
        grad_w=np.zeros(n_out * n_in, np.float32),
        grad_b=np.zeros(n_out, np.float32),
        mark_w=np.zeros(n_out * n_in, np.uint8),
        mark_b=np.zeros(n_out, np.uint8),
        touched_w=np.zeros(n_out * n_in, np.int64),
        touched_b=np.zeros(n_out, np.int64),
    )
    gi, nw, nb, mults = kern.layer_backward(
        w,
        in_ids,
        in_vals,
        out_ids,
        grad,
        True,
        bufs["grad_w"],
        bufs["grad_b"],
        bufs["mark_w"],
        bufs["mark_b"],
        bufs["touched_w"],
        bufs["touched_b"],
        0,
        0,
    )
    return gi, nw, nb, mults, bufs


def test_backward_kernels_agree_with_dense_math() -> None:
    w, b, x, in_ids, in_vals, out_ids, grad = _sparse_case()
    gi1, nw1, nb1, m1, b1 = _backward(ref, w, in_ids, in_vals, out_ids, grad)
    gi2, nw2, nb2, m2, b2 = _backward(jit, w, in_ids, in_vals, out_ids, grad)
    np.testing.assert_allclose(gi1, gi2, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(b1["grad_w"], b2["grad_w"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(b1["grad_b"], b2["grad_b"], rtol=1e-5, atol=1e-5)
    assert (nw1, nb1, m1) == (nw2, nb2, m2)
    assert set(b1["touched_w"][:nw1]) == set(b2["touched_w"][:nw2])
    # the same gradients computed densely
    dz = np.zeros((x.shape[0], w.shape[0]), np.float32)
    rows = np.broadcast_to(np.arange(x.shape[0])[:, None], out_ids.shape)
    ok = out_ids >= 0
    np.add.at(dz, (rows[ok], out_ids[ok]), grad[ok])
    np.testing.assert_allclose(b1["grad_w"].reshape(w.shape), dz.T @ x, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(b1["grad_b"], dz.sum(axis=0), rtol=1e-4, atol=1e-5)
    dense_gin = dz @ w
    rows_in = np.broadcast_to(np.arange(x.shape[0])[:, None], in_ids.shape)
    okin = in_ids >= 0
    np.testing.assert_allclose(
        gi1[okin], dense_gin[rows_in[okin], in_ids[okin]], rtol=1e-4, atol=1e-5
    )
    touched = np.zeros(w.size, bool)
    touched[b1["touched_w"][:nw1]] = True
    assert np.array_equal(touched, b1["mark_w"] == 1)
    assert np.array_equal(touched, (np.abs(dz.T @ x) > 0).ravel())


@pytest.mark.parametrize("kind", [0, 1, 2, 3])
def test_sparse_update_kernels_agree(kind: int) -> None:
    w, b, x, in_ids, in_vals, out_ids, grad = _sparse_case()
    results = []
    for kern in (ref, jit):
        gi, nw, nb, _, bufs = _backward(kern, w, in_ids, in_vals, out_ids, grad)
        p = w.copy().reshape(-1)
        s1 = np.full_like(p, 0.5)
        s2 = np.full_like(p, 0.25)
        kern.sparse_update(
            kind,
            p,
            bufs["grad_w"],
            bufs["mark_w"],
            bufs["touched_w"],
            nw,
            s1,
            s2,
            0.1,
            0.9,
            0.99,
            1e-8,
            3,
        )
        assert not bufs["grad_w"].any() and not bufs["mark_w"].any()  # cleared
        results.append((p, s1, s2))
    for a, c in zip(results[0], results[1], strict=True):
        np.testing.assert_allclose(a, c, rtol=1e-5, atol=1e-6)
    untouched = results[0][0] == w.reshape(-1)
    assert untouched.any() and not untouched.all()


def test_select_kernel_agrees() -> None:
    rng = np.random.default_rng(4)
    indptr = np.array([0, 5, 5, 12], np.int64)
    ids = np.concatenate(
        [np.sort(rng.choice(40, 5, replace=False)), np.sort(rng.choice(40, 7, replace=False))]
    )
    counts = rng.integers(1, 4, 12).astype(np.int32)
    labels = np.array([[3, -1], [-1, -1], [39, 0]], np.int64)
    for args in [(1, True, True), (1, False, True), (2, True, False)]:
        a = ref.select_active(indptr, ids, counts, labels, 40, 6, *args, 11)
        c = jit.select_active(indptr, ids, counts, labels, 40, 6, *args, 11)
        assert np.array_equal(a, c)


def test_table_candidates_kernel_agrees() -> None:
    rng = np.random.default_rng(5)
    codes = rng.integers(0, 8, (50, 6))
    order = np.argsort(codes, axis=0, kind="stable").T.copy()
    sorted_codes = np.take_along_axis(codes.T, order, axis=1).copy()
    q = rng.integers(0, 8, (9, 6))
    a = ref.sorted_table_candidates(q, sorted_codes, order, 50)
    c = jit.sorted_table_candidates(q, sorted_codes, order, 50)
    for u, v in zip(a, c, strict=True):
        assert np.array_equal(u, v)
    # counts = number of tables where the code matches
    for row in range(9):
        got = dict(
            zip(a[1][a[0][row] : a[0][row + 1]], a[2][a[0][row] : a[0][row + 1]], strict=True)
        )
        want = (codes == q[row]).sum(axis=1)
        assert got == {i: int(want[i]) for i in np.flatnonzero(want)}


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_hashed_layer_with_every_neuron_active_matches_dense(backend: str) -> None:
    rng = np.random.default_rng(0)
    x = rng.random((8, 20)).astype(np.float32)
    dense = DenseLayer(20, 16, "relu", seed=3, backend=backend)
    hashed = HashedLayer(20, 16, "relu", seed=3, backend=backend, policy="exact", active=1.0)
    assert np.array_equal(dense.weight, hashed.weight)
    opt = make_optimizer("sgd", 0.1)
    for layer in (dense, hashed):
        layer.init_optimizer(opt)
    cd, ch = Counts(), Counts()
    wd, wh = dense.new_workspace(), hashed.new_workspace()
    out_d = dense.forward(x, wd, cd)
    out_h = hashed.forward(x, wh, ch)
    np.testing.assert_allclose(out_h.to_dense(), out_d, rtol=1e-5, atol=1e-6)
    g = rng.standard_normal((8, 16)).astype(np.float32)
    gin_d = dense.backward(wd, g, True, cd)
    gin_h = hashed.backward(wh, np.take_along_axis(g, out_h.ids, axis=1), True, ch)
    np.testing.assert_allclose(gin_h, gin_d, rtol=1e-4, atol=1e-5)
    dense.apply_update(wd, opt)
    hashed.apply_update(wh, opt, ch)
    np.testing.assert_allclose(hashed.weight, dense.weight, rtol=1e-5, atol=1e-6)
    assert cd.forward == 8 * 20 * 16 and ch.forward == 8 * 20 * 16  # x has no zeros


def test_hashed_layer_chains_sparse_activations() -> None:
    rng = np.random.default_rng(1)
    x = rng.random((4, 30)).astype(np.float32)
    opts = {"policy": "topk", "family": "srp", "transform": "simple_lsh", "k": 4, "l": 8}
    first = HashedLayer(30, 100, "relu", seed=1, active=0.1, **opts)
    second = HashedLayer(100, 50, "relu", seed=2, active=0.2, **opts)
    counts = Counts()
    h1 = first.forward(x, first.new_workspace(), counts)
    assert isinstance(h1, SparseBatch) and h1.ids.shape == (4, 10)
    h2 = second.forward(h1, second.new_workspace(), counts)
    assert h2.ids.shape == (4, 10)
    # the second layer multiplied only active inputs by active rows
    assert counts.forward <= 4 * 10 * 30 + 4 * 10 * 10
    assert counts.hashing > 0
    with pytest.raises(InputError):
        second.forward(x, second.new_workspace(), counts)


def test_layer_rejects_bad_configuration() -> None:
    with pytest.raises(ConfigError, match="activation"):
        DenseLayer(3, 4, "tanh")
    with pytest.raises(ConfigError, match="n_in"):
        DenseLayer(0, 4)


def test_fused_table_selection_agrees_with_the_two_step_kernels() -> None:
    rng = np.random.default_rng(6)
    codes = rng.integers(0, 4, (60, 8))
    order = np.argsort(codes, axis=0, kind="stable").T.copy()
    sorted_codes = np.take_along_axis(codes.T, order, axis=1).copy()
    q = rng.integers(0, 4, (7, 8))
    labels = np.array([[5], [-1], [59], [0], [-1], [1], [2]], np.int64)
    for args in [(1, True, True), (1, False, True), (3, True, False)]:
        two = ref.select_active(
            *ref.sorted_table_candidates(q, sorted_codes, order, 60), labels, 60, 9, *args, 4
        )
        for kern in (ref, jit):
            fused = kern.select_from_tables(q, sorted_codes, order, 60, labels, 9, *args, 4)
            assert np.array_equal(fused, two)


def test_fixed_tie_priorities_pick_the_larger_priority_in_all_kernels() -> None:
    # 6 candidates with equal counts, 3 places: the fixed priority decides (larger first)
    indptr = np.array([0, 6], np.int64)
    ids = np.arange(6, dtype=np.int64)
    counts = np.full(6, 2, np.int32)
    tie = np.array([10, 500, 3, 65535, 0, 7], np.int64)
    no_labels = np.full((1, 0), -1, np.int64)
    for kern in (ref, jit):
        out = kern.select_active(indptr, ids, counts, no_labels, 6, 3, 1, True, True, 9, tie)
        assert out.tolist() == [[0, 1, 3]]
        # a higher count still beats any priority
        c2 = counts.copy()
        c2[4] = 3
        out = kern.select_active(indptr, ids, c2, no_labels, 6, 3, 1, True, True, 9, tie)
        assert out.tolist() == [[1, 3, 4]]
    rng = np.random.default_rng(7)
    codes = rng.integers(0, 4, (60, 8))
    order = np.argsort(codes, axis=0, kind="stable").T.copy()
    sorted_codes = np.take_along_axis(codes.T, order, axis=1).copy()
    q = rng.integers(0, 4, (7, 8))
    labels = np.array([[5], [-1], [59], [0], [-1], [1], [2]], np.int64)
    tie60 = rng.integers(0, 65536, 60)
    two = ref.select_active(
        *ref.sorted_table_candidates(q, sorted_codes, order, 60),
        labels, 60, 9, 1, True, True, 4, tie60,
    )  # fmt: skip
    for kern in (ref, jit):
        fused = kern.select_from_tables(
            q, sorted_codes, order, 60, labels, 9, 1, True, True, 4, tie60
        )
        assert np.array_equal(fused, two)
