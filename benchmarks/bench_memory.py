"""Scale benchmark of the LSH memory: query latency, recall@1 and updates per second.

At 10,000 / 100,000 / 1,000,000 keys of size 128, in one run: the memory with its LSH
index, the memory with exact NumPy search (``exact=True``), faiss ``IndexFlatIP``
(exact) and faiss ``IndexLSH`` (binary codes, exhaustive Hamming scan). Keys are random
unit vectors; each query has one planted neighbour, a stored key at cosine ``--cos``
(the situation of a memory lookup: the query resembles one stored key, not all).
recall@1 = share of queries whose result is as similar as the exact nearest key.
Latency = wall time of a batch of ``--queries`` queries / queries, median of ``--reps``
interleaved repetitions (LSH, exact, faiss flat, faiss LSH, LSH, ...). Updates per second:
``memory.update`` on batches of ``--update-batch`` queries, half of them holding the
neighbour's label (the strengthen branch), half a new label (the overwrite branch).

    .venv/bin/python benchmarks/bench_memory.py            # writes benchmarks/results/memory.{md,json}
"""

from __future__ import annotations

import os

# thread counts before NumPy/faiss load their thread pools
THREADS = int(os.environ.get("BENCH_THREADS", "2"))
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, str(THREADS))

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from lshcore.memory.core import LSHMemory  # noqa: E402


