"""LSHIndex: add/update/remove/search, scores per measure, MIPS refit, bad inputs, save/load, CLI."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import lshcore
from lshcore.core.fileformat import load_arrays, save_arrays
from lshcore.errors import ConfigError, FileFormatError, InputError
from lshcore.search.index import IndexParams, LSHIndex

HOST_BACKENDS = ["numpy", "numba"]
DIM = 12


def data(n: int, dim: int = DIM, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)


def full_index(**kw: Any) -> LSHIndex:
    """k=1 bit with 2 probes: every id is a candidate of every query, so search is exact."""
    kw = {"k": 1, "l": 2, "policy": "unbounded", "n_probes": 2, **kw}
    return LSHIndex(DIM, **kw)


def snapshot(index: LSHIndex) -> dict[str, Any]:
    """Everything an operation could change."""
    tables = {k: v.copy() for k, v in index.tables.state().items()}
    snap = {
        "ids": index.ids().tolist(),
        "tables": tables,
        "codes": index._codes.copy(),
        "row_ids": index._row_ids.copy(),
        "hash_mults": index.hash_mults,
        "next_id": index._next_id,
        "scale": None if index.transform is None else index.transform.scale,
    }
    if index.store:
        snap["vectors"] = index._vectors.copy()  # type: ignore[union-attr]
    return snap


def assert_same(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        if isinstance(a[key], dict):
            assert_same(a[key], b[key])
        elif isinstance(a[key], np.ndarray):
            assert np.array_equal(a[key], b[key]), key
        else:
            assert a[key] == b[key], key


def cosine_topk(x: np.ndarray, q: np.ndarray, k: int) -> np.ndarray:
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    return np.argsort(-(qn @ xn.T), axis=1, kind="stable")[:, :k]


# -- search ---------------------------------------------------------------------------
@pytest.mark.parametrize("backend", HOST_BACKENDS)
def test_search_is_exact_when_every_id_is_a_candidate(backend: str) -> None:
    x, q = data(300), data(7, seed=1)
    index = full_index(backend=backend)
    ids = index.add(x)
    assert np.array_equal(ids, np.arange(300))
    assert (index.candidates(q).sizes() == 300).all()
    scores, found = index.search(q, 5)
    assert found.shape == (7, 5) and scores.shape == (7, 5)
    assert np.array_equal(found, cosine_topk(x, q, 5))
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    np.testing.assert_allclose(scores, np.take_along_axis(qn @ xn.T, found, axis=1), rtol=1e-5)


def test_search_finds_itself_with_real_lsh() -> None:
    x = data(2000, dim=32)
    index = LSHIndex(32, k=8, l=8, policy="unbounded", n_probes=4)
    index.add(x)
    _, found = index.search(x[:50] + 0.01, 1)
    assert (found[:, 0] == np.arange(50)).mean() >= 0.95
    sizes = index.candidates(x[:50]).sizes()
    assert sizes.mean() < 1000  # far fewer than all 2000: the tables filter


def test_search_pads_never_fewer_rows() -> None:
    index = full_index()
    index.add(data(3), ids=[7, 8, 9])
    scores, found = index.search(data(4, seed=2), 5)
    assert found.shape == (4, 5)
    assert (np.sort(found[:, :3], axis=1) == [7, 8, 9]).all()
    assert (found[:, 3:] == -1).all() and np.isneginf(scores[:, 3:]).all()
    empty = full_index()
    s, f = empty.search(data(2), 3)
    assert (f == -1).all() and np.isneginf(s).all()


def test_mips_transform_scores_inner_products() -> None:
    x, q = data(200) * np.linspace(0.1, 3, 200, dtype=np.float32)[:, None], data(5, seed=3)
    index = full_index(transform="simple_lsh")
    index.add(x)
    scores, found = index.search(q, 4)
    ip = q @ x.T
    assert np.array_equal(found, np.argsort(-ip, axis=1, kind="stable")[:, :4])
    np.testing.assert_allclose(scores, np.take_along_axis(ip, found, axis=1), rtol=1e-5)
    assert index.measure == "ip"


def test_l2_family_scores_negative_distance() -> None:
    if lshcore.registry.catalog.family_class("pstable").measure != "l2":
        pytest.skip("pstable is not an l2 family here")
    x, q = data(150), data(3, seed=4)
    index = LSHIndex(DIM, family="pstable", k=1, l=64, policy="unbounded")
    index.add(x)
    cand = index.candidates(q)
    scores, found = index.search(q, 3)
    for i in range(3):
        ids, _ = cand.row(i)
        d = np.linalg.norm(x[ids] - q[i], axis=1)
        best = ids[np.argsort(d, kind="stable")[:3]]
        assert np.array_equal(found[i][: best.size], best)
        np.testing.assert_allclose(scores[i][: best.size], -np.sort(d)[:3], rtol=1e-4)


# -- add / update / remove ------------------------------------------------------------
@pytest.mark.parametrize("policy", ["fifo", "unbounded"])
def test_update_and_remove(policy: str) -> None:
    x = data(100)
    index = full_index(policy=policy, bucket_size=512)
    index.add(x, ids=np.arange(100) * 10)
    assert len(index) == 100 and 50 in index and 51 not in index
    index.update([50], -x[[0]])  # id 50 now points the other way
    _, found = index.search(-x[[0]], 1)
    assert found[0, 0] == 50
    assert np.allclose(index.vectors([50]), -x[[0]])
    index.remove([50, 990])
    assert len(index) == 98 and 50 not in index
    cand = index.candidates(x[:3])
    assert 50 not in cand.ids and 990 not in cand.ids
    assert np.array_equal(index.ids(), np.setdiff1d(np.arange(100) * 10, [50, 990]))
    # a freed row is reused by the next add; ids stay what the caller gave
    index.add(x[:1], ids=[5])
    assert 5 in index and 5 in index.candidates(x[:1]).ids
    _, found = index.search(x[:1], 2)
    assert set(found[0]) == {0, 5}


def test_candidates_are_ascending_ids_with_counts() -> None:
    index = LSHIndex(DIM, k=2, l=6, policy="unbounded")
    index.add(data(80), ids=np.arange(80)[::-1] * 3 + 1)  # rows != ids
    cand = index.candidates(data(5, seed=9))
    for i in range(5):
        ids, counts = cand.row(i)
        assert (np.diff(ids) > 0).all()
        assert ((counts >= 1) & (counts <= 6)).all()
        assert np.isin(ids, np.arange(80) * 3 + 1).all()


def test_store_false_keeps_no_vectors() -> None:
    x = data(120)
    index = full_index(store=False)
    index.add(x)
    assert index._vectors is None
    index.update([3], x[[4]])
    with pytest.raises(ConfigError, match="vectors"):
        index.search(x[:2], 3)
    moved = x.copy()
    moved[3] = x[4]
    _, found = index.search(x[[4]], 2, vectors=moved)
    assert set(found[0]) == {3, 4}
    with pytest.raises(InputError, match="vectors"):
        index.search(x[:2], 3, vectors=x[:10])


def test_hash_mults_are_counted() -> None:
    index = LSHIndex(DIM, k=4, l=3)
    index.add(data(10))
    assert index.hash_mults == index.family.hash_cost(10) == 10 * DIM * 12
    index.candidates(data(2))
    assert index.last_cost == 2 * DIM * 12
    assert index.hash_mults == 12 * DIM * 12
    index.search(data(2), 3)
    assert index.rerank_mults > 0


# -- MIPS refit -------------------------------------------------------------------------
def test_larger_norm_refits_and_rehashes() -> None:
    x = data(50)
    index = LSHIndex(DIM, k=4, l=4, transform="simple_lsh", policy="unbounded")
    index.add(x)
    scale = index.transform.scale  # type: ignore[union-attr]
    big = x[:2] * 10
    index.add(big, ids=[100, 101])
    assert index.transform.scale > scale  # type: ignore[union-attr]
    top = int(np.argmax(np.linalg.norm(big, axis=1)))
    # every stored id is hashed with the new scale
    rows = index._live_rows()
    want = index.tables.buckets(index.family.hash(index.transform.data(index._vectors[rows])))  # type: ignore[union-attr,index]
    assert np.array_equal(index._codes[rows], want)
    # the largest vector maps to [x/M, 0], parallel to its own query: a sure hit
    _, found = index.search(big[[top]], 1)
    assert found[0, 0] == 100 + top


def test_store_false_cannot_refit_silently() -> None:
    x = data(30)
    index = LSHIndex(DIM, k=4, l=4, transform="simple_lsh", store=False)
    index.add(x)
    before = snapshot(index)
    with pytest.raises(InputError, match="rehash"):
        index.add(x[:1] * 10, ids=[99])
    with pytest.raises(InputError, match="rehash"):
        index.update([0], x[:1] * 10)
    assert_same(before, snapshot(index))
    x2 = x.copy()
    x2[0] *= 10
    index.rehash(x2)  # the caller passes every vector: refit + rehash
    assert index.transform.scale == pytest.approx(float(np.linalg.norm(x2[0])))  # type: ignore[union-attr]


# -- rehash / rebuild ---------------------------------------------------------------------
def test_rehash_and_rebuild() -> None:
    x = data(200)
    index = LSHIndex(DIM, k=6, l=4, policy="unbounded")
    index.add(x)
    cand = index.candidates(x[:5])
    index.rehash()
    after = index.candidates(x[:5])
    assert np.array_equal(cand.ids, after.ids) and np.array_equal(cand.counts, after.counts)
    old_codes = index._codes[:200].copy()
    index.rebuild()
    assert index.seed == 1 and index.family.seed == 1
    assert not np.array_equal(old_codes, index._codes[:200])
    assert all(i in index.candidates(x[[i]]).ids for i in range(20))
    index.rebuild(seed=0)
    assert np.array_equal(old_codes, index._codes[:200])


def test_rebuild_store_false_needs_x() -> None:
    x = data(40)
    index = LSHIndex(DIM, k=6, l=4, store=False, policy="unbounded")
    index.add(x, ids=np.arange(40)[::-1])
    before = snapshot(index)
    with pytest.raises(ConfigError, match="store=False"):
        index.rebuild()
    with pytest.raises(InputError, match="40 rows"):
        index.rebuild(x=x[:5])
    assert_same(before, snapshot(index))
    index.rebuild(seed=5, x=x[::-1])  # x in ids() order (ascending ids)
    for i in range(40):
        assert (39 - i) in index.candidates(x[[i]]).ids


# -- multiprobe ---------------------------------------------------------------------------
def test_multiprobe_needs_support() -> None:
    with pytest.raises(ConfigError, match="dwta"):
        LSHIndex(DIM, family="dwta", k=2, l=2, n_probes=3)
    index = LSHIndex(DIM, family="dwta", k=2, l=2)
    index.add(np.abs(data(10)))
    with pytest.raises(ConfigError, match="dwta"):
        index.candidates(np.abs(data(2)), n_probes=2)
    more = LSHIndex(DIM, k=8, l=2, policy="unbounded")
    more.add(data(300))
    q = data(10, seed=5)
    assert (more.candidates(q, n_probes=8).sizes() >= more.candidates(q).sizes()).all()


# -- bad inputs ---------------------------------------------------------------------------
BAD_X = [
    (np.zeros((2, DIM + 1), np.float32), "shape"),
    (np.full((2, DIM), np.nan, np.float32), "NaN"),
    (np.zeros((2, DIM), dtype=bool), "dtype"),
    (np.array([["a"] * DIM] * 2), "dtype"),
    (np.zeros((0, DIM), np.float32), "empty"),
    (np.zeros(DIM, np.float32), "shape"),
]


@pytest.mark.parametrize("policy", ["fifo", "reservoir", "unbounded"])
def test_bad_inputs_leave_index_unchanged(policy: str) -> None:
    x = data(20)
    index = LSHIndex(DIM, k=4, l=3, policy=policy, transform="simple_lsh")
    index.add(x, ids=np.arange(20) + 100)
    before = snapshot(index)
    for bad, word in BAD_X:
        with pytest.raises(InputError, match=word):
            index.add(bad)
        with pytest.raises(InputError, match=word):
            index.update([100, 101], bad)
        with pytest.raises(InputError, match=word):
            index.search(bad, 3)
        with pytest.raises(InputError, match=word):
            index.candidates(bad)
    bad_ids = [
        ([-1, 5], "out of range"),
        ([2**31, 5], "out of range"),
        ([7, 7], "duplicate"),
        ([1.5, 2], "integer"),
        ([[1, 2]], "1-D"),
        ([1], "expected 2"),
    ]
    for ids, word in bad_ids:
        with pytest.raises(InputError, match=word):
            index.add(x[:2], ids=ids)
    with pytest.raises(InputError, match="already in the index"):
        index.add(x[:2], ids=[5, 100])
    with pytest.raises(InputError, match="not in the index"):
        index.remove([100, 5])
    with pytest.raises(InputError, match="not in the index"):
        index.update([100, 5], x[:2])
    with pytest.raises(InputError, match="duplicate"):
        index.remove([100, 100])
    with pytest.raises(InputError, match="empty"):
        index.remove([])
    with pytest.raises(InputError, match="expected 2 ids"):
        index.update([100, 101, 102], x[:2])
    for k in (0, -1, 2.5):
        with pytest.raises(ConfigError, match="k"):
            index.search(x[:1], k)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="n_probes"):
        index.candidates(x[:1], n_probes=0)
    assert_same(before, snapshot(index))


def test_bad_parameters() -> None:
    cases = [
        ({"policy": "lru"}, "policy"),
        ({"k": 0}, "k"),
        ({"l": 0}, "l"),
        ({"bucket_size": 0}, "bucket_size"),
        ({"n_probes": 0}, "n_probes"),
        ({"seed": -1}, "seed"),
        ({"store": "yes"}, "store"),
        ({"transform": 3}, "transform"),
    ]
    for kw, word in cases:
        with pytest.raises(ConfigError, match=word):
            LSHIndex(DIM, **kw)
    with pytest.raises(lshcore.UnknownNameError, match="srp"):
        LSHIndex(DIM, family="nope")
    with pytest.raises(ConfigError):
        LSHIndex(DIM, not_a_family_param=3)
    with pytest.raises(ConfigError, match="dim"):
        LSHIndex(0)


def test_index_params() -> None:
    p = IndexParams.default(1_000_000, 128)
    assert p.policy == "unbounded" and p.family == "srp" and p.k >= 8
    index = LSHIndex(16, **p.to_dict())
    assert index.n_probes == p.n_probes
    with pytest.raises(ConfigError, match="policy"):
        IndexParams(policy="x")


# -- save / load ----------------------------------------------------------------------------
@pytest.mark.parametrize("policy", ["fifo", "reservoir", "unbounded"])
def test_save_load_round_trip(tmp_path: Path, policy: str) -> None:
    x = data(300)
    index = LSHIndex(DIM, k=5, l=4, policy=policy, bucket_size=16, transform="simple_lsh", seed=3)
    index.add(x, ids=np.arange(300) * 7)
    index.remove([7, 14])
    index.update([21], x[[0]])
    path = tmp_path / "ix.lsh"
    index.save(path)
    loaded = LSHIndex.load(path)
    assert len(loaded) == len(index) and np.array_equal(loaded.ids(), index.ids())
    assert loaded.transform.scale == index.transform.scale  # type: ignore[union-attr]
    assert_same(snapshot(index), snapshot(loaded))
    q = data(10, seed=8)
    # the functions are rebuilt from the seed: identical codes for new vectors
    assert np.array_equal(
        loaded.family.hash(loaded.transform.data(q)), index.family.hash(index.transform.data(q))
    )  # type: ignore[union-attr]
    a, b = index.search(q, 5), loaded.search(q, 5)
    assert np.array_equal(a[1], b[1]) and np.array_equal(a[0], b[0])
    # the loaded index keeps working
    loaded.add(x[:3], ids=[7, 14, 1])
    loaded.remove([0])
    assert len(loaded) == len(index) + 2 and 7 in loaded and 0 not in loaded
    assert loaded.search(x[:4], 2)[1].shape == (4, 2)


def test_save_load_store_false_numpy_backend(tmp_path: Path) -> None:
    x = data(50)
    index = LSHIndex(DIM, k=4, l=3, store=False, backend="numpy")
    index.add(x)
    index.save(tmp_path / "a.lsh")
    loaded = LSHIndex.load(tmp_path / "a.lsh", backend="numba")
    assert loaded.backend.name == "numba" and not loaded.store
    c1, c2 = index.candidates(x[:4]), loaded.candidates(x[:4])
    assert np.array_equal(c1.ids, c2.ids) and np.array_equal(c1.counts, c2.counts)


def test_load_rejects_damaged_files(tmp_path: Path) -> None:
    index = LSHIndex(DIM, k=4, l=3)
    index.add(data(40))
    good = tmp_path / "good.lsh"
    index.save(good)
    raw = good.read_bytes()

    truncated = tmp_path / "trunc.lsh"
    truncated.write_bytes(raw[: len(raw) // 2])
    garbage = tmp_path / "garbage.lsh"
    garbage.write_bytes(b"not a zip file at all" * 10)
    flipped = tmp_path / "flipped.lsh"
    mid = bytearray(raw)
    pos = raw.index(b"tables/slots") + 200  # inside an array's data: the CRC fails
    mid[pos] ^= 0xFF
    flipped.write_bytes(bytes(mid))
    foreign = tmp_path / "foreign.lsh"
    save_arrays(foreign, "lsh-model", 1, {}, {"a": np.zeros(3)})
    plain_npz = tmp_path / "plain.npz"
    np.savez(plain_npz, a=np.zeros(3))
    newer = tmp_path / "newer.lsh"
    meta, arrays, _ = load_arrays(good, "lsh-index", 1)
    save_arrays(newer, "lsh-index", 2, meta, arrays)
    wrong_shape = tmp_path / "shape.lsh"
    save_arrays(wrong_shape, "lsh-index", 1, meta, {**arrays, "codes": arrays["codes"][:, :2]})
    bad_ids = tmp_path / "ids.lsh"
    slots = arrays["tables/slots"].copy()
    slots[0, 0, 0] = 10_000
    save_arrays(bad_ids, "lsh-index", 1, meta, {**arrays, "tables/slots": slots})
    missing = tmp_path / "missing.lsh"
    save_arrays(missing, "lsh-index", 1, meta, {k: v for k, v in arrays.items() if k != "vectors"})
    bad_meta = tmp_path / "meta.lsh"
    save_arrays(
        bad_meta, "lsh-index", 1, {**meta, "config": {**meta["config"], "policy": "lru"}}, arrays
    )
    freed = tmp_path / "freed.lsh"  # a table entry pointing at a removed id's row
    index.remove([7])
    index.save(freed)
    fmeta, farrays, _ = load_arrays(freed, "lsh-index", 1)
    fslots = farrays["tables/slots"].copy()
    fslots[fslots == 8] = 7  # row 7 is free now; counts and ranges stay consistent
    save_arrays(freed, "lsh-index", 1, fmeta, {**farrays, "tables/slots": fslots})
    other_family = tmp_path / "family.lsh"
    fam = json.loads(json.dumps(meta["family_config"]))
    fam["seed"] = 99
    save_arrays(other_family, "lsh-index", 1, {**meta, "family_config": fam}, arrays)

    for path in (
        truncated,
        garbage,
        flipped,
        foreign,
        plain_npz,
        newer,
        wrong_shape,
        bad_ids,
        missing,
        bad_meta,
        freed,
        other_family,
    ):
        with pytest.raises(FileFormatError):
            LSHIndex.load(path)
    with pytest.raises(FileNotFoundError):
        LSHIndex.load(tmp_path / "absent.lsh")
    assert zipfile.is_zipfile(good)


def test_save_is_atomic(tmp_path: Path) -> None:
    index = LSHIndex(DIM, k=4, l=3)
    index.add(data(10))
    path = tmp_path / "ix.lsh"
    index.save(path)
    index.add(data(5, seed=2))
    index.save(path)  # overwrite in place through a temporary file
    assert len(LSHIndex.load(path)) == 15
    assert [p.name for p in tmp_path.iterdir()] == ["ix.lsh"]


def test_failed_save_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A save that dies half-way (disk full, a crash) leaves the previous file whole."""
    from lshcore import fileformat

    index = LSHIndex(DIM, k=4, l=3)
    index.add(data(10))
    path = tmp_path / "ix.lsh"
    index.save(path)
    before = path.read_bytes()
    index.add(data(5, seed=2))

    def savez_then_fail(fh: Any, **arrays: Any) -> None:
        fh.write(b"PK\x03\x04 partial archive")  # some bytes reach the temporary file
        raise OSError("No space left on device")

    monkeypatch.setattr(fileformat.np, "savez", savez_then_fail)
    with pytest.raises(OSError, match="No space"):
        index.save(path)
    monkeypatch.undo()
    assert path.read_bytes() == before  # not truncated, not half-written
    assert [p.name for p in tmp_path.iterdir()] == ["ix.lsh"]  # no temporary left behind
    assert len(LSHIndex.load(path)) == 10


