"""Host kernels behind two claims of the GPU work (issue 13), timed side by side in one
process, interleaved, medians; 1 thread (set OMP_NUM_THREADS=1 NUMBA_NUM_THREADS=1).

* the XMC tables' shared active set (``xmc_select_batch``) at 670k labels, batch 128,
  active 128, L=16, K=10: the NumPy reference vs the numba kernel the GPU backend uses;
* ``top_by_score`` (the tie rule host and device share for ``rerank``/``exact``) vs a
  plain ``argpartition`` pick at batch 32 x 200k scores, m = 2,000 (host ``exact``).

    OMP_NUM_THREADS=1 NUMBA_NUM_THREADS=1 python benchmarks/bench_host_selection_kernels.py
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from lshcore.kernels import _np_xmc, _numba_xmc
from lshcore.training.device_select import top_by_score


def _median_ms(fns: dict[str, Callable[[], Any]], reps: int) -> dict[str, float]:
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(reps):  # interleaved
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: 1e3 * float(np.median(ts)) for name, ts in times.items()}


def main() -> None:
    rng = np.random.default_rng(0)
    n_out, n_tables, k, batch = 670_000, 16, 10, 128
    codes = rng.integers(0, 2**k, (n_out, n_tables)).astype(np.int64)
    offsets, ids = _numba_xmc.xmc_build_tables(codes, 2**k)
    q = rng.integers(0, 2**k, (batch, n_tables)).astype(np.int64)
    labels = rng.integers(0, n_out, (batch, 1)).astype(np.int64)
    slot = np.full(n_out, -1, np.int64)

    def select(kern: Any) -> Callable[[], Any]:
        return lambda: kern.xmc_select_batch(
            q, offsets, ids, labels, n_out, 128, 0, 128, True, 1, slot
        )

    select(_numba_xmc)()  # compile
    got = _median_ms({"numpy": select(_np_xmc), "numba": select(_numba_xmc)}, 7)
    print(f"xmc_select_batch, 670k labels, batch 128: numpy {got['numpy']:.2f} ms, "
          f"numba {got['numba']:.2f} ms")  # fmt: skip

    b, n, m = 32, 200_000, 2_000
    z = rng.standard_normal((b, n)).astype(np.float32)
    row_ids = np.broadcast_to(np.arange(n), (b, n))

    def argpartition_pick() -> Any:
        return np.sort(np.argpartition(-z, m - 1, axis=1)[:, :m], axis=1)

    got = _median_ms(
        {"top_by_score": lambda: top_by_score(np, z, row_ids, m, n),
         "argpartition": argpartition_pick},
        5,
    )  # fmt: skip
    print(f"pick of m=2000 of 32 x 200k scores: top_by_score {got['top_by_score']:.1f} ms, "
          f"argpartition (no tie rule) {got['argpartition']:.1f} ms")  # fmt: skip


if __name__ == "__main__":
    main()
