"""MinHash by densified one-permutation hashing (Shrivastava, ICML 2017), b-bit codes.

The input is read as the set of its non-zero coordinates (negative values are members
too). Sub-hash ``j`` of every table comes from its own seeded permutation ``pi_j``,
split into ``l`` bins of consecutive permuted positions (position ``r`` lies in bin
``r * l // dim``): table ``t`` takes bin ``t`` of each of the ``k`` permutations, so the
``k`` sub-hashes of a table are independent and a table costs one pass over the
non-zeros per sub-hash, not per sub-hash and table.

A bin's value is the smallest permuted position of the set in it; an empty bin borrows
the value of a bin of the same permutation chosen by a seeded 2-universal probe
sequence (optimal densification; bounded and in range, see
``lshcore.kernels._np_hashing.densify_bins``). The value is mapped to a ``bits``-bit
code by a seeded random table, independent of the permutation. Per sub-hash, two sets
with Jaccard similarity J then collide with probability exactly J + (1 - J) * 2**-bits
(Shrivastava 2017, Thm. 3.1, plus independent random codes), and a table collides with
that probability to the power k: ``collision_probability`` is exact
(``collision_tolerance = 0``).

The empty set (the zero vector) gets code 0 in every bin; its similarity to another
empty set is undefined, and two zero vectors always collide.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from lshcore.core.backend import Backend
from lshcore.core.validation import check_int, is_sparse
from lshcore.errors import ConfigError
from lshcore.hashing.projection import _BackendFamily
from lshcore.hashing.wta import PROBE_ATTEMPTS, pack_codes

__all__ = ["MinHash"]


class MinHash(_BackendFamily):
    """Densified one-permutation MinHash with ``bits``-bit codes (Jaccard-sensitive).

    Params: ``bits`` (bits per sub-hash, default 4; ``k * bits <= 62``), so
    ``num_buckets = 2**(bits*k)``. Takes dense arrays and CSR matrices (only the
    structure of the non-zeros matters). ``dim >= l`` keeps every bin reachable; with
    fewer coordinates some bins always borrow.
    """

    name: ClassVar[str] = "minhash"
    measure: ClassVar[str] = "jaccard"
    supports_sparse: ClassVar[bool] = True
    collision_tolerance: ClassVar[float] = 0.0

    def __init__(
        self,
        dim: int,
        k: int,
        l: int,  # noqa: E741
        seed: int = 0,
        *,
        bits: int = 4,
        backend: str | Backend | None = None,
    ):
        bits = check_int(bits, "bits", low=1, high=62)
        k = check_int(k, "k", low=1)
        if bits * k > 62:
            raise ConfigError(
                f"k * bits must be <= 62 so a table key fits in int64; got k={k}, bits={bits}"
            )
        super().__init__(dim, k, l, seed=seed, backend=backend, bits=bits)
        self.bits = bits
        self.num_buckets = 2 ** (bits * self.k)
        #: (k, dim): coordinate c's position under permutation j
        self.coord_rank = np.stack([self._rng.permutation(self.dim) for _ in range(self.k)]).astype(
            np.int64
        )
        #: (k, dim): the random code of each permuted position
        self.position_code = self._rng.integers(0, 2**bits, size=(self.k, self.dim), dtype=np.int64)
        prime = 2147483647
        self.probe_a = self._rng.integers(1, prime, size=self.k, dtype=np.int64)
        self.probe_c = self._rng.integers(0, prime, size=self.k, dtype=np.int64)

    def bin_codes(self, x: Any) -> np.ndarray:
        """Densified codes (n, k, l) int64 in [0, 2**bits): sub-hash j of table t at [:, j, t]."""
        # a host batch is validated on the host: its kernels read host arrays, and a trip
        # to the device and back would be two copies for nothing
        on_host = self.backend.host_arrays or is_sparse(x) or isinstance(x, np.ndarray)
        x = self.check_input(x, xp=np if on_host else self.xp)
        if is_sparse(x):
            x.eliminate_zeros()  # a stored zero is not a member (x is a private copy)
            low = self.backend.kernels.minhash_bins_csr(
                x.indptr.astype(np.int64), x.indices.astype(np.int64), self.coord_rank, self.l
            )
        else:
            low = self.backend.kernels.minhash_bins_dense(
                _host(self.backend, x), self.coord_rank, self.l
            )
        low = np.asarray(low)
        group = np.arange(self.k)[None, :, None]
        codes = np.where(low >= 0, self.position_code[group, np.maximum(low, 0)], -1)
        return np.asarray(
            self.backend.kernels.densify_bins(codes, self.probe_a, self.probe_c, PROBE_ATTEMPTS)
        )

    def hash(self, x: Any) -> Any:
        codes = self.bin_codes(x).transpose(0, 2, 1)  # (n, l, k)
        return self.xp.asarray(pack_codes(codes, self.k, self.l, self.bits))

    def collision_probability(self, s: Any) -> np.ndarray:
        """P(one table collides) for Jaccard similarity ``s``: (s + (1 - s) 2**-bits)**k."""
        s = np.clip(np.asarray(s, dtype=np.float64), 0.0, 1.0)
        return (s + (1.0 - s) * 2.0**-self.bits) ** self.k

    def hash_cost(self, n: int, nnz: int | None = None) -> int:
        return 0  # no multiplications: see hash_comparisons

    def hash_comparisons(self, n: int, nnz: int | None = None) -> int:
        """One per (coordinate read, permutation): dense n * k * dim, sparse nnz * k."""
        return int((n * self.dim if nnz is None else nnz) * self.k)


def _host(backend: Any, x: Any) -> np.ndarray:
    """``x`` on the host: a host batch as it is, a device one copied (counted)."""
    return x if isinstance(x, np.ndarray) else backend.to_numpy(x, "hash_input")