# -- backends -----------------------------------------------------------------------------
@pytest.mark.parametrize("policy", ["fifo", "reservoir", "unbounded"])
def test_numba_index_matches_numpy(policy: str) -> None:
    pytest.importorskip("numba")
    x, q = data(400), data(20, seed=6)
    out = []
    for backend in HOST_BACKENDS:
        index = LSHIndex(DIM, k=3, l=5, policy=policy, bucket_size=8, backend=backend, n_probes=3)
        index.add(x[:250])
        index.add(x[250:])
        index.remove(np.arange(0, 400, 5))
        index.update(np.arange(1, 50, 5), x[:10])
        out.append((index.candidates(q), index.search(q, 6)))
    (ca, sa), (cb, sb) = out
    assert np.array_equal(ca.indptr, cb.indptr) and np.array_equal(ca.ids, cb.ids)
    assert np.array_equal(ca.counts, cb.counts)
    assert np.array_equal(sa[1], sb[1])
    np.testing.assert_allclose(sa[0], sb[0], rtol=1e-5)


def test_cupy_backend_index() -> None:
    backend = lshcore.registry.lookup("backend", "cupy")
    if not backend.available():
        pytest.skip(f"cupy backend unavailable: {backend.why_unavailable()}")
    index = LSHIndex(DIM, k=4, l=3, backend="cupy")
    index.add(data(30))
    assert index.search(data(2), 3)[1].shape == (2, 3)


