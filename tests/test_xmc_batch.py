"""Tests of the batch-shared active set, the SparseAdam form of lazy Adam, hashed inference
with exact re-scoring, and the XMC options of ``lshcore train``: each against an
independent computation (direct loops, finite differences, brute-force scoring)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from lshcore.cli import main
from lshcore.data.synth import synth_xmc
from lshcore.errors import ConfigError
from lshcore.registry.catalog import get_backend
from lshcore.training.xmc import XMCConfig, XMCModel, XMCTrainer, labels_padded

BACKENDS = ["numpy", "numba"]


def _kernels(name: str):
    return get_backend(name).kernels


def _tables(k, rng, n_out: int, n_tables: int, n_buckets: int):
    codes = rng.integers(0, n_buckets, (n_out, n_tables)).astype(np.int64)
    offsets, ids = k.xmc_build_tables(codes, n_buckets)
    return codes, offsets, ids


@pytest.mark.parametrize("name", BACKENDS)
def test_batch_set_holds_every_label_once_and_maps_its_columns(name: str) -> None:
    k = _kernels(name)
    rng = np.random.default_rng(0)
    _, offsets, ids = _tables(k, rng, 80, 4, 8)
    q = rng.integers(0, 8, (6, 4)).astype(np.int64)
    labels = labels_padded([[3, 49], [], [7, 3], [0, 1, 2], [79], [49]])
    slot = np.full(80, -1, np.int64)
    cand, labcols = k.xmc_select_batch(q, offsets, ids, labels, 80, 10, 0, 3, True, 5, slot)
    assert (slot == -1).all()
    assert len(set(cand.tolist())) == cand.size == 7 + 10  # 7 distinct labels + m
    assert cand[:7].tolist() == [3, 49, 7, 0, 1, 2, 79]  # order of appearance
    for b in range(6):
        for qq in range(labels.shape[1]):
            if labels[b, qq] >= 0:
                assert cand[labcols[b, qq]] == labels[b, qq]
            else:
                assert labcols[b, qq] == -1
    # without padding the non-label ids all come from the rows' hit buckets, each row's
    # contribution from its first tables; with n_random, that many more uniform ids
    cand, _ = k.xmc_select_batch(q, offsets, ids, labels, 80, 40, 0, 3, False, 5, slot)
    hit = {
        int(ids[t, j])
        for b in range(6)
        for t in range(4)
        for j in range(offsets[t, q[b, t]], offsets[t, q[b, t] + 1])
    }
    assert set(cand[7:].tolist()) <= hit and cand.size <= 7 + 40
    more, _ = k.xmc_select_batch(q, offsets, ids, labels, 80, 40, 5, 3, False, 5, slot)
    assert more.size == cand.size + 5 and more[: cand.size].tolist() == cand.tolist()
    assert (slot == -1).all()


def _direct_loss(h, w2, b2, cand, labels) -> float:
    """Softmax over the shared set for each row, target 1/|Y| (float64, written out)."""
    total = 0.0
    for b in range(h.shape[0]):
        labs = sorted({int(y) for y in labels[b] if y >= 0})
        if not labs:
            continue
        z = np.array([w2[r] @ h[b] + b2[r] for r in cand], np.float64)
        logp = z - z.max() - np.log(np.exp(z - z.max()).sum())
        total -= sum(logp[list(cand).index(y)] for y in labs) / len(labs)
    return total / h.shape[0]


@pytest.mark.parametrize("name", BACKENDS)
def test_batch_output_step_matches_finite_differences(name: str) -> None:
    k = _kernels(name)
    rng = np.random.default_rng(1)
    h = np.maximum(rng.standard_normal((4, 5)), 0).astype(np.float32)
    w2 = rng.standard_normal((12, 5)).astype(np.float32)
    b2 = rng.standard_normal(12).astype(np.float32)
    labels = labels_padded([[2, 7], [], [7], [11, 2, 2]])  # a row without labels, a repeat
    cand = np.array([2, 7, 11, 0, 5, 9], np.int64)
    labcols = np.array([[0, 1, -1], [-1, -1, -1], [1, -1, -1], [2, 0, 0]], np.int64)
    loss, gh, gw, gb = k.xmc_batch_output_step(h, w2, b2, cand, labcols)
    h64, w64, b64 = h.astype(np.float64), w2.astype(np.float64), b2.astype(np.float64)
    assert loss == pytest.approx(_direct_loss(h64, w64, b64, cand, labels), rel=1e-5)
    eps = 1e-6

    def num(arr, idx):
        up, dn = arr.copy(), arr.copy()
        up[idx] += eps
        dn[idx] -= eps
        return up, dn

    for i, r in enumerate(cand):
        for j in range(5):
            up, dn = num(w64, (r, j))
            want = (
                _direct_loss(h64, up, b64, cand, labels) - _direct_loss(h64, dn, b64, cand, labels)
            ) / (2 * eps)
            assert gw[i, j] == pytest.approx(want, abs=1e-5)
        up, dn = num(b64, r)
        want = (
            _direct_loss(h64, w64, up, cand, labels) - _direct_loss(h64, w64, dn, cand, labels)
        ) / (2 * eps)
        assert gb[i] == pytest.approx(want, abs=1e-5)
    for b in range(4):
        for j in range(5):
            up, dn = num(h64, (b, j))
            want = (
                _direct_loss(up, w64, b64, cand, labels) - _direct_loss(dn, w64, b64, cand, labels)
            ) / (2 * eps)
            assert gh[b, j] == pytest.approx(want, abs=1e-5)
    assert np.all(gh[1] == 0)  # no labels: no gradient


@pytest.mark.parametrize("name", BACKENDS)
def test_sparse_adam_leaves_skipped_moments_alone(name: str) -> None:
    k = _kernels(name)
    rng = np.random.default_rng(2)
    param = rng.standard_normal((3, 4)).astype(np.float32)
    m = np.zeros((3, 4), np.float32)
    v = np.zeros((3, 4), np.float32)
    last = np.zeros(3, np.int64)
    g1, g4 = rng.standard_normal((2, 1, 4)).astype(np.float32)
    b1, b2, lr, e = 0.9, 0.999, 0.01, 1e-8
    k.xmc_adam_rows(param, m, v, last, np.array([1]), g1, 1, lr, b1, b2, e, False)
    before = param[1].astype(np.float64).copy()
    k.xmc_adam_rows(param, m, v, last, np.array([1]), g4, 4, lr, b1, b2, e, False)
    # SparseAdam: moments as if steps 2-3 never happened, bias correction at step 4
    m64 = b1 * (1 - b1) * g1[0].astype(np.float64) + (1 - b1) * g4[0]
    v64 = b2 * (1 - b2) * g1[0].astype(np.float64) ** 2 + (1 - b2) * g4[0].astype(np.float64) ** 2
    np.testing.assert_allclose(m[1], m64, rtol=1e-5)
    np.testing.assert_allclose(v[1], v64, rtol=1e-5)
    step = lr * (m64 / (1 - b1**4)) / (np.sqrt(v64 / (1 - b2**4)) + e)
    np.testing.assert_allclose(param[1], before - step, rtol=1e-5, atol=1e-7)
    assert last[1] == 4 and last[0] == 0


@pytest.mark.parametrize("name", BACKENDS)
def test_hashed_inference_scores_the_most_hit_ids_exactly(name: str) -> None:
    k = _kernels(name)
    rng = np.random.default_rng(3)
    n_out, hid = 30, 6
    h = rng.standard_normal((4, hid)).astype(np.float32)
    w2 = rng.standard_normal((n_out, hid)).astype(np.float32)
    b2 = rng.standard_normal(n_out).astype(np.float32)
    full = h @ w2.T + b2
    # one bucket per table: every id is hit by every table -> exact top-k of all ids
    offsets, ids = k.xmc_build_tables(np.zeros((n_out, 3), np.int64), 1)
    q = np.zeros((4, 3), np.int64)
    top, reads, macs = k.xmc_infer_topk(q, offsets, ids, h, w2, b2, np.zeros(0, np.int64), 64, 5)
    np.testing.assert_array_equal(top, np.argsort(-full, axis=1, kind="stable")[:, :5])
    assert reads == 4 * 3 * n_out and macs == 4 * n_out * hid
    # ids 0-9 are hit by 3 tables, 10-19 by 1, 20-29 by none: n_cand=10 scores only 0-9,
    # extra ids are always scored
    codes = np.zeros((n_out, 3), np.int64)
    codes[10:20, 1:] = 1
    codes[20:] = 1
    offsets, ids = k.xmc_build_tables(codes, 2)
    top, _, macs = k.xmc_infer_topk(q, offsets, ids, h, w2, b2, np.zeros(0, np.int64), 10, 3)
    np.testing.assert_array_equal(top, np.argsort(-full[:, :10], axis=1, kind="stable")[:, :3])
    assert macs == 4 * 10 * hid
    extra = np.array([25, 12], np.int64)
    top, _, _ = k.xmc_infer_topk(q, offsets, ids, h, w2, b2, extra, 10, 3)
    pool = np.r_[np.arange(10), extra]
    want = pool[np.argsort(-full[:, pool], axis=1, kind="stable")[:, :3]]
    np.testing.assert_array_equal(np.sort(top, axis=1), np.sort(want, axis=1))
    # multiprobe: column j probes table j // 2; table 1's second probe (code 1) gives ids
    # 10-19 a second hit (ranking them above 20-29); a code repeated in a table is read once
    none = np.zeros(0, np.int64)
    qp = np.zeros((4, 6), np.int64)
    qp[:, 3] = 1
    top, reads, _ = k.xmc_infer_topk(qp, offsets, ids, h, w2, b2, none, 20, 3, 2)
    np.testing.assert_array_equal(top, np.argsort(-full[:, :20], axis=1, kind="stable")[:, :3])
    assert reads == 4 * (20 + 10 + 20 + 10)  # t0: code 0 once; t1: codes 0, 1; t2: 0 once
    # ties at the cut-off go to the earlier touched ids; fewer candidates than k: -1 padded
    top, _, _ = k.xmc_infer_topk(q, offsets, ids, h, w2, b2, np.zeros(0, np.int64), 2, 3)
    assert set(top[:, :2].ravel().tolist()) <= {0, 1} and (top[:, 2] == -1).all()


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    out = tmp_path_factory.mktemp("xmcb") / "tiny.store"
    return synth_xmc(out, 2000, 50, 300, seed=2, labels_per_point=2.0)


def test_batch_sets_train_and_frequent_labels_join_hashed_inference(store) -> None:
    train, test = store.split(0.2, seed=0, save=False)
    cfg = XMCConfig(hidden=32, lr=3e-3, active=8, k=3, l=8, rehash_samples=640)
    assert cfg.active_sets == "batch"
    model = XMCModel(train.dim, train.n_labels, cfg)
    trainer = XMCTrainer(model)
    trainer.fit(lambda e: train.batches(64, seed=0, epoch=e, labels="lists"), 3)
    counts = np.zeros(train.n_labels, np.int64)
    for _, y in train.batches(512, shuffle=False, labels="lists"):
        for v in y:
            counts[v] += 1
    np.testing.assert_array_equal(model.label_counts, 3 * counts)
    top3 = np.sort(np.argsort(-counts, kind="stable")[:3])
    np.testing.assert_array_equal(model.frequent_labels(3), top3)
    full = trainer.evaluate(test.batches(256, shuffle=False, labels="lists"))
    assert full["p_at_1"] > 0.5
    # with room for every id, hashed inference is exact scoring over the ids the query's
    # buckets hit plus the frequent labels (brute force here)
    model.config = XMCConfig(**{**cfg.to_dict(), "infer_candidates": 10_000, "infer_frequent": 3})
    x, _ = next(iter(test.batches(256, shuffle=False, labels="lists")))
    top = model.predict_topk(x, 5, hashed=True)
    h = model.hidden(x)
    _, offsets, ids, qcodes = model.tables.query(h)
    scores = h @ model.w2.T + model.b2
    for b in range(h.shape[0]):
        pool = set(top3.tolist())
        for t in range(qcodes.shape[1]):
            pool |= set(ids[t, offsets[t, qcodes[b, t]] : offsets[t, qcodes[b, t] + 1]].tolist())
        pool_arr = np.array(sorted(pool))
        assert top[b, 0] == pool_arr[np.argmax(scores[b, pool_arr])]


def test_multiprobe_inference_reads_more_buckets(store) -> None:
    train, test = store.split(0.2, seed=0, save=False)
    cfg = XMCConfig(hidden=16, active=8, k=6, l=4, infer_frequent=0, infer_candidates=50)
    model = XMCModel(train.dim, train.n_labels, cfg)
    x, _ = next(iter(test.batches(64, shuffle=False, labels="lists")))
    model.predict_topk(x, 5, hashed=True)
    one = model.last_hashed_work[0]
    model.config = XMCConfig(**{**cfg.to_dict(), "infer_probes": 4})
    model.predict_topk(x, 5, hashed=True)
    assert model.last_hashed_work[0] > one
    _, _, _, codes = model.tables.query(model.hidden(x), probes=4)
    assert codes.shape == (x.shape[0], 16)
    with pytest.raises(ConfigError, match="infer_probes"):
        XMCConfig(infer_probes=0)


def test_bad_xmc_settings_raise() -> None:
    with pytest.raises(ConfigError, match="active_sets"):
        XMCConfig(active_sets="tokens")
    with pytest.raises(ConfigError, match="random_negatives"):
        XMCConfig(random_negatives=-1)
    with pytest.raises(ConfigError, match="infer_candidates"):
        XMCConfig(infer_candidates=0)
    with pytest.raises(ConfigError, match="active"):
        XMCConfig(active_sets="sample", active=0)
    XMCConfig(active=0)  # batch sets: labels (and random negatives) only


def test_cli_xmc_options_reach_the_config(store, tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    args = ["train", "--dataset", "xmc", "--data", str(store.path), "--epochs", "1"]
    args += ["--hidden", "16", "--l", "4", "--k", "4", "--no-progress", "--json", str(out)]
    args += ["--active-sets", "sample", "--shared-labels", "7", "--bucket-size", "9"]
    args += ["--no-pad", "--adam-catch-up", "--infer-candidates", "33", "--infer-frequent", "4"]
    args += ["--random-negatives", "3", "--infer-probes", "2"]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    c = json.loads(out.read_text())["config"]
    assert (c["active_sets"], c["shared_labels"], c["bucket_size"]) == ("sample", 7, 9)
    assert (c["pad"], c["adam_catch_up"], c["random_negatives"]) == (False, True, 3)
    assert (c["infer_candidates"], c["infer_frequent"], c["infer_probes"]) == (33, 4, 2)
    rec = json.loads(out.read_text())
    assert rec["hashed_output_macs_per_sample"] <= (33 + 4) * 16
    assert rec["output_macs_per_sample"] == store.n_labels * 16


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--shared-labels", "-1"], "--shared-labels"),
        (["--active-sets", "tokens"], "--active-sets"),
        (["--infer-candidates", "0"], "--infer-candidates"),
    ],
)
def test_cli_rejects_bad_xmc_options(store, extra: list[str], message: str) -> None:
    res = CliRunner().invoke(
        main, ["train", "--dataset", "xmc", "--data", str(store.path), "--no-progress", *extra]
    )
    assert res.exit_code != 0 and message in res.output


def test_cli_xmc_options_belong_to_xmc() -> None:
    res = CliRunner().invoke(main, ["train", "--dataset", "digits", "--shared-labels", "8"])
    assert res.exit_code != 0 and "--shared-labels: apply to --dataset xmc only" in res.output


@pytest.mark.parametrize("name", BACKENDS)
def test_topk_rows_is_a_stable_sort_prefix(name: str) -> None:
    k = _kernels(name)
    rng = np.random.default_rng(5)
    scores = rng.integers(0, 6, (40, 30)).astype(np.float32)  # many ties
    got = k.xmc_topk_rows(scores, 5)
    for b in range(40):
        want = sorted(range(30), key=lambda j: (-scores[b, j], j))[:5]
        assert got[b].tolist() == want
    assert k.xmc_topk_rows(scores[:, :3], 5).shape == (40, 3)
