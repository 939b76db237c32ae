"""Train an MLP whose hidden layer is a hashed Keras layer (LSHDense), beside the same MLP
with a dense ``keras.layers.Dense`` hidden layer.

python examples/train_mnist_keras.py [DATA_DIR] [--dataset mnist|digits] [--epochs N]

MNIST comes from DATA_DIR or $LSHCORE_DATA (never downloaded); without it, or with
``--dataset digits``, scikit-learn's bundled 8x8 digits (offline, a few seconds).
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

import lshcore  # noqa: E402
from lshcore.adapters.tensorflow import LSHDense  # noqa: E402

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


def train(hidden: keras.layers.Layer, data, epochs: int) -> float:
    """An MLP around ``hidden``, Adam, ``model.fit``; returns the test accuracy."""
    model = keras.Sequential(
        [keras.Input(shape=(data.n_features,)), hidden, keras.layers.Dense(data.n_classes)]
    )
    model.compile(
        optimizer=keras.optimizers.Adam(LR),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        jit_compile=False,  # the hashed layer selects in Python (tf.py_function)
    )
    model.fit(data.x_train, data.y_train, batch_size=BATCH, epochs=epochs, verbose=0)
    return float(model.evaluate(data.x_test, data.y_test, verbose=0)[1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir", nargs="?", default=None)
    parser.add_argument("--dataset", choices=("mnist", "digits"), default="mnist")
    parser.add_argument("--epochs", type=int, default=None)
    args = parser.parse_args(argv)
    data = load(args.dataset, args.data_dir)
    epochs = args.epochs or EPOCHS[data.name]
    keras.utils.set_random_seed(0)
    print(f"{data.name}: {data.n_train} training images, {epochs} epochs")
    hashed = train(LSHDense(HIDDEN, activation="relu", **HASHING), data, epochs)
    print(f"hashed (LSHDense, 5% active): test accuracy {hashed:.2%}")
    dense = train(keras.layers.Dense(HIDDEN, activation="relu"), data, epochs)
    print(f"dense (keras Dense):          test accuracy {dense:.2%}")


if __name__ == "__main__":
    main()
