"""Tests of lshcore.training.model: structure, loss, save/load."""

from __future__ import annotations

import numpy as np
import pytest

from lshcore.errors import ConfigError, FileFormatError
from lshcore.training.layer import Counts, DenseLayer, HashedLayer
from lshcore.training.model import Model, softmax_xent
from lshcore.training.optim import make_optimizer
from lshcore.training.selector import SparseBatch


def test_softmax_xent_gradient_matches_finite_differences() -> None:
    rng = np.random.default_rng(0)
    z = rng.standard_normal((3, 5)).astype(np.float64)
    ids = np.array([[0, 2, 4, 7, -1], [1, 2, 3, 5, 6], [0, 1, 2, 3, 4]])
    labels = np.array([[2, -1], [3, 6], [4, -1]])
    loss, grad, _ = softmax_xent(ids, z.astype(np.float32), labels)
    eps = 1e-4
    for b in range(3):
        for j in range(5):
            if ids[b, j] < 0:
                assert grad[b, j] == 0
                continue
            zp, zm = z.copy(), z.copy()
            zp[b, j] += eps
            zm[b, j] -= eps
            num = (softmax_xent(ids, zp, labels)[0] - softmax_xent(ids, zm, labels)[0]) / (2 * eps)
            assert abs(num - grad[b, j]) < 1e-4
    # two labels: target 1/2 each
    p = np.exp(z[1]) / np.exp(z[1]).sum()
    np.testing.assert_allclose(grad[1], (p - np.array([0, 0, 0.5, 0, 0.5])) / 3, atol=1e-6)


def test_softmax_xent_predictions_use_active_ids() -> None:
    z = np.array([[0.0, 5.0, 1.0]], np.float32)
    ids = np.array([[10, 20, -1]])
    _, _, pred = softmax_xent(ids, z, np.full((1, 0), -1))
    assert pred.tolist() == [20]


def test_mlp_structure_and_dense_cost() -> None:
    model = Model.mlp(64, [32, 16], 10, active=0.25, k=3, l=4)
    kinds = [type(layer) for layer in model.layers]
    assert kinds == [HashedLayer, HashedLayer, DenseLayer]
    assert model.layers[-1].activation == "linear"
    dense = Model.mlp(64, [32, 16], 10, active=1.0)
    assert all(isinstance(layer, DenseLayer) for layer in dense.layers)
    fwd = 64 * 32 + 32 * 16 + 16 * 10
    assert model.dense_cost(7) == 7 * (fwd + 2 * fwd - 64 * 32)
    assert model.dense_cost(7, training=False) == 7 * fwd
    with pytest.raises(ConfigError):
        Model([DenseLayer(4, 5), DenseLayer(6, 2)])
    with pytest.raises(ConfigError, match="active"):
        Model.mlp(4, [5], 2, active=0.0)


def test_hashed_output_layer_keeps_labels_active() -> None:
    rng = np.random.default_rng(1)
    model = Model.mlp(20, [40], 200, active=0.05, hashed_output=True, k=3, l=4)
    model.set_optimizer(make_optimizer("sgd", 0.1))
    x = rng.random((6, 20)).astype(np.float32)
    y = rng.integers(0, 200, 6)
    wss = model.workspaces()
    out = model.forward(x, wss, Counts(), labels=y, training=True)
    assert isinstance(out, SparseBatch)
    assert all(y[i] in out.ids[i] for i in range(6))
    loss = model.train_step(x, y, wss, Counts())
    assert np.isfinite(loss)


def test_save_load_roundtrip(tmp_path) -> None:
    rng = np.random.default_rng(2)
    model = Model.mlp(20, [30, 30], 5, active=0.2, k=3, l=4, rehash="exp:3:2")
    model.set_optimizer(make_optimizer("adam", 0.01))
    wss = model.workspaces()
    for _ in range(5):
        model.train_step(
            rng.random((8, 20)).astype(np.float32), rng.integers(0, 5, 8), wss, Counts()
        )
    path = model.save(tmp_path / "m.npz", extra={"note": "hi"})
    loaded, extra = Model.load(path)
    assert extra == {"note": "hi"}
    assert loaded.optimizer == model.optimizer
    for a, b in zip(model.layers, loaded.layers, strict=True):
        assert type(a) is type(b)
        assert np.array_equal(a.weight, b.weight) and np.array_equal(a.bias, b.bias)
        assert all(np.array_equal(s, t) for s, t in zip(a.states_w, b.states_w, strict=True))
        assert a.step == b.step
        if isinstance(a, HashedLayer):
            sa, sb = a.selector.state(), b.selector.state()  # type: ignore[attr-defined]
            assert sa[0] == sb[0]
            assert np.array_equal(sa[1]["codes"], sb[1]["codes"])
    x = rng.random((9, 20)).astype(np.float32)
    assert np.array_equal(model.predict(x), loaded.predict(x))


def test_load_rejects_foreign_and_damaged_files(tmp_path) -> None:
    from lshcore.core.fileformat import save_arrays

    other = save_arrays(tmp_path / "idx.npz", "lsh-index", 1, {}, {"a": np.zeros(2)})
    with pytest.raises(FileFormatError, match="lsh-model"):
        Model.load(other)
    model = Model.mlp(4, [6], 3, active=1.0)
    path = model.save(tmp_path / "m.npz")
    data = path.read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(FileFormatError):
        Model.load(tmp_path / "cut.npz")
    broken = save_arrays(tmp_path / "b.npz", "lsh-model", 1, {"layers": [{"config": {}}]}, {})
    with pytest.raises(FileFormatError):
        Model.load(broken)
