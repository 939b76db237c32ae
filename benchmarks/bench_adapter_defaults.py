"""Adapter selection defaults on a validation split of MNIST's training data.

Contenders (one hidden layer of 1000 ReLU, the default active share unless ``--active``):
``defaults`` (no selection flags: the adapter's defaults, ``ADAPTER_DEFAULTS``),
``global_defaults`` (the core engine's ``SelectionParams()`` defaults spelled out), ``rerank`` (per-sample rerank as the examples: srp k=4 l=50, rerank=4, no
transform), ``topk_srp`` (the old global default: topk, srp k=6 l=20, simple_lsh,
rehash fixed:50) and ``dense`` (the framework's own dense layer). Runs are interleaved
(round r runs every contender once, seed r). Same lr, batch and epochs for all.

    python benchmarks/bench_adapter_defaults.py --framework torch --train 20000 --val 5000 \
        --epochs 2 --rounds 2 --out benchmarks/results/adapters_defaults.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

CONTENDERS: dict[str, dict] = {
    "defaults": {},
    # the global SelectionParams defaults spelled out (what "defaults" gave before the
    # adapters got their own, lshcore.adapters._common.ADAPTER_DEFAULTS)
    "global_defaults": {"policy": "batch_union", "family": "dwta", "k": "auto", "l": "auto",
                        "transform": None},
    "rerank": {"policy": "rerank", "family": "srp", "k": 4, "l": 50, "rerank": 4.0,
               "transform": None},
    "topk_srp": {"policy": "topk", "family": "srp", "k": 6, "l": 20,
                 "transform": "simple_lsh", "rehash": "fixed:50"},
    "dense": {"active": 1.0},
    # further candidates for the adapters' default (not in the default --contenders)
    "rerank_auto": {"policy": "rerank"},  # rerank over the global family/tables (dwta, auto)
    "batch_rerank": {"policy": "batch_rerank"},
    "batch_union_f8": {"batch_factor": 8.0},
}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--framework", default="torch", choices=["torch", "tensorflow", "mxnet"])
    ap.add_argument("--train", type=int, default=20000)
    ap.add_argument("--val", type=int, default=5000)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--hidden", type=int, default=1000)
    ap.add_argument("--active", type=float, default=None, help="default: the layer's default")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--contenders", default="defaults,rerank,topk_srp,dense")
    ap.add_argument(
        "--data",
        default=str(
            Path(__file__).resolve().parents[1] / ".." / ".." / "shared" / "data" / "mnist"
        ),
    )
    ap.add_argument("--out", default=None)
    args = ap.parse_args()

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if args.framework == "torch":
        import torch

        torch.set_num_threads(1)
        from lshcore.adapters.torch import train_mlp
    elif args.framework == "tensorflow":
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(1)
        tf.config.threading.set_inter_op_parallelism_threads(1)
        from lshcore.adapters.tensorflow import train_mlp
    else:
        from lshcore.adapters.mxnet import train_mlp
    from lshcore.data.datasets import load_mnist

    d = load_mnist(args.data, download=False)
    n = args.train + args.val
    xtr, ytr = d.x_train[: args.train], d.y_train[: args.train]
    xva, yva = (
        d.x_train[args.train : n],
        d.y_train[args.train : n],
    )  # validation: held-out train images

    for name in args.contenders.split(","):  # warm-up: JIT compile / cache load, untimed
        train_mlp(xtr[:512], ytr[:512], xva[:256], yva[:256], hidden=args.hidden, epochs=1,
                  batch_size=args.batch, lr=args.lr, progress=False, **CONTENDERS[name])  # fmt: skip
    rows = []
    for r in range(args.rounds):
        for name in args.contenders.split(","):
            opts = dict(CONTENDERS[name])
            if args.active is not None and name != "dense":
                opts["active"] = args.active
            load = os.getloadavg()[0]
            t0 = time.time()
            res = train_mlp(
                xtr, ytr, xva, yva, hidden=args.hidden, epochs=args.epochs,
                batch_size=args.batch, lr=args.lr, seed=r, progress=False, **opts,
            )  # fmt: skip
            row = {
                "framework": args.framework, "contender": name, "round": r, "seed": r,
                "options": opts, "val_accuracy": res["accuracy"],
                "samples_per_second": res["samples_per_second"],
                "train_seconds": res["train_seconds"], "load1_before": load,
                "load1_after": os.getloadavg()[0],
                "train_share": res.get("train_share"), "wall": time.time() - t0,
            }  # fmt: skip
            rows.append(row)
            print(json.dumps({k: row[k] for k in ("contender", "round", "val_accuracy",
                  "samples_per_second", "load1_before")}), flush=True)  # fmt: skip
    record = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "uptime": subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip(),
        "threads": 1, "train": args.train, "val": args.val, "epochs": args.epochs,
        "hidden": args.hidden, "lr": args.lr, "batch": args.batch, "rows": rows,
    }  # fmt: skip
    if args.out:
        Path(args.out).write_text(json.dumps(record, indent=1, default=str) + "\n")


if __name__ == "__main__":
    main()
