"""Streaming readers for multi-label sparse text files.

Two formats, both one point per line, ``l1,l2,... f:v f:v ...`` (ids from 0 by default):

- ``"xmc"``: the Extreme Classification Repository format, whose first line is the
  header ``N D L`` (points, features, labels). A point without labels starts with a
  space.
- ``"libsvm"``: the same lines without a header; the feature and label counts are given
  (``n_features`` / ``n_labels``) or inferred as the largest id + 1.

Files are read strictly and in chunks of ``chunk_rows`` lines, so memory is bounded by a
chunk, never by the file. Anything malformed raises :class:`~lshcore.errors.DataError`
naming the file, the line number (the header is line 1) and what is wrong. Nothing is
dropped silently; two normalisations are applied and documented: a label repeated on a
line counts once, and a feature id repeated on a line has its values summed.

Only NumPy and the standard library are imported at module level; scipy is imported by
the functions that build CSR matrices.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, NamedTuple

import numpy as np

from lshcore.core.validation import check_int
from lshcore.errors import ConfigError, DataError

__all__ = [
    "FORMATS",
    "XMCHeader",
    "Chunk",
    "TextReader",
    "XMCData",
    "read_header",
    "parse_header",
    "stack_chunks",
    "load_xmc",
    "load_libsvm",
    "csr_rows",
    "coo_to_csr",
]

#: Text formats the readers accept.
FORMATS: tuple[str, ...] = ("xmc", "libsvm")
#: Ids are stored as int32: a header or id beyond this is refused, not wrapped.
MAX_ID = np.iinfo(np.int32).max
DEFAULT_CHUNK_ROWS = 4096


class XMCHeader(NamedTuple):
    """The first line ``N D L`` of an XMC file."""

    n_points: int
    n_features: int
    n_labels: int


@dataclass(frozen=True)
class Chunk:
    """Consecutive points of a text file as CSR pieces (``k`` points).

    ``x_indptr`` ``(k+1,)`` int64 from 0, ``x_indices`` int32 (sorted, unique per row),
    ``x_data`` float32 (finite); ``y_indptr`` ``(k+1,)`` int64, ``y_indices`` int32
    (sorted, unique per row). ``first_line`` is the 1-based line number of its first point.
    """

    x_indptr: np.ndarray
    x_indices: np.ndarray
    x_data: np.ndarray
    y_indptr: np.ndarray
    y_indices: np.ndarray
    first_line: int

    @property
    def n_rows(self) -> int:
        return int(self.x_indptr.shape[0] - 1)


@dataclass(frozen=True)
class XMCData:
    """A whole XMC file: ``x`` CSR ``(n_points, n_features)`` float32, ``y`` CSR
    ``(n_points, n_labels)`` float32 0/1."""

    path: str
    x: Any
    y: Any
    n_points: int
    n_features: int
    n_labels: int

    def label_lists(self) -> list[np.ndarray]:
        """Label ids of each point as sorted int64 arrays (possibly empty)."""
        return csr_rows(self.y)

    def __len__(self) -> int:
        return self.n_points

    def __repr__(self) -> str:
        return (
            f"XMCData({self.path!r}, points={self.n_points}, features={self.n_features}, "
            f"labels={self.n_labels}, nnz={self.x.nnz}, label_nnz={self.y.nnz})"
        )


def csr_rows(matrix: Any) -> list[np.ndarray]:
    """The column ids of each row of a sparse matrix, as int64 arrays."""
    csr = matrix.tocsr()
    ind = csr.indices.astype(np.int64)
    return [ind[csr.indptr[i] : csr.indptr[i + 1]] for i in range(csr.shape[0])]


# ----------------------------------------------------------------------------- header


def parse_header(line: bytes | str, path: str | os.PathLike[str]) -> XMCHeader:
    """Parse ``N D L`` (three non-negative integers); DataError naming line 1 otherwise."""
    text = line.decode("utf-8", "replace") if isinstance(line, bytes) else line
    parts = text.split()
    try:
        if len(parts) != 3:
            raise ValueError
        n, d, n_labels = (int(p) for p in parts)
    except ValueError:
        raise DataError(
            f"{path}, line 1: bad header {text.strip()[:80]!r}; expected 'N D L' "
            "(three non-negative integers: points, features, labels)"
        ) from None
    if min(n, d, n_labels) < 0:
        raise DataError(f"{path}, line 1: bad header {text.strip()!r}; counts must be >= 0")
    if max(d, n_labels) > MAX_ID + 1:
        raise DataError(
            f"{path}, line 1: header asks for {d} features and {n_labels} labels; at most "
            f"{MAX_ID + 1} of each are supported (ids are int32)"
        )
    return XMCHeader(n, d, n_labels)


def read_header(path: str | os.PathLike[str]) -> XMCHeader:
    """The header of an XMC file (reads only its first line)."""
    path = Path(path)
    with _open(path) as fh:
        return parse_header(fh.readline(), path)


def _open(path: Path) -> IO[bytes]:
    try:
        return open(path, "rb")  # bytes: int()/float() parse ASCII bytes without decoding
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({type(exc).__name__}: {exc})") from exc


# ----------------------------------------------------------------------------- reader


def _show(token: bytes) -> str:
    return repr(token.decode("utf-8", "replace"))


class TextReader:
    """A streaming reader of one XMC or libsvm text file.

    ``chunks()`` yields :class:`Chunk` objects of at most ``chunk_rows`` points. For
    ``"xmc"`` the header fixes ``n_points``/``n_features``/``n_labels`` up front; for
    ``"libsvm"`` they are the given ``n_features``/``n_labels`` or, when omitted, grow as
    ids are seen and are final once ``chunks()`` is exhausted. ``bytes_read`` counts the
    input consumed (for progress bars); ``feature_base`` 1 reads 1-based feature ids
    (classic libsvm) and stores them 0-based.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        format: str = "xmc",
        *,
        n_features: int | None = None,
        n_labels: int | None = None,
        feature_base: int = 0,
        chunk_rows: int = DEFAULT_CHUNK_ROWS,
    ):
        if format not in FORMATS:
            raise ConfigError(f"format must be one of {', '.join(FORMATS)}; got {format!r}")
        if feature_base not in (0, 1):
            raise ConfigError(f"feature_base must be 0 or 1, got {feature_base!r}")
        self.path = Path(path)
        self.format = format
        self.chunk_rows = check_int(chunk_rows, "chunk_rows", low=1)
        self.feature_base = feature_base
        self.header: XMCHeader | None = None
        self.bytes_read = 0
        self.n_points = 0
        if format == "xmc":
            if n_features is not None or n_labels is not None:
                raise ConfigError(
                    "n_features/n_labels come from the header of an xmc file; pass them "
                    "only with format='libsvm'"
                )
            self.header = read_header(self.path)
            self.n_features = self.header.n_features
            self.n_labels = self.header.n_labels
        else:
            for value, name in ((n_features, "n_features"), (n_labels, "n_labels")):
                if value is not None:
                    check_int(value, name, low=0, high=MAX_ID + 1)
            self.n_features = 0 if n_features is None else int(n_features)
            self.n_labels = 0 if n_labels is None else int(n_labels)
        self._fixed_dims = format == "xmc" or (n_features is not None, n_labels is not None)

    @property
    def size(self) -> int:
        """Size of the input file in bytes."""
        return self.path.stat().st_size

    def _dims_fixed(self) -> tuple[bool, bool]:
        if self._fixed_dims is True:
            return True, True
        assert isinstance(self._fixed_dims, tuple)
        return self._fixed_dims

    def chunks(self) -> Iterator[Chunk]:
        """Parse the file, yielding chunks of consecutive points (one pass, once)."""
        path = self.path
        expected = self.header.n_points if self.header is not None else None
        with _open(path) as fh:
            line_no = 0
            if self.header is not None:
                self.bytes_read += len(fh.readline())
                line_no = 1
            pending: list[bytes] = []
            first_line = line_no + 1
            blank_at = 0  # line number of a blank line seen so far (allowed only at the end)
            for raw in fh:
                line_no += 1
                self.bytes_read += len(raw)
                line = raw.rstrip(b"\r\n")
                if not line:
                    blank_at = blank_at or line_no
                    continue
                if blank_at:
                    raise DataError(
                        f"{path}, line {blank_at}: empty line (a point without labels "
                        "starts with a space; blank lines may only end the file)"
                    )
                if expected is not None and self.n_points + len(pending) >= expected:
                    raise DataError(
                        f"{path}, line {line_no}: header says {expected} points but the file "
                        f"has at least {expected + 1} data lines"
                    )
                pending.append(line)
                if len(pending) == self.chunk_rows:
                    yield self._parse(pending, first_line)
                    self.n_points += len(pending)
                    pending = []
                    first_line = line_no + 1
            if pending:
                yield self._parse(pending, first_line)
                self.n_points += len(pending)
        if expected is not None and self.n_points != expected:
            raise DataError(
                f"{path}, line {line_no + 1}: header says {expected} points but the file "
                f"has {self.n_points} data lines"
            )

    # The fast path converts a whole chunk's tokens with NumPy; when that fails, the
    # chunk is scanned again token by token to name the exact line and token.
    def _parse(self, lines: list[bytes], first_line: int) -> Chunk:
        label_toks: list[bytes] = []
        id_toks: list[bytes] = []
        val_toks: list[bytes] = []
        n_lab = np.empty(len(lines), dtype=np.int64)
        n_feat = np.empty(len(lines), dtype=np.int64)
        for k, line in enumerate(lines):
            label_text, _, feat_text = line.partition(b" ")
            labels = label_text.split(b",") if label_text else []
            pairs = feat_text.split()
            parts = feat_text.replace(b":", b" ").split()
            if len(parts) != 2 * len(pairs) or feat_text.count(b":") != len(pairs):
                self._bad_pairs(pairs, first_line + k)
            label_toks += labels
            id_toks += parts[0::2]
            val_toks += parts[1::2]
            n_lab[k] = len(labels)
            n_feat[k] = len(pairs)
        try:
            label_ids = np.array(label_toks, dtype=np.bytes_).astype(np.int64)
        except ValueError:
            label_ids = self._rescan(lines, first_line, "label")
        try:
            feat_ids = np.array(id_toks, dtype=np.bytes_).astype(np.int64)
        except ValueError:
            feat_ids = self._rescan(lines, first_line, "feature")
        try:
            values = np.array(val_toks, dtype=np.bytes_).astype(np.float64)
        except ValueError:
            values = self._rescan(lines, first_line, "value")
        feat_ids -= self.feature_base
        fixed_features, fixed_labels = self._dims_fixed()
        self._check_range(label_ids, n_lab, first_line, "label", self.n_labels, fixed_labels)
        self._check_range(feat_ids, n_feat, first_line, "feature", self.n_features, fixed_features)
        finite = np.isfinite(values)
        if not finite.all():
            bad = int(np.argmin(finite))
            k = int(np.searchsorted(np.cumsum(n_feat), bad, side="right"))
            raise DataError(
                f"{self.path}, line {first_line + k}: feature {int(feat_ids[bad]) + self.feature_base} "
                f"has non-finite value {_show(val_toks[bad])}"
            )
        if values.size and np.abs(values).max() > np.finfo(np.float32).max:
            bad = int(np.argmax(np.abs(values) > np.finfo(np.float32).max))
            k = int(np.searchsorted(np.cumsum(n_feat), bad, side="right"))
            raise DataError(
                f"{self.path}, line {first_line + k}: feature value {_show(val_toks[bad])} "
                "overflows float32"
            )
        if label_ids.size:
            self.n_labels = max(self.n_labels, int(label_ids.max()) + 1)
        if feat_ids.size:
            self.n_features = max(self.n_features, int(feat_ids.max()) + 1)
        return _normalise(n_feat, feat_ids, values, n_lab, label_ids, first_line)

    def _bad_pairs(self, pairs: list[bytes], line_no: int) -> None:
        for tok in pairs:
            f_text, sep, v_text = tok.partition(b":")
            if not sep or not f_text or not v_text or b":" in v_text:
                raise DataError(
                    f"{self.path}, line {line_no}: bad feature 'f:v' pair {_show(tok)} "
                    "(expected one ':' between a feature id and a value)"
                )
        raise AssertionError("unreachable: a bad pair was detected but not found")

    def _rescan(self, lines: list[bytes], first_line: int, what: str) -> np.ndarray:
        for k, line in enumerate(lines):
            label_text, _, feat_text = line.partition(b" ")
            where = f"{self.path}, line {first_line + k}"
            if what == "label":
                for tok in label_text.split(b",") if label_text else []:
                    try:
                        int(tok)
                    except ValueError:
                        raise DataError(
                            f"{where}: bad label id {_show(tok)} (labels are comma-separated "
                            "non-negative integers)"
                        ) from None
                continue
            for tok in feat_text.split():
                f_text, _, v_text = tok.partition(b":")
                try:
                    int(f_text)
                except ValueError:
                    raise DataError(
                        f"{where}: bad feature 'f:v' pair {_show(tok)} (feature id is not an integer)"
                    ) from None
                try:
                    float(v_text)
                except ValueError:
                    raise DataError(
                        f"{where}: bad feature 'f:v' pair {_show(tok)} (value is not a number)"
                    ) from None
        raise DataError(f"{self.path}, lines {first_line}+: cannot parse the {what}s")

    def _check_range(
        self,
        ids: np.ndarray,
        counts: np.ndarray,
        first_line: int,
        what: str,
        upper: int,
        fixed: bool,
    ) -> None:
        if not ids.size:
            return
        bad_mask = ids < 0
        if fixed:
            bad_mask |= ids >= upper
        else:
            bad_mask |= ids > MAX_ID
        if not bad_mask.any():
            return
        bad = int(np.argmax(bad_mask))
        k = int(np.searchsorted(np.cumsum(counts), bad, side="right"))
        shown = int(ids[bad]) + (self.feature_base if what == "feature" else 0)
        limit = (
            f"[{self.feature_base if what == 'feature' else 0}, "
            f"{(upper if fixed else MAX_ID + 1) + (self.feature_base if what == 'feature' else 0)})"
        )
        raise DataError(
            f"{self.path}, line {first_line + k}: {what} id {shown} is out of range {limit}"
        )


