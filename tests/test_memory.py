"""LSHMemory: the published update rule, the loss, bad input, files, and the LSH index path."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from lshcore.errors import ConfigError, FileFormatError, InputError
from lshcore.memory.core import LSHMemory, default_index_params


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _state(mem: LSHMemory) -> tuple:
    return (
        mem.keys.copy(),
        mem.values.copy(),
        mem.ages.copy(),
        mem.step,
        len(mem),
        dict(mem._recent),
        mem._rng.bit_generator.state["state"]["state"],
    )


def _assert_same_state(a: tuple, b: tuple) -> None:
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    np.testing.assert_array_equal(a[2], b[2])
    assert a[3:] == b[3:]


class ReferenceMemory:
    """The published rule written plainly (dense search, one query per step, no noise)."""

    def __init__(self, dim: int, size: int, k: int, alpha: float):
        self.keys = np.zeros((size, dim), np.float64)
        self.values = np.full(size, -1, np.int64)
        self.ages = np.zeros(size, np.int64)
        self.recent: dict[int, int] = {}
        self.k, self.alpha = k, alpha

    def update(self, q: np.ndarray, label: int) -> float:
        q = q / np.linalg.norm(q)
        filled = np.flatnonzero(self.values >= 0)
        sims = self.keys[filled] @ q
        order = filled[np.argsort(-sims, kind="stable")][: self.k]
        cands = list(order) + ([self.recent[label]] if label in self.recent else [])
        pos = [self.keys[c] @ q for c in cands if self.values[c] == label]
        neg = [self.keys[c] @ q for c in cands if self.values[c] != label]
        s_pos = max(pos) if pos else 0.0
        loss = max(max(neg) - s_pos + self.alpha, 0.0) if neg else 0.0
        if order.size and self.values[order[0]] == label:
            slot = int(order[0])
            key = q + self.keys[slot]
            self.keys[slot] = key / np.linalg.norm(key)
        else:
            empty = np.flatnonzero(self.values < 0)
            slot = int(empty[0]) if empty.size else int(np.argmax(self.ages))
            self.keys[slot], self.values[slot] = q, label
        self.ages += 1
        self.ages[slot] = 0
        self.recent[label] = slot
        return loss


def _clustered(rng: np.random.Generator, n_classes: int, dim: int, noise: float):
    centers = rng.standard_normal((n_classes, dim))

    def draw(labels: np.ndarray) -> np.ndarray:
        return (centers[labels] + noise * rng.standard_normal((labels.size, dim))).astype(
            np.float32
        )

    return draw


def test_update_matches_reference_rule() -> None:
    rng = np.random.default_rng(1)
    draw = _clustered(rng, 12, 8, 0.6)
    mem = LSHMemory(8, 10, k=4, alpha=0.1, exact=True, age_noise=0.0)
    ref = ReferenceMemory(8, 10, 4, 0.1)
    kinds = set()
    for _ in range(300):
        y = rng.integers(0, 12, 1)
        q = draw(y)
        sel = mem.update(q, y)
        want = ref.update(q[0].astype(np.float64), int(y[0]))
        kinds.add(bool(sel.correct[0]))
        assert sel.loss[0] == pytest.approx(want, abs=1e-5)
    assert kinds == {True, False}  # both branches of the rule ran
    np.testing.assert_allclose(mem.keys, ref.keys, atol=1e-4)
    np.testing.assert_array_equal(mem.values, ref.values)
    np.testing.assert_array_equal(mem.ages, ref.ages)


def test_loss_positive_negative_and_strengthen() -> None:
    mem = LSHMemory(2, 4, k=4, alpha=0.1, exact=True)
    e0, e1 = np.array([[1.0, 0.0]]), np.array([[0.0, 1.0]])
    mem.update(e0, [3])
    mem.update(e1, [5])
    assert list(mem.values) == [3, 5, -1, -1]
    q = np.array([[1.0, 1.0]]) / np.sqrt(2)
    sel = mem.select(q, [5])
    # both at cosine 0.7071: s_pos = s_neg, loss = alpha
    assert sel.pos_slot[0] == 1 and sel.neg_slot[0] == 0
    assert sel.loss[0] == pytest.approx(0.1, abs=1e-6)
    q = np.array([[0.6, 0.8]])
    sel = mem.select(q, [5])
    assert sel.loss[0] == pytest.approx(max(0.6 - 0.8 + 0.1, 0.0), abs=1e-6)
    sel = mem.select(q, [3])
    assert sel.loss[0] == pytest.approx(0.8 - 0.6 + 0.1, abs=1e-6)
    # label never seen: s_pos = 0 as published, s_neg = 0.8
    sel = mem.select(q, [7])
    assert sel.pos_slot[0] == -1 and sel.loss[0] == pytest.approx(0.9, abs=1e-6)
    # nearest (slot 1, label 5) is correct: strengthened, age reset, others age
    ages = mem.ages.copy()
    mem.update(q, [5])
    np.testing.assert_allclose(mem.keys[1], _unit(np.array([[0.6, 1.8]]))[0], atol=1e-6)
    assert mem.ages[1] == 0 and mem.ages[0] == ages[0] + 1
    assert list(mem.values) == [3, 5, -1, -1]
    # nearest is wrong: a new slot gets (q, label)
    mem.update(q, [3])
    assert list(mem.values) == [3, 5, 3, -1]
    np.testing.assert_allclose(mem.keys[2], [0.6, 0.8], atol=1e-6)


def test_recent_slot_is_a_candidate_beyond_top_k() -> None:
    mem = LSHMemory(2, 8, k=1, exact=True)
    mem.update([[0.0, 1.0]], [1])  # slot 0, label 1, far from the query
    mem.update([[1.0, 0.05]], [2])  # slot 1, nearest to the query
    sel = mem.select([[1.0, 0.0]], [1])
    assert sel.candidates[0, 0] == 1 and sel.candidates[0, -1] == 0
    assert sel.pos_slot[0] == 0 and sel.pos_sim[0] == pytest.approx(0.0, abs=1e-6)


def test_oldest_slot_with_noise_and_batches() -> None:
    rng = np.random.default_rng(3)
    noise = 2.0
    mem = LSHMemory(6, 40, k=8, exact=True, age_noise=noise, seed=5)
    twin = LSHMemory(6, 40, k=8, exact=True, age_noise=noise, seed=5)
    for _ in range(200):
        y = rng.integers(0, 1000, 5)  # mostly new labels: most rows overwrite
        q = rng.standard_normal((5, 6)).astype(np.float32)
        ages = mem.ages.copy()
        full = len(mem) == mem.size
        sel = mem.select(q, y)
        mem.apply(sel)
        twin.update(q, y)
        written = np.flatnonzero(mem.ages == 0)
        new = written[~np.isin(written, sel.nearest[sel.correct])]
        if full and new.size:
            others = np.setdiff1d(np.arange(mem.size), written)
            assert ages[new].min() >= ages[others].max() - 2 * noise
    _assert_same_state(_state(mem), _state(twin))  # seeded: the same choices
    assert len(mem._recent) > 100


def test_log_survives_compaction() -> None:
    rng = np.random.default_rng(4)
    mem = LSHMemory(4, 6, k=2, exact=True, age_noise=0.0)
    for step in range(500):
        mem.update(rng.standard_normal((3, 4)), rng.integers(0, 10**6, 3))
        if step > 5:
            # with no noise the three written slots are the three oldest
            assert sorted(mem.ages) == [0, 0, 0, 1, 1, 1]


@pytest.mark.parametrize(
    "q, labels, match",
    [
        (np.ones((2, 5)), [1, 2], "expected shape"),
        (np.array([[1.0, np.nan, 0, 0]] * 2), [1, 2], "NaN"),
        (np.array([[1.0, np.inf, 0, 0]] * 2), [1, 2], "NaN"),
        (np.zeros((2, 4)), [1, 2], "zero norm"),
        (np.ones((2, 4)), [1.0, 2.0], "integer labels"),
        (np.ones((2, 4)), np.array([True, False]), "integer labels"),
        (np.ones((2, 4)), [1, 2, 3], r"shape \(2,\)"),
        (np.ones((2, 4)), [[1], [2]], r"shape \(2,\)"),
        (np.ones((2, 4)), [1, -2], "labels must lie"),
        (np.ones((0, 4)), [], "empty batch"),
        (np.ones((9, 4)), list(range(9)), "exceeds the memory size"),
        (np.array([["a"] * 4] * 2), [1, 2], "real-valued"),
    ],
)
def test_bad_input_raises_and_changes_nothing(q, labels, match) -> None:
    rng = np.random.default_rng(0)
    mem = LSHMemory(4, 8, k=3, exact=True, age_noise=1.0)
    for _ in range(6):
        mem.update(rng.standard_normal((2, 4)), rng.integers(0, 5, 2))
    before = _state(mem)
    with pytest.raises(InputError, match=match):
        mem.update(q, labels)
    _assert_same_state(before, _state(mem))


def test_query_and_select_validate_too() -> None:
    mem = LSHMemory(4, 8, exact=True)
    with pytest.raises(InputError, match="q: expected shape"):
        mem.query(np.ones((1, 3)))
    with pytest.raises(InputError, match="labels"):
        mem.select(np.ones((1, 4)), ["x"])
    res = mem.query(np.ones((2, 4)))  # empty memory: nothing found, no crash
    assert list(res.values) == [-1, -1] and list(res.slots) == [-1, -1]
    assert np.all(np.isneginf(res.similarities))


def test_stale_selection_is_refused() -> None:
    mem = LSHMemory(4, 8, exact=True)
    sel = mem.select(np.ones((1, 4)), [1])
    mem.update(np.ones((1, 4)), [1])
    before = _state(mem)
    with pytest.raises(InputError, match="changed since"):
        mem.apply(sel)
    _assert_same_state(before, _state(mem))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"key_dim": 0, "size": 4}, "key_dim"),
        ({"key_dim": 4, "size": 0}, "size"),
        ({"key_dim": 4, "size": 4, "k": 0}, "k must be"),
        ({"key_dim": 4, "size": 4, "alpha": float("nan")}, "alpha"),
        ({"key_dim": 4, "size": 4, "exact": True, "index": {"k": 3}}, "either exact"),
        ({"key_dim": 4, "size": 4, "exact": "yes"}, "exact must be"),
        ({"key_dim": 4, "size": 4, "index": 5}, "index must be"),
    ],
)
def test_bad_config(kwargs, match) -> None:
    with pytest.raises(ConfigError, match=match):
        LSHMemory(**kwargs)


def test_save_load_round_trip_and_continue(tmp_path) -> None:
    rng = np.random.default_rng(7)
    mem = LSHMemory(5, 12, k=4, alpha=0.2, exact=True, age_noise=3.0, seed=11)
    for _ in range(30):
        mem.update(rng.standard_normal((3, 5)), rng.integers(0, 9, 3))
    path = tmp_path / "mem.lshm"
    mem.save(path)
    back = LSHMemory.load(path)
    assert (back.key_dim, back.size, back.k, back.alpha, back.search) == (5, 12, 4, 0.2, "exact")
    _assert_same_state(_state(mem), _state(back))
    q, y = rng.standard_normal((3, 5)), rng.integers(0, 9, 3)
    a, b = mem.update(q, y), back.update(q, y)
    np.testing.assert_array_equal(a.loss, b.loss)
    _assert_same_state(_state(mem), _state(back))


def test_load_rejects_foreign_and_corrupt_files(tmp_path) -> None:
    from lshcore.core.fileformat import save_arrays

    other = tmp_path / "other.npz"
    save_arrays(other, "lsh-index", 1, {}, {"x": np.zeros(3)})
    with pytest.raises(FileFormatError, match="lsh-memory"):
        LSHMemory.load(other)
    mem = LSHMemory(3, 4, exact=True)
    mem.update(np.eye(3)[:2], [0, 1])
    good = tmp_path / "good.npz"
    mem.save(good)
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(good.read_bytes()[:200])
    with pytest.raises(FileFormatError):
        LSHMemory.load(truncated)
    bad = tmp_path / "bad.npz"
    save_arrays(
        bad,
        "lsh-memory",
        1,
        {"key_dim": 3, "size": 4, "k": 2, "alpha": 0.1, "age_noise": 1.0, "seed": 0,
         "exact": True, "index": None, "step": 1, "filled": 2, "rng": {}},
        {"keys": np.full((2, 3), np.nan, np.float32), "values": np.zeros(2, np.int64),
         "stamps": np.zeros(4, np.int64), "recent_labels": np.zeros(0, np.int64),
         "recent_slots": np.zeros(0, np.int64)},
    )  # fmt: skip
    with pytest.raises(FileFormatError, match="non-finite"):
        LSHMemory.load(bad)


def test_default_index_params_grow_with_size() -> None:
    small, large = default_index_params(1000, 64), default_index_params(10**6, 128)
    assert small["family"] == "srp" and large["k"] > small["k"]


# -- the LSH index path --------------------------------------------------------------

requires_index = pytest.mark.skipif(
    importlib.util.find_spec("lshcore.search.index") is None,
    reason="lshcore.search.index is not built yet",
)


def _lsh_memory(dim: int, size: int, **kw):
    return LSHMemory(dim, size, index={"family": "srp", "k": 4, "l": 12, "n_probes": 4}, **kw)


@requires_index
def test_lsh_memory_agrees_with_exact_on_clustered_data() -> None:
    rng = np.random.default_rng(0)
    draw = _clustered(rng, 40, 32, 0.35)
    lsh, exact = _lsh_memory(32, 400, k=16), LSHMemory(32, 400, k=16, exact=True)
    for _ in range(60):
        y = rng.integers(0, 40, 8)
        q = draw(y)
        lsh.update(q, y)
        exact.update(q, y)
    y = rng.integers(0, 40, 200)
    q = draw(y)
    a, b = lsh.query(q), exact.query(q)
    assert np.mean(a.values == y) >= np.mean(b.values == y) - 0.02
    assert np.mean(b.values == y) > 0.9


@requires_index
def test_index_follows_every_write_without_rebuild(monkeypatch) -> None:
    rng = np.random.default_rng(2)
    mem = _lsh_memory(16, 30, k=8, age_noise=0.0)
    index = mem.index

    def refuse(*args, **kwargs):
        raise AssertionError("the memory must not rebuild or rehash the whole index")

    monkeypatch.setattr(index, "rebuild", refuse, raising=False)
    monkeypatch.setattr(index, "rehash", refuse, raising=False)
    for _ in range(40):
        mem.update(rng.standard_normal((4, 16)), rng.integers(0, 50, 4))
        assert len(index) == len(mem)
        # every filled slot is found by a query equal to its own key
        res = mem.query(mem.keys[: len(mem)])
        np.testing.assert_array_equal(res.slots, np.arange(len(mem)))
    assert mem.index is index


@requires_index
def test_lsh_save_load(tmp_path) -> None:
    rng = np.random.default_rng(5)
    mem = _lsh_memory(8, 20, k=4, seed=3)
    for _ in range(10):
        mem.update(rng.standard_normal((2, 8)), rng.integers(0, 6, 2))
    mem.save(tmp_path / "m.npz")
    back = LSHMemory.load(tmp_path / "m.npz")
    assert back.search == "lsh" and len(back.index) == len(mem)
    q = rng.standard_normal((10, 8))
    np.testing.assert_array_equal(mem.query(q).slots, back.query(q).slots)


def test_write_preloads_oldest_slots_without_lookup() -> None:
    mem = LSHMemory(3, 4, exact=True, age_noise=0.0)
    slots = mem.write(np.eye(3) * 2.0, [7, 8, 9])
    assert list(slots) == [0, 1, 2] and list(mem.values) == [7, 8, 9, -1]
    np.testing.assert_allclose(mem.keys[:3], np.eye(3))
    mem.update(np.array([[1.0, 1.0, 0.0]]), [5])  # wrong nearest: takes the empty slot 3
    slots = mem.write(np.ones((2, 3)), [1, 2])  # then the two oldest (slots 0 and 1)
    assert sorted(slots) == [0, 1] and list(mem.values) == [1, 2, 9, 5]
    assert mem.query(np.ones((1, 3))).values[0] in (1, 2)
    before = _state(mem)
    with pytest.raises(InputError, match="exceed the memory size"):
        mem.write(np.ones((5, 3)), [1, 2, 3, 4, 5])
    with pytest.raises(InputError, match="integer labels"):
        mem.write(np.ones((1, 3)), [1.5])
    _assert_same_state(before, _state(mem))


@requires_index
def test_index_params_object_and_default_settings() -> None:
    from lshcore.search.index import IndexParams

    mem = LSHMemory(8, 100, index=IndexParams(k=5, l=6, n_probes=2, seed=4))
    assert (mem.index.k, mem.index.l, mem.index.n_probes) == (5, 6, 2)
    default = LSHMemory(8, 4096)
    params = default_index_params(4096, 8)
    assert params["policy"] == "unbounded" and default.index.k == params["k"]
    with pytest.raises(ConfigError):
        LSHMemory(8, 100, index={"k": 0})


def _oldest_draws(big_path: bool, monkeypatch: pytest.MonkeyPatch) -> np.ndarray:
    """1500 draws of 3 slots to overwrite: slots 0-19 written a step before 20-39."""
    import lshcore.memory.core as core

    monkeypatch.setattr(core, "_SAMPLE_ABOVE", 0 if big_path else 10**9)
    mem = LSHMemory(3, 40, exact=True, age_noise=2.0, seed=1)
    rng = np.random.default_rng(0)
    mem.write(rng.standard_normal((20, 3)), np.arange(20))
    mem.write(rng.standard_normal((20, 3)), np.arange(20, 40))
    return np.stack([mem._oldest(3, exclude=np.array([0, 25])) for _ in range(1500)])


def test_oldest_sampling_of_large_windows_has_the_same_distribution(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    per_slot = _oldest_draws(False, monkeypatch)
    grouped = _oldest_draws(True, monkeypatch)
    for picks in (per_slot, grouped):
        assert all(len(set(row)) == 3 for row in picks.tolist())  # distinct
        assert not np.isin(picks, [0, 25]).any()  # excluded slots are never picked
    # the older group wins most picks, by the same share on both paths (0.98 here)
    older_plain, older_grouped = (np.mean(p < 20) for p in (per_slot, grouped))
    assert 0.9 < older_plain < 1.0 and 0.9 < older_grouped < 1.0
    assert abs(older_plain - older_grouped) < 0.015
    # ... and the newer group's share is not zero on either (the noise spans both ages)
    assert (per_slot >= 20).sum() > 20 and (grouped >= 20).sum() > 20
    # within the older group every slot is equally likely (no bias to small slot ids)
    counts = np.bincount(grouped[grouped < 20], minlength=20)[1:]
    assert counts.min() > 0.6 * counts.mean()


@pytest.mark.parametrize("exact", [True, False])
@pytest.mark.parametrize("scale", [1e20, 1e-30])
def test_huge_or_tiny_finite_keys_are_stored_and_found(exact: bool, scale: float) -> None:
    """Issue 9: squaring values near 1e20 overflowed float32 (and near 1e-30 underflowed),
    so update stored an all-zero key (or called a non-zero key zero)."""
    mem = LSHMemory(8, 16, k=4, exact=exact, seed=0)
    rng = np.random.default_rng(0)
    base = rng.standard_normal((3, 8)).astype(np.float32)
    mem.update(base * np.float32(scale), [0, 1, 2])
    keys = mem.keys[:3]
    np.testing.assert_allclose(np.linalg.norm(keys, axis=1), 1.0, rtol=1e-5)
    unit = base / np.linalg.norm(base, axis=1, keepdims=True)
    np.testing.assert_allclose(keys, unit, rtol=1e-5, atol=1e-6)
    found = mem.query(unit)
    np.testing.assert_array_equal(found.values, [0, 1, 2])
    np.testing.assert_allclose(found.similarities, 1.0, rtol=1e-5)


def _eviction_trace(big_group: int, sample_above: int, monkeypatch: pytest.MonkeyPatch) -> list:
    """Slots chosen by writes and updates after a one-call preload (one shared age)."""
    import lshcore.memory.core as core

    monkeypatch.setattr(core, "_BIG_GROUP", big_group)
    monkeypatch.setattr(core, "_SAMPLE_ABOVE", sample_above)
    mem = LSHMemory(4, 300, k=4, exact=True, age_noise=3.0, seed=7)
    rng = np.random.default_rng(3)
    mem.write(rng.standard_normal((300, 4)), np.arange(300))
    trace = []
    for step in range(40):
        if step % 3 == 2:  # strengthen some slots (dead log entries mid-run, excludes)
            labels = np.asarray(mem.values[rng.integers(0, 300, 6)])
            keys = np.asarray(mem.keys[rng.integers(0, 300, 6)]) + 0.01
            mem.update(keys, labels)
        else:
            trace.append(mem.write(rng.standard_normal((7, 4)), 1000 + 7 * step + np.arange(7)))
        trace.append(mem._oldest(5, exclude=np.array([int(trace[-1][0]), 150])))
    trace.append(np.asarray(mem.values).copy())
    return trace


@pytest.mark.parametrize("sample_above", [0, 10**9])
def test_oldest_counted_runs_match_the_scan(
    sample_above: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a long run of one age is counted through its dead positions instead of scanned:
    # the same slots (same draws) as scanning every entry, so eviction still follows
    # age + noise exactly as before
    scanned = _eviction_trace(10**9, sample_above, monkeypatch)
    counted = _eviction_trace(16, sample_above, monkeypatch)
    assert len(scanned) == len(counted)
    for a, b in zip(scanned, counted, strict=True):
        np.testing.assert_array_equal(a, b)


def test_default_index_params_at_a_million_keys() -> None:
    from lshcore.memory.core import default_index_params

    big = default_index_params(1_000_000, 128)
    assert (big["k"], big["l"], big["n_probes"], big["policy"]) == (19, 24, 40, "unbounded")
    assert big["sketch_delta"] == 1e-6
    huge = default_index_params(4_000_000, 128)  # bits capped: the bucket offsets are kept
    assert huge["k"] == 19 and huge["l"] * 2 ** huge["k"] <= 2**24
    small = default_index_params(10_000, 128)  # unchanged below 2**19 keys
    assert (small["k"], small["l"], small["n_probes"]) == (9, 16, 16)


def test_a_key_that_cancels_its_query_is_replaced_not_nan():
    # the nearest (only) slot holds the label with key = -q: normalize(q + key) is 0/0;
    # the strengthened key must be the query, never NaN
    mem = LSHMemory(key_dim=8, size=16, exact=True, seed=0)
    q = np.zeros((1, 8), np.float32)
    q[0, 0] = 1.0
    mem.write(-q, np.array([3]))
    sel = mem.update(q, np.array([3]))
    assert bool(sel.correct[0])  # the cancelling slot was the (correct) nearest one
    assert np.isfinite(mem.keys).all()
    np.testing.assert_array_equal(mem.keys[0], q[0])
    np.testing.assert_array_equal(mem.query(q).slots, [0])


def test_the_sketch_rerank_finds_what_scoring_every_candidate_finds():
    # the default index (sign-sketch re-rank) against the same index scoring every
    # candidate: same nearest slots, same top-256 candidates, fewer exact scores
    rng = np.random.default_rng(11)
    centers = rng.standard_normal((60, 32))
    keys = centers[rng.integers(0, 60, 6000)] + 0.5 * rng.standard_normal((6000, 32))
    params = default_index_params(6000, 32)
    assert params["sketch_delta"] == 1e-6
    sketch = LSHMemory(32, 6000, seed=0)
    plain = LSHMemory(32, 6000, seed=0, index=params | {"sketch_delta": None})
    for mem in (sketch, plain):
        mem.write(keys, np.arange(6000) % 500)
    q = keys[rng.integers(0, 6000, 80)] + 0.1 * rng.standard_normal((80, 32))
    a, b = sketch.query(q), plain.query(q)
    np.testing.assert_array_equal(a.slots, b.slots)
    np.testing.assert_array_equal(a.values, b.values)
    sa, sb = sketch.select(q, np.arange(80)), plain.select(q, np.arange(80))
    np.testing.assert_array_equal(sa.candidates, sb.candidates)
    assert sketch.index.rerank_mults < plain.index.rerank_mults
