"""Dataset loaders: scikit-learn digits, MNIST, Fashion-MNIST and XMC multi-label files.

Every loader returns a :class:`Dataset` whose dense features are float32 in [0, 1] and
whose labels are int64 (multi-label data: CSR features and a CSR 0/1 label matrix).
Files are read strictly: a wrong magic number, a truncated file, a count mismatch or a
malformed line raises :class:`~lshcore.errors.DataError` naming the file (and line).

Where MNIST / Fashion-MNIST are looked for, in order (first directory holding all four
IDX files wins): ``data_dir`` (and its ``mnist`` / ``fashion-mnist`` subfolder),
``$LSHCORE_DATA`` (same), the cache (``$LSHCORE_CACHE``, else
``$XDG_CACHE_HOME/lshcore``, else ``~/.cache/lshcore``; subfolder per dataset), and for
Fashion-MNIST Debian's ``/usr/share/datasets/fashion-mnist``. When none has them and
``download=True``, they are downloaded into the cache and their checksums verified.

Only NumPy and the standard library are imported at module level; scikit-learn and
scipy are imported by the functions that need them.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import struct
import tempfile
import urllib.request
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lshcore.core.validation import check_choice, check_float, check_int
from lshcore.data.xmc import XMCData, load_libsvm, load_xmc
from lshcore.data.xmc import csr_rows as _csr_rows
from lshcore.errors import ConfigError, DataError, UnknownNameError

__all__ = [
    "Dataset",
    "XMCData",
    "DATASET_NAMES",
    "XMC_FILES",
    "IDX_FILES",
    "MNIST_MD5",
    "FASHION_MNIST_GZ_MD5",
    "default_cache_dir",
    "read_idx",
    "load_digits",
    "load_mnist",
    "load_fashion_mnist",
    "load_xmc",
    "load_libsvm",
    "split_xmc",
    "load_dataset",
]

#: Environment variable naming a folder that holds the datasets.
DATA_ENV = "LSHCORE_DATA"
#: Environment variable overriding the download cache folder.
CACHE_ENV = "LSHCORE_CACHE"

#: The four standard IDX files, in the order (train images, train labels, test images, test labels).
IDX_FILES: tuple[str, str, str, str] = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)

#: Official MD5 sums of the *decompressed* MNIST files (LeCun et al.).
MNIST_MD5: dict[str, str] = {
    "train-images-idx3-ubyte.gz": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte.gz": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte.gz": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte.gz": "27ae3e4e09519cfbb04c329615203637",
}

#: Published MD5 sums of the Fashion-MNIST *.gz* files (zalandoresearch/fashion-mnist).
FASHION_MNIST_GZ_MD5: dict[str, str] = {
    "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
}

MNIST_MIRRORS: tuple[str, ...] = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)
FASHION_MNIST_MIRRORS: tuple[str, ...] = (
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
)

#: System folders searched last (Debian's ``dataset-fashion-mnist`` package layout).
SYSTEM_DIRS: dict[str, tuple[str, ...]] = {
    "mnist": (),
    "fashion-mnist": ("/usr/share/datasets/fashion-mnist",),
}

#: Single-label image datasets accepted by :func:`load_dataset`.
DATASET_NAMES: tuple[str, ...] = ("digits", "mnist", "fashion-mnist")
#: Multi-label XMC datasets accepted by :func:`load_dataset`, with their file names.
XMC_FILES: dict[str, tuple[str, ...]] = {
    "delicious": ("delicious_data.txt",),
    "bibtex": ("bibtex_data.txt",),
    "mediamill": ("mediamill_data.txt", "mediamill_small_data.txt"),
}

_DOWNLOAD_TIMEOUT_S = 60.0
# IDX type byte 0x08 = unsigned byte, the only type MNIST-like files use.
_IDX_UBYTE = 0x08


@dataclass(frozen=True)
class Dataset:
    """A train/test split.

    Single-label data: ``x_*`` dense ``(n, d)`` float32 in [0, 1], ``y_*`` ``(n,)`` int64 in
    ``[0, n_classes)``. Multi-label data (``multilabel=True``): ``x_*`` scipy CSR ``(n, d)``
    float32 and ``y_*`` scipy CSR ``(n, n_classes)`` float32 0/1 indicator matrices; use
    :meth:`label_lists` for per-point arrays of label ids.
    """

    name: str
    x_train: Any
    y_train: Any
    x_test: Any
    y_test: Any
    n_classes: int
    multilabel: bool = False
    image_shape: tuple[int, ...] | None = None
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def n_features(self) -> int:
        """Number of input features d."""
        return int(self.x_train.shape[1])

    @property
    def n_train(self) -> int:
        return int(self.x_train.shape[0])

    @property
    def n_test(self) -> int:
        return int(self.x_test.shape[0])

    def label_lists(self, split: str = "train") -> list[np.ndarray]:
        """Label ids of each point of ``split`` ("train" or "test") as int64 arrays."""
        check_choice(split, "split", ("train", "test"))
        y = self.y_train if split == "train" else self.y_test
        if not self.multilabel:
            return [np.array([v], dtype=np.int64) for v in np.asarray(y)]
        return _csr_rows(y)

    def __repr__(self) -> str:
        kind = "multi-label" if self.multilabel else "single-label"
        return (
            f"Dataset({self.name!r}, {kind}, train={self.n_train}, test={self.n_test}, "
            f"features={self.n_features}, classes={self.n_classes})"
        )


# ----------------------------------------------------------------------------- digits


def load_digits(test_fraction: float = 0.2, seed: int = 0) -> Dataset:
    """scikit-learn's bundled 8x8 handwritten digits (1,797 images, offline).

    Pixels (0..16) are scaled to [0, 1]; the split is stratified by class with ``seed``.
    """
    test_fraction = check_float(test_fraction, "test_fraction", low=0.0, high=1.0, open_low=True)
    if test_fraction >= 1.0:
        raise ConfigError(f"test_fraction must be < 1, got {test_fraction}")
    seed = check_int(seed, "seed", low=0)
    from sklearn.datasets import load_digits as sk_load_digits
    from sklearn.model_selection import train_test_split

    bunch = sk_load_digits()
    x = (np.asarray(bunch.data, dtype=np.float32) / np.float32(16.0)).astype(np.float32)
    y = np.asarray(bunch.target, dtype=np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=test_fraction, random_state=seed, stratify=y
    )
    return Dataset(
        name="digits",
        x_train=np.ascontiguousarray(x_train),
        y_train=np.ascontiguousarray(y_train),
        x_test=np.ascontiguousarray(x_test),
        y_test=np.ascontiguousarray(y_test),
        n_classes=10,
        image_shape=(8, 8),
        info={
            "test_fraction": test_fraction,
            "seed": seed,
            "source": "sklearn.datasets.load_digits",
        },
    )


# ----------------------------------------------------------------------------- IDX files


def _read_bytes(path: Path) -> bytes:
    """The decompressed content of ``path`` (gzip if it ends in .gz); DataError if damaged."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as fh:
                return fh.read()
        return path.read_bytes()
    except (OSError, EOFError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
        raise DataError(f"{path}: cannot read ({type(exc).__name__}: {exc})") from exc


def read_idx(path: str | os.PathLike[str], ndim: int | None = None) -> np.ndarray:
    """Read one IDX file of unsigned bytes (optionally gzip-compressed) as a uint8 array.

    The header is checked strictly: magic ``00 00 08 ndim`` (big-endian), one int32 per
    dimension, then exactly ``prod(dims)`` bytes. Raises DataError naming the file.
    """
    path = Path(path)
    raw = _read_bytes(path)
    return _parse_idx(raw, path, ndim)


def _parse_idx(raw: bytes, path: Path, ndim: int | None) -> np.ndarray:
    if len(raw) < 4:
        raise DataError(f"{path}: truncated IDX file ({len(raw)} bytes, no header)")
    zero1, zero2, dtype_code, file_ndim = raw[0], raw[1], raw[2], raw[3]
    if zero1 != 0 or zero2 != 0 or dtype_code != _IDX_UBYTE or file_ndim == 0:
        raise DataError(
            f"{path}: bad IDX magic number 0x{raw[:4].hex()} (expected 0x000008{(ndim or 1):02x}: "
            "unsigned-byte data)"
        )
    if ndim is not None and file_ndim != ndim:
        raise DataError(f"{path}: IDX file has {file_ndim} dimensions, expected {ndim}")
    header_len = 4 + 4 * file_ndim
    if len(raw) < header_len:
        raise DataError(f"{path}: truncated IDX header ({len(raw)} of {header_len} bytes)")
    dims = struct.unpack(f">{file_ndim}I", raw[4:header_len])
    expected = int(np.prod(dims, dtype=np.int64))
    body = len(raw) - header_len
    if body < expected:
        raise DataError(
            f"{path}: truncated IDX file: header says dims {dims} = {expected} bytes of data, "
            f"found {body}"
        )
    if body > expected:
        raise DataError(
            f"{path}: IDX file has {body - expected} unexpected trailing bytes after dims {dims}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header_len).reshape(dims)


def default_cache_dir() -> Path:
    """``$LSHCORE_CACHE``, else ``$XDG_CACHE_HOME/lshcore``, else ``~/.cache/lshcore``."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "lshcore"


def _candidate_dirs(
    sub: str, data_dir: str | os.PathLike[str] | None, cache_dir: Path
) -> list[Path]:
    places: list[Path] = []
    for base in (data_dir, os.environ.get(DATA_ENV) or None):
        if base is not None:
            base_path = Path(base).expanduser()
            places += [base_path, base_path / sub]
    places.append(cache_dir / sub)
    places += [Path(p) for p in SYSTEM_DIRS.get(sub, ())]
    unique: list[Path] = []
    for place in places:
        if place not in unique:
            unique.append(place)
    return unique


def _find_file(folder: Path, name: str) -> Path | None:
    """``name`` in ``folder``, or its uncompressed twin (``name`` without ``.gz``)."""
    for candidate in (folder / name, folder / name.removesuffix(".gz")):
        if candidate.is_file():
            return candidate
    return None


def _find_idx_dir(places: Sequence[Path]) -> list[Path] | None:
    for place in places:
        found = [_find_file(place, name) for name in IDX_FILES]
        if all(f is not None for f in found):
            return [f for f in found if f is not None]
    return None


def _md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def _download(url: str, dest: Path, timeout: float = _DOWNLOAD_TIMEOUT_S) -> None:
    """Fetch ``url`` into ``dest`` atomically (temp file + rename). Raises OSError on failure."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    try:
        request = urllib.request.Request(url, headers={"User-Agent": "lshcore"})
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(request, timeout=timeout) as resp:
            while chunk := resp.read(1 << 20):
                out.write(chunk)
        os.replace(tmp, dest)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _checksum_ok(sub: str, path: Path) -> tuple[bool, str]:
    """(ok, description) of the checksum of one downloaded file."""
    if sub == "mnist":
        want = MNIST_MD5[path.name if path.suffix == ".gz" else path.name + ".gz"]
        got = _md5(_read_bytes(path))
        return got == want, f"MD5 of decompressed content {got}, expected {want}"
    want = FASHION_MNIST_GZ_MD5[path.name]
    got = _md5(path.read_bytes())
    return got == want, f"MD5 of .gz file {got}, expected {want}"


def _download_all(sub: str, mirrors: Sequence[str], target: Path) -> list[str]:
    """Download the missing IDX files into ``target``; return the failure messages (empty = ok)."""
    failures: list[str] = []
    for name in IDX_FILES:
        dest = target / name
        if dest.is_file():
            continue
        errors = []
        for mirror in mirrors:
            url = mirror + name
            try:
                _download(url, dest)
            except Exception as exc:  # network errors come in many types
                errors.append(f"{url}: {type(exc).__name__}: {exc}")
                continue
            try:
                ok, detail = _checksum_ok(sub, dest)
            except DataError as exc:
                ok, detail = False, str(exc)
            if ok:
                break
            dest.unlink()
            errors.append(f"{url}: checksum mismatch ({detail})")
        else:
            failures.append(f"{name}: " + "; ".join(errors))
    return failures


def _load_idx_dataset(
    sub: str,
    title: str,
    mirrors: Sequence[str],
    data_dir: str | os.PathLike[str] | None,
    download: bool,
    cache_dir: str | os.PathLike[str] | None,
    verify: bool,
) -> Dataset:
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    places = _candidate_dirs(sub, data_dir, cache)
    files = _find_idx_dir(places)
    downloaded = False
    failures: list[str] = []
    if files is None and download:
        failures = _download_all(sub, mirrors, cache / sub)
        if not failures:
            files = _find_idx_dir([cache / sub])
            downloaded = True
    if files is None:
        looked = "\n  ".join(str(p) for p in places)
        msg = (
            f"{title} not found: expected the files {', '.join(IDX_FILES)} (or the same names "
            f"without .gz) in one folder; looked in:\n  {looked}\n"
            f"Pass data_dir=... or set ${DATA_ENV}."
        )
        if download:
            msg += "\nDownloading into " + str(cache / sub) + " failed:\n  " + "\n  ".join(failures)
        else:
            msg += " Downloading is disabled (download=False)."
        raise DataError(msg)
    if verify and not downloaded:
        for path in files:
            if sub == "mnist" or path.suffix == ".gz":
                ok, detail = _checksum_ok(sub, path)
                if not ok:
                    raise DataError(f"{path}: checksum mismatch ({detail})")
    train_images = read_idx(files[0], ndim=3)
    train_labels = read_idx(files[1], ndim=1)
    test_images = read_idx(files[2], ndim=3)
    test_labels = read_idx(files[3], ndim=1)
    for images, labels, img_path, lab_path in (
        (train_images, train_labels, files[0], files[1]),
        (test_images, test_labels, files[2], files[3]),
    ):
        if images.shape[0] != labels.shape[0]:
            raise DataError(
                f"{img_path}: {images.shape[0]} images but {lab_path} has {labels.shape[0]} labels"
            )
        if labels.size and labels.max() > 9:
            raise DataError(f"{lab_path}: label {int(labels.max())} is out of range [0, 10)")
    if train_images.shape[1:] != test_images.shape[1:]:
        raise DataError(
            f"{files[2]}: image shape {test_images.shape[1:]} differs from the training "
            f"images' {train_images.shape[1:]} in {files[0]}"
        )
    image_shape = tuple(int(s) for s in train_images.shape[1:])
    d = int(np.prod(image_shape))
    x_train = train_images.reshape(-1, d).astype(np.float32)
    x_train /= np.float32(255.0)  # in place: no second 188 MB temporary for MNIST
    x_test = test_images.reshape(-1, d).astype(np.float32)
    x_test /= np.float32(255.0)
    return Dataset(
        name=sub,
        x_train=x_train,
        y_train=train_labels.astype(np.int64),
        x_test=x_test,
        y_test=test_labels.astype(np.int64),
        n_classes=10,
        image_shape=image_shape,
        info={"folder": str(files[0].parent), "downloaded": downloaded},
    )


def load_mnist(
    data_dir: str | os.PathLike[str] | None = None,
    download: bool = True,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    verify: bool = False,
) -> Dataset:
    """MNIST: 60,000 train and 10,000 test images, ``x`` (n, 784) float32 in [0, 1].

    Looks in ``data_dir`` (and ``data_dir/mnist``), ``$LSHCORE_DATA`` (and ``.../mnist``),
    then ``<cache>/mnist``; downloads into the cache when absent and ``download`` is true
    (MD5 of the decompressed content verified). ``verify=True`` also checks the MD5 of
    files found locally. Raises DataError when not found or malformed.
    """
    return _load_idx_dataset("mnist", "MNIST", MNIST_MIRRORS, data_dir, download, cache_dir, verify)


def load_fashion_mnist(
    data_dir: str | os.PathLike[str] | None = None,
    download: bool = True,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    verify: bool = False,
) -> Dataset:
    """Fashion-MNIST (Zalando): same shapes and format as :func:`load_mnist`.

    Looks in ``data_dir`` (and ``data_dir/fashion-mnist``), ``$LSHCORE_DATA`` (same),
    ``<cache>/fashion-mnist``, then ``/usr/share/datasets/fashion-mnist``; downloads into
    the cache when absent (MD5 of the published .gz files verified).
    """
    return _load_idx_dataset(
        "fashion-mnist",
        "Fashion-MNIST",
        FASHION_MNIST_MIRRORS,
        data_dir,
        download,
        cache_dir,
        verify,
    )


# ----------------------------------------------------------------------------- XMC files
# load_xmc / load_libsvm are the streaming readers of lshcore.data.xmc, re-exported here;
# the on-disk store for data larger than memory is lshcore.data.store.


def split_xmc(
    data: XMCData | str | os.PathLike[str],
    test_fraction: float = 0.2,
    seed: int = 0,
    *,
    name: str | None = None,
) -> Dataset:
    """A random train/test split (``seed``) of an XMC file or :class:`XMCData` as a
    multi-label :class:`Dataset` (rows are shuffled; the permutation is in ``info``)."""
    test_fraction = check_float(test_fraction, "test_fraction", low=0.0, high=1.0, open_low=True)
    if test_fraction >= 1.0:
        raise ConfigError(f"test_fraction must be < 1, got {test_fraction}")
    seed = check_int(seed, "seed", low=0)
    if not isinstance(data, XMCData):
        data = load_xmc(data)
    n = data.n_points
    n_test = int(round(n * test_fraction))
    if n_test < 1 or n_test >= n:
        raise ConfigError(
            f"test_fraction {test_fraction} of the {n} points in {data.path} leaves an empty "
            "train or test set"
        )
    perm = np.random.default_rng(seed).permutation(n)
    test_rows, train_rows = perm[:n_test], perm[n_test:]
    if name is None:
        name = Path(data.path).name.removesuffix(".txt").removesuffix("_data")
    return Dataset(
        name=name,
        x_train=data.x[train_rows],
        y_train=data.y[train_rows],
        x_test=data.x[test_rows],
        y_test=data.y[test_rows],
        n_classes=data.n_labels,
        multilabel=True,
        info={
            "path": data.path,
            "test_fraction": test_fraction,
            "seed": seed,
            "train_rows": train_rows,
            "test_rows": test_rows,
        },
    )


# ----------------------------------------------------------------------------- dispatch


def _find_xmc(name: str, data_dir: str | os.PathLike[str] | None) -> Path:
    places: list[Path] = []
    for base in (data_dir, os.environ.get(DATA_ENV) or None):
        if base is not None:
            base_path = Path(base).expanduser()
            places += [base_path, base_path / "xmc"]
    for place in places:
        for filename in XMC_FILES[name]:
            if (place / filename).is_file():
                return place / filename
    looked = "\n  ".join(str(p) for p in places) or "(nowhere: pass data_dir or set $LSHCORE_DATA)"
    raise DataError(
        f"{name} not found: expected {' or '.join(XMC_FILES[name])} in one of:\n  {looked}\n"
        "XMC files are not downloaded automatically (get them from the Extreme "
        "Classification Repository)."
    )


def load_dataset(
    name: str,
    data_dir: str | os.PathLike[str] | None = None,
    *,
    download: bool = True,
    seed: int = 0,
    test_fraction: float = 0.2,
) -> Dataset:
    """Load a dataset by name; UnknownNameError (listing the names) otherwise.

    "digits", "mnist", "fashion-mnist": single-label images (``data_dir`` and
    ``download`` apply to the IDX datasets; ``seed`` and ``test_fraction`` to digits'
    split). "delicious", "bibtex", "mediamill": multi-label XMC files found in
    ``data_dir``, ``$LSHCORE_DATA`` or their ``xmc/`` subfolder, split by
    :func:`split_xmc` with ``test_fraction`` and ``seed`` (never downloaded).
    """
    key = str(name).strip().lower().replace("_", "-")
    if key == "digits":
        return load_digits(test_fraction=test_fraction, seed=seed)
    if key == "mnist":
        return load_mnist(data_dir, download=download)
    if key in ("fashion-mnist", "fashionmnist"):
        return load_fashion_mnist(data_dir, download=download)
    if key in XMC_FILES:
        return split_xmc(_find_xmc(key, data_dir), test_fraction=test_fraction, seed=seed, name=key)
    raise UnknownNameError("dataset", name, (*DATASET_NAMES, *XMC_FILES))
