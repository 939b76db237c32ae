"""SRP hashing throughput: ``lshcore.hash_family("srp", ...)`` vs faiss ``IndexLSH.sa_encode``.

Both turn the same float32 vectors into ``nbits`` sign bits of random projections:
lshcore as ``l = nbits / k`` int64 table codes of ``k`` bits, faiss as packed bytes
(``IndexLSH(d, nbits)`` with its random rotation, thresholds at 0, no training).
Repetitions are interleaved (lshcore, faiss, faiss, lshcore, ...), each figure is the
median over repetitions, and the ratio is lshcore vectors/s over faiss vectors/s in
the same run. Thread counts are set before numpy/faiss load and printed; so is the CPU
time other processes used while each repetition ran (a contaminated repetition, where
others used more than ``--max-foreign`` cores on average, is redone up to twice).

    .venv/bin/python benchmarks/bench_hashing.py --threads 1 --out benchmarks/results/hashing
"""

from __future__ import annotations

import argparse
import os
import sys


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=100_000, help="vectors per batch")
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--nbits", type=int, nargs="+", default=[16, 64, 256, 1024])
    parser.add_argument("--k", type=int, default=16, help="bits per lshcore table code")
    parser.add_argument("--reps", type=int, default=7, help="timed repetitions per contender")
    parser.add_argument("--threads", type=int, default=1, help="BLAS/OpenMP/numba threads")
    parser.add_argument("--backend", default=None, help="lshcore backend (default: default)")
    parser.add_argument(
        "--max-foreign",
        type=float,
        default=None,
        help="cores other processes may use during a repetition before it is redone "
        "(default: the cores this benchmark leaves free)",
    )
    parser.add_argument("--out", default=None, help="write <out>.json and <out>.md")
    return parser.parse_args(argv)


ARGS = parse_args() if __name__ == "__main__" else None
if ARGS is not None:  # thread counts must be set before numpy / faiss load their pools
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ[var] = str(ARGS.threads)

import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402


