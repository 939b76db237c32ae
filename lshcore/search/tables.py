"""L hash tables of buckets holding ids: insert, remove, query (with multiprobe).

Two layouts, chosen by ``policy``:

* ``fifo`` / ``reservoir``: every bucket is a ring of fixed capacity ``bucket_size``
  (a dense ``(L, table_size, bucket_size)`` int32 array, -1 = empty slot). A full bucket
  either overwrites its oldest entry (``fifo``) or keeps the n-th arrival with
  probability ``bucket_size / n`` in a uniformly chosen slot (``reservoir``, Algorithm R,
  seeded). Memory: ``L * table_size * (4 * bucket_size + 16)`` bytes.
* ``unbounded``: a sorted run of ``(bucket key, id)`` entries over all tables (with the
  start of every bucket when ``L * table_size <= 2**24``), plus a small sorted run of
  recent inserts that is merged in once it exceeds ``128 * sqrt(main run)`` entries (so an
  insert costs O(L * sqrt(n_items)) moves, amortized, not O(L * n_items)); removal marks
  entries (tombstones). Buckets grow without limit, so every inserted id stays findable.
  The pending run has a directory (``pdir``: about two entries per group of keys) through
  which the sign-sketch re-rank finds a bucket in O(1). Memory: ``12 * L * n_items``
  bytes + ``8 * L * table_size`` for the bucket starts (plus a transient copy while
  merging).

Codes from a family lie in ``[0, num_buckets)``. When ``num_buckets`` exceeds
``table_size`` they are range-reduced by a multiplicative hash: ``bucket = (code *
0x9E3779B97F4A7C15 mod 2**64) >> (64 - log2(table_size))`` (``table_size`` is then a power
of two); otherwise ``bucket = code`` and ``table_size = num_buckets``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from lshcore.core.backend import Backend
from lshcore.core.validation import as_ids, check_choice, check_int
from lshcore.errors import ConfigError, InputError
from lshcore.registry.catalog import get_backend
from lshcore.search._rwlock import RWLock

__all__ = [
    "Candidates",
    "LSHTables",
    "POLICIES",
    "default_table_size",
    "reduce_codes",
]

POLICIES = ("fifo", "reservoir", "unbounded")
_GOLDEN = 0x9E3779B97F4A7C15
#: default cap on slots per table for fixed-capacity buckets (4 MiB of int32 per table)
FIXED_SLOTS_PER_TABLE = 1 << 20
#: default cap on buckets per table for the unbounded layout (keys stay below 2**62)
UNBOUNDED_TABLE_SIZE = 1 << 30
#: the unbounded layout keeps bucket offsets (8 bytes per bucket, O(1) lookup) while
#: l * table_size is at most this; above it, buckets are found by binary search
OFFSETS_LIMIT = 1 << 24
#: the unbounded layout's pending run is merged into the main run once it holds more
#: than max(PENDING_MIN, PENDING_SQRT * sqrt(main)) entries: an insert of n entries
#: rewrites the pending run (O(PENDING_SQRT * sqrt(main))) and pays an amortized
#: O(n * sqrt(main) / PENDING_SQRT) share of the merges, instead of O(main / 8) per
#: insert with a pending run proportional to the main one. 128 (was 64): merges of a
#: 24M-entry run half as often (1M keys x 24 tables: memory.write 20-22k -> 22-34k slot
#: moves/s on the loaded host), at one more binary-search step where the pending run is
#: searched (the sketch re-rank reads it through its directory instead)
PENDING_MIN = 1 << 14
PENDING_SQRT = 128


#: the leading arguments of the re-rank kernels (see LSHTables._rerank_args): both runs'
#: keys and ids, the probes' global keys, id bound, vectors, norms, queries, k, metric
_RerankArgs = tuple[Any, Any, Any, Any, Any, Any, int, Any, Any, Any, Any, int, int]


@dataclass(frozen=True)
class Candidates:
    """Per-query candidates in CSR form.

    ``indptr`` (m + 1,) int64; query i owns ``ids[indptr[i]:indptr[i + 1]]`` (int64,
    ascending) and ``counts`` of the same slice (int32): how many (table, probe) buckets
    returned that id.
    """

    indptr: Any
    ids: Any
    counts: Any

    def __len__(self) -> int:
        return int(self.indptr.shape[0]) - 1

    def row(self, i: int) -> tuple[Any, Any]:
        """``(ids, counts)`` of query ``i``."""
        lo, hi = int(self.indptr[i]), int(self.indptr[i + 1])
        return self.ids[lo:hi], self.counts[lo:hi]

    def sizes(self) -> Any:
        """Number of distinct candidates per query, shape (m,)."""
        return self.indptr[1:] - self.indptr[:-1]


def _next_pow2(n: int) -> int:
    return 1 << max(0, int(n - 1).bit_length())


def default_table_size(num_buckets: int, bucket_size: int, policy: str) -> int:
    """Buckets per table when not given.

    ``num_buckets`` itself when it is small enough, else a power of two: for fixed
    buckets at most ``2**20 / bucket_size`` (so a table holds at most ~2**20 slots, 4 MiB),
    never below 1024; for ``unbounded`` at most 2**30.
    """
    if policy == "unbounded":
        cap = UNBOUNDED_TABLE_SIZE
    else:
        cap = max(1024, FIXED_SLOTS_PER_TABLE // _next_pow2(bucket_size))
    return int(num_buckets) if num_buckets <= cap else cap


def reduce_codes(codes: Any, num_buckets: int, table_size: int) -> Any:
    """Map family codes in ``[0, num_buckets)`` to buckets in ``[0, table_size)`` (int64)."""
    xp = np if isinstance(codes, np.ndarray) else _xp_of(codes)
    if num_buckets <= table_size:
        return codes.astype(np.int64, copy=False)
    bits = int(table_size).bit_length() - 1
    if bits == 0:  # one bucket per table (a shift by 64 is undefined in C/CUDA)
        return xp.zeros(codes.shape, dtype=np.int64)
    with np.errstate(over="ignore"):
        h = codes.astype(np.uint64) * xp.uint64(_GOLDEN)
    return (h >> xp.uint64(64 - bits)).astype(np.int64)


def pending_limit(main: int) -> int:
    """Entries the unbounded layout's pending run may hold beside a main run of ``main``."""
    return max(PENDING_MIN, PENDING_SQRT * math.isqrt(max(int(main), 0)))


