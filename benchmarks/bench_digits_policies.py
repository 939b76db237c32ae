"""Policies on the demo's shape (digits, 64-32000-10, 256 active), on VALIDATION splits
carved from digits' training split (3 seeds; the test split is never read). ``dense`` as a
policy trains the dense twin.

    OMP_NUM_THREADS=1 NUMBA_NUM_THREADS=1 python benchmarks/bench_digits_policies.py \\
        --batch 128 --epochs 10 batch_union batch_rerank dense
"""

import argparse

import numpy as np

from lshcore.data.datasets import load_digits
from lshcore.training.engine import Trainer
from lshcore.training.model import Model
from lshcore.training.params import SelectionParams

ap = argparse.ArgumentParser()
ap.add_argument("policies", nargs="+", help="policy[:batch_factor], or dense")
ap.add_argument("--batch", type=int, default=128)
ap.add_argument("--epochs", type=int, default=10)
args = ap.parse_args()

d = load_digits(seed=0)
x, y = d.x_train.astype(np.float32), d.y_train
n = len(x)
nv = n // 5
res: dict[str, list] = {}
for seed in (0, 1, 2):
    perm = np.random.default_rng(100 + seed).permutation(n)
    tr, va = perm[nv:], perm[:nv]
    for pol in args.policies:
        p, _, f = pol.partition(":")
        dense = p == "dense"
        params = None if dense else SelectionParams(policy=p, batch_factor=float(f or 4))
        active = 1.0 if dense else 256 / 32000
        model = Model.mlp(x.shape[1], [32000], 10, active=active, seed=seed, params=params)
        t = Trainer(model, "adam", 3e-3, batch_size=args.batch, seed=seed)
        t.fit(x[tr], y[tr], epochs=args.epochs)
        accs = {b: t.evaluate(x[va], y[va], batch_size=b)[0] for b in (512, 128)}
        res.setdefault(pol, []).append(accs)
        print(seed, pol, accs, flush=True)
for pol, r in res.items():
    print(
        pol,
        f"batch {args.batch}, {args.epochs} epochs: mean val acc (eval batch 512):",
        np.mean([a[512] for a in r]),
        " (128):",
        np.mean([a[128] for a in r]),
    )
