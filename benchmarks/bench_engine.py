"""Hashed training against its dense twin, configurations interleaved (A, B, A, B...).

Selection of defaults happens here on a VALIDATION split carved from the training data
(the last ``--val`` training images); ``--test`` scores on the test set instead (once per
reported configuration). Each configuration is ``name=key:value,key:value`` over the
SelectionParams fields (``policy``, ``family``, ``k``, ``l``, ``batch_factor``, ...) plus
``active``, ``hidden``, ``lr``, ``workers``; ``dense`` is the dense twin.

    OMP_NUM_THREADS=1 python benchmarks/bench_engine.py --data-dir /work/shared/data/mnist \\
        --train 10000 --epochs 1 --reps 2 default dense "paper=policy:topk,family:dwta,k:1,l:100"

Prints one line per run and a JSON summary (medians per configuration) with the load
average before and after each run, work per sample in both currencies and scanned
fraction per hashed layer.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from typing import Any

import numpy as np


def _parse(spec: str) -> tuple[str, dict[str, Any]]:
    name, _, rest = spec.partition("=")
    out: dict[str, Any] = {}
    for part in filter(None, rest.split(",")):
        key, _, value = part.partition(":")
        for cast in (int, float):
            try:
                out[key] = cast(value)
                break
            except ValueError:
                continue
        else:
            out[key] = None if value == "none" else value
    return name, out


def run_one(name: str, cfg: dict[str, Any], data: tuple, args: argparse.Namespace) -> dict:
    from lshcore.training.engine import Trainer
    from lshcore.training.model import Model
    from lshcore.training.params import SelectionParams

    x_tr, y_tr, x_ev, y_ev = data
    cfg = dict(cfg)
    hidden = [int(h) for h in str(cfg.pop("hidden", args.hidden)).split("/")]
    lr = float(cfg.pop("lr", args.lr))
    workers = int(cfg.pop("workers", 1))
    if name.startswith("torch"):
        return _run_torch(name, cfg, hidden, lr, data, args)
    dense = name.startswith("dense") or cfg.get("active", 0.05) >= 1.0
    if "m" in cfg:  # a fixed number of active neurons per hidden layer
        cfg["active"] = min(1.0, int(cfg.pop("m")) / max(hidden))
    active = 1.0 if dense else float(cfg.pop("active", args.active))
    params = SelectionParams.from_kwargs(**cfg) if not dense else None
    model = Model.mlp(x_tr.shape[1], hidden, 10, active=active, seed=args.seed, params=params)
    trainer = Trainer(model, "adam", lr, batch_size=args.batch, workers=workers, seed=args.seed)
    load0 = os.getloadavg()[0]
    accs = []
    secs = 0.0
    st = None
    for _ in range(args.epochs):
        st = trainer.fit(x_tr, y_tr, epochs=1)
        secs += st.train_seconds
        accs.append(trainer.evaluate(x_ev, y_ev, batch_size=args.eval_batch)[0])
    c = model_counts = st.counts  # last epoch's counts (per sample below)
    n = st.samples
    rec = {
        "name": name,
        "cfg": cfg,
        "active": active,
        "accuracy": accs[-1],
        "acc_last3": float(np.mean(accs[-3:])),
        "accs": accs,
        "train_seconds": secs,
        "samples_per_second": args.epochs * n / secs,
        "mults_per_sample": c.total / n,
        "paper_fraction": c.paper_total / st.mults_dense,
        "selection_ops_per_sample": c.selection / n,
        "counts": c.as_dict(),
        "scanned_fraction": [
            round(layer.selector.scanned_fraction, 4)
            for layer in model.layers
            if getattr(layer, "hashed", False)
        ],
        "load_before": load0,
        "load_after": os.getloadavg()[0],
    }
    del model_counts
    return rec


def _run_torch(name: str, cfg: dict, hidden: list, lr: float, data: tuple, args: Any) -> dict:
    """PyTorch's dense nn.Linear MLP (benchmarks/torch_baseline.py: fused Adam, explicit
    threads), same batch size, optimizer and learning rate."""
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from benchmarks.torch_baseline import train_torch_mlp

    x_tr, y_tr, x_ev, y_ev = data
    load0 = os.getloadavg()[0]
    res = train_torch_mlp(
        x_tr, y_tr, x_ev, y_ev, hidden=tuple(hidden), epochs=args.epochs,
        batch_size=args.batch, lr=lr, optimizer="adam", seed=args.seed,
        threads=int(cfg.get("threads", 2)), n_classes=10,
    )  # fmt: skip
    return {
        "name": name,
        "cfg": cfg,
        "active": 1.0,
        "accuracy": res["accuracy"],
        "acc_last3": res["accuracy"],
        "accs": [res["accuracy"]],
        "train_seconds": res["train_seconds"],
        "samples_per_second": res["samples_per_second"],
        "mults_per_sample": float(res["mults_per_sample"]["total"]),
        "paper_fraction": 1.0,
        "selection_ops_per_sample": 0.0,
        "counts": {},
        "scanned_fraction": [],
        "threads": res["threads"],
        "optimizer_impl": res["optimizer_impl"],
        "load_before": load0,
        "load_after": os.getloadavg()[0],
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("configs", nargs="+")
    ap.add_argument("--data-dir", default="/work/shared/data/mnist")
    ap.add_argument("--dataset", default="mnist")
    ap.add_argument("--train", type=int, default=10000)
    ap.add_argument("--val", type=int, default=10000)
    ap.add_argument("--test", action="store_true", help="score on the test set")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--hidden", default="1000/1000/1000")
    ap.add_argument("--active", type=float, default=0.05)
    ap.add_argument("--lr", type=float, default=3e-3)  # lshcore train's Adam default
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--eval-batch", type=int, default=512)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    from lshcore.data.datasets import load_dataset

    ds = load_dataset(args.dataset, args.data_dir)
    x, y = ds.x_train, ds.y_train
    if args.test:
        x_tr, y_tr, x_ev, y_ev = x[: args.train], y[: args.train], ds.x_test, ds.y_test
    else:
        cut = x.shape[0] - args.val
        x_tr, y_tr = x[: min(args.train, cut)], y[: min(args.train, cut)]
        x_ev, y_ev = x[cut:], y[cut:]
    data = (x_tr, y_tr, x_ev, y_ev)
    configs = [_parse(c) for c in args.configs]
    runs: list[dict] = []
    for rep in range(args.reps):
        for name, cfg in configs:  # interleaved: A, B, A, B
            rec = run_one(name, cfg, data, args)
            rec["rep"] = rep
            runs.append(rec)
            print(
                f"{name:<14} acc {100 * rec['accuracy']:6.2f}% (last3 {100 * rec['acc_last3']:6.2f})"
                f"  {rec['samples_per_second']:7.0f} samples/s  mults/sample {rec['mults_per_sample']:>11,.0f}"
                f"  sel ops/sample {rec['selection_ops_per_sample']:>9,.0f}  paper {100 * rec['paper_fraction']:6.2f}%"
                f"  scanned {rec['scanned_fraction']}  load {rec['load_before']:.2f}->{rec['load_after']:.2f}",
                flush=True,
            )
    summary = {}
    for name, _ in configs:
        mine = [r for r in runs if r["name"] == name]
        summary[name] = {
            "median_samples_per_second": statistics.median(r["samples_per_second"] for r in mine),
            "median_accuracy": statistics.median(r["accuracy"] for r in mine),
            "median_acc_last3": statistics.median(r["acc_last3"] for r in mine),
        }
    out = {
        "command": " ".join(sys.argv),
        "threads": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "NUMBA_NUM_THREADS")},
        "split": "test" if args.test else f"validation (last {args.val} training images)",
        "when": time.strftime("%Y-%m-%d %H:%M:%S"),
        "runs": runs,
        "summary": summary,
    }
    print(json.dumps(summary, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1, default=str)


if __name__ == "__main__":
    main()
