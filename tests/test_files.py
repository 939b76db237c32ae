"""Saving and loading files (issue 9): modes, stale temp files, SIGTERM/SIGKILL, symlinks,
directories, read-only places and tampered models."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest

from lshcore.core.fileformat import load_arrays, save_arrays
from lshcore.errors import FileFormatError
from lshcore.search.index import LSHIndex

ARRAYS = {"a": np.arange(6, dtype=np.float32)}


def _save(path: Path | str) -> Path:
    return save_arrays(path, "test", 1, {"n": 1}, ARRAYS)


def _temps(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_new_file_gets_the_umask_mode(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        _save(tmp_path / "f.lsh")
        os.umask(0o027)
        _save(tmp_path / "g.lsh")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "f.lsh").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "g.lsh").stat().st_mode) == 0o640


def test_saving_over_a_file_keeps_its_mode(tmp_path: Path) -> None:
    target = tmp_path / "f.lsh"
    _save(target)
    os.chmod(target, 0o664)
    _save(target)
    assert stat.S_IMODE(target.stat().st_mode) == 0o664


def test_saving_through_a_symlink_writes_its_target(tmp_path: Path) -> None:
    real = tmp_path / "real.lsh"
    _save(real)
    link = tmp_path / "link.lsh"
    link.symlink_to(real)
    save_arrays(link, "test", 1, {"n": 2}, ARRAYS)
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert load_arrays(real, "test", 1)[0] == {"n": 2}


def test_saving_onto_a_directory_names_the_target(tmp_path: Path) -> None:
    target = tmp_path / "adir"
    target.mkdir()
    with pytest.raises(IsADirectoryError) as info:
        _save(target)
    assert info.value.filename == str(target) and ".tmp" not in str(info.value)
    assert _temps(tmp_path) == []


def test_saving_to_a_read_only_place_names_the_target(tmp_path: Path) -> None:
    ro = Path("/proc/lshcore-test.lsh")  # /proc refuses new files even to root
    with pytest.raises(OSError) as info:
        _save(ro)
    assert info.value.filename == str(ro)
    assert ".tmp" not in str(info.value) and str(ro) in str(info.value)


def test_loading_a_directory_or_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileFormatError, match="is a directory"):
        LSHIndex.load(tmp_path)
    with pytest.raises(FileNotFoundError) as info:
        LSHIndex.load(tmp_path / "none.lsh")
    assert info.value.filename == str(tmp_path / "none.lsh")


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_next_save_removes_stale_temps_of_dead_processes_only(tmp_path: Path) -> None:
    target = tmp_path / "f.lsh"
    stale = tmp_path / f".f.lsh.{_dead_pid()}.abc123.tmp"
    stale.write_bytes(b"x" * 1000)
    live = tmp_path / f".f.lsh.{os.getppid()}.def456.tmp"  # a running process: kept
    live.write_bytes(b"y")
    other = tmp_path / f".g.lsh.{_dead_pid()}.abc123.tmp"  # another target: kept
    other.write_bytes(b"z")
    _save(target)
    assert not stale.exists() and live.exists() and other.exists()


# The child writes part of the file, then is killed by the signal it sends itself.
_KILLED_SAVE = """
import os, signal, sys
import numpy as np
from lshcore.core import fileformat

def savez(fh, **payload):
    fh.write(b"PK" + b"\\0" * 1_000_000)
    fh.flush()
    os.kill(os.getpid(), getattr(signal, sys.argv[2]))

fileformat.np.savez = savez  # the module's numpy: patched for this child only
fileformat.save_arrays(sys.argv[1], "test", 1, {}, {"a": np.zeros(3)})
"""


def _killed_save(target: Path, sig: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_KILLED_SAVE), str(target), sig],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_sigterm_during_save_leaves_no_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "f.lsh"
    _save(target)
    proc = _killed_save(target, "SIGTERM")
    assert proc.returncode == -signal.SIGTERM, proc.stderr
    assert _temps(tmp_path) == []
    assert load_arrays(target, "test", 1)[0] == {"n": 1}  # the old file is intact


def test_sigkill_temp_file_is_removed_by_the_next_save(tmp_path: Path) -> None:
    target = tmp_path / "f.lsh"
    proc = _killed_save(target, "SIGKILL")
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert len(_temps(tmp_path)) == 1  # SIGKILL cannot be caught
    _save(target)
    assert _temps(tmp_path) == []


def _rewrite_header(path: Path, edit) -> None:  # type: ignore[no-untyped-def]
    with zipfile.ZipFile(path) as zf:
        members = {name: zf.read(name) for name in zf.namelist()}
    header = json.loads(np.lib.format.read_array(_as_file(members["__header__.npy"])).tobytes())
    edit(header["meta"])
    raw = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
    import io

    buf = io.BytesIO()
    np.lib.format.write_array(buf, raw)
    members["__header__.npy"] = buf.getvalue()
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)


def _as_file(data: bytes):  # type: ignore[no-untyped-def]
    import io

    return io.BytesIO(data)


def _replace_array(path: Path, name: str, value: np.ndarray) -> None:
    with zipfile.ZipFile(path) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    import io

    buf = io.BytesIO()
    np.lib.format.write_array(buf, value)
    members[name + ".npy"] = buf.getvalue()
    with zipfile.ZipFile(path, "w") as zf:
        for n, data in members.items():
            zf.writestr(n, data)


@pytest.fixture
def saved_model(tmp_path: Path) -> Path:
    from lshcore.training.model import Model

    m = Model.mlp(8, [32], 3, active=0.25, seed=0, tables="index", k=2, l=4)
    path = tmp_path / "m.lsh"
    m.save(path)
    return path


def _selector_not_a_mapping(meta: dict) -> None:  # type: ignore[type-arg]
    hashed = [e for e in meta["layers"] if "selector" in e]
    hashed[0]["selector"] = [1, 2]  # used to raise a raw AttributeError


def _bad_optimizer(meta: dict) -> None:  # type: ignore[type-arg]
    meta["optimizer"] = {"nonsense": 1}


@pytest.mark.parametrize("edit", [_selector_not_a_mapping, _bad_optimizer])
def test_tampered_model_header_is_a_file_format_error(saved_model: Path, edit) -> None:  # type: ignore[no-untyped-def]
    from lshcore.training.model import Model

    _rewrite_header(saved_model, edit)
    with pytest.raises(FileFormatError, match=str(saved_model.name)):
        Model.load(saved_model)


def test_tampered_model_weights_are_a_file_format_error(saved_model: Path) -> None:
    """NaN weights reached the index rebuild, which raised an InputError about "x:"."""
    from lshcore.training.model import Model

    _, arrays, _ = load_arrays(saved_model, "lsh-model", 99)
    w = arrays["l0.weight"].copy()
    w[0, 0] = np.nan
    _replace_array(saved_model, "l0.weight", w)
    with pytest.raises(FileFormatError) as info:
        Model.load(saved_model)
    assert str(saved_model) in str(info.value)