def _load() -> str:
    return (
        Path("/proc/loadavg").read_text().split(" ")[0] if Path("/proc/loadavg").exists() else "?"
    )


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def planted_queries(
    keys: np.ndarray, m: int, cos: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """``m`` unit queries, each at cosine ``cos`` from a random stored key; returns (q, key ids)."""
    src = rng.integers(0, keys.shape[0], m)
    z = rng.standard_normal((m, keys.shape[1])).astype(np.float32)
    z -= np.sum(z * keys[src], axis=1, keepdims=True) * keys[src]
    return _unit(cos * keys[src] + np.sqrt(1 - cos**2) * _unit(z)), src


def bench_size(n: int, args: argparse.Namespace, rng: np.random.Generator) -> dict:
    import faiss

    d = args.dim
    keys = _unit(rng.standard_normal((n, d), dtype=np.float32))
    labels = np.arange(n, dtype=np.int64)
    bits = int(min(24, max(4, round(np.log2(n)) - args.bits_below_log2)))
    index_params = {"k": bits, "l": args.l, "n_probes": args.probes}
    row: dict = {"keys": n, "dim": d, "load_before": _load()}
    t = time.perf_counter()
    lsh = LSHMemory(d, n, index=None if args.memory_defaults else index_params, seed=0)
    lsh.write(keys, labels)
    row["build_lsh_s"] = time.perf_counter() - t
    row["lsh_params"] = {
        "k": lsh.index.k,
        "l": lsh.index.l,
        "n_probes": lsh.index.n_probes,
        "sketch_delta": lsh.index.sketch_delta,
    }
    plain = None
    if args.compare_plain:  # the same index scoring every candidate (no sign sketch)
        params = lsh._search.config() | {"sketch_delta": None}
        t = time.perf_counter()
        plain = LSHMemory(d, n, index=params, seed=0)
        plain.write(keys, labels)
        row["build_lsh_plain_s"] = time.perf_counter() - t
    t = time.perf_counter()
    exact = LSHMemory(d, n, exact=True)
    exact.write(keys, labels)
    row["build_exact_s"] = time.perf_counter() - t
    flat = faiss.IndexFlatIP(d)
    flat.add(keys)
    flsh = faiss.IndexLSH(d, args.faiss_bits)
    t = time.perf_counter()
    flsh.add(keys)
    row["build_faiss_lsh_s"] = time.perf_counter() - t

    q, _ = planted_queries(keys, args.queries, args.cos, rng)
    contenders = {
        "lsh_memory": lambda: lsh.query(q).slots,
        **({"lsh_plain": lambda: plain.query(q).slots} if plain is not None else {}),
        "exact_numpy": lambda: exact.query(q).slots,
        "faiss_flat_ip": lambda: flat.search(q, 1)[1][:, 0],
        "faiss_lsh": lambda: flsh.search(q, 1)[1][:, 0],
    }
    for fn in contenders.values():  # warm-up (numba compile, page faults)
        fn()
    times: dict[str, list[float]] = {name: [] for name in contenders}
    found: dict[str, np.ndarray] = {}
    for _ in range(args.reps):
        for name, fn in contenders.items():
            t = time.perf_counter()
            found[name] = np.asarray(fn(), dtype=np.int64)
            times[name].append(time.perf_counter() - t)
    best = np.sum(q * keys[found["exact_numpy"]], axis=1)
    before = lsh.index.rerank_mults
    lsh.query(q)
    row["lsh_scored_per_query"] = (lsh.index.rerank_mults - before) / d / args.queries
    for name in contenders:
        ids = found[name]
        sims = np.where(ids >= 0, np.sum(q * keys[np.maximum(ids, 0)], axis=1), -np.inf)
        row[f"{name}_ms_per_query"] = 1000 * float(np.median(times[name])) / args.queries
        row[f"{name}_recall_at_1"] = float(np.mean(sims >= best - 1e-6))
    # one query at a time (latency of a single lookup): --single queries, interleaved
    single = {
        "lsh_memory": lambda x: lsh.query(x),
        **({"lsh_plain": lambda x: plain.query(x)} if plain is not None else {}),
        "exact_numpy": lambda x: exact.query(x),
        "faiss_flat_ip": lambda x: flat.search(x, 1),
        "faiss_lsh": lambda x: flsh.search(x, 1),
    }
    one_times: dict[str, list[float]] = {name: [] for name in single}
    for i in range(args.single):
        x = q[i : i + 1]
        for name, fn in single.items():
            t = time.perf_counter()
            fn(x)
            one_times[name].append(time.perf_counter() - t)
    for name, ts in one_times.items():
        row[f"{name}_single_ms"] = 1000 * float(np.median(ts))
    row["single_speedup_lsh_vs_exact_numpy"] = (
        row["exact_numpy_single_ms"] / row["lsh_memory_single_ms"]
    )
    row["speedup_lsh_vs_exact_numpy"] = (
        row["exact_numpy_ms_per_query"] / row["lsh_memory_ms_per_query"]
    )
    if plain is not None:
        row["speedup_lsh_plain_vs_exact_numpy"] = (
            row["exact_numpy_ms_per_query"] / row["lsh_plain_ms_per_query"]
        )
        del plain  # its memory, before the update runs
    row["speedup_lsh_vs_faiss_flat"] = (
        row["faiss_flat_ip_ms_per_query"] / row["lsh_memory_ms_per_query"]
    )
    cands = lsh.index.candidates(q)
    row["lsh_candidates_per_query"] = float(np.mean(np.diff(np.asarray(cands.indptr))))

    # updates per second: half strengthen (neighbour's label), half overwrite (new label)
    b = args.update_batch
    up_times: dict[str, list[float]] = {"lsh_memory": [], "exact_numpy": []}
    next_label = n
    for _ in range(args.update_reps):
        uq, src = planted_queries(keys, b, args.cos, rng)
        ulab = labels[src].copy()
        ulab[b // 2 :] = np.arange(next_label, next_label + b - b // 2)
        next_label += b
        for name, mem in (("lsh_memory", lsh), ("exact_numpy", exact)):
            t = time.perf_counter()
            mem.update(uq, ulab)
            up_times[name].append(time.perf_counter() - t)
    for name, ts in up_times.items():
        row[f"{name}_updates_per_s"] = b / float(np.median(ts))
    # slot moves (an update moves one slot's key: remove from and insert into its L
    # buckets): total wall time of many batches, so the merges of the pending run count
    mb, reps = args.move_batch, args.move_reps
    t = time.perf_counter()
    for _ in range(reps):  # through the memory: write overwrites the oldest slots
        mk = _unit(rng.standard_normal((mb, d), dtype=np.float32))
        lsh.write(mk, np.arange(next_label, next_label + mb))
        next_label += mb
    row["lsh_memory_write_moves_per_s"] = mb * reps / (time.perf_counter() - t)
    index = lsh.index
    t = time.perf_counter()
    for _ in range(reps):  # LSHIndex.update directly: move slots away, then back
        slots = rng.choice(n, mb, replace=False)
        index.update(slots, _unit(rng.standard_normal((mb, d), dtype=np.float32)))
        index.update(slots, lsh.keys[slots])
    row["lsh_index_updates_per_s"] = 2 * mb * reps / (time.perf_counter() - t)
    row["move_batch"], row["move_reps"] = mb, reps
    row["load_after"] = _load()
    return row


def _plain(r: dict) -> str:
    if "lsh_plain_ms_per_query" not in r:
        return "–"
    return f"{r['lsh_plain_ms_per_query']:.3f} ({r['lsh_plain_recall_at_1']:.3f})"


def to_markdown(rows: list[dict], args: argparse.Namespace, command: str, env: dict) -> str:
    lines = [
        "# LSH memory at scale",
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {env['machine']}; threads: {env['threads']}; date {env['date']} UTC. "
        f"Keys: random unit vectors of size {args.dim}; {args.queries} queries per batch, each with a "
        f"planted neighbour at cosine {args.cos}; medians of {args.reps} interleaved repetitions. "
        f"recall@1 against exact search. faiss IndexLSH: {args.faiss_bits} bits, exhaustive Hamming scan. "
        f"Updates: `memory.update` on batches of {args.update_batch} (half strengthen, half overwrite), "
        f"median of {args.update_reps}. Slot moves: {args.move_reps} calls of {args.move_batch} "
        "slots, total wall time (pending-run merges included): `memory.write` (overwrites the "
        "oldest slots, no lookup) and `memory.index.update` directly (slots moved to random keys "
        "and back).",
        "",
        f"Batches of {args.queries} queries (throughput, ms per query):",
        "",
        "| keys | LSH memory ms/q | recall@1 | exact NumPy ms/q | faiss FlatIP ms/q | faiss IndexLSH ms/q "
        "| IndexLSH recall@1 | LSH speed-up vs exact NumPy | vs faiss FlatIP | LSH candidates/q "
        "| LSH scored/q | LSH without sketch ms/q (recall@1) "
        "| updates/s LSH | updates/s exact | slot moves/s memory.write | slot moves/s LSHIndex.update "
        "| load avg before/after |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['keys']:,} | {r['lsh_memory_ms_per_query']:.3f} | {r['lsh_memory_recall_at_1']:.3f} "
            f"| {r['exact_numpy_ms_per_query']:.3f} | {r['faiss_flat_ip_ms_per_query']:.3f} "
            f"| {r['faiss_lsh_ms_per_query']:.3f} | {r['faiss_lsh_recall_at_1']:.3f} "
            f"| {r['speedup_lsh_vs_exact_numpy']:.1f}x | {r['speedup_lsh_vs_faiss_flat']:.2f}x "
            f"| {r['lsh_candidates_per_query']:.0f} | {r['lsh_scored_per_query']:.0f} "
            f"| {_plain(r)} | {r['lsh_memory_updates_per_s']:.0f} "
            f"| {r['exact_numpy_updates_per_s']:.0f} | {r['lsh_memory_write_moves_per_s']:.0f} "
            f"| {r['lsh_index_updates_per_s']:.0f} | {r['load_before']}/{r['load_after']} |"
        )
    lines += [
        "",
        f"One query at a time (latency, median of {args.single} single-query calls, ms):",
        "",
        "| keys | LSH memory | LSH without sketch | exact NumPy | faiss FlatIP | faiss IndexLSH "
        "| LSH speed-up vs exact NumPy |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['keys']:,} | {r['lsh_memory_single_ms']:.3f} "
            f"| {r.get('lsh_plain_single_ms', float('nan')):.3f} | {r['exact_numpy_single_ms']:.3f} "
            f"| {r['faiss_flat_ip_single_ms']:.3f} | {r['faiss_lsh_single_ms']:.3f} "
            f"| {r['single_speedup_lsh_vs_exact_numpy']:.1f}x |"
        )
    lines.append("")
    lines.append(
        "LSH settings per size: " + "; ".join(f"{r['keys']:,}: {r['lsh_params']}" for r in rows)
    )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--queries", type=int, default=256)
    parser.add_argument("--cos", type=float, default=0.8)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--single", type=int, default=50, help="queries timed one at a time")
    parser.add_argument("--update-batch", type=int, default=16)
    parser.add_argument("--update-reps", type=int, default=5)
    parser.add_argument("--move-batch", type=int, default=1000, help="slots moved per call")
    parser.add_argument("--move-reps", type=int, default=30, help="calls timed (total)")
    parser.add_argument("--faiss-bits", type=int, default=256)
    parser.add_argument("--bits-below-log2", type=int, default=4,
                        help="LSH bits per table = round(log2(keys)) - this (4 = the memory's default)")  # fmt: skip
    parser.add_argument("--l", type=int, default=16, help="LSH tables (16 = the memory's default)")
    parser.add_argument(
        "--probes", type=int, default=16, help="probes per table (16 = the default)"
    )
    parser.add_argument(
        "--memory-defaults",
        action="store_true",
        help="LSH settings from the memory's default_index_params (ignores --bits-below-log2, --l, --probes)",
    )
    parser.add_argument(
        "--compare-plain",
        action="store_true",
        help="also time the same LSH memory without the sign-sketch re-rank (every candidate scored)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/memory"))
    args = parser.parse_args(argv)

    import faiss
    import numba

    faiss.omp_set_num_threads(THREADS)
    numba.set_num_threads(min(THREADS, numba.config.NUMBA_NUM_THREADS))
    env = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores (shared)",
        "threads": {
            "numpy/BLAS (OMP_NUM_THREADS)": os.environ["OMP_NUM_THREADS"],
            "numba": numba.get_num_threads(),
            "faiss": faiss.omp_get_max_threads(),
        },  # fmt: skip
        "date": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
    }
    print(f"threads: {env['threads']}", flush=True)
    rng = np.random.default_rng(args.seed)
    rows = []
    for n in args.sizes:
        row = bench_size(n, args, rng)
        rows.append(row)
        print(json.dumps(row), flush=True)
    command = (
        "BENCH_THREADS="
        + str(THREADS)
        + " .venv/bin/python "
        + " ".join(["benchmarks/bench_memory.py", *sys.argv[1:]])
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    Path(f"{args.out}.json").write_text(
        json.dumps(
            {
                "command": command,
                "env": env,
                "args": vars(args) | {"out": str(args.out)},
                "rows": rows,
            },
            indent=2,
        )
        + "\n"
    )
    Path(f"{args.out}.md").write_text(to_markdown(rows, args, command, env))
    print(to_markdown(rows, args, command, env))


if __name__ == "__main__":
    main()
