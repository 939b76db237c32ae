"""Train an MNIST MLP whose hidden layer is a hashed Gluon block (LSHDense).

python examples/train_mnist_gluon.py [DATA_DIR]    # or set $LSHCORE_DATA
"""

import sys

import numpy as np

from lshcore.adapters._common import load_example_data
from lshcore.adapters.mxnet import LSHDense, autograd, gluon, mx, nd  # mxnet, shimmed for numpy

x_train, y_train, x_test, y_test = load_example_data(*sys.argv[1:2])
mx.random.seed(0)
net = gluon.nn.Sequential()
net.add(LSHDense(1000, active=0.05, k=6, l=50, seed=0, activation="relu"))  # 5% of the units
net.add(gluon.nn.Dense(10))
net.initialize(mx.init.Xavier())
trainer = gluon.Trainer(net.collect_params(), "adam", {"learning_rate": 1e-3})
loss_fn = gluon.loss.SoftmaxCrossEntropyLoss()
rng = np.random.default_rng(0)
for epoch in range(2):
    for idx in np.array_split(rng.permutation(len(x_train)), len(x_train) // 128):
        with autograd.record():  # recorded calls train; the index follows the weights
            loss = loss_fn(net(nd.array(x_train[idx])), nd.array(y_train[idx]))
        loss.backward()
        trainer.step(len(idx))  # row_sparse weight gradient: only active rows move
    pred = net(nd.array(x_test)).argmax(axis=1).asnumpy()
    print(f"epoch {epoch + 1}: test accuracy {(pred == y_test).mean():.2%}")
