"""Where a Hogwild worker's time goes per batch: phases timed per thread, and the
process's CPU seconds against the wall (a process that uses 2 cores for 2 workers shows
CPU/wall near 2; a GIL-serialized one near 1).

    OMP_NUM_THREADS=1 NUMBA_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 \\
        python benchmarks/hogwild_profile.py --train 10000 --workers 1 2 1 2
"""

from __future__ import annotations

import argparse
import collections
import functools
import os
import sys
import threading
import time

T: dict = collections.defaultdict(float)  # (thread name, phase) -> seconds


def _wrap(cls, name, phase):
    fn = getattr(cls, name)

    @functools.wraps(fn)
    def inner(*a, **k):
        t0 = time.perf_counter()
        try:
            return fn(*a, **k)
        finally:
            T[(threading.current_thread().name, phase)] += time.perf_counter() - t0

    setattr(cls, name, inner)


def _control(workers: list[int]) -> None:
    """No Python in the loop: a nogil numba spin on 1 or 2 threads (the host's ceiling)."""
    import numba

    @numba.njit(nogil=True)
    def spin(n):  # type: ignore[no-untyped-def]
        s = 0.0
        for i in range(n):
            s += (i % 7) * 0.5
        return s

    spin(10)
    for w in workers:

        def loop(w: int = w) -> None:
            for _ in range(2000 // w):
                spin(300_000)

        threads = [threading.Thread(target=loop) for _ in range(w)]
        load = os.getloadavg()[0]
        c0, t0 = time.process_time(), time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        cpu, wall = time.process_time() - c0, time.perf_counter() - t0
        print(
            f"control, {w} threads: {2000 / wall:6.0f} calls/s  cpu/wall {cpu / wall:.2f}  load {load:.2f}"
        )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--train", type=int, default=10000)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2, 1, 2])
    ap.add_argument("--switch", type=float, default=None, help="sys.setswitchinterval")
    ap.add_argument("--no-phases", action="store_true")
    ap.add_argument("--control", action="store_true", help="nogil spin loop, 1 vs 2 threads")
    args = ap.parse_args()
    if args.control:
        _control(args.workers)
        return
    if args.switch:
        sys.setswitchinterval(args.switch)
    from lshcore.data.datasets import load_dataset
    from lshcore.training import layer, optim, selector
    from lshcore.training.engine import Trainer
    from lshcore.training.model import Model

    if not args.no_phases:
        _wrap(Model, "train_step", "step")
        _wrap(selector.ActiveSelector, "select", "select")
        _wrap(selector.ActiveSelector, "after_update", "after_update")
        _wrap(layer._Layer, "_block_forward", "block_fwd")
        _wrap(layer._Layer, "_block_backward", "block_bwd")
        _wrap(optim.Optimizer, "block_step", "block_update")
    ds = load_dataset("mnist", "/work/shared/data/mnist")
    x, y = ds.x_train[: args.train], ds.y_train[: args.train]
    warm = Model.mlp(784, [1000, 1000, 1000], 10, active=0.05, seed=0)
    Trainer(warm, "adam", 3e-3).fit(x[:512], y[:512])  # compile
    for w in args.workers:
        T.clear()
        model = Model.mlp(784, [1000, 1000, 1000], 10, active=0.05, seed=0)
        tr = Trainer(model, "adam", 3e-3, workers=w)
        load = os.getloadavg()[0]
        c0, t0 = time.process_time(), time.perf_counter()
        st = tr.fit(x, y)
        cpu, wall = time.process_time() - c0, time.perf_counter() - t0
        nb = -(-args.train // 128)
        ph = collections.defaultdict(float)
        for (_, p), s in T.items():
            ph[p] += s
        parts = "  ".join(f"{p} {1e3 * s / nb:.2f}" for p, s in sorted(ph.items()))
        print(
            f"workers {w}: {st.samples_per_second:6.0f}/s  wall {wall:.2f}s  cpu/wall {cpu / wall:.2f}"
            f"  load {load:.2f}->{os.getloadavg()[0]:.2f}  ms/batch summed over threads: {parts}",
            flush=True,
        )


if __name__ == "__main__":
    main()
