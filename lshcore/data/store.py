"""An on-disk, memory-mapped CSR store for multi-label sparse data larger than memory.

A store is a directory::

    manifest.json      format name, version, shape, counts, and per array its file,
                       dtype, shape, byte size and SHA-256 of its data bytes
    x_indptr.npy       (n+1,)        int64   feature row pointers (from 0)
    x_indices.npy      (nnz,)        int32   feature ids, sorted and unique per row
    x_data.npy         (nnz,)        float32 feature values
    y_indptr.npy       (n+1,)        int64   label row pointers
    y_indices.npy      (label_nnz,)  int32   label ids, sorted and unique per row
    splits/...         recorded train/test splits (sorted int64 row ids)

Writing is one streaming pass (:class:`StoreWriter`): each array is appended to its own
``.npy`` file, whose fixed-size header is filled in at the end, inside a hidden temporary
directory next to the target; ``manifest.json`` is written last, then the directory is
renamed into place. An interrupted write therefore leaves at most a hidden
``.NAME.partial-*`` directory (deleted on a Python exception; safe to delete by hand
after a kill) and never a directory at the target path. :func:`open_store` refuses
anything without a valid manifest whose arrays match it (DataError).

Reading (:func:`open_store`) memory-maps the arrays; :meth:`XMCStore.batches` gathers
only the rows of the current batch, so memory is bounded by the batch, not the store.
scipy is imported by the functions that build CSR matrices.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from lshcore.core.fileformat import write_text_atomic
from lshcore.core.validation import check_choice, check_float, check_int
from lshcore.data.xmc import (
    DEFAULT_CHUNK_ROWS,
    MAX_ID,
    Chunk,
    TextReader,
    XMCData,
    progress_bar,
)
from lshcore.errors import ConfigError, DataError, InputError

__all__ = [
    "STORE_FORMAT",
    "STORE_VERSION",
    "MANIFEST",
    "StoreWriter",
    "XMCStore",
    "StoreView",
    "convert",
    "open_store",
]

STORE_FORMAT = "lshcore-xmc-store"
STORE_VERSION = 1
MANIFEST = "manifest.json"
# Every .npy file gets a header of exactly this many bytes, written once the length is
# known; 128 keeps the data 64-byte aligned for memory mapping.
_NPY_HEADER_BYTES = 128
_ARRAYS: dict[str, str] = {
    "x_indptr": "<i8",
    "x_indices": "<i4",
    "x_data": "<f4",
    "y_indptr": "<i8",
    "y_indices": "<i4",
}
_HASH_BLOCK = 1 << 24


def _npy_header(dtype: str, length: int) -> bytes:
    """A NumPy format 1.0 header for a 1-D array, padded to exactly 128 bytes."""
    body = f"{{'descr': '{dtype}', 'fortran_order': False, 'shape': ({length},), }}"
    room = _NPY_HEADER_BYTES - 10
    if len(body) + 1 > room:  # pragma: no cover - needs > 10**60 elements
        raise ValueError("array too long for the fixed header")
    text = (body + " " * (room - len(body) - 1) + "\n").encode("latin1")
    return b"\x93NUMPY\x01\x00" + len(text).to_bytes(2, "little") + text


class _NpyAppender:
    """Appends 1-D chunks of one dtype to a ``.npy`` file; the header is written last."""

    def __init__(self, path: Path, dtype: str):
        self.path = path
        self.dtype = np.dtype(dtype)
        self.length = 0
        self.sha = hashlib.sha256()
        self.fh: BinaryIO = open(path, "wb")
        self.fh.write(b"\0" * _NPY_HEADER_BYTES)

    def append(self, arr: np.ndarray) -> None:
        data = np.ascontiguousarray(arr, dtype=self.dtype).tobytes()
        self.sha.update(data)
        self.fh.write(data)
        self.length += len(data) // self.dtype.itemsize

    def finish(self) -> dict[str, Any]:
        self.fh.seek(0)
        self.fh.write(_npy_header(self.dtype.str, self.length))
        self.fh.flush()
        os.fsync(self.fh.fileno())
        self.fh.close()
        return {
            "file": self.path.name,
            "dtype": self.dtype.str,
            "shape": [self.length],
            "nbytes": self.length * self.dtype.itemsize,
            "sha256": self.sha.hexdigest(),
        }

    def close(self) -> None:
        if not self.fh.closed:
            self.fh.close()


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_json_atomic(path: Path, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=1, sort_keys=True) + "\n")


class StoreWriter:
    """Writes a store in one pass; use as a context manager (an exception aborts).

    ``append_chunk`` / ``append`` add consecutive rows; ``commit`` writes the manifest and
    renames the temporary directory to ``out``. ``n_features``/``n_labels`` may be given
    up front (ids are then range-checked on append) or at ``commit`` (inferred sizes).
    An existing ``out`` is an error unless ``overwrite`` (and it must be a store).
    """

    def __init__(
        self,
        out: str | os.PathLike[str],
        *,
        n_features: int | None = None,
        n_labels: int | None = None,
        overwrite: bool = False,
        source: dict[str, Any] | None = None,
    ):
        self.out = Path(out)
        self.overwrite = overwrite
        _check_target(self.out, overwrite)
        self.n_features = n_features
        self.n_labels = n_labels
        self.source = dict(source or {})
        self.n_points = 0
        self._max_feature = -1
        self._max_label = -1
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = (
            self.out.parent / f".{self.out.name}.partial-{os.getpid()}-{secrets.token_hex(4)}"
        )
        self.tmp.mkdir()
        self._files = {
            name: _NpyAppender(self.tmp / f"{name}.npy", dt) for name, dt in _ARRAYS.items()
        }
        self._x_off = 0
        self._y_off = 0
        self._files["x_indptr"].append(np.zeros(1, np.int64))
        self._files["y_indptr"].append(np.zeros(1, np.int64))
        self.done = False

    def __enter__(self) -> StoreWriter:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if not self.done:
            self.abort()

    def append_chunk(self, chunk: Chunk) -> None:
        self.append(chunk.x_indptr, chunk.x_indices, chunk.x_data, chunk.y_indptr, chunk.y_indices)

    def append(
        self,
        x_indptr: np.ndarray,
        x_indices: np.ndarray,
        x_data: np.ndarray,
        y_indptr: np.ndarray,
        y_indices: np.ndarray,
    ) -> None:
        """Append ``k`` rows given as CSR pieces whose pointers start at 0 (any int dtype)."""
        x_indptr = np.asarray(x_indptr, dtype=np.int64)
        y_indptr = np.asarray(y_indptr, dtype=np.int64)
        k = x_indptr.shape[0] - 1
        if (
            k < 0
            or y_indptr.shape[0] != k + 1
            or x_indptr[0] != 0
            or y_indptr[0] != 0
            or x_indptr[-1] != len(x_indices)
            or len(x_data) != len(x_indices)
            or y_indptr[-1] != len(y_indices)
            or np.any(np.diff(x_indptr) < 0)
            or np.any(np.diff(y_indptr) < 0)
        ):
            raise InputError("inconsistent CSR pieces: pointers must start at 0 and end at nnz")
        if len(x_indices):
            self._max_feature = max(self._max_feature, int(np.max(x_indices)))
            if int(np.min(x_indices)) < 0:
                raise InputError("negative feature id")
        if len(y_indices):
            self._max_label = max(self._max_label, int(np.max(y_indices)))
            if int(np.min(y_indices)) < 0:
                raise InputError("negative label id")
        if self.n_features is not None and self._max_feature >= self.n_features:
            raise InputError(f"feature id {self._max_feature} >= n_features {self.n_features}")
        if self.n_labels is not None and self._max_label >= self.n_labels:
            raise InputError(f"label id {self._max_label} >= n_labels {self.n_labels}")
        if not np.isfinite(np.asarray(x_data, dtype=np.float32)).all():
            raise InputError("non-finite feature value")
        self._files["x_indptr"].append(x_indptr[1:] + self._x_off)
        self._files["x_indices"].append(x_indices)
        self._files["x_data"].append(x_data)
        self._files["y_indptr"].append(y_indptr[1:] + self._y_off)
        self._files["y_indices"].append(y_indices)
        self._x_off += int(x_indptr[-1])
        self._y_off += int(y_indptr[-1])
        self.n_points += k

    def commit(self, *, n_features: int | None = None, n_labels: int | None = None) -> XMCStore:
        """Finish the files, write the manifest, move the store into place; open it."""
        d = n_features if n_features is not None else self.n_features
        n_lab = n_labels if n_labels is not None else self.n_labels
        d = self._max_feature + 1 if d is None else d
        n_lab = self._max_label + 1 if n_lab is None else n_lab
        if self._max_feature >= d or self._max_label >= n_lab:
            raise InputError(
                f"ids beyond the declared sizes: feature {self._max_feature} (n_features {d}), "
                f"label {self._max_label} (n_labels {n_lab})"
            )
        arrays = {name: f.finish() for name, f in self._files.items()}
        manifest = {
            "format": STORE_FORMAT,
            "version": STORE_VERSION,
            "n_points": self.n_points,
            "n_features": int(d),
            "n_labels": int(n_lab),
            "nnz": self._x_off,
            "label_nnz": self._y_off,
            "arrays": arrays,
            "source": self.source,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "splits": {},
        }
        _write_json_atomic(self.tmp / MANIFEST, manifest)
        _fsync_dir(self.tmp)
        _check_target(self.out, self.overwrite)
        old = None
        if self.out.exists():
            old = self.out.parent / f".{self.out.name}.old-{secrets.token_hex(4)}"
            os.rename(self.out, old)
        os.rename(self.tmp, self.out)
        _fsync_dir(self.out.parent)
        self.done = True
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return open_store(self.out)

    def abort(self) -> None:
        """Close and delete the temporary directory (nothing at ``out`` is touched)."""
        for f in self._files.values():
            f.close()
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.done = True


def _check_target(out: Path, overwrite: bool) -> None:
    if not out.exists():
        return
    if not overwrite:
        raise DataError(f"{out}: already exists (pass overwrite=True / --force to replace it)")
    if not out.is_dir() or not ((out / MANIFEST).is_file() or not any(out.iterdir())):
        raise DataError(f"{out}: exists and is not a store; refusing to replace it")


# ----------------------------------------------------------------------------- convert


def convert(
    input_path: str | os.PathLike[str],
    out: str | os.PathLike[str],
    format: str = "xmc",
    *,
    n_features: int | None = None,
    n_labels: int | None = None,
    feature_base: int = 0,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    overwrite: bool = False,
    progress: bool = False,
) -> XMCStore:
    """Convert an XMC or libsvm text file into a store in one streaming pass.

    Memory is bounded by ``chunk_rows`` lines. A malformed line raises DataError naming
    the line, and no store appears at ``out``. Returns the opened store.
    """
    reader = TextReader(
        input_path,
        format,
        n_features=n_features,
        n_labels=n_labels,
        feature_base=feature_base,
        chunk_rows=chunk_rows,
    )
    source = {
        "kind": "convert",
        "input": str(Path(input_path).resolve()),
        "format": format,
        "input_bytes": reader.size,
        "feature_base": feature_base,
    }
    bar = progress_bar(reader.size, f"convert {Path(input_path).name}", enabled=progress)
    try:
        with StoreWriter(
            out,
            n_features=reader.n_features if format == "xmc" or n_features is not None else None,
            n_labels=reader.n_labels if format == "xmc" or n_labels is not None else None,
            overwrite=overwrite,
            source=source,
        ) as writer:
            seen = 0
            for chunk in reader.chunks():
                writer.append_chunk(chunk)
                bar.update(reader.bytes_read - seen)
                seen = reader.bytes_read
            return writer.commit(n_features=reader.n_features, n_labels=reader.n_labels)
    finally:
        bar.close()


# ----------------------------------------------------------------------------- reading


def open_store(path: str | os.PathLike[str], *, verify: bool = False) -> XMCStore:
    """Open a store read-only (memory-mapped). ``verify`` re-hashes every array (reads it
    all once); otherwise sizes, dtypes and the row-pointer ends are checked.
    Raises DataError for a missing or invalid manifest or arrays that do not match it."""
    return XMCStore(path, verify=verify)


def _bad(path: Path, why: str) -> DataError:
    return DataError(f"{path}: not a valid lshcore store ({why})")


def _load_manifest(path: Path) -> dict[str, Any]:
    if not path.is_dir():
        raise DataError(f"{path}: no such store directory")
    mpath = path / MANIFEST
    if not mpath.is_file():
        raise _bad(path, f"no {MANIFEST}: not a store, or an interrupted conversion")
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _bad(path, f"{MANIFEST} is unreadable: {exc}") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != STORE_FORMAT:
        raise _bad(path, f"{MANIFEST} is not a {STORE_FORMAT} manifest")
    version = manifest.get("version")
    if not isinstance(version, int) or not 1 <= version <= STORE_VERSION:
        raise _bad(path, f"format version {version!r}; this lshcore reads 1..{STORE_VERSION}")
    for key in ("n_points", "n_features", "n_labels", "nnz", "label_nnz"):
        if not isinstance(manifest.get(key), int) or manifest[key] < 0:
            raise _bad(path, f"{MANIFEST} has no valid {key!r}")
    if not isinstance(manifest.get("arrays"), dict):
        raise _bad(path, f"{MANIFEST} lists no arrays")
    return manifest


def _open_array(path: Path, name: str, meta: Any, length: int, verify: bool) -> np.ndarray:
    want = _ARRAYS[name]
    if not isinstance(meta, dict) or meta.get("dtype") != want or meta.get("shape") != [length]:
        raise _bad(
            path, f"{name}: manifest entry {meta!r} does not match dtype {want}, length {length}"
        )
    fpath = path / str(meta.get("file"))
    if fpath.parent != path or not fpath.is_file():
        raise _bad(path, f"{name}: file {meta.get('file')!r} is missing")
    nbytes = length * np.dtype(want).itemsize
    if fpath.stat().st_size != _NPY_HEADER_BYTES + nbytes:
        raise _bad(
            path,
            f"{fpath.name} has {fpath.stat().st_size} bytes, expected "
            f"{_NPY_HEADER_BYTES + nbytes} (truncated or foreign)",
        )
    if verify:
        sha = hashlib.sha256()
        with open(fpath, "rb") as fh:
            fh.seek(_NPY_HEADER_BYTES)
            while block := fh.read(_HASH_BLOCK):
                sha.update(block)
        if sha.hexdigest() != meta.get("sha256"):
            raise _bad(path, f"{fpath.name}: SHA-256 mismatch (corrupt data)")
    if length == 0:  # an empty file region cannot be memory-mapped
        return np.zeros(0, dtype=want)
    try:
        arr = np.load(fpath, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise _bad(path, f"{fpath.name}: {exc}") from exc
    if arr.dtype != np.dtype(want) or arr.shape != (length,):
        raise _bad(path, f"{fpath.name}: header says {arr.dtype} {arr.shape}")
    return arr


class _Rows:
    """Batching over a sequence of store rows (the whole store or a view)."""

    store: XMCStore
    n: int

    @property
    def dim(self) -> int:
        """Number of features d."""
        return self.store.dim

    @property
    def n_labels(self) -> int:
        return self.store.n_labels

    def __len__(self) -> int:
        return self.n

    def _ids(self, positions: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _range(self, start: int, stop: int) -> np.ndarray:
        return self._ids(np.arange(start, stop, dtype=np.int64))

    def batches(
        self,
        batch_size: int,
        shuffle: bool = True,
        seed: int = 0,
        *,
        epoch: int = 0,
        labels: str = "csr",
        drop_last: bool = False,
        with_rows: bool = False,
        block_rows: int | None = None,
        window_blocks: int = 16,
    ) -> Iterator[tuple[Any, ...]]:
        """Yield ``(x, y)`` batches (``(x, y, rows)`` with ``with_rows``).

        ``x``: CSR ``(b, dim)`` float32; ``y``: CSR ``(b, n_labels)`` float32 0/1, or with
        ``labels="lists"`` a list of int64 label-id arrays; ``rows``: int64 store row ids.
        Every row appears exactly once per epoch; only the last batch may be smaller
        (dropped with ``drop_last``).

        Shuffling (deterministic in ``(seed, epoch)``): rows are cut into blocks of
        ``block_rows`` consecutive rows (default ``batch_size``); the block order is a
        random permutation; ``window_blocks`` blocks at a time are pooled, their row ids
        shuffled, and batches gathered from the memory map by row id. Memory: the block
        order (8 bytes per block) plus one window of row ids plus one batch of data.
        ``block_rows=1`` with ``window_blocks >= n`` is a full uniform shuffle.
        """
        batch_size = check_int(batch_size, "batch_size", low=1)
        seed = check_int(seed, "seed", low=0)
        epoch = check_int(epoch, "epoch", low=0)
        window_blocks = check_int(window_blocks, "window_blocks", low=1)
        check_choice(labels, "labels", ("csr", "lists"))
        block = check_int(block_rows if block_rows is not None else batch_size, "block_rows", low=1)
        m = self.n

        def emit(ids: np.ndarray) -> tuple[Any, ...]:
            x, y = self.store._gather(ids, labels)
            return (x, y, ids) if with_rows else (x, y)

        if not shuffle:
            for start in range(0, m, batch_size):
                stop = min(start + batch_size, m)
                if drop_last and stop - start < batch_size:
                    return
                yield emit(self._range(start, stop))
            return
        rng = np.random.default_rng([seed, epoch])
        n_blocks = -(-m // block)
        order = rng.permutation(n_blocks)
        carry = np.zeros(0, dtype=np.int64)
        for w in range(0, n_blocks, window_blocks):
            parts = [carry] + [
                np.arange(b * block, min((b + 1) * block, m), dtype=np.int64)
                for b in order[w : w + window_blocks]
            ]
            pool = np.concatenate(parts)
            rng.shuffle(pool)
            full = len(pool) // batch_size * batch_size
            for s in range(0, full, batch_size):
                yield emit(self._ids(pool[s : s + batch_size]))
            carry = pool[full:]
        if len(carry) and not drop_last:
            yield emit(self._ids(carry))

    def load(self, name: str | None = None) -> XMCData:
        """All rows in memory as :class:`XMCData` (for stores that fit in memory)."""
        x, y = self.store._gather(self._range(0, self.n), "csr")
        return XMCData(
            path=name or str(self.store.path),
            x=x,
            y=y,
            n_points=self.n,
            n_features=self.dim,
            n_labels=self.n_labels,
        )


class StoreView(_Rows):
    """A subset of a store's rows (``row_ids``: sorted int64, possibly memory-mapped)."""

    def __init__(self, store: XMCStore, row_ids: np.ndarray, name: str = "view"):
        self.store = store
        self.row_ids = row_ids
        self.n = int(row_ids.shape[0])
        self.name = name

    def _ids(self, positions: np.ndarray) -> np.ndarray:
        return np.asarray(self.row_ids[positions], dtype=np.int64)

    def __repr__(self) -> str:
        return f"StoreView({self.name!r} of {str(self.store.path)!r}, n={self.n})"


