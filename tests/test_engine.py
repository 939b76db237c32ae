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
    # the paper's measure (forward + backward) is the dense model's formula; the optimizer
    # comes on top: Adam's 8 multiply-adds per parameter per step (64*64+64 + 64*10+10)
    assert stats.counts.paper_total == stats.mults_dense
    steps = 5 * -(-len(digits.x_train) // 32)
    assert stats.counts.optimizer == steps * (64 * 64 + 64 + 64 * 10 + 10) * 8


def test_dense_count_matches_a_hand_tally(digits) -> None:
    # a tiny 4-3-2 network, one batch of 5: counted by hand, not by the formula in code
    model = Model.mlp(4, [3], 2, active=1.0, seed=0)
    trainer = Trainer(model, "sgd", 0.1, batch_size=5, seed=0)
    x = digits.x_train[:5, :4]
    stats = trainer.fit(x, digits.y_train[:5] % 2, epochs=1)
    forward = 5 * (4 * 3 + 3 * 2)  # 90
    backward = 5 * (4 * 3) + 5 * (3 * 2) * 2  # weight grads of both, input grad of layer 2
    assert (stats.counts.forward, stats.counts.backward) == (forward, backward) == (90, 120)
    assert stats.counts.hashing == stats.counts.rehashing == 0
    assert stats.mults_dense == 210 == model.dense_cost(5)
    assert stats.counts.optimizer == 4 * 3 + 3 + 3 * 2 + 2  # one SGD step: 1 per parameter


def test_hashed_training_beats_chance_and_counts_less(digits) -> None:
    model = Model.mlp(
        64, [256], 10, active=0.1, seed=0, policy="topk", k=3, l=16, rehash="fixed:10",
        family="srp", transform="simple_lsh",
    )  # fmt: skip
    trainer = Trainer(model, "adam", 3e-3, batch_size=32, seed=0)
    stats = trainer.fit(digits.x_train, digits.y_train, epochs=4)
    acc, test_counts = trainer.evaluate(digits.x_test, digits.y_test)
    assert acc > 0.8  # measured 0.84 (dense: above 0.9)
    c = stats.counts
    assert c.hashing > 0 and c.rehashing > 0 and c.forward > 0 and c.backward > 0
    assert c.paper_total < 0.2 * stats.mults_dense  # measured 0.16
    assert c.optimizer > 0 and c.selection > 0
    # evaluation is a pure function of the weights, tables and input
    again = [trainer.evaluate(digits.x_test, digits.y_test) for _ in range(3)]
    assert all(a == acc and t.as_dict() == test_counts.as_dict() for a, t in again)
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
    import threading
    import time

    model = Model.mlp(
        64, [128], 10, active=0.25, seed=0, policy="topk", k=3, l=12, rehash="fixed:10",
        family="srp", transform="simple_lsh",
    )  # fmt: skip
    trainer = Trainer(model, "adam", 3e-3, batch_size=32, workers=2, seed=0)
    steps: list[tuple[int, int, bytes, float, float]] = []  # thread, workspaces, batch, times
    real_step = model.train_step

    def recorded(x, labels, wss, counts):  # type: ignore[no-untyped-def]
        start = time.perf_counter()
        loss = real_step(x, labels, wss, counts)
        steps.append((threading.get_ident(), id(wss), x.tobytes(), start, time.perf_counter()))
        return loss

    model.train_step = recorded  # type: ignore[method-assign]
    stats = trainer.fit(digits.x_train, digits.y_train, epochs=4)
    acc, _ = trainer.evaluate(digits.x_test, digits.y_test)
    assert acc > 0.8  # measured 0.86 (dense: above 0.9)
    assert stats.samples == 4 * len(digits.x_train)
    n_batches = 4 * -(-len(digits.x_train) // 32)
    assert len(steps) == n_batches  # every batch trained exactly once, by some worker
    by_worker: dict[int, list[tuple[float, float]]] = {}
    for _, ws, _, start, end in steps:  # a worker = its workspaces (threads are per epoch)
        by_worker.setdefault(ws, []).append((start, end))
    assert len(by_worker) == 2
    assert len({batch for _, _, batch, _, _ in steps}) == n_batches  # no batch taken twice
    assert min(len(v) for v in by_worker.values()) >= n_batches // 5  # both made progress
    a, b = by_worker.values()
    overlap = sum(1 for s0, e0 in a for s1, e1 in b if s0 < e1 and s1 < e0)
    assert overlap > 0  # their steps ran at the same time, not one after the other


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


def _multilabel_problem(n: int = 600, n_in: int = 20, n_out: int = 12, seed: int = 0):
    """Each row's labels are the 1-3 classes whose prototypes it mixes (learnable)."""
    rng = np.random.default_rng(seed)
    protos = rng.standard_normal((n_out, n_in)).astype(np.float32)
    y = np.full((n, 3), -1, np.int64)
    x = np.zeros((n, n_in), np.float32)
    for i in range(n):
        k = int(rng.integers(1, 4))
        labs = rng.choice(n_out, size=k, replace=False)
        y[i, :k] = labs
        x[i] = protos[labs].sum(0) + 0.1 * rng.standard_normal(n_in)
    return x, y


def test_multilabel_training_learns_and_scores_precision_at_1() -> None:
    from lshcore.training.engine import Trainer
    from lshcore.training.model import Model

    x, y = _multilabel_problem()
    model = Model.mlp(20, [64], 12, active=0.25, seed=0)
    trainer = Trainer(model, "adam", 3e-3, batch_size=32, seed=0)
    before, _ = trainer.evaluate(x[500:], y[500:])
    trainer.fit(x[:500], y[:500], epochs=15)
    after, _ = trainer.evaluate(x[500:], y[500:])
    # P@1 counts a hit when the top output is any of the row's labels; chance is ~2/12
    pred = model.predict(x[500:])
    by_hand = np.mean(
        [p in set(row[row >= 0].tolist()) for p, row in zip(pred, y[500:], strict=True)]
    )
    assert after == pytest.approx(by_hand)
    assert after > 0.6 and after > before + 0.3


def test_label_matrix_from_sparse_and_dense_rows() -> None:
    import scipy.sparse as sp

    from lshcore.training.engine import label_matrix

    rows = np.array([[0, 1, 0, 1], [0, 0, 0, 0], [1, 0, 0, 0]], np.float32)
    expected = np.array([[1, 3], [-1, -1], [0, -1]])
    np.testing.assert_array_equal(label_matrix(rows, 4), expected)
    np.testing.assert_array_equal(label_matrix(sp.csr_matrix(rows), 4), expected)
    with pytest.raises(InputError, match="0/1 rows"):
        label_matrix(rows[:, :3], 4)


def test_fit_rejects_labels_out_of_range_or_of_the_wrong_shape() -> None:
    from lshcore.training.engine import Trainer
    from lshcore.training.model import Model

    trainer = Trainer(Model.mlp(4, [8], 3, active=0.5, seed=0), "sgd", 0.1)
    x = np.ones((2, 4), np.float32)
    with pytest.raises(InputError, match=r"\[-1, 3\)"):
        trainer.fit(x, np.array([[0, 3], [1, -1]]))
    with pytest.raises(InputError, match="label matrix"):
        trainer.fit(x, np.zeros((2, 1, 1), np.int64))
    with pytest.raises(InputError, match=r"\[0, 3\)"):
        trainer.fit(x, np.array([0, -1]))
