"""MNIST benchmarks of the hashed sparse MLP (Spring & Shrivastava, KDD 2017).

Sub-commands (each writes benchmarks/results/mnist_<name>.json):

  accuracy  784-1000-1000-1000-10, all hidden layers hashed at --active, against the dense twin
  curve     one model (a policy or dense), test accuracy after every epoch (--tiebreak,
            --lr, --eval-policies: the same weights evaluated with other policies)
  sweep     active shares x policies (topk, random, exact): accuracy vs multiplications (+ PNG)
  walltime  epoch time of the hashed model vs its dense twin (same engine) vs a PyTorch
            nn.Linear MLP, interleaved A,B,C repetitions, medians and ratios (--hogwild: also the
            hashed model with 2 workers)
  hogwild   samples/s and accuracy with 1 and 2 worker threads, interleaved

Run from the repository root, e.g.::

  .venv/bin/python benchmarks/bench_mnist.py accuracy --epochs 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "2")
os.environ.setdefault("MKL_NUM_THREADS", "2")


ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
DATA = ROOT.parent / "shared" / "data" / "mnist"

# the hashed configuration chosen by the small experiments in docs/training.md
HASHED: dict[str, Any] = {
    "policy": "topk",
    "family": "dwta",
    "k": 1,
    "l": 100,
    "bin_size": 16,
    "transform": "none",
    "rehash": "changed:0.1:10",
    "rebuild": "never",
}
LR_HASHED = 3e-3
LR_DENSE = 1e-3


def _load() -> Any:
    from lshcore.data.datasets import load_mnist

    return load_mnist(DATA, download=False)


def _train(
    data: Any,
    active: float,
    epochs: int,
    limit: int | None,
    lr: float,
    workers: int = 1,
    seed: int = 0,
    **opts: Any,
) -> dict[str, Any]:
    from lshcore.training.engine import Trainer
    from lshcore.training.model import Model

    x, y = data.x_train[:limit], data.y_train[:limit]
    model = Model.mlp(
        784, [1000, 1000, 1000], 10, active=active, seed=seed, **(opts if active < 1 else {})
    )
    trainer = Trainer(model, "adam", lr, batch_size=128, workers=workers, seed=seed)
    load_before = os.getloadavg()[0]
    stats = trainer.fit(x, y, epochs=epochs)
    load_after = os.getloadavg()[0]
    acc, test_counts = trainer.evaluate(data.x_test, data.y_test)
    c = stats.counts
    return {
        "active": active,
        "policy": opts.get("policy", "dense") if active < 1 else "dense",
        "accuracy": acc,
        "mults": c.as_dict(),
        "mults_total": c.total,
        "mults_dense": stats.mults_dense,
        "mult_fraction": c.total / stats.mults_dense,
        "test_mult_fraction": test_counts.total
        / model.dense_cost(len(data.x_test), training=False),
        "train_seconds": stats.train_seconds,
        "samples_per_second": stats.samples_per_second,
        "losses": stats.losses,
        "epochs": epochs,
        "train_samples": len(x),
        "workers": workers,
        "lr": lr,
        "loadavg_1min_before_after": [load_before, load_after],
    }


def _write(name: str, payload: Any) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    payload = {
        "command": " ".join([".venv/bin/python", "benchmarks/bench_mnist.py", *sys.argv[1:]]),
        "threads": _threads(),
        "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
        **payload,
    }
    (RESULTS / f"mnist_{name}.json").write_text(json.dumps(payload, indent=2))
    print(f"wrote {RESULTS / f'mnist_{name}.json'}")


def _threads() -> dict[str, Any]:
    out: dict[str, Any] = {
        k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")
    }
    try:
        import numba

        out["numba"] = numba.get_num_threads()
    except ImportError:
        pass
    out["cpus"] = os.cpu_count()
    out["loadavg_start"] = os.getloadavg()
    return out


def cmd_accuracy(args: argparse.Namespace) -> None:
    data = _load()
    keys = ("accuracy", "mult_fraction", "samples_per_second")
    dense = _train(data, 1.0, args.epochs, args.limit, LR_DENSE) if not args.no_dense else None
    if dense is None:  # reuse the dense twin of an earlier run of this command
        dense = json.loads((RESULTS / "mnist_accuracy.json").read_text())["dense"]
    print("dense", json.dumps({k: dense[k] for k in keys}), flush=True)
    hashed = {}
    for policy in args.policies.split(","):
        opts = dict(HASHED, policy=policy, rerank=args.rerank, l=args.l)
        rec = _train(data, args.active, args.epochs, args.limit, LR_HASHED, **opts)
        rec["rerank"] = args.rerank if policy == "rerank" else None
        rec["accuracy_gap_points"] = 100 * (dense["accuracy"] - rec["accuracy"])
        print(policy, json.dumps({k: rec[k] for k in keys}), flush=True)
        hashed[policy] = rec
    _write(args.name, {"config": dict(HASHED, l=args.l), "hashed": hashed, "dense": dense})


def cmd_curve(args: argparse.Namespace) -> None:
    """One model, test accuracy after every epoch; the JSON is rewritten after each epoch
    (so a run cut short keeps its curve). Evaluating between epochs advances the
    selectors' call counters, so the run differs slightly from one without evaluation."""
    from lshcore.training.engine import Trainer
    from lshcore.training.model import Model

    data = _load()
    x, y = data.x_train[: args.limit], data.y_train[: args.limit]
    dense = args.policy == "dense"
    lr = args.lr if args.lr is not None else (LR_DENSE if dense else LR_HASHED)
    opts = dict(
        HASHED,
        policy=args.policy,
        rerank=args.rerank,
        l=args.l,
        bin_size=args.bin_size,
        tiebreak=args.tiebreak,
    )
    model = Model.mlp(
        784,
        [1000, 1000, 1000],
        10,
        active=1.0 if dense else args.active,
        seed=args.seed,
        **({} if dense else opts),
    )
    trainer = Trainer(model, "adam", lr, batch_size=128, workers=1, seed=args.seed)
    curve: list[dict[str, Any]] = []
    t0 = time.perf_counter()

    def after(epoch: int, stats: Any) -> None:
        acc, _ = trainer.evaluate(data.x_test, data.y_test)
        mults = stats.counts.total / model.dense_cost(stats.samples)
        rec = {
            "epoch": epoch,
            "test_accuracy": acc,
            "loss": stats.losses[-1],
            "mult_fraction": mults,
            "train_seconds": stats.train_seconds,
            "wall_seconds": time.perf_counter() - t0,
            "loadavg_1min": os.getloadavg()[0],
        }
        for other in [q for q in args.eval_policies.split(",") if q] if not dense else []:
            # the same trained weights, another selection rule at inference only
            found = (getattr(ly, "selector", None) for ly in model.layers)
            sels = [s for s in found if s is not None]
            saved = [(s.policy, s.rerank) for s in sels]
            for s in sels:
                s.policy, s.rerank = other, args.rerank
            rec[f"test_accuracy_infer_{other}"] = trainer.evaluate(data.x_test, data.y_test)[0]
            for s, (pol, rr) in zip(sels, saved, strict=True):
                s.policy, s.rerank = pol, rr
        curve.append(rec)
        print(args.policy, json.dumps(rec), flush=True)
        _write(
            args.name,
            {
                "model": "dense" if dense else args.policy,
                "config": None if dense else opts,
                "active": 1.0 if dense else args.active,
                "lr": lr,
                "seed": args.seed,
                "train_samples": len(x),
                "curve": curve,
            },
        )

    trainer.fit(x, y, epochs=args.epochs, callback=after)


