"""The adapter examples, run as a user runs them, reach a sensible accuracy offline.

Each example trains on scikit-learn's digits (``--dataset digits``) and prints its hashed
and dense test accuracies; both must reach 90%. The PyTorch example runs by default (about
10 s on one thread); the Keras and Gluon ones take longer (framework start-up, a minute on a
busy machine) and run with ``LSHCORE_EXAMPLE_TESTS=all``.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ACCURACY = re.compile(r"^(hashed|dense) \(.*test accuracy ([0-9.]+)%$", re.M)
EXAMPLES = [
    ("train_mnist_torch.py", "torch", False),
    ("train_mnist_keras.py", "tensorflow", True),
    ("train_mnist_gluon.py", "mxnet", True),
]


def printed_accuracies(stdout: str) -> dict[str, float]:
    """``{"hashed": a, "dense": b}`` (fractions) from an example's output."""
    return {name: float(pct) / 100 for name, pct in ACCURACY.findall(stdout)}


def test_printed_accuracies_are_parsed() -> None:
    out = "digits: 1437 training images\nhashed (X, 5% active): test accuracy 96.67%\n"
    assert printed_accuracies(out + "dense (Y):   test accuracy 89.00%\n") == {
        "hashed": pytest.approx(0.9667),
        "dense": pytest.approx(0.89),
    }
    assert printed_accuracies("nothing") == {}


@pytest.mark.slow
@pytest.mark.parametrize(("script", "module", "long"), EXAMPLES)
def test_example_reaches_90_percent_on_digits(script: str, module: str, long: bool) -> None:
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not installed")
    if long and os.environ.get("LSHCORE_EXAMPLE_TESTS") != "all":
        pytest.skip("set LSHCORE_EXAMPLE_TESTS=all to run the Keras and Gluon examples")
    # one thread: on a shared machine a thread pool per process slows training tenfold
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / script), "--dataset", "digits"],
        capture_output=True, text=True, env=env, timeout=600, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    acc = printed_accuracies(proc.stdout)
    assert set(acc) == {"hashed", "dense"}, proc.stdout
    assert acc["hashed"] >= 0.9 and acc["dense"] >= 0.9, proc.stdout
