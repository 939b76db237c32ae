"""The hashed layer as a native Keras layer (imports tensorflow and keras, no other framework).

``LSHDense`` mirrors ``keras.layers.Dense``. Selection runs in Python through
``tf.py_function`` (eagerly, also inside ``tf.function`` and ``model.fit``); the active
outputs are computed with ``tf.gather`` of the active kernel rows inside the
differentiated computation, so the kernel and bias gradients are ``tf.IndexedSlices``
over the active rows and Keras optimizers apply them with ``scatter`` updates (plain
SGD touches only those rows; Keras 3's Adam densifies the slices for its moments).

The kernel is stored as ``(units, input_dim)``, one row per output neuron (the
transpose of ``Dense.kernel``): gradients of a gather are row slices only along axis 0.

On a GPU, when the selector picks on the device, the ``tf.py_function`` hands it DLPack
views of the input and labels and returns the ids, rows, positions and mask as tensors
on the input's device (``union_arrays`` with the backend's ``xp``, then
``tf.experimental.dlpack.from_dlpack``): only the labels are read on the host (their
range check).
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import functools  # noqa: E402
import json  # noqa: E402
from typing import Any  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from lshcore.adapters._common import (  # noqa: E402
    ActiveArrays,
    HashedLayerMixin,
    check_labels,
    framework_arrays,
    split_selection_options,
)
from lshcore.adapters._driver import MLPFramework, make_train_mlp  # noqa: E402
from lshcore.core.dlpack import from_backend, to_backend  # noqa: E402
from lshcore.core.validation import check_int  # noqa: E402
from lshcore.errors import InputError  # noqa: E402
from lshcore.training.params import SelectionParams  # noqa: E402

__all__ = ["LSHDense", "lsh_softmax_cross_entropy", "train_mlp"]

_META_KEY = "lsh_meta"


@keras.saving.register_keras_serializable(package="lshcore")
class LSHDense(HashedLayerMixin, keras.layers.Layer):
    """A dense layer that computes only the units an LSH index selects per input.

    ``call(inputs, training=None, labels=None)`` returns ``(batch, units)``, zero (before
    the activation) outside each input's active set; in training, ``labels (batch,)``
    are always active. Selection: ``params`` (a
    :class:`~lshcore.training.params.SelectionParams`) and/or its settings as keywords
    (``active=0.05``, ``family``, ``k``, ``l``, ``policy``, ``transform``, ``seed``,
    ``rehash``, ...; family parameters in ``selector_params``), keywords over ``params``;
    other keywords go to ``keras.layers.Layer``. ``active=1.0`` is exactly
    ``keras.layers.Dense`` (with the kernel transposed). Evaluation hashes too unless
    ``inference="dense"``. The index follows the weights: after a training call, the next
    call hands the trained rows to the selector (whose schedule rehashes or rebuilds);
    ``set_weights`` and loading a saved model rebuild the index; ``refresh_index()``
    rebuilds it on demand.
    """

    _host_fallback = True  # a GPU tensor without a GPU backend selects on host copies

    def __init__(
        self,
        units: int,
        params: SelectionParams | dict[str, Any] | None = None,
        *,
        backend: str | None = None,
        inference: str = "sparse",
        activation: Any = None,
        use_bias: bool = True,
        kernel_initializer: Any = "glorot_uniform",
        bias_initializer: Any = "zeros",
        selector_params: dict[str, Any] | None = None,
        **kwargs: Any,
    ):
        options, layer_kwargs = split_selection_options(kwargs)
        super().__init__(**layer_kwargs)
        self.units = check_int(units, "units", low=1)
        options = {**dict(selector_params or {}), **options}
        self._init_hashing(self.units, None, params, options, backend=backend, inference=inference)
        self.activation = keras.activations.get(activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.supports_jit = False  # selection is Python (tf.py_function): no XLA

    def build(self, input_shape: Any) -> None:
        in_dim = input_shape[-1]
        if in_dim is None:
            raise InputError("LSHDense: the last dimension of the input must be known")
        in_dim = int(in_dim)
        self._bind_input(in_dim)
        self.kernel = self.add_weight(
            name="kernel", shape=(self.units, in_dim), initializer=self._transposed_init(in_dim)
        )
        self.bias = (
            self.add_weight(name="bias", shape=(self.units,), initializer=self.bias_initializer)
            if self.use_bias
            else None
        )
        self.input_spec = keras.layers.InputSpec(min_ndim=2, axes={-1: in_dim})
        self._needs_fit = True

    def _transposed_init(self, in_dim: int) -> Any:
        """Dense's initializer drawn in Dense's (in, units) shape, then transposed."""
        base = self.kernel_initializer

        def init(shape: Any, dtype: Any = None) -> Any:
            return tf.transpose(base((in_dim, self.units), dtype=dtype))

        return init

    # -- the index ---------------------------------------------------------------------
    def _weights_numpy(self) -> tuple[np.ndarray, np.ndarray | None]:
        return self.kernel.numpy(), None if self.bias is None else self.bias.numpy()

    def _weight_tensors(self) -> tuple[Any, Any]:
        """The kernel ``(units, input_dim)`` (already the selector's (n_out, n_in)) and
        bias as eager tensors: reading a variable shares its buffer, so on a GPU the
        selector's DLPack views are the variables' own memory (a snapshot: TensorFlow
        copies a buffer still in use before updating it in place)."""
        kernel = tf.convert_to_tensor(self.kernel)
        return kernel, None if self.bias is None else tf.convert_to_tensor(self.bias)

    def set_weights(self, weights: Any) -> None:
        super().set_weights(weights)
        self._needs_fit = True

    def save_own_variables(self, store: Any) -> None:
        """The variables, then the index (codes, schedule, tie-break counters) as arrays."""
        super().save_own_variables(store)
        meta, arrays = self._index_state()
        if meta:
            store[_META_KEY] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
            for key, value in arrays.items():
                value = np.asarray(value)
                store[f"lsh_{key}"] = value.astype(np.uint8) if value.dtype == bool else value

    def load_own_variables(self, store: Any) -> None:
        """Variables as saved; the index restored when saved, else rebuilt on next call."""
        keys = set(store.keys())
        variables = self._trainable_variables + self._non_trainable_variables
        for i, variable in enumerate(variables):
            variable.assign(store[f"{i}"])
        self._needs_fit = True
        if _META_KEY in keys and self._index is not None:
            meta = json.loads(np.asarray(store[_META_KEY]).tobytes().decode())
            arrays = {
                k[4:]: np.asarray(store[k]) for k in keys if k.startswith("lsh_") and k != _META_KEY
            }
            self._restore_index(meta, arrays)

    def _select_py(self, x: Any, labels: Any, training: bool) -> list[Any]:
        """Runs eagerly (``tf.py_function``): sync the index, select, return the arrays
        ``[ids, rows, pos, valid]``: NumPy on the host path; tensors on ``x``'s device
        when the selector picks there (:meth:`_select_on_device`). The labels (B,) are
        read on the host for their range check either way (tag ``labels``)."""
        self._bind_input(self._bound_index().spec.n_in, x)  # a GPU tensor selects cupy
        self._follow_weights()
        batch = int(x.shape[0])
        lab = check_labels(labels.numpy(), batch, self.units) if labels.shape[0] else None
        if self._selects_on_device(x):
            return self._select_on_device(x, labels, lab, training)
        xs = np.asarray(x.numpy(), dtype=np.float32)
        arrays = self._select_active(xs, lab, training, dense=False, mark=training)
        return [arrays.ids, arrays.rows, arrays.pos, arrays.valid]

    def _select_on_device(
        self, x: Any, labels: Any, lab: np.ndarray | None, training: bool
    ) -> list[Any]:
        """:meth:`_select_py` with the selector picking on the device: ``x`` and the
        labels (B,) int64 reach it as DLPack views, and the ids, rows, positions and mask
        come back as tensors on ``x``'s device (no host copy of the input or the ids)."""
        backend = self.selector.backend
        dev_labels = None
        if lab is not None and training:
            dev_labels = to_backend(tf.reshape(labels, (-1, 1)), backend, "labels")
        xs = x if x.dtype == tf.float32 else tf.cast(x, tf.float32)  # as the host path reads it
        arrays = self._select_active_device(xs, lab, dev_labels, training, mark=training)
        out = framework_arrays(arrays, x)
        self.last_active_ids = out.ids
        return [out.ids, out.rows, out.pos, out.valid]

    # -- call ------------------------------------------------------------------------
    def call(
        self, inputs: Any, training: Any = None, labels: Any = None, return_active: bool = False
    ) -> Any:
        x = tf.convert_to_tensor(inputs)
        if not x.dtype.is_floating:
            raise InputError(f"LSHDense: inputs must be floating point, got {x.dtype.name}")
        x = tf.cast(x, self.compute_dtype)
        if x.shape.rank != 2:
            raise InputError(f"LSHDense: inputs must have shape (batch, features), got {x.shape}")
        spec = self.spec
        is_training = bool(training) if training is not None else False
        if spec.dense or (not is_training and spec.inference == "dense"):
            z = tf.matmul(x, self.kernel, transpose_b=True)
            if self.bias is not None:
                z = z + self.bias
            if return_active:
                ids = tf.broadcast_to(
                    tf.range(self.units, dtype=tf.int64), tf.shape(z, out_type=tf.int64)
                )
                return ids, self.activation(z)
            return self.activation(z)
        if labels is not None and tf.executing_eagerly():  # fail early, with our error
            check_labels(np.asarray(labels), int(x.shape[0]), self.units)
        lab = tf.zeros((0,), tf.int64) if labels is None else tf.cast(labels, tf.int64)
        # the training flag is fixed when traced: a Python constant of the function, not an
        # input tensor (which would be read back from the device)
        ids, rows, pos, valid = tf.py_function(
            functools.partial(self._select_py, training=is_training),
            [tf.stop_gradient(x), tf.reshape(lab, (-1,))],
            [tf.int64, tf.int64, tf.int64, tf.float32],
        )
        ids.set_shape((None, None))
        rows.set_shape((None,))
        pos.set_shape((None, None))
        valid.set_shape((None, None))
        w_rows = tf.gather(self.kernel, rows)  # its gradient: IndexedSlices over rows
        z = tf.matmul(x, w_rows, transpose_b=True)
        if self.bias is not None:
            z = z + tf.gather(self.bias, rows)
        values = tf.gather(z, pos, batch_dims=1) * tf.cast(valid, z.dtype)
        if self._batch_rerank:  # each row keeps its m best of the shared block
            keep = tf.py_function(
                functools.partial(self._keep_py, training=is_training),
                [tf.stop_gradient(values), ids, valid, tf.reshape(lab, (-1,))],
                tf.float32,
            )
            keep.set_shape((None, None))
            values = values * tf.cast(keep, values.dtype)
        if return_active:
            return ids, self.activation(values) * tf.cast(valid, z.dtype)
        batch = tf.shape(x)[0]
        width = tf.shape(ids)[1]
        row_idx = tf.repeat(tf.range(batch, dtype=tf.int64), width)
        coords = tf.stack([row_idx, tf.reshape(tf.maximum(ids, 0), (-1,))], axis=1)
        shape = tf.stack([tf.cast(batch, tf.int64), tf.constant(self.units, tf.int64)])
        out = tf.scatter_nd(coords, tf.reshape(values, (-1,)), shape)
        out.set_shape((x.shape[0], self.units))
        return self.activation(out)

    def _keep_py(self, values: Any, ids: Any, valid: Any, lab: Any, training: bool) -> Any:
        """The batch_rerank mask of :meth:`_rerank_keep` (eager, inside tf.py_function);
        all ones when no re-rank applies. On the device when the selector picks there."""
        if self._selects_on_device(values):
            return self._keep_on_device(values, ids, valid, lab, training)
        arrays = ActiveArrays(ids=ids.numpy(), rows=np.zeros(0, np.int64), pos=ids.numpy(),
                              valid=valid.numpy())  # fmt: skip
        labels = lab.numpy() if lab.shape[0] else None
        keep = self._rerank_keep(values.numpy(), arrays, labels, training)
        return np.ones(arrays.valid.shape, np.float32) if keep is None else keep

    def _keep_on_device(self, values: Any, ids: Any, valid: Any, lab: Any, training: bool) -> Any:
        """:meth:`_keep_py` on the device: ``values``, ``ids``, ``valid`` (B, w) and the
        labels (B,) go to :meth:`_rerank_keep_device` as DLPack views; the mask (B, w)
        float32 comes back as a tensor there."""
        backend = self.selector.backend
        arrays = ActiveArrays(ids=to_backend(ids, backend, "ids"), rows=None, pos=None,
                              valid=to_backend(valid, backend, "valid"))  # fmt: skip
        dev_labels = None
        if training and lab.shape[0]:
            dev_labels = to_backend(tf.reshape(lab, (-1, 1)), backend, "labels")
        z = to_backend(tf.cast(values, tf.float32), backend, "values")
        keep = self._rerank_keep_device(z, arrays, dev_labels)
        return tf.ones_like(valid) if keep is None else from_backend(keep, values)

    def compute_output_shape(self, input_shape: Any) -> tuple[Any, ...]:
        return (*tuple(input_shape)[:-1], self.units)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            {
                "units": self.units,
                **self._spec_template.config(),
                "activation": keras.activations.serialize(self.activation),
                "use_bias": self.use_bias,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "bias_initializer": keras.initializers.serialize(self.bias_initializer),
            }
        )
        return config


