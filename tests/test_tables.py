"""LSHTables: bucket policies, remove, query counts, multiprobe, range reduction, kernels."""

from __future__ import annotations

from collections import deque

import numpy as np
import pytest

import lshcore
from lshcore.errors import ConfigError, InputError
from lshcore.kernels import _np_tables as ref
from lshcore.search.tables import Candidates, LSHTables, default_table_size, reduce_codes

HOST_BACKENDS = ["numpy", "numba"]


def _cupy_or_skip() -> None:
    b = lshcore.registry.lookup("backend", "cupy")
    if not b.available():
        pytest.skip(f"cupy backend unavailable: {b.why_unavailable()}")


def as_sets(c: Candidates) -> list[dict[int, int]]:
    out = []
    for i in range(len(c)):
        ids, counts = c.row(i)
        out.append(dict(zip(np.asarray(ids).tolist(), np.asarray(counts).tolist(), strict=True)))
    return out


# -- policies ------------------------------------------------------------------------
@pytest.mark.parametrize("backend", HOST_BACKENDS)
def test_fifo_keeps_newest(backend: str) -> None:
    t = LSHTables(2, 8, bucket_size=3, policy="fifo", backend=backend)
    codes = np.zeros((5, 2), dtype=np.int64)
    codes[:, 1] = 7
    t.insert(np.arange(2), codes[:2])  # ids 0, 1
    t.insert(np.arange(2, 5), codes[2:])  # ids 2, 3, 4: the bucket overflows
    got = as_sets(t.query(np.array([[0, 7], [1, 1]])))
    assert got[0] == {2: 2, 3: 2, 4: 2}  # the oldest (0, 1) were overwritten
    assert got[1] == {}
    assert int(t.n_entries()) == 6


@pytest.mark.parametrize("backend", HOST_BACKENDS)
def test_id_zero_is_not_empty(backend: str) -> None:
    t = LSHTables(1, 4, bucket_size=4, backend=backend)
    assert (t.slots == -1).all()  # empty slots hold the sentinel, never id 0
    t.insert([0], [[2]])
    assert as_sets(t.query([[2], [1]])) == [{0: 1}, {}]


@pytest.mark.parametrize("backend", HOST_BACKENDS)
@pytest.mark.parametrize("batched", [False, True])
def test_reservoir_is_uniform(backend: str, batched: bool) -> None:
    # every table is an independent reservoir over the same 20 arrivals (capacity 5): a
    # true reservoir keeps each arrival with probability 5/20; SLIDE's 1/n rule would
    # keep the late arrivals far less often
    n_tables, n, cap = 2000, 20, 5
    t = LSHTables(n_tables, 1, bucket_size=cap, policy="reservoir", seed=3, backend=backend)
    if batched:  # all arrivals in one call: the vectorized path ranks them within a bucket
        t.insert(np.arange(n), np.zeros((n, n_tables), dtype=np.int64))
    for i in range(n if not batched else 0):  # one arrival per call, as in a stream
        t.insert([i], np.zeros((1, n_tables), dtype=np.int64))
    held = t.slots[:, 0, :]
    freq = np.array([(held == i).any(axis=1).mean() for i in range(n)])
    sd = np.sqrt(0.25 * 0.75 / n_tables)
    assert np.all(np.abs(freq - 0.25) < 5 * sd), freq
    assert (held >= 0).all()
    assert int(t.seen.sum()) == n_tables * n


def test_reservoir_is_seeded() -> None:
    def run(seed: int) -> np.ndarray:
        t = LSHTables(50, 1, bucket_size=2, policy="reservoir", seed=seed, backend="numpy")
        t.insert(np.arange(30), np.zeros((30, 50), dtype=np.int64))
        return t.slots.copy()

    assert np.array_equal(run(1), run(1))
    assert not np.array_equal(run(1), run(2))


@pytest.mark.parametrize("backend", HOST_BACKENDS)
def test_unbounded_keeps_everything(backend: str) -> None:
    rng = np.random.default_rng(0)
    t = LSHTables(3, 4, policy="unbounded", backend=backend)
    codes = rng.integers(0, 4, (500, 3))
    t.insert(np.arange(500), codes)
    q = as_sets(t.query(codes[:20]))
    for i in range(20):
        assert q[i][i] == 3  # every id is found in all three of its own buckets
    assert t.n_entries() == 1500
    assert t.bucket_sizes().sum() == 1500