# -- the demo command -----------------------------------------------------------------------
def test_index_demo_cli() -> None:
    from click.testing import CliRunner

    from lshcore.cli import main

    result = CliRunner().invoke(main, ["index-demo", "--k", "8", "--l", "8", "--probes", "4"])
    assert result.exit_code == 0, result.output
    line = next(s for s in result.output.splitlines() if s.startswith("recall@10"))
    recall = float(line.rsplit(":", 1)[1])
    assert 0.8 <= recall <= 1.0
    assert "candidates per query" in result.output
    bad = CliRunner().invoke(main, ["index-demo", "--probes", "0"])
    assert bad.exit_code != 0 and "n_probes" in bad.output


# -- other families and sparse input ------------------------------------------------------
def test_minhash_scores_jaccard() -> None:
    rng = np.random.default_rng(3)
    x = (rng.random((120, 40)) < 0.2).astype(np.float32)
    x[:, 0] = 1  # no empty sets
    q = x[:4].copy()
    index = LSHIndex(40, family="minhash", k=1, l=12, policy="unbounded")
    index.add(x)
    assert index.tables.table_size <= 2**30
    cand = index.candidates(q)
    scores, found = index.search(q, 3)
    assert (found[:, 0] == np.arange(4)).all() and np.allclose(scores[:, 0], 1.0)
    for i in range(4):
        ids, _ = cand.row(i)
        a, b = x[ids] > 0, q[i] > 0
        jac = (a & b).sum(1) / (a | b).sum(1)
        np.testing.assert_allclose(scores[i], np.sort(jac)[::-1][:3], rtol=1e-6)


