"""Nearest-neighbour search: LSHIndex against exact search and faiss IndexLSH, in one run.

Data: ``n`` x ``dim`` clustered Gaussian vectors (isotropic cluster centres and noise,
so the distribution is invariant under random rotations); queries are fresh draws from
the same mixture. Ground truth: exact top-10 by cosine. Contenders, interleaved over
repetitions (medians reported):

* exact: NumPy matmul over unit vectors + argpartition, in batches of queries (timed
  on a subset of the queries per repetition, to keep the run short);
* lshcore ``LSHIndex`` (SRP, unbounded buckets, exact cosine re-rank) at several
  (K, L, probes);
* faiss ``IndexLSH`` (random rotation + sign bits, Hamming ranking), alone and with
  exact re-ranking of its ``k_factor * 10`` best codes (``IndexRefineFlat``).

Usage: python benchmarks/bench_search.py [--n 1000000] [--threads 2] [--out benchmarks/results/search]
"""

from __future__ import annotations

import argparse
import os
import sys

ap = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
)
ap.add_argument("--n", type=int, default=1_000_000)
ap.add_argument("--dim", type=int, default=128)
ap.add_argument("--queries", type=int, default=1000)
ap.add_argument(
    "--exact-queries", type=int, default=200, help="queries timed per repetition for exact search"
)
ap.add_argument("--clusters", type=int, default=1000)
ap.add_argument(
    "--sigma", type=float, default=0.6, help="noise std relative to the unit-variance centres"
)
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--reps", type=int, default=3)
ap.add_argument(
    "--configs", default="16,16,8;16,16,16;16,24,4;16,24,8;18,16,16;18,16,32", help="K,L,P;..."
)
ap.add_argument("--faiss", default="256;512x10;1024x10", help="nbits[xk_factor];... (x: re-rank)")
ap.add_argument("--seed", type=int, default=0)
ap.add_argument("--out", default=None, help="write OUT.md and OUT.json")
args = ap.parse_args()

# thread counts must be fixed before NumPy / numba / faiss start their pools
for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[var] = str(args.threads)

import json  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402

import numba  # noqa: E402
import numpy as np  # noqa: E402

import lshcore  # noqa: E402
from lshcore.search.index import LSHIndex  # noqa: E402

try:
    import faiss  # noqa: E402
except ImportError:  # pragma: no cover - faiss-cpu is in the bench extra
    faiss = None

numba.set_num_threads(args.threads)
if faiss is not None:
    faiss.omp_set_num_threads(args.threads)

TOP = 10


def cpu_of_others() -> float:
    """CPU seconds used by other processes so far (from /proc; 0 where unavailable)."""
    total = 0.0
    me = os.getpid()
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


