"""``import lshcore`` (and hashing on the NumPy backend) imports no framework and no numba."""

from __future__ import annotations

import json
import os
import subprocess
import sys

HEAVY = ("torch", "tensorflow", "mxnet", "cupy", "numba", "jax", "keras")

SCRIPT = f"""
import json, sys
import numpy as np
import lshcore
steps = {{"import": sorted(m for m in {HEAVY!r} if m in sys.modules)}}
names = lshcore.families(), lshcore.transforms()
steps["families"] = sorted(m for m in {HEAVY!r} if m in sys.modules)
fam = lshcore.hash_family("srp", 16, 4, 3, seed=0, backend="numpy")
codes = fam.hash(np.random.default_rng(0).standard_normal((7, 16)).astype(np.float32))
assert codes.shape == (7, 3), codes.shape
steps["hash"] = sorted(m for m in {HEAVY!r} if m in sys.modules)
print(json.dumps(steps))
"""


def run_clean(script: str) -> dict[str, list[str]]:
    env = dict(os.environ)
    env.pop("LSHCORE_BACKEND", None)
    run = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr
    result: dict[str, list[str]] = json.loads(run.stdout.strip().splitlines()[-1])
    return result


def test_import_and_numpy_hashing_stay_light():
    steps = run_clean(SCRIPT)
    assert steps == {"import": [], "families": [], "hash": []}


def test_the_check_itself_sees_a_heavy_import():
    # the same probe does report a framework once something imports it
    steps = run_clean(SCRIPT.replace("import lshcore\n", "import lshcore\nimport numba\n"))
    assert steps["import"] == ["numba"]