def test_sparse_input_with_store_false() -> None:
    sp = pytest.importorskip("scipy.sparse")
    dense = data(60)
    dense[np.abs(dense) < 1] = 0
    x = sp.csr_matrix(dense)
    index = LSHIndex(DIM, k=4, l=6, store=False, policy="unbounded")
    index.add(x)
    assert index.hash_mults == index.family.hash_cost(60, x.nnz)
    sparse_cand = index.candidates(x[:5])
    dense_cand = index.candidates(dense[:5])
    assert np.array_equal(sparse_cand.ids, dense_cand.ids)
    assert all(i in sparse_cand.row(i)[0] for i in range(5))
    stored = LSHIndex(DIM, k=4, l=6)
    with pytest.raises(InputError, match="store=False"):
        stored.add(x)
    assert len(stored) == 0


def test_dense_ids_membership() -> None:
    # ids 0..n-1 take the vectorized row lookup; removed and unseen ids must still fail
    x = data(30)
    index = LSHIndex(DIM, k=4, l=3, policy="unbounded")
    index.add(x)
    index.remove([4])
    before = snapshot(index)
    for ids in ([4], [3, 30], [2**31 - 1]):
        with pytest.raises(InputError, match="not in the index"):
            index.remove(ids)
        with pytest.raises(InputError, match="not in the index"):
            index.update(ids, x[: len(ids)])
    with pytest.raises(InputError, match="already in the index"):
        index.add(x[:2], ids=[4, 5])
    assert_same(before, snapshot(index))
    index.add(x[:1], ids=[4])
    index.add(x[:1], ids=[1000])
    assert index._identity is False and 1000 in index
    index.update([1000, 4], x[:2])
    cand = index.candidates(x[:2])
    assert 1000 in cand.row(0)[0] and 4 in cand.row(1)[0]
    assert np.allclose(index.vectors([1000, 4]), x[:2])


