"""Policies on the demo's shape (digits, 64-32000-10, 256 active, 10 epochs), on VALIDATION splits
carved from digits' training split (3 seeds; the test split is never read).

    OMP_NUM_THREADS=1 NUMBA_NUM_THREADS=1 python benchmarks/bench_digits_policies.py batch_union batch_rerank
"""

import sys

import numpy as np

from lshcore.data.datasets import load_digits
from lshcore.training.engine import Trainer
from lshcore.training.model import Model
from lshcore.training.params import SelectionParams

d = load_digits(seed=0)
x, y = d.x_train.astype(np.float32), d.y_train
n = len(x)
nv = n // 5
res = {}
for seed in (0, 1, 2):
    perm = np.random.default_rng(100 + seed).permutation(n)
    tr, va = perm[nv:], perm[:nv]
    for pol in sys.argv[1:]:
        p, _, f = pol.partition(":")
        params = SelectionParams(policy=p, batch_factor=float(f or 4))
        model = Model.mlp(x.shape[1], [32000], 10, active=256 / 32000, seed=seed, params=params)
        t = Trainer(model, "adam", 3e-3, batch_size=128, seed=seed)
        t.fit(x[tr], y[tr], epochs=10)
        accs = {b: t.evaluate(x[va], y[va], batch_size=b)[0] for b in (512, 128)}
        res.setdefault(pol, []).append(accs)
        print(seed, pol, accs, flush=True)
for pol, r in res.items():
    print(
        pol,
        "mean val acc (eval batch 512):",
        np.mean([a[512] for a in r]),
        " (128):",
        np.mean([a[128] for a in r]),
    )