@pytest.mark.parametrize("backend", HOST_BACKENDS)
@pytest.mark.parametrize("policy", ["fifo", "reservoir", "unbounded"])
def test_remove_by_codes(backend: str, policy: str) -> None:
    rng = np.random.default_rng(1)
    t = LSHTables(4, 16, bucket_size=64, policy=policy, backend=backend)
    codes = rng.integers(0, 16, (100, 4))
    t.insert(np.arange(100), codes)
    t.remove(np.arange(0, 100, 2), codes[::2])
    got = as_sets(t.query(codes))
    for i in range(100):
        assert (i in got[i]) == (i % 2 == 1)
    assert all(j % 2 == 1 for row in got for j in row)
    t.remove([1], codes[[3]])  # wrong buckets: nothing happens (id 1 stays)
    assert 1 in as_sets(t.query(codes[[1]]))[0]


def test_unbounded_pending_run() -> None:
    t = LSHTables(2, 8, policy="unbounded", backend="numpy")
    codes = np.random.default_rng(0).integers(0, 8, (100, 2))
    t.insert(np.arange(50), codes[:50])
    t.insert(np.arange(50, 100), codes[50:])  # small inserts stay in the pending run
    assert t.pending_keys.shape[0] == 200 and t.keys.shape[0] == 0
    t.remove(np.arange(0, 100, 10), codes[::10])
    assert t.pending_dead == 20 and t.n_entries() == 180
    got = as_sets(t.query(codes))
    assert all((i in got[i]) == (i % 10 != 0) for i in range(100))
    t.compact()
    assert t.keys.shape[0] == 180 and t.pending_keys.shape[0] == 0
    assert as_sets(t.query(codes)) == got
    big = np.random.default_rng(1).integers(0, 8, (20000, 2))
    t.insert(np.arange(100, 20100), big)  # past PENDING_MIN: merged into the main run
    assert t.pending_keys.shape[0] == 0 and t.n_entries() == 180 + 40000


def test_unbounded_compacts_tombstones() -> None:
    t = LSHTables(2, 8, policy="unbounded", backend="numpy")
    codes = np.random.default_rng(0).integers(0, 8, (3000, 2))
    t.insert(np.arange(3000), codes)
    t.compact()  # all in the main run
    t.remove(np.arange(2000), codes[:2000])
    assert t.n_dead == 0 and t.keys.shape[0] == 2000  # compacted past half dead
    assert t.n_entries() == 2000


# -- model-based check against a plain Python implementation ---------------------------
class Model:
    def __init__(self, l: int, cap: int | None):  # noqa: E741
        self.buckets: list[dict[int, deque[int]]] = [{} for _ in range(l)]
        self.cap = cap

    def insert(self, ids: np.ndarray, codes: np.ndarray) -> None:
        for t, table in enumerate(self.buckets):
            for i, c in zip(ids.tolist(), codes[:, t].tolist(), strict=True):
                table.setdefault(c, deque(maxlen=self.cap)).append(i)

    def remove(self, ids: np.ndarray, codes: np.ndarray) -> None:
        for t, table in enumerate(self.buckets):
            for i, c in zip(ids.tolist(), codes[:, t].tolist(), strict=True):
                d = table.get(c, deque())
                table[c] = deque((v for v in d if v != i), maxlen=self.cap)

    def query(self, codes: np.ndarray) -> list[dict[int, int]]:
        out = []
        for row in codes:
            found: dict[int, int] = {}
            for t, table in enumerate(self.buckets):
                for c in sorted(set(np.atleast_1d(row[t]).tolist())):
                    for v in table.get(c, ()):
                        found[v] = found.get(v, 0) + 1
            out.append(found)
        return out


@pytest.mark.parametrize("backend", HOST_BACKENDS)
@pytest.mark.parametrize("policy", ["fifo", "unbounded"])
def test_matches_python_model(backend: str, policy: str) -> None:
    rng = np.random.default_rng(7)
    n_tables, nb, cap = 3, 6, 4
    t = LSHTables(n_tables, nb, bucket_size=cap, policy=policy, backend=backend)
    model = Model(n_tables, cap if policy == "fifo" else None)
    codes_of: dict[int, np.ndarray] = {}
    next_id = 0
    for _step in range(30):
        if codes_of and rng.random() < 0.4:
            pick = rng.choice(
                sorted(codes_of), size=min(len(codes_of), rng.integers(1, 4)), replace=False
            )
            c = np.stack([codes_of.pop(int(i)) for i in pick])
            t.remove(pick, c)
            model.remove(pick, c)
        else:
            n = int(rng.integers(1, 6))
            ids = np.arange(next_id, next_id + n)
            next_id += n
            c = rng.integers(0, nb, (n, n_tables))
            codes_of.update({int(i): c[j] for j, i in enumerate(ids)})
            t.insert(ids, c)
            model.insert(ids, c)
        q = rng.integers(0, nb, (5, n_tables, 2))
        assert as_sets(t.query(q)) == model.query(q)


