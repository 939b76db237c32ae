"""Streaming test of the LSH memory: a memory of a million slots filled from a stream of
tens of thousands of classes, LSH against exact search on the same stream.

The stream: ``--classes`` class prototypes (random unit vectors of size ``--dim``);
an example of class c is ``normalize(cos * p_c + sqrt(1 - cos^2) * u)`` with u a random
unit vector orthogonal to p_c, so two examples of one class have cosine about
``cos^2`` and examples of different classes about 0 (the largest of a million such
cosines is about 0.45 at size 128). Classes are drawn uniformly.

1. Fill: the first ``--slots`` examples of the stream are written (``memory.write``,
   the update rule's overwrite branch, in batches of ``--fill-batch``) into two
   memories of ``--slots`` slots, one with LSH search and one exact; same stream,
   same slots.
2. Learn online: the next ``--eval`` examples go through ``memory.update`` in batches
   of ``--batch`` (lookup of the top ``--k`` candidates, prediction, then strengthen or
   overwrite), identically for both memories. Online accuracy = share of examples
   whose prediction (made before the write) is their class. Time per example = wall
   time of ``update`` / examples; "keeps up" compares it with the stream's rate.

    .venv/bin/python benchmarks/bench_memory_stream.py      # writes benchmarks/results/memory_stream.{md,json}
    .venv/bin/python benchmarks/bench_memory_stream.py --slots 20000 --classes 2000 --eval 2000 --out /tmp/s
"""

from __future__ import annotations

import os

THREADS = int(os.environ.get("BENCH_THREADS", "2"))
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, str(THREADS))

import argparse  # noqa: E402
import json  # noqa: E402
import shlex  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

from lshcore.memory.core import LSHMemory  # noqa: E402


def _load() -> str:
    p = Path("/proc/loadavg")
    return p.read_text().split(" ")[0] if p.exists() else "?"


