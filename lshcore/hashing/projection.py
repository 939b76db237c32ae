"""Projection-based hash families: SRP (SimHash), sparse SRP, cross-polytope, p-stable."""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np

from lshcore.core.backend import Backend
from lshcore.core.validation import check_float, check_int, is_sparse
from lshcore.errors import ConfigError, InputError
from lshcore.hashing.base import HashFamily
from lshcore.registry.catalog import get_backend

__all__ = ["SRP", "SparseSRP", "CrossPolytope", "PStable"]


class _BackendFamily(HashFamily):
    """A family whose arrays live on a backend (``backend=`` name, default the default)."""

    def __init__(
        self,
        dim: int,
        k: int,
        l: int,  # noqa: E741
        seed: int = 0,
        *,
        backend: str | Backend | None = None,
        **params: Any,
    ):
        super().__init__(dim, k, l, seed=seed, **params)
        self.backend = get_backend(backend)
        self.xp = self.backend.xp
        self._rng = np.random.default_rng(self.seed)

    def config(self) -> dict[str, Any]:
        return super().config()  # the backend is a run-time choice, not part of the functions


#: floats of projections computed at a time by SRP.hash on the CPU (1 MiB: fits in L2)
_HASH_BLOCK_FLOATS = 2**18


def _pack_bits(bits: Any, k: int, l: int, xp: Any) -> Any:  # noqa: E741
    """(n, l*k) booleans -> (n, l) int64 codes, sub-hash j of a table in bit j."""
    n = bits.shape[0]
    if xp is np and bits.dtype == np.bool_ and bits.flags.c_contiguous:
        # fast NumPy paths (an int64 copy of every bit costs more than the projection)
        if k in (8, 16, 32):  # a table's k bits are whole bytes: pack them and reinterpret
            packed = np.packbits(bits.reshape(-1), bitorder="little")
            return packed.view(f"<u{k // 8}").reshape(n, l).astype(np.int64)
        if k <= 24:  # float32 sums of distinct powers of two below 2**24 are exact
            weights32 = (2.0 ** np.arange(k)).astype(np.float32)
            return (bits.reshape(n, l, k).astype(np.float32) @ weights32).astype(np.int64)
    # any k, any array module (CuPy too): one bit plane at a time, so the temporaries are
    # (n, l) int64 rather than an (n, l, k) int64 copy of every bit (2-9x faster at k > 24)
    planes = bits.reshape(n, l, k)
    codes = xp.zeros((n, l), dtype=np.int64)
    for j in range(k):  # a loop over bit positions, not over points
        codes |= planes[:, :, j].astype(np.int64) << j
    return codes


