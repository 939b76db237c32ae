"""How numba's thread pool is started, before any lshcore kernel runs (imports numba).

The query and re-rank kernels of ``_numba_tables`` run ``parallel=True`` for large
calls. With numba's default ``omp`` threading layer (GNU OpenMP here; no TBB), each
worker of numba's own OpenMP runtime busy-waits (``GOMP_SPINCOUNT`` = 300000 spins)
after every parallel region, taking CPU from whatever runs next in the process (a
PyTorch step, another library's threads) on a machine with few or shared cores.

:func:`setup_numba_threads` starts numba's pool with a *passive* wait policy
(``OMP_WAIT_POLICY=PASSIVE`` for GNU OpenMP, ``KMP_BLOCKTIME=0`` for Intel OpenMP):
idle workers sleep at once. OpenMP reads these variables once, when the runtime is
loaded, which numba does lazily on the first parallel call (or ``numba.get_num_threads``),
so they are set only around that load and removed again: the OpenMP runtime of
PyTorch or of anything else loaded later keeps the process environment as it was.

Nothing is overridden that the user chose: a variable already in the environment is
left as is (and used), the threading layer is never changed (``workqueue`` aborts the
process when two Python threads launch parallel kernels at once, which Hogwild
training and concurrent readers of an index do; ``omp`` and ``tbb`` allow it), and
``LSHCORE_NUMBA_PASSIVE=0`` turns the whole setup off.

GNU OpenMP is one runtime per process in practice: numba's ``omp`` layer binds to an
OpenMP runtime already loaded globally (PyTorch's ``libgomp.so.1``), and PyTorch imported
later binds to the one numba loaded. So when the setup applies, PyTorch's pool is
passive too; when PyTorch (or numba's pool) was loaded first, the runtime has already
read its settings and nothing can change here (set ``OMP_WAIT_POLICY=PASSIVE`` before
starting Python instead). ``THREADS_SETUP`` says what happened.
"""

from __future__ import annotations

import ctypes
import os
import threading
from typing import Any

import numba

__all__ = ["setup_numba_threads", "THREADS_SETUP", "PASSIVE_ENV", "WAIT_VARS"]

PASSIVE_ENV = "LSHCORE_NUMBA_PASSIVE"
# variables read by the OpenMP runtime when it loads, and the values that make it passive
WAIT_VARS: dict[str, str] = {"OMP_WAIT_POLICY": "PASSIVE", "KMP_BLOCKTIME": "0"}
# any of these set by the user means the user chose the wait behaviour
_USER_WAIT_VARS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")

THREADS_SETUP: dict[str, Any] = {"applied": None, "layer": None, "set": (), "reason": ""}
_lock = threading.Lock()


def _started_layer() -> str | None:
    """numba's threading layer if its pool has started, else None."""
    try:
        return str(numba.threading_layer())
    except ValueError:  # no parallel region and no thread query yet
        return None


def _openmp_loaded() -> bool:
    """Whether an OpenMP runtime is already in the process's global symbols.

    PyTorch loads its own ``libgomp.so.1`` globally: numba's OpenMP layer then binds to
    that runtime (one pool for both), which read its wait policy long ago.
    """
    try:
        return hasattr(ctypes.CDLL(None), "GOMP_parallel")
    except OSError:
        return False


def setup_numba_threads() -> dict[str, Any]:
    """Start numba's thread pool with a passive OpenMP wait policy (once; see module doc).

    Returns :data:`THREADS_SETUP`: ``applied`` (True: started passive here; False: not
    applied, ``reason`` says why), ``layer`` (numba's threading layer) and ``set`` (the
    variables set during the start).
    """
    with _lock:
        if THREADS_SETUP["applied"] is not None:
            return THREADS_SETUP
        layer = _started_layer()
        chosen: tuple[str, ...] = ()
        if os.environ.get(PASSIVE_ENV, "1").strip().lower() in ("0", "false", "no", "off"):
            applied, chosen, reason = False, (), f"disabled by {PASSIVE_ENV}"
        elif layer is not None:
            applied, chosen, reason = False, (), "numba's thread pool had already started"
        elif _openmp_loaded():
            applied, reason = (
                False,
                (
                    "an OpenMP runtime was already loaded (e.g. by import torch): numba shares it "
                    "and its wait policy"
                ),
            )
        elif any(v in os.environ for v in _USER_WAIT_VARS):
            applied, chosen, reason = False, (), "wait policy set by the user's environment"
        else:
            chosen = tuple(WAIT_VARS)
            for var in chosen:
                os.environ[var] = WAIT_VARS[var]
            try:
                numba.get_num_threads()  # loads the threading layer: OpenMP reads the env now
            finally:
                for var in chosen:
                    os.environ.pop(var, None)
            applied, reason = True, ""
        if applied:
            layer = _started_layer()
        THREADS_SETUP.update(applied=applied, layer=layer, set=chosen, reason=reason)
        return THREADS_SETUP


setup_numba_threads()
