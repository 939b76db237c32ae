"""The XMC trainer on a device backend (issue 13), run in CI under numba's CUDA simulator
(tests/_gpu_xmc_sim.py, in a subprocess: the simulator must be switched on before
numba.cuda is imported).

Each training check trains a small synthetic XMC problem from one seed on the NumPy
reference and on a device backend (``host_arrays=False``: weights, Adam state and
gradients in the backend's namespace, every host/device copy counted) and asserts: the
same shared active set at every step, losses, weights and Adam state within float32
rounding, the same rehashes; copies only under the documented tags (the batch, the
active set, query and table codes, the loss), never a weight matrix or its state. Full
scoring gives the same top 5 and P@k; so does hashed inference (candidates from the host
tables, scored on the device: the same ids and work counts, with frequent labels, ties at
the candidate cut-off and in score, chunked scoring, SRP multiprobe; only the batch, the
candidates, the query codes or projections and the top ids cross). A device backend
refuses, with a ConfigError naming the option, ``workers > 1``, ``active_sets="sample"``,
a family without ``device_hash`` and multiprobe with a family without ``device_probes``.
``benchmarks/gpu_check.sh`` runs this on a device with ``LSHCORE_GPU_REAL=1``.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from lshcore import registry
from lshcore.cli import main
from lshcore.data.synth import synth_xmc

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("array_api_compat") is None,
    reason="array-api-compat not installed (the GPU glue needs it: pip install 'lshcore[gpu]')",
)

ROOT = Path(__file__).resolve().parent.parent
REAL = os.environ.get("LSHCORE_GPU_REAL") == "1"
CHECKS = [
    "srp_train_agrees",
    "dwta_train_agrees",
    "catch_up_adam_agrees",
    "full_scoring_inference",
    "hashed_inference_agrees",
    "hashed_multiprobe_agrees",
    "device_refuses_what_it_does_not_run",
    "the_counter_sees_a_weight_copy",
    "strict_device_namespace",
    "cli_run_xmc_on_device",
]


@pytest.fixture(scope="module")
def verdicts(run_gpu_script: Any) -> dict[str, object]:
    return run_gpu_script([str(ROOT / "tests" / "_gpu_xmc_sim.py")])


def test_ran_where_asked_without_importing_cupy(verdicts: dict[str, object]) -> None:
    assert verdicts["simulated"] is (not REAL)
    assert verdicts["cupy_imported"] is REAL


@pytest.mark.parametrize("check", CHECKS)
def test_xmc_on_a_device_backend(verdicts: dict[str, object], check: str) -> None:
    assert verdicts[check] == "ok", verdicts[check]


@pytest.fixture(scope="module")
def tiny_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("xmc") / "s.store"
    synth_xmc(path, 120, 20, 50, seed=1, labels_per_point=2.0)
    return path


def test_cli_xmc_honours_backend(tiny_store: Path, tmp_path: Path) -> None:
    # --backend reaches the XMC trainer (it used to be dropped: numba ran regardless)
    out = tmp_path / "r.json"
    args = ["train", "--dataset", "xmc", "--data", str(tiny_store), "--epochs", "1"]
    args += ["--hidden", "8", "--batch-size", "32", "--backend", "numpy", "--json", str(out)]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    assert json.loads(out.read_text())["config"]["backend"] == "numpy"


def test_cli_xmc_on_cupy_without_a_gpu_says_why(tiny_store: Path) -> None:
    if registry.lookup("backend", "cupy").available():
        pytest.skip("a usable GPU is here")
    args = ["train", "--dataset", "xmc", "--data", str(tiny_store), "--backend", "cupy"]
    res = CliRunner().invoke(main, args)
    assert res.exit_code != 0
    assert "--backend cupy" in res.output and "unavailable" in res.output, res.output
    assert "Traceback" not in res.output