class SRP(_BackendFamily):
    """Signed random projections (SimHash): bit = [w . x >= 0], w ~ N(0, I).

    Cosine-sensitive: one bit collides with probability 1 - theta/pi. Supports
    multiprobe (flip the bits whose projections are closest to zero).
    """

    name: ClassVar[str] = "srp"
    measure: ClassVar[str] = "cosine"
    supports_sparse: ClassVar[bool] = True
    sign_sketch: ClassVar[bool] = True  # bit j of table t: sign of Gaussian column t*k + j

    def __init__(
        self,
        dim: int,
        k: int,
        l: int,  # noqa: E741
        seed: int = 0,
        *,
        backend: str | Backend | None = None,
    ):
        super().__init__(dim, k, l, seed=seed, backend=backend)
        proj = self._rng.standard_normal((self.dim, self.k * self.l)).astype(np.float32)
        self.projections = self.backend.to_device(proj, "hash_functions")  # counted once
        # sparse (SciPy) queries are multiplied on the host: keep a host copy there rather
        # than copying the matrix from a device at every call
        self._host_projections = proj if not self.backend.host_arrays else None
        self.num_buckets = 2**self.k

    def _project(self, x: Any) -> Any:
        x = self.check_input(x, xp=self.xp if not is_sparse(x) else np)
        if is_sparse(x):
            host = getattr(self, "_host_projections", None)
            if host is None:
                host = self.backend.to_numpy(self.projections)
            return self.xp.asarray(np.asarray(x @ host))
        return x @ self.projections

    def device_hash(self, x: Any) -> Any:
        """Codes (n, l) int64 of a dense float32 batch ``x (n, dim)`` that lives on the
        backend's device, computed there (one dense product; neither ``x`` nor the codes
        cross). As :meth:`hash`, except that a projection within rounding of zero may
        take the other sign (the dense product sums in another order than a sparse one)."""
        if self.backend.host_arrays:
            raise ConfigError(
                f"device_hash needs a device backend; {self.backend.name!r} keeps host arrays"
            )
        if len(x.shape) != 2 or x.shape[1] != self.dim:
            raise InputError(f"x: expected a (n, {self.dim}) array, got {tuple(x.shape)}")
        return _pack_bits((x @ self.projections) >= 0, self.k, self.l, self.xp)

    def hash(self, x: Any) -> Any:
        if is_sparse(x) or not self.backend.host_arrays:
            return _pack_bits(self._project(x) >= 0, self.k, self.l, self.xp)
        # dense input on the CPU: the product of _project in row blocks, each validated
        # and projected while it is in cache (2-5x faster than validating the whole batch,
        # then one big product, at 16-1024 bits; see benchmarks/results/hashing.md)
        width = self.k * self.l
        block = max(64, _HASH_BLOCK_FLOATS // max(width, self.dim))
        shaped = isinstance(x, np.ndarray) and x.ndim == 2 and x.shape[1] == self.dim
        if not shaped or x.shape[0] <= block:
            x = self.check_input(x)  # converts a list etc., or raises for the whole batch
            if x.shape[0] <= block:
                return _pack_bits(x @ self.projections >= 0, self.k, self.l, np)
        n = x.shape[0]
        codes = np.empty((n, self.l), dtype=np.int64)
        buffer = np.empty((block, width), dtype=np.float32)
        for start in range(0, n, block):
            rows = self.check_input(x[start : start + block])
            proj = np.matmul(rows, self.projections, out=buffer[: rows.shape[0]])
            codes[start : start + block] = _pack_bits(proj >= 0, self.k, self.l, np)
        return codes

    def collision_probability(self, s: Any) -> np.ndarray:
        s = np.clip(np.asarray(s, dtype=np.float64), -1.0, 1.0)
        return (1.0 - np.arccos(s) / np.pi) ** self.k

    def probes(self, x: Any, n_probes: int) -> Any:
        """Codes (n, l, n_probes): the hash, then the one- and two-bit flips of each table's
        code in increasing order of the summed |projection| of the flipped bits (the least
        certain bits first; ties broken as the kernel ``srp_probes`` documents). Beyond the
        k + k(k-1)/2 flip sets the exact code repeats (a repeated probe is looked up once).
        The ranking runs in the backend's ``srp_probes`` kernel (host arrays)."""
        n_probes = check_int(n_probes, "n_probes", low=1)
        xp = self.xp
        if self.backend.host_arrays and not is_sparse(x) and np.shape(x)[0] <= _SMALL_BATCH:
            # a few queries: a plain product (a threaded BLAS call costs more than it
            # computes here, far more on a loaded machine)
            rows = self.check_input(x)
            proj = np.einsum("ij,jk->ik", rows, self.projections).reshape(-1, self.l, self.k)
        else:
            proj = self._project(x).reshape(-1, self.l, self.k)
        if n_probes == 1:
            return _pack_bits(proj >= 0, self.k, self.l, xp)[:, :, None]
        out = self._rank_probes(self.backend.to_numpy(proj), n_probes)
        return out if self.backend.host_arrays else xp.asarray(out)

    def device_probes(self, x: Any, n_probes: int) -> np.ndarray:
        """:meth:`probes` of a dense float32 batch ``x (n, dim)`` that lives on the
        backend's device, as host codes (n, l, n_probes) int64: the projections are
        computed there and come down (tag ``query_projections``, (n, l * k) float32, as
        large as k codes' worth of int64 at most), the flips are ranked on the host
        (``srp_probes``). Rounding as :meth:`device_hash`."""
        if self.backend.host_arrays:
            raise ConfigError(
                f"device_probes needs a device backend; {self.backend.name!r} keeps host arrays"
            )
        n_probes = check_int(n_probes, "n_probes", low=1)
        if len(x.shape) != 2 or x.shape[1] != self.dim:
            raise InputError(f"x: expected a (n, {self.dim}) array, got {tuple(x.shape)}")
        proj = self.backend.to_host(x @ self.projections, "query_projections")
        proj = proj.reshape(-1, self.l, self.k)
        if n_probes == 1:
            return _pack_bits(proj >= 0, self.k, self.l, np)[:, :, None]
        return self._rank_probes(proj, n_probes)

    def _rank_probes(self, proj: np.ndarray, n_probes: int) -> np.ndarray:
        """Host projections (n, l, k) -> probe codes (n, l, n_probes) int64 (``srp_probes``)."""
        out = np.empty((proj.shape[0], self.l, n_probes), dtype=np.int64)
        # in row blocks: the reference kernel's temporaries grow with rows * l * k^2
        step = max(1, (1 << 22) // max(1, self.l * min(self.k, n_probes) ** 2))
        for lo in range(0, proj.shape[0], step):
            out[lo : lo + step] = self.backend.kernels.srp_probes(
                np.ascontiguousarray(proj[lo : lo + step], dtype=np.float32), n_probes
            )
        return out

    def hash_cost(self, n: int, nnz: int | None = None) -> int:
        per_row = self.dim if nnz is None else nnz / max(n, 1)
        return int(round(n * per_row * self.k * self.l))


#: query batches of at most this many rows are projected without BLAS in ``probes``
_SMALL_BATCH = 8


def _next_pow2(n: int) -> int:
    return 1 << (max(n, 1) - 1).bit_length()


def _dense_rows(x: Any, start: int, stop: int, xp: Any) -> Any:
    """Rows [start, stop) of a validated batch as a dense array of ``xp``."""
    rows = x[start:stop]
    if is_sparse(rows):
        return xp.asarray(rows.toarray())
    return rows


class SparseSRP(SRP):
    """SLIDE's sparse signed random projections (cosine).

    Each of the ``k * l`` projections samples ``ceil(dim / ratio)`` distinct coordinates
    (``ratio`` = 3 by default, as in SLIDE) with random +-1 signs; bit = [w . x >= 0].
    A sparse CSR input is hashed through its non-zeros only (sparse x sparse product).

    ``collision_probability`` is not implemented: for sparse projections it depends on
    the data (two vectors with few non-zeros often meet no sampled coordinate and both
    get bit 1), so 1 - theta/pi is only an asymptotic value; see docs/families.md.
    """

    name: ClassVar[str] = "sparse_srp"
    measure: ClassVar[str] = "cosine"
    supports_sparse: ClassVar[bool] = True
    sign_sketch: ClassVar[bool] = False  # sparse +-1 projections: not theta / pi per bit

    def __init__(
        self,
        dim: int,
        k: int,
        l: int,  # noqa: E741
        seed: int = 0,
        *,
        ratio: int = 3,
        backend: str | Backend | None = None,
    ):
        ratio = check_int(ratio, "ratio", low=1)
        # skip SRP.__init__ (its dense Gaussian matrix); set up the backend directly
        _BackendFamily.__init__(self, dim, k, l, seed=seed, backend=backend, ratio=ratio)
        import scipy.sparse as sp

        n_proj = self.k * self.l
        self.sample_size = -(-self.dim // ratio)
        rows = np.empty((n_proj, self.sample_size), dtype=np.int64)
        for j in range(n_proj):  # one draw per projection (no loop over points)
            rows[j] = self._rng.choice(self.dim, self.sample_size, replace=False)
        signs = self._rng.integers(0, 2, size=(n_proj, self.sample_size)) * 2 - 1
        cols = np.repeat(np.arange(n_proj), self.sample_size)
        #: the projections as a (dim, k*l) CSR matrix of +-1 entries
        self.sparse_projections = sp.csr_matrix(
            (signs.ravel().astype(np.float32), (rows.ravel(), cols)), shape=(self.dim, n_proj)
        )
        self.sparse_projections.sort_indices()
        #: how many projections sample each coordinate, shape (dim,)
        self.samples_per_coordinate = np.diff(self.sparse_projections.indptr)
        self.projections = self.backend.to_device(
            self.sparse_projections.toarray(), "hash_functions"
        )
        self.num_buckets = 2**self.k

    def _project(self, x: Any) -> Any:
        x = self.check_input(x, xp=self.xp if not is_sparse(x) else np)
        if is_sparse(x):
            return self.xp.asarray((x @ self.sparse_projections).toarray())
        # dense input: one BLAS product over the zero-padded +-1 matrix (faster than a
        # gather); hash_cost still counts only the sampled entries
        return x @ self.projections

    def collision_probability(self, s: Any) -> np.ndarray:
        raise NotImplementedError(
            "sparse_srp has no exact collision probability: it depends on the data's "
            "sparsity and is only asymptotically (1 - theta/pi)**k"
        )

    def hash_cost(self, n: int, nnz: int | None = None, *, x: Any = None) -> int:
        """Multiply-adds: one per (non-zero, projection that samples its coordinate).

        Dense input: exact (``n * k * l * sample_size``). Sparse input: exact when the
        CSR batch ``x`` is given, otherwise ``nnz`` times the mean number of projections
        per coordinate. The +-1 "multiplications" are counted although they are signs.
        """
        if x is not None and is_sparse(x):
            csr = x.tocsr()
            return int(self.samples_per_coordinate[csr.indices].sum())
        if nnz is None:
            return int(n * self.sparse_projections.nnz)
        return int(np.ceil(nnz * self.sparse_projections.nnz / self.dim))


def _fwht(y: Any, xp: Any) -> Any:
    """In-place unnormalized fast Walsh-Hadamard transform along the FIRST axis.

    ``y``: a C-contiguous float array of shape (d, ...) with d a power of two; returns
    ``y``. d log2 d additions/subtractions per vector, done two stages at a time (radix-4
    butterflies). The transformed axis comes first so that every stage works on long
    contiguous blocks (the batch), not on strided runs of length 1, 2, 4, ...
    """
    if not y.flags.c_contiguous:
        raise ValueError("_fwht needs a C-contiguous array (it works in place)")
    size = y.shape[0]
    flat = y.reshape(size, -1)
    cols = flat.shape[1]
    h = 1
    while h < size:
        if 4 * h <= size:
            v = flat.reshape(size // (4 * h), 4, h, cols)
            a, b, c, e = v[:, 0], v[:, 1], v[:, 2], v[:, 3]
            s1, d1, s2, d2 = a + b, a - b, c + e, c - e
            xp.add(s1, s2, out=a)
            xp.add(d1, d2, out=b)
            xp.subtract(s1, s2, out=c)
            xp.subtract(d1, d2, out=e)
            h *= 4
        else:
            v = flat.reshape(size // (2 * h), 2, h, cols)
            a, b = v[:, 0], v[:, 1]
            diff = a - b
            a += b
            b[...] = diff
            h *= 2
    return y


class CrossPolytope(_BackendFamily):
    """FALCONN's cross-polytope LSH (cosine) with fast Hadamard pseudo-rotations.

    The input is zero-padded to ``rotation_dim`` = d' (the next power of two), then each
    sub-hash applies three rounds of (random +-1 diagonal, fast Walsh-Hadamard
    transform); its value is the index of the largest |y_i| with its sign, one of 2 d'
    values. With ``last_cp_dim`` = m (FALCONN's ``last_cp_dimension``) the last sub-hash
    of a table looks only at the first m rotated coordinates (2 m values), which keeps
    the concatenated code small: ``num_buckets = (2 d')**(k-1) * 2 m`` must stay below
    2**62. No closed-form collision probability (NotImplementedError).
    """

    name: ClassVar[str] = "crosspolytope"
    measure: ClassVar[str] = "cosine"
    supports_sparse: ClassVar[bool] = True  # densified chunk by chunk (the FWHT is dense)
    _CHUNK_ELEMENTS: ClassVar[int] = 1 << 22

    def __init__(
        self,
        dim: int,
        k: int,
        l: int,  # noqa: E741
        seed: int = 0,
        *,
        last_cp_dim: int | None = None,
        backend: str | Backend | None = None,
    ):
        rotation_dim = _next_pow2(check_int(dim, "dim", low=1))
        if last_cp_dim is not None:
            last_cp_dim = check_int(last_cp_dim, "last_cp_dim", low=1, high=rotation_dim)
        super().__init__(dim, k, l, seed=seed, backend=backend, last_cp_dim=last_cp_dim)
        self.rotation_dim = rotation_dim
        self.last_cp_dim = rotation_dim if last_cp_dim is None else last_cp_dim
        self.num_buckets = (2 * rotation_dim) ** (self.k - 1) * 2 * self.last_cp_dim
        if self.num_buckets >= 2**62:
            raise ConfigError(
                f"crosspolytope: num_buckets = (2*{rotation_dim})**({self.k}-1) * "
                f"2*{self.last_cp_dim} = {self.num_buckets} does not fit below 2**62; "
                "use a smaller k or a smaller last_cp_dim"
            )
        n_sub = self.k * self.l
        signs = self._rng.integers(0, 2, size=(3, n_sub, rotation_dim)) * 2 - 1
        #: the three random +-1 diagonals, shape (3, k*l, d') (sub-hash j of table t at t*k+j)
        self.diagonals = signs.astype(np.float32)
        self.diagonals_t = self.backend.to_device(
            self.diagonals.transpose(0, 2, 1), "hash_functions"
        )
        radix = [2 * rotation_dim] * (self.k - 1)
        self._place = np.cumprod([1, *radix], dtype=np.int64)[: self.k]

    def rotate(self, x: Any) -> Any:
        """The pseudo-rotated inputs, shape (d', n, l, k), for a validated dense batch."""
        n = x.shape[0]
        y = self.xp.zeros((self.rotation_dim, n, self.k * self.l), dtype=np.float32)
        y[: self.dim] = x.T[:, :, None]
        for r in range(3):
            y *= self.diagonals_t[r][:, None, :]
            _fwht(y, self.xp)
        return y.reshape(self.rotation_dim, n, self.l, self.k)

    def _codes(self, y: Any) -> Any:
        """Codes (n, l) from rotated inputs (d', n, l, k): the signed argmax per sub-hash."""
        xp = self.xp
        d, m = self.rotation_dim, self.last_cp_dim
        code = None
        for j in range(self.k):  # a loop over the k sub-hashes, not over points
            width = d if j < self.k - 1 else m
            part = y[:width, :, :, j]
            idx = xp.argmax(xp.abs(part), axis=0)  # (n, l)
            neg = xp.take_along_axis(part, idx[None], axis=0)[0] < 0
            sub = (idx.astype(np.int64) + width * neg.astype(np.int64)) * int(self._place[j])
            code = sub if code is None else code + sub
        return code

    def hash(self, x: Any) -> Any:
        xp = self.xp
        x = self.check_input(x, xp=xp if not is_sparse(x) else np)
        n = x.shape[0]
        step = max(1, self._CHUNK_ELEMENTS // (self.k * self.l * self.rotation_dim))
        parts = [
            self._codes(self.rotate(_dense_rows(x, i, min(i + step, n), xp)))
            for i in range(0, n, step)  # chunks of rows bound the (d', n, k*l) buffer
        ]
        return parts[0] if len(parts) == 1 else xp.concatenate(parts, axis=0)

    def hash_cost(self, n: int, nnz: int | None = None) -> int:
        """Per input and sub-hash: 3 rounds of d' sign multiplies + d' log2 d' butterflies."""
        d = self.rotation_dim
        per_sub = 3 * d * (1 + int(np.log2(d)))
        return int(n * self.k * self.l * per_sub)


#: the prime of PStable's universal hash (largest below 2**32: products fit in uint64)
_UNIVERSAL_PRIME = 4294967291


class PStable(_BackendFamily):
    """E2LSH's p-stable family for L2 distance.

    Sub-hash h(x) = floor((a . x + b) / r) with a ~ N(0, I), b ~ U[0, r) and bucket width
    ``r`` (default 4.0). The k values of a table are combined by a seeded universal hash
    (sum c_j h_j mod p, p = 2**32 - 5, then mod 2**bits) into ``[0, 2**bits)``.
    ``collision_probability(c)`` takes the Euclidean distance c.
    """

    name: ClassVar[str] = "pstable"
    measure: ClassVar[str] = "l2"
    supports_sparse: ClassVar[bool] = True
    #: the universal hash's false-collision rate is 2**-bits to within 1/p < 2.4e-10
    collision_tolerance: ClassVar[float] = 1e-9

    def __init__(
        self,
        dim: int,
        k: int,
        l: int,  # noqa: E741
        seed: int = 0,
        *,
        r: float = 4.0,
        bits: int = 20,
        backend: str | Backend | None = None,
    ):
        r = check_float(r, "r", low=0.0, open_low=True)
        bits = check_int(bits, "bits", low=1, high=30)
        super().__init__(dim, k, l, seed=seed, backend=backend, r=r, bits=bits)
        self.r = r
        self.bits = bits
        self.num_buckets = 2**bits
        n_sub = self.k * self.l
        a = self._rng.standard_normal((self.dim, n_sub))
        b = self._rng.uniform(0.0, r, size=n_sub)
        # fold the division by r into the projections: floor(a/r . x + b/r)
        self._scaled = np.asarray(a / r, dtype=np.float32)
        self.projections = self.backend.to_device(self._scaled, "hash_functions")
        self.offsets = self.backend.to_device((b / r).astype(np.float32), "hash_functions")
        coef = self._rng.integers(0, _UNIVERSAL_PRIME, size=(self.l, self.k), dtype=np.uint64)
        self.coefficients = self.backend.to_device(coef, "hash_functions")

    def bucket_indices(self, x: Any) -> Any:
        """The k integer sub-hash values per table, int64 of shape (n, l, k)."""
        xp = self.xp
        x = self.check_input(x, xp=xp if not is_sparse(x) else np)
        if is_sparse(x):
            proj = xp.asarray(np.asarray(x @ self._scaled))
        else:
            proj = x @ self.projections
        h = xp.floor(proj + self.offsets).astype(np.int64)
        return h.reshape(-1, self.l, self.k)

    def hash(self, x: Any) -> Any:
        xp = self.xp
        h = xp.mod(self.bucket_indices(x), _UNIVERSAL_PRIME).astype(np.uint64)
        prime = np.uint64(_UNIVERSAL_PRIME)
        acc = xp.zeros(h.shape[:2], dtype=np.uint64)
        for j in range(self.k):  # each product < p**2 < 2**64
            acc = (acc + (h[:, :, j] * self.coefficients[:, j]) % prime) % prime
        return (acc % np.uint64(self.num_buckets)).astype(np.int64)

    def collision_probability(self, s: Any) -> np.ndarray:
        """P(same bucket of one table) for points at Euclidean distance ``s``.

        p(c)**k (Datar et al. 2004) plus the universal hash's false collisions,
        (1 - p(c)**k) * 2**-bits.
        """
        c = np.asarray(s, dtype=np.float64)
        if np.any(c < 0) or not np.all(np.isfinite(c)):
            raise ValueError("s: distances must be finite and >= 0")
        p = np.vectorize(_pstable_p, otypes=[np.float64])(c, self.r)
        pk = p**self.k
        return pk + (1.0 - pk) * 2.0**-self.bits

    def hash_cost(self, n: int, nnz: int | None = None) -> int:
        """Projection multiply-adds (dense n*dim or nnz, times k*l) plus k*l hash products."""
        per_proj = n * self.dim if nnz is None else nnz
        return int(per_proj * self.k * self.l + n * self.k * self.l)


def _pstable_p(c: float, r: float) -> float:
    """One sub-hash's collision probability at distance c, bucket width r (Gaussian a)."""
    if c == 0.0:
        return 1.0
    t = r / c
    normal_cdf = 0.5 * (1.0 + math.erf(-t / math.sqrt(2.0)))
    return (
        1.0
        - 2.0 * normal_cdf
        - 2.0 / (math.sqrt(2.0 * math.pi) * t) * (1.0 - math.exp(-t * t / 2.0))
    )
