"""The sign-sketch re-rank of LSHIndex (``sketch_delta``): same results as scoring every
candidate (with overwhelming probability at a small delta), fewer exact scores, honest
counters, validation, updates and save/load."""

from __future__ import annotations

import numpy as np
import pytest

from lshcore import LSHIndex
from lshcore.errors import ConfigError
from lshcore.kernels import _np_tables


def _clustered(rng: np.random.Generator, n: int, d: int = 32) -> np.ndarray:
    centers = rng.standard_normal((40, d))
    x = centers[rng.integers(0, 40, n)] + 0.6 * rng.standard_normal((n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _pair(**kw: object) -> tuple[LSHIndex, LSHIndex]:
    args = dict(family="srp", k=10, l=12, policy="unbounded", n_probes=8, seed=3)
    args.update(kw)
    return LSHIndex(32, **args), LSHIndex(32, sketch_delta=1e-6, **args)  # type: ignore[arg-type]


@pytest.mark.parametrize("backend", ["numpy", "numba"])
@pytest.mark.parametrize("k", [1, 5])
def test_sketch_search_matches_scoring_every_candidate(backend: str, k: int) -> None:
    rng = np.random.default_rng(0)
    x = _clustered(rng, 3000)
    plain, sketch = _pair(backend=backend)
    plain.add(x)
    sketch.add(x)
    q = x[rng.integers(0, 3000, 60)] + 0.05 * rng.standard_normal((60, 32)).astype(np.float32)
    s0, i0 = plain.search(q, k)
    s1, i1 = sketch.search(q, k)
    np.testing.assert_array_equal(i1, i0)
    np.testing.assert_allclose(s1, s0, atol=1e-5)
    # fewer exact scores, and the sketch comparisons are counted
    assert 0 < sketch.rerank_mults < 0.8 * plain.rerank_mults
    assert sketch.sketch_words > 0 and plain.sketch_words == 0


def test_a_large_delta_prunes_more_and_can_miss() -> None:
    # delta near 1 is a loose bound: fewer candidates scored, results may differ
    rng = np.random.default_rng(1)
    x = _clustered(rng, 3000)
    tight = LSHIndex(32, k=10, l=12, policy="unbounded", n_probes=8, sketch_delta=1e-6)
    loose = LSHIndex(32, k=10, l=12, policy="unbounded", n_probes=8, sketch_delta=0.9)
    tight.add(x)
    loose.add(x)
    q = _clustered(rng, 50)
    tight.search(q, 10)
    loose.search(q, 10)
    assert loose.rerank_mults < tight.rerank_mults


def test_sketch_follows_updates_and_removals() -> None:
    rng = np.random.default_rng(2)
    x = _clustered(rng, 2000)
    plain, sketch = _pair(backend="numba")
    plain.add(x)
    sketch.add(x)
    moved = rng.choice(2000, 300, replace=False)
    new = _clustered(rng, 300)
    for index in (plain, sketch):
        index.update(moved, new)
        index.remove(moved[:50])
    q = new[50:110] + 0.02 * rng.standard_normal((60, 32)).astype(np.float32)
    _, i0 = plain.search(q, 3)
    _, i1 = sketch.search(q, 3)
    np.testing.assert_array_equal(i1, i0)
    assert np.mean(i1[:, 0] == moved[50:110]) > 0.8  # the moved keys are found


def test_sketch_survives_save_and_load(tmp_path) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(3)
    x = _clustered(rng, 1500)
    _, index = _pair(backend="numba")
    index.add(x)
    q = _clustered(rng, 40)
    want = index.search(q, 4)
    path = tmp_path / "sketch.lsh"
    index.save(path)
    loaded = LSHIndex.load(path)
    assert loaded.sketch_delta == index.sketch_delta
    assert loaded.config()["sketch_delta"] == 1e-6
    got = loaded.search(q, 4)
    np.testing.assert_array_equal(got[1], want[1])
    assert loaded.sketch_words > index.sketch_words


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(family="sparse_srp"), "sign-sketch"),
        (dict(policy="fifo"), "unbounded"),
        (dict(transform="simple_lsh"), "transform"),
        (dict(table_size=256), "range-reduces"),
        (dict(sketch_delta=0.0), r"\(0, 1\)"),
        (dict(sketch_delta=1.0), r"\(0, 1\)"),
        (dict(sketch_delta=True), "number"),
        (dict(sketch_delta="0.1"), "number"),
    ],
)
def test_bad_sketch_settings_are_refused(kwargs: dict, match: str) -> None:
    args = dict(family="srp", k=10, l=4, policy="unbounded", sketch_delta=1e-3)
    args.update(kwargs)
    with pytest.raises(ConfigError, match=match):
        LSHIndex(32, **args)  # type: ignore[arg-type]


