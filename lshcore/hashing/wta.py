"""Winner-take-all hash families: DWTA (densified, for sparse data) and plain WTA.

Both compare values only: hashing costs no multiplications. The bins (Chen &
Shrivastava's densified WTA, as used by SLIDE, with SLIDE's bugs fixed; see
``../shared/design.md`` §2):

* P = ceil(K*L*b / dim) seeded permutations ``pi_p`` of the coordinates are laid end
  to end; coordinate ``i`` of permutation ``p`` sits at slot ``s = p*dim + pi_p(i)``,
  i.e. in bin ``s // b`` at position ``s % b``; only the first K*L bins are kept.
* A bin's code is the position (0..b-1) of its largest entry, ties to the lowest
  position. DWTA lets only non-zero entries compete, so a bin can be empty; an empty
  bin borrows the code of the first non-empty bin of a seeded, bounded, in-range probe
  sequence (``lshcore.kernels._np_hashing.densify_bins``). The zero vector, whose bins
  are all empty, gets code 0 in every bin. WTA is the same with every entry competing,
  zeros included, so no bin is ever empty.
* Table ``t`` concatenates bins ``t*K .. t*K+K-1``, log2(b) bits each (sub-hash ``j``
  in bits ``j*log2(b) ..``), so ``num_buckets = b**K``.

Any real values are accepted (only their order matters); DWTA is meant for sparse
non-negative data, where "non-zero" means "present".
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np

from lshcore.core.backend import Backend
from lshcore.core.validation import check_int, is_sparse
from lshcore.errors import ConfigError, InputError
from lshcore.hashing.projection import _BackendFamily

__all__ = ["DWTA", "WTA", "PROBE_ATTEMPTS", "bin_layout", "pack_codes"]

#: hashed probes an empty bin tries before scanning its neighbours in order
PROBE_ATTEMPTS = 16


def pack_codes(codes: np.ndarray, k: int, l: int, bits: int) -> np.ndarray:  # noqa: E741
    """(n, l, k) sub-hash codes in [0, 2**bits) -> (n, l) int64 keys, sub-hash j in bits j*bits.."""
    shifts = np.arange(k, dtype=np.int64) * bits
    return (codes.astype(np.int64) << shifts).sum(axis=2)


def bin_layout(permutations: np.ndarray, n_bins: int, bin_size: int) -> np.ndarray:
    """(n_bins, bin_size) int64: the coordinate at each position of each bin.

    permutations: (P, dim), with P * dim >= n_bins * bin_size. Coordinate ``i`` of
    permutation ``p`` sits at slot ``s = p*dim + permutations[p, i]``: bin ``s // bin_size``,
    position ``s % bin_size``.
    """
    n_perms, dim = permutations.shape
    n_slots = n_bins * bin_size
    if n_perms * dim < n_slots:
        raise ConfigError(
            f"{n_perms} permutations of {dim} cannot fill {n_bins} bins of {bin_size}"
        )
    slots = np.arange(n_perms, dtype=np.int64)[:, None] * dim + permutations
    slot_coord = np.empty(n_perms * dim, dtype=np.int64)
    slot_coord[slots.ravel()] = np.tile(np.arange(dim, dtype=np.int64), n_perms)
    return np.ascontiguousarray(slot_coord[:n_slots].reshape(n_bins, bin_size))


class DWTA(_BackendFamily):
    """Densified winner-take-all hashing for sparse (non-negative) vectors.

    Params: ``bin_size`` (b, a power of two >= 2, default 8; ``k*log2(b) <= 62``).
    Rank-sensitive (``measure = "rank"``); no closed-form collision probability.
    Sparse CSR input is hashed through its non-zeros only and gives the same codes as
    the equal dense input.
    """

    name: ClassVar[str] = "dwta"
    measure: ClassVar[str] = "rank"
    supports_sparse: ClassVar[bool] = True
    densify: ClassVar[bool] = True

    def __init__(
        self,
        dim: int,
        k: int,
        l: int,  # noqa: E741
        seed: int = 0,
        *,
        bin_size: int = 8,
        backend: str | Backend | None = None,
    ):
        bin_size = check_int(bin_size, "bin_size", low=2)
        if bin_size & (bin_size - 1):
            raise ConfigError(f"bin_size must be a power of two, got {bin_size}")
        bits = bin_size.bit_length() - 1
        k = check_int(k, "k", low=1)
        if bits * k > 62:
            raise ConfigError(
                f"k * log2(bin_size) must be <= 62 so a table key fits in int64; "
                f"got k={k}, bin_size={bin_size} ({bits * k} bits)"
            )
        super().__init__(dim, k, l, seed=seed, backend=backend, bin_size=bin_size)
        self.bin_size = bin_size
        self.bits = bits
        self.n_bins = self.k * self.l
        self.num_buckets = bin_size**self.k

        n_perms = math.ceil(self.n_bins * bin_size / self.dim)
        #: (P, dim): permutation p sends coordinate i to pi_p(i) = permutations[p, i]
        self.permutations = np.stack([self._rng.permutation(self.dim) for _ in range(n_perms)])
        #: (n_bins, bin_size): the coordinate at each position of each bin
        self.bin_coords = bin_layout(self.permutations, self.n_bins, bin_size)
        # per coordinate, the slots it occupies (CSR form) for hashing sparse rows
        by_coord = np.argsort(self.bin_coords.ravel(), kind="stable")
        self.coord_slots = by_coord.astype(np.int64)
        counts = np.bincount(self.bin_coords.ravel(), minlength=self.dim)
        self.coord_ptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        # 2-universal probe hash of the densification: a in [1, p), c in [0, p)
        prime = 2147483647
        self.probe_a = self._rng.integers(1, prime, size=1, dtype=np.int64)
        self.probe_c = self._rng.integers(0, prime, size=1, dtype=np.int64)

    def bin_codes(self, x: Any) -> np.ndarray:
        """Per-bin codes (n, k*l) int64 in [0, bin_size), densified for DWTA (NumPy array)."""
        # a host batch is validated on the host: its kernels read host arrays, and a trip
        # to the device and back would be two copies for nothing
        on_host = self.backend.host_arrays or is_sparse(x) or isinstance(x, np.ndarray)
        x = self.check_input(x, xp=np if on_host else self.xp)
        # one kernel path for every backend; the cupy module's hashing kernels run on host
        # arrays, which is why non-host input is copied with to_numpy below
        kernels = self.backend.kernels
        if is_sparse(x):
            x.eliminate_zeros()  # a stored zero is a zero (x is already a private copy)
            codes = kernels.wta_bins_csr(
                x.indptr.astype(np.int64),
                x.indices.astype(np.int64),
                x.data,
                self.coord_ptr,
                self.coord_slots,
                self.n_bins,
                self.bin_size,
                self.densify,
            )
        else:
            codes = kernels.wta_bins_dense(_host(self.backend, x), self.bin_coords, self.densify)
        if self.densify:
            codes = kernels.densify_bins(
                codes.reshape(codes.shape[0], 1, self.n_bins),
                self.probe_a,
                self.probe_c,
                PROBE_ATTEMPTS,
            ).reshape(codes.shape[0], self.n_bins)
        return np.asarray(codes)

    def hash(self, x: Any) -> Any:
        codes = self.bin_codes(x).reshape(-1, self.l, self.k)
        return self.xp.asarray(pack_codes(codes, self.k, self.l, self.bits))

    def prepare_device(self) -> tuple[Any, Any, Any, Any]:
        """The functions' arrays on the backend's device (bin layout, probe constants,
        code shifts), copied up on the first call only (tag ``hash_functions``): call it
        when the tables are built so that hashing copies nothing."""
        layout = getattr(self, "_device_layout", None)
        if layout is None:
            put = self.backend.to_device
            layout = (
                put(self.bin_coords, "hash_functions"),
                put(self.probe_a, "hash_functions"),
                put(self.probe_c, "hash_functions"),
                put(np.arange(self.k, dtype=np.int64) * self.bits, "hash_functions"),
            )
            self._device_layout = layout
        return layout

    def device_hash(self, x: Any) -> Any:
        """Codes (n, l) int64 of a dense float32 batch ``x (n, dim)`` that lives on the
        backend's device (a device backend only), computed there: the bins, their
        densification and the packing run where ``x`` lives, so neither ``x`` nor the
        codes cross to the host. The same codes as :meth:`hash` of the same rows."""
        if self.backend.host_arrays:
            raise ConfigError(
                f"device_hash needs a device backend; {self.backend.name!r} keeps host arrays"
            )
        if len(x.shape) != 2 or x.shape[1] != self.dim:
            raise InputError(f"x: expected a (n, {self.dim}) array, got {tuple(x.shape)}")
        xp = self.xp
        bin_coords, probe_a, probe_c, shifts = self.prepare_device()
        kernels = self.backend.kernels
        n = x.shape[0]
        codes = kernels.wta_bins_dense(x, bin_coords, self.densify)
        if self.densify:
            grouped = xp.reshape(codes, (n, 1, self.n_bins))
            codes = kernels.densify_bins(grouped, probe_a, probe_c, PROBE_ATTEMPTS)
        sub = xp.reshape(codes, (n, self.l, self.k))
        return xp.sum(sub << xp.reshape(shifts, (1, 1, self.k)), axis=2, dtype=xp.int64)

    def hash_cost(self, n: int, nnz: int | None = None) -> int:
        return 0  # no multiplications: see hash_comparisons

    def hash_comparisons(self, n: int, nnz: int | None = None) -> int:
        """Dense: ``b - 1`` per bin and input (n * k*l * (b-1)). Sparse: one per (non-zero,
        slot it occupies), nnz * k*l*b / dim on average (each coordinate fills about
        k*l*b/dim slots)."""
        if nnz is None:
            return int(n * self.n_bins * (self.bin_size - 1))
        return int(round(nnz * self.n_bins * self.bin_size / self.dim))


class WTA(DWTA):
    """Winner-take-all hashing: DWTA without densification.

    Every entry of a bin competes, zeros included, so no bin is ever empty. Same
    params and bins as DWTA with the same seed. Rank-sensitive; sparse CSR input gives
    the same codes as the equal dense input.
    """

    name: ClassVar[str] = "wta"
    measure: ClassVar[str] = "rank"
    densify: ClassVar[bool] = False


def _host(backend: Any, x: Any) -> np.ndarray:
    """``x`` on the host: a host batch as it is, a device one copied (counted)."""
    return x if isinstance(x, np.ndarray) else backend.to_numpy(x, "hash_input")
