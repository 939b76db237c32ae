"""Gluon adapter: LSHDense with deferred init, row_sparse gradients, Trainer, save/load."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import numpy as np
import pytest

if importlib.util.find_spec("mxnet") is None:  # importorskip would import it unshimmed
    pytest.skip("MXNet is not installed", allow_module_level=True)

# the adapter shims numpy before importing mxnet: take mxnet's modules from it
from lshcore.adapters.mxnet import LSHDense, autograd, gluon, mx, nd, train_mlp  # noqa: E402
from lshcore.errors import ConfigError, InputError  # noqa: E402

# per-sample SRP selection is what these tests check (the defaults are the shared
# batch_union set over DWTA)
HASH = {"active": 0.1, "k": 4, "l": 8, "seed": 1, "family": "srp", "policy": "topk"}
HASH["transform"] = "simple_lsh"


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    return rng.standard_normal((8, 12)).astype(np.float32), rng.integers(0, 60, 8)


def _layer(**kw):
    layer = LSHDense(60, **{**HASH, **kw})
    layer.initialize(mx.init.Xavier())
    return layer


def test_active_one_is_gluon_dense_outputs_and_gradients(data):
    x = nd.array(data[0])
    layer = LSHDense(9, active=1.0, activation="relu", bias_initializer="ones")
    layer.initialize(mx.init.Xavier())
    layer(x)
    dense = gluon.nn.Dense(9, in_units=12, activation="relu")
    dense.initialize()
    dense.weight.set_data(layer.weight.data())
    dense.bias.set_data(layer.bias.data())
    np.testing.assert_allclose(layer(x).asnumpy(), dense(x).asnumpy(), rtol=1e-6)
    grads = []
    for block in (layer, dense):
        xg = x.copy()
        xg.attach_grad()
        with autograd.record():
            loss = (block(xg) ** 2).sum()
        loss.backward()
        grads.append(
            (
                xg.grad.asnumpy(),
                block.weight.grad().tostype("default").asnumpy(),
                block.bias.grad().asnumpy(),
            )
        )
    assert layer.weight.grad().stype == "row_sparse"
    for a, b in zip(*grads, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_deferred_init_and_row_sparse_gradient_updates_only_active_rows(data):
    x, labels = nd.array(data[0]), data[1]
    layer = _layer()
    assert "None" in repr(layer)  # in_units unknown before the first call
    trainer = gluon.Trainer(layer.collect_params(), "sgd", {"learning_rate": 0.1})
    with autograd.record():
        out = layer(x, nd.array(labels))
        loss = (out**2).sum()
    loss.backward()
    assert layer.weight.shape == (60, 12)
    ids = layer.last_active_ids
    assert bool((ids == labels[:, None]).any(1).all())  # labels always active in training
    grad = layer.weight.grad()
    assert grad.stype == "row_sparse"
    assert set(grad.indices.asnumpy().tolist()) == set(ids[ids >= 0].tolist())
    w = layer.weight.data().asnumpy()
    full = data[0] @ w.T + layer.bias.data().asnumpy()
    rows = np.broadcast_to(np.arange(8)[:, None], ids.shape)
    np.testing.assert_allclose(out.asnumpy()[rows, ids], full[rows, ids], rtol=1e-5, atol=1e-6)
    assert (out.asnumpy() != 0).sum(1).max() <= ids.shape[1]
    trainer.step(8)
    changed = set(np.flatnonzero((layer.weight.data().asnumpy() != w).any(1)))
    assert changed == set(ids[ids >= 0].tolist())
    layer(x)  # the next call hands the trained rows to the selector
    assert layer.selector.step == 1


def test_save_and_load_parameters_round_trip(data, tmp_path):
    x = nd.array(data[0])
    layer = _layer()
    trainer = gluon.Trainer(layer.collect_params(), "adam", {"learning_rate": 0.05})
    for _ in range(2):
        with autograd.record():
            loss = (layer(x, nd.array(data[1])) ** 2).sum()
        loss.backward()
        trainer.step(8)
    layer.refresh_index()  # the loaded layer builds a fresh index over the loaded weights
    path = str(tmp_path / "layer.params")
    layer.save_parameters(path)
    other = LSHDense(60, **HASH)
    other.load_parameters(path)
    np.testing.assert_allclose(other.weight.data().asnumpy(), layer.weight.data().asnumpy())
    for _ in range(2):
        np.testing.assert_allclose(other(x).asnumpy(), layer(x).asnumpy(), rtol=1e-6)
        np.testing.assert_array_equal(other.last_active_ids, layer.last_active_ids)


def test_bad_inputs_raise_clear_errors(data):
    layer = _layer()
    x = nd.array(data[0])
    layer(x)
    calls = layer.selector.calls
    with pytest.raises(InputError, match=r"\(batch, 12\)"):
        layer(nd.zeros((2, 11)))
    with pytest.raises(InputError, match="floating"):
        layer(nd.zeros((2, 12), dtype="int32"))
    with pytest.raises(InputError, match="float64"):
        layer(nd.zeros((2, 12), dtype="float64"))
    with pytest.raises(InputError, match="out of range"):
        with autograd.record():
            layer(x, nd.array(np.full(8, 60)))
    with pytest.raises(TypeError, match="NDArray"):
        layer(data[0])
    assert layer.selector.calls == calls
    with pytest.raises(ConfigError, match="active"):
        LSHDense(4, active=-1.0)


def test_import_brings_mxnet_and_no_other_framework():
    code = (
        "import sys, lshcore.adapters.mxnet; "
        "bad = [m for m in ('torch', 'tensorflow', 'keras', 'cupy') if m in sys.modules]; "
        "assert 'mxnet' in sys.modules and not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_train_mlp_learns_digits():
    from lshcore.data.datasets import load_digits

    d = load_digits(seed=0)
    xtr, ytr, xte, yte = d.x_train, d.y_train, d.x_test, d.y_test
    out = train_mlp(
        xtr,
        ytr,
        xte,
        yte,
        hidden=32,
        active=0.25,
        family="srp",
        k=4,
        l=10,
        policy="topk",
        epochs=2,
        batch_size=32,
        lr=3e-3,
        seed=0,
        progress=False,
    )
    assert set(out) >= {"accuracy", "train_seconds", "samples_per_second"}
    assert out["accuracy"] > 0.4  # chance is 0.1


def test_train_mlp_passes_selector_params_and_counts_mults():
    from lshcore.data.datasets import load_digits

    d = load_digits(seed=0)
    xtr, ytr, xte, yte = d.x_train, d.y_train, d.x_test, d.y_test
    out = train_mlp(
        xtr, ytr, xte, yte, hidden=32, active=0.25, family="srp", k=4, l=10, policy="rerank", epochs=1,
        batch_size=32, lr=3e-3, seed=0, progress=False, selector_params={"rerank": 2.0},
    )  # fmt: skip
    nnz, n = int(np.count_nonzero(xtr)), len(xtr)
    m = out["mults"]
    # hashing [x, 1] with k*l = 40 projections, then 2 * 8 exact candidate products
    assert m["selection"] == 40 * (nnz + n) + 16 * nnz
    assert m["active"] == 8 * nnz and m["dense"] == 32 * nnz and m["dense_full"] == n * 64 * 32
    assert out["train_share"] == pytest.approx(
        (m["selection"] + m["rehash"] + 16 * nnz) / (64 * nnz)
    )


def test_params_with_keywords_and_block_prefix():
    from lshcore.training.params import SelectionParams

    p = SelectionParams(active=0.25, k=4, l=10, seed=5)
    layer = LSHDense(16, in_units=8, params=p, seed=6, prefix="h_")
    assert layer.prefix == "h_" and layer.spec.params == p.replace(seed=6)
    assert "seed=6" in repr(layer)
