"""Device detection, the DLPack hand-off and the adapters' choice of backend from the
input's device, tested without a GPU: CPU tensors through the same helpers (zero-copy,
checked by writing through the shared memory), fake device tensors for the choice of
backend, and the errors."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pytest

import lshcore
from lshcore.adapters import _common
from lshcore.adapters._common import DeviceError, backend_for_input
from lshcore.core.backend import Backend, device_kind, is_device_array
from lshcore.core.dlpack import framework_of, from_backend, to_backend
from lshcore.errors import InputError

torch = pytest.importorskip("torch")

NUMPY = lshcore.get_backend("numpy")
#: the GPU backend's code path with NumPy arrays (never used to compute here)
SIM = Backend("cuda-sim", "lshcore.kernels.cupy_gpu", host_arrays=False)


class FakeDLPack:
    """An array-like that answers ``__dlpack_device__`` as a framework tensor does."""

    def __init__(self, device_type: int):
        self.device_type = device_type

    def __dlpack_device__(self) -> tuple[int, int]:
        return (self.device_type, 0)


def _foreign(module: str, **attrs: Any) -> Any:
    """An object whose type claims to come from ``module`` (TensorFlow, MXNet)."""
    cls = type("Tensor", (), {"__module__": module})
    obj = cls()
    for k, v in attrs.items():
        setattr(obj, k, v)
    return obj


# -- where an array lives ----------------------------------------------------------------
def test_device_kind_of_host_arrays_and_cpu_tensors() -> None:
    assert device_kind(np.zeros(3)) == "cpu"
    assert device_kind(torch.zeros(3)) == "cpu"
    assert device_kind(torch.zeros(3, requires_grad=True)) == "cpu"
    assert not is_device_array(torch.zeros(3))


@pytest.mark.parametrize(
    ("obj", "kind"),
    [
        (FakeDLPack(2), "cuda"),  # kDLCUDA
        (FakeDLPack(13), "cuda"),  # kDLCUDAManaged
        (FakeDLPack(1), "cpu"),
        (FakeDLPack(3), "cpu"),  # pinned host memory
        (FakeDLPack(10), None),  # ROCm: not ours
        (_foreign("tensorflow.python.framework.ops", device="/job:l/task:0/device:GPU:0"), "cuda"),
        (_foreign("tensorflow.python.framework.ops", device="/job:l/task:0/device:CPU:0"), "cpu"),
        (_foreign("mxnet.ndarray.ndarray", context=_foreign("mxnet.context", device_type="gpu")), "cuda"),
        (_foreign("mxnet.ndarray.ndarray", context=_foreign("mxnet.context", device_type="cpu")), "cpu"),
        (object(), None),
        ("text", None),
    ],
)  # fmt: skip
def test_device_kind_reads_the_object_without_importing_its_framework(obj: Any, kind: Any) -> None:
    assert device_kind(obj) == kind
    assert is_device_array(obj) is (kind == "cuda")


def test_a_dlpack_device_that_raises_is_not_a_crash() -> None:
    class Broken:
        def __dlpack_device__(self) -> tuple[int, int]:
            raise RuntimeError("driver gone")

    assert device_kind(Broken()) is None


# -- DLPack hand-off -----------------------------------------------------------------------
def test_cpu_tensor_round_trip_shares_memory() -> None:
    t = torch.arange(6, dtype=torch.float32, requires_grad=True)
    a = to_backend(t, NUMPY)
    assert isinstance(a, np.ndarray) and a.ctypes.data == t.data_ptr()
    a[0] = 42.0  # write through the view: the tensor sees it (no copy was made)
    assert float(t.detach()[0]) == 42.0
    back = from_backend(a, t)
    assert isinstance(back, torch.Tensor) and back.data_ptr() == a.ctypes.data
    back[1] = -1.0
    assert a[1] == -1.0 and float(t.detach()[1]) == -1.0


def test_numpy_arrays_pass_as_they_are() -> None:
    a = np.ones((2, 3), np.float32)
    assert to_backend(a, NUMPY) is a
    assert from_backend(a, np.zeros(1)) is a
    assert framework_of(a) == "numpy" and framework_of(torch.zeros(1)) == "torch"


def test_a_cuda_tensor_for_a_host_backend_is_refused_by_name() -> None:
    with pytest.raises(InputError, match=r"CUDA.*backend 'numpy'.*without a copy"):
        to_backend(_foreign("torch", __dlpack_device__=lambda: (2, 0)), NUMPY)


def test_a_cpu_tensor_for_a_device_backend_is_refused_by_name() -> None:
    with pytest.raises(InputError, match=r"torch tensor on CPU.*'cuda-sim'.*move the tensor"):
        to_backend(torch.zeros(3), SIM)


def test_not_a_tensor_is_a_clear_error() -> None:
    with pytest.raises(InputError, match="builtins.object"):
        to_backend(object(), NUMPY)
    with pytest.raises(InputError, match=r"like: .*builtins.str"):
        from_backend(np.zeros(2), "text")


# -- which backend a layer's selector uses -------------------------------------------------
def test_cpu_input_keeps_the_default_backend_and_an_override_wins() -> None:
    assert backend_for_input(torch.zeros(2, 3), None) is None
    assert backend_for_input(np.zeros((2, 3)), "numpy") == "numpy"
    assert backend_for_input(FakeDLPack(2), "numpy") == "numpy"  # override: host copies


def test_cuda_input_without_a_gpu_backend_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_common, "gpu_backend_reason", lambda: "no usable CUDA device (test)")
    with pytest.raises(DeviceError, match=r"CUDA device.*no usable CUDA device \(test\)"):
        backend_for_input(FakeDLPack(2), None, "LSHLinear")


def test_cuda_input_without_a_gpu_backend_can_fall_back_to_the_host(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(_common, "gpu_backend_reason", lambda: "no usable CUDA device (test)")
    monkeypatch.setattr(_common, "_WARNED", set())
    with caplog.at_level(logging.WARNING, logger="lshcore.adapters"):
        for _ in range(3):
            assert backend_for_input(FakeDLPack(2), None, "LSHDense", host_fallback=True) is None
    assert caplog.text.count("host selection") == 1  # once, not per batch


def test_cuda_input_picks_the_gpu_backend_with_a_log_line(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(_common, "gpu_backend_reason", lambda: "")  # a device answers
    monkeypatch.setattr(_common, "_WARNED", set())
    with caplog.at_level(logging.INFO, logger="lshcore.adapters"):
        assert backend_for_input(FakeDLPack(2), None, "LSHLinear") == "cupy"
    assert "selecting with backend 'cupy'" in caplog.text


def test_unsupported_devices_and_non_tensors_are_clear_errors() -> None:
    with pytest.raises(DeviceError, match="does not support"):
        backend_for_input(FakeDLPack(10), None)  # ROCm
    with pytest.raises(InputError, match="must be an array or tensor"):
        backend_for_input(object(), None)


def test_a_layer_binds_its_index_to_the_inputs_device(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from lshcore.adapters.torch import LSHLinear

    layer = LSHLinear(8, 32, active=0.25)
    assert layer.spec.backend is None
    monkeypatch.setattr(_common, "gpu_backend_reason", lambda: "")
    monkeypatch.setattr(_common, "_WARNED", set())
    with caplog.at_level(logging.INFO, logger="lshcore.adapters"):
        index = layer._bind_input(8, FakeDLPack(2))
        assert index.spec.backend == "cupy" and layer.spec.backend == "cupy"
        assert layer._needs_fit  # rebuilt from the weights on the next call
        # back on the CPU: the index moves back to the default backend, with a log line
        index = layer._bind_input(8, torch.zeros(2, 8))
    assert index.spec.backend is None
    assert "moves from backend 'cupy' to None" in caplog.text
    # a layer given a backend keeps it whatever the input's device
    pinned = LSHLinear(8, 32, active=0.25, backend="numpy")
    assert pinned._bind_input(8, FakeDLPack(2)).spec.backend == "numpy"


def test_cpu_training_is_unchanged_by_the_device_choice() -> None:
    # an LSHLinear on CPU tensors keeps the default backend and trains as before
    from lshcore.adapters.torch import LSHLinear

    torch.manual_seed(0)
    layer = LSHLinear(8, 32, active=0.25)
    opt = torch.optim.SGD(layer.parameters(), lr=0.1)
    x = torch.randn(4, 8)
    for _ in range(2):
        opt.zero_grad()
        layer(x, labels=torch.tensor([0, 1, 2, 3])).sum().backward()
        opt.step()
    assert layer.spec.backend is None and layer.selector is not None


# -- the transfer counter ------------------------------------------------------------------
def test_host_backends_record_nothing_and_return_host_arrays() -> None:
    from lshcore.core.backend import count_transfers

    a = np.arange(6, dtype=np.float64).reshape(2, 3)
    with count_transfers() as log:
        up = NUMPY.to_device(a, "input", dtype=np.float32)
        down = NUMPY.to_host(up, "loss")
    assert log.transfers == []
    assert up.dtype == np.float32 and up.flags.c_contiguous and np.array_equal(down, a)


def test_device_backends_record_each_copy_with_its_tag_size_and_direction() -> None:
    from lshcore.core.backend import count_transfers

    a = np.ones((4, 5), np.float32)
    with count_transfers() as outer:
        SIM.to_device(a, "input")
        with count_transfers() as inner:
            SIM.to_host(a[:2], "loss")
        SIM.to_host(3.5, "loss")  # a Python scalar is host already: not a copy
    assert [(t.direction, t.tag, t.nbytes, t.shape) for t in inner.transfers] == [
        ("d2h", "loss", 40, (2, 5))
    ]
    assert outer.count() == 2 and outer.nbytes("input", "h2d") == 80
    assert outer.tags("h2d") == {"input"} and outer.tags("d2h") == {"loss"}
    with count_transfers() as after:
        pass
    assert after.transfers == []  # a finished block records nothing more


@pytest.mark.parametrize(
    ("family", "params"),
    [("srp", {}), ("sparse_srp", {}), ("crosspolytope", {}), ("pstable", {})],
)
def test_a_family_copies_its_functions_to_a_device_through_the_counted_path(
    family: str, params: dict[str, Any]
) -> None:
    from lshcore.core.backend import count_transfers
    from lshcore.registry import catalog

    with count_transfers() as log:
        catalog.hash_family(family, 16, 3, 4, seed=0, backend=SIM, **params)
    assert log.count("hash_functions", "h2d") >= 1, log.transfers
    assert log.tags() == {"hash_functions"}, log.transfers
