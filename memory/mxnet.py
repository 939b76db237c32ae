"""A Gluon block around :class:`~lshcore.memory.core.LSHMemory` (imports mxnet).

``MemoryBlock(memory)(embeddings, labels)`` returns the per-example margin loss (B,)
as an NDArray, differentiable with respect to ``embeddings`` under ``autograd.record()``:
the memory picks the positive and negative slots and their keys enter as constants.
Without labels it returns the predicted labels (B,) int64. The memory is written
inside ``autograd.record()`` (training mode), or when the third argument ``update`` is
True (Gluon blocks take positional arguments only: ``block(x, labels, True)``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

# mxnet through the adapter, which restores numpy.bool (mxnet 1.9 needs it) before import
from lshcore.adapters.mxnet import autograd, gluon, mx
from lshcore.errors import InputError
from lshcore.memory.core import LSHMemory, selected_keys

__all__ = ["MemoryBlock"]


class MemoryBlock(gluon.Block):
    """Gluon block holding an LSHMemory (not hybridizable: the search runs in NumPy)."""

    def __init__(self, memory: LSHMemory, **kwargs: Any):
        super().__init__(**kwargs)
        if not isinstance(memory, LSHMemory):
            raise InputError(f"memory: expected an LSHMemory, got {type(memory).__name__}")
        self.memory = memory

    def forward(
        self, embeddings: mx.nd.NDArray, labels: Any = None, update: bool | None = None
    ) -> mx.nd.NDArray:
        if not isinstance(embeddings, mx.nd.NDArray) or embeddings.ndim != 2:
            raise InputError(
                f"embeddings: expected a 2-D NDArray (B, {self.memory.key_dim}), got "
                f"{getattr(embeddings, 'shape', type(embeddings).__name__)}"
            )
        q = mx.nd.L2Normalization(embeddings, mode="instance")
        ctx = embeddings.context
        if labels is None:
            return mx.nd.array(self.memory.query(q.asnumpy()).values, ctx=ctx, dtype="int64")
        if isinstance(labels, mx.nd.NDArray):
            labels = labels.asnumpy()
            if labels.dtype.kind == "f" and np.all(labels == np.round(labels)):
                labels = labels.astype(np.int64)  # NDArrays default to float32
        selection = self.memory.select(q.asnumpy(), labels)
        pos, neg, has_neg = selected_keys(self.memory, selection)
        dtype = embeddings.dtype
        s_pos = mx.nd.sum(q * mx.nd.array(pos, ctx=ctx, dtype=dtype), axis=1)
        s_neg = mx.nd.sum(q * mx.nd.array(neg, ctx=ctx, dtype=dtype), axis=1)
        loss = mx.nd.relu(s_neg - s_pos + self.memory.alpha) * mx.nd.array(
            has_neg, ctx=ctx, dtype=dtype
        )
        if autograd.is_training() if update is None else update:
            self.memory.apply(selection)
        return loss
