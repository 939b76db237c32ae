"""Tests of XMC training: the kernels' gradients and lazy Adam against independent
computations, P@k, a tiny end-to-end run, ``lshcore train --dataset xmc`` and its errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from lshcore.cli import main
from lshcore.data.synth import synth_xmc
from lshcore.errors import ConfigError, InputError
from lshcore.registry.catalog import get_backend
from lshcore.training.xmc import (
    XMCConfig,
    XMCModel,
    XMCTrainer,
    labels_padded,
    precision_at_k,
)

BACKENDS = ["numpy", "numba"]


def _kernels(name: str):
    backend = get_backend(name)
    if not backend.available():  # pragma: no cover - numba is a dependency
        pytest.skip(f"{name} unavailable")
    return backend.kernels


def _tiny(seed: int = 0):
    rng = np.random.default_rng(seed)
    batch, hid, n_out, m = 3, 4, 9, 5
    h = np.maximum(rng.standard_normal((batch, hid)), 0).astype(np.float32)
    w2 = rng.standard_normal((n_out, hid)).astype(np.float32)
    b2 = rng.standard_normal(n_out).astype(np.float32)
    act = np.array([[0, 2, 5, 7, 8], [1, 2, 3, -1, -1], [8, 6, 4, 2, 0]], np.int64)
    labels = np.array([[5, 7], [3, -1], [4, 0]], np.int64)
    return h, w2, b2, act, labels, m


def _loss(h, w2, b2, act, labels) -> float:
    """The loss written out directly (float64): softmax over each row's active set."""
    total = 0.0
    for b in range(act.shape[0]):
        ids = [int(r) for r in act[b] if r >= 0]
        z = np.array([w2[r] @ h[b] + b2[r] for r in ids], np.float64)
        logp = z - np.log(np.exp(z - z.max()).sum()) - z.max()
        labs = [int(y) for y in labels[b] if y >= 0]
        total -= sum(logp[ids.index(y)] for y in labs) / len(labs)
    return total / act.shape[0]


@pytest.mark.parametrize("name", BACKENDS)
def test_hashed_output_gradient_equals_softmax_over_the_active_set(name: str) -> None:
    k = _kernels(name)
    h, w2, b2, act, labels, _ = _tiny()
    logits = k.xmc_output_forward(h, w2, b2, act)
    slot = np.full(w2.shape[0], -1, np.int64)
    loss, grad_h, rows, grad_w, grad_b = k.xmc_output_backward(h, w2, act, logits, labels, slot)
    assert (slot == -1).all()
    assert loss == pytest.approx(_loss(h, w2, b2, act, labels), rel=1e-5)
    # central differences of the directly written loss, in float64
    h64, w64, b64 = h.astype(np.float64), w2.astype(np.float64), b2.astype(np.float64)
    eps = 1e-6

    def num_grad(arr, *idx):
        old = arr[idx]
        arr[idx] = old + eps
        up = _loss(h64, w64, b64, act, labels)
        arr[idx] = old - eps
        down = _loss(h64, w64, b64, act, labels)
        arr[idx] = old
        return (up - down) / (2 * eps)

    assert sorted(rows.tolist()) == sorted(set(act[act >= 0].tolist()))
    for t, r in enumerate(rows):
        for c in range(w2.shape[1]):
            assert grad_w[t, c] == pytest.approx(num_grad(w64, r, c), abs=2e-5)
        assert grad_b[t] == pytest.approx(num_grad(b64, r), abs=2e-5)
    for b in range(h.shape[0]):
        for c in range(h.shape[1]):
            assert grad_h[b, c] == pytest.approx(num_grad(h64, b, c), abs=2e-5)
    # rows never active get no gradient at all: they are not listed
    assert 9 not in rows and set(rows.tolist()) <= set(range(9))


