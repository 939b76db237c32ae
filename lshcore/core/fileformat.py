"""The lshcore file format: a versioned, pickle-free container written atomically.

A file is an uncompressed ``.npz`` (zip) archive: a member ``__header__`` holds UTF-8
JSON ``{"format": "lshcore", "kind": ..., "version": ..., "meta": {...}}`` and every
other member is one plain NumPy array. Loading never unpickles, checks the header,
and turns any damage (truncation, bad CRC, a foreign file) into FileFormatError.

Saving writes a hidden temp file ``.<name>.<pid>.<random>.tmp`` beside the target and
renames it over the target, so a reader sees the old file or the new one, never a part.
The new file gets the old file's permission bits, or those a plain ``open()`` would give
(``0o666`` less the umask), not ``mkstemp``'s 0600. A symlink target is followed (the
file it points to is replaced, the link stays). A save killed by SIGKILL leaves its temp
file behind: the next save of the same target removes temp files of processes that are
no longer running; a save in the main thread under the default SIGTERM disposition
removes its temp file on SIGTERM before the process dies of that signal.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import tempfile
import threading
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from lshcore.errors import FileFormatError

__all__ = ["save_arrays", "load_arrays", "write_text_atomic", "FORMAT_NAME"]

FORMAT_NAME = "lshcore"
_HEADER = "__header__"


def save_arrays(
    path: str | os.PathLike[str],
    kind: str,
    version: int,
    meta: dict[str, Any],
    arrays: dict[str, np.ndarray],
) -> Path:
    """Write ``arrays`` and JSON-able ``meta`` to ``path`` atomically (temp file + rename).

    Returns the path written (the symlink's target when ``path`` is a symlink). OS errors
    (a directory in the way, no permission, a full disk) name ``path``, never the temp file.
    """
    asked = Path(path)
    # follow a symlink: renaming over the link itself would replace it with a plain file
    path = Path(os.path.realpath(asked)) if asked.is_symlink() else asked
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
    try:
        if path.is_dir():
            raise IsADirectoryError(errno.EISDIR, "is a directory", str(asked))
        path.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_temps(path)
        _write_atomic(path, payload)
    except OSError as exc:
        if exc.filename == str(asked) and not exc.filename2:
            raise
        raise type(exc)(
            exc.errno, f"cannot save {asked}: {exc.strerror or exc}", str(asked)
        ) from exc
    return path


_TEMPS: set[str] = set()  # temp files of saves in progress in this process


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically: a reader sees the old file or the
    new one, never a part; the mode is the one a plain write would give (the old file's,
    or 0o666 less the umask). Creates the parent folder. Used for JSON reports."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_atomic(path, lambda fh: fh.write(text.encode("utf-8")))
    return path


def _write_atomic(path: Path, payload: dict[str, np.ndarray] | Any) -> None:
    """Write through a temp file beside ``path`` and rename it over ``path``; ``payload``
    is the arrays of an ``.npz`` or a function that writes to the binary file."""
    fd, tmp = tempfile.mkstemp(
        prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent
    )
    _TEMPS.add(tmp)
    restore = _guard_sigterm()
    try:
        os.fchmod(fd, _new_file_mode(path))
        with os.fdopen(fd, "wb") as fh:
            if callable(payload):
                payload(fh)
            else:
                np.savez(fh, **payload)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    finally:
        _TEMPS.discard(tmp)
        restore()


def _new_file_mode(path: Path) -> int:
    """The old file's permission bits, or 0o666 less the umask for a new file."""
    try:
        return os.stat(path).st_mode & 0o7777
    except FileNotFoundError:
        return 0o666 & ~_umask()


def _umask() -> int:
    try:  # read without changing it (os.umask sets it, racing other threads)
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _remove_stale_temps(path: Path) -> None:
    """Delete temp files of earlier saves of ``path`` whose process has died."""
    prefix = f".{path.name}."
    for entry in path.parent.glob(f"{_glob_escape(prefix)}*.tmp"):
        middle = entry.name[len(prefix) : -len(".tmp")]
        pid_text = middle.split(".", 1)[0]
        if not pid_text.isdigit() or "." not in middle:
            continue  # not one of ours
        if _alive(int(pid_text)):
            continue  # a save in progress (maybe in another process): leave it
        try:
            entry.unlink()
        except OSError:
            pass  # gone already, or not ours to delete: the save goes on


def _glob_escape(text: str) -> str:
    """``text`` with glob metacharacters escaped."""
    return "".join(f"[{c}]" if c in "*?[" else c for c in text)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


def _guard_sigterm() -> Any:
    """While saving in the main thread with SIGTERM at its default, remove our temp files
    on SIGTERM and then die of it as before. Returns the function restoring the handler."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    try:
        if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
            return lambda: None  # the application handles SIGTERM; our except cleans up
        signal.signal(signal.SIGTERM, _on_sigterm)
    except (ValueError, OSError):  # no signals here (e.g. an embedded interpreter)
        return lambda: None
    return lambda: signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _on_sigterm(signum: int, frame: Any) -> None:
    for tmp in list(_TEMPS):
        try:
            os.unlink(tmp)
        except OSError:
            pass
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)


def load_arrays(
    path: str | os.PathLike[str], kind: str, max_version: int
) -> tuple[dict[str, Any], dict[str, np.ndarray], int]:
    """Read a file written by :func:`save_arrays`; returns ``(meta, arrays, version)``.

    Raises FileFormatError when the file is missing a header, is of another kind, has a
    version newer than ``max_version``, or is truncated or corrupt.
    """
    path = Path(path)
    if path.is_dir():
        raise FileFormatError(f"{path}: is a directory, not an lshcore file")
    if not path.exists():
        raise FileNotFoundError(errno.ENOENT, "no such file", str(path))
    if not path.is_file():
        raise FileFormatError(f"{path}: not a regular file, not an lshcore file")
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
