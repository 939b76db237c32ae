"""Example lshcore plugin: classic MinHash (Broder 1997) with k*l independent permutations.

The input is read as the set of its non-zero coordinates. Sub-hash ``j`` is the smallest
position the set's members take in the random permutation ``j``; two sets with Jaccard
similarity J share it with probability exactly J, so a table (k sub-hashes) collides
with probability J**k. lshcore's built-in ``minhash`` (densified one-permutation hashing)
is the fast version of the same idea; this one is short and exact.
"""

from __future__ import annotations

from typing import Any

import numpy as np

import lshcore


class ClassicMinHash(lshcore.HashFamily):
    """MinHash with ``k * l`` permutations; codes in ``[0, (dim + 1) ** k)``."""

    name = "classic_minhash"
    measure = "jaccard"
    supports_sparse = True

    def __init__(self, dim: int, k: int, l: int, seed: int = 0):  # noqa: E741
        super().__init__(dim, k, l, seed=seed)
        if (self.dim + 1) ** self.k > 2**63 - 1:
            raise lshcore.ConfigError(f"k={k}: (dim + 1) ** k codes do not fit in int64")
        rng = np.random.default_rng(self.seed)
        # ranks[j, i]: position of coordinate i in permutation j, shape (k * l, dim)
        self.ranks = rng.permuted(np.tile(np.arange(self.dim), (self.k * self.l, 1)), axis=1)
        # a sub-hash is a position in [0, dim); dim stands for the empty set
        self.num_buckets = (self.dim + 1) ** self.k

    def hash(self, x: Any) -> np.ndarray:
        """Codes of shape (n, l), int64, for x of shape (n, dim) (dense or CSR)."""
        x = self.check_input(x)  # InputError for a wrong shape, NaN, an empty batch
        if hasattr(x, "tocoo"):  # scipy sparse: its stored non-zeros
            coo = x.tocoo()
            rows, cols = coo.row[coo.data != 0], coo.col[coo.data != 0]
        else:
            rows, cols = np.nonzero(x)
        n = x.shape[0]
        smallest = np.full((n, self.k * self.l), self.dim, dtype=np.int64)
        np.minimum.at(smallest, rows, self.ranks[:, cols].T)  # per row and permutation
        place = (self.dim + 1) ** np.arange(self.k, dtype=np.int64)
        return smallest.reshape(n, self.l, self.k) @ place

    def collision_probability(self, s: Any) -> np.ndarray:
        """P(same bucket in one table) for Jaccard similarity ``s``: s ** k."""
        return np.clip(np.asarray(s, dtype=np.float64), 0.0, 1.0) ** self.k


@lshcore.hookimpl
def lshcore_register_hash_families(register):
    register("classic_minhash", ClassicMinHash)
