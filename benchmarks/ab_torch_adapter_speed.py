"""A/B step time of the PyTorch adapter's host path in two checkouts: run once per
checkout's own venv, alternating (CPU tensors: the path a change for CUDA must not slow).

``LSHLinear(784, 1000, active=0.05)`` with the adapter defaults, batch 128, Adam, 1 thread;
prints the median of 40 steps after 5 warm-up steps.

    for i in 1 2 3; do
      OLD/.venv/bin/python benchmarks/ab_torch_adapter_speed.py
      NEW/.venv/bin/python benchmarks/ab_torch_adapter_speed.py
    done
"""

from __future__ import annotations

import time

import numpy as np
import torch

import lshcore.adapters.torch as adapter
from lshcore.adapters.torch import LSHLinear


def main() -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    layer = LSHLinear(784, 1000, active=0.05)
    opt = torch.optim.Adam(layer.parameters(), lr=1e-3)
    x = torch.relu(torch.randn(128, 784))
    y = torch.randint(0, 1000, (128,))

    def step() -> None:
        loss = torch.nn.functional.cross_entropy(layer(x, labels=y), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    for _ in range(5):
        step()
    times = []
    for _ in range(40):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    print(f"{adapter.__file__} median step {1e3 * np.median(times):.2f} ms")


if __name__ == "__main__":
    main()
