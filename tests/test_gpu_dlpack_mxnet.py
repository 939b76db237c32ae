"""The Gluon layer's parameters reach a device selector through DLPack, tested without a
GPU: the device probes are patched so that the layer's own CPU NDArrays pass for CUDA
ones, and the real ``to_backend`` views them (its capsule import done by torch, which
shares the memory as CuPy would on a device). On CPU, the DLPack view of the weight the
layer hands over is the parameter's own memory (a write through it shows there)."""

from __future__ import annotations

import importlib.util
from typing import Any

import numpy as np
import pytest

if importlib.util.find_spec("mxnet") is None:  # importorskip would import it unshimmed
    pytest.skip("MXNet is not installed", allow_module_level=True)

# the adapter shims numpy before importing mxnet: take mxnet's modules from it
from lshcore.adapters import _common  # noqa: E402
from lshcore.adapters.mxnet import LSHDense, autograd, mx, nd  # noqa: E402

HASH = {"active": 0.25, "k": 4, "l": 8, "seed": 1, "family": "srp", "policy": "topk"}
N_IN, N_OUT = 12, 40


def _layer(**kw: Any) -> Any:
    mx.random.seed(0)
    layer = LSHDense(N_OUT, **{**HASH, **kw}, bias_initializer="normal")
    layer.initialize(mx.init.Xavier())
    x = nd.array(np.random.default_rng(0).standard_normal((8, N_IN)).astype(np.float32))
    with autograd.record():  # builds the parameters and the index; marks the rows
        layer(x, nd.array(np.arange(8)))
    assert layer.selector is not None
    return layer


def test_gluon_sync_views_the_parameters_through_dlpack_on_a_device_backend(
    fake_gpu_sync: Any,
) -> None:
    layer = _layer()
    given = fake_gpu_sync(layer, "mxnet")
    w, b = layer._sync_params()
    assert given[0] is layer.weight.data() and given[1] is layer.bias.data()
    assert w.shape == (N_OUT, N_IN) and b.shape == (N_OUT,)  # (n_out, n_in), as stored
    np.testing.assert_array_equal(w, layer.weight.data().asnumpy())
    np.testing.assert_array_equal(b, layer.bias.data().asnumpy())
    # views of the parameters' memory: an in-place update shows through them
    layer.weight.data()[:] -= 0.5
    layer.bias.data()[:] += 1.0
    np.testing.assert_array_equal(w, layer.weight.data().asnumpy())
    np.testing.assert_array_equal(b, layer.bias.data().asnumpy())


@pytest.mark.parametrize("policy", ["rerank", "exact"])
def test_gluon_sync_views_the_parameters_for_rerank_and_exact_on_the_device(
    fake_gpu_sync: Any, policy: str
) -> None:
    # rerank (the adapters' default) and exact score their candidates against the
    # device weights when they choose there: views, as for the other policies
    layer = _layer(policy=policy)
    given = fake_gpu_sync(layer, "mxnet")
    assert layer.selector.can_select_on_device
    w, _ = layer._sync_params()
    assert given[0] is layer.weight.data()
    np.testing.assert_array_equal(w, layer.weight.data().asnumpy())


def test_gluon_sync_gives_host_copies_to_a_rerank_that_scores_on_the_host(
    fake_gpu_sync: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # with settings that keep the choice on the host (tables="index"), rerank runs NumPy
    # kernels on the weights it holds: device views there would fail at the first select
    # after a training step (exact hashes nothing: it always chooses on the device)
    layer = _layer(policy="rerank", tables="index")
    given = fake_gpu_sync(layer, "mxnet")
    assert not layer.selector.can_select_on_device
    monkeypatch.setattr(LSHDense, "_host_params", lambda self: ("host-w", "host-b"))
    assert layer._sync_params() == ("host-w", "host-b") and given == []


def test_gluon_sync_in_training_hands_the_views_to_the_index(
    fake_gpu_sync: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a recorded forward marks rows; the next one syncs with the device views
    layer = _layer()
    given = fake_gpu_sync(layer, "mxnet")
    index = layer._bound_index()
    synced: list[tuple[Any, Any]] = []
    monkeypatch.setattr(index, "sync", lambda w, b, **kw: synced.append((w, b)))
    monkeypatch.setattr(index, "select", lambda *a, **kw: _common.dense_arrays(8, N_OUT))
    layer(nd.ones((8, N_IN)))
    assert len(synced) == 1 and given[0] is layer.weight.data()
    np.testing.assert_array_equal(synced[0][0], layer.weight.data().asnumpy())
    assert layer._input_ctx == mx.cpu()


def test_gluon_weight_tensors_are_the_parameters_memory() -> None:
    # on CPU, without patches: a write through the DLPack view shows in the parameter
    torch = pytest.importorskip("torch")
    layer = _layer()
    w, b = layer._weight_tensors()
    view = torch.from_dlpack(w.to_dlpack_for_read())
    bview = torch.from_dlpack(b.to_dlpack_for_read())
    view[0, 0] = 42.0
    bview[1] = -7.0
    assert layer.weight.data().asnumpy()[0, 0] == 42.0
    assert layer.bias.data().asnumpy()[1] == -7.0


def test_gluon_sync_without_bias_views_the_weight_only(fake_gpu_sync: Any) -> None:
    layer = _layer(use_bias=False)
    given = fake_gpu_sync(layer, "mxnet")
    w, b = layer._sync_params()
    assert b is None and len(given) == 1
    np.testing.assert_array_equal(w, layer.weight.data().asnumpy())


def test_gluon_sync_on_a_host_backend_reads_host_arrays() -> None:
    layer = _layer()
    w, b = layer._sync_params()
    assert isinstance(w, np.ndarray) and w.shape == (N_OUT, N_IN)
    np.testing.assert_array_equal(w, layer.weight.data().asnumpy())
    np.testing.assert_array_equal(b, layer.bias.data().asnumpy())


def test_gluon_cpu_forward_keeps_the_host_path(monkeypatch: pytest.MonkeyPatch) -> None:
    # CPU arrays on a host backend never reach the device path; the ids stay NumPy
    called: list[Any] = []
    monkeypatch.setattr(LSHDense, "_forward_on_device", lambda *a: called.append(a))
    layer = _layer()
    with autograd.record():
        out = layer(nd.ones((4, N_IN)), nd.array(np.arange(4)))
    assert not called and out.shape == (4, N_OUT)
    assert isinstance(layer.last_active_ids, np.ndarray)
