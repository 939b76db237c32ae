"""Tests of lshcore.data.datasets: digits, MNIST IDX files, Fashion-MNIST search, XMC files."""

from __future__ import annotations

import gzip
import hashlib
import struct
from pathlib import Path

import numpy as np
import pytest

from lshcore import datasets
from lshcore.data.datasets import (
    IDX_FILES,
    MNIST_MD5,
    Dataset,
    load_dataset,
    load_digits,
    load_fashion_mnist,
    load_mnist,
    load_xmc,
    read_idx,
    split_xmc,
)
from lshcore.errors import ConfigError, DataError, UnknownNameError

REPO_ROOT = Path(__file__).resolve().parents[1]
# ../shared/data from the main checkout; ../../shared/data from a worktree under wt/
SHARED = next(
    (
        p / "shared" / "data"
        for p in (REPO_ROOT.parent, REPO_ROOT.parent.parent)
        if (p / "shared" / "data").is_dir()
    ),
    REPO_ROOT.parent / "shared" / "data",
)
MNIST_DIR = SHARED / "mnist"
XMC_DIR = SHARED / "xmc"

needs_mnist = pytest.mark.skipif(
    not all((MNIST_DIR / f).is_file() for f in IDX_FILES),
    reason=f"MNIST IDX files not found in {MNIST_DIR}",
)
needs_xmc = pytest.mark.skipif(not XMC_DIR.is_dir(), reason=f"XMC files not found in {XMC_DIR}")


