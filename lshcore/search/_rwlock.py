"""A readers-writer lock: many concurrent readers, one exclusive writer.

Used by :class:`~lshcore.search.index.LSHIndex` and
:class:`~lshcore.search.tables.LSHTables` so that searches (whose numba kernels release
the GIL) run in parallel while an add/update/remove waits for them and runs alone.
Writers are preferred: once a writer waits, new readers queue behind it, so a steady
stream of searches cannot starve an update. Both sides are reentrant per thread (a
writer may call reader methods and other writer methods of the same object; a reader
may call other reader methods), which lets public methods call each other.
"""

from __future__ import annotations

import threading
from typing import Any

__all__ = ["RWLock"]


class _Side:
    """Context manager for one side of the lock (no generator: cheap per call)."""

    __slots__ = ("_enter", "_exit")

    def __init__(self, enter: Any, exit_: Any):
        self._enter, self._exit = enter, exit_

    def __enter__(self) -> None:
        self._enter()

    def __exit__(self, *exc: object) -> None:
        self._exit()


class RWLock:
    """``with lock.read: ...`` (shared) and ``with lock.write: ...`` (exclusive)."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._readers = 0  # threads holding the read side
        self._writer: int | None = None  # thread id holding the write side
        self._write_depth = 0
        self._writers_waiting = 0
        self._local = threading.local()  # per-thread read depth (reentrant reads)
        self.read = _Side(self._acquire_read, self._release_read)
        self.write = _Side(self._acquire_write, self._release_write)

    def _acquire_read(self) -> None:
        local = self._local
        depth = getattr(local, "depth", 0)
        if depth or self._writer == threading.get_ident():
            # already inside (as reader or writer): re-entering must not wait, or a
            # queued writer would deadlock with this thread
            local.depth = depth + 1
            return
        with self._cond:
            while self._writer is not None or self._writers_waiting:
                self._cond.wait()
            self._readers += 1
        local.depth = 1
        local.counted = True

    def _release_read(self) -> None:
        local = self._local
        local.depth -= 1
        if local.depth == 0 and getattr(local, "counted", False):
            local.counted = False
            with self._cond:
                self._readers -= 1
                if self._readers == 0:
                    self._cond.notify_all()

    def _acquire_write(self) -> None:
        me = threading.get_ident()
        if self._writer == me:
            self._write_depth += 1
            return
        if getattr(self._local, "depth", 0):
            raise RuntimeError(
                "RWLock: a thread holding the read side cannot take the write side (deadlock)"
            )
        with self._cond:
            self._writers_waiting += 1
            try:
                while self._writer is not None or self._readers:
                    self._cond.wait()
            finally:
                self._writers_waiting -= 1
            self._writer = me
            self._write_depth = 1

    def _release_write(self) -> None:
        self._write_depth -= 1
        if self._write_depth == 0:
            with self._cond:
                self._writer = None
                self._cond.notify_all()
