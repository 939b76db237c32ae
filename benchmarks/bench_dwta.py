"""DWTA hashing throughput on sparse CSR input: the numba backend vs the NumPy reference.

Input: ``--n`` random rows of ``--dim`` coordinates (Amazon-670K-like feature space,
135,909), ``--density`` of them non-zero, values uniform in (0, 1]; family DWTA with
SLIDE's Amazon-670K setting (K=6, L=50, bin_size=8). The timed call is
``family.hash(csr)`` (validation, bins, densification, keys). Repetitions alternate
numba, numpy, numpy, numba, ...; figures are medians; the ratio is numba rows/s over
numpy rows/s in the same run. Kernels are single-threaded (nogil, no prange); thread
counts are pinned to ``--threads`` anyway and printed, with the CPU other processes used
during each repetition (from /proc/stat minus this process).

    .venv/bin/python benchmarks/bench_dwta.py --n 10000 --reps 3
"""

from __future__ import annotations

import argparse
import os

parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
parser.add_argument("--n", type=int, default=10_000)
parser.add_argument("--dim", type=int, default=135_909)
parser.add_argument("--density", type=float, default=0.005)
parser.add_argument("--k", type=int, default=6)
parser.add_argument("--l", type=int, default=50)
parser.add_argument("--bin-size", type=int, default=8)
parser.add_argument("--reps", type=int, default=3)
parser.add_argument("--threads", type=int, default=1)
ARGS = parser.parse_args()
for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[var] = str(ARGS.threads)

import statistics  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import scipy.sparse as sp  # noqa: E402

import lshcore  # noqa: E402


def busy_seconds() -> float:
    """Busy CPU seconds of the whole machine so far."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def own_seconds() -> float:
    t = os.times()
    return t.user + t.system


def make_input(rng: np.random.Generator) -> sp.csr_matrix:
    per_row = max(1, int(round(ARGS.density * ARGS.dim)))
    cols = np.sort(rng.integers(0, ARGS.dim, size=(ARGS.n, per_row)), axis=1)
    data = rng.random((ARGS.n, per_row), dtype=np.float32) + np.float32(1e-3)
    indptr = np.arange(ARGS.n + 1, dtype=np.int64) * per_row
    return sp.csr_matrix((data.ravel(), cols.ravel(), indptr), shape=(ARGS.n, ARGS.dim))


def main() -> None:
    import numba

    numba.set_num_threads(ARGS.threads)
    x = make_input(np.random.default_rng(0))
    fams = {
        name: lshcore.hash_family(
            "dwta", ARGS.dim, ARGS.k, ARGS.l, seed=0, bin_size=ARGS.bin_size, backend=name
        )
        for name in ("numba", "numpy")
    }
    print(
        f"input: {ARGS.n} x {ARGS.dim} CSR, nnz {x.nnz} ({x.nnz / ARGS.n:.0f}/row); "
        f"dwta k={ARGS.k} l={ARGS.l} bin_size={ARGS.bin_size}; threads={ARGS.threads} "
        f"(numba {numba.get_num_threads()}); load average {os.getloadavg()}"
    )
    warm = {name: f.hash(x[:64]) for name, f in fams.items()}  # compile / load kernels
    assert np.array_equal(warm["numba"], warm["numpy"])
    times: dict[str, list[float]] = {name: [] for name in fams}
    order = ["numba", "numpy"]
    for rep in range(ARGS.reps):
        for name in order if rep % 2 == 0 else order[::-1]:
            busy0, own0, t0 = busy_seconds(), own_seconds(), time.perf_counter()
            codes = fams[name].hash(x)
            dt = time.perf_counter() - t0
            foreign = (busy_seconds() - busy0) - (own_seconds() - own0)
            times[name].append(dt)
            print(
                f"  rep {rep} {name:6s} {dt:8.3f} s  {ARGS.n / dt:12.0f} rows/s  "
                f"other processes {foreign / dt:.2f} cores"
            )
            assert codes.shape == (ARGS.n, ARGS.l)
    med = {name: statistics.median(v) for name, v in times.items()}
    for name in order:
        print(
            f"{name:6s} median {med[name]:.3f} s = {ARGS.n / med[name]:,.0f} rows/s "
            f"= {x.nnz / med[name] / 1e6:.1f} M non-zeros/s"
        )
    print(f"numba / numpy speed ratio: {med['numpy'] / med['numba']:.1f}x")


if __name__ == "__main__":
    main()
