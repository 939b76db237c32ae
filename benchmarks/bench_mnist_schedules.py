"""Small experiment choosing the default rehash schedule (docs/training.md).

MNIST, 784-1000-1000-1000-10, hidden layers hashed at 5% (topk), Adam 3e-3, batch 128,
one epoch over the first 20,000 training images, test on all 10,000.
Run: .venv/bin/python benchmarks/bench_mnist_schedules.py
"""

import json
from pathlib import Path

from lshcore.data.datasets import load_mnist
from lshcore.training.engine import Trainer
from lshcore.training.model import Model

d = load_mnist(Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist", download=False)
out = []
for fam, kw in [
    ("dwta", dict(k=1, l=100, bin_size=16, transform="none")),
    ("srp", dict(k=6, l=20)),
]:
    for sched in (
        ["fixed:50", "exp:20:1.5", "changed:0.1:10", "never", "fixed:10"]
        if fam == "dwta"
        else ["fixed:50", "exp:20:1.5", "changed:0.1:10"]
    ):
        m = Model.mlp(
            784,
            [1000, 1000, 1000],
            10,
            active=0.05,
            seed=0,
            policy="topk",
            family=fam,
            rehash=sched,
            **kw,
        )
        tr = Trainer(m, "adam", 3e-3, batch_size=128, seed=0)
        st = tr.fit(d.x_train[:20000], d.y_train[:20000], 1)
        acc, _ = tr.evaluate(d.x_test, d.y_test)
        r = dict(
            family=fam,
            rehash=sched,
            accuracy=acc,
            mult_fraction=st.mult_fraction,
            rehash_fraction=st.counts.rehashing / st.mults_dense,
            train_seconds=st.train_seconds,
            rehashes=[layer.selector.rehashes for layer in m.layers[:3]],
        )
        print(json.dumps(r), flush=True)
        out.append(r)
Path(__file__).resolve().parent.joinpath("results", "mnist_schedules.json").write_text(
    json.dumps(
        {"command": ".venv/bin/python benchmarks/bench_mnist_schedules.py", "records": out},
        indent=1,
    )
)
