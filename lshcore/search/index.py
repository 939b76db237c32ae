"""``LSHIndex``: vectors (or just ids) in L hash tables, with candidates and exact re-rank.

The index hashes vectors with a family (optionally after a MIPS transform), keeps each
id's buckets so that ``update``/``remove`` can take the old entries out, optionally
stores the vectors (``store=True``) to re-rank candidates exactly in :meth:`search`,
and saves/loads itself with :mod:`lshcore.core.fileformat` (kind ``"lsh-index"``).

Internally every id owns a dense *row* (reused after removal); the tables hold rows,
which keeps the candidate-counting scratch small whatever the ids are.
"""

from __future__ import annotations

import inspect
import json
import os
import threading
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from lshcore.core.backend import Backend, to_numpy
from lshcore.core.fileformat import load_arrays, save_arrays
from lshcore.core.validation import as_batch, as_ids, check_choice, check_int, is_sparse
from lshcore.errors import ConfigError, FileFormatError, InputError
from lshcore.hashing.base import HashFamily, Transform
from lshcore.registry import catalog
from lshcore.registry.catalog import get_backend
from lshcore.search._rwlock import RWLock
from lshcore.search.tables import POLICIES, Candidates, LSHTables

__all__ = ["LSHIndex", "IndexParams", "FILE_KIND", "FILE_VERSION"]

FILE_KIND = "lsh-index"
FILE_VERSION = 1
ID_LIMIT = 2**31  # ids are ints in [0, 2**31)

_METRICS = {"ip": 0, "cosine": 1, "l2": 2, "jaccard": 3}
_HASH_CHUNK = 1 << 16  # rows hashed at once when adding
#: sign bits kept per vector by the sketch re-rank (eight 64-bit words: one cache line)
SKETCH_MAX_BITS = 512
#: rows up to this are packed into sketches in one vectorized pass (queries)
_PACK_SMALL = 64
#: largest Euclidean norm accepted for a vector or query. Scores are computed in float32
#: (|x| * |q|, |x|^2 + |q|^2 - 2 x.q): with both norms at most 1e18 every product stays
#: below 1e36 < 3.4e38, so every stored vector keeps a finite, correct score (near 1e20
#: the squares overflowed to inf and the vector scored 0 against everything)
MAX_NORM = 1e18


@dataclass(frozen=True)
class IndexParams:
    """Validated parameters of an :class:`LSHIndex` (hash family and tables).

    ``IndexParams.default(n, dim)`` suggests settings for nearest-neighbour search over
    ``n`` vectors (SRP, unbounded buckets, multiprobe); ``LSHIndex(dim, **asdict(p))``
    builds the index.
    """

    family: str = "srp"
    k: int = 8
    l: int = 16  # noqa: E741
    bucket_size: int = 128
    policy: str = "fifo"
    table_size: int | None = None
    n_probes: int = 1
    seed: int = 0
    sketch_delta: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.family, str) or not self.family:
            raise ConfigError(f"family must be a non-empty name, got {self.family!r}")
        check_int(self.k, "k", low=1, high=62)
        check_int(self.l, "l", low=1, high=1 << 16)
        check_int(self.bucket_size, "bucket_size", low=1, high=1 << 20)
        check_choice(self.policy, "policy", POLICIES)
        if self.table_size is not None:
            check_int(self.table_size, "table_size", low=1)
        check_int(self.n_probes, "n_probes", low=1, high=1 << 12)
        check_int(self.seed, "seed", low=0)
        _check_sketch_delta(self.sketch_delta)

    @classmethod
    def default(cls, n: int, dim: int) -> IndexParams:
        """Settings for cosine search over ``n`` vectors of size ``dim`` (tuned on
        clustered Gaussian data, see benchmarks/results/search.md): about ``log2(n) - 4``
        bits per table, 16 tables, 16 probes, unbounded buckets (recall@10 0.96 at
        1M x 128 there; K=16, L=24, 8 probes is about twice as fast at the same recall)."""
        n = check_int(n, "n", low=1)
        check_int(dim, "dim", low=1)
        k = int(min(24, max(4, round(np.log2(max(n, 2))) - 4)))
        return cls(family="srp", k=k, l=16, policy="unbounded", n_probes=16)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _accepts_backend(cls: type) -> bool:
    """Whether a family class takes ``backend=`` explicitly somewhere in its MRO."""
    for c in cls.__mro__:
        init = c.__dict__.get("__init__")
        if init is not None:
            try:
                if "backend" in inspect.signature(init).parameters:
                    return True
            except (TypeError, ValueError):
                continue
    return False


def _supports_probes(family: HashFamily) -> bool:
    return type(family).probes is not HashFamily.probes


