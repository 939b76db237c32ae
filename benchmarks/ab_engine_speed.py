"""A/B training speed of two checkouts: run once per checkout's own venv, alternating.

Trains 784-1000-1000-1000-10 at 5% with the defaults for one epoch of N MNIST images
(after a 2,000-image warm-up that compiles the kernels) and prints samples/s.

    for i in 1 2 3; do
      OLD/.venv/bin/python benchmarks/ab_engine_speed.py old 20000
      NEW/.venv/bin/python benchmarks/ab_engine_speed.py new 20000
    done
"""

from __future__ import annotations

import sys
import time

import numpy as np

import lshcore
from lshcore.data.datasets import load_dataset
from lshcore.training.engine import Trainer
from lshcore.training.model import Model


def main() -> None:
    label, n = sys.argv[1], int(sys.argv[2])
    data_dir = sys.argv[3] if len(sys.argv) > 3 else "/work/shared/data/mnist"
    d = load_dataset("mnist", data_dir)
    x, y = d.x_train[:n].astype(np.float32), d.y_train[:n]
    model = Model.mlp(784, [1000, 1000, 1000], 10, active=0.05, seed=0)
    trainer = Trainer(model, "adam", 3e-3, batch_size=128, seed=0)
    trainer.fit(x[:2000], y[:2000], epochs=1)  # compile the kernels
    start = time.perf_counter()
    trainer.fit(x, y, epochs=1)
    seconds = time.perf_counter() - start
    print(label, lshcore.__file__, round(n / seconds), "samples/s")


if __name__ == "__main__":
    main()
