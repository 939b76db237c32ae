"""numba's thread pool is started passive by the numba backend, once, respecting the user.

Each case runs in a fresh process: the threading layer and OpenMP's wait policy are
fixed when numba's pool starts, so they cannot be reset inside the test process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("numba")

WAIT_VARS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")

SCRIPT = """
import json, os, sys
if {pre_torch}:
    import torch  # loads PyTorch's OpenMP runtime first
if {pre_start}:
    import numba
    numba.get_num_threads()  # someone else starts numba's pool first
import lshcore
kernels = lshcore.get_backend("numba").kernels  # the path every numba user takes
from lshcore.kernels._numba_setup import THREADS_SETUP
import numba
numba.get_num_threads()  # starts the pool where the setup did not
print(json.dumps({{
    "setup": {{k: (list(v) if isinstance(v, tuple) else v) for k, v in THREADS_SETUP.items()}},
    "layer": numba.threading_layer(),
    "env": {{v: os.environ.get(v) for v in {wait_vars!r}}},
}}))
"""


def run_fresh(
    extra_env: dict[str, str], pre_start: bool = False, pre_torch: bool = False
) -> tuple[dict, str]:
    env = {k: v for k, v in os.environ.items() if k not in WAIT_VARS}
    for k in ("LSHCORE_BACKEND", "LSHCORE_NUMBA_PASSIVE", "NUMBA_THREADING_LAYER"):
        env.pop(k, None)
    env.update(extra_env)
    script = SCRIPT.format(pre_start=pre_start, pre_torch=pre_torch, wait_vars=WAIT_VARS)
    run = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout.strip().splitlines()[-1]), run.stderr


def test_numba_backend_starts_the_pool_passive_and_restores_the_environment():
    out, stderr = run_fresh({"OMP_DISPLAY_ENV": "VERBOSE"})
    setup = out["setup"]
    assert setup["applied"] is True, setup
    assert setup["set"] == ["OMP_WAIT_POLICY", "KMP_BLOCKTIME"]
    assert setup["layer"] == out["layer"]
    # the variables were set only around the pool's start: later loads see the user's env
    assert out["env"] == {v: None for v in WAIT_VARS}
    if out["layer"] == "omp" and "GOMP_SPINCOUNT" in stderr:
        # GNU OpenMP printed its settings when numba loaded it: no spinning
        assert "GOMP_SPINCOUNT = '0'" in stderr, stderr


def test_the_layer_is_not_changed():
    out, _ = run_fresh({})
    # workqueue is not thread-safe (concurrent searches abort): never chosen here
    assert out["layer"] != "workqueue"


def test_user_wait_policy_is_respected():
    out, _ = run_fresh({"OMP_WAIT_POLICY": "ACTIVE"})
    assert out["setup"]["applied"] is False
    assert "user" in out["setup"]["reason"]
    assert out["env"]["OMP_WAIT_POLICY"] == "ACTIVE"
    assert out["env"]["KMP_BLOCKTIME"] is None


def test_opt_out_and_an_already_started_pool_leave_everything_alone():
    out, _ = run_fresh({"LSHCORE_NUMBA_PASSIVE": "0"})
    assert out["setup"]["applied"] is False
    assert "LSHCORE_NUMBA_PASSIVE" in out["setup"]["reason"]
    out, _ = run_fresh({}, pre_start=True)
    assert out["setup"]["applied"] is False
    assert "already started" in out["setup"]["reason"]
    assert out["env"] == {v: None for v in WAIT_VARS}


def test_an_openmp_runtime_loaded_first_is_reported_not_changed():
    pytest.importorskip("torch")
    out, _ = run_fresh({}, pre_torch=True)
    assert out["setup"]["applied"] is False
    assert "already loaded" in out["setup"]["reason"]
    assert out["env"] == {v: None for v in WAIT_VARS}
