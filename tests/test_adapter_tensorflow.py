"""Keras adapter: LSHDense in eager mode, in tf.function and model.fit, sparse gradients,
saving and loading."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
tf = pytest.importorskip("tensorflow", reason="TensorFlow is not installed")
keras = pytest.importorskip("keras", reason="Keras is not installed")

from lshcore.adapters.tensorflow import LSHDense, train_mlp  # noqa: E402
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
    args = {**HASH, **kw}
    layer = LSHDense(60, **args)
    layer.build((None, 12))
    return layer


def test_active_one_is_keras_dense_outputs_and_gradients(data):
    x, _ = data
    layer = LSHDense(9, active=1.0, activation="relu")
    dense = keras.layers.Dense(9, activation="relu")
    layer.build((None, 12))
    dense.build((None, 12))
    dense.set_weights([layer.kernel.numpy().T, np.linspace(-1, 1, 9).astype(np.float32)])
    layer.bias.assign(dense.bias.numpy())
    xt = tf.constant(x)
    for training in (False, True):
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(xt)
            a, b = layer(xt, training=training), dense(xt, training=training)
            la, lb = tf.reduce_sum(a * a), tf.reduce_sum(b * b)
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6)
        ga = tape.gradient(la, [xt, layer.kernel, layer.bias])
        gb = tape.gradient(lb, [xt, dense.kernel, dense.bias])
        np.testing.assert_allclose(ga[0].numpy(), gb[0].numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(
            tf.convert_to_tensor(ga[1]).numpy(), gb[1].numpy().T, rtol=1e-5, atol=1e-6
        )
        np.testing.assert_allclose(
            tf.convert_to_tensor(ga[2]).numpy(), gb[2].numpy(), rtol=1e-5, atol=1e-6
        )


def test_gradient_is_indexed_slices_and_sgd_updates_only_active_rows(data):
    x, labels = data
    layer = _layer()
    with tf.GradientTape() as tape:
        out = layer(x, training=True, labels=labels)
        loss = tf.reduce_sum(out * out)
    grads = tape.gradient(loss, layer.trainable_variables)
    assert all(isinstance(g, tf.IndexedSlices) for g in grads)
    ids = layer.last_active_ids
    assert bool((ids == labels[:, None]).any(1).all())  # labels always active
    nonzero = out.numpy() != 0
    assert nonzero.sum(1).max() <= ids.shape[1]
    full = x @ layer.kernel.numpy().T + layer.bias.numpy()
    rows = np.broadcast_to(np.arange(8)[:, None], ids.shape)
    np.testing.assert_allclose(out.numpy()[rows, ids], full[rows, ids], rtol=1e-5, atol=1e-6)
    before = layer.kernel.numpy().copy()
    keras.optimizers.SGD(0.1).apply_gradients(zip(grads, layer.trainable_variables, strict=True))
    changed = set(np.flatnonzero((layer.kernel.numpy() != before).any(1)))
    assert changed == set(ids[ids >= 0].tolist())


def test_runs_in_tf_function_and_index_follows_model_fit(data):
    x, labels = data
    layer = LSHDense(60, **HASH, activation="relu", selector_params={"rehash": "fixed:1"})
    model = keras.Sequential([keras.Input((12,)), layer, keras.layers.Dense(3)])
    model.compile(
        keras.optimizers.Adam(1e-2),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=False,
    )
    model.fit(x, labels % 3, epochs=3, batch_size=4, verbose=0)  # 6 steps
    assert layer.selector.step == 5 and layer.selector.rehashes == 5  # synced before steps 2..6

    @tf.function
    def infer(batch):
        return layer(batch, training=False)

    out = infer(tf.constant(x)).numpy()
    assert out.shape == (8, 60) and (out != 0).sum(1).max() <= 6
    assert layer.selector.step == 6  # the sixth update was synced in the graph call


def test_save_and_load_model_round_trip(data, tmp_path):
    x, labels = data
    model = keras.Sequential(
        [keras.Input((12,)), LSHDense(60, **HASH, activation="relu"), keras.layers.Dense(3)]
    )
    model.compile(
        keras.optimizers.SGD(0.05),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=False,
    )
    model.fit(x, labels % 3, epochs=1, batch_size=4, verbose=0)
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded.layers[0], LSHDense)
    np.testing.assert_allclose(loaded.layers[0].kernel.numpy(), model.layers[0].kernel.numpy())
    for _ in range(2):  # same active sets now and on the next call
        np.testing.assert_allclose(
            loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6
        )
        np.testing.assert_array_equal(
            loaded.layers[0].last_active_ids, model.layers[0].last_active_ids
        )


def test_config_round_trip_and_registration():
    layer = LSHDense(
        7,
        active=0.2,
        family="srp",
        k=3,
        l=5,
        policy="union",
        seed=4,
        activation="relu",
        inference="dense",
    )
    config = layer.get_config()
    clone = LSHDense.from_config(config)
    assert clone.get_config() == config
    assert keras.saving.get_registered_name(LSHDense) == "lshcore>LSHDense"
    assert keras.saving.get_registered_object("lshcore>LSHDense") is LSHDense


def test_bad_inputs_raise_clear_errors(data):
    x, _ = data
    layer = _layer()
    layer(x)
    calls = layer.selector.calls
    with pytest.raises(ValueError, match="12"):
        layer(np.zeros((2, 11), np.float32))
    with pytest.raises(InputError, match="floating"):
        layer(np.zeros((2, 12), np.int32))
    with pytest.raises(InputError, match="out of range"):
        layer(x, training=True, labels=np.full(8, 60))
    assert layer.selector.calls == calls
    with pytest.raises(ConfigError, match="active"):
        LSHDense(4, active=1.5)
    with pytest.raises(ConfigError, match="inference"):
        LSHDense(4, inference="fast")


def test_import_brings_tensorflow_and_no_other_framework():
    code = (
        "import sys, lshcore.adapters.tensorflow; "
        "bad = [m for m in ('torch', 'mxnet', 'cupy') if m in sys.modules]; "
        "assert 'tensorflow' in sys.modules and not bad, bad"
    )
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    subprocess.run([sys.executable, "-c", code], check=True, timeout=180, env=env)


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
    assert out["accuracy"] > 0.4  # chance is 0.1; 8 active units of 32 learn slowly


def test_return_active_and_active_softmax_loss_gradient(data):
    from lshcore.adapters.tensorflow import lsh_softmax_cross_entropy

    x, labels = data
    layer = _layer(active=0.05)
    with tf.GradientTape() as tape:
        ids, values = layer(x, training=True, labels=labels, return_active=True)
        tape.watch(values)
        loss = lsh_softmax_cross_entropy(ids, values, labels)
    np.testing.assert_array_equal(ids.numpy(), layer.last_active_ids)
    ids_np, v = ids.numpy(), values.numpy()
    assert bool((ids_np == labels[:, None]).any(1).all())
    grad = tape.gradient(loss, values).numpy()
    logits = np.where(ids_np >= 0, v, -np.inf)
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    target = (ids_np == labels[:, None]).astype(np.float32)
    np.testing.assert_allclose(grad, (p - target) / 8, rtol=1e-5, atol=1e-6)


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


def test_params_and_layer_keywords_split_and_survive_the_config():
    from lshcore.training.params import SelectionParams

    p = SelectionParams(active=0.25, k=4, l=10, policy="rerank", rerank=2.0, seed=5)
    layer = LSHDense(16, params=p, l=12, name="hashed", activation="relu")
    assert layer.name == "hashed" and layer.selection_params == p.replace(l=12)
    config = layer.get_config()
    assert config["params"] == p.replace(l=12).to_dict()
    assert LSHDense.from_config(config).selection_params == p.replace(l=12)
    with pytest.raises(ValueError, match="ratio"):  # not a setting: keras.layers.Layer refuses it
        LSHDense(16, params=p, ratio=3)