# -- property: random operation sequences against a dict model ------------------------------
hypothesis = pytest.importorskip("hypothesis")
st = hypothesis.strategies

OPS = st.lists(
    st.tuples(
        st.sampled_from(["add", "add", "update", "remove"]),
        st.lists(st.integers(0, 7), min_size=1, max_size=3, unique=True),
        st.integers(0, 2**16),
    ),
    min_size=1,
    max_size=16,
)


@hypothesis.settings(max_examples=40, deadline=None)
@hypothesis.given(ops=OPS, policy=st.sampled_from(["fifo", "unbounded"]))
def test_random_operations_match_a_model(
    ops: list[tuple[str, list[int], int]], policy: str
) -> None:
    """A real index (6 bits per table: most ids are not candidates of a query) against a
    dict model, checking what LSH guarantees rather than exactness."""
    index = LSHIndex(DIM, "srp", k=6, l=3, policy=policy, bucket_size=64, seed=1)
    model: dict[int, np.ndarray] = {}
    for step, (op, ids, seed) in enumerate(ops):
        x = data(len(ids), seed=seed * 64 + step)  # distinct vectors per step: no score ties
        present = [i in model for i in ids]
        if op == "add":
            if any(present):
                with pytest.raises(InputError):
                    index.add(x, ids=ids)
                continue
            index.add(x, ids=ids)
            model.update({i: x[j] for j, i in enumerate(ids)})
        elif not all(present):
            with pytest.raises(InputError):
                getattr(index, op)(*((ids, x) if op == "update" else (ids,)))
        elif op == "update":
            index.update(ids, x)
            model.update({i: x[j] for j, i in enumerate(ids)})
        else:
            index.remove(ids)
            for i in ids:
                del model[i]
        assert index.ids().tolist() == sorted(model)
    q = data(6, seed=99)
    unit = {i: v / np.linalg.norm(v) for i, v in model.items()}
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    keys = np.array(sorted(model), dtype=np.int64)
    exact = (
        keys[cosine_topk(np.stack([model[i] for i in keys]), q, min(3, keys.size))]
        if keys.size
        else np.zeros((q.shape[0], 0), dtype=np.int64)
    )
    recalls, previous = [], [set() for _ in range(q.shape[0])]
    for probes in (1, 2, 4, 8):
        scores, found = index.search(q, 3, n_probes=probes)
        cand = index.candidates(q, n_probes=probes)
        for r in range(q.shape[0]):
            hit = found[r] >= 0
            n = int(hit.sum())
            # padded at the end with -1 / -inf; sorted best first; no id twice
            assert hit[:n].all() and (found[r, n:] == -1).all()
            assert np.isneginf(scores[r, n:]).all() and (np.diff(scores[r, :n]) <= 0).all()
            assert len(set(found[r, :n].tolist())) == n
            # every returned id is live, a candidate, and carries its true score
            cand_ids = set(np.asarray(cand.row(r)[0]).tolist())
            assert set(found[r, :n].tolist()) <= cand_ids <= set(model)
            true = [float(unit[int(i)] @ qn[r]) for i in found[r, :n]]
            np.testing.assert_allclose(scores[r, :n], true, rtol=1e-5, atol=1e-6)
            # fewer than 3 results only when there are fewer than 3 candidates
            assert n == min(3, len(cand_ids))
            # more probes look at a superset of buckets
            assert previous[r] <= cand_ids
            previous[r] = cand_ids
        recalls.append(
            sum(len(set(found[r].tolist()) & set(exact[r].tolist())) for r in range(q.shape[0]))
        )
    assert recalls == sorted(recalls)  # recall never drops as probes grow
    # every live id is found by its own vector (it shares all its buckets with itself)
    if model:
        s, f = index.search(np.stack([model[i] for i in keys]), 1)
        np.testing.assert_allclose(s[:, 0], 1.0, rtol=1e-5)
        np.testing.assert_array_equal(f[:, 0], keys)


