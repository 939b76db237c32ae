"""Shared test helpers (pytest finds this file; tests import nothing from each other)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

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
