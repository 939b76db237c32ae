"""Active-set selection: which neurons of a layer to compute for each input.

An :class:`ActiveSelector` keeps LSH tables over a layer's rows ``[w, b]`` (through a
MIPS transform, the bias folded in as an extra coordinate) and, for a batch of inputs
``[x, 1]``, picks the neurons likely to have the largest activations. It is used by the
core hashed layer and by the framework adapters.

Policies (``policy=``):

- ``topk`` (Spring & Shrivastava 2017): the ``m = ceil(active * n_out)`` neurons hit in
  the most tables; ties broken at random (seeded); padded with random neurons when
  fewer than ``m`` were hit.
- ``union`` (SLIDE): any neuron hit in at least one table, a random subset when more
  than ``m``, padded at random to ``m``.
- ``threshold``: neurons hit in at least ``threshold`` tables (at most ``m``, no padding).
- ``batch_union`` (Mongoose): one set for the whole batch, the ``batch_factor * m``
  neurons with the most hits summed over the batch.
- ``batch_rerank``: the candidates of ``batch_union`` (at least the layer's work budget:
  :func:`~lshcore.training.params.batch_block_size`) computed as one dense block, then
  each input keeps its ``m`` largest exact activations (the others are zeroed, forward
  and backward): a per-input set of ``m`` at the price of one BLAS product per batch.
- ``rerank``: the ``rerank * m`` neurons hit most often (as ``topk``), then the ``m`` with
  the largest activations among them, computed exactly (the multiplications are counted
  in ``hash_mults``): LSH as a candidate generator, as in LSH search.
- ``exact``: the true top ``m`` by activation (an oracle: costs a dense product).
- ``random``: ``m`` neurons at random (the baseline).

(``rerank``, ``exact``: equal activations go to the smaller id, on every backend.)

In training (``training=True`` with ``labels``) the label neurons are always active.

``tiebreak`` (``topk``, ``rerank``, ``threshold``; sorted tables): ``"random"`` (default)
breaks equal hit counts with a seeded random priority; ``"norm"`` prefers the rows
``[w, b]`` with the larger norm (ranked at each table refresh, counted as rehashing).

On a device backend a selector given the layer's device arrays
(:meth:`~ActiveSelector.fit_device`, or :meth:`~ActiveSelector.attach` after
:meth:`~ActiveSelector.fit`) keeps its tables, query codes and choice there when its
settings allow (:attr:`~ActiveSelector.can_select_on_device`; see
:mod:`lshcore.training.device_select`), for every policy: ``rerank`` and ``exact`` then
score against the device weights; a MIPS transform with device methods (``simple_lsh``,
``sign_alsh``) is fitted, applied and refitted there, and ``tiebreak="norm"`` ranked
there.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from lshcore.core.backend import Backend, is_device_array
from lshcore.core.validation import as_batch, check_int, is_sparse
from lshcore.errors import ConfigError, InputError, NotFittedError
from lshcore.registry import catalog
from lshcore.registry.catalog import get_backend
from lshcore.search.index import LSHIndex
from lshcore.training.device_select import (
    DeviceActiveSet,
    DeviceTables,
    dense_query,
    norm_priorities,
    rerank_rows,
    score_inputs,
    select_batch,
    select_exact,
    select_random,
    select_rows,
    top_by_score,
)
from lshcore.training.params import (
    DEFAULT_REHASH,
    LSH_POLICIES,
    POLICIES,
    TIEBREAKS,
    SelectionParams,
    auto_params,
    batch_block_size,
)
from lshcore.training.schedule import Schedule, parse_schedule

__all__ = [
    "ActiveSet",
    "ActiveSelector",
    "SparseBatch",
    "POLICIES",
    "LSH_POLICIES",
    "labels_matrix",
    "SelectionParams",
    "DEFAULT_REHASH",
    "TIEBREAKS",
]


@dataclass
class SparseBatch:
    """A batch of sparse vectors in padded form: ``ids (B, w)`` int64 (-1 padding) and
    ``vals (B, w)`` float32; ``dim`` is the length of the vectors. ``ids`` is a host
    array, except in the output of a layer whose selector chose on the device: there
    ``ids`` is ``dev_ids`` (the ids never went to the host)."""

    ids: np.ndarray
    vals: np.ndarray
    dim: int
    #: every row holds the same ids (a shared active set, ``batch_union``): ``vals`` is
    #: then a dense (B, w) block over the columns ``ids[0]``
    shared: bool = False
    #: ``vals`` lives on a device (a device layer's output); ``ids`` stays on the host
    #: unless it is ``dev_ids``
    device: bool = False
    #: the device copy of ``ids`` when its producer has one (saves copying it back up)
    dev_ids: Any = None

    @property
    def batch_size(self) -> int:
        return int(self.ids.shape[0])

    def to_dense(self) -> np.ndarray:
        """The (B, dim) float32 dense form."""
        out = np.zeros((self.ids.shape[0], self.dim + 1), np.float32)
        rows = np.broadcast_to(np.arange(self.ids.shape[0])[:, None], self.ids.shape)
        cols = np.where(self.ids >= 0, self.ids, self.dim)
        np.add.at(out, (rows, cols), np.where(self.ids >= 0, self.vals, 0))
        return out[:, : self.dim]

    def nnz(self) -> int:
        return int(((self.ids >= 0) & (self.vals != 0)).sum())

    def to_csr(self, extra_one: bool = False) -> Any:
        """scipy CSR (B, dim) of the non-zeros; with ``extra_one`` (B, dim + 1) with a
        trailing 1 per row (the bias coordinate)."""
        import scipy.sparse as sp

        ok = (self.ids >= 0) & (self.vals != 0)
        batch = self.ids.shape[0]
        rows = np.broadcast_to(np.arange(batch)[:, None], self.ids.shape)[ok]
        cols = self.ids[ok]
        vals = self.vals[ok].astype(np.float32)
        dim = self.dim
        if extra_one:
            rows = np.concatenate([rows, np.arange(batch)])
            cols = np.concatenate([cols, np.full(batch, dim)])
            vals = np.concatenate([vals, np.ones(batch, np.float32)])
            dim += 1
        csr = sp.csr_matrix((vals, (rows, cols)), shape=(batch, dim))
        csr.sum_duplicates()
        csr.sort_indices()
        return csr


@dataclass
class ActiveSet:
    """The neurons selected for each input of a batch.

    ``ids (B, m)`` int64, ascending in each row, -1 padding at the end; ``hash_mults``
    the multiplications the selection cost (hashing the queries; the dense product for
    ``exact``); ``shared`` is True when every row holds the same set (``batch_union``).
    """

    ids: np.ndarray
    hash_mults: int = 0
    shared: bool = False
    #: selection work that is not multiplication (bucket entries read, candidates
    #: counted, keys ranked, binary-search steps, comparisons of WTA/DWTA hashing)
    work: int = 0

    @property
    def m(self) -> int:
        """The padded width (the most neurons any row may hold)."""
        return int(self.ids.shape[1])

    @property
    def batch_size(self) -> int:
        return int(self.ids.shape[0])

    def counts(self) -> np.ndarray:
        """Number of selected neurons per row, (B,) int64."""
        return (self.ids >= 0).sum(axis=1)

    def to_csr(self) -> tuple[np.ndarray, np.ndarray]:
        """CSR form ``(indptr (B+1,), ids (nnz,))``."""
        ok = self.ids >= 0
        indptr = np.zeros(self.ids.shape[0] + 1, np.int64)
        np.cumsum(ok.sum(axis=1), out=indptr[1:])
        return indptr, self.ids[ok]


def _dense_query(x: Any, n_in: int) -> np.ndarray | None:
    """``[x, 1]`` as a dense (B, n_in + 1) float32 array for a dense or shared-set input
    (None for other inputs)."""
    if isinstance(x, SparseBatch):
        if not x.shared:
            return None
        q = np.zeros((x.batch_size, n_in + 1), np.float32)
        q[:, x.ids[0]] = x.vals
    elif isinstance(x, np.ndarray):
        q = np.empty((x.shape[0], n_in + 1), np.float32)
        q[:, :n_in] = x
    else:
        return None
    q[:, n_in] = 1.0
    return q


def labels_matrix(labels: Any, batch: int, n_out: int) -> np.ndarray:
    """Labels as a (B, n_labels) int64 matrix padded with -1 (InputError when invalid)."""
    if labels is None:
        return np.full((batch, 0), -1, np.int64)
    if isinstance(labels, np.ndarray) and labels.ndim == 2:
        mat = labels.astype(np.int64)
    elif isinstance(labels, (list, tuple)) and any(np.ndim(v) > 0 for v in labels):
        if len(labels) != batch:
            raise InputError(f"labels: expected {batch} label lists, got {len(labels)}")
        lists = [np.asarray(v, np.int64).reshape(-1) for v in labels]
        width = max((v.size for v in lists), default=0)
        mat = np.full((batch, width), -1, np.int64)
        for i, v in enumerate(lists):
            mat[i, : v.size] = v
    else:
        arr = np.asarray(labels)
        if arr.ndim != 1 or arr.dtype.kind not in "iu":
            raise InputError(
                f"labels: expected (B,) integers or a list of label arrays, got {arr.dtype} {arr.shape}"
            )
        mat = arr.astype(np.int64)[:, None]
    if mat.shape[0] != batch:
        raise InputError(f"labels: expected {batch} rows, got {mat.shape[0]}")
    if mat.size and (mat.max() >= n_out or mat.min() < -1):
        raise InputError(
            f"labels: ids must lie in [0, {n_out}), got {int(mat.max())}/{int(mat.min())}"
        )
    return np.ascontiguousarray(mat)


#: largest key space addressed directly (per table, 8 bytes per bucket)
MAX_DIRECT_BUCKETS = 1 << 16
#: policies whose tables and choice can live on a device (see ActiveSelector.attach):
#: every policy (rerank and exact score against the layer's device weights there)
DEVICE_POLICIES = (
    "topk", "union", "threshold", "batch_union", "batch_rerank", "rerank", "exact", "random",
)  # fmt: skip
#: what a MIPS transform offers to be applied on the device (lshcore.hashing.mips); a
#: transform plugin without them keeps its selector on the host
DEVICE_TRANSFORM_METHODS = ("device_fit", "device_needs_refit", "device_data", "device_query")
_NO_OFFSETS = np.zeros((0, 0), np.int64)


class _Tables:
    """The current LSH functions and their tables, replaced as a whole (lock-free reads).

    ``codes (n_out, L)``; ``sorted_codes``/``sorted_ids`` (L, n_out): each table's codes in
    ascending order and the row ids in that order.
    """

    def __init__(self, family: Any, transform: Any, codes: np.ndarray):
        self.family = family
        self.transform = transform
        self.tie: np.ndarray | None = None  # fixed tie-break priorities (tiebreak="norm")
        self.set_codes(codes)

    def set_codes(self, codes: np.ndarray) -> None:
        self.codes = np.ascontiguousarray(codes, dtype=np.int64)
        order = np.argsort(self.codes, axis=0, kind="stable").T
        self.sorted_ids = np.ascontiguousarray(order, dtype=np.int64)
        self.sorted_codes = np.ascontiguousarray(np.take_along_axis(self.codes.T, order, axis=1))
        # direct bucket addressing when the key space is small: bucket c of table t is
        # sorted_ids[t, offsets[t, c] : offsets[t, c + 1]] (two reads, no binary search)
        n_buckets = int(getattr(self.family, "num_buckets", 0) or 0)
        if 0 < n_buckets <= MAX_DIRECT_BUCKETS:
            keys = np.arange(n_buckets + 1, dtype=np.int64)
            self.offsets = np.ascontiguousarray(
                np.stack([np.searchsorted(row, keys) for row in self.sorted_codes]), np.int64
            )
        else:
            self.offsets = _NO_OFFSETS


class ActiveSelector:
    """Chooses the active neurons of a layer with ``n_in`` inputs and ``n_out`` neurons.

    ``active`` is the share of neurons per input (``m = ceil(active * n_out)``);
    ``family``/``k``/``l``/``transform`` the LSH functions (``transform=None`` hashes the
    rows as they are); ``rehash``/``rebuild`` the schedules of :mod:`lshcore.training.schedule`
    (``schedule`` is an alias of ``rehash``); ``threshold`` the hit count of the
    ``threshold`` policy; ``batch_factor`` the set size of ``batch_union`` in units of m (see ``batch_block_size``).
    """

    def __init__(
        self,
        n_in: int,
        n_out: int,
        params: SelectionParams | None = None,
        *,
        backend: str | Backend | None = None,
        **options: Any,
    ):
        self.n_in = check_int(n_in, "n_in", low=1)
        self.n_out = check_int(n_out, "n_out", low=1)
        if params is not None and not isinstance(params, SelectionParams):
            raise ConfigError(
                f"params must be a SelectionParams (or pass active=..., policy=... as "
                f"keywords), got {type(params).__name__}"
            )
        #: the validated selection settings (keywords in ``options`` override ``params``)
        self.params = SelectionParams.from_kwargs(params, **options)
        p = self.params
        self.rehash_schedule = parse_schedule(p.rehash, "rehash")
        self.rebuild_schedule = parse_schedule(p.rebuild, "rebuild")
        self.backend = get_backend(backend)
        # a device backend's candidates come back as host arrays: select with NumPy's kernels
        host = self.backend if self.backend.host_arrays else get_backend("numpy")
        self._kernels = host.kernels
        self.m = min(self.n_out, max(1, int(np.ceil(p.active * self.n_out - 1e-9))))
        # "auto" LSH parameters resolved for this layer's width (params keep "auto")
        fam_params = dict(p.family_params)
        self._k, self._l, self._bucket_size = p.k, p.l, p.bucket_size
        if p.k == "auto" or p.l == "auto":
            auto = auto_params(self.n_out, p.family, bin_size=int(fam_params.get("bin_size", 16)))
            self._k = auto["k"] if p.k == "auto" else p.k
            self._l = auto["l"] if p.l == "auto" else p.l
            self._bucket_size = auto["bucket_size"]
            if p.family in ("dwta", "wta"):
                fam_params.setdefault("bin_size", auto["bin_size"])
        self._family_params = fam_params
        self._index: Any = None
        self._tables: _Tables | None = None
        self._weight: np.ndarray | None = None
        self._bias: np.ndarray | None = None
        #: the layer's device weight (see :meth:`attach`): rows read from it are copied
        self._device_weight: Any = None
        #: the tables on the device when the selection runs there (see :meth:`attach`),
        #: and which rows changed since they were hashed ((n_out,) bool on the device)
        self._dev_tables: DeviceTables | None = None
        self._dev_dirty: Any = None
        #: the choice of ids runs on the device (see :attr:`selects_on_device`)
        self._device_selects = False
        self._dirty = np.zeros(self.n_out, dtype=bool)
        self._lock = threading.Lock()  # table updates (after_update)
        self._calls_lock = threading.Lock()  # the training tie-break counter
        self.calls = 0  # training select() calls so far: varies the tie-breaks per batch
        self.step = 0  # after_update() calls so far
        self.rebuilds = 0
        self.rehashes = 0
        self.query_mults = 0
        self.rehash_mults = 0
        #: selection work tallied by the kernels, summed over calls: bucket entries read,
        #: distinct candidates counted, keys ranked, binary-search steps, hash comparisons
        self.work = np.zeros(5, np.int64)
        self.queries = 0  # rows queried (for scanned_fraction)
        self.changed_share: float | None = None

    # read-only views of the settings, under the names the selector always had
    active = property(lambda self: self.params.active)
    policy = property(lambda self: self.params.policy)
    k = property(lambda self: self._k)
    l = property(lambda self: self._l)  # noqa: E741
    seed = property(lambda self: self.params.seed)
    threshold = property(lambda self: self.params.threshold)
    batch_factor = property(lambda self: self.params.batch_factor)
    rerank = property(lambda self: self.params.rerank)
    tables_kind = property(lambda self: self.params.tables)
    tiebreak = property(lambda self: self.params.tiebreak)
    bucket_size = property(lambda self: self._bucket_size)
    family_name = property(lambda self: self.params.family)
    family_params = property(lambda self: self._family_params)
    transform_name = property(lambda self: self.params.transform)

    # -- construction -------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        """Constructor arguments (JSON-able) that rebuild this selector: ``n_in``,
        ``n_out`` and the :class:`SelectionParams` as a flat dict."""
        return {"n_in": self.n_in, "n_out": self.n_out, **self.params.to_dict()}

    @property
    def uses_hashing(self) -> bool:
        return self.policy in LSH_POLICIES

    def _rows(self, weight: Any, bias: Any, ids: np.ndarray | None = None) -> np.ndarray:
        """The rows ``[w, b]`` (all, or ``ids``) as a host float32 array. Device weights
        (a device backend's layer) are gathered there and only those rows copied over,
        counted under the tag ``rehash``."""
        if self.backend.on_device and (weight is self._device_weight or is_device_array(weight)):
            if ids is not None:
                dids = self.backend.to_device(np.ascontiguousarray(ids, np.int64), "rehash_ids")
                xp = self.backend.xp
                weight, bias = xp.take(weight, dids, axis=0), xp.take(bias, dids, axis=0)
                ids = None
            weight = self.backend.to_host(weight, "rehash")
            bias = self.backend.to_host(bias, "rehash")
        w = weight if ids is None else weight[ids]
        b = bias if ids is None else bias[ids]
        return np.concatenate([w, b[:, None]], axis=1).astype(np.float32)

    def _make_tables(self, rows: np.ndarray, seed: int) -> tuple[_Tables, int]:
        tf = None
        dim = self.n_in + 1
        if self.transform_name is not None:
            tf = catalog.transform(self.transform_name, dim)
            tf.fit(rows)
            dim = tf.out_dim
        fam = catalog.hash_family(
            self.family_name,
            dim,
            self.k,
            self.l,
            seed=seed,
            backend=self.backend,
            **self.family_params,
        )
        data = tf.data(rows) if tf is not None else rows
        codes = self.backend.to_numpy(fam.hash(data), "table_codes")
        tables = _Tables(fam, tf, codes)
        return tables, int(fam.hash_cost(rows.shape[0])) + self._set_tie(tables, rows)

    def _set_tie(self, tables: _Tables, rows: np.ndarray) -> int:
        """``tiebreak="norm"``: rank the rows ``[w, b]`` by norm (0..65535, largest last) so
        that among equal hit counts the larger rows win (DWTA/WTA ignore the scale, but the
        activation grows with it). Returns the multiplications (n_out * (n_in + 1))."""
        if self.tiebreak != "norm":
            return 0
        norms = np.einsum("ij,ij->i", rows, rows)
        rank = np.empty(self.n_out, np.int64)
        rank[np.argsort(norms, kind="stable")] = np.arange(self.n_out)
        tables.tie = (rank * 65535) // max(self.n_out - 1, 1)
        return int(rows.shape[0] * rows.shape[1])

    def fit(self, weight: Any, bias: Any) -> ActiveSelector:
        """Build the tables over the rows ``[w, b]`` of ``weight (n_out, n_in)``, ``bias (n_out,)``."""
        weight = as_batch(weight, self.n_in, "weight")
        if weight.shape[0] != self.n_out:
            raise InputError(f"weight: expected {self.n_out} rows, got {weight.shape[0]}")
        bias = np.asarray(bias, dtype=np.float32)
        if bias.shape != (self.n_out,):
            raise InputError(f"bias: expected shape ({self.n_out},), got {bias.shape}")
        if not np.all(np.isfinite(bias)):
            raise InputError("bias: contains NaN or infinite values")
        self._weight, self._bias = weight, bias
        # new host tables: any device tables are stale (attach moves these there again)
        self._dev_tables, self._dev_dirty = None, None
        self._device_selects = False
        if self.uses_hashing:
            if self.tables_kind == "index":
                self._index = self._make_index(self._rows(weight, bias), self.seed + self.rebuilds)
                self.rehash_mults += self._index.hash_mults
            else:
                tables, cost = self._make_tables(
                    self._rows(weight, bias), self.seed + self.rebuilds
                )
                self.rehash_mults += cost
                self._tables = tables
        self._dirty[:] = False
        return self

    def fit_device(self, weight: Any, bias: Any) -> ActiveSelector:
        """The first build from the layer's device arrays ``weight (n_out, n_in)`` and
        ``bias (n_out,)`` (the backend's namespace), without copying them to the host.

        A configuration that selects on the device (:attr:`can_select_on_device`) hashes
        the rows ``[w, b]`` there (``family.device_hash``: the codes :meth:`fit` gives on
        the same values) and keeps its tables there; any other copies the arrays to the
        host once (tag ``init``), then :meth:`fit` and :meth:`attach` as before. Invalid
        shapes or a non-finite bias raise InputError and change nothing."""
        if tuple(weight.shape) != (self.n_out, self.n_in) or tuple(bias.shape) != (self.n_out,):
            raise InputError(
                f"fit_device: expected weight ({self.n_out}, {self.n_in}) and bias "
                f"({self.n_out},), got {tuple(weight.shape)} and {tuple(bias.shape)}"
            )
        if not self._device_capable():
            get = self.backend.to_host if self.backend.on_device else (lambda a, tag: a)
            self.fit(get(weight, "init"), get(bias, "init"))
            self.attach(weight, bias)
            return self
        xp = self.backend.xp
        # two scalar reads, once per build: the host fit refuses the same values
        if not bool(xp.all(xp.isfinite(bias))):
            raise InputError("bias: contains NaN or infinite values")
        if not bool(xp.all(xp.isfinite(weight))):
            raise InputError("weight: contains NaN or infinite values")
        with self._lock:
            # built aside first: a failed build (a bad parameter) changes nothing
            tables, cost = None, 0
            if self.uses_hashing:
                tables, cost = self._device_build(
                    self.seed + self.rebuilds, self._device_rows(weight=weight, bias=bias)
                )
            # then swapped in, the device tables before the flag that sends select() to
            # them, the host tables last (select() reads them without the lock)
            self._dev_tables, self._dev_dirty = tables, xp.zeros(self.n_out, dtype=bool)
            self._weight, self._bias, self._device_weight = weight, bias, weight
            self._device_selects = True
            self._tables, self._index = None, None
            self._dirty[:] = False
            self.rehash_mults += cost
        return self

    def attach(self, weight: Any, bias: Any) -> None:
        """Read the rows to rehash from the device arrays ``weight``/``bias`` (a device
        backend's layer, after :meth:`fit` on host copies of them): only the rows a
        rehash needs are copied to the host, counted under the tag ``rehash``. A
        configuration that selects on the device moves its tables there now."""
        if not self.fitted:
            raise NotFittedError("ActiveSelector.attach() before fit(weight, bias)")
        if tuple(weight.shape) != (self.n_out, self.n_in) or tuple(bias.shape) != (self.n_out,):
            raise InputError(
                f"attach: expected weight ({self.n_out}, {self.n_in}) and bias "
                f"({self.n_out},), got {tuple(weight.shape)} and {tuple(bias.shape)}"
            )
        with self._lock:
            self._weight, self._bias = weight, bias
            self._device_weight = weight if self.backend.on_device else None
            if self._device_capable():
                self._move_tables_to_device()

    # -- selection on the device --------------------------------------------------------
    @property
    def selects_on_device(self) -> bool:
        """Whether the tables, the query codes and the choice of ids live on the backend's
        device (:mod:`lshcore.training.device_select`): set by :meth:`attach` or
        :meth:`fit_device` when :attr:`can_select_on_device`."""
        return self._device_selects

    @property
    def can_select_on_device(self) -> bool:
        """Whether this configuration chooses on the device once given the device arrays
        (:meth:`fit_device`, :meth:`attach`): a device backend, a policy of
        ``DEVICE_POLICIES``, and for the hashing ones sorted tables, a family that hashes
        on the device (``device_hash``) and no MIPS transform or one that maps device
        arrays (:data:`DEVICE_TRANSFORM_METHODS`: ``simple_lsh``, ``sign_alsh``); either
        tie-break."""
        return self._device_capable()

    def _device_capable(self) -> bool:
        if not (self.backend.on_device and self.policy in DEVICE_POLICIES):
            return False
        if not self.uses_hashing:
            return True  # no tables: the weights and the labels decide
        if self.transform_name is not None:
            tf_cls = catalog.transform_class(self.transform_name)
            if not all(callable(getattr(tf_cls, n, None)) for n in DEVICE_TRANSFORM_METHODS):
                return False
        return self.tables_kind == "sorted" and callable(
            getattr(catalog.family_class(self.family_name), "device_hash", None)
        )

    def _move_tables_to_device(self) -> None:
        """Hand the host tables (built at :meth:`fit`) to the device: their codes and the
        dirty rows go up once; from then on the host keeps no tables."""
        tables = self._tables
        if tables is not None:  # (a second attach finds them there already)
            put = self.backend.to_device
            tie = None if tables.tie is None else put(tables.tie, "init")
            self._dev_tables = DeviceTables(
                self.backend.xp, tables.family, put(tables.codes, "init"),
                self._direct(tables.family), tables.transform, tie,
            )  # fmt: skip
            self._dev_dirty = put(self._dirty, "init")
            self._tables = None
        elif self._dev_dirty is None:  # exact, random: no tables, the marks only
            self._dev_dirty = self.backend.to_device(self._dirty, "init")
        self._device_selects = True

    @staticmethod
    def _direct(family: Any) -> bool:
        n_buckets = int(getattr(family, "num_buckets", 0) or 0)
        return 0 < n_buckets <= MAX_DIRECT_BUCKETS

    def select_device(
        self,
        x: Any,
        labels: Any = None,
        training: bool = False,
        dev_labels: Any = None,
        dense_input: bool = False,
    ) -> DeviceActiveSet:
        """The active neurons of ``x``, chosen on the device (:attr:`selects_on_device`).

        ``x``: a dense (B, n_in) array of the device or a device SparseBatch (``dev_ids``
        set); ``labels`` as in :meth:`select` (host); ``dev_labels`` their (B, n) -1
        padded matrix already on the device (else it goes up, tag ``labels``);
        ``dense_input``: ``x`` is the sparse form of a dense batch (its hashing is tallied
        as the host path tallies a dense batch). Returns ids on the device: (B, m), or
        (m,) for one set shared by the batch."""
        tables = self._dev_tables
        if not self._device_selects:
            raise ConfigError(
                "select_device: this selector selects on the host (selects_on_device is "
                "False: a host backend, index tables, or a family or transform without "
                "device methods); call select()"
            )
        xp = self.backend.xp
        dev_ids = getattr(x, "dev_ids", None)
        batch = int(x.shape[0]) if dev_ids is None else int(dev_ids.shape[0])
        lab = labels_matrix(labels if training else None, batch, self.n_out)
        if dev_labels is None or not lab.shape[1]:
            dev_labels = (
                self.backend.to_device(lab, "labels")
                if lab.shape[1]
                else xp.full((batch, 0), -1, dtype=xp.int64)
            )
        m = self._width(lab)
        seed = self._seed(training)
        if self.policy == "random":  # no hashing, no tally (as on the host)
            ids = select_random(self.backend, dev_labels, batch, self.n_out, m, seed)
            return DeviceActiveSet(ids)
        if self.policy == "exact":  # the dense product on the device
            dense = x.astype(xp.float32) if dev_ids is None else None
            if dense is None:
                dense = dense_query(xp, x, self.n_in)[:, : self.n_in]
            ids, mults = select_exact(
                xp, self._device_weight, self._bias, dense, dev_labels, m, self.n_out
            )
            return DeviceActiveSet(ids, int(self.backend.to_host(mults, "selection_work")[0]))
        assert tables is not None
        fam, tf = tables.family, tables.transform
        q = dense_query(xp, x, self.n_in)
        if tf is not None:
            q = tf.device_query(xp, q)  # Q([x, 1]) (the host's queries, within rounding)
        codes = fam.device_hash(q)
        cost = int(fam.hash_cost(batch))
        nnz = None
        rank = getattr(fam, "measure", "") == "rank"
        if rank and tf is not None:
            # the host hashes a transformed query by its non-zeros and tallies them so:
            # the same tally here (a scalar read from the device)
            nnz = int(xp.sum((q != 0).astype(xp.int64)))
        elif dev_ids is not None and not x.shared and not dense_input and rank:
            # the host path hashes this input by its non-zeros and tallies them so: the
            # same tally here (a scalar read from the device)
            present = (dev_ids >= 0) & (x.vals != 0)
            nnz = int(xp.sum(present.astype(xp.int64))) + batch
        comps = int(fam.hash_comparisons(batch, nnz))
        with self._calls_lock:
            self.query_mults += cost
        if self.policy in ("batch_union", "batch_rerank"):
            ids, work = select_batch(self.backend, tables, codes, dev_labels, self.n_out, m, seed)
            shared = True
        elif self.policy == "rerank":
            # topk's candidates, then their exact activations against the device weights;
            # the tally and the multiplications come down together
            cand, dev_work = select_rows(
                self.backend, tables, codes, dev_labels, self.n_out, self._rerank_width(m),
                1, True, True, seed, self._tie(tables),
            )  # fmt: skip
            in_ids, in_vals = score_inputs(xp, x, self.n_in)
            ids, mults = rerank_rows(
                xp, self._device_weight, self._bias, in_ids, in_vals, cand, dev_labels, m,
                self.n_out,
            )  # fmt: skip
            host = self.backend.to_host(xp.concatenate([dev_work, mults]), "selection_work")
            tally = self._record(host[:4], comps, batch) + int(cand.size)
            return DeviceActiveSet(ids, cost + int(host[4]), tally)
        else:
            min_count, use_counts, pad = {
                "topk": (1, True, True),
                "union": (1, False, True),
                "threshold": (self.threshold, True, False),
            }[self.policy]
            ids, dev_work = select_rows(
                self.backend, tables, codes, dev_labels, self.n_out, m,
                min_count, use_counts, pad, seed, self._tie(tables),
            )  # fmt: skip
            work = self.backend.to_host(dev_work, "selection_work")
            shared = False
        return DeviceActiveSet(ids, cost, self._record(work, comps, batch), shared)

    def _select_via_device(self, x: Any, labels: Any, training: bool) -> ActiveSet:
        """:meth:`select` of a host batch by a device selector: the batch goes up (tag
        ``input``), the ids come down (tag ``active_ids``)."""
        x, batch, _ = self._as_input(x)
        if isinstance(x, SparseBatch):
            dense = x.to_dense()
        else:
            dense = x.toarray() if is_sparse(x) else np.asarray(x)
        xd = self.backend.to_device(np.ascontiguousarray(dense, np.float32), "input")
        found = self.select_device(xd, labels, training)
        ids = self.backend.to_host(found.ids, "active_ids").astype(np.int64)
        if found.shared:
            ids = np.ascontiguousarray(np.broadcast_to(ids, (batch, ids.shape[0])))
        return ActiveSet(ids, found.hash_mults, shared=found.shared, work=found.work)

    def _device_rows(self, ids: Any = None, *, weight: Any = None, bias: Any = None) -> Any:
        """The rows ``[w, b]`` (all, or the device ids ``ids``) gathered on the device, of
        the layer's arrays (or of ``weight``/``bias`` when given)."""
        xp = self.backend.xp
        w = self._device_weight if weight is None else weight
        b = self._bias if bias is None else bias
        if ids is not None:
            w, b = xp.take(w, ids, axis=0), xp.take(b, ids, axis=0)
        return xp.concatenate([w, xp.reshape(b, (-1, 1))], axis=1).astype(xp.float32)

    def _device_build(self, seed: int, rows: Any = None) -> tuple[DeviceTables, int]:
        """:meth:`_make_tables` on the device: new functions (and transform, fitted to
        the rows ``[w, b]`` there: ``rows``, default the layer's) of ``seed``, the rows
        hashed there, the norm tie-break ranked there -> (the tables, the
        multiplications)."""
        xp = self.backend.xp
        rows = self._device_rows() if rows is None else rows
        tf: Any = None
        dim = self.n_in + 1
        if self.transform_name is not None:  # one with the device methods (_device_capable)
            tf = catalog.transform(self.transform_name, dim)
            tf.device_fit(self.backend, rows)
            dim = tf.out_dim
        fam: Any = catalog.hash_family(  # a family with device_hash (_device_capable)
            self.family_name, dim, self.k, self.l,
            seed=seed, backend=self.backend, **self.family_params,
        )  # fmt: skip
        data = rows if tf is None else tf.device_data(xp, rows)
        tables = DeviceTables(xp, fam, fam.device_hash(data), self._direct(fam), tf)
        return tables, int(fam.hash_cost(self.n_out)) + self._set_device_tie(tables, rows)

    def _set_device_tie(self, tables: DeviceTables, rows: Any) -> int:
        """:meth:`_set_tie` on the device: ``tables.tie`` from every row ``[w, b]``
        ``(n_out, n_in + 1)`` of the device (:func:`norm_priorities`)."""
        if self.tiebreak != "norm":
            return 0
        tables.tie = norm_priorities(self.backend.xp, rows)
        return int(rows.shape[0] * rows.shape[1])

    def _device_data(self, tables: DeviceTables, rows: Any) -> Any:
        """The rows ``[w, b]`` of the device as the tables hash them (through the
        transform, if any)."""
        tf = tables.transform
        return rows if tf is None else tf.device_data(self.backend.xp, rows)

    def _device_after_update(self, rows_changed: Any) -> int:
        """:meth:`after_update` of a device selector (under the lock): marks the changed
        rows (device ids, or None = all) and rehashes/rebuilds on the device."""
        xp = self.backend.xp
        if rows_changed is None:
            self._dev_dirty[:] = True
        else:
            rows = rows_changed  # ids or a bool mask, of the device (the layer's touched rows)
            if isinstance(rows, np.ndarray) and xp is not np:  # a host caller's: counted
                rows = self.backend.to_device(rows, "rehash_ids")
            self._dev_dirty[rows] = True
        self.step += 1
        if not self.uses_hashing:  # exact, random: no tables
            return 0
        cost = 0
        if self.rebuild_schedule.due(self.step):
            self.rebuilds += 1
            self._dev_tables, cost = self._device_build(self.seed + self.rebuilds)
            self._dev_dirty[:] = False
            self.rebuild_schedule.fired(self.step)
            self.rehash_schedule.fired(self.step)
        elif self.rehash_schedule.due(self.step):
            cost = self._device_rehash()
        self.rehash_mults += cost
        return cost

    def _device_rehash(self) -> int:
        """:meth:`_maybe_rehash` on the device: the same sample, share and rows."""
        xp = self.backend.xp
        tables = self._dev_tables
        assert tables is not None
        fam, tf = tables.family, tables.transform
        n_dirty = int(xp.sum(self._dev_dirty.astype(xp.int64)))  # a scalar read
        cost = 0
        if self.rehash_schedule.kind == "changed" and n_dirty:
            dirty = xp.nonzero(self._dev_dirty)[0]
            rng = np.random.default_rng((self.seed, self.step))
            # positions into the dirty ids: the draw rng.choice(dirty ids) makes on the host,
            # without bringing the ids down (only these <= 64 positions go up)
            pos = rng.choice(n_dirty, size=min(64, n_dirty), replace=False).astype(np.int64)
            sample = xp.take(dirty, self.backend.to_device(pos, "rehash_ids"), axis=0)
            rows = self._device_rows(sample)
            if tf is not None and tf.device_needs_refit(self.backend, rows):
                share = 1.0  # a sampled row outgrew M: every code is due (as on the host)
            else:
                codes = fam.device_hash(self._device_data(tables, rows))
                cost = int(fam.hash_cost(int(sample.shape[0])))
                changed = codes != xp.take(tables.codes, sample, axis=0)
                share = float(xp.mean(changed.astype(xp.float64)))
            self.changed_share = share
            if share < self.rehash_schedule.threshold:
                self.rehash_schedule.fired(self.step)
                return cost
        self.rehash_schedule.fired(self.step)
        if n_dirty == 0:
            return cost
        dirty = xp.nonzero(self._dev_dirty)[0]
        rows_dirty = self._device_rows(dirty)
        rows_all: Any = None
        if tf is not None and tf.device_needs_refit(self.backend, rows_dirty):
            # a row outgrew the transform's scale: refit M and rehash every row (the same
            # functions), as the host does
            rows_all = self._device_rows()
            tf.device_fit(self.backend, rows_all)
            codes = fam.device_hash(tf.device_data(xp, rows_all))
            hashed = self.n_out
        else:
            codes = tables.codes.copy()
            codes[dirty] = fam.device_hash(self._device_data(tables, rows_dirty))
            hashed = n_dirty
        new_tables = DeviceTables(xp, fam, codes, tables.direct, tf)
        if self.tiebreak == "norm":  # every row ranked again, as at each host refresh
            rows_all = self._device_rows() if rows_all is None else rows_all
            cost += self._set_device_tie(new_tables, rows_all)
        self._dev_tables = new_tables
        self._dev_dirty[:] = False
        self.rehashes += 1
        return cost + int(fam.hash_cost(hashed))

    def _make_index(self, rows: np.ndarray, seed: int) -> Any:
        """An :class:`~lshcore.search.index.LSHIndex` (store=False, FIFO buckets) over ``rows``."""
        index = LSHIndex(
            self.n_in + 1,
            self.family_name,
            self.k,
            self.l,
            bucket_size=self.bucket_size,
            policy="fifo",
            backend=self.backend,
            transform=self.transform_name,
            seed=seed,
            store=False,
            **self.family_params,
        )
        index.add(rows, ids=np.arange(self.n_out))
        return index

    def _index_candidates(self, x: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
        import scipy.sparse as sp

        index = self._index
        if isinstance(x, SparseBatch):
            q: Any = x.to_csr(extra_one=True)
        elif is_sparse(x):
            q = sp.hstack([x, sp.csr_matrix(np.ones((x.shape[0], 1), np.float32))], format="csr")
        else:
            q = np.concatenate([x, np.ones((x.shape[0], 1), np.float32)], axis=1)
        if is_sparse(q) and not index._sparse_queries():
            q = q.toarray()
        cand = index.candidates(q)
        to_np = self.backend.to_numpy
        return (
            np.ascontiguousarray(to_np(cand.indptr), np.int64),
            np.ascontiguousarray(to_np(cand.ids), np.int64),
            np.ascontiguousarray(to_np(cand.counts), np.int32),
            int(index.last_cost),
        )

    @property
    def fitted(self) -> bool:
        return self._weight is not None

    # -- selection ----------------------------------------------------------------------
    def _as_input(self, x: Any) -> tuple[Any, int, int]:
        """(validated x, batch size, non-zeros) for dense, CSR or SparseBatch input."""
        if isinstance(x, SparseBatch):
            if x.dim != self.n_in:
                raise InputError(f"x: expected vectors of length {self.n_in}, got {x.dim}")
            return x, x.batch_size, x.nnz()
        if isinstance(x, tuple) and len(x) == 2:
            sb = SparseBatch(np.asarray(x[0], np.int64), np.asarray(x[1], np.float32), self.n_in)
            return self._as_input(sb)
        xb = as_batch(x, self.n_in, "x", allow_sparse=True)
        nnz = int(xb.nnz) if is_sparse(xb) else int(np.count_nonzero(xb))
        return xb, int(xb.shape[0]), nnz

    def _query_matrix(self, x: Any, tables: _Tables) -> tuple[Any, int]:
        """Transformed queries ``Q([x, 1])`` (CSR when sparse) and their stored non-zeros."""
        import scipy.sparse as sp

        fam = tables.family
        if tables.transform is None and getattr(fam, "measure", "") == "rank":
            # rank families (WTA/DWTA) hash a dense row as fast as its non-zeros, without
            # building a CSR matrix per batch (same codes either way)
            dense_q = _dense_query(x, self.n_in)
            if dense_q is not None:
                return dense_q, int(dense_q.shape[0] * dense_q.shape[1])
        if isinstance(x, SparseBatch):
            q = x.to_csr(extra_one=True)
        elif is_sparse(x):
            ones = sp.csr_matrix(np.ones((x.shape[0], 1), np.float32))
            q = sp.hstack([x, ones], format="csr")
        else:
            dense = np.concatenate([x, np.ones((x.shape[0], 1), np.float32)], axis=1)
            q = sp.csr_matrix(dense)  # hash by the non-zeros only
        if tables.transform is not None:
            q = tables.transform.query(q)
        if not is_sparse(q):
            q = sp.csr_matrix(np.asarray(q))
        if not tables.family.supports_sparse:
            q = q.toarray()
            return q, int(q.shape[0] * q.shape[1])
        return q, int(q.nnz)

    def select(self, x: Any, labels: Any = None, training: bool = False) -> ActiveSet:
        """The active neurons for each row of ``x`` (dense (B, n_in), CSR, or SparseBatch).

        ``labels`` ((B,) ints, (B, n) -1-padded, or a list of arrays) are forced into the
        set when ``training`` is True. In training each call draws fresh tie-breaks and
        padding (a counter, safe across threads); otherwise (inference) they come from a
        fixed seed, so the result is a pure function of the weights, tables and ``x``.
        """
        if not self.fitted:
            raise NotFittedError("ActiveSelector.select() before fit(weight, bias)")
        if self._device_selects:
            return self._select_via_device(x, labels, training)
        x, batch, _ = self._as_input(x)
        lab = labels_matrix(labels if training else None, batch, self.n_out)
        return self._POLICY_METHODS[self.policy](
            self, x, lab, self._width(lab), self._seed(training)
        )

    def _width(self, lab: np.ndarray) -> int:
        """The padded set size m for this batch (room for every label)."""
        m = max(self.m, lab.shape[1])
        if self.policy in ("batch_union", "batch_rerank"):
            block = batch_block_size(
                self.n_out, self.m, self.batch_factor, floor=self.policy == "batch_rerank"
            )
            m = max(block, int((lab >= 0).sum()))
            m = min(m, self.n_out)
        return m

    def _rerank_width(self, m: int) -> int:
        """``rerank``'s candidates per row for a set of ``m``: ``ceil(rerank * m)`` of the
        layer's m (at least ``m``, at most ``n_out``)."""
        return min(self.n_out, max(m, int(np.ceil(self.rerank * self.m))))

    def _seed(self, training: bool) -> int:
        """The tie-break/padding seed of one call: the next counter value in training
        (taken under a lock so that Hogwild workers never share one), a fixed value in
        inference (which must not depend on how often the layer was called)."""
        if not training:
            return (self.seed * 1_000_003 + 0x5EED_1EAF) & 0x7FFFFFFF
        with self._calls_lock:
            calls = self.calls
            self.calls += 1
        return (self.seed * 1_000_003 + calls) & 0x7FFFFFFF

    # -- one method per policy: (x, labels (B, n), width m, seed) -> ActiveSet ----------
    def _select_random(self, x: Any, lab: np.ndarray, m: int, seed: int) -> ActiveSet:
        """``m`` neurons at random per row (labels kept): the baseline."""
        empty = np.zeros(lab.shape[0] + 1, np.int64)
        ids = self._kernels.select_active(
            empty, np.zeros(0, np.int64), np.zeros(0, np.int32), lab,
            self.n_out, m, 1, True, True, seed,
        )  # fmt: skip
        return ActiveSet(ids, 0)

    def _select_exact(self, x: Any, lab: np.ndarray, m: int, seed: int) -> ActiveSet:
        """The true top ``m`` by activation (labels kept): an oracle, a dense product."""
        assert self._weight is not None and self._bias is not None
        if isinstance(x, SparseBatch):
            nnz = x.nnz()
            x = x.to_dense()
        elif is_sparse(x):
            nnz = int(x.nnz)
            x = x.toarray()
        else:
            nnz = int(np.count_nonzero(x))
        z = x @ self._weight.T + self._bias
        ok = lab >= 0
        if ok.any():
            rows = np.broadcast_to(np.arange(z.shape[0])[:, None], lab.shape)
            z[rows[ok], lab[ok]] = np.inf
        # ties: the smaller id (as on a device)
        ids = top_by_score(np, z, np.broadcast_to(np.arange(self.n_out), z.shape), m, self.n_out)
        return ActiveSet(ids, nnz * self.n_out)

    def _select_topk(self, x: Any, lab: np.ndarray, m: int, seed: int) -> ActiveSet:
        """The ``m`` neurons hit in the most tables, padded at random."""
        return self._select_counted(x, lab, m, seed, min_count=1, use_counts=True, pad=True)

    def _select_union(self, x: Any, lab: np.ndarray, m: int, seed: int) -> ActiveSet:
        """Any neuron hit at least once; a random subset of ``m``, padded at random."""
        return self._select_counted(x, lab, m, seed, min_count=1, use_counts=False, pad=True)

    def _select_threshold(self, x: Any, lab: np.ndarray, m: int, seed: int) -> ActiveSet:
        """Neurons hit in at least ``threshold`` tables (at most ``m``, no padding)."""
        return self._select_counted(
            x, lab, m, seed, min_count=self.threshold, use_counts=True, pad=False
        )

    def _select_rerank(self, x: Any, lab: np.ndarray, m: int, seed: int) -> ActiveSet:
        """``rerank * m`` candidates as ``topk``, then the ``m`` largest exact activations."""
        width = self._rerank_width(m)
        cand = self._select_counted(x, lab, width, seed, min_count=1, use_counts=True, pad=True)
        out = self._rerank(x, cand.ids, lab, m, cand.hash_mults)
        out.work = cand.work + int(cand.ids.size)  # plus one partition pass per row
        return out

    def _select_batch_union(self, x: Any, lab: np.ndarray, m: int, seed: int) -> ActiveSet:
        """One set for the batch: the ``m`` neurons with the most hits summed over it."""
        if self.tables_kind == "sorted":
            tables, codes, cost, comps = self._query_codes(x)
            self.query_mults += cost
            work = np.zeros(4, np.int64)
            all_labels = np.unique(lab[lab >= 0]).astype(np.int64)
            row = self._kernels.batch_select_from_tables(
                codes, tables.sorted_codes, tables.sorted_ids, self.n_out, all_labels, m,
                seed, work, tables.offsets,
            )  # fmt: skip
            batch = lab.shape[0]
            return ActiveSet(
                np.ascontiguousarray(np.broadcast_to(row, (batch, row.size))),
                cost,
                shared=True,
                work=self._record(work, comps, batch),
            )
        indptr, cids, counts, cost = self._candidates(x)
        total = np.bincount(cids, weights=counts, minlength=self.n_out)
        hit = np.flatnonzero(total > 0)
        one_ptr = np.array([0, hit.size], np.int64)
        all_labels = np.unique(lab[lab >= 0])[None, :]
        row = self._kernels.select_active(
            one_ptr, hit.astype(np.int64), total[hit].astype(np.int32), all_labels,
            self.n_out, m, 1, True, True, seed,
        )  # fmt: skip
        batch = lab.shape[0]
        return ActiveSet(np.ascontiguousarray(np.broadcast_to(row, (batch, m))), cost, shared=True)

    _POLICY_METHODS = {
        "topk": _select_topk,
        "union": _select_union,
        "threshold": _select_threshold,
        "batch_union": _select_batch_union,
        "batch_rerank": _select_batch_union,  # the layer keeps each row's m best
        "rerank": _select_rerank,
        "exact": _select_exact,
        "random": _select_random,
    }

    def _select_counted(
        self, x: Any, lab: np.ndarray, width: int, seed: int, *,
        min_count: int, use_counts: bool, pad: bool,
    ) -> ActiveSet:  # fmt: skip
        """Per-row sets of ``width`` from the tables' hit counts (``hash_mults`` = query cost)."""
        if self.tables_kind == "index":
            indptr, cids, counts, cost = self._candidates(x)
            ids = self._kernels.select_active(
                indptr, cids, counts, lab, self.n_out, width, min_count, use_counts, pad, seed,
                self._tie(self._tables),
            )  # fmt: skip
            return ActiveSet(ids, cost)
        tables, codes, cost, comps = self._query_codes(x)
        self.query_mults += cost
        work = np.zeros(4, np.int64)
        ids = self._kernels.select_from_tables(  # fused: no candidate lists in between
            codes, tables.sorted_codes, tables.sorted_ids, self.n_out, lab, width,
            min_count, use_counts, pad, seed, self._tie(tables), work,
        )  # fmt: skip
        return ActiveSet(ids, cost, work=self._record(work, comps, codes.shape[0]))

    def _record(self, work: np.ndarray, comps: int, rows: int) -> int:
        """Add one call's work tally (and hash comparisons) to the totals; returns its sum."""
        with self._calls_lock:
            self.work[:4] += work
            self.work[4] += comps
            self.queries += rows
        return int(work.sum()) + comps

    def add_ranked(self, n: int) -> None:
        """Count ``n`` keys ranked outside the selector (a framework layer's per-row
        re-rank of a ``batch_rerank`` block) in :attr:`work`'s ``keys_ranked``."""
        with self._calls_lock:
            self.work[2] += int(n)

    @property
    def scanned_fraction(self) -> float:
        """Bucket entries read per query / layer width (repeats across tables counted):
        the share of the layer a query examines (NaN before any sorted-table query)."""
        if not self.queries:
            return float("nan")
        return float(self.work[0]) / (self.queries * self.n_out)

    def work_dict(self) -> dict[str, int]:
        """The selection work so far, by kind (see :attr:`work`)."""
        names = ("entries_read", "candidates_counted", "keys_ranked", "search_steps")
        return {
            **dict(zip(names + ("hash_comparisons",), map(int, self.work), strict=True)),
            "queries": self.queries,
        }

    def _query_codes(self, x: Any) -> tuple[_Tables, np.ndarray, int, int]:
        """(tables, query codes (B, L) int64, hashing multiplications, hashing comparisons)
        of the sorted tables."""
        tables = self._tables
        assert tables is not None
        q, q_nnz = self._query_matrix(x, tables)
        codes = np.ascontiguousarray(
            self.backend.to_numpy(tables.family.hash(q), "query_codes"), np.int64
        )
        fam = tables.family
        dense = not is_sparse(q)
        comps = int(fam.hash_comparisons(q.shape[0], None if dense else q_nnz))
        return tables, codes, int(fam.hash_cost(q.shape[0], None if dense else q_nnz)), comps

    def _candidates(self, x: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
        """CSR candidate lists ``(indptr, ids, hit counts, cost)`` of the batch's rows."""
        if self.tables_kind == "index":
            indptr, cids, counts, cost = self._index_candidates(x)
        else:
            tables, codes, cost, _ = self._query_codes(x)
            indptr, cids, counts = self._kernels.sorted_table_candidates(
                codes, tables.sorted_codes, tables.sorted_ids, self.n_out
            )
        self.query_mults += cost
        return indptr, cids, counts, cost

    def _tie(self, tables: _Tables | DeviceTables | None) -> Any:
        """The fixed tie-break priorities ((n_out,) int64, of the tables' side), or None
        (seeded random ones)."""
        if tables is None or self.policy not in ("topk", "rerank", "threshold"):
            return None
        return tables.tie

    def _rerank(self, x: Any, cand: np.ndarray, lab: np.ndarray, m: int, cost: int) -> ActiveSet:
        """The ``m`` candidates with the largest exact activations (labels kept)."""
        assert self._weight is not None and self._bias is not None
        if isinstance(x, SparseBatch):
            in_ids, in_vals = x.ids, x.vals
        else:
            dense = x.toarray() if is_sparse(x) else x
            in_ids, in_vals = self._kernels.dense_to_sparse(
                np.ascontiguousarray(dense, dtype=np.float32)
            )
        z, mults = self._kernels.layer_forward(self._weight, self._bias, in_ids, in_vals, cand)
        z = np.where(cand >= 0, z, -np.inf)
        if lab.shape[1]:
            z = np.where((cand[:, :, None] == lab[:, None, :]).any(axis=2) & (cand >= 0), np.inf, z)
        ids = top_by_score(np, z, cand, m, self.n_out)  # ties: the smaller id (as on a device)
        return ActiveSet(ids, cost + int(mults))

    # -- keeping the tables in step -----------------------------------------------------
    def after_update(self, weight: Any, bias: Any, rows_changed: Any = None) -> int:
        """Record an optimizer step that changed ``rows_changed`` (ids or a bool mask; None =
        all rows) and rehash/rebuild when the schedules say so. ``weight``/``bias`` are the
        current parameters (the same arrays as at fit, or new ones). Returns the
        multiplications spent hashing in this call. A selector that chooses on the
        device (:attr:`selects_on_device`) takes the device parameters and device ids
        (a host id array is copied up, tag ``rehash_ids``) and rehashes there.
        """
        if not self.fitted:
            raise NotFittedError("ActiveSelector.after_update() before fit(weight, bias)")
        if self._device_selects:
            # device ids stay there (np.asarray below would pull them to the host)
            if not (weight is self._device_weight or is_device_array(weight)):
                raise InputError(
                    "after_update: this selector hashes the layer's device parameters "
                    "(attach); got host arrays"
                )
            with self._lock:
                self._weight, self._bias = weight, bias
                self._device_weight = weight
                return self._device_after_update(rows_changed)
        changed: Any
        if rows_changed is None:
            changed = slice(None)
        else:
            arr = np.asarray(rows_changed)
            changed = arr if arr.dtype == bool else arr.astype(np.int64)
        with self._lock:
            device = self.backend.on_device and (
                weight is self._device_weight or is_device_array(weight)
            )
            if device:  # device arrays stay there: _rows copies the rows it needs
                self._weight, self._bias = weight, bias
                self._device_weight = weight
            else:
                self._weight = np.asarray(weight)
                self._bias = np.asarray(bias)
            self._dirty[changed] = True
            self.step += 1
            if not self.uses_hashing:
                return 0
            cost = 0
            if self.tables_kind == "index":
                return self._index_after_update()
            if self.rebuild_schedule.due(self.step):
                self.rebuilds += 1
                tables, cost = self._make_tables(
                    self._rows(self._weight, self._bias), self.seed + self.rebuilds
                )
                self._tables = tables
                self._dirty[:] = False
                self.rebuild_schedule.fired(self.step)
                self.rehash_schedule.fired(self.step)
            elif self.rehash_schedule.due(self.step):
                cost = self._maybe_rehash()
            self.rehash_mults += cost
            return cost

    def _index_after_update(self) -> int:
        """Rehash/rebuild through the LSHIndex (a ``changed`` schedule acts as ``fixed``)."""
        assert self._weight is not None and self._bias is not None
        index = self._index
        before = index.hash_mults
        if self.rebuild_schedule.due(self.step):
            self.rebuilds += 1
            index.rebuild(seed=self.seed + self.rebuilds, x=self._rows(self._weight, self._bias))
            self._dirty[:] = False
            self.rebuild_schedule.fired(self.step)
            self.rehash_schedule.fired(self.step)
        elif self.rehash_schedule.due(self.step):
            self.rehash_schedule.fired(self.step)
            dirty = np.flatnonzero(self._dirty)
            if dirty.size:
                try:
                    index.update(dirty, self._rows(self._weight, self._bias, dirty))
                except InputError:  # a row outgrew the MIPS scale: refit and rehash all
                    index.rehash(x=self._rows(self._weight, self._bias))
                self._dirty[:] = False
                self.rehashes += 1
        cost = int(index.hash_mults - before)
        self.rehash_mults += cost
        return cost

    def _hash_rows(self, tables: _Tables, rows: np.ndarray) -> tuple[np.ndarray, int]:
        data = tables.transform.data(rows) if tables.transform is not None else rows
        codes = self.backend.to_numpy(tables.family.hash(data), "table_codes")
        return codes, int(tables.family.hash_cost(rows.shape[0]))

    def _maybe_rehash(self) -> int:
        assert self._tables is not None and self._weight is not None and self._bias is not None
        tables = self._tables
        dirty = np.flatnonzero(self._dirty)
        cost = 0
        if self.rehash_schedule.kind == "changed" and dirty.size:
            rng = np.random.default_rng((self.seed, self.step))
            sample = rng.choice(dirty, size=min(64, dirty.size), replace=False)
            rows = self._rows(self._weight, self._bias, sample)
            if tables.transform is not None and tables.transform.needs_refit(rows):
                share = 1.0
            else:
                codes, cost = self._hash_rows(tables, rows)
                share = float((codes != tables.codes[sample]).mean())
            self.changed_share = share
            if share < self.rehash_schedule.threshold:
                self.rehash_schedule.fired(self.step)
                return cost
        self.rehash_schedule.fired(self.step)
        if dirty.size == 0:
            return cost
        # only the changed rows, unless the transform must be refitted or the tie-break
        # ranks every row by norm (on a device backend, only these rows are copied over)
        rows_dirty = self._rows(self._weight, self._bias, dirty)
        rows_all: np.ndarray | None = None
        if tables.transform is not None and tables.transform.needs_refit(rows_dirty):
            # a row outgrew the transform's scale: refit and rehash every row (same functions)
            rows_all = self._rows(self._weight, self._bias)
            tables.transform.fit(rows_all)
            codes, c = self._hash_rows(tables, rows_all)
            new_tables = _Tables(tables.family, tables.transform, codes)
        else:
            codes_dirty, c = self._hash_rows(tables, rows_dirty)
            codes = tables.codes.copy()
            codes[dirty] = codes_dirty
            new_tables = _Tables(tables.family, tables.transform, codes)
        if self.tiebreak == "norm":
            if rows_all is None:
                rows_all = self._rows(self._weight, self._bias)
            c += self._set_tie(new_tables, rows_all)
        self._tables = new_tables
        self._dirty[:] = False
        self.rehashes += 1
        return cost + c

    # -- state for save/load ------------------------------------------------------------
    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """(JSON-able meta, arrays) holding everything needed to resume bit-for-bit."""
        meta: dict[str, Any] = {
            "config": self.config(),
            "calls": self.calls,
            "step": self.step,
            "rebuilds": self.rebuilds,
            "rehashes": self.rehashes,
            "rehash_schedule": self.rehash_schedule.state(),
            "rebuild_schedule": self.rebuild_schedule.state(),
            "scale": None,
        }
        with self._lock:  # codes and dirty marks of one step, not of two (Hogwild)
            arrays: dict[str, np.ndarray] = {"dirty": self._dirty.copy()}
            if self._dev_tables is not None:  # the same arrays, from the device
                dev = self._dev_tables
                arrays["dirty"] = self.backend.to_host(self._dev_dirty, "save").astype(bool)
                arrays["codes"] = self.backend.to_host(dev.codes, "save").astype(np.int64)
                if dev.tie is not None:
                    arrays["tie"] = self.backend.to_host(dev.tie, "save").astype(np.int64)
                if dev.transform is not None:
                    meta["scale"] = dev.transform.scale
            elif self._tables is not None:
                arrays["codes"] = self._tables.codes.copy()
                if self._tables.tie is not None:
                    arrays["tie"] = self._tables.tie.copy()
                if self._tables.transform is not None:
                    meta["scale"] = self._tables.transform.scale
        return meta, arrays

    @classmethod
    def from_state(
        cls,
        meta: dict[str, Any],
        arrays: dict[str, np.ndarray],
        weight: np.ndarray,
        bias: np.ndarray,
        backend: Any = None,
    ) -> ActiveSelector:
        """Rebuild a selector saved with :meth:`state` over the given parameters."""
        cfg = dict(meta["config"])
        sel = cls(backend=backend, **cfg)
        sel._weight, sel._bias = weight, bias
        sel.calls = int(meta["calls"])
        sel.step = int(meta["step"])
        sel.rebuilds = int(meta["rebuilds"])
        sel.rehashes = int(meta["rehashes"])
        sel.rehash_schedule = Schedule.from_state(meta["rehash_schedule"])
        sel.rebuild_schedule = Schedule.from_state(meta["rebuild_schedule"])
        sel._dirty = arrays["dirty"].astype(bool).copy()
        if sel.uses_hashing and sel.tables_kind == "index":
            # the index's bucket contents are not saved: rebuilt from the weights
            sel._index = sel._make_index(sel._rows(weight, bias), sel.seed + sel.rebuilds)
        elif sel.uses_hashing:
            tf = None
            dim = sel.n_in + 1
            if sel.transform_name is not None:
                tf = catalog.transform(sel.transform_name, dim)
                tf.scale = meta["scale"]
                dim = tf.out_dim
            fam = catalog.hash_family(
                sel.family_name,
                dim,
                sel.k,
                sel.l,
                seed=sel.seed + sel.rebuilds,
                backend=sel.backend,
                **sel.family_params,
            )
            sel._tables = _Tables(fam, tf, arrays["codes"])
            if "tie" in arrays:
                sel._tables.tie = np.asarray(arrays["tie"], np.int64).copy()
        return sel

    def __repr__(self) -> str:
        return (
            f"ActiveSelector(n_in={self.n_in}, n_out={self.n_out}, active={self.active}, "
            f"policy={self.policy!r}, family={self.family_name!r}, k={self.k}, l={self.l})"
        )