@pytest.mark.parametrize("name", BACKENDS)
def test_sparse_hidden_layer_matches_the_dense_product(name: str) -> None:
    import scipy.sparse as sp

    k = _kernels(name)
    rng = np.random.default_rng(1)
    dense = rng.uniform(0, 1, (4, 30)).astype(np.float32)
    dense[rng.random((4, 30)) < 0.8] = 0
    x = sp.csr_matrix(dense)
    w1 = rng.standard_normal((30, 6)).astype(np.float32)
    b1 = rng.standard_normal(6).astype(np.float32)
    args = (x.indptr.astype(np.int64), x.indices.astype(np.int64), x.data)
    h = k.xmc_hidden_forward(*args, w1, b1)
    np.testing.assert_allclose(h, np.maximum(dense @ w1 + b1, 0), rtol=1e-5, atol=1e-6)
    grad_h = rng.standard_normal(h.shape).astype(np.float32)
    rows, gw, gb = k.xmc_hidden_backward(*args, h, grad_h, np.full(30, -1, np.int64))
    dz = grad_h * (h > 0)
    want = dense.T @ dz  # (30, 6): zero rows for absent features
    assert set(rows.tolist()) == set(np.flatnonzero(dense.any(axis=0)).tolist())
    np.testing.assert_allclose(gw, want[rows], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(gb, dz.sum(axis=0), rtol=1e-5, atol=1e-6)


def _dense_adam(p, m, v, g, t, lr, b1, b2, eps):
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    p = p - lr * (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps)
    return p, m, v


@pytest.mark.parametrize("name", BACKENDS)
def test_lazy_adam_touches_only_rows_with_gradient_and_matches_dense_adam(name: str) -> None:
    k = _kernels(name)
    rng = np.random.default_rng(2)
    param = rng.standard_normal((6, 3)).astype(np.float32)
    m = np.zeros_like(param)
    v = np.zeros_like(param)
    last = np.zeros(6, np.int64)
    p64, m64, v64 = param.astype(np.float64), m.astype(np.float64), v.astype(np.float64)
    lr, b1, b2, eps = 0.01, 0.9, 0.999, 1e-8
    # step 1: rows 1 and 4 get gradient; the dense reference gets zeros elsewhere
    g = np.zeros((6, 3))
    g[[1, 4]] = rng.standard_normal((2, 3))
    before = param.copy()
    k.xmc_adam_rows(
        param, m, v, last, np.array([1, 4]), g[[1, 4]].astype(np.float32), 1, lr, b1, b2, eps
    )
    p64, m64, v64 = _dense_adam(p64, m64, v64, g, 1, lr, b1, b2, eps)
    untouched = [0, 2, 3, 5]
    np.testing.assert_array_equal(param[untouched], before[untouched])
    assert (m[untouched] == 0).all() and (v[untouched] == 0).all()
    np.testing.assert_allclose(param[[1, 4]], p64[[1, 4]], rtol=1e-6)
    assert last.tolist() == [0, 1, 0, 0, 1, 0]
    # steps 2-4: row 1 skips steps 2 and 3, then gets gradient at step 4: its moments
    # must be dense Adam's (decayed through the zero-gradient steps)
    for t in (2, 3):
        p64, m64, v64 = _dense_adam(p64, m64, v64, np.zeros((6, 3)), t, lr, b1, b2, eps)
    g4 = np.zeros((6, 3))
    g4[1] = rng.standard_normal(3)
    p_before = param[1].astype(np.float64)
    k.xmc_adam_rows(
        param, m, v, last, np.array([1]), g4[[1]].astype(np.float32), 4, lr, b1, b2, eps
    )
    p64, m64, v64 = _dense_adam(p64, m64, v64, g4, 4, lr, b1, b2, eps)
    np.testing.assert_allclose(m[1], m64[1], rtol=1e-5)
    np.testing.assert_allclose(v[1], v64[1], rtol=1e-5)
    # the step itself is dense Adam's step 4 from the same moments (lazy: the drift of
    # the skipped steps 2-3 is not applied)
    mh, vh = m64[1] / (1 - b1**4), v64[1] / (1 - b2**4)
    np.testing.assert_allclose(param[1], p_before - lr * mh / (np.sqrt(vh) + eps), rtol=1e-5)
    assert last[1] == 4 and last[4] == 1


@pytest.mark.parametrize("name", BACKENDS)
def test_selection_keeps_labels_and_never_repeats(name: str) -> None:
    k = _kernels(name)
    rng = np.random.default_rng(3)
    codes = rng.integers(0, 8, (50, 4)).astype(np.int64)
    offsets, ids = k.xmc_build_tables(codes, 8)
    for t in range(4):  # every row sits in its own bucket of every table
        for r in range(50):
            c = codes[r, t]
            assert r in ids[t, offsets[t, c] : offsets[t, c + 1]]
    q = rng.integers(0, 8, (6, 4)).astype(np.int64)
    labels = labels_padded([[3, 49], [], [7], [0, 1, 2], [], [10]])
    act = k.xmc_select(q, offsets, ids, labels, 50, 12, 3, True, 5)
    for b in range(6):
        row = act[b][act[b] >= 0]
        assert len(set(row.tolist())) == row.size == 12
        assert set(labels[b][labels[b] >= 0].tolist()) <= set(row.tolist())
    # without padding, only labels and bucket members (at most 3 per table)
    act = k.xmc_select(q, offsets, ids, labels, 50, 49, 3, False, 5)
    for b in range(6):
        members = {
            int(ids[t, j])
            for t in range(4)
            for j in range(offsets[t, q[b, t]], offsets[t, q[b, t] + 1])
        }
        row = set(act[b][act[b] >= 0].tolist()) - set(labels[b].tolist())
        assert row <= members and len(row) <= 3 * 4


@pytest.mark.parametrize("name", BACKENDS)
def test_shared_labels_put_the_batch_labels_in_every_active_set(name: str) -> None:
    k = _kernels(name)
    rng = np.random.default_rng(4)
    codes = rng.integers(0, 8, (60, 4)).astype(np.int64)
    offsets, ids = k.xmc_build_tables(codes, 8)
    q = rng.integers(0, 8, (5, 4)).astype(np.int64)
    labels = labels_padded([[3, 49], [], [7, 3], [0, 1, 2], [59]])
    union = [3, 49, 7, 0, 1, 2, 59]
    for shared, pad in ((100, True), (100, False), (4, True)):
        act = k.xmc_select(q, offsets, ids, labels, 60, 10, 3, pad, 5, shared)
        want = union[:shared]
        assert act.shape[1] == 10 + len(want)
        for b in range(5):
            row = act[b][act[b] >= 0].tolist()
            own = [int(y) for y in labels[b] if y >= 0]
            assert len(set(row)) == len(row)
            assert set(own) | set(want) <= set(row)
            lacked = len(set(want) - set(own))
            assert row[: len(own)] == own  # own labels first, then the shared ones
            if pad:  # the hashed/padded part keeps its size: m beyond the labels' share
                assert len(row) == max(10, len(own)) + lacked
    # off (the default): the batch's other labels are not added
    act = k.xmc_select(q, offsets, ids, labels, 60, 10, 3, False, 5)
    assert act.shape[1] == 10
    np.testing.assert_array_equal(
        act, k.xmc_select(q, offsets, ids, labels, 60, 10, 3, False, 5, 0)
    )


def test_trainer_with_shared_labels_trains_and_scores_the_same_way(tiny_store) -> None:
    train, test = tiny_store.split(0.2, seed=0, save=False)
    cfg = XMCConfig(hidden=16, active=8, l=4, k=3, shared_labels=64, rehash_samples=256)
    model = XMCModel(train.dim, train.n_labels, cfg)
    x, y = next(iter(train.batches(32, seed=0, epoch=0, labels="lists")))
    h = model.hidden(x)
    act = model.tables.select(h, labels_padded(y), 8, pad=True, seed=1, shared=64)
    batch_labels = set(np.concatenate(y).tolist())
    for b in range(act.shape[0]):
        assert len(batch_labels) <= 64 and batch_labels <= set(act[b].tolist())
    trainer = XMCTrainer(model)
    trainer.fit(lambda e: train.batches(32, seed=0, epoch=e, labels="lists"), epochs=2)
    got = trainer.evaluate(test.batches(64, shuffle=False, labels="lists"))
    assert got["samples"] == len(test)
    assert got["p_at_1"] > _popularity_p1(train, test) + 0.1
    with pytest.raises(ConfigError):
        XMCConfig(shared_labels=-1)


def test_precision_at_k_on_a_hand_computed_example() -> None:
    top = np.array([[4, 2, 9, 1, 0], [7, 8, 3, 5, 6], [1, 2, 3, 4, 5]])
    labels = [np.array([2, 4, 0]), np.array([5]), np.array([], np.int64)]
    sums = precision_at_k(top, labels, (1, 3, 5))
    # row 0: top1 {4} hit 1; top3 {4,2,9} 2 hits; top5 3 hits. row 1: 0, 0, 1. row 2: 0.
    assert sums[1] == pytest.approx(1.0)
    assert sums[3] == pytest.approx(2 / 3)
    assert sums[5] == pytest.approx(3 / 5 + 1 / 5)


@pytest.fixture(scope="module")
def tiny_store(tmp_path_factory):
    out = tmp_path_factory.mktemp("xmc") / "tiny.store"
    return synth_xmc(out, 3000, 60, 400, seed=1, labels_per_point=2.0)


def _popularity_p1(train, test) -> float:
    counts = np.zeros(train.n_labels)
    for _, y in train.batches(512, shuffle=False, labels="lists"):
        for v in y:
            counts[v] += 1
    best = int(counts.argmax())
    hits = n = 0
    for _, y in test.batches(512, shuffle=False, labels="lists"):
        hits += sum(best in v for v in y)
        n += len(y)
    return hits / n


@pytest.mark.parametrize("workers", [1, 2])
def test_a_tiny_run_on_synthetic_data_learns(tiny_store, workers: int) -> None:
    train, test = tiny_store.split(0.2, seed=0, save=False)
    cfg = XMCConfig(
        hidden=32, lr=3e-3, active=16, family="srp", k=3, l=8, workers=workers, rehash_samples=640
    )
    model = XMCModel(train.dim, train.n_labels, cfg)
    trainer = XMCTrainer(model)
    res = trainer.fit(lambda e: train.batches(64, seed=0, epoch=e, labels="lists"), 4)
    assert res.samples == 4 * len(train) and len(res.epoch_seconds) == 4
    assert model.tables.rehashes > 0
    full = trainer.evaluate(test.batches(256, shuffle=False, labels="lists"))
    pop = _popularity_p1(train, test)
    assert full["p_at_1"] > pop + 0.3, (full, pop)
    hashed = trainer.evaluate(test.batches(256, shuffle=False, labels="lists"), hashed=True)
    assert hashed["p_at_1"] > pop + 0.2, (hashed, pop)


def test_cli_trains_on_a_store_and_writes_the_json_fields(tiny_store, tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    plot = tmp_path / "r.png"
    args = ["train", "--dataset", "xmc", "--data", str(tiny_store.path), "--epochs", "2"]
    args += ["--hidden", "16", "--l", "4", "--k", "4", "--active", "0.3", "--no-progress"]
    res = CliRunner().invoke(main, [*args, "--json", str(out), "--plot", str(plot)])
    assert res.exit_code == 0, res.output
    assert "P@1" in res.output and "hashed" in res.output
    rec = json.loads(out.read_text())
    for key in ("p_at_1", "p_at_3", "p_at_5", "epoch_seconds", "samples_per_second", "peak_rss_mb"):
        assert isinstance(rec[key], float), key
    assert all(0.0 <= rec[f"p_at_{k}"] <= 1.0 for k in (1, 3, 5))
    assert rec["p_at_1"] > 0.2 and rec["peak_rss_mb"] > 0 and rec["samples_per_second"] > 0
    assert rec["config"]["hidden"] == 16 and rec["config"]["active"] == 18
    assert rec["n_train"] == 2400 and rec["n_test"] == 600 and rec["epochs"] == 2
    assert plot.stat().st_size > 0


def test_cli_reads_a_text_file_with_a_separate_test_file(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for name, n in (("train.txt", 200), ("test.txt", 50)):
        lines = [f"{n} 30 5"]
        for _ in range(n):
            y = rng.integers(0, 5)
            lines.append(f"{y} {y}:1 {5 + rng.integers(0, 25)}:0.5")
        (tmp_path / name).write_text("\n".join(lines) + "\n")
    args = ["train", "--dataset", "xmc", "--data", str(tmp_path / "train.txt")]
    args += ["--test-data", str(tmp_path / "test.txt"), "--hidden", "8", "--epochs", "3"]
    args += ["--lr", "0.01", "--json", str(tmp_path / "r.json"), "--no-progress"]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    rec = json.loads((tmp_path / "r.json").read_text())
    assert rec["n_train"] == 200 and rec["n_test"] == 50 and rec["split"] == "separate test file"
    assert rec["p_at_1"] > 0.6  # feature y is the label


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ([], "--dataset xmc needs --data"),
        (["--data", "/nonexistent/x.txt"], "no such file or store"),
        (["--data", "BAD"], "line 3"),
        (["--data", "GOOD", "--test-data", "OTHER"], "--test-data has 9 features"),
        (["--data", "GOOD", "--test-data", "GOOD", "--hidden", "8,8"], "one hidden layer"),
        (["--data", "GOOD", "--test-data", "GOOD", "--rehash", "exp:3:2"], "fixed:P"),
        (["--data", "GOOD"], "leaves an empty train or test set"),
    ],
)
def test_bad_inputs_give_clear_errors(tmp_path: Path, extra: list[str], message: str) -> None:
    (tmp_path / "good.txt").write_text("2 5 3\n0 1:1\n1,2 2:0.5 4:1\n")
    (tmp_path / "other.txt").write_text("1 9 3\n0 1:1\n")
    (tmp_path / "bad.txt").write_text("2 5 3\n0 1:1\n1 7:1\n")
    names = {"GOOD": "good.txt", "BAD": "bad.txt", "OTHER": "other.txt"}
    extra = [str(tmp_path / names[a]) if a in names else a for a in extra]
    res = CliRunner().invoke(main, ["train", "--dataset", "xmc", "--no-progress", *extra])
    assert res.exit_code != 0
    assert message in res.output, res.output


def test_data_options_belong_to_xmc() -> None:
    res = CliRunner().invoke(main, ["train", "--dataset", "digits", "--data", "x"])
    assert res.exit_code != 0 and "--dataset xmc only" in res.output


def test_bad_settings_and_labels_raise() -> None:
    with pytest.raises(ConfigError, match="lr"):
        XMCConfig(lr=0)
    with pytest.raises(ConfigError, match="active"):
        XMCConfig(active=-1)
    with pytest.raises(ConfigError, match="buckets"):
        XMCModel(10, 20, XMCConfig(family="dwta", k=12, bin_size=8, hidden=4))
    import scipy.sparse as sp

    model = XMCModel(10, 20, XMCConfig(hidden=4, k=3, l=2, active=5))
    x = sp.csr_matrix(np.eye(2, 10, dtype=np.float32))
    with pytest.raises(InputError, match=r"\[0, 20\)"):
        XMCTrainer(model).train_batch(x, [np.array([3]), np.array([20])])
    with pytest.raises(InputError, match="features"):
        model.hidden(sp.csr_matrix(np.eye(2, 11, dtype=np.float32)))


def test_importing_the_xmc_modules_imports_no_numba() -> None:
    code = (
        "import sys, lshcore, lshcore.training.xmc, lshcore.cli.train_xmc;"
        "print('numba' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
