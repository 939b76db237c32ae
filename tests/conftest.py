"""Shared test helpers (pytest finds this file; tests import nothing from each other)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
#: ``benchmarks/gpu_check.sh`` sets this on a machine with a GPU: the GPU checks then run
#: their kernels on the device instead of numba's CUDA simulator
GPU_REAL = os.environ.get("LSHCORE_GPU_REAL") == "1"


def _run_gpu_script(args: list[str]) -> dict[str, object]:
    """Run ``python *args`` with the CUDA simulator on (off with LSHCORE_GPU_REAL=1) and
    return the JSON object of its last ``RESULT {...}`` line (fails with its output)."""
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="0" if GPU_REAL else "1")
    proc = subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, env=env, cwd=ROOT, timeout=600
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, f"simulator run failed:\n{proc.stdout}\n{proc.stderr}"
    return dict(json.loads(lines[-1][len("RESULT ") :]))


@pytest.fixture(scope="session")
def run_gpu_script() -> Callable[[list[str]], dict[str, object]]:
    """:func:`_run_gpu_script` as a fixture."""
    return _run_gpu_script


@pytest.fixture
def fake_gpu_sync(monkeypatch: pytest.MonkeyPatch) -> Callable[[Any, str], list[Any]]:
    """``arm(layer, framework)``: from then on the framework's CPU tensors (``"mxnet"``,
    ``"tensorflow"``) pass for CUDA ones, the adapter layer's selector has a device
    backend, ``to_backend``'s capsule import goes through torch (zero-copy, as
    ``cupy.from_dlpack`` on a device) and the layer's ``_host_params`` fails. Returns the
    list of the tensors ``to_backend`` is given. Tests a DLPack sync without a GPU."""
    torch = pytest.importorskip("torch")
    from lshcore.adapters import _common
    from lshcore.core import dlpack

    real_to_backend = dlpack.to_backend
    #: a device backend as ``_sync_params`` and ``to_backend`` see one (never computes)
    fake_gpu = types.SimpleNamespace(name="cuda-fake", on_device=True, xp=np)

    def no_host_copy(self: Any) -> Any:
        raise AssertionError("the sync read host copies of the weights")

    def arm(layer: Any, framework: str) -> list[Any]:
        given: list[Any] = []

        def on_device(x: Any) -> bool:
            return dlpack.framework_of(x) == framework

        def to_backend(x: Any, backend: Any, name: str = "x") -> Any:
            given.append(x)
            return real_to_backend(x, backend, name)

        monkeypatch.setattr(layer.selector, "backend", fake_gpu)
        monkeypatch.setattr(_common, "is_device_array", on_device)
        monkeypatch.setattr(dlpack, "device_kind", lambda x: "cuda" if on_device(x) else "cpu")
        monkeypatch.setattr(dlpack, "_from_capsule", lambda xp, c, fw: torch.from_dlpack(c).numpy())
        monkeypatch.setattr(dlpack, "to_backend", to_backend)
        monkeypatch.setattr(type(layer), "_host_params", no_host_copy)
        return given

    return arm
