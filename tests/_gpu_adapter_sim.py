"""Run by tests/test_gpu_adapters.py in a subprocess (NUMBA_ENABLE_CUDASIM must be set
before numba.cuda is imported): the PyTorch, Keras and Gluon adapters' hashed forward
when their selector picks on the device, against the same layer on the NumPy backend's
host path. Prints one ``RESULT {json}`` line, one verdict per check ("ok", "skip: why"
or the traceback). One process for all: TensorFlow alone takes seconds to import.

The "device" backend is the GPU kernel module with ``host_arrays=False`` (registered as
``cuda-sim``; under the simulator its arrays are NumPy arrays) and CPU tensors stand in
for CUDA ones: the device probes are patched to say "cuda" for a framework tensor, and the
selector takes the simulator's NumPy arrays for device arrays. The framework's own
copies are counted too: a tensor that stands in for a device one read on the host
(``Tensor.numpy``) or a NumPy array made a tensor (``torch.as_tensor``) is recorded in
the transfer log, tagged by the tensor it copies (``input``, ``init`` for the weights,
``labels``). With ``LSHCORE_GPU_REAL=1`` the tensors are CUDA tensors and the backend
is ``cupy``; then ``Tensor.cpu``/``Tensor.to`` of a CUDA tensor are what is counted.

TensorFlow's and MXNet's CPU tensors stand in the same way (their DLPack capsules are
imported through torch, as ``cupy.from_dlpack`` would on a device); their host reads
(``EagerTensor._numpy``, behind ``.numpy()`` and ``np.asarray``; ``NDArray.asnumpy``) and
NumPy arrays made tensors (``tf.py_function``'s outputs, ``nd.array``) are counted.
With ``LSHCORE_GPU_REAL=1`` their cases are skipped (CPU builds of both in the venv).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch
from _gpu_sim import REAL, check, out, report

import lshcore
from lshcore.adapters import _common
from lshcore.adapters._common import ADAPTER_DEFAULTS
from lshcore.adapters.torch import LSHLinear
from lshcore.core import backend as backend_mod
from lshcore.core import dlpack
from lshcore.core.backend import Backend, count_transfers
from lshcore.training import selector as selector_mod

#: the frameworks whose CPU tensors pass for CUDA ones under the simulator
STAND_INS = ("torch", "tensorflow", "mxnet")
DEVICE_NAME = "cupy" if REAL else "cuda-sim"
TORCH_DEVICE = "cuda" if REAL else "cpu"
#: what may cross during hashed training: the labels (read for their check, B int64),
#: the work tallies, the ids of a "changed" rehash's sample, a rebuilt family's arrays
H2D_OK = {"labels", "rehash_ids", "hash_functions"}
D2H_OK = {"labels", "selection_work"}


# -- the stand-ins -------------------------------------------------------------------------
if not REAL:

    class _SimPlugin:
        @lshcore.hookimpl
        def lshcore_register_backends(self, register: Any) -> None:
            register("cuda-sim", Backend("cuda-sim", "lshcore.kernels.cupy_gpu", host_arrays=False))

    lshcore.register_plugin(_SimPlugin(), name="cuda-sim")
    _real_kind = backend_mod.device_kind

    def _sim_kind(x: Any) -> str | None:
        # every framework tensor stands in for a CUDA one (Keras variables are read as
        # tensors first; NumPy arrays keep their own kind)
        return "cuda" if dlpack.framework_of(x) in STAND_INS else _real_kind(x)

    def _sim_is_device(x: Any) -> bool:
        return _sim_kind(x) == "cuda"

    backend_mod.device_kind = _sim_kind  # backend.is_device_array reads it
    dlpack.device_kind = _sim_kind  # type: ignore[attr-defined]
    _common.device_kind = _sim_kind  # type: ignore[attr-defined]
    _common.is_device_array = _sim_is_device  # type: ignore[attr-defined]

    def _sim_device_array(x: Any) -> bool:
        # the simulator's device arrays are NumPy arrays; the DLPack views of the
        # stand-in CUDA tensors are the read-only ones (NumPy marks DLPack imports so)
        ro_view = isinstance(x, np.ndarray) and not x.flags.writeable
        return ro_view or _sim_is_device(x)

    selector_mod.is_device_array = _sim_device_array  # type: ignore[attr-defined]

    def _sim_from_capsule(xp: Any, capsule: Any, fw: str) -> Any:
        # NumPy takes no bare capsule (TensorFlow's, MXNet's): torch imports it, sharing
        # the memory as cupy.from_dlpack does on a device, and NumPy views that read-only
        return np.from_dlpack(torch.from_dlpack(capsule))

    dlpack._from_capsule = _sim_from_capsule  # type: ignore[attr-defined]

#: storage address -> tag of the tensors whose host copies are counted
TAGS: dict[int, str] = {}


def _tag(t: torch.Tensor) -> str:
    return TAGS.get(t.untyped_storage().data_ptr(), "framework_to_host")


def _count_framework_copies() -> None:
    record = backend_mod._record
    real_numpy, real_cpu, real_to = torch.Tensor.numpy, torch.Tensor.cpu, torch.Tensor.to
    real_as_tensor = torch.as_tensor

    def numpy(self: torch.Tensor, *a: Any, **k: Any) -> Any:
        if not REAL:  # every tensor stands in for a device one
            record("d2h", _tag(self), self)
        return real_numpy(self, *a, **k)

    def cpu(self: torch.Tensor, *a: Any, **k: Any) -> Any:
        if self.is_cuda:
            record("d2h", _tag(self), self)
        return real_cpu(self, *a, **k)

    def to(self: torch.Tensor, *a: Any, **k: Any) -> Any:
        moved = real_to(self, *a, **k)
        if self.is_cuda and not moved.is_cuda:
            record("d2h", _tag(self), self)
        return moved

    def as_tensor(data: Any, *a: Any, **k: Any) -> Any:
        made = real_as_tensor(data, *a, **k)
        if isinstance(data, np.ndarray) and (made.is_cuda or not REAL):
            record("h2d", "framework_upload", data)
        return made

    torch.Tensor.numpy = numpy  # type: ignore[method-assign]
    torch.Tensor.cpu = cpu  # type: ignore[method-assign]
    torch.Tensor.to = to  # type: ignore[method-assign]
    torch.as_tensor = as_tensor


_count_framework_copies()


# -- the runs ------------------------------------------------------------------------------
N_IN, N_OUT, BATCH = 12, 64, 6


def batches(steps: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    rng = np.random.default_rng(5)
    out = []
    for _ in range(steps):
        x = np.maximum(rng.standard_normal((BATCH, N_IN)), 0).astype(np.float32)
        y = rng.integers(0, N_OUT, BATCH)
        out.append((torch.tensor(x, device=TORCH_DEVICE), torch.tensor(y, device=TORCH_DEVICE)))
    return out


def train(backend: str, steps: int, **kw: Any) -> tuple[LSHLinear, list[np.ndarray], Any]:
    """A layer on ``backend`` trained ``steps`` batches (SGD, or SparseAdam with sparse
    gradients, on the outputs' squares); its active ids per step and the transfer log
    of the whole training (the first build of the index included)."""
    torch.manual_seed(0)
    layer = LSHLinear(N_IN, N_OUT, backend=backend, **kw).to(TORCH_DEVICE)
    opt: Any = (
        torch.optim.SparseAdam(list(layer.parameters()), lr=0.05)
        if layer.sparse_grad
        else torch.optim.SGD(layer.parameters(), lr=0.05)
    )
    ids_seen = []
    logs = []
    for x, y in batches(steps):
        for t, tag in ((x, "input"), (y, "labels"), (layer.weight, "init"), (layer.bias, "init")):
            TAGS[t.untyped_storage().data_ptr()] = tag
        with count_transfers() as log:
            out_ = layer(x, labels=y)
            loss = (out_ * out_).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
        logs.append(log)
        ids = layer.last_active_ids
        ids_seen.append(ids.detach().cpu().numpy() if isinstance(ids, torch.Tensor) else ids)
    return layer, ids_seen, backend_mod.TransferLog([t for log in logs for t in log.transfers])


def same_as_the_host_path(steps: int = 3, train_fn: Any = None, **kw: Any) -> None:
    """The layer trained ``steps`` steps by ``train_fn`` (default the torch layer's
    :func:`train`; :func:`keras_train`, :func:`gluon_train`) on the device backend picks
    the ids of the NumPy backend's host path, step for step, with its weights, rehashes
    and tallies; the ids stay framework tensors, and from the first build on nothing but
    labels and tallies crosses."""
    train_fn = train if train_fn is None else train_fn
    ref, ref_ids, _ = train_fn("numpy", steps, **kw)
    dev, dev_ids, log = train_fn(DEVICE_NAME, steps, **kw)
    assert dev.selector.selects_on_device, "the adapter's selector picks on the host"
    assert not isinstance(dev.last_active_ids, np.ndarray), "the ids came down to the host"
    for step, (a, b) in enumerate(zip(ref_ids, dev_ids, strict=True)):
        np.testing.assert_array_equal(b, a, err_msg=f"step {step}")
    assert len({a.tobytes() for a in ref_ids}) > 1, "every step chose the same sets"
    np.testing.assert_allclose(_weights(dev), _weights(ref), rtol=1e-5, atol=1e-6)
    assert ref.selector.rehashes == dev.selector.rehashes > 0
    mults, ref_mults = dict(dev._index.mults), dict(ref._index.mults)
    if kw.get("family", ADAPTER_DEFAULTS["family"]) == "srp":  # tallied as dense there
        mults.pop("selection"), ref_mults.pop("selection")
    assert mults == ref_mults, (mults, ref_mults)
    bad_h2d = log.tags("h2d") - H2D_OK
    bad_d2h = log.tags("d2h") - D2H_OK
    assert not bad_h2d and not bad_d2h, (bad_h2d, bad_d2h, log.transfers[:12])
    assert log.count("selection_work", "d2h") >= steps  # the log saw the steps at all


def the_counter_sees_the_old_copies() -> None:
    # guards the harness: the host path of the same device backend (the selector never
    # attached) copies the input and the ids, and the counter records them so
    torch.manual_seed(0)
    layer = LSHLinear(N_IN, N_OUT, backend=DEVICE_NAME, active=0.1, policy="topk",
                      family="srp", k=2, l=5).to(TORCH_DEVICE)  # fmt: skip
    x, y = batches(1)[0]
    TAGS[x.untyped_storage().data_ptr()] = "input"
    layer._selects_on_device = lambda x: False  # type: ignore[method-assign]
    with count_transfers() as log:
        layer(x, labels=y)
    assert log.count("input", "d2h") == 1, log.transfers
    assert log.count("framework_upload", "h2d") > 0, log.transfers


def a_loaded_layer_picks_on_the_device() -> None:
    # the index saved with state_dict resumes on the device (attached to the views of
    # the loaded weights): the same ids as the layer it was saved from
    kw = {"policy": "topk", "family": "dwta", "sparse_grad": True, **SMALL}
    layer, _, _ = train(DEVICE_NAME, 2, **kw)
    torch.manual_seed(1)  # other weights: the load must replace them
    loaded = LSHLinear(N_IN, N_OUT, backend=DEVICE_NAME, **kw).to(TORCH_DEVICE)
    loaded.load_state_dict(layer.state_dict())
    assert loaded.selector.selects_on_device, "the loaded index picks on the host"
    x, _ = batches(1)[0]
    layer.eval(), loaded.eval()
    with torch.no_grad():
        want, got = layer(x, return_active=True), loaded(x, return_active=True)
    np.testing.assert_array_equal(got[0].cpu().numpy(), want[0].cpu().numpy())
    np.testing.assert_allclose(got[1].cpu().numpy(), want[1].cpu().numpy(), rtol=1e-6)


# -- Keras and Gluon -----------------------------------------------------------------------
def _import_keras_gluon() -> str:
    """Import both adapters (one process for every case: TensorFlow is slow to import)
    and count their frameworks' copies; why they cannot run here ("" when they can)."""
    global tf, keras, mx, nd, autograd, gluon, KerasDense, GluonDense
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        # the Gluon adapter restores numpy.bool before it imports mxnet
        from lshcore.adapters.mxnet import LSHDense as GluonDense
        from lshcore.adapters.mxnet import autograd, gluon, mx, nd
        from lshcore.adapters.tensorflow import LSHDense as KerasDense
        from lshcore.adapters.tensorflow import keras, tf
    except ImportError as exc:
        return f"skip: {exc}"
    if REAL:  # their CUDA tensors need GPU builds (not tensorflow-cpu, mxnet's CPU wheel)
        if not tf.config.list_physical_devices("GPU") or mx.context.num_gpus() == 0:
            return "skip: TensorFlow or MXNet sees no GPU here"
        return "skip: the Keras/Gluon device checks run under the simulator only"
    _count_keras_gluon_copies()
    return ""


def _tf_address(t: Any) -> int:
    """The address of an eager tensor's buffer, read through DLPack (no copy); 0 for a
    tensor DLPack cannot export (a bool, a string)."""
    try:
        return int(np.from_dlpack(t).ctypes.data)
    except Exception:
        return 0


#: id of an NDArray, or address of an eager tensor's buffer -> tag of its host copies
FW_TAGS: dict[int, str] = {}


def _count_keras_gluon_copies() -> None:
    # every tensor stands in for a device one: its host read (EagerTensor._numpy, behind
    # .numpy() and np.asarray; NDArray.asnumpy) is a download, a NumPy array made a tensor
    # (py_function's outputs; nd.array) an upload
    from tensorflow.python.framework import ops as tf_ops
    from tensorflow.python.ops import script_ops

    record = backend_mod._record
    real_tf_numpy, real_convert = tf_ops._EagerTensorBase._numpy, script_ops.EagerFunc._convert
    real_asnumpy, real_nd_array = mx.nd.NDArray.asnumpy, mx.nd.array

    def tf_numpy(self: Any) -> Any:
        got = real_tf_numpy(self)
        # not int32: TensorFlow keeps those (shapes, axes) in host memory on a GPU too,
        # and its gradient functions read them there
        if self.dtype != tf.int32:
            record("d2h", FW_TAGS.get(_tf_address(self), "framework_to_host"), np.asarray(got))
        return got

    def convert(self: Any, value: Any, dtype: Any) -> Any:
        if isinstance(value, np.ndarray):
            record("h2d", "framework_upload", value)
        return real_convert(self, value, dtype)

    def asnumpy(self: Any) -> Any:
        got = real_asnumpy(self)
        record("d2h", FW_TAGS.get(id(self), "framework_to_host"), got)
        return got

    def nd_array(source: Any, *a: Any, **k: Any) -> Any:
        if isinstance(source, np.ndarray):
            record("h2d", "framework_upload", source)
        return real_nd_array(source, *a, **k)

    tf_ops._EagerTensorBase._numpy = tf_numpy
    script_ops.EagerFunc._convert = convert
    mx.nd.NDArray.asnumpy = asnumpy
    mx.nd.array = nd_array


def _batches_np(steps: int) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(x.numpy(), y.numpy()) for x, y in batches(steps)]