def test_device_copy_of_vectors_follows_changes() -> None:
    # a backend whose arrays are not host arrays (as for cupy) gets a cached copy of the
    # stored vectors; NumPy stands in for the device here
    device = lshcore.Backend("fake-device", "lshcore.kernels.numpy_ref", host_arrays=False)
    index = full_index(backend=device)
    x = data(40)
    index.add(x)
    index.search(x[:2], 3)
    first = index._device
    index.search(x[:2], 3)
    assert index._device is first  # unchanged vectors: no new copy
    index.update([0], -x[[1]])
    _, found = index.search(-x[[1]], 1)
    assert found[0, 0] == 0 and index._device is not first
    index.remove([0])
    assert index.search(-x[[1]], 1)[1][0, 0] != 0


@pytest.mark.parametrize("backend", HOST_BACKENDS)
def test_search_store_false_with_norms(backend: str) -> None:
    x = data(60)
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    index = full_index(store=False, backend=backend)
    index.add(unit)
    want_s, want_i = index.search(unit[:5], 4, vectors=unit)
    got_s, got_i = index.search(unit[:5], 4, vectors=unit, norms=np.ones(60, np.float32))
    np.testing.assert_array_equal(got_i, want_i)
    np.testing.assert_allclose(got_s, want_s, atol=1e-5)
    # the given norms are used (not recomputed): doubling one key's norm halves its cosine
    norms = np.ones(60, np.float32)
    norms[got_i[0, 0]] = 2.0
    half_s, _ = index.search(unit[:1], 60, vectors=unit, norms=norms)
    assert np.isclose(half_s[0], got_s[0, 0] / 2).any()
    with pytest.raises(InputError, match="norms"):
        index.search(unit[:2], 3, vectors=unit, norms=np.ones(59, np.float32))
    with pytest.raises(InputError, match="norms"):
        index.search(unit[:2], 3, vectors=unit, norms=-np.ones(60, np.float32))
    with pytest.raises(InputError, match="vectors"):
        index.search(unit[:2], 3, vectors=unit[:, :5].copy(), norms=np.ones(60, np.float32))
    stored = full_index(backend=backend)
    stored.add(unit)
    with pytest.raises(ConfigError, match="norms"):
        stored.search(unit[:2], 3, vectors=unit, norms=np.ones(60, np.float32))