def _normalise(
    n_feat: np.ndarray,
    feat_ids: np.ndarray,
    values: np.ndarray,
    n_lab: np.ndarray,
    label_ids: np.ndarray,
    first_line: int,
) -> Chunk:
    """Sort ids within each row, sum repeated features, count a repeated label once."""
    rows = len(n_feat)
    x_ptr, x_ind, x_val = _dedupe_rows(n_feat, feat_ids, values)
    y_ptr, y_ind, _ = _dedupe_rows(n_lab, label_ids, None)
    assert x_ptr.shape[0] == rows + 1 and x_val is not None
    return Chunk(
        x_ptr,
        x_ind.astype(np.int32),
        x_val.astype(np.float32),
        y_ptr,
        y_ind.astype(np.int32),
        first_line,
    )


def _dedupe_rows(
    counts: np.ndarray, ids: np.ndarray, values: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    rows = np.repeat(np.arange(len(counts), dtype=np.int64), counts)
    return coo_to_csr(len(counts), rows, ids, values)


def coo_to_csr(
    n_rows: int, rows: np.ndarray, ids: np.ndarray, values: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """``(indptr, ids, values)`` of entries ``(rows, ids, values)``: ids sorted within each
    row, repeated ``(row, id)`` merged (values summed in their dtype; ``values`` may be None)."""
    order = np.lexsort((ids, rows))
    rows, ids = rows[order], ids[order]
    first = np.ones(len(ids), dtype=bool)
    first[1:] = (rows[1:] != rows[:-1]) | (ids[1:] != ids[:-1])
    starts = np.flatnonzero(first)
    out_vals = None
    if values is not None:
        out_vals = np.add.reduceat(values[order], starts) if starts.size else values[:0]
    indptr = np.zeros(n_rows + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows[starts], minlength=n_rows), out=indptr[1:])
    return indptr, ids[starts], out_vals


# ----------------------------------------------------------------------------- whole files


def stack_chunks(chunks: list[Chunk], n_features: int, n_labels: int) -> tuple[Any, Any]:
    """Concatenate chunks into ``(x, y)``: CSR float32 features and CSR 0/1 float32 labels."""
    import scipy.sparse as sp

    def cat(parts: list[np.ndarray], dtype: Any) -> np.ndarray:
        return np.concatenate(parts).astype(dtype, copy=False) if parts else np.zeros(0, dtype)

    def ptr(parts: list[np.ndarray]) -> np.ndarray:
        out = [np.zeros(1, np.int64)]
        offset = 0
        for p in parts:
            out.append(p[1:] + offset)
            offset += int(p[-1])
        return np.concatenate(out)

    n = sum(c.n_rows for c in chunks)
    x = sp.csr_matrix(
        (
            cat([c.x_data for c in chunks], np.float32),
            cat([c.x_indices for c in chunks], np.int32),
            ptr([c.x_indptr for c in chunks]),
        ),
        shape=(n, n_features),
    )
    y_ind = cat([c.y_indices for c in chunks], np.int32)
    y = sp.csr_matrix(
        (np.ones(len(y_ind), np.float32), y_ind, ptr([c.y_indptr for c in chunks])),
        shape=(n, n_labels),
    )
    return x, y


def load_xmc(
    path: str | os.PathLike[str],
    *,
    name: str | None = None,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> XMCData:
    """Read a whole Extreme Classification Repository text file into memory.

    Steps: :func:`read_header`, :meth:`TextReader.chunks` (strict parsing), then
    :func:`stack_chunks`. Returns :class:`XMCData` with CSR features (float32; repeated
    feature ids summed; sorted) and a CSR 0/1 label matrix. Raises DataError naming the
    file and line for a bad header, an id out of range, a bad ``f:v`` pair, a non-finite
    value, a blank line inside the data, or a point count that differs from the header.
    """
    reader = TextReader(path, "xmc", chunk_rows=chunk_rows)
    return _read_all(reader, name)


def load_libsvm(
    path: str | os.PathLike[str],
    *,
    n_features: int | None = None,
    n_labels: int | None = None,
    feature_base: int = 0,
    name: str | None = None,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> XMCData:
    """Read a whole multi-label libsvm file (``l1,l2 f:v ...``, no header) into memory.

    ``n_features``/``n_labels`` default to the largest id seen + 1; when given, an id at or
    beyond them is a DataError. ``feature_base=1`` reads 1-based feature ids.
    """
    reader = TextReader(
        path,
        "libsvm",
        n_features=n_features,
        n_labels=n_labels,
        feature_base=feature_base,
        chunk_rows=chunk_rows,
    )
    return _read_all(reader, name)


def _read_all(reader: TextReader, name: str | None) -> XMCData:
    chunks = list(reader.chunks())
    x, y = stack_chunks(chunks, reader.n_features, reader.n_labels)
    return XMCData(
        path=str(reader.path) if name is None else name,
        x=x,
        y=y,
        n_points=reader.n_points,
        n_features=reader.n_features,
        n_labels=reader.n_labels,
    )


def progress_bar(total: int | None, desc: str, unit: str = "B", enabled: bool = True) -> Any:
    """A tqdm bar on stderr (imported lazily), or a no-op stand-in when disabled."""
    if not enabled:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, unit_scale=True, leave=False, mininterval=0.5)


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass
