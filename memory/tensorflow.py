"""A Keras layer around :class:`~lshcore.memory.core.LSHMemory` (imports tensorflow and keras).

``MemoryLayer()([embeddings, labels])`` returns the per-example margin loss (B,),
differentiable with respect to ``embeddings``: the memory picks the positive and
negative slots outside the graph and their keys enter as constants. Called with
embeddings alone it returns the predicted labels (B,) int64. In training mode the
memory is written (the published update). Eagerly the memory is called directly (its
errors reach the caller unchanged); inside ``tf.function``/``model.fit`` through
``tf.numpy_function``.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from typing import Any  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from lshcore.errors import InputError  # noqa: E402
from lshcore.memory.core import LSHMemory, selected_keys  # noqa: E402

__all__ = ["MemoryLayer"]


@keras.saving.register_keras_serializable(package="lshcore")
class MemoryLayer(keras.layers.Layer):
    """Keras layer holding an LSHMemory (built from the arguments, or ``memory=``).

    The config records the memory's settings, not its contents: a layer rebuilt from
    its config starts with an empty memory (save the memory itself with ``memory.save``).
    """

    def __init__(
        self,
        key_dim: int | None = None,
        size: int = 8192,
        k: int = 256,
        alpha: float = 0.1,
        exact: bool = False,
        index: dict[str, Any] | None = None,
        seed: int = 0,
        age_noise: float = 8.0,
        memory: LSHMemory | None = None,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        if memory is None:
            if key_dim is None:
                raise InputError("key_dim: give the key size, or an LSHMemory as memory=")
            memory = LSHMemory(
                key_dim,
                size,
                k=k,
                alpha=alpha,
                index=index,
                exact=exact,
                seed=seed,
                age_noise=age_noise,
            )
        elif not isinstance(memory, LSHMemory):
            raise InputError(f"memory: expected an LSHMemory, got {type(memory).__name__}")
        self.memory = memory

    def get_config(self) -> dict[str, Any]:
        m = self.memory
        config = super().get_config()
        config.update(
            key_dim=m.key_dim,
            size=m.size,
            k=m.k,
            alpha=m.alpha,
            exact=m.exact,
            index=None if m.exact else m._search.config(),
            seed=m.seed,
            age_noise=m.age_noise,
        )
        return config

    def _select_np(self, q: np.ndarray, labels: np.ndarray, write: bool) -> tuple[np.ndarray, ...]:
        selection = self.memory.select(q, labels)
        pos, neg, has_neg = selected_keys(self.memory, selection)
        if write:
            self.memory.apply(selection)
        return pos, neg, has_neg, selection.predicted

    def call(self, inputs: Any, training: bool | None = None) -> tf.Tensor:
        if isinstance(inputs, (list, tuple)):
            if len(inputs) != 2:
                raise InputError(
                    f"inputs: expected [embeddings, labels], got {len(inputs)} tensors"
                )
            embeddings, labels = inputs
        else:
            embeddings, labels = inputs, None
        embeddings = tf.convert_to_tensor(embeddings)
        q = tf.math.l2_normalize(embeddings, axis=1)
        if labels is None:
            pred = tf.numpy_function(
                lambda x: self.memory.query(x).values,
                [tf.stop_gradient(q)],
                tf.int64,
                stateful=True,
            )
            pred.set_shape(embeddings.shape[:1])
            return pred
        write = bool(training)
        if tf.executing_eagerly():
            pos, neg, has_neg, _ = self._select_np(q.numpy(), np.asarray(labels), write)
        else:
            pos, neg, has_neg, _ = tf.numpy_function(
                lambda a, b: self._select_np(a, b, write),
                [tf.stop_gradient(q), tf.cast(labels, tf.int64)],
                [tf.float32, tf.float32, tf.float32, tf.int64],
                stateful=True,
            )
            pos.set_shape(q.shape)
            neg.set_shape(q.shape)
            has_neg.set_shape(q.shape[:1])
        dtype = q.dtype
        s_pos = tf.reduce_sum(q * tf.cast(pos, dtype), axis=1)
        s_neg = tf.reduce_sum(q * tf.cast(neg, dtype), axis=1)
        return tf.nn.relu(s_neg - s_pos + self.memory.alpha) * tf.cast(has_neg, dtype)

    def compute_output_shape(self, input_shape: Any) -> tuple[Any, ...]:
        first = (
            input_shape[0]
            if isinstance(input_shape, (list, tuple)) and isinstance(input_shape[0], (list, tuple))
            else input_shape
        )
        return (first[0],)
