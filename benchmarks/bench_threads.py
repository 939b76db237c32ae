"""PyTorch step time when numba's parallel index kernels run in the same process.

Each round runs one parallel ``LSHIndex.search`` (numba backend) and then times one
PyTorch forward/backward step of a small CNN; the median step time is reported.
Variants, each in a fresh process (the threading layer and OpenMP's wait policy are
fixed when a pool starts), run interleaved over repetitions:

* ``torch_only``: no numba at all (the floor);
* ``before``: numba's pool started with OpenMP's default wait (``LSHCORE_NUMBA_PASSIVE=0``:
  the behaviour before ``lshcore.kernels._numba_setup``);
* ``after``: lshcore's default (numba's pool started passive);
* ``torch_first``: lshcore's default, but ``import torch`` first: numba then shares
  PyTorch's already started OpenMP runtime and the setup cannot apply;
* ``workqueue``: numba's ``workqueue`` layer (not thread-safe; for comparison only).

Except in ``torch_first``, lshcore's numba backend is imported before torch.

Usage: python benchmarks/bench_threads.py [--n 200000] [--torch-threads 2] [--numba-threads 2]
       [--reps 3] [--out benchmarks/results/threads]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

VARIANTS: dict[str, dict[str, str]] = {
    "torch_only": {},
    "before": {"LSHCORE_NUMBA_PASSIVE": "0"},
    "after": {},
    "torch_first": {},
    "workqueue": {"LSHCORE_NUMBA_PASSIVE": "0", "NUMBA_THREADING_LAYER": "workqueue"},
}


def child(a: argparse.Namespace) -> None:
    """One variant: print a JSON line with the step times."""
    import numpy as np

    if a.variant not in ("torch_only", "torch_first"):
        import lshcore.kernels.numba_cpu  # noqa: F401  (numba's pool starts before torch)
    import torch

    torch.manual_seed(0)
    torch.set_num_threads(a.torch_threads)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 16, 3),
        torch.nn.ReLU(),
        torch.nn.Conv2d(16, 32, 3),
        torch.nn.ReLU(),
        torch.nn.Flatten(),
        torch.nn.Linear(32 * 24 * 24, 10),
    )
    xb, yb = torch.randn(32, 1, 28, 28), torch.randint(0, 10, (32,))

    def step() -> float:
        t = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(net(xb), yb)
        net.zero_grad()
        loss.backward()
        return time.perf_counter() - t

    search = None
    out: dict[str, object] = {}
    if a.variant != "torch_only":
        import numba

        from lshcore.kernels._numba_setup import THREADS_SETUP
        from lshcore.search.index import LSHIndex

        numba.set_num_threads(a.numba_threads)
        rng = np.random.default_rng(0)
        x = rng.standard_normal((a.n, a.dim)).astype(np.float32)
        q = rng.standard_normal((a.queries, a.dim)).astype(np.float32)
        index = LSHIndex(a.dim, k=10, l=16, policy="unbounded", backend="numba")
        index.add(x)
        index.search(q, 10)  # compile / warm

        def search() -> None:
            index.search(q, 10)

        out.update(
            layer=numba.threading_layer(),
            numba_threads=numba.get_num_threads(),
            setup=THREADS_SETUP["applied"],
        )
    # CPU burnt while the process sleeps right after a search (numba's idle workers
    # spinning), measured before PyTorch's own thread pool has started
    idle = []
    for _ in range(5 if search is not None else 0):
        search()  # type: ignore[misc]
        c = time.process_time()
        time.sleep(0.05)
        idle.append(time.process_time() - c)
    for _ in range(3):
        step()
    steps, searches = [], []
    for _ in range(a.rounds):
        if search is not None:
            t = time.perf_counter()
            search()
            searches.append(time.perf_counter() - t)
        steps.append(step())
    out.update(
        idle_cpu_ms=float(np.median(idle) * 1e3) if idle else None,
        variant=a.variant,
        torch_threads=torch.get_num_threads(),
        step_ms=float(np.median(steps) * 1e3),
        search_ms=float(np.median(searches) * 1e3) if searches else None,
    )
    print(json.dumps(out))


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--torch-threads", type=int, default=2)
    ap.add_argument("--numba-threads", type=int, default=2)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--out", default=None, help="write OUT.md and OUT.json")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        a.variant = a.child
        child(a)
        return
    names = [v for v in a.variants.split(",") if v]
    runs: dict[str, list[dict]] = {v: [] for v in names}
    load0 = os.getloadavg()[0]
    for rep in range(a.reps):
        for v in names:  # interleaved: load drift hits every variant alike
            env = {k: val for k, val in os.environ.items() if k not in VARIANTS["workqueue"]}
            env.update(VARIANTS[v])
            env["OMP_NUM_THREADS"] = str(a.torch_threads)
            cmd = [sys.executable, __file__, "--child", v] + sys.argv[1:]
            res = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
            rec = json.loads(res.stdout.strip().splitlines()[-1])
            runs[v].append(rec)
            print(rep, json.dumps(rec), flush=True)
    load1 = os.getloadavg()[0]

    def med(xs: list[float]) -> float:
        xs = sorted(xs)
        return xs[len(xs) // 2]

    rows = []
    for v in names:
        recs = runs[v]
        s = [r["search_ms"] for r in recs if r["search_ms"] is not None]
        rows.append(
            {
                "variant": v,
                "layer": recs[0].get("layer", "-"),
                "setup": recs[0].get("setup", "-"),
                "step_ms": med([r["step_ms"] for r in recs]),
                "step_ms_all": [round(r["step_ms"], 1) for r in recs],
                "search_ms": med(s) if s else None,
                "idle_cpu_ms": med([r["idle_cpu_ms"] for r in recs]) if s else None,
            }
        )
    shown = "python benchmarks/bench_threads.py " + " ".join(sys.argv[1:])
    lines = [
        f"## torch threads {a.torch_threads}, numba threads {a.numba_threads}",
        "",
        f"Command: `{shown}`",
        "",
        f"{a.n} x {a.dim} vectors, SRP k=10 l=16 unbounded; {a.queries} queries per search; "
        f"small CNN step (batch 32, 28x28). {a.rounds} rounds of search + step per process, "
        f"median step; idle CPU: median of 5 sleeps; {a.reps} interleaved processes per variant (median of medians). "
        f"{platform.machine()}, {os.cpu_count()} cores, load average {load0:.2f} before / "
        f"{load1:.2f} after.",
        "",
        "| variant | numba layer | passive setup | torch step ms (median) | per process | search ms "
        "| CPU ms burnt in a 50 ms sleep after a search |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        srch = "-" if r["search_ms"] is None else f"{r['search_ms']:.1f}"
        idle = "-" if r["idle_cpu_ms"] is None else f"{r['idle_cpu_ms']:.1f}"
        lines.append(
            f"| {r['variant']} | {r['layer']} | {r['setup']} | {r['step_ms']:.1f} | "
            f"{r['step_ms_all']} | {srch} | {idle} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    if a.out:
        with open(a.out + ".md", "a") as fh:
            fh.write(text + "\n")
        with open(a.out + ".json", "a") as fh:
            fh.write(json.dumps({"args": vars(a), "rows": rows}) + "\n")


if __name__ == "__main__":
    main()
