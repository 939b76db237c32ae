"""Train an MNIST MLP whose hidden layer is a hashed Keras layer (LSHDense).

python examples/train_mnist_keras.py [DATA_DIR]    # or set $LSHCORE_DATA
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

from lshcore.adapters._common import load_example_data  # noqa: E402
from lshcore.adapters.tensorflow import LSHDense  # noqa: E402

x_train, y_train, x_test, y_test = load_example_data(*sys.argv[1:2])
keras.utils.set_random_seed(0)
model = keras.Sequential(
    [
        keras.Input(shape=(x_train.shape[1],)),
        LSHDense(1000, active=0.05, k=6, l=50, seed=0, activation="relu"),  # 5% of the units
        keras.layers.Dense(10),
    ]
)
model.compile(
    optimizer=keras.optimizers.Adam(1e-3),
    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    metrics=["accuracy"],
    jit_compile=False,  # the hashed layer selects in Python (tf.py_function)
)
model.fit(x_train, y_train, batch_size=128, epochs=2, validation_data=(x_test, y_test))
