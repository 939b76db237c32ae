"""Selection policies on one wide hidden layer, scored on a VALIDATION split.

Trains 784-W-10 on the first ``--train`` MNIST training images with ``m`` active neurons
per input (default 256 of 64,000), then scores the last-but-one 5,000 training images
(50,000-55,000, never the test set) with several inference batch sizes (a shared-set
policy's set depends on the batch it is computed for). Used to choose the default policy
for wide layers (docs/training.md "Choosing the defaults").

    OMP_NUM_THREADS=1 NUMBA_NUM_THREADS=1 python benchmarks/bench_wide_policies.py \\
        --width 64000 --train 20000 batch_union batch_rerank batch_rerank:8 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("policies", nargs="+", help="policy or policy:batch_factor")
    ap.add_argument("--data-dir", default="../shared/data/mnist")
    ap.add_argument("--width", type=int, default=64000)
    ap.add_argument("--m", type=int, default=256)
    ap.add_argument("--train", type=int, default=20000)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    from lshcore.data.datasets import load_dataset
    from lshcore.training.engine import Trainer
    from lshcore.training.model import Model
    from lshcore.training.params import SelectionParams

    d = load_dataset("mnist", args.data_dir)
    x, y = d.x_train.astype(np.float32), d.y_train
    x_tr, y_tr = x[: args.train], y[: args.train]
    x_val, y_val = x[50000:55000], y[50000:55000]
    runs = []
    for spec in args.policies:
        policy, _, factor = spec.partition(":")
        params = SelectionParams(policy=policy, batch_factor=float(factor or 4.0))
        model = Model.mlp(784, [args.width], 10, active=args.m / args.width, seed=0, params=params)
        trainer = Trainer(model, "adam", 3e-3, batch_size=128, seed=0)
        load0 = os.getloadavg()[0]
        start = time.perf_counter()
        stats = trainer.fit(x_tr, y_tr, epochs=1)
        seconds = time.perf_counter() - start
        acc = {str(b): trainer.evaluate(x_val, y_val, batch_size=b)[0] for b in (512, 128, 32)}
        rec = {
            "policy": spec,
            "val_accuracy_by_eval_batch": acc,
            "train_seconds": seconds,
            "mults_per_sample": stats.counts.total / stats.samples,
            "load_before": load0,
            "load_after": os.getloadavg()[0],
        }
        print(json.dumps(rec))
        runs.append(rec)
    if args.json:
        cmd = "python benchmarks/bench_wide_policies.py " + " ".join(
            [f"--width {args.width} --m {args.m} --train {args.train}", *args.policies]
        )
        with open(args.json, "w") as fh:
            json.dump({"command": cmd, "runs": runs}, fh, indent=1)


if __name__ == "__main__":
    main()
