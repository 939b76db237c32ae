"""Projection-based hash families: SRP (SimHash), sparse SRP, cross-polytope, p-stable."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from lshcore.backend import Backend, get_backend
from lshcore.family import HashFamily
from lshcore.validation import is_sparse

__all__ = ["SRP", "SparseSRP", "CrossPolytope", "PStable"]


class _BackendFamily(HashFamily):
    """A family whose arrays live on a backend (``backend=`` name, default the default)."""

    def __init__(self, dim: int, k: int, l: int, seed: int = 0, *, backend: str | Backend | None = None, **params: Any):  # noqa: E741
        super().__init__(dim, k, l, seed=seed, **params)
        self.backend = get_backend(backend)
        self.xp = self.backend.xp
        self._rng = np.random.default_rng(self.seed)

    def config(self) -> dict[str, Any]:
        return super().config()  # the backend is a run-time choice, not part of the functions


def _pack_bits(bits: Any, k: int, l: int, xp: Any) -> Any:  # noqa: E741
    """(n, l*k) booleans -> (n, l) int64 codes, sub-hash j of a table in bit j."""
    weights = xp.asarray(1 << np.arange(k, dtype=np.int64))
    return bits.reshape(bits.shape[0], l, k).astype(np.int64) @ weights


class SRP(_BackendFamily):
    """Signed random projections (SimHash): bit = [w . x >= 0], w ~ N(0, I).

    Cosine-sensitive: one bit collides with probability 1 - theta/pi. Supports
    multiprobe (flip the bits whose projections are closest to zero).
    """

    name: ClassVar[str] = "srp"
    measure: ClassVar[str] = "cosine"
    supports_sparse: ClassVar[bool] = True

    def __init__(self, dim: int, k: int, l: int, seed: int = 0, **params: Any):  # noqa: E741
        super().__init__(dim, k, l, seed=seed, **params)
        proj = self._rng.standard_normal((self.dim, self.k * self.l)).astype(np.float32)
        self.projections = self.xp.asarray(proj)
        self.num_buckets = 2**self.k

    def _project(self, x: Any) -> Any:
        x = self.check_input(x, xp=self.xp if not is_sparse(x) else np)
        if is_sparse(x):
            return self.xp.asarray(np.asarray(x @ self.backend.to_numpy(self.projections)))
        return x @ self.projections

    def hash(self, x: Any) -> Any:
        return _pack_bits(self._project(x) >= 0, self.k, self.l, self.xp)

    def collision_probability(self, s: Any) -> np.ndarray:
        s = np.clip(np.asarray(s, dtype=np.float64), -1.0, 1.0)
        return (1.0 - np.arccos(s) / np.pi) ** self.k

    def probes(self, x: Any, n_probes: int) -> Any:
        xp = self.xp
        proj = self._project(x).reshape(-1, self.l, self.k)
        codes = _pack_bits(proj >= 0, self.k, self.l, xp)
        if n_probes <= 1:
            return codes[:, :, None]
        masks, mask_cost_index = _flip_masks(self.k, xp)
        margin = xp.abs(proj)  # (n, l, k): small margin = uncertain bit
        # cost of a flip set = sum of the margins of the bits it flips
        cost = margin @ mask_cost_index  # (n, l, M)
        n_extra = min(n_probes - 1, masks.shape[0])
        order = xp.argsort(cost, axis=2)[:, :, :n_extra]
        flipped = codes[:, :, None] ^ masks[order]
        out = xp.concatenate([codes[:, :, None], flipped], axis=2)
        if out.shape[2] < n_probes:  # more probes than flip sets: repeat the exact code
            pad = xp.repeat(codes[:, :, None], n_probes - out.shape[2], axis=2)
            out = xp.concatenate([out, pad], axis=2)
        return out

    def hash_cost(self, n: int, nnz: int | None = None) -> int:
        per_row = self.dim if nnz is None else nnz / max(n, 1)
        return int(round(n * per_row * self.k * self.l))


def _flip_masks(k: int, xp: Any) -> tuple[Any, Any]:
    """Every one- and two-bit flip of a k-bit code: masks (M,) and a (k, M) 0/1 matrix."""
    sets = [(i,) for i in range(k)] + [(i, j) for i in range(k) for j in range(i + 1, k)]
    masks = np.array([sum(1 << b for b in s) for s in sets], dtype=np.int64)
    member = np.zeros((k, len(sets)), dtype=np.float32)
    for m, s in enumerate(sets):
        member[list(s), m] = 1.0
    return xp.asarray(masks), xp.asarray(member)


class SparseSRP(SRP):
    """placeholder; replaced by the full implementation"""

    name: ClassVar[str] = "sparse_srp"


class CrossPolytope(SRP):
    """placeholder; replaced by the full implementation"""

    name: ClassVar[str] = "crosspolytope"


class PStable(SRP):
    """placeholder; replaced by the full implementation"""

    name: ClassVar[str] = "pstable"
    measure: ClassVar[str] = "l2"
