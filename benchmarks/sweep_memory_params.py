"""Sweep of the memory's LSH settings at scale (for choosing default_index_params).

Keys and planted queries come from ``--seed`` (choose on one seed; report the chosen
settings with bench_memory.py on another). For each (bits, tables) one memory is built;
probes are varied on it. Prints per setting: ms/query (median of ``--reps``), recall@1,
candidates/query, and speed-up vs exact NumPy search timed interleaved in the same process.

    BENCH_THREADS=1 PYTHONPATH=. .venv/bin/python benchmarks/sweep_memory_params.py --seed 1 \
        --queries 2000 --configs 19,20 19,24 20,24 --probes 32 36 40 48
"""

from __future__ import annotations

import os

THREADS = int(os.environ.get("BENCH_THREADS", "2"))
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, str(THREADS))

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from benchmarks.bench_memory import _load, _unit, planted_queries  # noqa: E402
from lshcore.memory.core import LSHMemory, default_index_params  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--cos", type=float, default=0.8)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--configs", nargs="+", default=["19,20", "20,24"], help="bits,tables")
    p.add_argument("--probes", type=int, nargs="+", default=[24, 32])
    p.add_argument(
        "--sketch-delta",
        type=float,
        default=None,
        help="sign-sketch miss probability (default: the memory's; 0 = score every candidate)",
    )
    args = p.parse_args()
    import numba

    numba.set_num_threads(min(THREADS, numba.config.NUMBA_NUM_THREADS))
    rng = np.random.default_rng(args.seed)
    keys = _unit(rng.standard_normal((args.n, args.dim), dtype=np.float32))
    labels = np.arange(args.n, dtype=np.int64)
    q, _ = planted_queries(keys, args.queries, args.cos, rng)
    exact = LSHMemory(args.dim, args.n, exact=True)
    exact.write(keys, labels)
    best_ids = exact.query(q).slots
    best = np.sum(q * keys[best_ids], axis=1)
    for cfg in args.configs:
        k, tables = (int(x) for x in cfg.split(","))
        t = time.perf_counter()
        params = default_index_params(args.n, args.dim)  # the memory's, sketch included
        params.update(k=k, l=tables, n_probes=args.probes[0])
        if args.sketch_delta is not None:
            params["sketch_delta"] = args.sketch_delta or None
        mem = LSHMemory(args.dim, args.n, index=params)
        mem.write(keys, labels)
        build = time.perf_counter() - t
        for probes in args.probes:
            mem.index.n_probes = probes
            mem.query(q)  # warm-up
            lt, et = [], []
            for _ in range(args.reps):  # interleaved
                t = time.perf_counter()
                ids = mem.query(q).slots
                lt.append(time.perf_counter() - t)
                t = time.perf_counter()
                exact.query(q)
                et.append(time.perf_counter() - t)
            sims = np.where(ids >= 0, np.sum(q * keys[np.maximum(ids, 0)], axis=1), -np.inf)
            cands = mem.index.candidates(q)
            n_cand = float(np.mean(np.diff(np.asarray(cands.indptr))))
            row = {
                "k": k, "l": tables, "probes": probes, "seed": args.seed,
                "lsh_ms_q": 1000 * float(np.median(lt)) / args.queries,
                "exact_ms_q": 1000 * float(np.median(et)) / args.queries,
                "recall1": float(np.mean(sims >= best - 1e-6)),
                "cands_q": n_cand, "build_s": round(build, 1), "load": _load(),
                "sketch_delta": params["sketch_delta"],
            }  # fmt: skip
            row["speedup"] = row["exact_ms_q"] / row["lsh_ms_q"]
            print(json.dumps(row), flush=True)
        del mem


if __name__ == "__main__":
    main()