class Stream:
    """Examples of ``classes`` classes: unit vectors at cosine ``cos`` from their prototype."""

    def __init__(self, classes: int, dim: int, cos: float, seed: int):
        self.rng = np.random.default_rng(seed)
        p = self.rng.standard_normal((classes, dim), dtype=np.float32)
        self.protos = p / np.linalg.norm(p, axis=1, keepdims=True)
        self.cos = cos

    def take(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        y = self.rng.integers(0, self.protos.shape[0], n)
        p = self.protos[y]
        u = self.rng.standard_normal(p.shape, dtype=np.float32)
        u -= np.sum(u * p, axis=1, keepdims=True) * p
        u /= np.linalg.norm(u, axis=1, keepdims=True)
        x = self.cos * p + np.sqrt(1.0 - self.cos**2) * u
        return x.astype(np.float32), y.astype(np.int64)


def run_stream(
    slots: int,
    classes: int,
    eval_n: int,
    *,
    dim: int = 128,
    cos: float = 0.8,
    batch: int = 100,
    k: int = 256,
    fill_batch: int = 65536,
    index: dict[str, Any] | None = None,
    seed: int = 0,
    exact: bool = True,
) -> dict[str, Any]:
    """Fill memories of ``slots`` slots from the stream, then learn ``eval_n`` more
    examples online; returns accuracies and timings (see the module docstring)."""
    stream = Stream(classes, dim, cos, seed)
    memories = {"lsh": LSHMemory(dim, slots, k=k, index=index, seed=seed)}
    if exact:
        memories["exact"] = LSHMemory(dim, slots, k=k, exact=True, seed=seed)
    out: dict[str, Any] = {"slots": slots, "classes": classes, "dim": dim, "cos": cos}
    out["lsh_params"] = {
        key: memories["lsh"].index.config()[key] for key in ("k", "l", "n_probes", "policy")
    }
    fill_s = dict.fromkeys(memories, 0.0)
    for lo in range(0, slots, fill_batch):
        x, y = stream.take(min(fill_batch, slots - lo))
        for name, mem in memories.items():
            t = time.perf_counter()
            mem.write(x, y)
            fill_s[name] += time.perf_counter() - t
    for name in memories:
        out[f"{name}_fill_s"] = fill_s[name]
    correct = dict.fromkeys(memories, 0)
    agree = 0
    upd_s = dict.fromkeys(memories, 0.0)
    seen = 0
    for _ in range(0, eval_n, batch):
        x, y = stream.take(batch)
        preds = {}
        for name, mem in memories.items():
            t = time.perf_counter()
            sel = mem.update(x, y)
            upd_s[name] += time.perf_counter() - t
            preds[name] = sel.predicted
            correct[name] += int(np.sum(sel.predicted == y))
        if exact:
            agree += int(np.sum(preds["lsh"] == preds["exact"]))
        seen += y.shape[0]
    for name in memories:
        out[f"{name}_accuracy"] = correct[name] / seen
        out[f"{name}_ms_per_example"] = 1000 * upd_s[name] / seen
        out[f"{name}_examples_per_s"] = seen / upd_s[name]
    if exact:
        out["prediction_agreement"] = agree / seen
        out["accuracy_gap_points"] = 100 * (out["exact_accuracy"] - out["lsh_accuracy"])
        out["speedup_lsh_vs_exact"] = out["exact_ms_per_example"] / out["lsh_ms_per_example"]
    out["eval_examples"] = seen
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--slots", type=int, default=1_000_000)
    parser.add_argument("--classes", type=int, default=50_000)
    parser.add_argument("--eval", type=int, default=5000, help="examples learned online")
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--cos", type=float, default=0.8, help="cosine example-prototype")
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--k", type=int, default=256, help="memory candidates per query")
    parser.add_argument("--index", type=str, default=None, help='JSON LSHIndex arguments, e.g. \'{"k": 19, "l": 20, "n_probes": 32}\'')  # fmt: skip
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/memory_stream"))
    args = parser.parse_args(argv)
    import numba

    numba.set_num_threads(min(THREADS, numba.config.NUMBA_NUM_THREADS))
    index = json.loads(args.index) if args.index else None
    load_before = _load()
    t0 = time.perf_counter()
    row = run_stream(
        args.slots,
        args.classes,
        args.eval,
        dim=args.dim,
        cos=args.cos,
        batch=args.batch,
        k=args.k,
        index=index,
        seed=args.seed,
    )
    row["wall_s"] = time.perf_counter() - t0
    row["load_before"], row["load_after"] = load_before, _load()
    row["threads"] = {"blas": os.environ["OMP_NUM_THREADS"], "numba": numba.get_num_threads()}
    row["date"] = time.strftime("%Y-%m-%d %H:%M", time.gmtime())
    row["command"] = f"BENCH_THREADS={THREADS} .venv/bin/python " + shlex.join(
        ["benchmarks/bench_memory_stream.py", *sys.argv[1:]]
    )
    print(json.dumps(row, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    Path(f"{args.out}.json").write_text(json.dumps(row, indent=2) + "\n")
    md = [
        "# LSH memory on a stream",
        "",
        f"Command: `{row['command']}`",
        "",
        f"Date {row['date']} UTC; threads {row['threads']}; load before/after "
        f"{row['load_before']}/{row['load_after']}. {row['slots']:,} slots filled from a stream of "
        f"{row['classes']:,} classes (examples at cosine {row['cos']} from their prototype), then "
        f"{row['eval_examples']:,} examples learned online with `memory.update` (batches of "
        f"{args.batch}, top-{args.k} candidates). LSH settings {row['lsh_params']}.",
        "",
        "| search | online accuracy | ms per example (update) | examples/s | fill (write) s |",
        "|---|---:|---:|---:|---:|",
    ]
    for name in ("lsh", "exact"):
        md.append(
            f"| {name} | {row[f'{name}_accuracy']:.4f} | {row[f'{name}_ms_per_example']:.3f} "
            f"| {row[f'{name}_examples_per_s']:.0f} | {row[f'{name}_fill_s']:.1f} |"
        )
    md += [
        "",
        f"Accuracy gap (exact - LSH): {row['accuracy_gap_points']:.2f} points; LSH and exact "
        f"predict the same label for {row['prediction_agreement']:.4f} of the examples; LSH is "
        f"{row['speedup_lsh_vs_exact']:.1f}x faster per example.",
        "",
    ]
    Path(f"{args.out}.md").write_text("\n".join(md))


if __name__ == "__main__":
    main()
