"""The device selector (``lshcore.training.device_select``): its tables, query codes,
hit counting and choice of ids on the GPU backend's code path, run in CI under numba's
CUDA simulator (tests/_gpu_selector_sim.py, in a subprocess: the simulator must be on
before numba.cuda is imported).

Checked there: on the same seeds and weights, the device selector picks the same ids as
the NumPy reference selector (every policy; DWTA, WTA, SRP; the MIPS transforms
simple_lsh and sign_alsh, including a refit when a row outgrows their scale M; the
"norm" tie-break), call after call (the tie-break counter advancing), in training
(labels kept) and inference, with the same work tallies, and keeps the same codes, M and
norm priorities through rehashes (fixed and "changed" schedules), rebuilds and a save
and restore; a hashed training step moves no active ids, query or
table codes, or activations between host and device (the same model with the selector
forced onto the host does, which guards the counter).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lshcore.errors import ConfigError
from lshcore.training.selector import ActiveSelector

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("array_api_compat") is None,
    reason="array-api-compat not installed (the GPU glue needs it: pip install 'lshcore[gpu]')",
)

ROOT = Path(__file__).resolve().parent.parent
REAL = os.environ.get("LSHCORE_GPU_REAL") == "1"
CHECKS = [
    "same_sets_batch_rerank",
    "same_sets_batch_union_wta",
    "same_sets_topk",
    "same_sets_topk_srp",
    "same_sets_union",
    "same_sets_after_a_rebuild",
    "same_sets_threshold",
    "same_sets_rerank",
    "same_sets_rerank_adapter_defaults",
    "same_sets_topk_simple_lsh",
    "same_sets_topk_sign_alsh",
    "same_sets_rerank_simple_lsh",
    "same_sets_batch_rerank_sign_alsh",
    "same_sets_threshold_dwta_simple_lsh",
    "same_sets_sign_alsh_after_a_rebuild",
    "same_sets_topk_norm",
    "same_sets_rerank_norm",
    "same_sets_threshold_norm",
    "same_sets_topk_norm_simple_lsh",
    "same_sets_exact",
    "same_sets_random",
    "rerank_ties_go_to_the_smaller_id",
    "changed_schedule_samples_the_same_rows",
    "changed_schedule_refits_the_transform",
    "a_transform_without_device_methods_stays_on_the_host",
    "refit_leaves_the_device_until_attached",
    "fit_device_hashes_where_the_weights_are",
    "chunked_selection_is_the_same",
    "no_selector_traffic_per_step",
]


@pytest.fixture(scope="module")
def verdicts(run_gpu_script: Any) -> dict[str, object]:
    return run_gpu_script([str(ROOT / "tests" / "_gpu_selector_sim.py")])


def test_ran_where_asked_without_importing_cupy(verdicts: dict[str, object]) -> None:
    assert verdicts["simulated"] is (not REAL)
    assert verdicts["cupy_imported"] is REAL


@pytest.mark.parametrize("check", CHECKS)
def test_device_selector(verdicts: dict[str, object], check: str) -> None:
    assert verdicts[check] == "ok", verdicts[check]


def test_a_host_selector_refuses_device_selection() -> None:
    sel = ActiveSelector(4, 16, backend="numpy", active=0.25, policy="topk")
    sel.fit(np.ones((16, 4), np.float32), np.zeros(16, np.float32))
    assert not sel.selects_on_device
    with pytest.raises(ConfigError, match="selects on the host"):
        sel.select_device(np.ones((2, 4), np.float32))


def test_the_label_class_is_the_reference_kernels() -> None:
    # a label must outrank any hit count exactly as in the host kernels
    from lshcore.kernels import _np_layer
    from lshcore.training import device_select

    assert device_select.LABEL_CLASS == _np_layer.LABEL_CLASS
