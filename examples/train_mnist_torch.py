"""Train an MLP whose hidden layer is a hashed PyTorch layer (LSHLinear), beside the same
MLP with a dense ``nn.Linear`` hidden layer.

python examples/train_mnist_torch.py [DATA_DIR] [--dataset mnist|digits] [--epochs N]

MNIST comes from DATA_DIR or $LSHCORE_DATA (never downloaded); without it, or with
``--dataset digits``, scikit-learn's bundled 8x8 digits (offline, a few seconds).
"""

from __future__ import annotations

import argparse

import torch
from torch import nn
from torch.nn import functional as F

import lshcore
from lshcore.adapters.torch import LSHLinear

HIDDEN, BATCH, LR = 1000, 32, 1e-3
EPOCHS = {"mnist": 2, "digits": 10}  # digits has 1,437 training images: more passes
# 5% of the units per input; rerank: LSH proposes 4x as many candidates and their exact
# activations pick the 5% (plain topk stays several points below the dense layer)
HASHING = {"active": 0.05, "policy": "rerank", "k": 4, "l": 50, "seed": 0}


def load(dataset: str, data_dir: str | None) -> lshcore.data.datasets.Dataset:
    if dataset == "mnist":
        try:
            return lshcore.load_dataset("mnist", data_dir, download=False)
        except lshcore.DataError as exc:
            print(f"{str(exc).splitlines()[0]} -- using scikit-learn's digits instead")
    return lshcore.load_dataset("digits")


def train(model: nn.Module, data, epochs: int) -> float:
    """Adam on shuffled batches; returns the test accuracy."""
    x_train, y_train = torch.from_numpy(data.x_train), torch.from_numpy(data.y_train)
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    for _ in range(epochs):
        model.train()
        for idx in torch.randperm(len(x_train)).split(BATCH):
            loss = F.cross_entropy(model(x_train[idx]), y_train[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()  # the layer's index follows the new weights by itself
    model.eval()
    with torch.no_grad():
        pred = model(torch.from_numpy(data.x_test)).argmax(1).numpy()
    return float((pred == data.y_test).mean())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir", nargs="?", default=None)
    parser.add_argument("--dataset", choices=("mnist", "digits"), default="mnist")
    parser.add_argument("--epochs", type=int, default=None)
    args = parser.parse_args(argv)
    data = load(args.dataset, args.data_dir)
    epochs = args.epochs or EPOCHS[data.name]
    torch.manual_seed(0)
    hashed = nn.Sequential(
        LSHLinear(data.n_features, HIDDEN, **HASHING),
        nn.ReLU(),
        nn.Linear(HIDDEN, data.n_classes),
    )
    dense = nn.Sequential(
        nn.Linear(data.n_features, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, data.n_classes)
    )
    print(f"{data.name}: {data.n_train} training images, {epochs} epochs")
    print(f"hashed (LSHLinear, 5% active): test accuracy {train(hashed, data, epochs):.2%}")
    print(f"dense (nn.Linear):             test accuracy {train(dense, data, epochs):.2%}")


if __name__ == "__main__":
    main()
