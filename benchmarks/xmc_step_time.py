"""Median ``XMCTrainer.train_batch`` time per ``shared_labels`` cap, interleaved.

One model per cap, fed the same batches in turn (so load changes hit every cap alike), on
the validation split of ``bench_xmc_train.py`` (train split minus a seeded 20%), 1 thread.

    python benchmarks/xmc_step_time.py STORE 0,256,1024 80
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numba
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from bench_xmc_train import _data  # noqa: E402

from lshcore.training.xmc import XMCConfig, XMCModel, XMCTrainer  # noqa: E402


def main() -> None:
    numba.set_num_threads(1)
    path, caps_arg, n_batches = sys.argv[1], sys.argv[2], int(sys.argv[3])
    caps = [int(c) for c in caps_arg.split(",")]
    train, _, _ = _data(path, 1, validation=True)
    trainers = {
        c: XMCTrainer(XMCModel(train.dim, train.n_labels, XMCConfig(shared_labels=c))) for c in caps
    }
    times: dict[int, list[float]] = {c: [] for c in caps}
    for i, (x, y) in enumerate(train.batches(128, seed=0, epoch=0, labels="lists")):
        if i >= n_batches:
            break
        for c in caps:
            t0 = time.perf_counter()
            trainers[c].train_batch(x, y)
            times[c].append(time.perf_counter() - t0)
    for c in caps:
        t = np.array(times[c][5:]) * 1000  # the first steps include compilation
        print(
            f"shared_labels {c}: median step {np.median(t):.2f} ms "
            f"(p25 {np.percentile(t, 25):.2f}, p75 {np.percentile(t, 75):.2f}) over {t.size} "
            f"steps; load {os.getloadavg()[0]:.2f}"
        )


if __name__ == "__main__":
    main()
