"""The adapters' hashed forward when their selector picks on the device (issue 13), run
in CI under numba's CUDA simulator (tests/_gpu_adapter_sim.py, in a subprocess: the
simulator must be on before numba.cuda is imported), with CPU tensors (torch, TensorFlow,
MXNet) standing in for CUDA ones.

Checked there, step for step against the same layer on the NumPy backend's host path:
the same active ids, weights, rehashes and multiplication tallies (``topk`` with sparse
gradients and the device mask of trained rows, ``topk`` with the per-pair gather,
``batch_rerank`` with its shared block and keep mask on the device); from the first
build no input, ids, activations or weights cross between host and device (the
framework's own copies counted too), and the counter does see them on the host path;
a layer loaded with ``load_state_dict`` resumes its index on the device; the adapters'
default ``rerank`` (SRP k=4, l=50) scores its candidates against the device weights.
The same for the Keras and Gluon layers (``topk`` SRP; ``batch_rerank`` DWTA with its
keep mask on the device; the default ``rerank``): ids, weights, rehashes and tallies equal to the host path's, the ids left
as the framework's tensors, no input/ids/activation copies (``EagerTensor.numpy`` /
``NDArray.asnumpy`` and NumPy arrays made tensors counted), the counter seeing them on
the host path. (With ``LSHCORE_GPU_REAL=1`` those are skipped: the venv's TensorFlow and
MXNet are CPU builds, whose tensors cannot stand for CUDA ones there.)
Here, in process: the torch union matches NumPy's, and the device-mask bookkeeping of
``IndexFollower`` (errors leave it unchanged).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from lshcore.adapters._common import IndexFollower, LayerSpec, union_arrays  # noqa: E402
from lshcore.adapters.torch import LSHLinear, _union_tensors  # noqa: E402
from lshcore.errors import LSHError  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
REAL = os.environ.get("LSHCORE_GPU_REAL") == "1"
CHECKS = [
    "topk_srp_sparse_grad",
    "topk_dwta_dense_grad_gather",
    "batch_rerank_dwta",
    "the_counter_sees_the_old_copies",
    "a_loaded_layer_picks_on_the_device",
    "rerank_adapter_defaults",
]
KERAS_GLUON_CHECKS = [
    f"{fw}_{case}"
    for fw in ("keras", "gluon")
    for case in (
        "topk_srp",
        "batch_rerank_dwta",
        "rerank_adapter_defaults",
        "counter_sees_the_old_copies",
    )
]
needs_gpu_glue = pytest.mark.skipif(
    importlib.util.find_spec("array_api_compat") is None,
    reason="array-api-compat not installed (the GPU glue needs it: pip install 'lshcore[gpu]')",
)


@pytest.fixture(scope="module")
def verdicts(run_gpu_script: Any) -> dict[str, object]:
    return run_gpu_script([str(ROOT / "tests" / "_gpu_adapter_sim.py")])


@needs_gpu_glue
def test_ran_where_asked_without_importing_cupy(verdicts: dict[str, object]) -> None:
    assert verdicts["simulated"] is (not REAL)
    assert verdicts["cupy_imported"] is REAL


@needs_gpu_glue
@pytest.mark.parametrize("check", CHECKS)
def test_torch_forward_on_the_device(verdicts: dict[str, object], check: str) -> None:
    assert verdicts[check] == "ok", verdicts[check]


@needs_gpu_glue
@pytest.mark.parametrize("check", KERAS_GLUON_CHECKS)
def test_keras_and_gluon_forward_on_the_device(verdicts: dict[str, object], check: str) -> None:
    verdict = str(verdicts[check])
    if verdict.startswith("skip: "):  # a framework missing, or no GPU build of it
        pytest.skip(verdict[len("skip: ") :])
    assert verdict == "ok", verdict


def test_the_torch_union_is_numpys() -> None:
    ids = np.array([[1, 4, -1], [0, 4, 9], [2, 3, 7], [-1, -1, -1]])
    want = union_arrays(ids)
    got = _union_tensors(torch.from_numpy(ids), torch.float64)
    np.testing.assert_array_equal(got.rows.numpy(), want.rows)
    np.testing.assert_array_equal(got.pos.numpy(), want.pos)
    np.testing.assert_array_equal(got.valid.numpy(), want.valid)
    assert got.valid.dtype == torch.float64 and got.ids is not None


def test_a_host_selector_refuses_the_device_calls() -> None:
    index = IndexFollower(LayerSpec.build(4, 16, active=0.25, policy="topk", backend="numpy"))
    index.fit(np.ones((16, 4), np.float32), None)
    assert not index.on_device
    with pytest.raises(LSHError, match="picks on the host"):
        index.select_device(np.ones((2, 4), np.float32), None, None, False)
    with pytest.raises(LSHError, match="picks on the host"):
        index.touch_device(np.array([1, 2]))
    assert not index.pending()  # the refused mark left nothing behind


def test_the_cpu_forward_keeps_the_host_path(monkeypatch: pytest.MonkeyPatch) -> None:
    # CPU tensors on a host backend never reach the device path
    torch.manual_seed(0)
    layer = LSHLinear(8, 32, active=0.25, policy="topk", backend="numpy")
    called: list[Any] = []
    monkeypatch.setattr(LSHLinear, "_forward_on_device", lambda *a: called.append(a))
    out = layer(torch.randn(4, 8), labels=torch.tensor([0, 1, 2, 3]))
    assert not called and out.shape == (4, 32)
    assert isinstance(layer.last_active_ids, np.ndarray)
