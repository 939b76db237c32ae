"""The lshcore file format: a versioned, pickle-free container written atomically.

A file is an uncompressed ``.npz`` (zip) archive: a member ``__header__`` holds UTF-8
JSON ``{"format": "lshcore", "kind": ..., "version": ..., "meta": {...}}`` and every
other member is one plain NumPy array. Loading never unpickles, checks the header,
and turns any damage (truncation, bad CRC, a foreign file) into FileFormatError.
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from lshcore.errors import FileFormatError

__all__ = ["save_arrays", "load_arrays", "FORMAT_NAME"]

FORMAT_NAME = "lshcore"
_HEADER = "__header__"


def save_arrays(
    path: str | os.PathLike[str],
    kind: str,
    version: int,
    meta: dict[str, Any],
    arrays: dict[str, np.ndarray],
) -> Path:
    """Write ``arrays`` and JSON-able ``meta`` to ``path`` atomically (temp file + rename)."""
    path = Path(path)
    if _HEADER in arrays:
        raise ValueError(f"array name {_HEADER!r} is reserved")
    header = {"format": FORMAT_NAME, "kind": kind, "version": int(version), "meta": meta}
    payload = {_HEADER: np.frombuffer(json.dumps(header).encode("utf-8"), dtype=np.uint8)}
    for name, arr in arrays.items():
        arr = np.asarray(arr)
        if arr.dtype == object:
            raise ValueError(
                f"array {name!r} has dtype object, which cannot be saved without pickle"
            )
        payload[name] = arr
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **payload)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def load_arrays(
    path: str | os.PathLike[str], kind: str, max_version: int
) -> tuple[dict[str, Any], dict[str, np.ndarray], int]:
    """Read a file written by :func:`save_arrays`; returns ``(meta, arrays, version)``.

    Raises FileFormatError when the file is missing a header, is of another kind, has a
    version newer than ``max_version``, or is truncated or corrupt.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    with open(path, "rb") as fh:
        if fh.read(4) != b"PK\x03\x04":  # every lshcore file is a zip archive
            raise FileFormatError(f"{path}: not an lshcore file (not a zip archive)")
    try:
        with np.load(path, allow_pickle=False) as archive:
            if _HEADER not in archive.files:
                raise FileFormatError(f"{path}: not an lshcore file (no header)")
            header = json.loads(archive[_HEADER].tobytes().decode("utf-8"))
            arrays = {name: archive[name] for name in archive.files if name != _HEADER}
    except FileFormatError:
        raise
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError, UnicodeDecodeError) as exc:
        raise FileFormatError(
            f"{path}: not a readable lshcore file ({type(exc).__name__}: {exc})"
        ) from exc
    if not isinstance(header, dict) or header.get("format") != FORMAT_NAME:
        raise FileFormatError(f"{path}: not an lshcore file (bad header)")
    if header.get("kind") != kind:
        raise FileFormatError(f"{path}: holds a {header.get('kind')!r}, expected a {kind!r}")
    version = header.get("version")
    if not isinstance(version, int) or version < 1 or version > max_version:
        raise FileFormatError(
            f"{path}: {kind} format version {version!r} is not supported (this lshcore reads 1..{max_version})"
        )
    meta = header.get("meta")
    if not isinstance(meta, dict):
        raise FileFormatError(f"{path}: header has no metadata")
    return meta, arrays, version