# -- multiprobe and reduction ---------------------------------------------------------
@pytest.mark.parametrize("backend", HOST_BACKENDS)
def test_probe_counts_and_duplicates(backend: str) -> None:
    t = LSHTables(2, 4, bucket_size=8, backend=backend)
    t.insert([10, 11], [[0, 1], [2, 1]])
    q = np.array([[[0, 2], [1, 1]]])  # table 0 probes buckets 0 and 2; table 1 probes 1 twice
    got = as_sets(t.query(q))[0]
    assert got == {10: 2, 11: 2}  # the repeated probe of table 1 counts once


def test_range_reduction() -> None:
    assert default_table_size(64, 128, "fifo") == 64
    assert default_table_size(2**18, 128, "fifo") == 8192
    assert default_table_size(2**62, 16, "unbounded") == 2**30
    codes = np.random.default_rng(0).integers(0, 2**62, (20000, 1))
    b = reduce_codes(codes, 2**62, 1024)
    assert b.min() >= 0 and b.max() < 1024
    counts = np.bincount(b.ravel(), minlength=1024)
    assert counts.min() > 0 and counts.max() < 60  # ~19.5 per bucket, spread out
    t = LSHTables(1, 2**62, bucket_size=4, table_size=1024, backend="numpy")
    t.insert(np.arange(5), codes[:5])
    assert as_sets(t.query(codes[:1]))[0][0] == 1
    with pytest.raises(ConfigError, match="power of two"):
        LSHTables(1, 2**20, table_size=1000)
    # a single bucket per table: every code maps to bucket 0 (no shift by 64 bits)
    assert (reduce_codes(codes[:50], 2**62, 1) == 0).all()
    one = LSHTables(2, 64, bucket_size=4, table_size=1, backend="numpy")
    one.insert([0, 1], [[5, 7], [9, 63]])
    assert as_sets(one.query([[1, 2]])) == [{0: 2, 1: 2}]


def test_memory_formula() -> None:
    t = LSHTables(3, 2**18, bucket_size=128, policy="fifo")
    assert t.table_size == 8192
    assert t.nbytes == 3 * 8192 * (4 * 128 + 16)
    with pytest.raises(ConfigError, match="too large"):
        LSHTables(1000, 2**20, bucket_size=1024, table_size=2**20)


# -- validation -------------------------------------------------------------------------
def test_bad_inputs_leave_tables_unchanged() -> None:
    t = LSHTables(2, 8, bucket_size=4, backend="numpy")
    t.insert([1, 2], [[0, 1], [2, 3]])
    before = {k: v.copy() for k, v in t.state().items()}
    bad = [
        ([3], [[0, 8]], "codes"),  # code out of range
        ([3], [[0, -1]], "codes"),
        ([3], [[0.5, 1.0]], "codes"),  # float codes
        ([3], [[0, 1, 2]], "codes"),  # wrong number of tables
        ([-1], [[0, 1]], "ids"),
        ([2**31], [[0, 1]], "ids"),
        ([3, 4], [[0, 1]], "ids"),  # length mismatch
        ([], np.zeros((0, 2), dtype=np.int64), "empty"),
    ]
    for ids, codes, word in bad:
        with pytest.raises(InputError, match=word):
            t.insert(ids, codes)
        with pytest.raises(InputError):
            t.remove(ids, codes)
    for k, v in t.state().items():
        assert np.array_equal(v, before[k])
    with pytest.raises(ConfigError, match="policy"):
        LSHTables(2, 8, policy="lru")
    with pytest.raises(ConfigError, match="bucket_size"):
        LSHTables(2, 8, bucket_size=0)


