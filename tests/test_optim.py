"""Tests of lshcore.training.optim: sparse (lazy) and dense steps, and construction errors."""

from __future__ import annotations

import numpy as np
import pytest

from lshcore.errors import ConfigError, UnknownNameError
from lshcore.registry.catalog import get_backend
from lshcore.training.optim import OPTIMIZERS, make_optimizer


@pytest.mark.parametrize("name", OPTIMIZERS)
@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_sparse_step_with_every_entry_touched_equals_dense_step(name: str, backend: str) -> None:
    rng = np.random.default_rng(0)
    opt = make_optimizer(name, 0.05)
    kernels = get_backend(backend).kernels
    p_dense = rng.standard_normal((6, 5)).astype(np.float32)
    p_sparse = p_dense.copy()
    states_d = [np.zeros_like(p_dense) for _ in range(opt.n_states)]
    states_s = [np.zeros_like(p_dense) for _ in range(opt.n_states)]
    for step in range(1, 4):
        g = rng.standard_normal((6, 5)).astype(np.float32)
        opt.dense_step(p_dense, g.copy(), states_d, step)
        flat = g.reshape(-1).copy()
        mark = np.ones(flat.size, np.uint8)
        touched = np.arange(flat.size, dtype=np.int64)
        opt.sparse_step(
            kernels, p_sparse.reshape(-1), flat, mark, touched, flat.size, states_s, step
        )
        assert not flat.any() and not mark.any()
    np.testing.assert_allclose(p_sparse, p_dense, rtol=1e-5, atol=1e-6)


def test_sgd_step_is_minus_lr_times_gradient() -> None:
    opt = make_optimizer("sgd", 0.5)
    p = np.ones(4, np.float32)
    opt.dense_step(p, np.array([1, 2, 0, -2], np.float32), [], 1)
    assert np.allclose(p, [0.5, 0.0, 1.0, 2.0])


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_lazy_step_leaves_untouched_entries_and_state_alone(name: str) -> None:
    opt = make_optimizer(name, 0.1)
    kernels = get_backend("numpy").kernels
    p = np.ones(10, np.float32)
    states = [np.full(10, 0.3, np.float32) for _ in range(opt.n_states)]
    grad = np.zeros(10, np.float32)
    grad[[2, 7]] = [1.0, -1.0]
    mark = np.zeros(10, np.uint8)
    mark[[2, 7]] = 1
    touched = np.array([2, 7] + [0] * 8, np.int64)
    opt.sparse_step(kernels, p, grad, mark, touched, 2, states, 1)
    others = np.setdiff1d(np.arange(10), [2, 7])
    assert np.all(p[others] == 1.0)
    for s in states:
        assert np.all(s[others] == np.float32(0.3))
    assert p[2] != 1.0 and p[7] != 1.0


def test_adam_first_step_moves_each_entry_by_lr() -> None:
    opt = make_optimizer("adam", 0.01)
    p = np.zeros(3, np.float32)
    states = [np.zeros(3, np.float32), np.zeros(3, np.float32)]
    opt.dense_step(p, np.array([5.0, -0.1, 2.0], np.float32), states, 1)
    np.testing.assert_allclose(p, [-0.01, 0.01, -0.01], rtol=1e-4)


def test_bad_optimizer_arguments() -> None:
    with pytest.raises(UnknownNameError) as info:
        make_optimizer("rmsprop")
    assert "adam" in str(info.value)
    with pytest.raises(ConfigError, match="lr"):
        make_optimizer("sgd", -1.0)
    with pytest.raises(ConfigError):
        make_optimizer("adam", 0.1, beta1=1.0)
    with pytest.raises(UnknownNameError):
        make_optimizer("adam", 0.1, nesterov=True)
    assert make_optimizer("adam").lr == 1e-3 and make_optimizer("sgd").lr == 0.01