def busy_jiffies() -> int:
    """CPU time all processes spent busy (clock ticks, from /proc/stat)."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields[:8]) - idle


def timed(fn: Callable[[], Any]) -> tuple[float, float]:
    """(wall seconds, cores used by other processes on average) of one call."""
    ticks = os.sysconf("SC_CLK_TCK")
    busy0, own0, t0 = busy_jiffies(), os.times(), time.perf_counter()
    fn()
    wall = time.perf_counter() - t0
    busy1, own1 = busy_jiffies(), os.times()
    own = (own1.user + own1.system) - (own0.user + own0.system)
    foreign = max(0.0, (busy1 - busy0) / ticks - own)
    return wall, foreign / wall


def measure(
    fn: Callable[[], Any], max_foreign: float, retries: int = 2
) -> tuple[float, float, int]:
    """One clean repetition: (seconds, foreign cores, discarded contaminated runs)."""
    discarded = 0
    while True:
        wall, foreign = timed(fn)
        if foreign <= max_foreign or discarded >= retries:
            return wall, foreign, discarded
        discarded += 1


def main(args: argparse.Namespace) -> dict[str, Any]:
    import faiss
    import threadpoolctl

    import lshcore

    faiss.omp_set_num_threads(args.threads)
    threadpoolctl.threadpool_limits(args.threads)
    numba_threads = None
    if "numba" in lshcore.backends():
        import numba

        numba.set_num_threads(args.threads)
        numba_threads = numba.get_num_threads()
    blas = [(p["internal_api"], p["num_threads"]) for p in threadpoolctl.threadpool_info()]
    backend = lshcore.get_backend(args.backend).name
    cores = os.cpu_count() or 1
    max_foreign = args.max_foreign if args.max_foreign is not None else max(0, cores - args.threads)

    x = np.random.default_rng(0).standard_normal((args.n, args.dim)).astype(np.float32)
    setup = {
        "command": "python " + " ".join(sys.argv),
        "n": args.n,
        "dim": args.dim,
        "k": args.k,
        "reps": args.reps,
        "threads": args.threads,
        "faiss_omp_threads": faiss.omp_get_max_threads(),
        "blas_threads": blas,
        "numba_threads": numba_threads,
        "lshcore_backend": backend,
        "faiss": faiss.__version__,
        "numpy": np.__version__,
        "cpu": platform.processor() or platform.machine(),
        "cores": cores,
        "max_foreign_cores": max_foreign,
        "loadavg_before": os.getloadavg(),
    }
    print(json.dumps(setup, indent=1))

    rows = []
    for nbits in args.nbits:
        if nbits % args.k:
            raise SystemExit(f"--nbits {nbits} is not a multiple of --k {args.k}")
        family = lshcore.hash_family(
            "srp", args.dim, args.k, nbits // args.k, seed=0, backend=args.backend
        )
        index = faiss.IndexLSH(args.dim, nbits)  # rotate_data=True, thresholds at 0
        contenders = {
            "lshcore": lambda f=family: f.hash(x),
            "faiss": lambda i=index: i.sa_encode(x),
        }
        for fn in contenders.values():  # warm up (allocations, lazy imports)
            fn()
        times: dict[str, list[float]] = {name: [] for name in contenders}
        foreign: list[float] = []
        discarded = 0
        order = list(contenders)
        for rep in range(args.reps):
            for name in order if rep % 2 == 0 else order[::-1]:  # A B, B A, ...
                wall, others, dropped = measure(contenders[name], max_foreign)
                times[name].append(wall)
                foreign.append(others)
                discarded += dropped
        row = {
            "nbits": nbits,
            "l": nbits // args.k,
            "lshcore_s": statistics.median(times["lshcore"]),
            "faiss_s": statistics.median(times["faiss"]),
            "foreign_cores_median": statistics.median(foreign),
            "discarded": discarded,
        }
        row["lshcore_vps"] = args.n / row["lshcore_s"]
        row["faiss_vps"] = args.n / row["faiss_s"]
        row["ratio"] = row["lshcore_vps"] / row["faiss_vps"]
        rows.append(row)
        print(
            f"nbits={nbits:5d}  lshcore {row['lshcore_vps'] / 1e6:7.3f} M vec/s   "
            f"faiss {row['faiss_vps'] / 1e6:7.3f} M vec/s   ratio {row['ratio']:.2f}   "
            f"(others used {row['foreign_cores_median']:.2f} cores; {discarded} reps redone)"
        )
    setup["loadavg_after"] = os.getloadavg()
    return {"setup": setup, "rows": rows}


def markdown(result: dict[str, Any]) -> str:
    s = result["setup"]
    lines = [
        "# SRP hashing throughput: lshcore vs faiss IndexLSH",
        "",
        f"Command: `{s['command']}`",
        "",
        f"{s['n']:,} x {s['dim']} float32 Gaussian vectors; lshcore `srp` with k={s['k']} "
        f"bits per table (l = nbits / k tables, backend `{s['lshcore_backend']}`); faiss "
        f"`IndexLSH(d, nbits).sa_encode` (random rotation, thresholds 0). Threads: "
        f"{s['threads']} (faiss OMP {s['faiss_omp_threads']}, BLAS {s['blas_threads']}, "
        f"numba {s['numba_threads']}). {s['reps']} interleaved repetitions, medians. "
        f"faiss {s['faiss']}, numpy {s['numpy']}, {s['cores']} cores, load average "
        f"{s['loadavg_before'][0]:.2f} before / {s['loadavg_after'][0]:.2f} after.",
        "",
        "| nbits | tables | lshcore (M vec/s) | faiss (M vec/s) | lshcore / faiss | others' cores |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['nbits']} | {r['l']} | {r['lshcore_vps'] / 1e6:.3f} | "
            f"{r['faiss_vps'] / 1e6:.3f} | {r['ratio']:.2f} | {r['foreign_cores_median']:.2f} |"
        )
    lines += [
        "",
        "Notes. Both sides spend most of the time in the same single-precision GEMM",
        "(n x dim times dim x nbits). lshcore's `SRP.hash` works in row blocks of at",
        "most 2**18 floats of input or projections: each block is validated (lshcore",
        "rejects NaN/inf, faiss does not check), projected and packed while it is in",
        "cache; 8/16/32-bit table codes are packed with `np.packbits` (a float32 dot",
        "with powers of two for other k <= 24). The previous code (whole-batch check,",
        "one large product, an int64 copy of every bit) ran at 0.15-0.55x faiss at",
        "64-1024 bits and about 0.8-0.9x at 16 bits in side-by-side runs.",
        "The host is shared: 'others' cores' is the median CPU that other processes",
        "used during a repetition (of 2 cores); only the ratios within a run compare.",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    assert ARGS is not None
    result = main(ARGS)
    if ARGS.out:
        out = Path(ARGS.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
        out.with_suffix(".md").write_text(markdown(result))
        print(f"wrote {out.with_suffix('.md')} and {out.with_suffix('.json')}")
