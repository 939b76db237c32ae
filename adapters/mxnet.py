"""The hashed layer as a native Gluon block (imports mxnet, and no other framework).

``LSHDense`` mirrors ``gluon.nn.Dense`` (weight ``(units, in_units)``, deferred
initialization when ``in_units=0``). The active rows are gathered with
``nd.Embedding(..., sparse_grad=True)``, so the weight gradient is ``row_sparse`` and
``gluon.Trainer`` updates only those rows (lazily, for sgd/adam).

On a GPU context, when the selector picks on the device, the forward hands it DLPack
views of the input and labels and builds the ids, rows, positions, mask and the
gather/scatter indexes there with the backend's ``xp``, as NDArrays through
``mx.nd.from_dlpack``: only the labels are read on the host (their range check).

mxnet 1.9.1 still reads ``numpy.bool``, removed in numpy 1.24: this module restores
the alias before importing mxnet. Importing mxnet drops torch to one thread
(``torch.set_num_threads`` again afterwards if both are used).
"""

from __future__ import annotations

from typing import Any

import numpy as np

if "bool" not in np.__dict__:  # mxnet 1.9.1 uses np.bool (numpy 2 has it again)
    np.bool = bool  # type: ignore[attr-defined]

import mxnet as mx  # noqa: E402
from mxnet import autograd, gluon, nd  # noqa: E402

from lshcore.adapters._common import (  # noqa: E402
    HashedLayerMixin,
    check_labels,
    split_selection_options,
)
from lshcore.adapters._driver import MLPFramework, make_train_mlp  # noqa: E402
from lshcore.core.dlpack import from_backend, to_backend  # noqa: E402
from lshcore.core.validation import check_int  # noqa: E402
from lshcore.errors import InputError  # noqa: E402
from lshcore.training.params import SelectionParams  # noqa: E402

__all__ = ["LSHDense", "train_mlp"]


