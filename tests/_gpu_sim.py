"""What the simulator scripts share (``tests/_gpu_*_sim.py``, each run by a
``tests/test_gpu_*.py`` in a subprocess with ``NUMBA_ENABLE_CUDASIM`` set before numba.cuda
is imported): where they run, one verdict per check, and the ``RESULT {json}`` line the
``run_gpu_script`` fixture reads. A script imports this module by name (its own folder
is first on ``sys.path``)."""

from __future__ import annotations

import json
import os
import sys
import traceback
from collections.abc import Callable, Iterable
from typing import Any

from lshcore.core.backend import Backend
from lshcore.kernels import _cuda_kernels as ck

#: a real device (``benchmarks/gpu_check.sh`` sets it): the real ``cupy`` backend
REAL = os.environ.get("LSHCORE_GPU_REAL") == "1"
#: the verdicts, and whatever a script measures, printed by :func:`report`
out: dict[str, Any] = {"simulated": ck.SIMULATED, "cupy_imported": False}


def device_backend() -> Any:
    """The GPU backend's code path: the real ``cupy`` backend on a device, else the GPU
    kernel module with ``host_arrays=False`` (under the simulator its arrays are NumPy
    arrays, so what the checks prove is the data flow and the numbers)."""
    if REAL:
        from lshcore.registry.catalog import get_backend

        return get_backend("cupy")
    return Backend("cuda-sim", "lshcore.kernels.cupy_gpu", host_arrays=False)


def check(name: str, fn: Callable[[], Any]) -> None:
    """Run one check: its verdict is "ok" or the end of its traceback."""
    try:
        fn()
        out[name] = "ok"
    except Exception:
        out[name] = traceback.format_exc()[-2500:]


def report(checks: Iterable[tuple[str, Callable[[], Any]]] = ()) -> None:
    """Run ``checks`` in order, then print the ``RESULT`` line (with whether cupy was
    imported)."""
    for name, fn in checks:
        check(name, fn)
    out["cupy_imported"] = "cupy" in sys.modules
    print("RESULT " + json.dumps(out))