def keras_train(backend: str, steps: int, **kw: Any) -> tuple[Any, list[np.ndarray], Any]:
    """A Keras ``LSHDense`` on ``backend`` trained ``steps`` batches (SGD on the outputs'
    squares, in a GradientTape); its active ids per step and the whole transfer log."""
    keras.utils.set_random_seed(0)
    layer = KerasDense(N_OUT, backend=backend, bias_initializer="random_normal", **kw)
    opt = keras.optimizers.SGD(0.05)
    ids_seen, logs = [], []
    for x_np, y_np in _batches_np(steps):
        x, y = tf.constant(x_np), tf.constant(y_np)
        FW_TAGS.update({_tf_address(x): "input", _tf_address(y): "labels"})
        with count_transfers() as log:
            with tf.GradientTape() as tape:
                out_ = layer(x, training=True, labels=y)
                loss = tf.reduce_sum(out_ * out_)
            variables = layer.trainable_variables
            opt.apply_gradients(zip(tape.gradient(loss, variables), variables, strict=True))
        logs.append(log)
        ids_seen.append(np.array(layer.last_active_ids))
    return layer, ids_seen, backend_mod.TransferLog([t for lg in logs for t in lg.transfers])


def gluon_train(backend: str, steps: int, **kw: Any) -> tuple[Any, list[np.ndarray], Any]:
    """A Gluon ``LSHDense`` on ``backend`` trained ``steps`` batches (sgd on the outputs'
    squares, labels as Gluon keeps them: float32); its ids per step and the log."""
    mx.random.seed(0)
    layer = GluonDense(N_OUT, in_units=N_IN, backend=backend, bias_initializer="normal", **kw)
    layer.initialize(mx.init.Xavier())
    trainer = gluon.Trainer(layer.collect_params(), "sgd", {"learning_rate": 0.05})
    ids_seen, logs = [], []
    for x_np, y_np in _batches_np(steps):
        x, y = mx.nd.array(x_np), mx.nd.array(y_np.astype(np.float32))
        FW_TAGS.update({id(x): "input", id(y): "labels"})
        with count_transfers() as log:
            with autograd.record():
                out_ = layer(x, y)
                loss = (out_ * out_).sum()
            loss.backward()
            trainer.step(1)
            nd.waitall()
        logs.append(log)
        ids = layer.last_active_ids
        ids_seen.append(ids.asnumpy() if isinstance(ids, nd.NDArray) else np.array(ids))
    return layer, ids_seen, backend_mod.TransferLog([t for lg in logs for t in lg.transfers])