@pytest.mark.parametrize("backend", ["numpy", "numba"])
@pytest.mark.parametrize("policy", ["fifo", "unbounded"])
def test_vectors_beyond_float32_score_range_are_refused(backend: str, policy: str) -> None:
    """Issue 9: a vector near 1e20 was accepted but scored 0 (its squared norm overflowed
    float32), so no search found it again. Now: refused with a clear error, index
    unchanged; large vectors below the limit keep exact, finite scores."""
    if backend == "numba":
        pytest.importorskip("numba")
    from lshcore.search.index import MAX_NORM

    rng = np.random.default_rng(3)
    x = rng.standard_normal((20, DIM)).astype(np.float32)
    index = LSHIndex(DIM, "srp", k=4, l=8, policy=policy, backend=backend, seed=0)
    index.add(x)
    huge = np.full((1, DIM), 1e20, dtype=np.float32)
    for call in (lambda: index.add(huge), lambda: index.update([0], huge)):
        with pytest.raises(InputError, match=r"x: row 0 has norm .* above the limit"):
            call()
    with pytest.raises(InputError, match=r"q: row 0 has norm"):
        index.search(huge, 3)
    assert len(index) == 20
    np.testing.assert_array_equal(index.vectors([0]), x[:1])
    # just below the limit: stored, found, and scored exactly (cosine 1 with itself)
    d = rng.standard_normal((2, DIM))
    big = (d / np.linalg.norm(d, axis=1, keepdims=True) * (MAX_NORM / 2)).astype(np.float32)
    ids = index.add(big)
    scores, got = index.search(big, 1)
    np.testing.assert_array_equal(got[:, 0], ids)
    np.testing.assert_allclose(scores[:, 0], 1.0, rtol=1e-5)
    assert np.isfinite(scores).all()


def test_l2_index_refuses_overflowing_vectors() -> None:
    index = LSHIndex(DIM, "pstable", k=4, l=4, backend="numpy", seed=0)
    with pytest.raises(InputError, match="above the limit"):
        index.add(np.full((1, DIM), 1e19, dtype=np.float32))
    assert len(index) == 0