def cmd_sweep(args: argparse.Namespace) -> None:
    data = _load()
    records = []
    for policy in args.policies.split(","):
        for active in [float(a) for a in args.active.split(",")]:
            if active >= 1.0 and policy != args.policies.split(",")[0]:
                continue  # one dense point
            opts = dict(HASHED, policy=policy)
            rec = _train(
                data, active, args.epochs, args.limit, LR_HASHED if active < 1 else LR_DENSE, **opts
            )
            print(
                policy,
                active,
                f"acc={rec['accuracy']:.4f} frac={rec['mult_fraction']:.4f}",
                flush=True,
            )
            records.append(rec)
    _write("sweep", {"config": HASHED, "records": records})
    _plot(records, RESULTS / "mnist_sweep.png")


def _plot(records: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    dense = [r for r in records if r["policy"] == "dense"]
    for policy, marker in (("topk", "o-"), ("random", "s--"), ("exact", "^:")):
        pts = sorted((r for r in records if r["policy"] == policy), key=lambda r: r["active"])
        if pts:
            ax.plot(
                [r["mult_fraction"] for r in pts],
                [100 * r["accuracy"] for r in pts],
                marker,
                label=policy,
            )
            for r in pts:
                ax.annotate(
                    f"{r['active']:g}",
                    (r["mult_fraction"], 100 * r["accuracy"]),
                    fontsize=7,
                    xytext=(3, 3),
                    textcoords="offset points",
                )
    for r in dense:
        ax.plot([r["mult_fraction"]], [100 * r["accuracy"]], "k*", ms=10, label="dense")
    ax.set_xscale("log")
    ax.set_xlabel("training multiplications / dense (hashing counted)")
    ax.set_ylabel("MNIST test accuracy (%)")
    ax.set_title("784-1000-1000-1000-10, hidden layers hashed")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _torch_epoch(data: Any, limit: int | None, reps_state: dict[str, Any]) -> float:
    import torch

    torch.set_num_threads(2)
    if "model" not in reps_state:
        torch.manual_seed(0)
        model = torch.nn.Sequential(
            torch.nn.Linear(784, 1000),
            torch.nn.ReLU(),
            torch.nn.Linear(1000, 1000),
            torch.nn.ReLU(),
            torch.nn.Linear(1000, 1000),
            torch.nn.ReLU(),
            torch.nn.Linear(1000, 10),
        )
        reps_state["model"] = model
        reps_state["opt"] = torch.optim.Adam(model.parameters(), lr=LR_DENSE, fused=True)
    model, opt = reps_state["model"], reps_state["opt"]
    x = torch.from_numpy(data.x_train[:limit])
    y = torch.from_numpy(data.y_train[:limit])
    perm = torch.randperm(len(x))
    start = time.perf_counter()
    for i in range(0, len(x), 128):
        idx = perm[i : i + 128]
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
        loss.backward()
        opt.step()
    return time.perf_counter() - start


def cmd_walltime(args: argparse.Namespace) -> None:
    from lshcore.training.engine import Trainer
    from lshcore.training.model import Model

    data = _load()
    x, y = data.x_train[: args.limit], data.y_train[: args.limit]
    mlp = (784, [1000, 1000, 1000], 10)
    trainers = {
        "hashed": Trainer(Model.mlp(*mlp, active=args.active, seed=0, **HASHED), "adam", LR_HASHED),
        "hashed_rerank8": Trainer(
            Model.mlp(
                *mlp, active=args.active, seed=0, **dict(HASHED, policy="rerank", rerank=8.0)
            ),
            "adam",
            LR_HASHED,
        ),
        "dense": Trainer(Model.mlp(*mlp, active=1.0, seed=0), "adam", LR_DENSE),
    }
    if args.hogwild:  # the hashed model on both cores too (BLAS uses 2 threads for dense)
        trainers["hashed_2workers"] = Trainer(
            Model.mlp(*mlp, active=args.active, seed=0, **HASHED), "adam", LR_HASHED, workers=2
        )
    for t in trainers.values():
        t.fit(x[:1280], y[:1280], 1)  # compile the kernels, warm the caches
    torch_state: dict[str, Any] = {}
    _torch_epoch(data, 1280, torch_state)
    times: dict[str, list[float]] = {k: [] for k in [*trainers, "torch"]}
    loads: list[float] = []
    for rep in range(args.reps):
        for name, t in trainers.items():
            times[name].append(t.fit(x, y, 1).train_seconds)
        times["torch"].append(_torch_epoch(data, args.limit, torch_state))
        loads.append(os.getloadavg()[0])
        print(
            rep, {k: round(v[-1], 2) for k, v in times.items()}, f"load {loads[-1]:.1f}", flush=True
        )
    med = {k: statistics.median(v) for k, v in times.items()}
    _write(
        args.name,
        {
            "samples_per_epoch": len(x),
            "config": HASHED,
            "active": args.active,
            "seconds": times,
            "median_seconds": med,
            "ratio_dense_over_hashed": med["dense"] / med["hashed"],
            "ratio_dense_over_hashed_rerank8": med["dense"] / med["hashed_rerank8"],
            "ratio_dense_over_torch": med["dense"] / med["torch"],
            "ratio_dense_over_hashed_2workers": med["dense"] / med["hashed_2workers"]
            if "hashed_2workers" in med
            else None,
            "loadavg_1min_after_each_rep": loads,
        },
    )


def cmd_hogwild(args: argparse.Namespace) -> None:
    data = _load()
    runs: dict[int, list[dict[str, Any]]] = {1: [], 2: []}
    for rep in range(args.reps):
        for workers in (1, 2):
            rec = _train(
                data, args.active, args.epochs, args.limit, LR_HASHED, workers=workers, **HASHED
            )
            runs[workers].append(rec)
            print(
                rep,
                workers,
                f"sps={rec['samples_per_second']:.0f} acc={rec['accuracy']:.4f}",
                flush=True,
            )
    med = {w: statistics.median(r["samples_per_second"] for r in v) for w, v in runs.items()}
    acc = {w: statistics.median(r["accuracy"] for r in v) for w, v in runs.items()}
    _write(
        args.name,
        {
            "config": HASHED,
            "runs": {str(k): v for k, v in runs.items()},
            "median_samples_per_second": {str(k): v for k, v in med.items()},
            "speedup_2_over_1": med[2] / med[1],
            "median_accuracy": {str(k): v for k, v in acc.items()},
            "accuracy_drop_points": 100 * (acc[1] - acc[2]),
        },
    )


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("accuracy")
    a.add_argument("--active", type=float, default=0.05)
    a.add_argument("--epochs", type=int, default=3)
    a.add_argument("--limit", type=int, default=None)
    a.add_argument("--policies", default="topk,rerank")
    a.add_argument("--rerank", type=float, default=4.0)
    a.add_argument("--l", type=int, default=HASHED["l"], help="tables per hashed layer")
    a.add_argument(
        "--no-dense", action="store_true", help="reuse the dense twin of mnist_accuracy.json"
    )
    a.add_argument("--name", default="accuracy", help="results file mnist_<name>.json")
    c = sub.add_parser("curve", help="one model, test accuracy after every epoch")
    c.add_argument("--policy", default="topk", help="a selector policy, or 'dense'")
    c.add_argument("--active", type=float, default=0.05)
    c.add_argument("--epochs", type=int, default=10)
    c.add_argument("--limit", type=int, default=None)
    c.add_argument("--rerank", type=float, default=8.0)
    c.add_argument("--l", type=int, default=HASHED["l"], help="tables per hashed layer")
    c.add_argument("--bin-size", type=int, default=HASHED["bin_size"])
    c.add_argument("--lr", type=float, default=None, help="Adam lr (default 3e-3 / 1e-3 dense)")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--tiebreak", default="random", help="equal hit counts: random or norm")
    c.add_argument(
        "--eval-policies", default="", help="also evaluate with these policies (e.g. rerank,exact)"
    )
    c.add_argument("--name", required=True, help="results file mnist_<name>.json")
    s = sub.add_parser("sweep")
    s.add_argument("--active", default="0.01,0.05,0.1,0.25,1.0")
    s.add_argument("--policies", default="topk,random,exact")
    s.add_argument("--epochs", type=int, default=1)
    s.add_argument("--limit", type=int, default=None)
    w = sub.add_parser("walltime")
    w.add_argument("--active", type=float, default=0.05)
    w.add_argument("--limit", type=int, default=20000)
    w.add_argument("--reps", type=int, default=3)
    w.add_argument("--name", default="walltime", help="results file mnist_<name>.json")
    w.add_argument(
        "--hogwild", action="store_true", help="also time the hashed model with 2 workers"
    )
    h = sub.add_parser("hogwild")
    h.add_argument("--active", type=float, default=0.05)
    h.add_argument("--epochs", type=int, default=1)
    h.add_argument("--limit", type=int, default=20000)
    h.add_argument("--reps", type=int, default=2)
    h.add_argument("--name", default="hogwild", help="results file mnist_<name>.json")
    args = p.parse_args()
    {
        "accuracy": cmd_accuracy,
        "curve": cmd_curve,
        "sweep": cmd_sweep,
        "walltime": cmd_walltime,
        "hogwild": cmd_hogwild,
    }[args.cmd](args)


if __name__ == "__main__":
    main()
