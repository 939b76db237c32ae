"""Tests of benchmarks/torch_baseline.py (the PyTorch dense MLP baseline)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from lshcore.data.datasets import load_digits
from lshcore.errors import ConfigError, InputError

pytest.importorskip("torch")

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "torch_baseline.py"
_spec = importlib.util.spec_from_file_location("lshcore_bench_torch_baseline", _PATH)
assert _spec is not None and _spec.loader is not None
torch_baseline = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(torch_baseline)


@pytest.fixture(scope="module")
def digits():
    return load_digits(seed=0)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_trains_above_chance_on_digits(digits, optimizer):
    import torch

    before = torch.get_num_threads()
    result = torch_baseline.train_torch_mlp(
        digits.x_train,
        digits.y_train,
        digits.x_test,
        digits.y_test,
        hidden=(64,),
        epochs=5,
        batch_size=32,
        optimizer=optimizer,
        threads=1,
    )
    assert result["accuracy"] > 0.8  # chance is 0.1
    assert len(result["epoch_seconds"]) == 5 and result["train_seconds"] > 0
    assert result["samples_per_second"] == pytest.approx(
        5 * digits.n_train / result["train_seconds"]
    )
    assert result["threads"] == 1 and result["optimizer"] == optimizer
    assert result["optimizer_impl"] in ("fused", "foreach", "default")
    assert torch.get_num_threads() == before  # thread count restored


def test_same_seed_same_result(digits):
    kwargs = dict(hidden=(16,), epochs=1, batch_size=64, threads=1, seed=3)
    a = torch_baseline.train_torch_mlp(
        digits.x_train, digits.y_train, digits.x_test, digits.y_test, **kwargs
    )
    b = torch_baseline.train_torch_mlp(
        digits.x_train, digits.y_train, digits.x_test, digits.y_test, **kwargs
    )
    assert a["accuracy"] == b["accuracy"] and a["final_loss"] == b["final_loss"]


def test_dense_mults_per_sample():
    m = torch_baseline.dense_mults_per_sample(784, (1000, 1000, 1000), 10)
    forward = 784 * 1000 + 2 * 1000 * 1000 + 1000 * 10
    assert m["forward"] == forward
    assert m["backward"] == forward + (forward - 784 * 1000)
    assert m["total"] == m["forward"] + m["backward"]


def test_bad_inputs_raise_project_errors(digits):
    x, y = digits.x_train, digits.y_train
    with pytest.raises(ConfigError, match="optimizer"):
        torch_baseline.train_torch_mlp(x, y, digits.x_test, digits.y_test, optimizer="rmsprop")
    with pytest.raises(InputError, match="x_test"):
        torch_baseline.train_torch_mlp(x, y, digits.x_test[:, :10], digits.y_test)
    with pytest.raises(InputError, match="y_train"):
        torch_baseline.train_torch_mlp(x, y[:-1], digits.x_test, digits.y_test)
    bad = x.copy()
    bad[0, 0] = np.nan
    with pytest.raises(InputError, match="x_train"):
        torch_baseline.train_torch_mlp(bad, y, digits.x_test, digits.y_test)
    with pytest.raises(ConfigError, match="epochs"):
        torch_baseline.train_torch_mlp(x, y, digits.x_test, digits.y_test, epochs=0)
