"""The GPU backend where no device answers: a clear BackendUnavailableError with the
reason (never a crash), registration still passes the kernel contract, and ``import
lshcore`` stays light."""

from __future__ import annotations

import subprocess
import sys
import types

import numpy as np
import pytest
from click.testing import CliRunner

import lshcore
from lshcore.core.backend import CupyBackend, is_device_array, to_numpy
from lshcore.core.contract import KERNEL_NAMES, declared_kernels
from lshcore.errors import BackendUnavailableError
from lshcore.registry import manager as registry


def _cupy() -> CupyBackend:
    backend = registry.lookup("backend", "cupy")
    assert isinstance(backend, CupyBackend)
    return backend


def _no_device() -> CupyBackend:
    backend = _cupy()
    if backend.available():
        pytest.skip("a CUDA device answers here: the no-device behaviour cannot be shown")
    return backend


def test_the_cupy_backend_declares_the_whole_contract_without_importing_it() -> None:
    backend = _cupy()
    assert backend.missing_kernels() == []
    assert set(KERNEL_NAMES) <= declared_kernels(backend.kernel_module)
    assert "srp_codes" in declared_kernels(backend.kernel_module)
    assert backend.requires == ("cupy", "array_api_compat") and not backend.host_arrays


def test_without_a_device_the_backend_says_why() -> None:
    backend = _no_device()
    reason = backend.why_unavailable()
    assert reason and ("CUDA" in reason or "not installed" in reason), reason
    with pytest.raises(BackendUnavailableError, match=r"backend 'cupy' is unavailable: "):
        lshcore.get_backend("cupy")
    assert "cupy" not in lshcore.backends() and "cupy" in lshcore.backends(usable_only=False)


def test_lshindex_on_cupy_without_a_device_raises_the_reason() -> None:
    _no_device()
    with pytest.raises(BackendUnavailableError, match="cupy"):
        lshcore.LSHIndex(8, k=4, l=2, backend="cupy")


def test_train_with_cupy_without_a_device_is_a_clear_cli_error() -> None:
    _no_device()
    from lshcore.cli import main

    result = CliRunner().invoke(
        main, ["train", "--backend", "cupy", "--dataset", "digits", "--no-progress"]
    )
    assert result.exit_code == 1, result.output
    assert "--backend cupy" in result.output and "unavailable" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)  # no traceback
    bad = CliRunner().invoke(main, ["train", "--backend", "tpu", "--dataset", "digits"])
    assert bad.exit_code == 2 and "known backends" in bad.output


@pytest.mark.parametrize(
    "failure",
    [
        "getDeviceCount",  # cudaErrorInsufficientDriver and friends
        "zero devices",
        "launch",  # a device that counts but cannot run a kernel
    ],
)
def test_any_probe_failure_means_no_gpu(monkeypatch: pytest.MonkeyPatch, failure: str) -> None:
    def count() -> int:
        if failure == "getDeviceCount":
            raise RuntimeError("cudaErrorInsufficientDriver")
        return 0 if failure == "zero devices" else 1

    def zeros(n: int) -> object:
        raise OSError("no kernel image is available for execution on the device")

    runtime = types.SimpleNamespace(getDeviceCount=count)
    fake = types.SimpleNamespace(cuda=types.SimpleNamespace(runtime=runtime), zeros=zeros)
    monkeypatch.setitem(sys.modules, "cupy", fake)
    backend = CupyBackend("cupy-probe", "lshcore.kernels.cupy_gpu", array_module="cupy")
    assert backend.available() is False
    reason = backend.why_unavailable()
    assert ("no CUDA device" in reason) or ("no usable CUDA device" in reason), reason
    with pytest.raises(BackendUnavailableError, match="cupy-probe"):
        backend.require()


def test_device_array_helpers_on_host_arrays() -> None:
    x = np.arange(3)
    assert is_device_array(x) is False
    assert to_numpy(x) is x or np.array_equal(to_numpy(x), x)

    class Fake:
        __cuda_array_interface__ = {"shape": (1,)}

    assert is_device_array(Fake()) is True


def test_registering_and_listing_backends_imports_no_gpu_module() -> None:
    code = (
        "import sys, lshcore; lshcore.backends(usable_only=False); "
        "from lshcore.core.contract import declared_kernels; "
        "declared_kernels('lshcore.kernels.cupy_gpu'); "
        "bad = [m for m in ('cupy', 'numba.cuda', 'array_api_compat') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


_HOST_DENSIFY = """
import json
import numpy as np
from lshcore.kernels import _cuda_kernels as ck, _cuda_ops, _np_hashing

def no_launch(*args):
    raise AssertionError("host codes went to a CUDA launch")

ck.launch_densify = no_launch  # the GPU module must keep host codes on the host
rng = np.random.default_rng(0)
codes = rng.integers(-1, 16, size=(5, 3, 8)).astype(np.int64)
a = rng.integers(1, 1000, size=3).astype(np.int64)
c = rng.integers(0, 1000, size=3).astype(np.int64)
got = _cuda_ops.densify_bins(codes, a, c, 10)
want = _np_hashing.densify_bins(codes, a, c, 10)
print("RESULT " + json.dumps({"host": isinstance(got, np.ndarray), "equal": bool((got == want).all())}))
"""


def test_gpu_densify_keeps_host_codes_on_the_host(run_gpu_script) -> None:
    """A CSR query's bins (and MinHash's) are host arrays on the cupy backend: densified
    by the NumPy reference, not copied to the device and back by a numba launch."""
    result = run_gpu_script(["-c", _HOST_DENSIFY])
    assert result == {"host": True, "equal": True}
