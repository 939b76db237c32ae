"""The Keras layer's parameters reach a device selector through DLPack, tested without a
GPU: the device probes are patched so that the layer's own CPU variables pass for CUDA
ones, and the real ``to_backend`` views them (its capsule import done by torch, which
shares the memory as CuPy would on a device). On CPU, reading the variables shares
their buffers."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
tf = pytest.importorskip("tensorflow", reason="TensorFlow is not installed")
keras = pytest.importorskip("keras", reason="Keras is not installed")

from lshcore.adapters.tensorflow import LSHDense  # noqa: E402
from lshcore.core import dlpack  # noqa: E402

HASH = {"active": 0.25, "k": 4, "l": 8, "seed": 1, "family": "srp", "policy": "topk"}
N_IN, N_OUT = 12, 40


def _layer(**kw: Any) -> Any:
    keras.utils.set_random_seed(0)
    layer = LSHDense(N_OUT, **{**HASH, **kw}, bias_initializer="random_normal")
    x = np.random.default_rng(0).standard_normal((8, N_IN)).astype(np.float32)
    layer(x, training=True, labels=np.arange(8))  # builds the variables and the index
    assert layer.selector is not None
    return layer


def _address(t: Any) -> int:
    """The address of an eager tensor's buffer, read through DLPack (no copy)."""
    return int(np.from_dlpack(t).ctypes.data)


def test_keras_sync_views_the_variables_through_dlpack_on_a_device_backend(
    fake_gpu_sync: Any,
) -> None:
    layer = _layer()
    given = fake_gpu_sync(layer, "tensorflow")
    w, b = layer._sync_params()
    assert [dlpack.framework_of(t) for t in given] == ["tensorflow", "tensorflow"]
    # the selector's orientation (n_out, n_in): the kernel is stored that way, no transpose
    assert w.shape == (N_OUT, N_IN) and b.shape == (N_OUT,)
    np.testing.assert_array_equal(w, layer.kernel.numpy())
    np.testing.assert_array_equal(b, layer.bias.numpy())
    # views of the variables' own buffers, not copies
    assert w.ctypes.data == _address(tf.convert_to_tensor(layer.kernel))
    assert b.ctypes.data == _address(tf.convert_to_tensor(layer.bias))
    # an optimizer step later, the next sync sees the new values
    layer.kernel.assign_sub(tf.fill((N_OUT, N_IN), 0.5))
    w2, _ = layer._sync_params()
    np.testing.assert_array_equal(w2, layer.kernel.numpy())
    assert not np.array_equal(w2, w)


def test_keras_sync_without_bias_views_the_kernel_only(fake_gpu_sync: Any) -> None:
    layer = _layer(use_bias=False)
    given = fake_gpu_sync(layer, "tensorflow")
    w, b = layer._sync_params()
    assert b is None and len(given) == 1
    np.testing.assert_array_equal(w, layer.kernel.numpy())


def test_keras_weight_tensors_share_the_variables_memory() -> None:
    # on CPU, without patches: two reads alive at once share one buffer (neither is a copy)
    layer = _layer()
    w1, b1 = layer._weight_tensors()
    w2, b2 = layer._weight_tensors()
    assert _address(w1) == _address(w2) and _address(b1) == _address(b2)
    np.testing.assert_array_equal(np.from_dlpack(w1), layer.kernel.numpy())
    np.testing.assert_array_equal(np.from_dlpack(b1), layer.bias.numpy())


def test_keras_sync_on_a_host_backend_reads_host_arrays() -> None:
    layer = _layer()
    w, b = layer._sync_params()
    assert isinstance(w, np.ndarray) and w.shape == (N_OUT, N_IN)
    np.testing.assert_array_equal(w, layer.kernel.numpy())
    np.testing.assert_array_equal(b, layer.bias.numpy())


def test_tensorflow_gets_aligned_arrays_only() -> None:
    # TensorFlow aborts the process on a DLPack tensor not aligned to 64 bytes (a NumPy
    # array under the simulator, or a view into CuPy's pool): such an array is copied
    # into an aligned one on its own side first; an aligned one goes as it is
    buf = np.zeros(64 + 8 * 13, dtype=np.uint8)
    start = next(i for i in range(1, 64) if (buf.ctypes.data + i) % 64 == 8)
    odd = buf[start : start + 8 * 12].view(np.int64)
    odd[:] = np.arange(12)
    assert odd.ctypes.data % dlpack.TF_ALIGN_BYTES == 8
    fixed = dlpack.aligned_for_tensorflow(odd)
    assert fixed.ctypes.data % dlpack.TF_ALIGN_BYTES == 0
    np.testing.assert_array_equal(fixed, np.arange(12))
    assert dlpack.aligned_for_tensorflow(fixed) is fixed
    t = dlpack.from_backend(odd.reshape(3, 4), tf.constant([0.0]))
    np.testing.assert_array_equal(t.numpy(), np.arange(12).reshape(3, 4))


def test_keras_cpu_call_keeps_the_host_path(monkeypatch: pytest.MonkeyPatch) -> None:
    # CPU tensors on a host backend never reach the device path; the ids stay NumPy
    called: list[Any] = []
    monkeypatch.setattr(LSHDense, "_select_on_device", lambda *a: called.append(a))
    layer = _layer()
    out = layer(np.ones((4, N_IN), np.float32), training=True, labels=np.arange(4))
    assert not called and tuple(out.shape) == (4, N_OUT)
    assert isinstance(layer.last_active_ids, np.ndarray)