def lsh_softmax_cross_entropy(ids: Any, values: Any, labels: Any) -> Any:
    """Mean softmax cross-entropy over each input's active outputs.

    ``ids (B, m)`` (-1 padding) and ``values (B, m)`` come from
    ``LSHDense(...)(x, training=True, labels=labels, return_active=True)``; each row's
    label must be among its ids (the layer forces it in training).
    """
    labels = tf.reshape(tf.cast(labels, tf.int64), (-1, 1))
    hit = tf.cast(tf.equal(ids, labels), values.dtype)
    tf.debugging.assert_positive(
        tf.reduce_sum(hit, 1), message="labels: a label is not in its row's active set"
    )
    logits = tf.where(ids >= 0, values, tf.constant(-1e30, values.dtype))
    logp = tf.nn.log_softmax(logits, axis=1)
    return -tf.reduce_mean(tf.reduce_sum(logp * hit, 1) / tf.reduce_sum(hit, 1))


class _KerasMLP(MLPFramework):
    """``train_mlp``'s model in Keras: a ``Sequential`` trained batch by batch."""

    name = "tensorflow"

    def build(
        self, n_in: int, sizes: list[int], n_classes: int, params: list[SelectionParams] | None
    ) -> list[HashedLayerMixin]:
        keras.utils.set_random_seed(self.seed)
        hidden = [
            keras.layers.Dense(h, activation="relu")
            if params is None
            else LSHDense(h, params=params[i], activation="relu")
            for i, h in enumerate(sizes)
        ]
        self.model = keras.Sequential(
            [keras.Input(shape=(n_in,)), *hidden, keras.layers.Dense(n_classes)]
        )
        self.model.compile(
            optimizer=keras.optimizers.Adam(self.lr),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            jit_compile=False,  # the hashed layers select in Python (tf.py_function)
        )
        return [layer for layer in hidden if isinstance(layer, LSHDense)]

    def train_step(self, x: np.ndarray, y: np.ndarray) -> None:
        self.model.train_on_batch(x, y)

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.model.predict_on_batch(x))


train_mlp = make_train_mlp(_KerasMLP)
