"""The Keras and Gluon memory wrappers: same loss as the memory, gradients in the query."""

from __future__ import annotations

import importlib.util
import os

import numpy as np
import pytest

from lshcore.errors import InputError
from lshcore.memory.core import LSHMemory

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

needs_tf = pytest.mark.skipif(
    importlib.util.find_spec("tensorflow") is None, reason="tensorflow not installed"
)
needs_mx = pytest.mark.skipif(
    importlib.util.find_spec("mxnet") is None, reason="mxnet not installed"
)


def _memory(seed: int = 0) -> LSHMemory:
    rng = np.random.default_rng(seed)
    mem = LSHMemory(6, 32, k=8, exact=True)
    for _ in range(8):
        mem.update(rng.standard_normal((3, 6)), rng.integers(0, 5, 3))
    return mem


def _reference(
    mem: LSHMemory, emb: np.ndarray, labels: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per-row loss and d(sum of losses)/d(embeddings), worked out by hand in NumPy."""
    sel = mem.select(emb, labels)
    keys = mem.keys
    norm = np.linalg.norm(emb, axis=1, keepdims=True)
    q = emb / norm
    grad = np.zeros_like(emb)
    for i in range(emb.shape[0]):
        if sel.loss[i] <= 0:
            continue
        direction = keys[sel.neg_slot[i]] - (keys[sel.pos_slot[i]] if sel.pos_slot[i] >= 0 else 0.0)
        grad[i] = (direction - q[i] * (q[i] @ direction)) / norm[i]
    return sel.loss, grad


def _batch(seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((7, 6)).astype(np.float32), rng.integers(0, 5, 7)


@needs_tf
def test_keras_layer_loss_gradient_and_graph_mode() -> None:
    import tensorflow as tf

    from lshcore.memory.tensorflow import MemoryLayer

    mem = _memory()
    layer = MemoryLayer(memory=mem)
    emb, labels = _batch()
    want_loss, want_grad = _reference(mem, emb, labels)
    assert want_loss.sum() > 0
    x = tf.constant(emb)
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = layer([x, tf.constant(labels)], training=False)
        total = tf.reduce_sum(loss)
    np.testing.assert_allclose(loss.numpy(), want_loss, atol=1e-5)
    np.testing.assert_allclose(tape.gradient(total, x).numpy(), want_grad, atol=1e-5)
    assert mem.step == 8

    @tf.function
    def graph_step(e, y):
        with tf.GradientTape() as tape:
            tape.watch(e)
            out = layer([e, y], training=True)
            total = tf.reduce_sum(out)
        return out, tape.gradient(total, e)

    out, grad = graph_step(x, tf.constant(labels))
    np.testing.assert_allclose(out.numpy(), want_loss, atol=1e-5)
    np.testing.assert_allclose(grad.numpy(), want_grad, atol=1e-5)
    assert mem.step == 9  # training=True wrote the memory
    pred = layer(x)
    assert pred.dtype == tf.int64 and pred.shape == (7,)
    np.testing.assert_array_equal(pred.numpy(), mem.query(emb).values)


@needs_tf
def test_keras_config_round_trip_and_bad_input() -> None:
    import tensorflow as tf

    from lshcore.memory.tensorflow import MemoryLayer

    layer = MemoryLayer(key_dim=8, size=64, k=16, alpha=0.2, exact=True, seed=3, name="mem")
    again = MemoryLayer.from_config(layer.get_config())
    m1, m2 = layer.memory, again.memory
    assert (m2.key_dim, m2.size, m2.k, m2.alpha, m2.exact, m2.seed) == (8, 64, 16, 0.2, True, 3)
    assert again.name == "mem" and m1 is not m2
    with pytest.raises(InputError, match="labels"):
        layer([tf.ones((2, 8)), tf.constant([0.5, 1.0])], training=True)
    with pytest.raises(InputError, match="expected shape"):
        layer([tf.ones((2, 5)), tf.constant([0, 1])], training=True)
    assert m1.step == 0 and len(m1) == 0
    with pytest.raises(InputError, match="key_dim"):
        MemoryLayer()


@needs_mx
def test_gluon_block_loss_gradient_and_update() -> None:
    from lshcore.memory.mxnet import MemoryBlock, autograd, mx

    mem = _memory()
    block = MemoryBlock(mem)
    emb, labels = _batch()
    want_loss, want_grad = _reference(mem, emb, labels)
    x = mx.nd.array(emb)
    x.attach_grad()
    with autograd.record(train_mode=False):
        loss = block(x, mx.nd.array(labels, dtype="int64"))
    loss.backward()
    np.testing.assert_allclose(loss.asnumpy(), want_loss, atol=1e-5)
    np.testing.assert_allclose(x.grad.asnumpy(), want_grad, atol=1e-5)
    assert mem.step == 8
    with autograd.record(train_mode=True):
        block(x, mx.nd.array(labels))  # float32 NDArray labels holding integers are accepted
    assert mem.step == 9
    pred = block(x)
    np.testing.assert_array_equal(pred.asnumpy(), mem.query(emb).values)
    with pytest.raises(InputError, match="integer labels"):
        block(x, mx.nd.array(labels + 0.5), True)
    with pytest.raises(InputError, match="embeddings"):
        block(emb, labels)
    assert mem.step == 9