# -- kernels: numba == numpy ------------------------------------------------------------
@pytest.mark.parametrize("parallel", [False, True])
@pytest.mark.parametrize("policy", ["fifo", "reservoir", "unbounded"])
def test_numba_matches_numpy(policy: str, parallel: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    nb = pytest.importorskip("lshcore.kernels._numba_tables")
    if parallel:  # take the multi-threaded path even for this small call
        monkeypatch.setattr(nb, "_PARALLEL_WORK", 0)
    rng = np.random.default_rng(11)
    codes = rng.integers(0, 16, (400, 5))
    q = rng.integers(0, 16, (40, 5, 3))
    results = {}
    for backend in HOST_BACKENDS:
        t = LSHTables(5, 16, bucket_size=6, policy=policy, seed=5, backend=backend)
        t.insert(np.arange(150), codes[:150])
        t.insert(np.arange(150, 400), codes[150:])
        t.remove(np.arange(0, 400, 3), codes[::3])
        t.insert(np.arange(0, 30, 3), codes[:30:3])
        c = t.query(q)
        results[backend] = (t.state(), c)
    (sa, ca), (sb, cb) = results["numpy"], results["numba"]
    for k in sa:
        assert np.array_equal(sa[k], sb[k]), k
    for a, b in zip((ca.indptr, ca.ids, ca.counts), (cb.indptr, cb.ids, cb.counts), strict=True):
        assert a.dtype == b.dtype
        assert np.array_equal(a, b)


def test_numba_reservoir_draws_match() -> None:
    nb = pytest.importorskip("lshcore.kernels._numba_tables")
    n = np.arange(1, 2000, dtype=np.int64)
    a = ref.reservoir_draw(9, 12345, n)
    b = nb.reservoir_draw(9, 12345, n)
    assert np.array_equal(a, b)
    assert ((a >= 0) & (a < n)).all()


def test_sorted_query_without_offsets_matches() -> None:
    nb = pytest.importorskip("lshcore.kernels._numba_tables")
    rng = np.random.default_rng(2)
    keys = np.sort(rng.integers(0, 50, 300)).astype(np.int64)
    ids = rng.integers(-1, 90, 300).astype(np.int32)
    qk = rng.integers(-1, 50, (10, 4)).astype(np.int64)
    offsets = ref.bucket_offsets(keys, 50)
    assert np.array_equal(offsets, nb.bucket_offsets(keys, 50))
    empty = np.zeros(0, dtype=np.int64)
    pk = np.sort(rng.integers(0, 50, 40)).astype(np.int64)  # a pending run too
    pi = rng.integers(-1, 90, 40).astype(np.int32)
    outs = [
        mod.sorted_query(keys, ids, off, pk, pi, qk, 90)
        for mod in (ref, nb)
        for off in (offsets, empty)
    ]
    # a plain count of what each query must get
    want = []
    for row in qk:
        found: dict[int, int] = {}
        for key in row[row >= 0]:
            for v in np.concatenate([ids[keys == key], pi[pk == key]]):
                if v >= 0:
                    found[int(v)] = found.get(int(v), 0) + 1
        want.append(found)
    indptr, got_ids, got_counts = outs[0]
    for i, found in enumerate(want):
        sl = slice(indptr[i], indptr[i + 1])
        assert dict(zip(got_ids[sl].tolist(), got_counts[sl].tolist(), strict=True)) == found
    # the sort-based path of the numba kernel (ids beyond the marker limit) too
    outs.append(nb._sorted_query_mode(keys, ids, offsets, pk, pi, qk, 90, False))
    for other in outs[1:]:
        for a, b in zip(outs[0], other, strict=True):
            assert np.array_equal(a, b)


@pytest.mark.parametrize("parallel", [False, True])
@pytest.mark.parametrize("metric", [0, 1, 2])
def test_rerank_kernels_agree_with_brute_force(
    metric: int, parallel: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    nb = pytest.importorskip("lshcore.kernels._numba_tables")
    if parallel:
        monkeypatch.setattr(nb, "_PARALLEL_WORK", 0)
    rng = np.random.default_rng(metric)
    x = rng.standard_normal((60, 7)).astype(np.float32)
    x[5] = 0  # a zero vector: cosine 0
    q = rng.standard_normal((4, 7)).astype(np.float32)
    cand = [np.sort(rng.choice(60, size=s, replace=False)) for s in (20, 3, 0, 60)]
    indptr = np.concatenate([[0], np.cumsum([c.size for c in cand])]).astype(np.int64)
    rows = np.concatenate(cand).astype(np.int64)
    if metric == 2:
        xn, qn = (x * x).sum(1), (q * q).sum(1)
    else:
        xn, qn = np.linalg.norm(x, axis=1), np.linalg.norm(q, axis=1)
    k = 5
    a = ref.rerank_topk(x, xn, indptr, rows, q, qn, k, metric)
    b = nb.rerank_topk(x, xn, indptr, rows, q, qn, k, metric)
    np.testing.assert_allclose(a[0], b[0], rtol=1e-5, atol=1e-5)
    assert np.array_equal(a[1], b[1])
    for i, c in enumerate(cand):
        dots = x[c] @ q[i]
        if metric == 1:
            den = np.linalg.norm(x[c], axis=1) * np.linalg.norm(q[i])
            s = np.where(den > 0, dots / np.where(den > 0, den, 1), 0)
        elif metric == 2:
            s = -np.linalg.norm(x[c] - q[i], axis=1)
        else:
            s = dots
        best = c[np.argsort(-s, kind="stable")[:k]]
        got = a[1][i][a[1][i] >= 0]
        assert np.array_equal(got, best)
        assert (a[1][i][len(best) :] == -1).all() and np.isneginf(a[0][i][len(best) :]).all()


def test_cupy_backend_tables() -> None:
    _cupy_or_skip()
    import cupy

    t = LSHTables(2, 8, bucket_size=4, backend="cupy")
    t.insert(cupy.arange(3), cupy.asarray([[0, 1], [0, 2], [3, 1]]))
    c = t.query(cupy.asarray([[0, 1]]))
    assert lshcore.to_numpy(c.ids).tolist() == [0, 1, 2]


def test_unbounded_pending_run_grows_with_sqrt_of_main() -> None:
    from lshcore.search.tables import PENDING_MIN, PENDING_SQRT, pending_limit

    assert pending_limit(0) == PENDING_MIN
    assert pending_limit(16_000_000) == PENDING_SQRT * 4000 < 16_000_000 // 8  # not main / 8
    t = LSHTables(1, 1 << 10, policy="unbounded", backend="numpy")
    rng = np.random.default_rng(2)
    t.insert(np.arange(40_000), rng.integers(0, 1 << 10, (40_000, 1)))
    t.compact()
    limit = pending_limit(40_000)
    # inserts stay pending up to the limit, then one merge empties the pending run
    t.insert(np.arange(40_000, 40_000 + limit), rng.integers(0, 1 << 10, (limit, 1)))
    assert t.pending_keys.shape[0] == limit and t.keys.shape[0] == 40_000
    t.insert(np.array([10**6]), np.array([[5]]))
    assert t.pending_keys.shape[0] == 0 and t.keys.shape[0] == 40_001 + limit
    assert 10**6 in t.query(np.array([[5]])).ids.tolist()


@pytest.mark.parametrize("metric", [ref.METRIC_IP, ref.METRIC_COSINE, ref.METRIC_L2])
def test_sorted_query_rerank_matches_query_then_rerank(metric: int) -> None:
    from lshcore.kernels import _numba_tables as nb

    rng = np.random.default_rng(7)
    n, d, l, k = 300, 6, 3, 5  # noqa: E741
    t = LSHTables(l, 16, policy="unbounded", backend="numpy")
    codes = rng.integers(0, 16, (n, l))
    t.insert(np.arange(n), codes)
    t.compact()  # a main run with offsets ...
    t.insert(np.arange(n, n + 40), rng.integers(0, 16, (40, l)))  # ... and a pending run
    t.remove(np.arange(0, n, 7), codes[::7])  # tombstones
    vec = rng.standard_normal((n + 40, d)).astype(np.float32)
    vec[10] = vec[11]  # tied scores: the smaller row wins
    norms = np.linalg.norm(vec, axis=1).astype(np.float32)
    if metric == ref.METRIC_L2:
        norms = norms**2
    q = rng.standard_normal((9, d)).astype(np.float32)
    q[0] = vec[11]
    qn = np.linalg.norm(q, axis=1).astype(np.float32)
    if metric == ref.METRIC_L2:
        qn = qn**2
    qb = t._probe_buckets(rng.integers(0, 16, (9, l, 2)))
    qb[0, :, 0] = codes[11]
    qb[0, :, 1] = np.where(codes[10] == codes[11], -1, codes[10])
    gk = t._global_keys(qb)
    state = (t.keys, t.entry_ids, t.offsets, t.pending_keys, t.pending_ids, gk, n + 40)
    indptr, rows, _ = ref.sorted_query(*state)
    want_s, want_r = ref.rerank_topk(vec, norms, indptr, rows, q, qn, k, metric)
    for mod in (ref, nb):
        s, r, total = mod.sorted_query_rerank(*state, vec, norms, q, qn, k, metric)
        np.testing.assert_array_equal(r, want_r)
        np.testing.assert_allclose(s, want_s, rtol=1e-5, atol=1e-5)
        assert total == int(indptr[-1])
    assert not np.isin(want_r, np.arange(0, n, 7)).any()  # removed ids never come back
    if metric == ref.METRIC_IP:
        assert 10 in want_r[0] and list(want_r[0]).index(10) < list(want_r[0]).index(11)
