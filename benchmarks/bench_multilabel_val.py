"""The MLP engine's defaults on a multi-label dataset, on a VALIDATION split (a fifth of the
training split, seed 7; the test split is never read): 3 x 1000 hidden at 5%, P@1 after
epochs 3, 6, 9 and 10. Each spec is ``key=value,...`` of SelectionParams, plus ``lr``,
``ep`` (epochs), ``active`` and ``dense=1`` (the dense twin).

    OMP_NUM_THREADS=1 NUMBA_NUM_THREADS=1 python benchmarks/bench_multilabel_val.py bibtex \\
        "" "policy=exact" "batch_factor=8" "dense=1" --json out.json
"""

import argparse
import json
import os
import time

import numpy as np

from lshcore.cli.train import _engine_arrays
from lshcore.data.datasets import load_dataset
from lshcore.training.engine import Trainer
from lshcore.training.model import Model
from lshcore.training.params import SelectionParams

FLOATS = ("batch_factor", "active", "rerank", "lr")

ap = argparse.ArgumentParser()
ap.add_argument("dataset", choices=("bibtex", "delicious", "mediamill"))
ap.add_argument("specs", nargs="+")
ap.add_argument("--data-dir", default="../shared/data")
ap.add_argument("--json", default=None)
args = ap.parse_args()

d = load_dataset(args.dataset, args.data_dir)
x, y = _engine_arrays(d.x_train, d.y_train, d.n_classes)
perm = np.random.default_rng(7).permutation(len(x))
nv = len(x) // 5
va, tr = perm[:nv], perm[nv:]
runs = []
for spec in args.specs:
    kw: dict = dict(p.split("=", 1) for p in spec.split(",") if p)
    kw = {k: float(v) if k in FLOATS else int(v) if v.isdigit() else v for k, v in kw.items()}
    lr, epochs, dense = kw.pop("lr", 3e-3), int(kw.pop("ep", 10)), bool(kw.pop("dense", 0))
    active = 1.0 if dense else float(kw.pop("active", 0.05))
    params = None if dense else SelectionParams.from_kwargs(**kw)
    model = Model.mlp(x.shape[1], [1000] * 3, d.n_classes, active=active, seed=0, params=params)
    trainer = Trainer(model, "adam", lr, batch_size=128, seed=0)
    load0, t0, p_at_1 = os.getloadavg()[0], time.perf_counter(), {}
    for epoch in range(1, epochs + 1):
        trainer.fit(x[tr], y[tr], epochs=1)
        if epoch % 3 == 0 or epoch == epochs:
            p_at_1[epoch] = trainer.evaluate(x[va], y[va])[0]
    rec = {"spec": spec, "val_p_at_1_by_epoch": p_at_1, "seconds": time.perf_counter() - t0,
           "load_before": load0, "load_after": os.getloadavg()[0]}  # fmt: skip
    print(json.dumps(rec), flush=True)
    runs.append(rec)
if args.json:
    cmd = " ".join(
        ["python benchmarks/bench_multilabel_val.py", args.dataset, *map(repr, args.specs)]
    )
    with open(args.json, "w") as fh:
        json.dump({"command": cmd, "runs": runs}, fh, indent=1)
