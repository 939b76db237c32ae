"""PyTorch module around :class:`~lshcore.memory.core.LSHMemory`.

The memory selects, without gradients, the best slot holding the right label and the
best holding a wrong one; their keys enter the graph as constants and the margin loss
``relu(q . k_neg - q . k_pos + alpha)`` is computed with torch ops on the normalized
query, so the embedding network upstream learns through the memory.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from lshcore.errors import InputError
from lshcore.memory.core import LSHMemory, Selection, selected_keys

__all__ = ["MemoryModule", "MemoryOutput"]


class MemoryOutput(NamedTuple):
    """``loss`` scalar tensor (mean over the batch; None without labels), ``predicted``
    (B,) int64 labels of the nearest slots (-1 when none), ``similarity`` (B,) their
    cosines, ``selection`` the memory's selection (None without labels)."""

    loss: torch.Tensor | None
    predicted: torch.Tensor
    similarity: torch.Tensor
    selection: Selection | None


class MemoryModule(nn.Module):
    """``forward(embeddings (B, key_dim), labels (B,) or None)`` -> :class:`MemoryOutput`.

    With labels, the loss is differentiable with respect to ``embeddings``; the memory
    is written (the published update) when ``update`` is True, or by default while the
    module is in training mode.
    """

    def __init__(self, memory: LSHMemory):
        super().__init__()
        if not isinstance(memory, LSHMemory):
            raise InputError(f"memory: expected an LSHMemory, got {type(memory).__name__}")
        self.memory = memory

    def extra_repr(self) -> str:
        m = self.memory
        return f"key_dim={m.key_dim}, size={m.size}, k={m.k}, alpha={m.alpha}, search={m.search!r}"

    def forward(
        self, embeddings: torch.Tensor, labels: Any = None, update: bool | None = None
    ) -> MemoryOutput:
        if not isinstance(embeddings, torch.Tensor) or embeddings.ndim != 2:
            raise InputError(
                f"embeddings: expected a 2-D tensor (B, {self.memory.key_dim}), got "
                f"{getattr(embeddings, 'shape', type(embeddings).__name__)}"
            )
        q = F.normalize(embeddings, dim=1)
        q_np = q.detach().cpu().numpy()
        if labels is None:
            res = self.memory.query(q_np)
            return MemoryOutput(
                None,
                torch.from_numpy(res.values).to(embeddings.device),
                torch.from_numpy(res.similarities).to(embeddings.device),
                None,
            )
        if isinstance(labels, torch.Tensor):
            labels = labels.detach().cpu().numpy()
        selection = self.memory.select(q_np, labels)
        pos, neg, has_neg = selected_keys(self.memory, selection)
        dev, dt = embeddings.device, embeddings.dtype
        s_pos = (q * torch.as_tensor(pos, device=dev, dtype=dt)).sum(dim=1)
        s_neg = (q * torch.as_tensor(neg, device=dev, dtype=dt)).sum(dim=1)
        per_row = torch.relu(s_neg - s_pos + self.memory.alpha) * torch.as_tensor(
            has_neg, device=dev, dtype=dt
        )
        if self.training if update is None else update:
            self.memory.apply(selection)
        return MemoryOutput(
            per_row.mean(),
            torch.from_numpy(selection.predicted).to(embeddings.device),
            torch.from_numpy(selection.similarity).to(embeddings.device),
            selection,
        )
