"""The hashed layer as a native Gluon block (imports mxnet, and no other framework).

``LSHDense`` mirrors ``gluon.nn.Dense`` (weight ``(units, in_units)``, deferred
initialization when ``in_units=0``). The active rows are gathered with
``nd.Embedding(..., sparse_grad=True)``, so the weight gradient is ``row_sparse`` and
``gluon.Trainer`` updates only those rows (lazily, for sgd/adam).

mxnet 1.9.1 still reads ``numpy.bool``, removed in numpy 1.24: this module restores
the alias before importing mxnet. Importing mxnet drops torch to one thread
(``torch.set_num_threads`` again afterwards if both are used).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np

if "bool" not in np.__dict__:  # mxnet 1.9.1 uses np.bool (numpy 2 has it again)
    np.bool = bool  # type: ignore[attr-defined]

import mxnet as mx  # noqa: E402
from mxnet import autograd, gluon, nd  # noqa: E402

from lshcore.adapters._common import IndexFollower, LayerSpec, check_labels, mult_summary  # noqa: E402
from lshcore.core.validation import check_int  # noqa: E402
from lshcore.errors import InputError  # noqa: E402

__all__ = ["LSHDense", "train_mlp"]


class LSHDense(gluon.Block):
    """A dense layer that computes only the units an LSH index selects per input.

    ``forward(x, labels=None)`` returns ``(batch, units)``, zero (before the activation)
    outside each input's active set; in training (inside ``autograd.record()``),
    ``labels (batch,)`` are always active. ``active=1.0`` is exactly ``gluon.nn.Dense``.
    Evaluation hashes too unless ``inference="dense"``. The index follows the weights:
    after a recorded forward, the next forward hands the trained rows to the selector
    (whose schedule rehashes or rebuilds); ``load_parameters`` rebuilds the index;
    ``refresh_index()`` rebuilds it on demand (call it after editing weights by hand).
    """

    def __init__(
        self,
        units: int,
        in_units: int = 0,
        active: float = 0.05,
        family: str = "srp",
        k: int | None = None,
        l: int | None = None,  # noqa: E741
        policy: str = "topk",
        transform: str | None = "simple_lsh",
        seed: int = 0,
        backend: str | None = None,
        inference: str = "sparse",
        activation: str | None = None,
        use_bias: bool = True,
        dtype: str = "float32",
        weight_initializer: Any = None,
        bias_initializer: Any = "zeros",
        selector_params: dict[str, Any] | None = None,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self._units = check_int(units, "units", low=1)
        self._in_units = check_int(in_units, "in_units", low=0)
        self._spec_args: dict[str, Any] = {
            "active": active, "family": family, "k": k, "l": l, "policy": policy,
            "transform": transform, "seed": seed, "backend": backend, "inference": inference,
            "selector_params": dict(selector_params or {}),
        }  # fmt: skip
        LayerSpec(n_in=max(in_units, 1), n_out=self._units, **self._spec_args)  # validate now
        self._activation = activation
        self._index: IndexFollower | None = None
        self._needs_fit = True
        #: (B, m) int64 active ids (-1 padding) of the last hashed call, for inspection
        self.last_active_ids: np.ndarray | None = None
        with self.name_scope():
            self.weight = self.params.get(
                "weight", shape=(units, in_units), init=weight_initializer, dtype=dtype,
                grad_stype="row_sparse", allow_deferred_init=True,
            )  # fmt: skip
            self.bias = (
                self.params.get(
                    "bias",
                    shape=(units,),
                    init=bias_initializer,
                    dtype=dtype,
                    allow_deferred_init=True,
                )
                if use_bias
                else None
            )

    @property
    def spec(self) -> LayerSpec:
        """The validated hashing parameters (available once the input size is known)."""
        if self._index is None:
            raise InputError("LSHDense: in_units is not known yet; call the block on a batch first")
        return self._index.spec

    def _finish_init(self, in_units: int) -> None:
        if self._in_units == 0:
            self._in_units = in_units
        if self.weight._deferred_init:
            self.weight.shape = (self._units, in_units)
            self.weight._finish_deferred_init()
        if self.bias is not None and self.bias._deferred_init:
            self.bias._finish_deferred_init()
        if self._index is None:
            self._index = IndexFollower(
                LayerSpec(n_in=self._in_units, n_out=self._units, **self._spec_args), "all"
            )

    # -- the index ---------------------------------------------------------------------
    def _host_params(self) -> tuple[np.ndarray, np.ndarray | None]:
        w = self.weight.data().asnumpy().astype(np.float32, copy=False)
        b = None if self.bias is None else self.bias.data().asnumpy().astype(np.float32, copy=False)
        return w, b

    def refresh_index(self) -> None:
        """Rebuild the index over the current weights now (same hash functions)."""
        assert self._index is not None
        self._index.fit(*self._host_params())
        self._needs_fit = False

    def load_parameters(self, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        super().load_parameters(*args, **kwargs)
        self._needs_fit = True

    @property
    def selector(self) -> Any:
        """The underlying ``lshcore.training.selector.ActiveSelector`` (None when ``active=1.0``)."""
        return None if self._index is None else self._index.selector

    # -- forward -----------------------------------------------------------------------
    def forward(self, x: Any, labels: Any = None) -> Any:  # type: ignore[override]
        if not isinstance(x, nd.NDArray):
            raise TypeError(f"LSHDense: x must be an mxnet NDArray, got {type(x).__name__}")
        if x.ndim != 2:
            raise InputError(f"LSHDense: x must have shape (batch, in_units), got {x.shape}")
        if not np.issubdtype(x.dtype, np.floating):
            raise InputError(f"LSHDense: x must be floating point, got {np.dtype(x.dtype).name}")
        if self._in_units and x.shape[1] != self._in_units:
            raise InputError(
                f"LSHDense: x must have shape (batch, {self._in_units}), got {x.shape}"
            )
        if x.shape[0] == 0:
            raise InputError("LSHDense: x is an empty batch (0 rows)")
        training = autograd.is_training()
        lab = None
        if labels is not None:
            raw = np.asarray(labels.asnumpy() if isinstance(labels, nd.NDArray) else labels)
            if raw.dtype.kind == "f" and np.all(np.isfinite(raw)) and np.all(raw == np.round(raw)):
                raw = raw.astype(np.int64)  # Gluon keeps labels as float32 NDArrays
            lab = check_labels(raw, x.shape[0], self._units)
        self._finish_init(x.shape[1])
        assert self._index is not None
        spec = self._index.spec
        weight = self.weight.data(x.context)
        bias = None if self.bias is None else self.bias.data(x.context)
        if x.dtype != weight.dtype:
            raise InputError(
                f"LSHDense: x has dtype {np.dtype(x.dtype).name} but the weight has "
                f"{np.dtype(weight.dtype).name}; cast x with x.astype(...)"
            )
        recording = autograd.is_recording()
        dense = spec.dense or (not training and spec.inference == "dense")
        if dense and not recording:  # no gradient to keep row-sparse: Dense's own op
            out = nd.FullyConnected(x, weight, bias, num_hidden=self._units, no_bias=bias is None)
            return self._activate(out)
        if not spec.dense:
            if self._needs_fit or not self._index.fitted:
                self.refresh_index()
            elif self._index.pending():
                self._index.sync(*self._host_params())
        xs = x.asnumpy().astype(np.float32)
        arrays = self._index.select(xs, lab if training else None, training, dense=dense)
        if training and recording:
            self._index.touch(arrays.rows)
        self.last_active_ids = arrays.ids
        ctx = x.context
        rows = nd.array(arrays.rows, ctx=ctx, dtype="int64")
        w_rows = nd.Embedding(
            rows, weight, input_dim=self._units, output_dim=self._in_units, sparse_grad=True
        )
        z = nd.dot(x, w_rows, transpose_b=True)
        if bias is not None:
            z = nd.broadcast_add(z, nd.take(bias, rows).reshape((1, -1)))
        b, m = arrays.ids.shape
        # values[b, j] = z[b, pos[b, j]] * valid[b, j], scattered to column ids[b, j]
        flat_src = (np.arange(b)[:, None] * z.shape[1] + arrays.pos).reshape(-1)
        values = nd.take(z.reshape((-1,)), nd.array(flat_src, ctx=ctx, dtype="int64")) * nd.array(
            arrays.valid.reshape(-1), ctx=ctx
        )
        coords = np.stack([np.repeat(np.arange(b), m), np.maximum(arrays.ids, 0).reshape(-1)])
        out = nd.scatter_nd(
            values, nd.array(coords, ctx=ctx, dtype="int64"), shape=(b, self._units)
        )
        return self._activate(out)

    def _activate(self, out: Any) -> Any:
        return out if self._activation is None else nd.Activation(out, act_type=self._activation)

    def __repr__(self) -> str:
        s = self._spec_args
        return (
            f"{type(self).__name__}({self._in_units or None} -> {self._units}, "
            f"active={s['active']}, family={s['family']!r}, k={s['k']}, l={s['l']}, "
            f"policy={s['policy']!r}, seed={s['seed']}, activation={self._activation})"
        )


def train_mlp(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    *,
    hidden: int | Sequence[int] = 1000,
    active: float = 0.05,
    family: str = "srp",
    k: int | None = None,
    l: int | None = None,  # noqa: E741
    policy: str = "topk",
    epochs: int = 1,
    batch_size: int = 128,
    lr: float = 1e-3,
    seed: int = 0,
    progress: bool = True,
    transform: str | None = "simple_lsh",
    selector_params: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train a Gluon MLP whose hidden layers are ``LSHDense`` (``nn.Dense`` when ``active=1.0``).

    ReLU hidden layers, a dense output layer, Adam through ``gluon.Trainer``. Returns
    ``accuracy``, ``train_seconds``, ``samples_per_second``.
    """
    from tqdm import tqdm

    mx.random.seed(seed)
    rng = np.random.default_rng(seed)
    x_train = np.ascontiguousarray(x_train, dtype=np.float32)
    y_train = np.asarray(y_train, dtype=np.int64)
    n_classes = int(max(y_train.max(), np.max(y_test))) + 1
    net = gluon.nn.Sequential()
    sizes = [hidden] if isinstance(hidden, int) else list(hidden)
    hashed: list[LSHDense] = []
    with net.name_scope():
        for i, h in enumerate(sizes):
            if active >= 1.0:
                net.add(gluon.nn.Dense(h, activation="relu", flatten=False))
            else:
                hashed.append(
                    LSHDense(
                        h,
                        active=active,
                        family=family,
                        k=k,
                        l=l,
                        policy=policy,
                        transform=transform,
                        seed=seed + i,
                        activation="relu",
                        selector_params=selector_params,
                    )
                )
                net.add(hashed[-1])
        net.add(gluon.nn.Dense(n_classes, flatten=False))
    net.initialize(mx.init.Xavier())
    trainer = gluon.Trainer(net.collect_params(), "adam", {"learning_rate": lr})
    loss_fn = gluon.loss.SoftmaxCrossEntropyLoss()
    n = len(y_train)
    steps_per_epoch = -(-n // batch_size)
    bar = tqdm(
        total=epochs * steps_per_epoch,
        disable=not progress,
        desc=f"mxnet active={active}",
        leave=False,
    )
    start = time.perf_counter()
    for _ in range(epochs):
        order = rng.permutation(n)
        for lo in range(0, n, batch_size):
            idx = order[lo : lo + batch_size]
            xb, yb = nd.array(x_train[idx]), nd.array(y_train[idx])
            with autograd.record():
                loss = loss_fn(net(xb), yb)
            loss.backward()
            trainer.step(len(idx))
            bar.update(1)
    nd.waitall()
    train_seconds = time.perf_counter() - start
    counts = mult_summary([layer._index for layer in hashed if layer._index is not None])
    bar.close()
    pred = net(nd.array(np.ascontiguousarray(x_test, dtype=np.float32))).argmax(axis=1).asnumpy()
    return {
        "accuracy": float((pred == np.asarray(y_test)).mean()),
        "train_seconds": train_seconds,
        "samples_per_second": epochs * n / train_seconds,
        **(counts if hashed else {}),
    }
