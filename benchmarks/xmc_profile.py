"""Where an lshcore XMC training step spends its time: timers around each phase.

    python benchmarks/xmc_profile.py STORE [--steps 150] [--shared-labels N] [--mode M] ...

Wraps every ``backend.kernels.xmc_*`` call, the query hashing and the rehash/rebuild in
wall-clock timers, trains ``--steps`` batches of the validation split's training part
(train split minus a seeded 20%, seed 1; the test split is not read), and prints seconds
per phase and their share of the loop. 1 thread: set OMP/NUMBA/OPENBLAS_NUM_THREADS=1.
"""

from __future__ import annotations

import argparse
import collections
import functools
import time
from typing import Any

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("store")
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--cprofile", action="store_true")
    ap.add_argument("--set", action="append", default=[], help="XMCConfig field=value")
    a = ap.parse_args()
    from lshcore.data.store import StoreView, open_store
    from lshcore.training.xmc import XMCConfig, XMCModel, XMCTrainer

    store = open_store(a.store)
    train, _ = store.split(test_fraction=0.2, seed=0, save=False)
    rows = np.asarray(train.row_ids)
    perm = np.random.default_rng(1).permutation(rows.size)
    n_val = int(round(rows.size * 0.2))
    train = StoreView(store, np.sort(rows[perm[n_val:]]), "train-minus-validation")
    kw: dict[str, Any] = {}
    for s in a.set:
        k, v = s.split("=", 1)
        field = XMCConfig.__dataclass_fields__[k]
        typ = field.type if isinstance(field.type, type) else eval(str(field.type).split("|")[0])
        kw[k] = (v.lower() in ("1", "true")) if typ is bool else typ(v)
    cfg = XMCConfig(**kw)
    model = XMCModel(train.dim, train.n_labels, cfg)
    trainer = XMCTrainer(model)
    times: dict[str, float] = collections.defaultdict(float)

    def timed(name: str, fn: Any) -> Any:
        @functools.wraps(fn)
        def wrap(*args: Any, **kws: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*args, **kws)
            finally:
                times[name] += time.perf_counter() - t0

        return wrap

    class K:
        pass

    k = K()
    for name in dir(model.kernels):
        if name.startswith("xmc_"):
            setattr(k, name, timed(name, getattr(model.kernels, name)))
    adam = model.kernels.xmc_adam_rows
    by_shape = {
        model.w1.shape: "xmc_adam_rows (w1)",
        model.w2.shape: "xmc_adam_rows (w2)",
        (model.n_labels, 1): "xmc_adam_rows (b2)",
        (1, cfg.hidden): "xmc_adam_rows (b1)",
    }

    def adam_split(param: Any, *args: Any) -> Any:
        return timed(by_shape.get(param.shape, "xmc_adam_rows"), adam)(param, *args)

    k.xmc_adam_rows = adam_split  # type: ignore[attr-defined]
    model.kernels = k  # type: ignore[assignment]
    model.tables.kernels = k
    fam_hash = model.tables.family.hash
    model.tables.family.hash = timed("query/row hashing (family.hash)", fam_hash)
    model.tables.rehash = timed("rehash (total)", model.tables.rehash)
    model.tables.build = timed("rebuild (total)", model.tables.build)
    # warm up the JIT on a few steps outside the timers
    it = train.batches(cfg.batch_size, seed=0, epoch=0, labels="lists")
    batches = [b for _, b in zip(range(a.steps + 3), it, strict=False)]
    for x, y in batches[:3]:
        trainer.train_batch(x, y)
    times.clear()
    prof = None
    if a.cprofile:
        import cProfile

        prof = cProfile.Profile()
        prof.enable()
    t0 = time.perf_counter()
    for x, y in batches[3:]:
        trainer.train_batch(x, y)
    total = time.perf_counter() - t0
    if prof is not None:
        prof.disable()
        import pstats

        pstats.Stats(prof).sort_stats("tottime").print_stats(18)
    n = len(batches) - 3
    print(f"{n} steps, {total:.2f} s, {1000 * total / n:.2f} ms/step; config {kw}")
    for name, s in sorted(times.items(), key=lambda kv: -kv[1]):
        print(f"  {name:40s} {s:7.3f} s  {100 * s / total:5.1f} %  {1000 * s / n:7.2f} ms/step")
    print(f"  rehashes {model.tables.rehashes}, rebuilds {model.tables.rebuilds}")


if __name__ == "__main__":
    main()
