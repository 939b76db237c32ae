"""Tests of lshcore.training.engine: training, accounting, Hogwild workers, bit-for-bit resume."""

from __future__ import annotations

import numpy as np
import pytest

from lshcore.data.datasets import load_digits
from lshcore.errors import InputError
from lshcore.training.engine import Trainer
from lshcore.training.model import Model


@pytest.fixture(scope="module")
def digits():
    return load_digits()


def test_dense_training_learns_digits(digits) -> None:
    model = Model.mlp(64, [64], 10, active=1.0, seed=0)
    trainer = Trainer(model, "adam", 3e-3, batch_size=32, seed=0)
    before, _ = trainer.evaluate(digits.x_test, digits.y_test)
    stats = trainer.fit(digits.x_train, digits.y_train, epochs=5)
    after, _ = trainer.evaluate(digits.x_test, digits.y_test)
    assert before < 0.3 and after > 0.9
    assert stats.losses[-1] < stats.losses[0]
    assert stats.counts.total == stats.mults_dense == model.dense_cost(5 * len(digits.x_train))


def test_hashed_training_beats_chance_and_counts_less(digits) -> None:
    model = Model.mlp(
        64, [256], 10, active=0.1, seed=0, policy="topk", k=3, l=16, rehash="fixed:10"
    )
    trainer = Trainer(model, "adam", 3e-3, batch_size=32, seed=0)
    stats = trainer.fit(digits.x_train, digits.y_train, epochs=4)
    acc, test_counts = trainer.evaluate(digits.x_test, digits.y_test)
    assert acc > 0.6
    c = stats.counts
    assert c.hashing > 0 and c.rehashing > 0 and c.forward > 0 and c.backward > 0
    assert c.total < 0.5 * stats.mults_dense
    assert test_counts.forward < model.dense_cost(len(digits.x_test), training=False)


def test_resume_is_bit_for_bit(digits, tmp_path) -> None:
    def make() -> Trainer:
        model = Model.mlp(
            64,
            [48, 48],
            10,
            active=0.25,
            seed=3,
            policy="topk",
            k=3,
            l=6,
            rehash="fixed:7",
            rebuild="fixed:30",
        )
        return Trainer(model, "adam", 2e-3, batch_size=64, seed=3)

    x, y = digits.x_train[:640], digits.y_train[:640]
    straight = make()
    straight.fit(x, y, epochs=4)
    first = make()
    first.fit(x, y, epochs=2)
    first.save(tmp_path / "half.npz")
    resumed = Trainer.load(tmp_path / "half.npz")
    assert resumed.epoch == 2
    resumed.fit(x, y, epochs=2)
    for a, b in zip(straight.model.layers, resumed.model.layers, strict=True):
        assert np.array_equal(a.weight, b.weight)
        assert np.array_equal(a.bias, b.bias)
        for s, t in zip(a.states_w, b.states_w, strict=True):
            assert np.array_equal(s, t)


def test_hogwild_workers_train_shared_weights(digits) -> None:
    model = Model.mlp(
        64, [128], 10, active=0.25, seed=0, policy="topk", k=3, l=12, rehash="fixed:10"
    )
    trainer = Trainer(model, "adam", 3e-3, batch_size=32, workers=2, seed=0)
    stats = trainer.fit(digits.x_train, digits.y_train, epochs=4)
    acc, _ = trainer.evaluate(digits.x_test, digits.y_test)
    assert acc > 0.6
    assert stats.samples == 4 * len(digits.x_train)
    assert stats.counts.forward > 0
    assert len(trainer._workspaces) == 2


def test_bad_inputs_leave_the_model_untouched(digits) -> None:
    model = Model.mlp(64, [16], 10, active=1.0)
    trainer = Trainer(model, "sgd", 0.1)
    w = model.layers[0].weight.copy()
    with pytest.raises(InputError, match="y"):
        trainer.fit(digits.x_train, digits.y_train[:-1])
    with pytest.raises(InputError, match="y"):
        trainer.fit(digits.x_train[:3], np.array([0, 1, 10]))
    with pytest.raises(InputError, match="x"):
        trainer.fit(digits.x_train[:, :-1], digits.y_train)
    assert np.array_equal(model.layers[0].weight, w) and trainer.epoch == 0