class XMCStore(_Rows):
    """An opened store: ``n`` points, ``dim`` features, ``n_labels`` labels, memory-mapped.

    ``manifest`` is the parsed manifest; ``x_indptr``, ``x_indices``, ``x_data``,
    ``y_indptr``, ``y_indices`` are read-only memmaps of the CSR arrays.
    """

    def __init__(self, path: str | os.PathLike[str], *, verify: bool = False):
        self.path = Path(path)
        self.manifest = _load_manifest(self.path)
        m = self.manifest
        self.store = self
        self.n = m["n_points"]
        self._dim = m["n_features"]
        self._n_labels = m["n_labels"]
        self.nnz = m["nnz"]
        self.label_nnz = m["label_nnz"]
        lengths = {
            "x_indptr": self.n + 1,
            "x_indices": self.nnz,
            "x_data": self.nnz,
            "y_indptr": self.n + 1,
            "y_indices": self.label_nnz,
        }
        arrays = {
            name: _open_array(self.path, name, m["arrays"].get(name), lengths[name], verify)
            for name in _ARRAYS
        }
        self.x_indptr = arrays["x_indptr"]
        self.x_indices = arrays["x_indices"]
        self.x_data = arrays["x_data"]
        self.y_indptr = arrays["y_indptr"]
        self.y_indices = arrays["y_indices"]
        for ptr, total, name in (
            (self.x_indptr, self.nnz, "x"),
            (self.y_indptr, self.label_nnz, "y"),
        ):
            if int(ptr[0]) != 0 or int(ptr[-1]) != total:
                raise _bad(
                    self.path,
                    f"{name}_indptr runs {int(ptr[0])}..{int(ptr[-1])}, expected 0..{total}",
                )

    @property
    def dim(self) -> int:
        return int(self._dim)

    @property
    def n_labels(self) -> int:
        return int(self._n_labels)

    def _ids(self, positions: np.ndarray) -> np.ndarray:
        return np.asarray(positions, dtype=np.int64)

    def __repr__(self) -> str:
        return (
            f"XMCStore({str(self.path)!r}, n={self.n}, dim={self.dim}, n_labels={self.n_labels}, "
            f"nnz={self.nnz}, label_nnz={self.label_nnz})"
        )

    def rows(self, ids: Any, labels: str = "csr") -> tuple[Any, Any]:
        """``(x, y)`` of the rows ``ids`` (any order, repeats allowed), as in :meth:`batches`."""
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        if ids.size and (ids.min() < 0 or ids.max() >= self.n):
            raise InputError(f"row ids must be in [0, {self.n}); got {ids.min()}..{ids.max()}")
        check_choice(labels, "labels", ("csr", "lists"))
        return self._gather(ids, labels)

    def _gather(self, ids: np.ndarray, labels: str) -> tuple[Any, Any]:
        import scipy.sparse as sp

        x_ptr, x_pos = _positions(self.x_indptr, ids)
        x = sp.csr_matrix(
            (np.asarray(self.x_data[x_pos]), np.asarray(self.x_indices[x_pos]), x_ptr),
            shape=(len(ids), self.dim),
        )
        y_ptr, y_pos = _positions(self.y_indptr, ids)
        y_ind = np.asarray(self.y_indices[y_pos])
        if labels == "lists":
            y64 = y_ind.astype(np.int64)
            return x, [y64[y_ptr[i] : y_ptr[i + 1]] for i in range(len(ids))]
        y = sp.csr_matrix(
            (np.ones(len(y_ind), np.float32), y_ind, y_ptr), shape=(len(ids), self.n_labels)
        )
        return x, y

    # ------------------------------------------------------------------ splits

    def split(
        self, test_fraction: float = 0.2, seed: int = 0, *, save: bool = True
    ) -> tuple[StoreView, StoreView]:
        """A seeded ``(train, test)`` split, recorded in the store when ``save``.

        Rule (the same rows as :func:`lshcore.data.datasets.split_xmc`):
        ``perm = numpy.random.default_rng(seed).permutation(n)``; the first
        ``round(n * test_fraction)`` rows of ``perm`` are the test set. Row ids are stored
        sorted under ``splits/`` and the seed, fraction and counts in the manifest; a
        recorded split is read back (memory-mapped) instead of recomputed. Computing one
        takes 16 bytes per row once.
        """
        test_fraction = check_float(
            test_fraction, "test_fraction", low=0.0, high=1.0, open_low=True
        )
        if test_fraction >= 1.0:
            raise ConfigError(f"test_fraction must be < 1, got {test_fraction}")
        seed = check_int(seed, "seed", low=0)
        key = f"seed={seed},test_fraction={test_fraction!r}"
        self.manifest = _load_manifest(self.path)  # another process may have added splits
        entry = self.manifest.get("splits", {}).get(key)
        if entry is not None:
            train = _open_split(self.path, entry, "train")
            test = _open_split(self.path, entry, "test")
            if len(train) + len(test) != self.n:
                raise _bad(self.path, f"split {key} does not cover the {self.n} rows")
            return StoreView(self, train, "train"), StoreView(self, test, "test")
        n_test = int(round(self.n * test_fraction))
        if n_test < 1 or n_test >= self.n:
            raise ConfigError(
                f"test_fraction {test_fraction} of the {self.n} points in {self.path} leaves an "
                "empty train or test set"
            )
        perm = np.random.default_rng(seed).permutation(self.n)
        test_ids = np.sort(perm[:n_test]).astype(np.int64)
        train_ids = np.sort(perm[n_test:]).astype(np.int64)
        del perm
        if save:
            self._save_split(key, seed, test_fraction, train_ids, test_ids)
        return StoreView(self, train_ids, "train"), StoreView(self, test_ids, "test")

    def _save_split(
        self, key: str, seed: int, fraction: float, train: np.ndarray, test: np.ndarray
    ) -> None:
        folder = self.path / "splits" / f"seed{seed}-test{fraction!r}"
        folder.mkdir(parents=True, exist_ok=True)
        files = {}
        for part, ids in (("train", train), ("test", test)):
            target = folder / f"{part}.npy"
            tmp = folder / f".{part}.{secrets.token_hex(4)}.tmp"
            with open(tmp, "wb") as fh:
                np.save(fh, ids)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, target)
            files[part] = {
                "file": str(target.relative_to(self.path)),
                "n": int(len(ids)),
                "sha256": hashlib.sha256(ids.tobytes()).hexdigest(),
            }
        manifest = _load_manifest(self.path)
        manifest.setdefault("splits", {})[key] = {
            "seed": seed,
            "test_fraction": fraction,
            "rule": "test = sorted(numpy.random.default_rng(seed).permutation(n)[:round(n * test_fraction)])",
            "n_train": int(len(train)),
            "n_test": int(len(test)),
            **files,
        }
        _write_json_atomic(self.path / MANIFEST, manifest)
        self.manifest = manifest

    def splits(self) -> dict[str, Any]:
        """The recorded splits: ``{key: {seed, test_fraction, n_train, n_test, ...}}``."""
        return dict(_load_manifest(self.path).get("splits", {}))


def _open_split(path: Path, entry: Any, part: str) -> np.ndarray:
    meta = entry.get(part) if isinstance(entry, dict) else None
    if not isinstance(meta, dict):
        raise _bad(path, f"split entry has no {part!r} file")
    fpath = path / str(meta.get("file"))
    try:
        ids = np.load(fpath, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise _bad(path, f"split file {fpath}: {exc}") from exc
    if ids.dtype != np.int64 or ids.ndim != 1 or len(ids) != meta.get("n"):
        raise _bad(path, f"split file {fpath} does not match the manifest")
    return ids


def _positions(indptr: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The CSR pointer of the gathered rows and the positions of their entries."""
    starts = np.asarray(indptr[ids], dtype=np.int64)
    ends = np.asarray(indptr[ids + 1], dtype=np.int64)
    lens = ends - starts
    ptr = np.zeros(len(ids) + 1, dtype=np.int64)
    np.cumsum(lens, out=ptr[1:])
    pos = np.repeat(starts - ptr[:-1], lens) + np.arange(ptr[-1], dtype=np.int64)
    return ptr, pos


assert MAX_ID == np.iinfo(np.int32).max  # the store's index dtype is int32
