"""Core training with device-resident parameters on the GPU backend's code path, run in
CI under numba's CUDA simulator (tests/_gpu_training_sim.py, in a subprocess: the
simulator must be switched on before numba.cuda is imported).

Each check trains a tiny model a few steps on the NumPy reference and on a device
backend (``host_arrays=False``: parameters, optimizer state and workspaces in the
backend's namespace, every host/device copy counted through ``Backend.to_device`` /
``to_host``) and asserts: the same losses, weights and optimizer state within rounding;
the parameter arrays never replaced; no copy outside the allowed tags (input, labels,
the loss, the selection's work counts; a host selector's ids, codes, activations and
changed rows only where a layer selects on the host), never a whole weight matrix. Under the simulator the "device" arrays are NumPy
arrays; ``strict_device_namespace`` repeats the training with a CuPy stand-in
(tests/_strict_device.py) that refuses NumPy calls on device arrays, host arrays mixed
into device operations and host arrays in the layer kernels, as CuPy and a real launch
would. Real CuPy compatibility still needs a device: ``benchmarks/gpu_check.sh`` runs
this with ``LSHCORE_GPU_REAL=1``.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("array_api_compat") is None,
    reason="array-api-compat not installed (the GPU glue needs it: pip install 'lshcore[gpu]')",
)

ROOT = Path(__file__).resolve().parent.parent
REAL = os.environ.get("LSHCORE_GPU_REAL") == "1"
CHECKS = [
    "strict_device_namespace",
    "shared_set_adam",
    "per_row_sets_two_hashed_layers",
    "nothing_but_the_loss_without_hashing",
    "the_counter_sees_a_weight_copy",
    "scoring_policies_train_on_the_device",
    "device_refuses_a_host_rerank",
    "mips_and_norm_tiebreak_train_on_the_device",
    "predict_and_save_roundtrip",
    "dense_layer_feeding_a_per_row_hashed_layer",
    "trainer_end_to_end",
    "cli_run_training_on_digits",
]


@pytest.fixture(scope="module")
def verdicts(run_gpu_script: Any) -> dict[str, object]:
    return run_gpu_script([str(ROOT / "tests" / "_gpu_training_sim.py")])


def test_ran_where_asked_without_importing_cupy(verdicts: dict[str, object]) -> None:
    assert verdicts["simulated"] is (not REAL)
    assert verdicts["cupy_imported"] is REAL


@pytest.mark.parametrize("check", CHECKS)
def test_device_resident_training(verdicts: dict[str, object], check: str) -> None:
    assert verdicts[check] == "ok", verdicts[check]