class LSHDense(HashedLayerMixin, gluon.Block):
    """A dense layer that computes only the units an LSH index selects per input.

    ``forward(x, labels=None)`` returns ``(batch, units)``, zero (before the activation)
    outside each input's active set; in training (inside ``autograd.record()``),
    ``labels (batch,)`` are always active. Selection: ``params`` (a
    :class:`~lshcore.training.params.SelectionParams`) and/or its settings as keywords
    (``active=0.05``, ``family``, ``k``, ``l``, ``policy``, ``transform``, ``seed``,
    ``rehash``, ...; family parameters in ``selector_params``), keywords over ``params``;
    other keywords (``prefix``) go to ``gluon.Block``. ``active=1.0`` is exactly
    ``gluon.nn.Dense``. Evaluation hashes too unless ``inference="dense"``. The index
    follows the weights: after a recorded forward, the next forward hands the trained rows
    to the selector (whose schedule rehashes or rebuilds); ``load_parameters`` rebuilds
    the index; ``refresh_index()`` rebuilds it on demand (call it after editing weights
    by hand).
    """

    _host_fallback = True  # a GPU array without a GPU backend selects on host copies
    _input_ctx: Any = None  # the context of the last hashed input (None: the first one)

    def __init__(
        self,
        units: int,
        in_units: int = 0,
        params: SelectionParams | None = None,
        *,
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
        options, block_kwargs = split_selection_options(kwargs)
        super().__init__(**block_kwargs)
        self._units = check_int(units, "units", low=1)
        self._in_units = check_int(in_units, "in_units", low=0)
        options = {**dict(selector_params or {}), **options}
        self._init_hashing(
            self._units, self._in_units or None, params, options, backend=backend, inference=inference
        )  # fmt: skip
        self._activation = activation
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

    def _finish_init(self, in_units: int) -> None:
        if self._in_units == 0:
            self._in_units = in_units
        if self.weight._deferred_init:
            self.weight.shape = (self._units, in_units)
            self.weight._finish_deferred_init()
        if self.bias is not None and self.bias._deferred_init:
            self.bias._finish_deferred_init()
        self._bind_input(self._in_units)

    # -- the index ---------------------------------------------------------------------
    def _weights_numpy(self) -> tuple[np.ndarray, np.ndarray | None]:
        w = self.weight.data().asnumpy()
        return w, None if self.bias is None else self.bias.data().asnumpy()

    def _weight_tensors(self) -> tuple[Any, Any]:
        """The weight ``(units, in_units)`` and bias NDArrays themselves (no copy), on the
        context of the last hashed input (Gluon's default before one): on a GPU the
        selector views them through DLPack (``to_dlpack_for_read`` waits for pending
        writes first; later in-place updates show through the view, as with torch)."""
        ctx = self._input_ctx
        weight = self.weight.data(ctx)
        return weight, None if self.bias is None else self.bias.data(ctx)

    def load_parameters(self, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        super().load_parameters(*args, **kwargs)
        self._needs_fit = True

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
        spec = self.spec
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
            self._input_ctx = x.context  # the copy of the parameters a sync views
            self._bind_input(self._in_units, x)  # a GPU array selects cupy (see _common)
            self._follow_weights()
        if not dense and self._selects_on_device(x):
            return self._forward_on_device(x, labels, lab, training, recording, weight, bias)
        xs = x.asnumpy().astype(np.float32)
        arrays = self._select_active(xs, lab, training, dense=dense, mark=training and recording)
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
        if self._batch_rerank:  # each row keeps its m best of the shared block
            keep = self._rerank_keep(values.asnumpy().reshape(b, m), arrays, lab, training)
            if keep is not None:
                values = values * nd.array(keep.reshape(-1), ctx=ctx, dtype=values.dtype)
        coords = np.stack([np.repeat(np.arange(b), m), np.maximum(arrays.ids, 0).reshape(-1)])
        out = nd.scatter_nd(
            values, nd.array(coords, ctx=ctx, dtype="int64"), shape=(b, self._units)
        )
        return self._activate(out)

    def _forward_on_device(
        self,
        x: Any,
        labels: Any,
        lab: np.ndarray | None,
        training: bool,
        recording: bool,
        weight: Any,
        bias: Any,
    ) -> Any:
        """:meth:`forward` with the selector picking on the device: ``x`` and the labels
        reach it as DLPack views; the ids, their union and the gather/scatter indexes are
        computed there with the backend's ``xp`` and come back as NDArrays on ``x``'s
        context (``mx.nd.from_dlpack``): no host copy of the input, ids or values (the
        labels (B,) were read on the host for their check)."""
        backend = self.selector.backend
        xp = backend.xp
        dev_labels = None
        if lab is not None and training:
            if isinstance(labels, nd.NDArray):  # (B, 1) int64 made on x's context: a view
                on_ctx = labels.as_in_context(x.context).astype("int64").reshape((-1, 1))
                dev_labels = to_backend(on_ctx, backend, "labels")
            else:  # host labels go up once (select_device and the re-rank share them)
                dev_labels = backend.to_device(lab.reshape(-1, 1), "labels")
        xs = x if x.dtype == np.float32 else x.astype("float32")  # as the host path reads it
        mark = training and recording
        arrays = self._select_active_device(xs, lab, dev_labels, training, mark=mark)
        b, m = arrays.ids.shape
        width = arrays.rows.shape[0]
        # values[b, j] = z[b, pos[b, j]] * valid[b, j], scattered to column ids[b, j]: the
        # flat gather index into z (B, U) and the scatter's coordinates, made there too
        flat_src = (xp.arange(b, dtype=xp.int64)[:, None] * width + arrays.pos).reshape(-1)
        row_idx = xp.repeat(xp.arange(b, dtype=xp.int64), m)
        coords = xp.stack([row_idx, xp.maximum(arrays.ids, 0).reshape(-1)])
        ids, rows, valid = (from_backend(a, x) for a in (arrays.ids, arrays.rows, arrays.valid))
        self.last_active_ids = ids
        w_rows = nd.Embedding(
            rows, weight, input_dim=self._units, output_dim=self._in_units, sparse_grad=True
        )
        z = nd.dot(x, w_rows, transpose_b=True)
        if bias is not None:
            z = nd.broadcast_add(z, nd.take(bias, rows).reshape((1, -1)))
        values = nd.take(z.reshape((-1,)), from_backend(flat_src, x))
        values = values * valid.reshape((-1,)).astype(values.dtype)
        if self._batch_rerank:  # each row keeps its m best of the shared block
            seen = values.detach().reshape((b, m)).astype("float32")
            keep = self._rerank_keep_device(to_backend(seen, backend, "values"), arrays, dev_labels)
            if keep is not None:
                values = values * from_backend(keep.reshape(-1), x).astype(values.dtype)
        out = nd.scatter_nd(values, from_backend(coords, x), shape=(b, self._units))
        return self._activate(out)

    def _activate(self, out: Any) -> Any:
        return out if self._activation is None else nd.Activation(out, act_type=self._activation)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self._in_units or None} -> {self._units}, "
            f"{self._spec_template.describe()}, activation={self._activation})"
        )


class _GluonMLP(MLPFramework):
    """``train_mlp``'s model in Gluon: a ``Sequential`` and a ``gluon.Trainer``."""

    name = "mxnet"

    def build(
        self, n_in: int, sizes: list[int], n_classes: int, params: list[SelectionParams] | None
    ) -> list[HashedLayerMixin]:
        mx.random.seed(self.seed)
        self.net = gluon.nn.Sequential()
        hashed: list[LSHDense] = []
        with self.net.name_scope():
            for i, h in enumerate(sizes):
                if params is None:
                    self.net.add(gluon.nn.Dense(h, activation="relu", flatten=False))
                else:
                    hashed.append(LSHDense(h, params=params[i], activation="relu"))
                    self.net.add(hashed[-1])
            self.net.add(gluon.nn.Dense(n_classes, flatten=False))
        self.net.initialize(mx.init.Xavier())
        self.trainer = gluon.Trainer(self.net.collect_params(), "adam", {"learning_rate": self.lr})
        self.loss = gluon.loss.SoftmaxCrossEntropyLoss()
        return list(hashed)

    def train_step(self, x: np.ndarray, y: np.ndarray) -> None:
        with autograd.record():
            loss = self.loss(self.net(nd.array(x)), nd.array(y))
        loss.backward()
        self.trainer.step(len(x))

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.net(nd.array(x)).asnumpy()

    def wait(self) -> None:
        nd.waitall()  # mxnet's engine runs asynchronously: time the work, not the queueing


train_mlp = make_train_mlp(_GluonMLP)