@pytest.fixture(autouse=True)
def _isolated_places(monkeypatch, tmp_path):
    """No test may see the user's $LSHCORE_DATA, cache, system folders or network."""
    monkeypatch.delenv("LSHCORE_DATA", raising=False)
    monkeypatch.setenv("LSHCORE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(datasets, "SYSTEM_DIRS", {"mnist": (), "fashion-mnist": ()})

    def no_network(url, dest, timeout=0.0):
        raise OSError(f"network disabled in tests ({url})")

    monkeypatch.setattr(datasets, "_download", no_network)


# ----------------------------------------------------------------------------- helpers


def idx_bytes(array: np.ndarray) -> bytes:
    array = np.asarray(array, dtype=np.uint8)
    header = bytes([0, 0, 8, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.tobytes()


def write_gz(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wb") as fh:
        fh.write(data)
    return path


def write_fake_idx_set(folder: Path, n_train: int = 12, n_test: int = 5, side: int = 4) -> dict:
    """Four small valid IDX .gz files; returns the arrays written."""
    rng = np.random.default_rng(0)
    arrays = {
        IDX_FILES[0]: rng.integers(0, 256, (n_train, side, side), dtype=np.uint8),
        IDX_FILES[1]: rng.integers(0, 10, n_train, dtype=np.uint8),
        IDX_FILES[2]: rng.integers(0, 256, (n_test, side, side), dtype=np.uint8),
        IDX_FILES[3]: rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    for name, arr in arrays.items():
        write_gz(folder / name, idx_bytes(arr))
    return arrays


# ----------------------------------------------------------------------------- digits


def test_digits_shapes_range_and_stratified_split():
    data = load_digits(test_fraction=0.2, seed=0)
    assert isinstance(data, Dataset)
    assert data.x_train.shape == (1437, 64) and data.x_test.shape == (360, 64)
    assert data.x_train.dtype == np.float32 and data.y_train.dtype == np.int64
    assert data.x_train.min() >= 0.0 and data.x_train.max() == 1.0
    assert set(np.unique(data.y_train)) == set(range(10))
    assert data.n_classes == 10 and data.n_features == 64 and data.image_shape == (8, 8)
    # Stratified: every class has about the same share in the test split as overall.
    share_test = np.bincount(data.y_test, minlength=10) / data.n_test
    share_train = np.bincount(data.y_train, minlength=10) / data.n_train
    assert np.abs(share_test - share_train).max() < 0.01


def test_digits_split_is_deterministic_and_seed_dependent():
    a, b, c = load_digits(seed=0), load_digits(seed=0), load_digits(seed=1)
    np.testing.assert_array_equal(a.x_train, b.x_train)
    np.testing.assert_array_equal(a.y_test, b.y_test)
    assert not np.array_equal(a.y_test, c.y_test)
    # The split is a partition of all 1,797 images.
    assert a.n_train + a.n_test == 1797


@pytest.mark.parametrize("bad", [0.0, 1.0, -0.1, 1.5, float("nan")])
def test_digits_rejects_bad_test_fraction(bad):
    with pytest.raises(ConfigError, match="test_fraction"):
        load_digits(test_fraction=bad)


# ----------------------------------------------------------------------------- real MNIST


@needs_mnist
def test_mnist_from_shared_data_shapes_labels_and_md5():
    data = load_mnist(MNIST_DIR, download=False)
    assert data.x_train.shape == (60000, 784) and data.x_test.shape == (10000, 784)
    assert data.y_train.shape == (60000,) and data.y_test.shape == (10000,)
    assert data.x_train.dtype == np.float32 and data.y_train.dtype == np.int64
    assert 0.0 <= data.x_train.min() and data.x_train.max() == 1.0
    assert set(np.unique(data.y_train)) == set(range(10))
    assert set(np.unique(data.y_test)) == set(range(10))
    assert data.image_shape == (28, 28) and data.n_classes == 10
    # The bytes we parsed are exactly the official files: MD5 of the decompressed content.
    for name in IDX_FILES:
        with gzip.open(MNIST_DIR / name, "rb") as fh:
            assert hashlib.md5(fh.read()).hexdigest() == MNIST_MD5[name]
    # And the pixels we return are those bytes (first training image, rescaled).
    raw = read_idx(MNIST_DIR / IDX_FILES[0], ndim=3)
    np.testing.assert_allclose(data.x_train[0] * 255.0, raw[0].ravel(), atol=1e-3)


def test_mnist_found_through_env_var_and_subfolder(monkeypatch, tmp_path):
    arrays = write_fake_idx_set(tmp_path / "data" / "mnist")
    monkeypatch.setenv("LSHCORE_DATA", str(tmp_path / "data"))  # <dir>/mnist holds the files
    data = load_dataset("mnist", download=False)
    np.testing.assert_array_equal(data.y_train, arrays[IDX_FILES[1]])
    assert Path(data.info["folder"]) == tmp_path / "data" / "mnist"


@needs_mnist
def test_mnist_verify_checks_local_md5():
    data = load_mnist(MNIST_DIR, download=False, verify=True)
    assert data.n_test == 10000


# ----------------------------------------------------------------------------- synthetic IDX


def test_small_idx_set_roundtrip(tmp_path):
    arrays = write_fake_idx_set(tmp_path / "mnist")
    data = load_mnist(tmp_path, download=False)  # found in <dir>/mnist
    assert data.x_train.shape == (12, 16) and data.image_shape == (4, 4)
    np.testing.assert_allclose(
        data.x_train * 255.0, arrays[IDX_FILES[0]].reshape(12, 16), atol=1e-3
    )
    np.testing.assert_array_equal(data.y_test, arrays[IDX_FILES[3]])


def test_uncompressed_idx_files_are_accepted(tmp_path):
    arrays = write_fake_idx_set(tmp_path)
    for name in IDX_FILES:
        (tmp_path / name.removesuffix(".gz")).write_bytes(idx_bytes(arrays[name]))
        (tmp_path / name).unlink()
    data = load_mnist(tmp_path, download=False)
    np.testing.assert_array_equal(data.y_train, arrays[IDX_FILES[1]])


def test_wrong_magic_names_file(tmp_path):
    write_fake_idx_set(tmp_path)
    bad = bytearray(idx_bytes(np.zeros((12, 4, 4), np.uint8)))
    bad[2] = 0x0D  # float32 type code: not unsigned bytes
    write_gz(tmp_path / IDX_FILES[0], bytes(bad))
    with pytest.raises(DataError, match="train-images-idx3-ubyte.gz.*magic"):
        load_mnist(tmp_path, download=False)


def test_wrong_number_of_dimensions(tmp_path):
    write_fake_idx_set(tmp_path)
    write_gz(tmp_path / IDX_FILES[1], idx_bytes(np.zeros((12, 2), np.uint8)))
    with pytest.raises(DataError, match="train-labels-idx1-ubyte.gz.*2 dimensions"):
        load_mnist(tmp_path, download=False)


def test_truncated_data_names_file(tmp_path):
    write_fake_idx_set(tmp_path)
    full = idx_bytes(np.zeros((5, 4, 4), np.uint8))
    write_gz(tmp_path / IDX_FILES[2], full[:-7])
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte.gz: truncated"):
        load_mnist(tmp_path, download=False)


def test_truncated_header(tmp_path):
    path = write_gz(tmp_path / "x.gz", bytes([0, 0, 8, 3, 0, 0]))
    with pytest.raises(DataError, match="truncated IDX header"):
        read_idx(path)


def test_trailing_bytes_rejected(tmp_path):
    path = write_gz(tmp_path / "x.gz", idx_bytes(np.zeros(4, np.uint8)) + b"\x00")
    with pytest.raises(DataError, match="trailing"):
        read_idx(path)


def test_truncated_gzip_stream_names_file(tmp_path):
    write_fake_idx_set(tmp_path)
    target = tmp_path / IDX_FILES[0]
    target.write_bytes(target.read_bytes()[:30])
    with pytest.raises(DataError, match="train-images-idx3-ubyte.gz: cannot read"):
        load_mnist(tmp_path, download=False)


def test_count_mismatch_between_images_and_labels(tmp_path):
    write_fake_idx_set(tmp_path)
    write_gz(tmp_path / IDX_FILES[1], idx_bytes(np.zeros(11, np.uint8)))
    with pytest.raises(DataError, match="12 images but .*train-labels-idx1-ubyte.gz has 11"):
        load_mnist(tmp_path, download=False)


def test_label_out_of_range(tmp_path):
    write_fake_idx_set(tmp_path)
    write_gz(tmp_path / IDX_FILES[3], idx_bytes(np.full(5, 10, np.uint8)))
    with pytest.raises(DataError, match="t10k-labels.*label 10 is out of range"):
        load_mnist(tmp_path, download=False)


def test_verify_detects_non_official_files(tmp_path):
    write_fake_idx_set(tmp_path)
    with pytest.raises(DataError, match="checksum mismatch"):
        load_mnist(tmp_path, download=False, verify=True)


# ----------------------------------------------------------------------------- offline errors


def test_offline_no_download_names_files_and_places(tmp_path, monkeypatch):
    empty = tmp_path / "empty"
    empty.mkdir()
    env_dir = tmp_path / "envdata"
    monkeypatch.setenv("LSHCORE_DATA", str(env_dir))
    with pytest.raises(DataError) as info:
        load_mnist(empty, download=False)
    msg = str(info.value)
    for name in IDX_FILES:
        assert name in msg
    for place in (empty, empty / "mnist", env_dir, env_dir / "mnist", tmp_path / "cache" / "mnist"):
        assert str(place) in msg
    assert "download=False" in msg


def test_download_failure_is_a_data_error(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError) as info:
        load_mnist(empty, download=True)
    msg = str(info.value)
    assert "network disabled in tests" in msg and "train-images-idx3-ubyte.gz" in msg
    assert str(empty) in msg
    # Nothing half-written is left in the cache.
    cache = tmp_path / "cache" / "mnist"
    assert not cache.exists() or not any(cache.iterdir())


def _serve_files(monkeypatch, files: dict[str, bytes], calls: list[str]):
    def fake_download(url, dest, timeout=0.0):
        calls.append(url)
        name = url.rsplit("/", 1)[1]
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(files[name])

    monkeypatch.setattr(datasets, "_download", fake_download)


def test_download_rejects_checksum_mismatch_and_cleans_up(tmp_path, monkeypatch):
    fake = tmp_path / "fake"
    write_fake_idx_set(fake)
    calls: list[str] = []
    _serve_files(monkeypatch, {n: (fake / n).read_bytes() for n in IDX_FILES}, calls)
    with pytest.raises(DataError, match="checksum mismatch"):
        load_mnist(tmp_path / "nothing", download=True)
    assert len(calls) == 4 * len(datasets.MNIST_MIRRORS)  # every mirror tried for every file
    assert not any((tmp_path / "cache" / "mnist").glob("*.gz"))


def test_download_with_valid_checksums_lands_in_cache(tmp_path, monkeypatch):
    fake = tmp_path / "served"
    arrays = write_fake_idx_set(fake)
    # Pin the checksums of the served files: MNIST's are of the decompressed content.
    pinned = {n: hashlib.md5(idx_bytes(arrays[n])).hexdigest() for n in IDX_FILES}
    monkeypatch.setattr(datasets, "MNIST_MD5", pinned)
    calls: list[str] = []
    _serve_files(monkeypatch, {n: (fake / n).read_bytes() for n in IDX_FILES}, calls)
    data = load_mnist(tmp_path / "nothing", download=True)
    assert data.info["downloaded"] is True
    np.testing.assert_array_equal(data.y_test, arrays[IDX_FILES[3]])
    assert len(calls) == 4 and calls[0].startswith(datasets.MNIST_MIRRORS[0])
    assert sorted(p.name for p in (tmp_path / "cache" / "mnist").iterdir()) == sorted(IDX_FILES)
    # A second call finds the cached files and downloads nothing.
    again = load_mnist(tmp_path / "nothing", download=True)
    assert again.info["downloaded"] is False and len(calls) == 4


def test_download_falls_back_to_next_mirror(tmp_path, monkeypatch):
    fake = tmp_path / "served"
    arrays = write_fake_idx_set(fake)
    pinned = {n: hashlib.md5(idx_bytes(arrays[n])).hexdigest() for n in IDX_FILES}
    monkeypatch.setattr(datasets, "MNIST_MD5", pinned)
    calls: list[str] = []

    def flaky(url, dest, timeout=0.0):
        calls.append(url)
        if url.startswith(datasets.MNIST_MIRRORS[0]):
            raise OSError("HTTP Error 403: Forbidden")
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes((fake / url.rsplit("/", 1)[1]).read_bytes())

    monkeypatch.setattr(datasets, "_download", flaky)
    data = load_mnist(tmp_path / "nothing", download=True)
    assert data.info["downloaded"] is True and len(calls) == 8


def test_fashion_download_checks_gz_md5(tmp_path, monkeypatch):
    fake = tmp_path / "served"
    write_fake_idx_set(fake)
    served = {n: (fake / n).read_bytes() for n in IDX_FILES}
    calls: list[str] = []
    _serve_files(monkeypatch, served, calls)
    with pytest.raises(DataError, match="MD5 of .gz file"):
        load_fashion_mnist(tmp_path / "nothing", download=True)
    monkeypatch.setattr(
        datasets, "FASHION_MNIST_GZ_MD5", {n: hashlib.md5(b).hexdigest() for n, b in served.items()}
    )
    data = load_fashion_mnist(tmp_path / "nothing", download=True)
    assert data.name == "fashion-mnist" and data.info["downloaded"] is True


def test_fashion_mnist_searches_its_own_places(tmp_path, monkeypatch):
    system = tmp_path / "usr-share-datasets-fashion-mnist"
    arrays = write_fake_idx_set(system, n_train=7, n_test=3)
    monkeypatch.setattr(datasets, "SYSTEM_DIRS", {"mnist": (), "fashion-mnist": (str(system),)})
    data = load_fashion_mnist(download=False)
    assert data.name == "fashion-mnist" and data.n_train == 7
    np.testing.assert_array_equal(data.y_train, arrays[IDX_FILES[1]])
    # MNIST does not look in the Fashion-MNIST folders.
    with pytest.raises(DataError):
        load_mnist(download=False)


def test_fashion_mnist_offline_error_lists_system_dir(tmp_path, monkeypatch):
    # a system folder that holds nothing (the real one may be installed on this machine)
    system = tmp_path / "usr-share" / "fashion-mnist"
    monkeypatch.setattr(datasets, "SYSTEM_DIRS", {"mnist": (), "fashion-mnist": (str(system),)})
    with pytest.raises(DataError) as info:
        load_fashion_mnist(tmp_path, download=True)
    msg = str(info.value)
    assert str(system) in msg
    assert str(tmp_path / "fashion-mnist") in msg
    assert "fashion-mnist.s3-website" in msg  # the mirror that was tried


# ----------------------------------------------------------------------------- dispatch


def test_load_dataset_dispatch_and_unknown_name():
    assert load_dataset("digits").name == "digits"
    with pytest.raises(UnknownNameError) as info:
        load_dataset("cifar10")
    for known in ("digits", "mnist", "fashion-mnist"):
        assert repr(known) in str(info.value)


# ----------------------------------------------------------------------------- XMC files

XMC_TABLE = {
    "delicious_data.txt": (16105, 500, 983, 19.0),
    "bibtex_data.txt": (7395, 1836, 159, 2.4),
    "mediamill_small_data.txt": (2500, 120, 101, None),
}


@needs_xmc
@pytest.mark.parametrize("filename", sorted(XMC_TABLE))
def test_xmc_shared_files_match_readme_table(filename):
    n, d, n_labels, per_point = XMC_TABLE[filename]
    data = load_xmc(XMC_DIR / filename)
    assert (data.n_points, data.n_features, data.n_labels) == (n, d, n_labels)
    assert data.x.shape == (n, d) and data.y.shape == (n, n_labels)
    assert data.x.dtype == np.float32 and data.x.has_sorted_indices
    assert np.isfinite(data.x.data).all()
    lists = data.label_lists()
    assert len(lists) == n
    assert all(ids.dtype == np.int64 for ids in lists[:10])
    if per_point is not None:
        assert round(data.y.nnz / n, 1) == per_point
    # Spot-check the first point against the raw text.
    first = (XMC_DIR / filename).read_text().split("\n")[1]
    label_text, _, feats = first.partition(" ")
    expected_labels = sorted({int(t) for t in label_text.split(",")}) if label_text else []
    assert lists[0].tolist() == expected_labels
    f_ids = [int(tok.split(":")[0]) for tok in feats.split()]
    assert sorted(set(f_ids)) == data.x[0].indices.tolist()


def write_xmc(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


GOOD_XMC = "4 5 3\n0,2 0:1 3:0.5\n 1:2\n1 \n2,2 4:1e-3 0:2 0:1\n"


def test_xmc_small_file_parsed_exactly(tmp_path):
    data = load_xmc(write_xmc(tmp_path / "ok.txt", GOOD_XMC))
    dense = data.x.toarray()
    expected = np.array(
        [[1, 0, 0, 0.5, 0], [0, 2, 0, 0, 0], [0, 0, 0, 0, 0], [3, 0, 0, 0, 1e-3]], np.float32
    )
    np.testing.assert_allclose(dense, expected)  # duplicate feature 0 summed
    assert [ids.tolist() for ids in data.label_lists()] == [[0, 2], [], [1], [2]]
    np.testing.assert_array_equal(data.y.toarray().sum(axis=1), [2, 0, 1, 1])


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        ("4 5\n", r"line 1: bad header"),
        ("a b c\n", r"line 1: bad header"),
        ("2 5 3\n0 0:1\n", r"line 3: header says 2 points but the file has 1"),
        (
            "1 5 3\n0 0:1\n1 1:1\n",
            r"line 3: header says 1 points but the file has at least 2 data lines",
        ),
        ("2 5 3\n0 0:1\n3 1:1\n", r"line 3: label id 3 is out of range \[0, 3\)"),
        ("2 5 3\n0 0:1\n1,x 1:1\n", r"line 3: bad label id 'x'"),
        ("2 5 3\n0 5:1\n1 1:1\n", r"line 2: feature id 5 is out of range \[0, 5\)"),
        ("2 5 3\n0 0:1\n1 1-1\n", r"line 3: bad feature 'f:v' pair '1-1'"),
        ("2 5 3\n0 0:1\n1 1:abc\n", r"line 3: bad feature 'f:v' pair '1:abc'"),
        ("2 5 3\n0 0:nan\n1 1:1\n", r"line 2: feature 0 has non-finite value"),
        ("3 5 3\n0 0:1\n\n1 1:1\n", r"line 3: empty line"),
        ("2 5 3\n0 0:1\n-1 1:1\n", r"line 3: label id -1 is out of range"),
        ("2 5 3\n0 0:1\n1 1:1:2\n", r"line 3: bad feature 'f:v' pair '1:1:2'"),
        ("2 5 3\n0 0:1\n1 :2\n", r"line 3: bad feature 'f:v' pair ':2'"),
        ("2 5 3\n0 0:1\n1 x:2\n", r"line 3: bad feature 'f:v' pair 'x:2' \(feature id is not"),
        ("2 5 3\n0 0:1\n1.5 1:1\n", r"line 3: bad label id '1.5'"),
        ("2 5 3\n0 0:1\n1,,2 1:1\n", r"line 3: bad label id ''"),
        ("2 5 3\n0 0:inf\n1 1:1\n", r"line 2: feature 0 has non-finite value 'inf'"),
        ("2 5 3\n0 0:1e39\n1 1:1\n", r"line 2: feature value '1e39' overflows float32"),
        ("-2 5 3\n", r"line 1: bad header"),
        ("2 5 3 4\n", r"line 1: bad header"),
        ("", r"line 1: bad header"),
    ],
)
def test_xmc_malformed_lines_name_file_and_line(tmp_path, text, pattern):
    path = write_xmc(tmp_path / "bad.txt", text)
    with pytest.raises(DataError, match=pattern) as info:
        load_xmc(path)
    assert str(path) in str(info.value)


def test_xmc_missing_file(tmp_path):
    with pytest.raises(DataError, match="nope.txt: cannot read"):
        load_xmc(tmp_path / "nope.txt")


def test_split_xmc_partition_and_determinism(tmp_path):
    lines = [f"{i % 3} {i % 5}:{i + 1}" for i in range(20)]
    path = write_xmc(tmp_path / "toy_data.txt", "20 5 3\n" + "\n".join(lines) + "\n")
    data = load_xmc(path)
    split = split_xmc(data, test_fraction=0.25, seed=7)
    assert split.multilabel and split.name == "toy"
    assert split.n_train == 15 and split.n_test == 5 and split.n_classes == 3
    rows = np.concatenate([split.info["train_rows"], split.info["test_rows"]])
    assert sorted(rows.tolist()) == list(range(20))
    # Rows follow their labels: feature value i+1 belongs to point i, label i % 3.
    for k, row in enumerate(split.info["test_rows"]):
        assert split.x_test[k].data.tolist() == [row + 1]
        assert split.label_lists("test")[k].tolist() == [row % 3]
    again = split_xmc(path, test_fraction=0.25, seed=7)
    np.testing.assert_array_equal(again.info["test_rows"], split.info["test_rows"])
    other = split_xmc(data, test_fraction=0.25, seed=8)
    assert not np.array_equal(other.info["test_rows"], split.info["test_rows"])
    with pytest.raises(ConfigError, match="empty train or test set"):
        split_xmc(data, test_fraction=0.01)
    with pytest.raises(ConfigError, match="split"):
        split.label_lists("validation")


@needs_xmc
def test_load_dataset_xmc_by_name(monkeypatch):
    data = load_dataset("bibtex", SHARED, seed=0, test_fraction=0.2)
    assert data.multilabel and data.name == "bibtex" and data.n_classes == 159
    assert data.n_train + data.n_test == 7395 and data.n_test == 1479
    monkeypatch.setenv("LSHCORE_DATA", str(SHARED))
    assert load_dataset("mediamill").n_features == 120


def test_load_dataset_xmc_missing_names_places(tmp_path):
    with pytest.raises(DataError) as info:
        load_dataset("delicious", tmp_path)
    msg = str(info.value)
    assert "delicious_data.txt" in msg and str(tmp_path / "xmc") in msg
