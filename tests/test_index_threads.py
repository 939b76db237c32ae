"""Concurrent readers and writers of LSHIndex / LSHTables (issue 9).

Each reproduction runs in a child interpreter: before the readers-writer lock they ended
in SIGSEGV or "double free" (which would kill pytest itself), so a crash must fail one
test, not the run.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

from lshcore.search._rwlock import RWLock

BACKENDS = ["numpy", "numba"]
POLICIES = ["fifo", "reservoir", "unbounded"]

# A writer adds batches of new ids and removes/re-adds old ones (an id's vector never
# changes, so every id has one true score); readers search meanwhile and check each
# returned id against the ids ever added and each score against the exact cosine.
_SEARCH_WHILE_ADDING = """
import sys, threading, time
sys.setswitchinterval(1e-5)  # switch threads often: overlaps show up within a short run
import numpy as np
from lshcore import LSHIndex

backend, policy = sys.argv[1], sys.argv[2]
dim, total, batch = 16, 6000, 200
rng = np.random.default_rng(0)
data = rng.standard_normal((total, dim)).astype(np.float32)
unit = data / np.linalg.norm(data, axis=1, keepdims=True)
queries = rng.standard_normal((32, dim)).astype(np.float32)
qunit = queries / np.linalg.norm(queries, axis=1, keepdims=True)
index = LSHIndex(dim, "srp", k=4, l=8, bucket_size=8, policy=policy, backend=backend, seed=1)
index.add(data[:batch], ids=np.arange(batch))
errors = []
done = threading.Event()

