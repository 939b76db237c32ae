"""Run by tests/test_gpu_adapters.py in a subprocess (NUMBA_ENABLE_CUDASIM must be set
before numba.cuda is imported): the PyTorch adapter's hashed forward when its selector
picks on the device, against the same layer on the NumPy backend's host path. Prints
one ``RESULT {json}`` line, one verdict per check ("ok" or the traceback).

The "device" backend is the GPU kernel module with ``host_arrays=False`` (registered as
``cuda-sim``; under the simulator its arrays are NumPy arrays) and CPU tensors stand in
for CUDA ones: the device probes are patched to say "cuda" for a torch tensor, and the
selector takes the simulator's NumPy arrays for device arrays. The framework's own
copies are counted too: a tensor that stands in for a device one read on the host
(``Tensor.numpy``) or a NumPy array made a tensor (``torch.as_tensor``) is recorded in
the transfer log, tagged by the tensor it copies (``input``, ``init`` for the weights,
``labels``). With ``LSHCORE_GPU_REAL=1`` the tensors are CUDA tensors and the backend
is ``cupy``; then ``Tensor.cpu``/``Tensor.to`` of a CUDA tensor are what is counted.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from typing import Any

import numpy as np
import torch

import lshcore
from lshcore.adapters import _common
from lshcore.adapters.torch import LSHLinear
from lshcore.core import backend as backend_mod
from lshcore.core import dlpack
from lshcore.core.backend import Backend, count_transfers
from lshcore.kernels import _cuda_kernels as ck
from lshcore.training import selector as selector_mod

REAL = os.environ.get("LSHCORE_GPU_REAL") == "1"
DEVICE_NAME = "cupy" if REAL else "cuda-sim"
TORCH_DEVICE = "cuda" if REAL else "cpu"
#: what may cross during hashed training: the labels (read for their check, B int64),
#: the work tallies, the ids of a "changed" rehash's sample, a rebuilt family's arrays
H2D_OK = {"labels", "rehash_ids", "hash_functions"}
D2H_OK = {"labels", "selection_work"}

out: dict[str, Any] = {"simulated": ck.SIMULATED, "cupy_imported": False}


def check(name: str, fn: Any) -> None:
    try:
        fn()
        out[name] = "ok"
    except Exception:
        out[name] = traceback.format_exc()[-2500:]


# -- the stand-ins -------------------------------------------------------------------------
if not REAL:

    class _SimPlugin:
        @lshcore.hookimpl
        def lshcore_register_backends(self, register: Any) -> None:
            register("cuda-sim", Backend("cuda-sim", "lshcore.kernels.cupy_gpu", host_arrays=False))

    lshcore.register_plugin(_SimPlugin(), name="cuda-sim")
    _real_kind = backend_mod.device_kind

    def _sim_kind(x: Any) -> str | None:
        return "cuda" if isinstance(x, torch.Tensor) else _real_kind(x)

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


def same_as_the_host_path(steps: int = 3, **kw: Any) -> None:
    ref, ref_ids, _ = train("numpy", steps, **kw)
    dev, dev_ids, log = train(DEVICE_NAME, steps, **kw)
    assert dev.selector.selects_on_device, "the adapter's selector picks on the host"
    for step, (a, b) in enumerate(zip(ref_ids, dev_ids, strict=True)):
        np.testing.assert_array_equal(b, a, err_msg=f"step {step}")
    assert len({a.tobytes() for a in ref_ids}) > 1, "every step chose the same sets"
    w_ref, w_dev = ref.weight.detach().cpu().numpy(), dev.weight.detach().cpu().numpy()
    np.testing.assert_allclose(w_dev, w_ref, rtol=1e-5, atol=1e-6)
    assert ref.selector.rehashes == dev.selector.rehashes > 0
    assert dev._index is not None
    mults, ref_mults = dict(dev._index.mults), dict(ref._index.mults)
    if kw.get("family") == "srp":  # the device selector tallies SRP's hashing as dense
        mults.pop("selection"), ref_mults.pop("selection")
    assert mults == ref_mults, (mults, ref_mults)
    # the first build included, nothing but labels and tallies crosses, either way
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
]:  # fmt: skip
    check(name, fn)
out["cupy_imported"] = "cupy" in sys.modules
print("RESULT " + json.dumps(out))
