"""Train an MLP whose hidden layer is a hashed Gluon block (LSHDense), beside the same MLP
with a dense ``gluon.nn.Dense`` hidden layer.

python examples/train_mnist_gluon.py [DATA_DIR] [--dataset mnist|digits] [--epochs N]

MNIST comes from DATA_DIR or $LSHCORE_DATA (never downloaded); without it, or with
``--dataset digits``, scikit-learn's bundled 8x8 digits (offline, a few seconds).
"""

from __future__ import annotations

import argparse

import numpy as np

import lshcore
from lshcore.adapters.mxnet import LSHDense, autograd, gluon, mx, nd  # mxnet, shimmed for numpy

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


def train(hidden: gluon.Block, data, epochs: int) -> float:
    """An MLP around ``hidden``, Adam through ``gluon.Trainer``; returns the test accuracy."""
    net = gluon.nn.Sequential()
    net.add(hidden, gluon.nn.Dense(data.n_classes))
    net.initialize(mx.init.Xavier())
    trainer = gluon.Trainer(net.collect_params(), "adam", {"learning_rate": LR})
    loss_fn = gluon.loss.SoftmaxCrossEntropyLoss()
    rng = np.random.default_rng(0)
    for _ in range(epochs):
        order = rng.permutation(data.n_train)
        for idx in (order[lo : lo + BATCH] for lo in range(0, data.n_train, BATCH)):
            with autograd.record():  # recorded calls train; the index follows the weights
                loss = loss_fn(net(nd.array(data.x_train[idx])), nd.array(data.y_train[idx]))
            loss.backward()
            trainer.step(len(idx))  # row_sparse weight gradient: only active rows move
    pred = net(nd.array(data.x_test)).argmax(axis=1).asnumpy()
    return float((pred == data.y_test).mean())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir", nargs="?", default=None)
    parser.add_argument("--dataset", choices=("mnist", "digits"), default="mnist")
    parser.add_argument("--epochs", type=int, default=None)
    args = parser.parse_args(argv)
    data = load(args.dataset, args.data_dir)
    epochs = args.epochs or EPOCHS[data.name]
    mx.random.seed(0)
    print(f"{data.name}: {data.n_train} training images, {epochs} epochs")
    hashed = train(LSHDense(HIDDEN, activation="relu", **HASHING), data, epochs)
    print(f"hashed (LSHDense, 5% active): test accuracy {hashed:.2%}")
    dense = train(gluon.nn.Dense(HIDDEN, activation="relu"), data, epochs)
    print(f"dense (gluon Dense):          test accuracy {dense:.2%}")


if __name__ == "__main__":
    main()