class LSHIndex:
    """An LSH index over vectors of size ``dim``.

    Parameters: ``family`` (a registered hash family name), ``k`` (sub-hashes per
    table), ``l`` (tables), ``bucket_size`` and ``policy`` (``"fifo"``, ``"reservoir"``,
    ``"unbounded"``; see :mod:`lshcore.search.tables`), ``backend`` (``"numpy"``, ``"numba"``,
    ``"cupy"``; default the default backend), ``transform`` (a MIPS transform name such
    as ``"simple_lsh"``, or a :class:`~lshcore.Transform`; then scores are inner
    products), ``seed``, ``store`` (keep the vectors for exact re-ranking),
    ``n_probes`` (default probes per table; > 1 needs a family with multiprobe),
    ``table_size`` (buckets per table, default see :func:`lshcore.search.tables.default_table_size`)
    ``sketch_delta`` (default None: every candidate is scored exactly; see below)
    and ``**family_params`` for the family.

    Sign-sketch re-rank (``sketch_delta`` in (0, 1); SRP family, no transform, policy
    ``"unbounded"``, codes not range-reduced): the index keeps each vector's first
    ``min(k * l, 512)`` code bits, which are signs of independent Gaussian projections,
    and :meth:`search` scores exactly only the candidates whose Hamming distance to the
    query's bits does not rule them out (kernel ``sorted_query_sketch_rerank``: the
    ``k + 8`` nearest by distance, then those within a Bernstein bound of the k-th best
    cosine so far). A candidate that belongs in the exact top-k of the candidates is
    skipped with probability at most ``sketch_delta``. ``rerank_mults`` counts the
    candidates scored, ``sketch_words`` the 64-bit sketch words compared.

    Adding an id that is already in the index raises InputError (use :meth:`update`).

    Thread safety: :meth:`search`, :meth:`candidates` and the other readers may run
    from many threads at once (the numba kernels release the GIL, so they run in
    parallel); :meth:`add`, :meth:`update`, :meth:`remove`, :meth:`rehash` and
    :meth:`rebuild` wait for the running readers and then run alone (a readers-writer
    lock, writers first). ``last_cost`` is per thread.
    """

    def __init__(
        self,
        dim: int,
        family: str = "srp",
        k: int = 8,
        l: int = 16,  # noqa: E741
        bucket_size: int = 128,
        policy: str = "fifo",
        backend: str | Backend | None = None,
        transform: str | Transform | None = None,
        seed: int = 0,
        store: bool = True,
        n_probes: int = 1,
        table_size: int | None = None,
        sketch_delta: float | None = None,
        **family_params: Any,
    ):
        self.dim = check_int(dim, "dim", low=1)
        IndexParams(family, k, l, bucket_size, policy, table_size, n_probes, seed, sketch_delta)
        if not isinstance(store, bool):
            raise ConfigError(f"store must be True or False, got {store!r}")
        self.store = store
        self.backend = get_backend(backend)
        self.xp = self.backend.xp
        self.family_name = family
        self.family_params = dict(family_params)
        self.k, self.l, self.seed = int(k), int(l), int(seed)
        self.n_probes = int(n_probes)
        self.transform = self._make_transform(transform)
        self.family = self._make_family(self.seed)
        if self.n_probes > 1 and not _supports_probes(self.family):
            raise ConfigError(
                f"n_probes={self.n_probes}: hash family {family!r} supports only n_probes=1 (no multiprobe)"
            )
        self.measure = self._measure()
        # readers (search, candidates) share it, writers (add, update, remove, rehash,
        # rebuild) take it alone: a kernel reading buckets or rows while another thread
        # rewrites or reallocates them reads freed memory (segfault, double free)
        self._lock = RWLock()
        self._count_lock = threading.Lock()  # the cumulative counters, bumped by readers too
        self._tls = threading.local()  # last_cost of each thread
        #: the last read-only norms array given to search() that passed validation
        self._checked_norms: np.ndarray | None = None
        self.tables = LSHTables(
            self.l,
            self.family.num_buckets,
            bucket_size,
            policy,
            table_size,
            self.seed,
            self.backend,
        )
        #: multiplications spent hashing (adds, updates, queries, rehashes), cumulative
        self.hash_mults = 0
        #: multiplications spent re-ranking candidates in ``search``, cumulative
        self.rerank_mults = 0
        #: 64-bit sign-sketch words compared (xor + popcount) in ``search``, cumulative
        self.sketch_words = 0
        self.sketch_delta = self._check_sketch(sketch_delta)
        #: sign bits kept per vector (0 without a sketch) and the 64-bit words holding them
        self.sketch_bits = min(self.k * self.l, SKETCH_MAX_BITS) if self.sketch_delta else 0
        # padded to 1, 2, 4 or 8 words, so that aligned rows never straddle a cache line
        self._sketch_n_words = 1 << max(0, ((self.sketch_bits + 63) // 64 - 1).bit_length())
        self._reset_rows(0)

    # -- construction helpers ---------------------------------------------------------
    def _make_transform(self, transform: str | Transform | None) -> Transform | None:
        if transform is None:
            return None
        if isinstance(transform, Transform):
            if transform.dim != self.dim:
                raise ConfigError(
                    f"transform: built for dim {transform.dim}, index has dim {self.dim}"
                )
            return transform
        if isinstance(transform, str):
            return catalog.transform(transform, self.dim)
        raise ConfigError(f"transform must be a name, a Transform or None, got {transform!r}")

    def _make_family(self, seed: int) -> HashFamily:
        hash_dim = self.transform.out_dim if self.transform is not None else self.dim
        cls = catalog.family_class(self.family_name)
        extra = {"backend": self.backend} if _accepts_backend(cls) else {}
        return catalog.hash_family(
            self.family_name, hash_dim, self.k, self.l, seed=seed, **self.family_params, **extra
        )

    def _check_sketch(self, delta: float | None) -> float | None:
        """``sketch_delta`` validated against the index's family, transform and tables."""
        if delta is None:
            return None
        why = None
        if not getattr(self.family, "sign_sketch", False):
            why = f"hash family {self.family_name!r} has no sign-sketch codes (use 'srp')"
        elif self.transform is not None:
            why = "a MIPS transform scores inner products, the sketch bounds cosines"
        elif self.tables.policy != "unbounded":
            why = f"policy {self.tables.policy!r} (the sketch re-rank reads the unbounded layout)"
        elif self.tables.table_size != self.family.num_buckets:
            why = "table_size below num_buckets range-reduces the codes (their bits are lost)"
        if why is not None:
            raise ConfigError(f"sketch_delta={delta}: {why}")
        return float(delta)

    def _measure(self) -> str:
        if self.transform is not None:
            return "ip"
        m = getattr(self.family, "measure", "cosine")
        return m if m in ("l2", "jaccard") else "cosine"

    def _reset_rows(self, capacity: int) -> None:
        self._row_ids = np.full(capacity, -1, dtype=np.int64)  # external id of each row
        self._codes = np.zeros((capacity, self.l), dtype=np.int32)  # bucket per row, table
        self._vectors = np.zeros((capacity, self.dim), dtype=np.float32) if self.store else None
        self._norms = np.zeros(capacity, dtype=np.float32) if self.store else None
        self._sketch = _aligned_words(capacity, self._sketch_n_words) if self.sketch_bits else None
        self._row_of: dict[int, int] = {}
        self._n_rows = 0  # rows ever used (high-water mark)
        self._free: list[int] = []  # released rows below the mark, reused smallest first
        self._next_id = 0
        self._identity = True  # every used row r holds id r (then candidates need no sort)
        self._version = 0  # bumped whenever stored vectors change (device copy cache key)
        self._device: tuple[int, Any, Any] | None = None

    def _grow(self, need: int) -> None:
        cap = self._row_ids.shape[0]
        if need <= cap:
            return
        new = max(need, 2 * cap, 64)
        row_ids = np.full(new, -1, dtype=np.int64)
        row_ids[:cap] = self._row_ids
        codes = np.zeros((new, self.l), dtype=np.int32)
        codes[:cap] = self._codes
        self._row_ids, self._codes = row_ids, codes
        if self._sketch is not None:
            sketch = _aligned_words(new, self._sketch_n_words)
            sketch[:cap] = self._sketch
            self._sketch = sketch
        if self.store:
            vec = np.zeros((new, self.dim), dtype=np.float32)
            vec[:cap] = self._vectors
            norms = np.zeros(new, dtype=np.float32)
            norms[:cap] = self._norms
            self._vectors, self._norms = vec, norms

    # -- validation -------------------------------------------------------------------
    def _check_x(self, x: Any, name: str = "x") -> Any:
        sparse_ok = bool(getattr(self.family, "supports_sparse", False)) and self.transform is None
        if is_sparse(x) and self.store:
            raise InputError(
                f"{name}: sparse input needs store=False (this index stores dense vectors)"
            )
        x = as_batch(x, self.dim, name, allow_sparse=sparse_ok and not self.store)
        _check_norms(x, name)
        return x

    def _check_new_ids(self, ids: Any, n: int) -> np.ndarray:
        if ids is None:
            start = self._next_id
            if start + n > ID_LIMIT:
                raise InputError(f"ids: automatic ids would exceed the id limit {ID_LIMIT}")
            return np.arange(start, start + n, dtype=np.int64)
        arr = as_ids(ids, "ids", n=n, upper=ID_LIMIT)
        self._check_unique(arr)
        if self._identity:  # id i lives in row i: a vectorized membership test
            inside = arr[arr < self._n_rows]
            present = inside[self._row_ids[inside] == inside].tolist()
        else:
            present = [int(i) for i in arr.tolist() if i in self._row_of]
        if present:
            raise InputError(
                f"ids: {len(present)} id(s) already in the index (first: {present[0]}); "
                "use update() to replace their vectors"
            )
        return arr

    @staticmethod
    def _check_unique(arr: np.ndarray) -> None:
        if arr.size > 1:
            s = np.sort(arr)
            dup = s[1:][s[1:] == s[:-1]]
            if dup.size:
                raise InputError(f"ids: duplicate id {int(dup[0])} in one call")

    def _rows_of(self, ids: Any, name: str = "ids") -> tuple[np.ndarray, np.ndarray]:
        arr = as_ids(ids, name, upper=ID_LIMIT)
        if arr.size == 0:
            raise InputError(f"{name}: empty batch (0 ids)")
        self._check_unique(arr)
        if self._identity:  # id i lives in row i
            rows = np.where(arr < self._n_rows, arr, -1)
            rows[rows >= 0] = np.where(
                self._row_ids[rows[rows >= 0]] == arr[rows >= 0], rows[rows >= 0], -1
            )
        else:
            get = self._row_of.get
            rows = np.fromiter((get(i, -1) for i in arr.tolist()), dtype=np.int64, count=arr.size)
        if (rows < 0).any():
            missing = arr[rows < 0]
            raise InputError(
                f"{name}: {missing.size} id(s) not in the index (first: {int(missing[0])})"
            )
        return arr, rows

    # -- hashing ----------------------------------------------------------------------
    @property
    def last_cost(self) -> int:
        """Multiplications spent hashing in this thread's last call."""
        return int(getattr(self._tls, "cost", 0))

    def _count(self, n: int, x: Any) -> None:
        nnz = int(x.nnz) if is_sparse(x) else None
        cost = int(self.family.hash_cost(n, nnz))
        self._tls.cost = cost
        with self._count_lock:
            self.hash_mults += cost

    def _count_rerank(self, n_candidates: int) -> None:
        with self._count_lock:
            self.rerank_mults += int(n_candidates) * self.dim

    def _hash_data(self, x: Any) -> np.ndarray:
        """Bucket indices (n, l) of stored vectors (transform applied)."""
        n = x.shape[0]
        out = np.empty((n, self.l), dtype=np.int64)
        # in chunks: a family's temporaries (projections, bits) grow with n * k * l
        for lo in range(0, n, _HASH_CHUNK):
            part = x[lo : lo + _HASH_CHUNK]
            hx = self.transform.data(part) if self.transform is not None else part
            out[lo : lo + part.shape[0]] = self.backend.to_numpy(
                self.tables.buckets(self.family.hash(hx))
            )
        self._count(n, x)
        return out

    def _hash_query(self, q: Any, n_probes: int) -> Any:
        hq = self.transform.query(q) if self.transform is not None else q
        if n_probes == 1:
            codes = self.family.hash(hq)[:, :, None]
        else:
            try:
                codes = self.family.probes(hq, n_probes)
            except NotImplementedError as exc:
                raise ConfigError(
                    f"n_probes={n_probes}: hash family {self.family_name!r} supports only n_probes=1"
                ) from exc
        self._count(q.shape[0], q)
        return self.tables.buckets(codes)

    def _set_codes(self, rows: np.ndarray, buckets: np.ndarray) -> None:
        """Record the buckets (n, l) of ``rows`` (and their sign sketch)."""
        self._codes[rows] = buckets
        if self._sketch is not None:
            self._sketch[rows] = self._pack_sketch(buckets)

    def _pack_sketch(self, codes: np.ndarray) -> np.ndarray:
        """(n, l) codes -> (n, words) uint64 holding their first ``sketch_bits`` bits
        (bit j of table t at position t * k + j)."""
        return _pack_code_bits(np.asarray(codes), self.k, self.sketch_bits, self._sketch_n_words)

    def _norms_of(self, x: np.ndarray) -> np.ndarray:
        """(n,) float32 norms (squared for ``l2``) of ``x`` (n, dim), summed in float64 so
        that large finite values do not overflow."""
        sq = np.einsum("ij,ij->i", x, x, dtype=np.float64)
        return (sq if self.measure == "l2" else np.sqrt(sq)).astype(np.float32)

    def _refit_needed(self, x: Any) -> bool:
        return self.transform is not None and bool(self.transform.needs_refit(x))

    def _refit(self, x_new: Any, replace_rows: np.ndarray | None = None) -> None:
        """Refit the MIPS transform on the stored vectors plus ``x_new`` (not yet stored)."""
        assert self.transform is not None
        if len(self) == 0 or not self.store:
            if len(self) and not self.store:
                raise InputError(
                    "x: a vector's norm exceeds the fitted MIPS scale and this index keeps no "
                    "vectors (store=False); call rehash(x_all) with every vector (in ids() order) "
                    "to refit the transform"
                )
            self.transform.fit(x_new)
            return
        live = self._live_rows()
        if replace_rows is not None:
            live = np.setdiff1d(live, replace_rows)
        assert self._vectors is not None
        self.transform.fit(
            np.concatenate([self._vectors[live], np.asarray(x_new, dtype=np.float32)])
        )

    def _live_rows(self) -> np.ndarray:
        rows = np.fromiter(self._row_of.values(), dtype=np.int64, count=len(self._row_of))
        return np.sort(rows)

    # -- public API -------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._row_of)

    def __contains__(self, item: object) -> bool:
        try:
            return int(item) in self._row_of  # type: ignore[call-overload]
        except (TypeError, ValueError):
            return False

    def ids(self) -> np.ndarray:
        """Every id in the index, ascending (int64)."""
        with self._lock.read:  # the dict must not change while it is iterated
            return np.sort(
                np.fromiter(self._row_of.keys(), dtype=np.int64, count=len(self._row_of))
            )

    def vectors(self, ids: Any) -> np.ndarray:
        """The stored vectors of ``ids`` (n, dim) float32 (needs ``store=True``)."""
        if not self.store:
            raise ConfigError("vectors(): this index keeps no vectors (store=False)")
        with self._lock.read:
            _, rows = self._rows_of(ids)
            assert self._vectors is not None
            return self._vectors[rows].copy()

    def add(self, x: Any, ids: Any = None) -> np.ndarray:
        """Add vectors ``x`` (n, dim) under ``ids`` (n,) (default: the next free ids); returns the ids.

        InputError (index unchanged) for bad ``x``, an id out of [0, 2**31), a duplicate
        id in the call, or an id already present.
        """
        x = self._check_x(x)
        with self._lock.write:
            return self._add(x, ids)

    def _add(self, x: Any, ids: Any) -> np.ndarray:
        n = x.shape[0]
        arr = self._check_new_ids(ids, n)
        refit = self._refit_needed(x)
        if refit:
            self._refit(x)  # raises (unchanged) when impossible
        buckets = None if refit and len(self) else self._hash_data(x)
        rows = self._take_rows(n)
        self._row_ids[rows] = arr
        self._row_of.update(zip(arr.tolist(), rows.tolist(), strict=True))
        self._identity = self._identity and bool(np.array_equal(rows, arr))
        self._next_id = max(self._next_id, int(arr.max()) + 1)
        if self.store:
            assert self._vectors is not None and self._norms is not None
            self._vectors[rows] = x
            self._norms[rows] = self._norms_of(x)
            self._version += 1
        if buckets is None:  # the scale changed: every stored vector moves
            self._rehash_rows(None)
        else:
            self._set_codes(rows, buckets)
            self.tables.insert_buckets(self.xp.asarray(rows), self.xp.asarray(buckets))
        return arr

    def _take_rows(self, n: int) -> np.ndarray:
        reuse = self._free[:n]
        del self._free[:n]
        fresh = np.arange(self._n_rows, self._n_rows + n - len(reuse), dtype=np.int64)
        self._n_rows += fresh.size
        self._grow(self._n_rows)
        return np.concatenate([np.asarray(reuse, dtype=np.int64), fresh])

    def update(self, ids: Any, x: Any) -> None:
        """Replace the vectors of existing ``ids`` with ``x`` (n, dim) and rehash them."""
        x = self._check_x(x)
        with self._lock.write:
            self._update(ids, x)

    def _update(self, ids: Any, x: Any) -> None:
        arr, rows = self._rows_of(ids)
        if arr.size != x.shape[0]:
            raise InputError(f"ids: expected {x.shape[0]} ids (one per row of x), got {arr.size}")
        refit = self._refit_needed(x)
        if refit:
            self._refit(x, replace_rows=rows)
        new = None if refit else self._hash_data(x)
        if self.store:
            assert self._vectors is not None and self._norms is not None
            self._vectors[rows] = x
            self._norms[rows] = self._norms_of(x)
            self._version += 1
        if new is None:
            self._rehash_rows(None)
            return
        xp = self.xp
        self.tables.remove_buckets(xp.asarray(rows), xp.asarray(self._codes[rows].astype(np.int64)))
        self._set_codes(rows, new)
        self.tables.insert_buckets(xp.asarray(rows), xp.asarray(new))

    def remove(self, ids: Any) -> None:
        """Remove ``ids`` (InputError, index unchanged, if one is absent)."""
        with self._lock.write:
            self._remove(ids)

    def _remove(self, ids: Any) -> None:
        arr, rows = self._rows_of(ids)
        xp = self.xp
        self.tables.remove_buckets(xp.asarray(rows), xp.asarray(self._codes[rows].astype(np.int64)))
        for i in arr.tolist():
            del self._row_of[i]
        self._row_ids[rows] = -1
        if self.store:
            assert self._vectors is not None and self._norms is not None
            self._vectors[rows] = 0
            self._norms[rows] = 0
            self._version += 1
        self._free = sorted(set(self._free).union(rows.tolist()))
        if not self._row_of:  # empty again: start rows afresh
            self._n_rows, self._free, self._identity = 0, [], True

    def candidates(self, q: Any, n_probes: int | None = None) -> Candidates:
        """Candidate ids of each query ``q`` (m, dim) with how many (table, probe) buckets held each."""
        q = as_batch(q, self.dim, "q", allow_sparse=self._sparse_queries())
        _check_norms(q, "q")
        probes = self._probes(n_probes)
        with self._lock.read:
            self._check_probes(probes)
            return self._to_ids(self._row_candidates(q, probes))

    def _probes(self, n_probes: int | None) -> int:
        if n_probes is None:
            return self.n_probes
        return check_int(n_probes, "n_probes", low=1, high=1 << 12)

    def _check_probes(self, probes: int) -> None:
        if probes > 1 and not _supports_probes(self.family):
            raise ConfigError(
                f"n_probes={probes}: hash family {self.family_name!r} supports only n_probes=1 (no multiprobe)"
            )

    def _sparse_queries(self) -> bool:
        return (
            bool(getattr(self.family, "supports_sparse", False))
            and self.transform is None
            and not self.store
        )

    def _row_candidates(self, q: Any, probes: int) -> Candidates:
        buckets = self._hash_query(q, probes)
        return self.tables.query_buckets(buckets, id_bound=max(self._n_rows, 1))

    def _to_ids(self, cand: Candidates) -> Candidates:
        if self._identity:
            return cand
        rows = self.backend.to_numpy(cand.ids)
        ids = self._row_ids[rows]
        indptr = self.backend.to_numpy(cand.indptr)
        counts = self.backend.to_numpy(cand.counts)
        qidx = np.repeat(np.arange(indptr.shape[0] - 1), np.diff(indptr))
        order = np.lexsort((ids, qidx))  # ascending ids within each query
        xp = self.xp
        return Candidates(xp.asarray(indptr), xp.asarray(ids[order]), xp.asarray(counts[order]))

    def search(
        self,
        q: Any,
        k: int,
        *,
        n_probes: int | None = None,
        vectors: Any = None,
        norms: Any = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` best candidates of each query by exact score: ``(scores, ids)``, shape (m, k).

        Scores: inner product with a MIPS transform, cosine for cosine families, minus
        the Euclidean distance for ``l2`` families, Jaccard (of the non-zero supports)
        for ``jaccard`` families. Best first; ids padded with -1 and scores with -inf
        when a query has fewer than ``k`` candidates. With ``store=False`` pass
        ``vectors`` (N, dim), row i holding the vector of id i, and optionally their
        ``norms`` (N,) (Euclidean norms; squared norms for ``l2`` families), which
        spares recomputing them on every call (e.g. all ones for unit vectors). A
        float32 C-contiguous ``vectors`` with ``norms`` given is used as is (no copy,
        no O(N) scan): only its shape and dtype are checked.
        """
        k = check_int(k, "k", low=1, high=1 << 20)
        q = as_batch(q, self.dim, "q")
        _check_norms(q, "q")
        probes = self._probes(n_probes)
        with self._lock.read:
            base, base_norms = self._search_base(vectors, norms)
            self._check_probes(probes)
            if self.measure == "jaccard":
                return self._search_jaccard(q, k, probes, base)
            if self.backend.host_arrays and (self.store or self._identity):
                return self._search_fused(q, k, probes, base, base_norms)
            return self._search_candidates(q, k, probes, base, base_norms)

    def _search_base(self, vectors: Any, norms: Any) -> tuple[np.ndarray, np.ndarray]:
        """The vectors (N, dim) float32 and norms (N,) to score against: the stored ones,
        or the caller's (``store=False``)."""
        if self.store:
            if vectors is not None or norms is not None:
                raise ConfigError(
                    "search(): this index stores its vectors (store=True); do not pass vectors= or norms="
                )
            assert self._vectors is not None and self._norms is not None
            return self._vectors, self._norms
        if vectors is None:
            raise ConfigError("search(): this index keeps no vectors (store=False); pass vectors=")
        return self._external_vectors(vectors, norms)

    def _search_fused(
        self, q: np.ndarray, k: int, probes: int, base: np.ndarray, norms: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Host backends, rows usable as vector indices: one kernel finds the candidates
        and scores them as it goes (no candidate lists built or sorted)."""
        tn = self.backend.to_numpy
        buckets = self._hash_query(q, probes)
        if self._sketch is not None and self.measure == "cosine":
            first = tn(buckets)
            first = first[:, :, 0] if first.ndim == 3 else first
            scores, got, n_cand, n_scored = self.tables.query_rerank_sketch(
                buckets,
                max(self._n_rows, 1),
                base,
                norms,
                q,
                self._norms_of(q),
                k,
                _METRICS[self.measure],
                self._sketch,
                self._pack_sketch(first),
                self.sketch_bits,
                float(self.sketch_delta),  # type: ignore[arg-type]
            )
            self._count_rerank(n_scored)
            with self._count_lock:
                self.sketch_words += int(n_cand) * self._sketch_n_words
            return self._search_result(tn(scores), tn(got))
        scores, got, n_cand = self.tables.query_rerank(
            buckets,
            max(self._n_rows, 1),
            base,
            norms,
            q,
            self._norms_of(q),
            k,
            _METRICS[self.measure],
        )
        self._count_rerank(n_cand)
        return self._search_result(tn(scores), tn(got))

    def _rerank_rows(self, q: Any, probes: int) -> tuple[np.ndarray, np.ndarray]:
        """Candidate CSR ``(indptr (m+1,), rows)`` as NumPy int64, indexing ``base``: rows
        of the stored vectors, or ids into the caller's vectors (``store=False``)."""
        cand = self._row_candidates(q, probes)
        if not self.store:  # the caller's vectors are indexed by id
            cand = self._to_ids(cand)
        tn = self.backend.to_numpy
        indptr, rows = tn(cand.indptr), tn(cand.ids)
        self._count_rerank(rows.shape[0])
        return indptr, rows

    def _search_candidates(
        self, q: np.ndarray, k: int, probes: int, base: np.ndarray, norms: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Generic path (any backend): candidate lists, then the backend's ``rerank_topk``."""
        indptr, rows = self._rerank_rows(q, probes)
        xp, tn = self.xp, self.backend.to_numpy
        base_x, norms_x = self._on_device(base, norms)
        scores, got = self.backend.kernels.rerank_topk(
            base_x,
            norms_x,
            xp.asarray(indptr),
            xp.asarray(rows),
            xp.asarray(q),
            xp.asarray(self._norms_of(q)),
            k,
            _METRICS[self.measure],
        )
        return self._search_result(tn(scores), tn(got))

    def _search_jaccard(
        self, q: np.ndarray, k: int, probes: int, base: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Jaccard families: candidates scored by support overlap (NumPy)."""
        indptr, rows = self._rerank_rows(q, probes)
        scores, got = _rerank_jaccard(base, indptr, rows, q, k)
        return self._search_result(scores, got)

    def _search_result(self, scores: np.ndarray, got: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(scores, ids)`` from re-ranked rows (stored index) or ids (store=False)."""
        if self.store:
            ids = np.full(got.shape, -1, dtype=np.int64)
            ids[got >= 0] = self._row_ids[got[got >= 0]]
        else:
            ids = got
        return scores, ids

    def _external_vectors(self, vectors: Any, norms: Any) -> tuple[np.ndarray, np.ndarray]:
        """Validated ``vectors`` (N, dim) and ``norms`` (N,) of a store=False index."""
        fast = (
            norms is not None
            and isinstance(vectors, np.ndarray)
            and vectors.dtype == np.float32
            and vectors.flags.c_contiguous
        )
        if fast:
            if vectors.ndim != 2 or vectors.shape[1] != self.dim or vectors.shape[0] == 0:
                raise InputError(
                    f"vectors: expected shape (n, {self.dim}), got {tuple(vectors.shape)}"
                )
            base = vectors
        else:
            base = np.ascontiguousarray(as_batch(vectors, self.dim, "vectors"))
        # identity rows: every id is below the row high-water mark (no O(N) max needed)
        fits = self._identity and self._n_rows <= base.shape[0]
        if not fits and self._n_rows and int(self._row_ids.max()) >= base.shape[0]:
            raise InputError(
                f"vectors: has {base.shape[0]} rows but the index holds id {int(self._row_ids.max())}"
            )
        if norms is None:
            return base, self._norms_of(base)
        checked = self._checked_norms
        if (
            checked is not None
            and norms is checked
            and not checked.flags.writeable
            and checked.shape == (base.shape[0],)
            and checked.dtype == np.float32
        ):
            return base, checked  # read-only and validated before: no O(N) scan per search
        arr = np.asarray(norms)
        if arr.dtype.kind not in "fiu" or arr.dtype == np.bool_:
            raise InputError(f"norms: expected a real-valued array, got dtype {arr.dtype}")
        if arr.shape != (base.shape[0],):
            raise InputError(
                f"norms: expected shape ({base.shape[0]},) (one per row of vectors), got {arr.shape}"
            )
        arr = np.ascontiguousarray(arr, dtype=np.float32)
        if not bool(np.isfinite(arr).all()) or (arr.size and float(arr.min()) < 0):
            raise InputError("norms: must be finite and non-negative")
        if arr is norms and not arr.flags.writeable and arr.base is None:
            self._checked_norms = arr  # cannot change: later searches skip the scan
        return base, arr

    def _on_device(self, base: Any, norms: Any) -> tuple[Any, Any]:
        """Vectors and norms as arrays of the backend (a GPU copy of the stored vectors is
        kept until they change)."""
        xp = self.xp
        if self.backend.host_arrays or not self.store:
            return xp.asarray(base), xp.asarray(norms)
        if self._device is None or self._device[0] != self._version:
            self._device = (self._version, xp.asarray(base), xp.asarray(norms))
        return self._device[1], self._device[2]

    # -- rehash / rebuild -------------------------------------------------------------
    def _rehash_rows(self, x_all: Any) -> None:
        """Recompute every id's buckets (from ``x_all`` in row order, or the stored vectors)."""
        rows = self._live_rows()
        self.tables.clear()
        if rows.size == 0:
            return
        x = self._vectors[rows] if x_all is None else x_all  # type: ignore[index]
        buckets = self._hash_data(x)
        self._set_codes(rows, buckets)
        self.tables.insert_buckets(self.xp.asarray(rows), self.xp.asarray(buckets))

    def _x_for_all(self, x: Any) -> Any:
        """``x`` given in ids() order, validated, reordered to row order (or None = stored)."""
        if x is None:
            if not self.store:
                raise ConfigError(
                    "this index keeps no vectors (store=False); pass x with every vector in ids() order"
                )
            return None
        x = self._check_x(x)
        if x.shape[0] != len(self):
            raise InputError(
                f"x: expected {len(self)} rows (one per id, in ids() order), got {x.shape[0]}"
            )
        ids = self.ids()
        rows = np.fromiter((self._row_of[i] for i in ids.tolist()), dtype=np.int64, count=ids.size)
        order = np.argsort(rows)  # row order of live rows
        return x[order]

    def rehash(self, x: Any = None) -> None:
        """Re-insert every id with the same functions (from ``x``, in ids() order, or the stored vectors).

        With a transform the scale is refitted first; a given ``x`` also replaces the
        stored vectors.
        """
        with self._lock.write:
            self._rehash(x)

    def _rehash(self, x: Any) -> None:
        xr = self._x_for_all(x)
        if len(self) == 0:
            return
        if self.transform is not None:
            self.transform.fit(self._vectors[self._live_rows()] if xr is None else xr)  # type: ignore[index]
        if xr is not None and self.store:
            rows = self._live_rows()
            self._vectors[rows] = xr  # type: ignore[index]
            self._version += 1
            self._norms[rows] = self._norms_of(np.asarray(xr))  # type: ignore[index]
        self._rehash_rows(xr)

    def rebuild(self, seed: int | None = None, x: Any = None) -> None:
        """Draw new hash functions (``seed``, default ``self.seed + 1``) and re-insert every id."""
        new_seed = self.seed + 1 if seed is None else check_int(seed, "seed", low=0)
        with self._lock.write:
            self._rebuild(new_seed, x)

    def _rebuild(self, new_seed: int, x: Any) -> None:
        if len(self):
            self._x_for_all(x)  # validate before changing anything
        family = self._make_family(new_seed)
        self.family, self.seed = family, new_seed
        self.tables = LSHTables(
            self.l,
            family.num_buckets,
            self.tables.bucket_size,
            self.tables.policy,
            self.tables.table_size,
            new_seed,
            self.backend,
        )
        if len(self):
            self._rehash(x)

    # -- persistence ------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        """Constructor arguments (JSON-able, without backend and transform state)."""
        return {
            "dim": self.dim,
            "family": self.family_name,
            "k": self.k,
            "l": self.l,
            "bucket_size": self.tables.bucket_size,
            "policy": self.tables.policy,
            "seed": self.seed,
            "store": self.store,
            "n_probes": self.n_probes,
            "table_size": self.tables.table_size,
            "sketch_delta": self.sketch_delta,
            **self.family_params,
        }

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the index to ``path`` atomically (lshcore file, kind ``"lsh-index"``, version 1).

        Searches may go on meanwhile; writers wait until the arrays are copied.
        """
        with self._lock.read:
            meta, arrays = self._snapshot()
        save_arrays(path, FILE_KIND, FILE_VERSION, meta, arrays)

    def _snapshot(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """``(meta, arrays)`` of :meth:`save` (copies of the arrays)."""
        rows = np.arange(self._n_rows)
        meta = {
            "config": self.config(),
            "family_params": sorted(self.family_params),
            "family_config": _jsonable(self.family.config()),
            "transform": None
            if self.transform is None
            else {"name": self.transform.name, "config": _jsonable(self.transform.config())},
            "n_rows": self._n_rows,
            "next_id": self._next_id,
            "counters": {
                "hash_mults": self.hash_mults,
                "rerank_mults": self.rerank_mults,
                "sketch_words": self.sketch_words,
            },
        }
        arrays = {"row_ids": self._row_ids[rows], "codes": self._codes[rows]}
        if self.store:
            assert self._vectors is not None
            arrays["vectors"] = self._vectors[rows]
        for name, arr in self.tables.state().items():
            arrays["tables/" + name] = arr
        return meta, arrays

    @classmethod
    def load(cls, path: str | os.PathLike[str], backend: str | Backend | None = None) -> LSHIndex:
        """Read an index written by :meth:`save`; FileFormatError for a foreign or damaged file."""
        meta, arrays, _ = load_arrays(path, FILE_KIND, FILE_VERSION)
        try:
            config = dict(meta["config"])
            tinfo = meta["transform"]
            transform = None
            if tinfo is not None:
                tconf = dict(tinfo["config"])
                tdim = tconf.pop("dim")
                transform = catalog.transform(tinfo["name"], tdim, **tconf)
            index = cls(backend=backend, transform=transform, **config)
            if json.loads(json.dumps(_jsonable(index.family.config()))) != meta["family_config"]:
                raise FileFormatError(
                    f"{path}: the hash family config does not match the saved one"
                )
            n_rows = int(meta["n_rows"])
            row_ids = arrays["row_ids"]
            codes = arrays["codes"]
            if row_ids.shape != (n_rows,) or row_ids.dtype != np.int64:
                raise FileFormatError(f"{path}: array row_ids has the wrong shape or dtype")
            if codes.shape != (n_rows, index.l) or codes.dtype != np.int32:
                raise FileFormatError(f"{path}: array codes has the wrong shape or dtype")
            if codes.size and (codes.min() < 0 or codes.max() >= index.tables.table_size):
                raise FileFormatError(f"{path}: array codes holds buckets out of range")
            live = np.nonzero(row_ids >= 0)[0]
            ids = row_ids[live]
            if ids.size and (ids.max() >= ID_LIMIT or np.unique(ids).size != ids.size):
                raise FileFormatError(f"{path}: array row_ids holds invalid or repeated ids")
            index._grow(n_rows)
            index._n_rows = n_rows
            index._row_ids[:n_rows] = row_ids
            index._set_codes(np.arange(n_rows), codes)
            if index.store:
                vec = arrays["vectors"]
                if (
                    vec.shape != (n_rows, index.dim)
                    or vec.dtype != np.float32
                    or not np.isfinite(vec).all()
                ):
                    raise FileFormatError(
                        f"{path}: array vectors has the wrong shape, dtype or values"
                    )
                assert index._vectors is not None and index._norms is not None
                index._vectors[:n_rows] = vec
                index._norms[:n_rows] = index._norms_of(vec) if n_rows else 0
                index._version += 1
            index._row_of = dict(zip(ids.tolist(), live.tolist(), strict=True))
            index._free = np.nonzero(row_ids < 0)[0].tolist()
            index._next_id = int(meta["next_id"])
            index._identity = bool(np.all((row_ids == np.arange(n_rows)) | (row_ids < 0)))
            state = {k.split("/", 1)[1]: v for k, v in arrays.items() if k.startswith("tables/")}
            index.tables.load_state(state, n_rows)
            held = [v[v >= 0].ravel() for k, v in state.items() if k in ("slots", "entry_ids")]
            held_rows = np.concatenate(held) if held else np.zeros(0, dtype=np.int64)
            if held_rows.size and (row_ids[held_rows] < 0).any():
                raise FileFormatError(f"{path}: the tables hold rows that are not in the index")
            counters = meta.get("counters", {})
            index.hash_mults = int(counters.get("hash_mults", 0))
            index.rerank_mults = int(counters.get("rerank_mults", 0))
            index.sketch_words = int(counters.get("sketch_words", 0))
        except FileFormatError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError, LookupError) as exc:
            raise FileFormatError(
                f"{path}: not a valid lsh-index file ({type(exc).__name__}: {exc})"
            ) from exc
        return index

    def __repr__(self) -> str:
        return (
            f"LSHIndex(dim={self.dim}, family={self.family_name!r}, k={self.k}, l={self.l}, "
            f"policy={self.tables.policy!r}, bucket_size={self.tables.bucket_size}, "
            f"n={len(self)}, backend={self.backend.name!r})"
        )


def _check_sketch_delta(delta: Any) -> None:
    if delta is None:
        return
    if isinstance(delta, bool) or not isinstance(delta, (int, float, np.floating)):
        raise ConfigError(f"sketch_delta must be None or a number in (0, 1), got {delta!r}")
    if not 0.0 < float(delta) < 1.0:
        raise ConfigError(f"sketch_delta must lie in (0, 1) (exclusive), got {delta!r}")


def _aligned_words(n: int, words: int) -> np.ndarray:
    """Zeroed (n, words) uint64 whose rows start on 64-byte boundaries when a row is a
    power-of-two share of a cache line or more (one line read per sketch)."""
    pad = 8
    buf = np.zeros(n * words + pad, dtype=np.uint64)
    off = (-buf.ctypes.data % 64) // 8
    return buf[off : off + n * words].reshape(n, words)


def _pack_code_bits(codes: np.ndarray, k: int, n_bits: int, n_words: int) -> np.ndarray:
    """(n, l) codes of k bits -> (n, n_words) uint64 with their first ``n_bits`` bits
    (bit j of code t at position t * k + j)."""
    n = codes.shape[0]
    if n <= _PACK_SMALL:  # a few rows (queries): one vectorized pass, no loop over tables
        used = (n_bits + k - 1) // k
        shifts = np.arange(k, dtype=np.int64)
        bits = ((codes[:, :used, None].astype(np.int64) >> shifts) & 1).astype(np.uint8)
        flat = np.zeros((n, n_words * 64), dtype=np.uint8)
        flat[:, :n_bits] = bits.reshape(n, used * k)[:, :n_bits]
        packed = np.packbits(flat, axis=1, bitorder="little")
        return np.ascontiguousarray(packed).view("<u8").astype(np.uint64).reshape(n, n_words)
    out = np.zeros((n, n_words), dtype=np.uint64)
    c = codes.astype(np.uint64)
    for t in range((n_bits + k - 1) // k):
        off = t * k
        w, sh = divmod(off, 64)
        nb = min(k, n_bits - off)
        v = c[:, t] if nb == k else c[:, t] & np.uint64((1 << nb) - 1)
        out[:, w] |= v << np.uint64(sh)
        if sh + nb > 64:
            out[:, w + 1] |= v >> np.uint64(64 - sh)
    return out


def _check_norms(x: Any, name: str) -> None:
    """InputError naming the first row of ``x`` (n, dim), dense or CSR, whose norm exceeds
    :data:`MAX_NORM` (computed in float64: no overflow)."""
    if is_sparse(x):
        csr = x.tocsr()
        rows = np.repeat(np.arange(csr.shape[0]), np.diff(csr.indptr))
        sq = np.bincount(
            rows, weights=np.square(csr.data, dtype=np.float64), minlength=csr.shape[0]
        )
    else:
        a = to_numpy(x)
        sq = np.einsum("ij,ij->i", a, a, dtype=np.float64)
    big = np.flatnonzero(sq > MAX_NORM * MAX_NORM)
    if big.size:
        i = int(big[0])
        raise InputError(
            f"{name}: row {i} has norm {np.sqrt(sq[i]):.3g}, above the limit {MAX_NORM:.0e} "
            "(scores are float32 and would overflow); scale the vectors down"
        )


def _jsonable(d: dict[str, Any]) -> dict[str, Any]:
    """Plain JSON types (NumPy scalars to Python); backends dropped."""
    out: dict[str, Any] = {}
    for key, v in d.items():
        if isinstance(v, Backend) or key == "backend":
            continue
        if isinstance(v, np.generic):
            v = v.item()
        out[key] = v
    return out


def _rerank_jaccard(
    base: np.ndarray, indptr: np.ndarray, rows: np.ndarray, q: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k by Jaccard similarity of the non-zero supports (NumPy, chunked)."""
    m = q.shape[0]
    out_s = np.full((m, k), -np.inf, dtype=np.float32)
    out_r = np.full((m, k), -1, dtype=np.int64)
    if rows.size == 0:
        return out_s, out_r
    counts = np.diff(indptr)
    qidx = np.repeat(np.arange(m), counts)
    scores = np.empty(rows.size, dtype=np.float32)
    step = max(1, (1 << 22) // base.shape[1])
    for lo in range(0, rows.size, step):
        a = base[rows[lo : lo + step]] != 0
        b = q[qidx[lo : lo + step]] != 0
        inter = (a & b).sum(1)
        union = (a | b).sum(1)
        scores[lo : lo + step] = np.where(union > 0, inter / np.maximum(union, 1), 0)
    order = np.lexsort((rows, -scores.astype(np.float64), qidx))
    rank = np.arange(rows.size) - np.repeat(indptr[:-1], counts)
    sel = order[rank < k]
    out_s[qidx[sel], rank[rank < k]] = scores[sel]
    out_r[qidx[sel], rank[rank < k]] = rows[sel]
    return out_s, out_r
