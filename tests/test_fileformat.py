"""The lshcore file container: round trip, versioning, damage, no pickle, atomic writes."""

from __future__ import annotations

import numpy as np
import pytest

from lshcore.core.fileformat import load_arrays, save_arrays
from lshcore.errors import FileFormatError


def _save(path, **kw):
    args = {"kind": "thing", "version": 1, "meta": {"a": 1}, "arrays": {"x": np.arange(5)}}
    args.update(kw)
    return save_arrays(path, args["kind"], args["version"], args["meta"], args["arrays"])


def test_round_trip(tmp_path) -> None:
    path = _save(tmp_path / "f.lsh", arrays={"x": np.arange(5), "w": np.eye(2, dtype=np.float32)})
    meta, arrays, version = load_arrays(path, "thing", max_version=1)
    assert meta == {"a": 1} and version == 1
    np.testing.assert_array_equal(arrays["x"], np.arange(5))
    assert arrays["w"].dtype == np.float32
    assert [p.name for p in tmp_path.iterdir()] == ["f.lsh"]  # no temp file left behind


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "not a zip"),
        (b"garbage bytes", "not a zip"),
        (b"PK\x03\x04truncated", "not a readable"),
    ],
)
def test_damaged_files(tmp_path, content, message) -> None:
    path = tmp_path / "bad.lsh"
    path.write_bytes(content)
    with pytest.raises(FileFormatError, match=message):
        load_arrays(path, "thing", max_version=1)


def test_truncated_real_file(tmp_path) -> None:
    path = _save(tmp_path / "f.lsh", arrays={"x": np.arange(10_000)})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(FileFormatError):
        load_arrays(path, "thing", max_version=1)


def test_wrong_kind_and_newer_version(tmp_path) -> None:
    path = _save(tmp_path / "f.lsh", version=3)
    with pytest.raises(FileFormatError, match="expected a 'other'"):
        load_arrays(path, "other", max_version=3)
    with pytest.raises(FileFormatError, match="version 3 is not supported"):
        load_arrays(path, "thing", max_version=2)


def test_foreign_npz_and_pickles_refused(tmp_path) -> None:
    foreign = tmp_path / "foreign.npz"
    with open(foreign, "wb") as fh:
        np.savez(fh, x=np.arange(3))
    with pytest.raises(FileFormatError, match="no header"):
        load_arrays(foreign, "thing", max_version=1)
    with pytest.raises(ValueError, match="pickle"):
        _save(tmp_path / "obj.lsh", arrays={"x": np.array([{}], dtype=object)})
    assert not (tmp_path / "obj.lsh").exists()


def test_failed_write_keeps_the_old_file(tmp_path) -> None:
    path = _save(tmp_path / "f.lsh", meta={"generation": 1})
    with pytest.raises(TypeError):  # meta that JSON cannot encode fails before any write
        _save(path, meta={"generation": object()})
    meta, _, _ = load_arrays(path, "thing", max_version=1)
    assert meta == {"generation": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["f.lsh"]


def test_write_text_atomic_keeps_the_mode_a_plain_write_gives(tmp_path) -> None:
    """JSON reports: the old file's mode is kept, a new file gets 0o666 less the umask,
    no temp file is left, the parent folder is created."""
    import os

    from lshcore.core.fileformat import write_text_atomic

    old = tmp_path / "r.json"
    old.write_text("old")
    os.chmod(old, 0o600)
    write_text_atomic(old, '{"a": 1}\n')
    assert old.read_text() == '{"a": 1}\n' and (old.stat().st_mode & 0o777) == 0o600
    new = tmp_path / "sub" / "n.json"
    write_text_atomic(new, "x")
    mask = os.umask(0o022)
    os.umask(mask)
    assert new.read_text() == "x" and (new.stat().st_mode & 0o777) == 0o666 & ~mask
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["n.json", "r.json", "sub"]
