"""Cost of LSHIndex's readers-writer lock on search, single-threaded and with 2 readers.

Contenders, interleaved (A, B, A, B, ...) in one process with medians over repetitions:
``locked`` is the index as shipped; ``nolock`` swaps the index's and the tables' locks for
no-op context managers (the same code path minus the lock; safe here because nothing
writes during the timed region). Throughput is queries/s summed over the reader threads.

    OMP_NUM_THREADS=1 NUMBA_NUM_THREADS=1 .venv/bin/python benchmarks/bench_index_threads.py \
        --out benchmarks/results/index_threads.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import threading
import time
from typing import Any

import numpy as np

from lshcore import LSHIndex


class _NoLock:
    def __enter__(self) -> None:
        pass

    def __exit__(self, *exc: object) -> None:
        pass


class _NoRW:
    read = _NoLock()
    write = _NoLock()


def _other_cpu_seconds() -> float:
    """CPU seconds used so far by every other process (from /proc), to spot a busy host."""
    me, total = os.getpid(), 0.0
    tick = os.sysconf("SC_CLK_TCK")
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == me:
            continue
        try:
            with open(f"/proc/{pid}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
        except (OSError, IndexError, ValueError):
            continue
    return total


def _run(index: LSHIndex, queries: np.ndarray, batch: int, threads: int, seconds: float) -> float:
    """Queries per second over ``threads`` readers searching for ``seconds``."""
    counts = [0] * threads
    stop = time.perf_counter() + seconds

    def work(t: int) -> None:
        i, n = 0, 0
        while time.perf_counter() < stop:
            index.search(queries[i : i + batch], 10)
            i = (i + batch) % (queries.shape[0] - batch)
            n += batch
        counts[t] = n

    start = time.perf_counter()
    pool = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    for th in pool:
        th.start()
    for th in pool:
        th.join()
    return sum(counts) / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--seconds", type=float, default=0.5)
    ap.add_argument("--policy", default="fifo")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    data = rng.standard_normal((args.n, args.dim)).astype(np.float32)
    queries = rng.standard_normal((4096, args.dim)).astype(np.float32)
    index = LSHIndex(args.dim, "srp", k=12, l=16, policy=args.policy, backend="numba", seed=0)
    index.add(data)
    index.search(queries[:64], 10)  # compile / warm up
    locks = {"locked": (index._lock, index.tables._lock), "nolock": (_NoRW(), _NoRW())}

    def use(name: str) -> None:
        index._lock, index.tables._lock = locks[name]  # type: ignore[assignment]

    results: dict[str, Any] = {
        "command": "OMP_NUM_THREADS=1 NUMBA_NUM_THREADS=1 .venv/bin/python "
        "benchmarks/bench_index_threads.py "
        + " ".join(f"--{k} {v}" for k, v in vars(args).items() if v is not None),
        "host": {"cpus": os.cpu_count(), "loadavg_before": os.getloadavg()},
        "cases": [],
    }
    for threads in (1, 2):
        for batch in (1, 64):
            runs: dict[str, list[float]] = {"locked": [], "nolock": []}
            other0 = _other_cpu_seconds()
            for _ in range(args.reps):
                for name in ("locked", "nolock"):  # interleaved
                    use(name)
                    runs[name].append(_run(index, queries, batch, threads, args.seconds))
            use("locked")
            other = _other_cpu_seconds() - other0
            med = {k: statistics.median(v) for k, v in runs.items()}
            case = {
                "threads": threads,
                "batch": batch,
                "qps_median": med,
                "qps_all": runs,
                "locked_over_nolock": med["locked"] / med["nolock"],
                "other_processes_cpu_s": round(other, 1),
            }
            results["cases"].append(case)
            print(
                f"threads={threads} batch={batch:3d}: locked {med['locked']:9.0f} q/s, "
                f"no lock {med['nolock']:9.0f} q/s, ratio {case['locked_over_nolock']:.3f} "
                f"(other processes used {other:.1f} CPU s)"
            )
    results["host"]["loadavg_after"] = os.getloadavg()
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(results, fh, indent=1)


if __name__ == "__main__":
    main()