def _weights(layer: Any) -> np.ndarray:
    """A host copy of the layer's weight (torch, Keras or Gluon)."""
    if isinstance(layer, torch.nn.Module):
        return layer.weight.detach().cpu().numpy()
    w = layer.kernel if hasattr(layer, "kernel") else layer.weight.data()
    return np.array(w.numpy() if hasattr(w, "numpy") else w.asnumpy())


def keras_gluon_counter_sees_the_old_copies(train_fn: Any) -> None:
    # guards the harness: the host path of the same device backend (the device path
    # refused) copies the input down and the ids up, and the counter records them so
    real = _common.HashedLayerMixin._selects_on_device
    _common.HashedLayerMixin._selects_on_device = lambda self, x: False  # type: ignore[method-assign]
    try:
        _, _, log = train_fn(DEVICE_NAME, 1, policy="topk", family="srp", **SMALL)
    finally:
        _common.HashedLayerMixin._selects_on_device = real  # type: ignore[method-assign]
    assert log.count("input", "d2h") == 1, log.transfers
    assert log.count("framework_upload", "h2d") > 0, log.transfers


SMALL = {"active": 0.1, "k": 2, "l": 5, "rehash": "fixed:1"}
for name, fn in [
    ("topk_srp_sparse_grad", lambda: same_as_the_host_path(
        policy="topk", family="srp", sparse_grad=True, **SMALL)),
    ("topk_dwta_dense_grad_gather", lambda: same_as_the_host_path(
        policy="topk", family="dwta", compute="gather", **SMALL)),
    ("batch_rerank_dwta", lambda: same_as_the_host_path(
        policy="batch_rerank", family="dwta", **SMALL)),
    ("the_counter_sees_the_old_copies", the_counter_sees_the_old_copies),
    ("a_loaded_layer_picks_on_the_device", a_loaded_layer_picks_on_the_device),
    ("rerank_adapter_defaults", lambda: same_as_the_host_path(
        active=0.1, rehash="fixed:1")),
]:  # fmt: skip
    check(name, fn)

KERAS_GLUON_SKIPPED = _import_keras_gluon()
for fw, train_fn in (("keras", keras_train), ("gluon", gluon_train)):
    for name, fn in [
        (f"{fw}_topk_srp", lambda t=train_fn: same_as_the_host_path(
            train_fn=t, policy="topk", family="srp", **SMALL)),
        (f"{fw}_batch_rerank_dwta", lambda t=train_fn: same_as_the_host_path(
            train_fn=t, policy="batch_rerank", family="dwta", **SMALL)),
        (f"{fw}_rerank_adapter_defaults", lambda t=train_fn: same_as_the_host_path(
            train_fn=t, active=0.1, rehash="fixed:1")),
        (f"{fw}_counter_sees_the_old_copies",
         lambda t=train_fn: keras_gluon_counter_sees_the_old_copies(t)),
    ]:  # fmt: skip
        if KERAS_GLUON_SKIPPED:
            out[name] = KERAS_GLUON_SKIPPED
        else:
            check(name, fn)
report()