def make_data(
    n: int, m: int, dim: int, clusters: int, sigma: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    x = np.empty((n, dim), dtype=np.float32)
    step = 100_000
    for lo in range(0, n, step):
        hi = min(n, lo + step)
        x[lo:hi] = centres[rng.integers(0, clusters, hi - lo)]
        x[lo:hi] += sigma * rng.standard_normal((hi - lo, dim), dtype=np.float32)
    q = centres[rng.integers(0, clusters, m)] + sigma * rng.standard_normal(
        (m, dim), dtype=np.float32
    )
    return x, q.astype(np.float32)


def unit(a: np.ndarray) -> np.ndarray:
    return a / np.linalg.norm(a, axis=1, keepdims=True)


def exact_search(xu: np.ndarray, qu: np.ndarray, batch: int = 50) -> np.ndarray:
    """Top-10 ids by cosine: matmul + argpartition (+ sort of the 10), batched."""
    out = np.empty((qu.shape[0], TOP), dtype=np.int64)
    for lo in range(0, qu.shape[0], batch):
        s = qu[lo : lo + batch] @ xu.T
        part = np.argpartition(-s, TOP - 1, axis=1)[:, :TOP]
        order = np.argsort(-np.take_along_axis(s, part, axis=1), axis=1)
        out[lo : lo + batch] = np.take_along_axis(part, order, axis=1)
    return out


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    hits = [
        len(set(a[a >= 0].tolist()) & set(b.tolist())) for a, b in zip(found, truth, strict=True)
    ]
    return float(np.sum(hits)) / truth.size


def main() -> None:
    print(
        f"python {platform.python_version()}, numpy {np.__version__}, numba {numba.__version__}, "
        f"faiss {getattr(faiss, '__version__', 'absent')}, lshcore {lshcore.__version__}"
    )
    print(
        f"threads: numba {numba.get_num_threads()}, faiss {faiss.omp_get_max_threads() if faiss else '-'}, "
        f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}; cpus {os.cpu_count()}; load {os.getloadavg()}"
    )
    t0 = time.perf_counter()
    x, q = make_data(args.n, args.queries, args.dim, args.clusters, args.sigma, args.seed)
    xu, qu = unit(x), unit(q)
    print(
        f"data: {args.n} x {args.dim}, {args.clusters} clusters, sigma {args.sigma}, "
        f"{args.queries} queries ({time.perf_counter() - t0:.1f} s)"
    )
    t0 = time.perf_counter()
    truth = exact_search(xu, qu)
    t_truth = time.perf_counter() - t0
    print(
        f"ground truth (exact, all {args.queries} queries): {t_truth:.1f} s = {args.queries / t_truth:.1f} q/s"
    )

    contenders: dict[str, dict] = {}
    configs = [tuple(int(v) for v in c.split(",")) for c in args.configs.split(";") if c]
    indexes: dict[tuple[int, int], LSHIndex] = {}
    for k, l, _ in configs:  # noqa: E741
        if (k, l) in indexes:
            continue
        t0 = time.perf_counter()
        index = LSHIndex(args.dim, family="srp", k=k, l=l, policy="unbounded", seed=args.seed)
        index.add(x)
        build = time.perf_counter() - t0
        index.search(q[:20], TOP, n_probes=2)  # compile / warm up
        indexes[(k, l)] = index
        mem = index.tables.nbytes + index._codes.nbytes + index._vectors.nbytes  # type: ignore[union-attr]
        print(
            f"built LSHIndex K={k} L={l}: {build:.1f} s, {mem / 2**20:.0f} MiB (tables {index.tables.nbytes / 2**20:.0f} MiB)"
        )
        for kk, ll, p in configs:
            if (kk, ll) == (k, l):
                contenders[f"lshcore K={k} L={l} P={p}"] = {
                    "kind": "lsh",
                    "k": k,
                    "l": l,
                    "p": p,
                    "build_s": build,
                }
    faiss_indexes = {}
    if faiss is not None:
        for spec in [s for s in args.faiss.split(";") if s]:
            nbits, _, kf = spec.partition("x")
            t0 = time.perf_counter()
            base = faiss.IndexLSH(args.dim, int(nbits), True, False)  # rotate, no thresholds
            if kf:
                idx = faiss.IndexRefineFlat(base)
                idx.k_factor = float(kf)
                data = xu  # L2 on unit vectors ranks like cosine
            else:
                idx = base
                data = x
            idx.train(data[:100_000])
            idx.add(data)
            build = time.perf_counter() - t0
            name = f"faiss IndexLSH nbits={nbits}" + (f" + re-rank x{kf}" if kf else "")
            faiss_indexes[name] = (idx, bool(kf))
            contenders[name] = {"kind": "faiss", "build_s": build}
            print(f"built {name}: {build:.1f} s")

    contenders = {
        "exact (numpy matmul + argpartition)": {"kind": "exact", "build_s": 0.0},
        **contenders,
    }
    for c in contenders.values():
        c["times"] = []
        c["cpu_times"] = []
        c["contaminated"] = 0
    sub = slice(0, min(args.exact_queries, args.queries))
    for c in contenders.values():  # warm up (numba compiles both its serial and parallel paths)
        if c["kind"] == "lsh":
            indexes[(c["k"], c["l"])].search(q, TOP, n_probes=c["p"])
    for rep in range(args.reps):
        for name, c in contenders.items():
            others = cpu_of_others()
            c0 = time.process_time()
            t0 = time.perf_counter()
            if c["kind"] == "exact":
                found = exact_search(xu, qu[sub])
                n_q = found.shape[0]
                c["recall"] = 1.0
            elif c["kind"] == "lsh":
                index = indexes[(c["k"], c["l"])]
                _, found = index.search(q, TOP, n_probes=c["p"])
                n_q = args.queries
            else:
                idx, refine = faiss_indexes[name]
                _, found = idx.search(qu if refine else q, TOP)
                n_q = args.queries
            dt = time.perf_counter() - t0
            cpu = time.process_time() - c0
            busy = (cpu_of_others() - others) / dt
            c["times"].append(n_q / dt)
            c["cpu_times"].append(n_q / cpu)
            c["others_cpu"] = busy
            if c["kind"] != "exact":
                c["recall"] = recall(found, truth)
            if busy > 0.5:
                c["contaminated"] += 1
        print(f"repetition {rep + 1}/{args.reps} done; load {os.getloadavg()}", flush=True)

    for c in contenders.values():
        if c["kind"] == "lsh":
            index = indexes[(c["k"], c["l"])]
            c["candidates"] = float(index.candidates(q[:200], n_probes=c["p"]).sizes().mean())
    exact = contenders["exact (numpy matmul + argpartition)"]
    exact_qps = float(np.median(exact["times"]))
    exact_cpu_qps = float(np.median(exact["cpu_times"]))
    rows = []
    for name, c in contenders.items():
        qps = float(np.median(c["times"]))
        cpu_qps = float(np.median(c["cpu_times"]))
        rows.append(
            {
                "method": name,
                "recall@10": round(c["recall"], 4),
                "queries_per_s": round(qps, 1),
                "speedup_vs_exact": round(qps / exact_qps, 2),
                "queries_per_cpu_s": round(cpu_qps, 1),
                "cpu_speedup_vs_exact": round(cpu_qps / exact_cpu_qps, 2),
                "candidates_per_query": round(c.get("candidates", float("nan")), 1)
                if "candidates" in c
                else None,
                "build_s": round(c["build_s"], 1),
                "qps_reps": [round(t, 1) for t in c["times"]],
                "cpu_qps_reps": [round(t, 1) for t in c["cpu_times"]],
                "reps_with_other_cpu_over_0.5": c["contaminated"],
            }
        )
    header = (
        "| method | recall@10 | queries/s (wall) | vs exact | queries per CPU-s | vs exact (CPU) "
        "| candidates/query | build s |"
    )
    lines = [header, "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        cand = "" if r["candidates_per_query"] is None else f"{r['candidates_per_query']:.0f}"
        lines.append(
            f"| {r['method']} | {r['recall@10']:.3f} | {r['queries_per_s']:.0f} "
            f"| {r['speedup_vs_exact']:.1f}x | {r['queries_per_cpu_s']:.0f} "
            f"| {r['cpu_speedup_vs_exact']:.1f}x | {cand} | {r['build_s']:.1f} |"
        )
    table = "\n".join(lines)
    print()
    print(table)
    goal = [
        r
        for r in rows
        if r["method"].startswith("lshcore")
        and r["recall@10"] >= 0.9
        and r["speedup_vs_exact"] >= 10
    ]
    verdict = (
        f"goal (recall@10 >= 0.9 at >= 10x exact) met by: {', '.join(r['method'] for r in goal)}"
        if goal
        else "goal (recall@10 >= 0.9 at >= 10x exact) NOT met by any lshcore setting"
    )
    print(verdict)
    if args.out:
        cmd = "python " + " ".join([os.path.relpath(sys.argv[0])] + sys.argv[1:])
        info = {
            "command": cmd,
            "n": args.n,
            "dim": args.dim,
            "queries": args.queries,
            "clusters": args.clusters,
            "sigma": args.sigma,
            "threads": args.threads,
            "reps": args.reps,
            "exact_queries_timed": sub.stop,
            "ground_truth_qps_all_queries": args.queries / t_truth,
            "versions": {
                "numpy": np.__version__,
                "numba": numba.__version__,
                "faiss": getattr(faiss, "__version__", None),
            },
            "rows": rows,
            "verdict": verdict,
        }
        with open(args.out + ".json", "w") as fh:
            json.dump(info, fh, indent=1)
        with open(args.out + ".md", "w") as fh:
            fh.write(f"# Search benchmark\n\nCommand: `{cmd}`\n\n")
            fh.write(
                f"{args.n} x {args.dim} clustered Gaussian ({args.clusters} clusters, sigma {args.sigma}), "
                f"{args.queries} queries, top-{TOP} by cosine; {args.threads} threads "
                f"(numba, faiss, BLAS); medians of {args.reps} interleaved repetitions "
                f"(exact search timed on {sub.stop} queries per repetition).\n\n"
            )
            fh.write(table + "\n\n" + verdict + "\n")
        print(f"wrote {args.out}.md and {args.out}.json")


if __name__ == "__main__":
    main()
