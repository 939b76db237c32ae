"""Tests of lshcore.training.selector (active-set selection) and lshcore.training.schedule."""

from __future__ import annotations

import numpy as np
import pytest

from lshcore.errors import ConfigError, InputError, NotFittedError, UnknownNameError
from lshcore.training.schedule import Schedule, parse_schedule
from lshcore.training.selector import POLICIES, ActiveSelector, SparseBatch

N_IN, N_OUT = 24, 200


def _params(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((N_OUT, N_IN)).astype(np.float32)
    b = (0.1 * rng.standard_normal(N_OUT)).astype(np.float32)
    return w, b


def _inputs(batch: int = 16, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.random((batch, N_IN)).astype(np.float32)
    x[x < 0.4] = 0
    return x


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_every_policy_returns_sorted_unique_padded_ids(policy: str, backend: str) -> None:
    w, b = _params()
    sel = ActiveSelector(
        N_IN, N_OUT, active=0.1, policy=policy, family="srp", transform="simple_lsh", k=4, l=8,
        backend=backend,
    ).fit(w, b)  # fmt: skip
    act = sel.select(_inputs())
    ids = act.ids
    assert ids.dtype == np.int64 and ids.shape[0] == 16
    expected_m = 80 if policy in ("batch_union", "batch_rerank") else 20
    assert act.m == expected_m
    for row in ids:
        real = row[row >= 0]
        assert np.all(real < N_OUT)
        assert np.all(np.diff(real) > 0)  # ascending, unique
        assert np.all(row[len(real) :] == -1)  # padding last
        if policy != "threshold":
            assert len(real) == act.m
    if policy in ("batch_union", "batch_rerank"):
        assert act.shared and np.all(ids == ids[0])
    if policy in ("topk", "union", "threshold", "batch_union", "batch_rerank", "rerank"):
        assert act.hash_mults > 0 and act.work > 0
    if policy == "random":
        assert act.hash_mults == 0


def test_unknown_policy_lists_the_names() -> None:
    with pytest.raises(UnknownNameError) as info:
        ActiveSelector(N_IN, N_OUT, policy="bogus")
    for name in POLICIES:
        assert name in str(info.value)


def test_bad_parameters_raise_config_errors() -> None:
    with pytest.raises(ConfigError, match="active"):
        ActiveSelector(N_IN, N_OUT, active=1.5)
    with pytest.raises(ConfigError, match="active"):
        ActiveSelector(N_IN, N_OUT, active=0.0)
    with pytest.raises(ConfigError, match="rehash"):
        ActiveSelector(N_IN, N_OUT, rehash="sometimes")
    with pytest.raises(UnknownNameError):
        ActiveSelector(N_IN, N_OUT, family="nope")


def test_select_before_fit_and_bad_input() -> None:
    sel = ActiveSelector(N_IN, N_OUT)
    with pytest.raises(NotFittedError):
        sel.select(_inputs())
    w, b = _params()
    sel.fit(w, b)
    calls = sel.calls
    with pytest.raises(InputError, match="x"):
        sel.select(np.zeros((3, N_IN + 1), np.float32))
    with pytest.raises(InputError, match="x"):
        sel.select(np.full((3, N_IN), np.nan, np.float32))
    with pytest.raises(InputError, match="labels"):
        sel.select(_inputs(), labels=np.full(16, N_OUT), training=True)
    assert sel.calls == calls  # failed calls leave the state unchanged
    with pytest.raises(InputError, match="weight"):
        ActiveSelector(N_IN, N_OUT).fit(w[:, :-1], b)


@pytest.mark.parametrize("policy", POLICIES)
def test_labels_forced_in_training_only(policy: str) -> None:
    w, b = _params()
    sel = ActiveSelector(N_IN, N_OUT, active=0.05, policy=policy, k=4, l=8).fit(w, b)
    x = _inputs()
    labels = [np.array([i, 199 - i]) for i in range(16)]
    act = sel.select(x, labels=labels, training=True)
    for i, row in enumerate(act.ids):
        assert i in row and 199 - i in row
    plain = sel.select(x, labels=labels, training=False)
    forced = sum(i in row for i, row in enumerate(plain.ids))
    assert forced < 16  # not all labels would appear by chance


def test_exact_is_the_true_top_m() -> None:
    w, b = _params()
    x = _inputs()
    act = ActiveSelector(N_IN, N_OUT, active=0.1, policy="exact").fit(w, b).select(x)
    z = x @ w.T + b
    truth = np.sort(np.argsort(-z, axis=1)[:, :20], axis=1)
    assert np.array_equal(act.ids, truth)
    assert act.hash_mults == int(np.count_nonzero(x)) * N_OUT


def _mips_problem(seed: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows of unequal norms and queries drawn independently of them (not near-copies):
    the largest inner products are not the nearest neighbours."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((N_OUT, N_IN)).astype(np.float32)
    w *= rng.uniform(0.2, 2.0, (N_OUT, 1)).astype(np.float32)
    b = (0.1 * rng.standard_normal(N_OUT)).astype(np.float32)
    x = rng.standard_normal((256, N_IN)).astype(np.float32)
    return w, b, x


def test_lsh_policies_find_the_largest_inner_products_better_than_chance() -> None:
    w, b, x = _mips_problem()
    m = 10  # active=0.05 of 200
    truth = np.argsort(-(x @ w.T + b), axis=1)[:, :m]  # exact maximum-inner-product top-m
    recall = {}
    for policy in ("topk", "rerank", "random"):
        sel = ActiveSelector(
            N_IN, N_OUT, active=0.05, policy=policy, family="srp", transform="simple_lsh",
            k=4, l=32, seed=1,
        ).fit(w, b)  # fmt: skip
        ids = sel.select(x).ids
        recall[policy] = np.mean(
            [len(set(t) & set(r[r >= 0])) / m for t, r in zip(truth, ids, strict=True)]
        )
    assert recall["random"] < 0.1  # chance: m / n_out = 0.05
    assert recall["topk"] >= 0.25 and recall["topk"] >= 4 * recall["random"]
    assert recall["rerank"] >= 0.5 and recall["rerank"] > recall["topk"] + 0.2


@pytest.mark.parametrize("policy", POLICIES)
def test_numba_selects_exactly_like_the_numpy_reference(policy: str) -> None:
    pytest.importorskip("numba")
    w, b = _params()
    x = _inputs()
    labels = np.arange(16) * 7 % N_OUT
    outs = {}
    for backend in ("numpy", "numba"):
        sel = ActiveSelector(
            N_IN, N_OUT, active=0.1, policy=policy, k=4, l=8, seed=5, backend=backend
        ).fit(w, b)
        outs[backend] = [
            sel.select(x, labels=labels, training=True).ids,
            sel.select(x, labels=labels, training=True).ids,
            sel.select(x).ids,
        ]
    for ref, fast in zip(outs["numpy"], outs["numba"], strict=True):
        assert np.array_equal(ref, fast)
    if policy in ("topk", "union", "random"):  # ties and padding are drawn afresh per batch
        assert not np.array_equal(outs["numpy"][0], outs["numpy"][1])


@pytest.mark.parametrize("policy", POLICIES)
def test_inference_is_a_pure_function_of_the_input(policy: str) -> None:
    w, b = _params()
    x = _inputs()
    sel = ActiveSelector(N_IN, N_OUT, active=0.1, policy=policy, k=4, l=8, seed=5).fit(w, b)
    first = sel.select(x).ids
    sel.select(x, labels=np.zeros(16, np.int64), training=True)  # training calls in between
    calls = sel.calls
    assert np.array_equal(sel.select(x).ids, first)
    assert np.array_equal(sel.select(x).ids, first)
    assert sel.calls == calls  # inference does not advance the training counter
    twin = ActiveSelector(N_IN, N_OUT, active=0.1, policy=policy, k=4, l=8, seed=5).fit(w, b)
    assert np.array_equal(twin.select(x).ids, first)  # a fresh selector agrees


def test_training_tiebreak_seeds_are_distinct_across_threads() -> None:
    import threading
    import time

    class SlowInt(int):
        """A counter whose arithmetic yields the GIL: widens any read-modify-write race
        on ``selector.calls`` from a few bytecodes to a thread switch."""

        def __add__(self, other: object) -> SlowInt:
            time.sleep(0)
            return SlowInt(int(self) + int(other))  # type: ignore[call-overload]

        __radd__ = __add__

    w, b = _params()
    x = _inputs(batch=2)
    sel = ActiveSelector(N_IN, N_OUT, active=0.1, policy="random").fit(w, b)
    sel.calls = SlowInt(0)
    seeds: list[int] = []
    kernels = sel._kernels

    class Recording:  # the real kernels, recording the seed of every selection
        def __getattr__(self, name: str) -> object:
            return getattr(kernels, name)

        def select_active(self, *args: object) -> np.ndarray:
            seeds.append(int(args[9]))  # type: ignore[call-overload]
            return kernels.select_active(*args)

    sel._kernels = Recording()
    n_threads, per_thread = 4, 50
    barrier = threading.Barrier(n_threads)

    def work() -> None:
        barrier.wait()
        for _ in range(per_thread):
            sel.select(x, training=True)

    threads = [threading.Thread(target=work) for _ in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(seeds) == n_threads * per_thread
    assert len(set(seeds)) == len(seeds)  # no two batches share a tie-break seed
    assert sel.calls == n_threads * per_thread


def test_sparse_input_forms_agree_with_dense() -> None:
    w, b = _params()
    x = _inputs()
    nz = [np.flatnonzero(r) for r in x]
    width = max(len(r) for r in nz)
    ids = np.full((16, width), -1, np.int64)
    vals = np.zeros((16, width), np.float32)
    for i, r in enumerate(nz):
        ids[i, : len(r)] = r
        vals[i, : len(r)] = x[i, r]
    import scipy.sparse as sp

    results = []
    for form in (x, SparseBatch(ids, vals, N_IN), (ids, vals), sp.csr_matrix(x)):
        sel = ActiveSelector(N_IN, N_OUT, active=0.1, policy="topk", k=4, l=8).fit(w, b)
        results.append(sel.select(form).ids)
    for r in results[1:]:
        assert np.array_equal(results[0], r)


def test_rehash_follows_the_schedule_and_counts_multiplications() -> None:
    w, b = _params()
    sel = ActiveSelector(
        N_IN, N_OUT, policy="topk", family="srp", transform="simple_lsh", k=4, l=8,
        rehash="fixed:3",
    ).fit(w, b)  # fmt: skip
    before = sel.state()[1]["codes"].copy()
    w2 = w.copy()
    w2[:10] *= -1  # flips the sign of every projection of these rows
    assert sel.after_update(w2, b, np.arange(10)) == 0
    assert sel.after_update(w2, b, np.arange(10)) == 0
    cost = sel.after_update(w2, b, np.arange(10))
    assert cost > 0 and sel.rehashes == 1
    after = sel.state()[1]["codes"]
    assert np.any(after[:10] != before[:10])
    assert np.array_equal(after[10:], before[10:])


def test_rebuild_draws_new_functions() -> None:
    w, b = _params()
    sel = ActiveSelector(
        N_IN, N_OUT, policy="topk", family="srp", transform="simple_lsh", k=4, l=8,
        rehash="never", rebuild="fixed:2",
    ).fit(w, b)  # fmt: skip
    before = sel.state()[1]["codes"].copy()
    sel.after_update(w, b, [])
    assert sel.rebuilds == 0
    assert sel.after_update(w, b, []) > 0
    assert sel.rebuilds == 1
    assert not np.array_equal(before, sel.state()[1]["codes"])


def test_change_triggered_rehash_waits_for_changed_codes() -> None:
    w, b = _params()
    sel = ActiveSelector(N_IN, N_OUT, policy="topk", k=4, l=8, rehash="changed:0.2:1").fit(w, b)
    sel.after_update(w, b, np.arange(50))  # nothing changed: checked, not rehashed
    assert sel.rehashes == 0 and sel.changed_share == 0.0
    w2 = w.copy()
    w2[:50] = -w2[:50]
    sel.after_update(w2, b, np.arange(50))
    assert sel.rehashes == 1 and sel.changed_share is not None and sel.changed_share > 0.2


def test_schedules() -> None:
    exp = parse_schedule("exp:10:2")
    fired = [s for s in range(1, 100) if exp.due(s) and (exp.fired(s) or True)]
    assert fired == [10, 30, 70]
    fixed = parse_schedule("fixed:5")
    assert [s for s in range(1, 16) if fixed.due(s) and (fixed.fired(s) or True)] == [5, 10, 15]
    never = parse_schedule("never")
    assert not any(never.due(s) for s in range(1000))
    restored = Schedule.from_state(exp.state())
    assert restored.next_step == exp.next_step and restored.interval == exp.interval
    for bad in ("fixed", "fixed:0", "exp:a", "changed:2:1", 5):
        with pytest.raises(ConfigError):
            parse_schedule(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("family, transform, k", [("srp", "simple_lsh", 4), ("dwta", "none", 1)])
@pytest.mark.parametrize("policy", ["topk", "union", "threshold", "batch_union", "rerank"])
def test_lshindex_tables_select_like_the_sorted_tables(
    family: str, transform: str, k: int, policy: str
) -> None:
    w, b, x = _mips_problem()
    opts = dict(
        active=0.05,
        policy=policy,
        family=family,
        k=k,
        l=32,
        seed=1,
        transform=transform,
        rehash="fixed:1",
        bucket_size=N_OUT,  # buckets never overflow: the index holds what the tables hold
    )
    via_index = ActiveSelector(N_IN, N_OUT, tables="index", **opts).fit(w, b)
    via_sorted = ActiveSelector(N_IN, N_OUT, tables="sorted", **opts).fit(w, b)
    labels = np.arange(x.shape[0]) % N_OUT
    for training in (True, False):
        a = via_index.select(x, labels=labels, training=training)
        s = via_sorted.select(x, labels=labels, training=training)
        assert np.array_equal(a.ids, s.ids)
    w2 = w.copy()
    w2[:10] *= -1
    via_index.after_update(w2, b, np.arange(10))
    via_sorted.after_update(w2, b, np.arange(10))
    assert via_index.rehashes == 1 and via_sorted.rehashes == 1
    assert np.array_equal(via_index.select(x).ids, via_sorted.select(x).ids)
    with pytest.raises(ConfigError, match="tables"):
        ActiveSelector(N_IN, N_OUT, tables="btree")


def test_norm_tiebreak_prefers_larger_rows_and_survives_save_load() -> None:
    rng = np.random.default_rng(8)
    w = rng.standard_normal((N_OUT, N_IN)).astype(np.float32)
    w *= rng.uniform(0.1, 3.0, (N_OUT, 1)).astype(np.float32)
    b = np.zeros(N_OUT, np.float32)
    x = rng.standard_normal((32, N_IN)).astype(np.float32)
    opts = dict(active=0.05, policy="topk", family="dwta", k=1, l=2, transform=None, seed=2)
    with pytest.raises(UnknownNameError, match="tiebreak"):
        ActiveSelector(N_IN, N_OUT, tiebreak="largest", **opts)
    norms = np.linalg.norm(w, axis=1)
    mean_norm = {}
    for tb in ("random", "norm"):
        sel = ActiveSelector(N_IN, N_OUT, tiebreak=tb, **opts).fit(w, b)
        ids = sel.select(x).ids
        mean_norm[tb] = float(norms[ids[ids >= 0]].mean())
        # rehashing counts the norms: n_out * (n_in + 1) more multiplications for "norm"
        if tb == "norm":
            meta, arrays = sel.state()
            assert "tie" in arrays and meta["config"]["tiebreak"] == "norm"
            assert arrays["tie"][np.argmax(norms)] == 65535
            again = ActiveSelector.from_state(meta, arrays, w, b)
            again.calls = sel.calls - 1
            assert np.array_equal(again.select(x).ids, ids)
    assert mean_norm["norm"] > 1.2 * mean_norm["random"]


def test_top_by_score_keeps_the_best_and_gives_ties_to_the_smaller_id() -> None:
    # rerank's and exact's choice (host and device): the m largest scores of each row's
    # valid ids, equal scores to the smaller id, NaN as -inf (a row is never left short);
    # checked against a sort by (-score, id)
    from lshcore.training.device_select import top_by_score

    rng = np.random.default_rng(0)
    for _ in range(200):
        c = int(rng.integers(1, 12))
        m = int(rng.integers(1, c + 2))
        z = rng.integers(0, 4, (3, c)).astype(np.float32)  # small integers: many ties
        z[rng.random(z.shape) < 0.15] = np.nan  # ranks as -inf, chosen before padding
        ids = np.sort(rng.choice(100, size=(3, c)), axis=1)
        n_pad = rng.integers(0, c + 1, 3)
        for row, pad in enumerate(n_pad):  # -1 padding last, its scores ignored
            ids[row, c - pad :] = -1
        got = top_by_score(np, z, ids, m, 100)
        if m >= c:
            np.testing.assert_array_equal(got, ids)
            continue
        for row in range(3):
            ok = ids[row] >= 0
            score = np.where(np.isnan(z[row]), -np.inf, z[row])
            order = np.lexsort((ids[row][ok], -score[ok]))
            best = np.sort(ids[row][ok][order][:m])
            want = np.concatenate([best, np.full(m - best.size, -1)])
            np.testing.assert_array_equal(got[row], want)
