"""Tests of the streaming XMC/libsvm readers, the on-disk CSR store, synth-xmc and
``lshcore data``."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from lshcore.cli import main
from lshcore.data import store as store_mod
from lshcore.data.datasets import load_xmc as datasets_load_xmc
from lshcore.data.datasets import split_xmc
from lshcore.data.store import StoreWriter, convert, open_store
from lshcore.data.synth import prototype_features, synth_xmc
from lshcore.data.xmc import TextReader, load_libsvm, load_xmc, read_header
from lshcore.errors import ConfigError, DataError

REPO_ROOT = Path(__file__).resolve().parents[1]
# ../shared/data from the main checkout; ../../shared/data from a worktree under wt/
XMC_DIR = next(
    (
        p / "shared" / "data" / "xmc"
        for p in (REPO_ROOT.parent, REPO_ROOT.parent.parent)
        if (p / "shared" / "data" / "xmc").is_dir()
    ),
    REPO_ROOT.parent / "shared" / "data" / "xmc",
)
needs_xmc = pytest.mark.skipif(not XMC_DIR.is_dir(), reason=f"XMC files not found in {XMC_DIR}")


def toy_text(
    n: int, d: int = 50, n_labels: int = 7, seed: int = 0, header: bool = True, max_feats: int = 6
) -> str:
    """A random valid XMC file body with some label-less and feature-less points."""
    rng = np.random.default_rng(seed)
    lines = [f"{n} {d} {n_labels}"] if header else []
    for _ in range(n):
        labels = sorted(set(rng.integers(0, n_labels, rng.integers(0, 4)).tolist()))
        feats = sorted(set(rng.integers(0, d, rng.integers(0, max_feats)).tolist()))
        vals = " ".join(f"{f}:{rng.uniform(0.1, 2):.4g}" for f in feats)
        lines.append(",".join(map(str, labels)) + " " + vals)
    return "\n".join(lines) + "\n"


def dense_pairs(x, y):
    return np.asarray(x.toarray()), np.asarray(y.toarray())


# ----------------------------------------------------------------------------- readers


def test_chunked_reading_equals_whole_file_reading(tmp_path):
    path = tmp_path / "toy.txt"
    path.write_text(toy_text(37))
    whole = load_xmc(path, chunk_rows=1000)
    for rows in (1, 2, 5, 36, 37):
        part = load_xmc(path, chunk_rows=rows)
        assert (part.x != whole.x).nnz == 0 and (part.y != whole.y).nnz == 0
        assert part.x.has_sorted_indices
    assert read_header(path) == (37, 50, 7)
    assert datasets_load_xmc is load_xmc  # the public name in datasets is the reader


def test_reader_exact_values_and_normalisations(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("3 4 3\n2,0,2 3:0.5 0:1 3:0.25\n 1:2\n1 \r\n\n\n")  # CRLF + trailing blanks ok
    data = load_xmc(path)
    np.testing.assert_allclose(data.x.toarray(), [[1, 0, 0, 0.75], [0, 2, 0, 0], [0, 0, 0, 0]])
    assert [ids.tolist() for ids in data.label_lists()] == [[0, 2], [], [1]]


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        # errors in a later chunk still name their own line (chunk_rows=2 below)
        (
            "6 5 3\n0 0:1\n0 0:1\n0 0:1\n0 0:1\n0 0:1\n0 0:x\n",
            r"line 7: bad feature 'f:v' pair '0:x'",
        ),
        (
            "6 5 3\n0 0:1\n0 0:1\n0 0:1\n0 0:1\n7 0:1\n0 0:1\n",
            r"line 6: label id 7 is out of range \[0, 3\)",
        ),
        (
            "5 5 3\n0 0:1\n0 0:1\n0 9:1\n0 0:1\n0 0:1\n",
            r"line 4: feature id 9 is out of range \[0, 5\)",
        ),
        ("5 5 3\n0 0:1\n0 0:1\n0 0 1\n", r"line 4: bad feature 'f:v' pair '0' \(expected one ':'"),
        (
            "5 5 3\n0 0:1\n0 0:1\n0 0:1\n",
            r"line 5: header says 5 points but the file has 3 data lines",
        ),
        (
            "2 5 3\n0 0:1\n0 0:1\n0 0:1\n",
            r"line 4: header says 2 points but the file has at least 3",
        ),
        ("4 5 3\n0 0:1\n\n0 0:1\n0 0:1\n", r"line 3: empty line"),
        ("2 5 3\n0 0:1\n0 0:-nan\n", r"line 3: feature 0 has non-finite value '-nan'"),
        ("1 5 3\n0\t0:1\n", r"line 2: bad label id"),
        ("1 3000000000 3\n", r"line 1: header asks for 3000000000 features"),
    ],
)
def test_malformed_lines_name_file_line_and_problem(tmp_path, text, pattern):
    path = tmp_path / "bad.txt"
    path.write_text(text)
    with pytest.raises(DataError, match=pattern) as info:
        load_xmc(path, chunk_rows=2)
    assert str(path) in str(info.value)


def test_libsvm_inferred_and_given_dims(tmp_path):
    path = tmp_path / "l.svm"
    path.write_text("0,4 1:1 7:2\n 2:1\n3\n")
    data = load_libsvm(path)
    assert (data.n_points, data.n_features, data.n_labels) == (3, 8, 5)
    given = load_libsvm(path, n_features=10, n_labels=6)
    assert given.x.shape == (3, 10) and given.y.shape == (3, 6)
    assert (given.x[:, :8] != data.x).nnz == 0
    with pytest.raises(DataError, match=r"l.svm, line 1: feature id 7 is out of range \[0, 5\)"):
        load_libsvm(path, n_features=5)
    one = load_libsvm(path, feature_base=1)
    assert one.n_features == 7 and one.x[0].indices.tolist() == [0, 6]
    path.write_text("0 0:1\n")
    with pytest.raises(DataError, match=r"line 1: feature id 0 is out of range \[1, "):
        load_libsvm(path, feature_base=1)
    with pytest.raises(ConfigError, match="format must be one of"):
        TextReader(path, "csv")
    with pytest.raises(ConfigError, match="only with format='libsvm'"):
        TextReader(path, "xmc", n_features=3)


def test_libsvm_header_line_is_an_error_not_a_point(tmp_path):
    path = tmp_path / "h.svm"
    path.write_text("3 5 2\n0 0:1\n")  # an XMC file read as libsvm: '5' is not an f:v pair
    with pytest.raises(DataError, match=r"line 1: bad feature 'f:v' pair '5'"):
        load_libsvm(path)


# ----------------------------------------------------------------------------- store


def test_text_to_store_round_trip_and_batches(tmp_path):
    path = tmp_path / "toy.txt"
    path.write_text(toy_text(103))
    direct = load_xmc(path)
    store = convert(path, tmp_path / "s", chunk_rows=10)
    assert (store.n, store.dim, store.n_labels) == (103, 50, 7)
    assert store.nnz == direct.x.nnz and store.label_nnz == direct.y.nnz
    loaded = store.load()
    assert (loaded.x != direct.x).nnz == 0 and (loaded.y != direct.y).nnz == 0
    reopened = open_store(tmp_path / "s", verify=True)
    got = list(reopened.batches(16, shuffle=False))
    assert [x.shape[0] for x, _ in got] == [16] * 6 + [7]
    x_all = np.vstack([x.toarray() for x, _ in got])
    y_all = np.vstack([y.toarray() for _, y in got])
    np.testing.assert_array_equal(x_all, direct.x.toarray())
    np.testing.assert_array_equal(y_all, direct.y.toarray())
    for x, y, rows in reopened.batches(16, seed=5, labels="lists", with_rows=True):
        np.testing.assert_array_equal(x.toarray(), direct.x[rows].toarray())
        assert [ids.tolist() for ids in y] == [direct.label_lists()[r].tolist() for r in rows]
    x, y = reopened.rows([5, 0, 5])
    np.testing.assert_array_equal(x.toarray(), direct.x[[5, 0, 5]].toarray())


def test_libsvm_convert_infers_dims(tmp_path):
    path = tmp_path / "l.svm"
    path.write_text(toy_text(20, d=30, n_labels=4, header=False))
    direct = load_libsvm(path)
    store = convert(path, tmp_path / "s", "libsvm", chunk_rows=3)
    assert (store.dim, store.n_labels) == (direct.n_features, direct.n_labels)
    assert (store.load().x != direct.x).nnz == 0


def test_shuffled_batches_cover_each_row_once_and_are_deterministic(tmp_path):
    path = tmp_path / "toy.txt"
    path.write_text(toy_text(250))
    store = convert(path, tmp_path / "s")

    def epoch(**kw):
        return [rows for _, _, rows in store.batches(32, with_rows=True, **kw)]

    a = epoch(seed=1, block_rows=8, window_blocks=3)
    flat = np.concatenate(a)
    assert sorted(flat.tolist()) == list(range(250))
    assert [len(r) for r in a] == [32] * 7 + [26]
    assert not np.array_equal(flat, np.arange(250))  # actually shuffled
    b = epoch(seed=1, block_rows=8, window_blocks=3)
    assert all(np.array_equal(p, q) for p, q in zip(a, b, strict=True))
    for kw in ({"seed": 2}, {"seed": 1, "epoch": 1}):
        other = np.concatenate(epoch(block_rows=8, window_blocks=3, **kw))
        assert sorted(other.tolist()) == list(range(250)) and not np.array_equal(other, flat)
    dropped = epoch(seed=1, drop_last=True)
    assert [len(r) for r in dropped] == [32] * 7
    assert len(set(np.concatenate(dropped).tolist())) == 224


def test_split_is_seeded_recorded_and_matches_split_xmc(tmp_path):
    path = tmp_path / "toy_data.txt"
    path.write_text(toy_text(90))
    store = convert(path, tmp_path / "s")
    train, test = store.split(0.2, seed=3)
    assert (train.n, test.n) == (72, 18)
    ref = split_xmc(load_xmc(path), test_fraction=0.2, seed=3)
    np.testing.assert_array_equal(np.asarray(test.row_ids), np.sort(ref.info["test_rows"]))
    manifest = json.loads((tmp_path / "s" / "manifest.json").read_text())
    entry = manifest["splits"]["seed=3,test_fraction=0.2"]
    assert (entry["seed"], entry["n_train"], entry["n_test"]) == (3, 72, 18)
    train2, test2 = open_store(tmp_path / "s").split(0.2, seed=3)
    assert isinstance(test2.row_ids, np.memmap)  # read back, not recomputed
    np.testing.assert_array_equal(np.asarray(test2.row_ids), np.asarray(test.row_ids))
    rows = np.concatenate([r for _, _, r in train2.batches(10, seed=0, with_rows=True)])
    assert sorted(rows.tolist()) == np.asarray(train.row_ids).tolist()
    assert not np.array_equal(
        np.asarray(store.split(0.2, seed=4, save=False)[1].row_ids), np.asarray(test.row_ids)
    )
    open_store(tmp_path / "s", verify=True)  # saving a split keeps the store valid
    with pytest.raises(ConfigError, match="empty train or test set"):
        store.split(0.001)


def test_interrupted_conversion_leaves_no_store(tmp_path, monkeypatch):
    path = tmp_path / "toy.txt"
    path.write_text(toy_text(50))
    out = tmp_path / "s"
    calls = {"n": 0}
    real = StoreWriter.append_chunk

    def failing(self, chunk):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # e.g. Ctrl-C mid-way
        real(self, chunk)

    monkeypatch.setattr(StoreWriter, "append_chunk", failing)
    with pytest.raises(KeyboardInterrupt):
        convert(path, out, chunk_rows=10)
    assert calls["n"] == 3
    assert not out.exists() and list(tmp_path.iterdir()) == [path]  # temp dir removed too
    with pytest.raises(DataError, match="no such store"):
        open_store(out)
    monkeypatch.undo()
    # a malformed line half-way: same outcome
    bad = tmp_path / "bad.txt"
    bad.write_text(toy_text(50).replace("\n", "\n0,x 1:1\n", 30)[:-1] + "\n")
    with pytest.raises(DataError, match="bad label id 'x'"):
        convert(bad, out, chunk_rows=4)
    assert not out.exists()


def test_leftover_partial_directory_does_not_open(tmp_path):
    out = tmp_path / "s"
    writer = StoreWriter(out, n_features=5, n_labels=3)  # then the process "dies": no commit
    writer.append(np.array([0, 1]), np.array([2], np.int32), np.array([1.0], np.float32),
                  np.array([0, 1]), np.array([0], np.int32))  # fmt: skip
    for f in writer._files.values():
        f.fh.flush()
    (leftover,) = [p for p in tmp_path.iterdir() if p.name.startswith(".s.partial-")]
    with pytest.raises(DataError, match="no manifest.json"):
        open_store(leftover)
    with pytest.raises(DataError, match="no such store"):
        open_store(out)
    path = tmp_path / "toy.txt"
    path.write_text(toy_text(5))
    assert convert(path, out).n == 5  # a fresh conversion is not confused by it
    writer.abort()
    assert not leftover.exists()


def test_damaged_stores_are_refused(tmp_path):
    path = tmp_path / "toy.txt"
    path.write_text(toy_text(40))
    out = tmp_path / "s"
    convert(path, out)
    manifest = json.loads((out / "manifest.json").read_text())

    def broken(edit, pattern, verify=False):
        target = tmp_path / f"b{len(list(tmp_path.iterdir()))}"
        convert(path, target)
        edit(target)
        with pytest.raises(DataError, match=pattern):
            open_store(target, verify=verify)

    def set_manifest(key, value):
        def edit(target):
            m = dict(manifest, **{key: value})
            (target / "manifest.json").write_text(json.dumps(m))

        return edit

    broken(set_manifest("version", 99), "format version 99")
    broken(set_manifest("format", "zip"), "not a lshcore-xmc-store manifest")
    broken(set_manifest("n_points", 41), "x_indptr: manifest entry")
    broken(lambda t: (t / "manifest.json").write_text("{"), "manifest.json is unreadable")
    broken(lambda t: (t / "x_data.npy").unlink(), "file 'x_data.npy' is missing")

    def truncate(t):
        data = (t / "x_indices.npy").read_bytes()
        (t / "x_indices.npy").write_bytes(data[:-4])

    broken(truncate, "x_indices.npy has .* bytes, expected")

    def flip(t):
        data = bytearray((t / "x_data.npy").read_bytes())
        data[-1] ^= 0xFF
        (t / "x_data.npy").write_bytes(bytes(data))

    broken(flip, "x_data.npy: SHA-256 mismatch", verify=True)
    with pytest.raises(DataError, match="already exists"):
        convert(path, out)
    assert convert(path, out, overwrite=True).n == 40
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "keep.txt").write_text("mine")
    with pytest.raises(DataError, match="is not a store; refusing"):
        convert(path, tmp_path / "plain", overwrite=True)


def _peak_bytes(fn) -> int:
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memory_does_not_grow_with_the_number_of_rows(tmp_path):
    peaks = {}
    for n in (1500, 6000):
        path = tmp_path / f"t{n}.txt"
        path.write_text(toy_text(n, d=2000, n_labels=300, seed=n, max_feats=40))
        out = tmp_path / f"s{n}"
        conv = _peak_bytes(lambda p=path, o=out: convert(p, o, chunk_rows=32))
        store = open_store(out)

        def read_all(s=store):
            for _ in s.batches(64, seed=0, window_blocks=4):
                pass

        peaks[n] = (conv, _peak_bytes(read_all), path.stat().st_size)
    (c_small, r_small, _), (c_big, r_big, size_big) = peaks[1500], peaks[6000]
    # 4x the rows: the same chunk/batch-bounded peak (slack for allocator noise)
    assert c_big < 1.3 * c_small + 64_000, peaks
    assert r_big < 1.3 * r_small + 64_000, peaks
    assert c_big < size_big / 4 and r_big < size_big / 4, peaks  # never the whole file


# ----------------------------------------------------------------------------- synth


def test_synth_power_law_labels_and_label_dependent_features(tmp_path):
    store = synth_xmc(tmp_path / "syn", 3000, 500, 4000, seed=1, chunk_rows=700)
    assert (store.n, store.dim, store.n_labels) == (3000, 4000, 500)
    data = store.load()
    freq = np.asarray(data.y.sum(axis=0)).ravel()
    assert freq.max() > 20 * max(np.median(freq), 1)  # top label >> median label
    top = np.sort(freq)[::-1]
    assert top[0] > 1.5 * top[3] > 1.5 * top[30]  # a decaying head, not a plateau
    assert data.x.data.min() > 0 and np.isfinite(data.x.data).all()
    assert 3.5 < data.y.nnz / store.n < 5.5
    # features depend on labels: the top label's prototype features are far more
    # frequent among its points than among the others
    j = int(np.argmax(freq))
    has = np.asarray(data.y[:, j].toarray()).ravel() > 0
    proto, _ = prototype_features(np.array([j]), 4000, 8, seed=1)
    present = data.x[:, np.unique(proto[0])].toarray() > 0
    assert present[has].mean() > 10 * present[~has].mean()
    again = synth_xmc(tmp_path / "syn2", 3000, 500, 4000, seed=1, chunk_rows=700).load()
    assert (again.x != data.x).nnz == 0 and (again.y != data.y).nnz == 0
    other = synth_xmc(tmp_path / "syn3", 3000, 500, 4000, seed=2, chunk_rows=700).load()
    assert (other.y != data.y).nnz > 0


@pytest.mark.parametrize("n_labels", [200_000, 670_000])
def test_synth_extreme_label_counts(tmp_path, n_labels):
    store = synth_xmc(tmp_path / "syn", 400, n_labels, 100_000, seed=0, chunk_rows=128)
    assert store.n_labels == n_labels and store.n == 400
    assert int(np.max(store.y_indices)) < n_labels
    x, y = next(store.batches(128, seed=0))
    assert x.shape == (128, 100_000) and y.shape == (128, n_labels)


def test_synth_zero_points_and_bad_parameters(tmp_path):
    assert synth_xmc(tmp_path / "z", 0, 10, 10).n == 0
    with pytest.raises(ConfigError, match="n_labels"):
        synth_xmc(tmp_path / "b", 10, 0, 10)


# ----------------------------------------------------------------------------- real data


@needs_xmc
@pytest.mark.parametrize(
    ("filename", "shape", "split"),
    [
        ("delicious_data.txt", (16105, 500, 983), (12884, 3221)),
        ("bibtex_data.txt", (7395, 1836, 159), (5916, 1479)),
        ("mediamill_small_data.txt", (2500, 120, 101), (2000, 500)),
    ],
)
def test_real_files_convert_with_header_counts(tmp_path, filename, shape, split):
    store = convert(XMC_DIR / filename, tmp_path / "s")
    assert (store.n, store.dim, store.n_labels) == shape == tuple(read_header(XMC_DIR / filename))
    train, test = store.split(0.2, seed=0)
    assert (train.n, test.n) == split  # the split recorded in docs/datasets.md


# ----------------------------------------------------------------------------- CLI


def test_cli_convert_info_split_synth(tmp_path):
    runner = CliRunner()
    path = tmp_path / "toy.txt"
    path.write_text(toy_text(30))
    out = tmp_path / "s"
    res = runner.invoke(main, ["data", "convert", str(path), str(out), "--no-progress"])
    assert res.exit_code == 0, res.output
    assert "30 points, 50 features, 7 labels" in res.output and "points/s" in res.output
    res = runner.invoke(main, ["data", "convert", str(path), str(out)])
    assert res.exit_code == 1 and "already exists" in res.output
    res = runner.invoke(main, ["data", "convert", str(path), str(out), "--force", "--progress"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(main, ["data", "split", str(out), "--test-fraction", "0.2", "--seed", "1"])
    assert res.exit_code == 0 and "train 24, test 6" in res.output
    res = runner.invoke(main, ["data", "info", str(out), "--verify"])
    assert res.exit_code == 0 and "n=30" in res.output and "seed=1,test_fraction=0.2" in res.output
    res = runner.invoke(main, ["data", "info", str(out), "--json"])
    assert json.loads(res.output)["n_points"] == 30
    bad = tmp_path / "bad.txt"
    bad.write_text("2 5 3\n0 0:1\n1 7:1\n")
    res = runner.invoke(main, ["data", "convert", str(bad), str(tmp_path / "b")])
    assert res.exit_code == 1 and "line 3: feature id 7 is out of range" in res.output
    assert not (tmp_path / "b").exists()
    svm = tmp_path / "l.svm"
    svm.write_text("1 1:1\n0 3:2\n")
    res = runner.invoke(main, ["data", "convert", str(svm), str(tmp_path / "l"), "--format", "libsvm",
                               "--feature-base", "1", "--n-labels", "4"])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert (open_store(tmp_path / "l").dim, open_store(tmp_path / "l").n_labels) == (3, 4)
    res = runner.invoke(main, ["data", "synth-xmc", str(tmp_path / "y"), "--points", "300",
                               "--labels", "200000", "--features", "1000", "--seed", "3"])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert open_store(tmp_path / "y").manifest["source"]["seed"] == 3
    res = runner.invoke(main, ["data", "info", str(tmp_path / "nope")])
    assert res.exit_code == 1 and "no such store" in res.output


def test_store_module_imports_no_scipy_at_import_time():
    # scipy is imported by the functions that build CSR matrices only
    assert "scipy" not in store_mod.__dict__