def writer():
    try:
        for lo in range(batch, total, batch):
            index.add(data[lo : lo + batch], ids=np.arange(lo, lo + batch))
            old = np.arange(lo - batch, lo - batch // 2)
            index.remove(old)
            index.add(data[old], ids=old)
            index.update(old[:10], data[old[:10]])  # same vectors: true scores unchanged
    except Exception as exc:
        errors.append(f"writer: {type(exc).__name__}: {exc}")
    finally:
        done.set()

def reader():
    searches = 0
    try:
        while not done.is_set() or searches < 5:
            scores, ids = index.search(queries, 10)
            searches += 1
            found = ids >= 0
            if not ((ids[found] < total).all() and np.isfinite(scores[found]).all()):
                errors.append(f"reader: invalid id or non-finite score: {ids} {scores}")
                return
            true = np.einsum("ij,ij->i", unit[ids[found]], qunit[np.nonzero(found)[0]])
            if not np.allclose(scores[found], true, atol=1e-4):
                errors.append("reader: a score is not the true score of its id")
                return
            if not (np.isneginf(scores[~found]).all()):
                errors.append("reader: padding is not -inf")
                return
            cand = index.candidates(queries[:4])
            if len(cand) != 4:
                errors.append("reader: candidates lost a query")
                return
    except Exception as exc:
        errors.append(f"reader: {type(exc).__name__}: {exc}")

threads = [threading.Thread(target=writer)] + [threading.Thread(target=reader) for _ in range(2)]
for t in threads:
    t.start()
for t in threads:
    t.join()
if errors:
    print("\\n".join(errors[:5]))
    sys.exit(3)
print("OK", len(index))
"""

# The Hogwild reproduction of issue 9: one worker rehashes the index (LSHIndex.update)
# while the other reads candidates. Three runs, each in its own child.
_HOGWILD = """
import numpy as np
from lshcore.data.datasets import load_digits
from lshcore.training.engine import Trainer
from lshcore.training.model import Model

ds = load_digits()
m = Model.mlp(64, [512, 512], 10, active=0.05, seed=0, policy="topk", rehash="fixed:1",
              tables="index", family="dwta", k=1, l=50, transform="none", bin_size=16)
Trainer(m, "adam", None, batch_size=16, workers=2, seed=0).fit(ds.x_train[:640], ds.y_train[:640])
print("OK")
"""


def _run_child(code: str, *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _explain(proc: subprocess.CompletedProcess[str]) -> str:
    how = f"signal {-proc.returncode}" if proc.returncode < 0 else f"exit {proc.returncode}"
    return f"child died ({how}):\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("backend", BACKENDS)
def test_search_while_another_thread_writes(backend: str, policy: str) -> None:
    if backend == "numba":
        pytest.importorskip("numba", reason="the numba backend needs numba")
    proc = _run_child(_SEARCH_WHILE_ADDING, backend, policy)
    assert proc.returncode == 0 and proc.stdout.startswith("OK"), _explain(proc)


@pytest.mark.parametrize("run", range(3))
def test_hogwild_with_index_tables_completes(run: int) -> None:
    pytest.importorskip("sklearn", reason="the digits data come with scikit-learn")
    proc = _run_child(_HOGWILD)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("OK"), _explain(proc)


def test_tables_queries_while_inserting_from_threads() -> None:
    """LSHTables used directly: queries from one thread while another inserts/removes."""
    code = """
import sys, threading
import numpy as np
from lshcore.search.tables import LSHTables
t = LSHTables(4, 64, bucket_size=4, policy=sys.argv[1], backend=sys.argv[2])
rng = np.random.default_rng(0)
codes = rng.integers(0, 64, size=(4000, 4))
done, errors = threading.Event(), []
def writer():
    for lo in range(0, 4000, 100):
        ids = np.arange(lo, lo + 100)
        t.insert(ids, codes[lo : lo + 100])
        t.remove(ids[:50], codes[lo : lo + 50])
    done.set()
def reader():
    while not done.is_set():
        c = t.query(codes[:16])
        ids = np.asarray(c.ids)
        if ids.size and (ids.min() < 0 or ids.max() >= 4000):
            errors.append("bad id")
            return
th = [threading.Thread(target=writer), threading.Thread(target=reader)]
[x.start() for x in th]; [x.join() for x in th]
print("OK" if not errors else errors[0])
"""
    for policy in POLICIES:
        proc = _run_child(code, policy, "numba" if _has_numba() else "numpy")
        assert proc.returncode == 0 and proc.stdout.startswith("OK"), _explain(proc)


def _has_numba() -> bool:
    try:
        import numba  # noqa: F401
    except ImportError:
        return False
    return True


def test_rwlock_readers_share_writers_exclude() -> None:
    lock = RWLock()
    inside = []
    both_in = threading.Barrier(2, timeout=5)

    def reader() -> None:
        with lock.read:
            both_in.wait()  # times out (BrokenBarrierError) if readers excluded each other
            inside.append(1)

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert inside == [1, 1]

    order: list[str] = []

    def late_reader() -> None:
        with lock.read:
            order.append("read")

    with lock.write:
        t = threading.Thread(target=late_reader)
        t.start()
        t.join(0.2)
        assert t.is_alive(), "a reader entered while the writer held the lock"
        order.append("write done")
    t.join(5)
    assert order == ["write done", "read"]


def test_rwlock_reentrant_writer_and_reader() -> None:
    lock = RWLock()
    with lock.write:
        with lock.write, lock.read:
            pass
    with lock.read, lock.read:
        with pytest.raises(RuntimeError, match="read side"):
            lock.write.__enter__()
    with lock.write:  # free again
        pass


def test_index_counters_are_not_lost_across_threads() -> None:
    from lshcore import LSHIndex

    index = LSHIndex(8, "srp", k=4, l=4, backend="numpy", policy="unbounded")
    rng = np.random.default_rng(0)
    index.add(rng.standard_normal((100, 8)).astype(np.float32))
    q = rng.standard_normal((5, 8)).astype(np.float32)
    before = index.hash_mults
    index.search(q, 3)
    per_call = index.hash_mults - before
    assert index.last_cost == per_call

    def work() -> None:
        for _ in range(50):
            index.search(q, 3)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert index.hash_mults - before == per_call * 201