def test_the_bound_holds_for_binomial_distances() -> None:
    # sketch_hmax: a vector at the k-th best cosine lies beyond the bound with
    # probability at most delta (checked by simulation at a loose delta)
    rng = np.random.default_rng(4)
    n_bits, delta = 256, 0.05
    for cos in (-0.3, 0.0, 0.4, 0.8, 0.97):
        p = np.arccos(cos) / np.pi
        h = rng.binomial(n_bits, p, 200_000)
        hmax = _np_tables.sketch_hmax(cos, n_bits, delta)
        assert np.mean(h > hmax) <= delta
        assert hmax < n_bits or cos < 0  # it does prune somewhere
    assert _np_tables.sketch_hmax(float("-inf"), n_bits, delta) == n_bits


def test_the_pending_directory_matches_the_reference_and_finds_recent_inserts() -> None:
    # inserts after the main run stay in the pending run; the sketch re-rank finds them
    # through the directory exactly as scoring every candidate does
    rng = np.random.default_rng(5)
    x = _clustered(rng, 3000)
    plain, sketch = _pair(backend="numba")
    for index in (plain, sketch):
        index.add(x[:2000])
        index.tables.compact()
        index.add(x[2000:])  # pending
    tables = sketch.tables
    assert tables.pending_keys.shape[0] > 0
    pdir, pshift = _np_tables.pending_directory(tables.pending_keys, tables.l * tables.table_size)
    assert pshift == tables.pshift
    np.testing.assert_array_equal(tables.pdir, pdir)
    q = x[2000:2100] + 0.02 * rng.standard_normal((100, 32)).astype(np.float32)
    _, i0 = plain.search(q, 2)
    _, i1 = sketch.search(q, 2)
    np.testing.assert_array_equal(i1, i0)
    assert np.mean(i1[:, 0] == np.arange(2000, 2100)) > 0.9


def test_a_short_pending_directory_is_refused() -> None:
    from lshcore.kernels import _numba_tables

    rng = np.random.default_rng(6)
    x = _clustered(rng, 500)
    _, index = _pair(backend="numba")
    index.add(x)
    t = index.tables
    q = x[:3]
    gk = t._global_keys(index._hash_query(q, 2))
    with pytest.raises(ValueError, match="pdir"):
        _numba_tables.sorted_query_sketch_rerank(
            t.keys, t.entry_ids, t.offsets, t.pending_keys, t.pending_ids, gk, 500, x,
            np.ones(500, np.float32), q, np.ones(3, np.float32), 1, 1, t.pdir[:1], t.pshift,
            index._sketch, index._pack_sketch(index._hash_query(q, 1)[:, :, 0]),
            index.sketch_bits, 1e-6,
        )  # fmt: skip


@pytest.mark.parametrize(
    ("k", "l", "n_bits"), [(19, 24, 456), (19, 30, 512), (7, 3, 21), (40, 2, 80)]
)
def test_sketch_packing_agrees_for_few_and_many_rows(k: int, l: int, n_bits: int) -> None:  # noqa: E741
    from lshcore.search import index as index_module

    rng = np.random.default_rng(7)
    codes = rng.integers(0, 2**k, (300, l), dtype=np.int64)
    words = 1 << max(0, ((n_bits + 63) // 64 - 1).bit_length())
    many = index_module._pack_code_bits(codes, k, n_bits, words)  # the loop over tables
    few = np.concatenate(
        [
            index_module._pack_code_bits(codes[i : i + 50], k, n_bits, words)
            for i in range(0, 300, 50)
        ]
    )
    np.testing.assert_array_equal(few, many)
    # bit t * k + j of a row is bit j of its code t
    bits = np.unpackbits(many.view(np.uint8), axis=1, bitorder="little")
    t, j = divmod(n_bits - 1, k)
    np.testing.assert_array_equal(bits[:, n_bits - 1], (codes[:, t] >> j) & 1)
    assert not bits[:, n_bits:].any()


def test_sketch_searches_run_beside_updates_from_threads() -> None:
    # readers search (sketch path, releasing the GIL) while a writer moves ids: no
    # crash, every result a valid id or padding, and the final state agrees with a
    # fresh index holding the same vectors
    import threading

    rng = np.random.default_rng(8)
    x = _clustered(rng, 2000)
    _, index = _pair(backend="numba")
    index.add(x)
    current = x.copy()
    q = _clustered(rng, 64)
    errors: list[BaseException] = []
    stop = threading.Event()

    def reader() -> None:
        try:
            while not stop.is_set():
                _, ids = index.search(q, 3)
                assert ((ids >= -1) & (ids < 2000)).all()
        except BaseException as exc:  # noqa: BLE001 (reported below)
            errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        for _ in range(20):
            ids = rng.choice(2000, 100, replace=False)
            new = _clustered(rng, 100)
            index.update(ids, new)
            current[ids] = new
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not errors, errors[0]
    fresh = LSHIndex(32, family="srp", k=10, l=12, policy="unbounded", n_probes=8, seed=3,
                     sketch_delta=1e-6)  # fmt: skip
    fresh.add(current)
    np.testing.assert_array_equal(index.search(q, 3)[1], fresh.search(q, 3)[1])
