"""The GPU benchmark script runs end to end (``--simulate``: tiny sizes under numba's CUDA
simulator), and its library rows train on the device path: the selection on the device
and nothing but the batch, its labels, the loss and the work tally crossing (the XMC
trainer: the batch, the query codes and active set of its host tables, the loss)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytest.importorskip("numba")
pytest.importorskip("array_api_compat")


def test_bench_gpu_simulated_dry_run(tmp_path: Path) -> None:
    out = tmp_path / "gpu.md"
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1", OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "benchmarks/bench_gpu.py", "--simulate", "--out", str(out)],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    text = out.read_text(encoding="utf-8")
    rows = [ln for ln in text.splitlines() if ln.startswith("| lshcore Model")]
    assert len(rows) == 2, text  # the defaults and topk
    for row in rows:
        assert "selects on device: True" in row, row
        crossed = row.split("copies during training: ")[1].split(" |")[0].split(", ")
        assert set(crossed) <= {"input", "labels", "loss", "selection_work"}, row
    # the XMC trainer: weights, Adam state and gradients never cross
    (xmc,) = [ln for ln in text.splitlines() if ln.startswith("| lshcore XMC trainer")]
    crossed = set(xmc.split("copies during training: ")[1].split(" |")[0].split(", "))
    allowed = {"input", "active_ids", "query_codes", "loss", "rehash_ids", "table_codes"}
    assert crossed <= allowed | {"hash_functions"}, xmc
    assert {"input", "query_codes", "loss"} <= crossed, xmc
    assert "exact search" in text and "LSHIndex search" in text