def _xp_of(a: Any) -> Any:
    if type(a).__module__.split(".")[0] == "cupy":
        import cupy

        return cupy
    return np


class LSHTables:
    """``l`` hash tables of ``table_size`` buckets each (see the module docstring).

    ``insert(ids, codes)``, ``remove(ids, codes)`` and ``query(codes)`` take family codes
    of shape (n, l) (or (m, l, probes) for ``query``); the caller keeps each id's codes to
    remove it later. Ids are ints in ``[0, 2**31)``. The tables do not check that an id
    is inserted once; :class:`lshcore.LSHIndex` does.

    Thread safety: queries may run from many threads at once; ``insert``, ``remove``,
    ``compact``, ``clear``, ``state`` and ``load_state`` wait for running queries and
    run alone (a readers-writer lock), so a query never sees a half-written bucket.
    """

    def __init__(
        self,
        l: int,  # noqa: E741
        num_buckets: int,
        bucket_size: int = 128,
        policy: str = "fifo",
        table_size: int | None = None,
        seed: int = 0,
        backend: str | Backend | None = None,
    ):
        self.l = check_int(l, "l", low=1, high=1 << 16)
        self.num_buckets = check_int(num_buckets, "num_buckets", low=1)
        self.policy = check_choice(policy, "policy", POLICIES)
        self.bucket_size = check_int(bucket_size, "bucket_size", low=1, high=1 << 20)
        self.seed = check_int(seed, "seed", low=0, high=2**63 - 1)
        if table_size is None:
            table_size = default_table_size(self.num_buckets, self.bucket_size, self.policy)
        table_size = check_int(table_size, "table_size", low=1, high=UNBOUNDED_TABLE_SIZE)
        if table_size < self.num_buckets and table_size & (table_size - 1):
            raise ConfigError(
                f"table_size must be a power of two when smaller than num_buckets "
                f"({self.num_buckets}); got {table_size}"
            )
        self.table_size = min(table_size, self.num_buckets)
        if self.fixed:
            slots = self.l * self.table_size * self.bucket_size
            if slots > 1 << 34:
                raise ConfigError(
                    f"l * table_size * bucket_size = {slots} slots ({slots * 4 / 2**30:.0f} GiB) is too "
                    "large; lower table_size or bucket_size, or use policy='unbounded'"
                )
        self.backend = get_backend(backend)
        self.xp = self.backend.xp
        self._id_bound = 0  # one more than the largest id ever inserted
        # the kernels write buckets in place (and the unbounded layout swaps its runs):
        # a query reading them meanwhile can index freed or half-written memory
        self._lock = RWLock()
        self.clear()

    # -- state ------------------------------------------------------------------------
    @property
    def fixed(self) -> bool:
        """True for fixed-capacity buckets (fifo, reservoir)."""
        return self.policy != "unbounded"

    def clear(self) -> None:
        """Empty every bucket."""
        with self._lock.write:
            self._clear()

    def _clear(self) -> None:
        xp = self.xp
        if self.fixed:
            shape = (self.l, self.table_size)
            self.slots = xp.full((*shape, self.bucket_size), -1, dtype=np.int32)
            self.fill = xp.zeros(shape, dtype=np.int32)
            self.head = xp.zeros(shape, dtype=np.int32)
            self.seen = xp.zeros(shape, dtype=np.int64)
        else:
            self.keys = xp.zeros(0, dtype=np.int64)
            self.entry_ids = xp.zeros(0, dtype=np.int32)
            self.n_dead = 0  # tombstones in the main run
            self._clear_pending()
            self._refresh_offsets()
        self._id_bound = 0

    @property
    def nbytes(self) -> int:
        """Bytes held by the table arrays."""
        if self.fixed:
            return int(self.slots.nbytes + self.fill.nbytes + self.head.nbytes + self.seen.nbytes)
        return int(
            self.keys.nbytes
            + self.entry_ids.nbytes
            + self.offsets.nbytes
            + self.pending_keys.nbytes
            + self.pending_ids.nbytes
            + self.pdir.nbytes
        )

    def _clear_pending(self) -> None:
        self.pending_keys = self.xp.zeros(0, dtype=np.int64)
        self.pending_ids = self.xp.zeros(0, dtype=np.int32)
        self.pending_dead = 0
        self._refresh_pending_dir()

    def _refresh_pending_dir(self) -> None:
        """The pending run's directory (``pdir``, ``pshift``): ``pdir[g]`` is the first
        pending entry whose key ``>> pshift`` is at least ``g``, about two entries per
        group, so the sketch re-rank finds a bucket there in O(1) instead of two binary
        searches per probe (same layout as ``_np_tables.pending_directory``)."""
        n_keys = self.l * self.table_size
        n = int(self.pending_keys.shape[0])
        groups = min(1 << max(0, (n // 2).bit_length()), 1 << 20)
        span = max(1, (n_keys - 1).bit_length())
        self.pshift = max(0, span - (groups.bit_length() - 1))
        n_groups = ((n_keys - 1) >> self.pshift) + 1
        if n == 0:
            self.pdir = self.xp.zeros(n_groups + 1, dtype=np.int64)
        else:
            self.pdir = self.backend.kernels.bucket_offsets(
                self.pending_keys >> self.pshift, n_groups
            )

    def _refresh_offsets(self) -> None:
        n_keys = self.l * self.table_size
        if n_keys <= OFFSETS_LIMIT:
            self.offsets = self.backend.kernels.bucket_offsets(self.keys, n_keys)
        else:
            self.offsets = self.xp.zeros(0, dtype=np.int64)

    def n_entries(self) -> int:
        """Number of (table, id) entries currently stored."""
        with self._lock.read:
            return self._n_entries()

    def _n_entries(self) -> int:
        if self.fixed:
            return int(self.fill.sum())
        return (
            int(self.keys.shape[0])
            - self.n_dead
            + int(self.pending_keys.shape[0])
            - self.pending_dead
        )

    def bucket_sizes(self) -> np.ndarray:
        """Entries per bucket, shape (l, table_size), as NumPy."""
        with self._lock.read:
            return self._bucket_sizes()

    def _bucket_sizes(self) -> np.ndarray:
        if self.fixed:
            return self.backend.to_numpy(self.fill).astype(np.int64)
        tn = self.backend.to_numpy
        keys = np.concatenate([tn(self.keys), tn(self.pending_keys)])
        live = np.concatenate([tn(self.entry_ids), tn(self.pending_ids)]) >= 0
        counts = np.bincount(keys[live], minlength=self.l * self.table_size)
        return counts.reshape(self.l, self.table_size)

    # -- helpers ----------------------------------------------------------------------
    def buckets(self, codes: Any, name: str = "codes") -> Any:
        """Validated codes (n, l) or (n, l, p) mapped to bucket indices (int64)."""
        xp = self.xp
        codes = xp.asarray(codes)
        if codes.ndim not in (2, 3) or codes.shape[1] != self.l:
            raise InputError(
                f"{name}: expected shape (n, {self.l}) or (n, {self.l}, probes), got {tuple(codes.shape)}"
            )
        if codes.dtype.kind not in "iu":
            raise InputError(f"{name}: expected integer codes, got dtype {codes.dtype}")
        if codes.size and (int(codes.min()) < 0 or int(codes.max()) >= self.num_buckets):
            raise InputError(f"{name}: codes must lie in [0, {self.num_buckets})")
        return xp.ascontiguousarray(reduce_codes(codes, self.num_buckets, self.table_size))

    def _ids(self, ids: Any, n: int) -> Any:
        arr = as_ids(self.backend.to_numpy(ids), "ids", n=n)
        return self.xp.asarray(arr)

    def _check_pair(self, ids: Any, codes: Any) -> tuple[Any, Any]:
        b = self.buckets(codes)
        if b.ndim != 2:
            raise InputError(f"codes: expected shape (n, {self.l}), got {tuple(b.shape)}")
        if b.shape[0] == 0:
            raise InputError("codes: empty batch (0 rows)")
        return self._ids(ids, b.shape[0]), b

    # -- mutation ---------------------------------------------------------------------
    def insert(self, ids: Any, codes: Any) -> None:
        """Insert ``ids`` (n,) with their codes (n, l) into every table."""
        ids, b = self._check_pair(ids, codes)
        self.insert_buckets(ids, b)

    def insert_buckets(self, ids: Any, buckets: Any) -> None:
        """Insert with already reduced, validated ``buckets`` (n, l) int64 (no checks)."""
        self._write(self._insert_buckets, ids, buckets)

    def _write(self, op: Callable[[Any, Any], None], ids: Any, buckets: Any) -> None:
        """``op(ids, buckets)`` under the write lock, unless the batch is empty."""
        if ids.shape[0] == 0:
            return
        with self._lock.write:
            op(ids, buckets)

    def _global_entries(self, ids: Any, buckets: Any) -> tuple[Any, Any]:
        """The unbounded layout's entries of ``ids`` at ``buckets`` (n, l): global keys
        ``t * T + b`` and int32 ids, table-major."""
        xp = self.xp
        gk = (xp.arange(self.l, dtype=np.int64)[:, None] * self.table_size + buckets.T).reshape(-1)
        return gk, xp.tile(ids.astype(np.int32), self.l)

    def _insert_buckets(self, ids: Any, buckets: Any) -> None:
        if self.fixed:
            self.backend.kernels.fixed_insert(
                self.slots,
                self.fill,
                self.head,
                self.seen,
                buckets,
                ids.astype(np.int32),
                self.policy == "reservoir",
                self.seed,
            )
        else:
            gk, gi = self._global_entries(ids, buckets)
            # recent inserts go to the small pending run (cheap to rewrite); it is merged
            # into the main run once it outgrows a fraction of it (amortized O(1) moves)
            self.pending_keys, self.pending_ids = self.backend.kernels.sorted_insert(
                self.pending_keys, self.pending_ids, gk, gi
            )
            self.pending_dead = 0
            if self.pending_keys.shape[0] > pending_limit(int(self.keys.shape[0])):
                self._compact()
            else:
                self._refresh_pending_dir()
        self._id_bound = max(self._id_bound, int(ids.max()) + 1)

    def remove(self, ids: Any, codes: Any) -> None:
        """Remove ``ids`` (n,) from the buckets of their codes (n, l); absent ids are ignored."""
        ids, b = self._check_pair(ids, codes)
        self.remove_buckets(ids, b)

    def remove_buckets(self, ids: Any, buckets: Any) -> None:
        """Remove with already reduced, validated ``buckets`` (n, l) int64 (no checks)."""
        self._write(self._remove_buckets, ids, buckets)

    def _remove_buckets(self, ids: Any, buckets: Any) -> None:
        if self.fixed:
            self.backend.kernels.fixed_remove(
                self.slots, self.fill, self.head, buckets, ids.astype(np.int32)
            )
            return
        gk, gi = self._global_entries(ids, buckets)
        kernels = self.backend.kernels
        # the main run's bucket starts find each entry without a search
        self.n_dead += int(
            kernels.sorted_remove_at(self.keys, self.entry_ids, self.offsets, gk, gi)
        )
        self.pending_dead += int(kernels.sorted_remove(self.pending_keys, self.pending_ids, gk, gi))
        if self.n_dead > max(1024, self.keys.shape[0] // 2):
            self._compact()

    def compact(self) -> None:
        """Merge the pending run into the main run and drop removed entries (unbounded layout)."""
        with self._lock.write:
            self._compact()

    def _compact(self) -> None:
        if self.fixed or (self.n_dead == 0 and self.pending_keys.shape[0] == 0):
            return
        live = self.pending_ids >= 0
        self.keys, self.entry_ids = self.backend.kernels.sorted_insert(
            self.keys, self.entry_ids, self.pending_keys[live], self.pending_ids[live]
        )
        self.n_dead = 0
        self._clear_pending()
        self._refresh_offsets()

    # -- query ------------------------------------------------------------------------
    def query(self, codes: Any) -> Candidates:
        """Candidates of each query, codes (m, l) or (m, l, probes); see :class:`Candidates`."""
        b = self.buckets(codes)
        return self.query_buckets(b)

    def _probe_buckets(self, buckets: Any) -> Any:
        """(m, l, p) buckets with repeated probes of a table set to -1 (looked up once)."""
        xp = self.xp
        if buckets.ndim == 2:
            buckets = buckets[:, :, None]
        if buckets.shape[2] > 1:  # two probes (or two codes) reaching one bucket: look once
            buckets = xp.sort(buckets, axis=2)
            dup = xp.zeros(buckets.shape, dtype=bool)
            dup[:, :, 1:] = buckets[:, :, 1:] == buckets[:, :, :-1]
            buckets = xp.where(dup, -1, buckets)
        return xp.ascontiguousarray(buckets, dtype=np.int64)

    def _global_keys(self, buckets: Any) -> Any:
        """(m, l * p) keys ``table * table_size + bucket`` of the unbounded layout (-1 kept)."""
        xp = self.xp
        m, l, p = buckets.shape  # noqa: E741
        off = xp.arange(l, dtype=np.int64)[None, :, None] * self.table_size
        return xp.where(buckets >= 0, buckets + off, -1).reshape(m, l * p)

    def query_rerank(
        self,
        buckets: Any,
        id_bound: int,
        vectors: Any,
        xnorm: Any,
        queries: Any,
        qnorm: Any,
        k: int,
        metric: int,
    ) -> tuple[Any, Any, int]:
        """Exact top-``k`` of the candidates of reduced ``buckets`` (m, l[, p]):
        ``(scores, ids, n_candidates)`` as ``rerank_topk`` of :meth:`query_buckets` gives
        them (``vectors`` indexed by id). The unbounded layout scores candidates as it
        finds them (kernel ``sorted_query_rerank``: no candidate lists built or sorted)."""
        with self._lock.read:
            return self._query_rerank(buckets, id_bound, vectors, xnorm, queries, qnorm, k, metric)

    def _query_rerank(
        self,
        buckets: Any,
        id_bound: int,
        vectors: Any,
        xnorm: Any,
        queries: Any,
        qnorm: Any,
        k: int,
        metric: int,
    ) -> tuple[Any, Any, int]:
        if self.fixed:
            cand = self._query_buckets(buckets, id_bound)
            scores, got = self.backend.kernels.rerank_topk(
                vectors, xnorm, cand.indptr, cand.ids, queries, qnorm, k, metric
            )
            return scores, got, int(cand.indptr[-1])
        # repeated probes need no removal here: the kernel scores each candidate once
        return self.backend.kernels.sorted_query_rerank(
            *self._rerank_args(buckets, id_bound, vectors, xnorm, queries, qnorm, k, metric)
        )

    def _rerank_args(
        self,
        buckets: Any,
        id_bound: int,
        vectors: Any,
        xnorm: Any,
        queries: Any,
        qnorm: Any,
        k: int,
        metric: int,
    ) -> _RerankArgs:
        """The leading arguments of the unbounded layout's re-rank kernels: both runs,
        the probes' global keys, the vectors and the queries."""
        b = buckets[:, :, None] if buckets.ndim == 2 else buckets
        return (
            self.keys,
            self.entry_ids,
            self.offsets,
            self.pending_keys,
            self.pending_ids,
            self._global_keys(b),
            int(id_bound),
            vectors,
            xnorm,
            queries,
            qnorm,
            int(k),
            int(metric),
        )

    def query_rerank_sketch(
        self,
        buckets: Any,
        id_bound: int,
        vectors: Any,
        xnorm: Any,
        queries: Any,
        qnorm: Any,
        k: int,
        metric: int,
        sketches: Any,
        qsketches: Any,
        n_bits: int,
        delta: float,
    ) -> tuple[Any, Any, int, int]:
        """:meth:`query_rerank` scoring exactly only the candidates a sign sketch does not
        rule out (kernel ``sorted_query_sketch_rerank``; unbounded layout only):
        ``(scores, ids, n_candidates, n_scored)``."""
        if self.fixed:
            raise ConfigError("the sketch re-rank reads the unbounded layout (policy='unbounded')")
        with self._lock.read:
            return self.backend.kernels.sorted_query_sketch_rerank(  # type: ignore[no-any-return]
                *self._rerank_args(buckets, id_bound, vectors, xnorm, queries, qnorm, k, metric),
                self.pdir,
                int(self.pshift),
                sketches,
                qsketches,
                int(n_bits),
                float(delta),
            )

    def query_buckets(self, buckets: Any, id_bound: int | None = None) -> Candidates:
        """Query with reduced ``buckets`` (m, l[, p]); duplicate probes count once."""
        with self._lock.read:
            return self._query_buckets(buckets, id_bound)

    def _query_buckets(self, buckets: Any, id_bound: int | None = None) -> Candidates:
        buckets = self._probe_buckets(buckets)
        bound = self._id_bound if id_bound is None else int(id_bound)
        if self.fixed:
            indptr, ids, counts = self.backend.kernels.fixed_query(
                self.slots, self.fill, self.head, buckets, bound
            )
        else:
            gk = self._global_keys(buckets)
            indptr, ids, counts = self.backend.kernels.sorted_query(
                self.keys,
                self.entry_ids,
                self.offsets,
                self.pending_keys,
                self.pending_ids,
                gk,
                bound,
            )
        return Candidates(indptr, ids, counts)

    # -- persistence ------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        """Constructor arguments (JSON-able), without the backend."""
        return {
            "l": self.l,
            "num_buckets": self.num_buckets,
            "bucket_size": self.bucket_size,
            "policy": self.policy,
            "table_size": self.table_size,
            "seed": self.seed,
        }

    def state(self) -> dict[str, np.ndarray]:
        """The table arrays as NumPy (for saving; copies, so later writes do not show)."""
        with self._lock.write:  # compacts first
            return self._state()

    def _state(self) -> dict[str, np.ndarray]:
        tn = self.backend.to_numpy
        if self.fixed:
            return {
                "slots": tn(self.slots).copy(),
                "fill": tn(self.fill).copy(),
                "head": tn(self.head).copy(),
                "seen": tn(self.seen).copy(),
            }
        self._compact()
        return {"keys": tn(self.keys).copy(), "entry_ids": tn(self.entry_ids).copy()}

    def load_state(self, arrays: dict[str, np.ndarray], id_bound: int) -> None:
        """Restore arrays from :meth:`state`; InputError when they do not fit this config."""
        with self._lock.write:
            self._load_state(arrays, id_bound)

    def _load_state(self, arrays: dict[str, np.ndarray], id_bound: int) -> None:
        xp = self.xp
        if self.fixed:
            shape: tuple[int, ...] = (self.l, self.table_size)
            want: dict[str, tuple[int, ...]] = {
                "slots": (*shape, self.bucket_size),
                "fill": shape,
                "head": shape,
                "seen": shape,
            }
            dtypes = {"slots": np.int32, "fill": np.int32, "head": np.int32, "seen": np.int64}
        else:
            n = arrays.get("keys", np.zeros(0)).shape[0]
            want = {"keys": (n,), "entry_ids": (n,)}
            dtypes = {"keys": np.int64, "entry_ids": np.int32}
        for name, want_shape in want.items():
            arr = arrays.get(name)
            if arr is None or arr.shape != want_shape or arr.dtype != dtypes[name]:
                got = None if arr is None else (arr.shape, str(arr.dtype))
                raise InputError(
                    f"table array {name!r}: expected {want_shape} {np.dtype(dtypes[name])}, got {got}"
                )
        if self.fixed:
            slots, fill, head = arrays["slots"], arrays["fill"], arrays["head"]
            if (
                fill.min(initial=0) < 0
                or fill.max(initial=0) > self.bucket_size
                or head.min(initial=0) < 0
                or head.max(initial=0) >= self.bucket_size
                or slots.min(initial=-1) < -1
                or slots.max(initial=-1) >= max(id_bound, 0)
                or int((slots >= 0).sum()) != int(fill.sum())
            ):
                raise InputError("table arrays are inconsistent (fill, head or ids out of range)")
            self.slots, self.fill = xp.asarray(slots), xp.asarray(fill)
            self.head, self.seen = xp.asarray(head), xp.asarray(arrays["seen"])
        else:
            keys, ids = arrays["keys"], arrays["entry_ids"]
            if (
                (keys.size and (keys.min() < 0 or keys.max() >= self.l * self.table_size))
                or (keys.size > 1 and np.any(np.diff(keys) < 0))
                or (ids.size and (ids.min() < 0 or ids.max() >= max(id_bound, 0)))
            ):
                raise InputError("table arrays are inconsistent (keys unsorted or out of range)")
            self.keys, self.entry_ids = xp.asarray(keys), xp.asarray(ids)
            self.n_dead = 0
            self._clear_pending()
            self._refresh_offsets()
        self._id_bound = int(id_bound)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"LSHTables({args}, backend={self.backend.name!r})"
