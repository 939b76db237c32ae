"""Framework-neutral glue shared by the PyTorch, Keras and Gluon adapters.

The adapters never hash or select themselves: :class:`IndexFollower` owns one
:class:`lshcore.training.selector.ActiveSelector` per layer and turns its padded active ids into
the arrays every framework needs to compute the active outputs with its own ops:

* ``ids (B, m)`` int64, -1 padding (what the selector returns);
* ``rows (U,)`` the distinct active neurons of the batch, sorted;
* ``pos (B, m)`` where each active id sits in ``rows`` (0 on padding);
* ``valid (B, m)`` 1.0 where ``ids`` holds a neuron, 0.0 on padding.

A framework computes ``z = x @ W[rows].T + b[rows]`` (B, U) with a differentiable
gather of the rows (so its weight gradient is row-sparse), then takes
``z[b, pos[b, j]] * valid[b, j]`` as the active values. This module imports NumPy only.

When the selector picks the ids on its device (``IndexFollower.on_device``: a device
backend, weights on the device, settings the device selector offers, ``rerank``/``exact``
included), the adapters keep the hashed forward there: the input and the labels reach
:meth:`IndexFollower.select_device` as zero-copy DLPack views
(:func:`lshcore.core.dlpack.to_backend`); PyTorch takes the ids back (``from_backend``)
and computes ``rows``/``pos``/``valid`` with torch ops, Keras and Gluon take them with the
backend's ``xp`` (:func:`union_arrays`) and get all four back as their tensors
(:func:`framework_arrays`); the trained rows are marked in a device mask
(:meth:`IndexFollower.touch_device`). The labels are read on the host for their range
check (:func:`check_labels`, ``B`` int64 per step) in every adapter.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lshcore.core.backend import Backend, device_kind, is_device_array
from lshcore.core.validation import as_batch, check_choice, check_int
from lshcore.errors import BackendUnavailableError, ConfigError, InputError, LSHError
from lshcore.registry.catalog import get_backend
from lshcore.training.layer import HOST_WEIGHT_POLICIES, row_top_mask
from lshcore.training.params import SelectionParams
from lshcore.training.selector import ActiveSelector

__all__ = [
    "ActiveArrays",
    "DeviceError",
    "HashedLayerMixin",
    "IndexFollower",
    "ADAPTER_DEFAULTS",
    "LayerSpec",
    "adapter_params",
    "check_labels",
    "dense_arrays",
    "framework_arrays",
    "gpu_backend_reason",
    "backend_for_input",
    "mult_summary",
    "scores_host_weights",
    "split_selection_options",
    "union_arrays",
]

INFERENCE_MODES = ("sparse", "dense")
CHANGED_ROWS = ("auto", "touched", "all")


#: The adapters' own selection defaults, applied over ``SelectionParams``' global ones
#: (``lshcore.training.params``, measured on the core engine and left as they are) whenever
#: a layer or ``train_mlp`` gets no ``params=``. Measured on a validation split of MNIST's
#: training data, one hidden layer of 1000 at the default share (5%), PyTorch adapter:
#: per-sample ``rerank`` over SRP k=4, l=50 came within 1 point of ``nn.Linear``; the global
#: defaults (``batch_union``, DWTA, auto k/l) stayed 2.2 points below, the old ``topk``
#: SRP default 10 points (benchmarks/results/adapters_defaults.md, docs/adapters.md
#: "Defaults"). Every setting not named here (``active``, ``rehash``, ...) is the global one.
ADAPTER_DEFAULTS: dict[str, Any] = {
    "policy": "rerank",
    "family": "srp",
    "k": 4,
    "l": 50,
    "rerank": 4.0,
    "transform": None,
}


def adapter_params(params: SelectionParams | None = None, **options: Any) -> SelectionParams:
    """The selection settings of an adapter layer: ``params`` with the keywords ``options``
    applied (as :meth:`SelectionParams.from_kwargs`), or without ``params``
    :data:`ADAPTER_DEFAULTS` with ``options`` applied over them. ``k=4, l=50`` are SRP's:
    a ``family`` other than ``"srp"`` given without ``k``/``l`` gets the global ``"auto"``."""
    if params is not None:
        return SelectionParams.from_kwargs(params, **options)
    base = dict(ADAPTER_DEFAULTS)
    if options.get("family") not in (None, base["family"]):
        del base["k"], base["l"]
    return SelectionParams.from_kwargs(SelectionParams(**base), **options)


class DeviceError(LSHError, RuntimeError):
    """A tensor lives on a device the layer cannot serve (e.g. CUDA with no GPU backend)."""


@dataclass(frozen=True)
class LayerSpec:
    """The validated hashing parameters of one hashed layer (shared by all adapters).

    ``params`` are the selection settings (share ``active``, family, tables, policy,
    schedules: :class:`~lshcore.training.params.SelectionParams`); ``backend`` the kernel
    backend of the selector (None: the default); ``inference`` what evaluation computes:
    ``"sparse"`` (hash as in training) or ``"dense"`` (every output). Build one from
    keywords with :meth:`build`.
    """

    n_in: int
    n_out: int
    params: SelectionParams = field(default_factory=adapter_params)
    backend: str | None = None
    inference: str = "sparse"

    def __post_init__(self) -> None:
        check_int(self.n_in, "in_features", low=1)
        check_int(self.n_out, "out_features", low=1)
        check_choice(self.inference, "inference", INFERENCE_MODES)
        if not isinstance(self.params, SelectionParams):
            raise ConfigError(f"params must be a SelectionParams, got {type(self.params).__name__}")
        if self.backend is not None and not isinstance(self.backend, str):
            raise ConfigError(f"backend must be a backend name or None, got {self.backend!r}")

    @classmethod
    def build(
        cls,
        n_in: int,
        n_out: int,
        params: SelectionParams | dict[str, Any] | None = None,
        *,
        backend: str | None = None,
        inference: str = "sparse",
        **options: Any,
    ) -> LayerSpec:
        """A spec from ``params`` (a SelectionParams, or its ``to_dict()`` form) with the
        selection keywords ``options`` applied over it (``active=``, ``family=``, ...;
        keywords that are not settings are family parameters). Validates everything,
        names included (UnknownNameError for an unknown family, policy or transform).
        Without ``params`` the settings start from :data:`ADAPTER_DEFAULTS`."""
        if isinstance(params, dict):  # what a framework's saved config holds
            params = SelectionParams.from_dict(params)
        selection = adapter_params(params, **options)
        return cls(n_in, n_out, selection, backend, inference)

    @property
    def active(self) -> float:
        """The share of outputs kept per input."""
        return self.params.active

    @property
    def dense(self) -> bool:
        """True when every output is active (``active=1.0``): no index is built."""
        return self.params.active >= 1.0

    def config(self) -> dict[str, Any]:
        """JSON-able hashing parameters (what a framework's ``get_config`` stores);
        :meth:`build` takes them back as keywords."""
        return {
            "params": self.params.to_dict(),
            "backend": self.backend,
            "inference": self.inference,
        }

    def describe(self) -> str:
        """The settings a layer's repr shows: ``active=0.05, family='srp', k=6, ...``."""
        p = self.params
        text = f"active={p.active:g}, family={p.family!r}, k={p.k}, l={p.l}, policy={p.policy!r}, seed={p.seed}"
        return text if self.inference == "sparse" else f"{text}, inference={self.inference!r}"


def split_selection_options(kwargs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``kwargs`` split into (selection settings, the rest): Keras and Gluon layers pass
    the rest to their base class, so family parameters must go in ``selector_params``."""
    names = {*SelectionParams.fields(), "schedule"}
    selection = {k: v for k, v in kwargs.items() if k in names}
    return selection, {k: v for k, v in kwargs.items() if k not in names}


@dataclass
class ActiveArrays:
    """One batch's active sets in the forms a framework computes with (see module doc):
    NumPy arrays on the host path, the framework's device tensors when the selector
    picks on the device (made by the adapter from :meth:`IndexFollower.select_device`)."""

    ids: Any  # (B, m) int64, -1 padding
    rows: Any  # (U,) int64, sorted distinct active ids
    pos: Any  # (B, m) int64 index into rows (0 on padding)
    valid: Any  # (B, m) float32 (the input's dtype on the device), 1 on an active id


def union_arrays(ids: Any, xp: Any = np) -> ActiveArrays:
    """``ActiveArrays`` from padded ``ids (B, m)`` (-1 padding), arrays of ``xp``: NumPy
    on the host path; a device backend's ``xp`` (CuPy, NumPy under the simulator) for
    ids picked on the device, which stay there (``xp.unique`` sorts, as the frameworks'
    own unique ops do not all). Every array comes back C-contiguous (MXNet imports only
    compact DLPack tensors) and ``valid`` is float32 (MXNet imports no bool)."""
    ids = xp.ascontiguousarray(ids, dtype=xp.int64)
    ok = ids >= 0
    rows, inverse = xp.unique(ids[ok], return_inverse=True)
    pos = xp.zeros(ids.shape, dtype=xp.int64)
    pos[ok] = inverse.reshape(-1)
    return ActiveArrays(ids=ids, rows=rows.astype(xp.int64), pos=pos, valid=ok.astype(xp.float32))


def framework_arrays(arrays: ActiveArrays, like: Any) -> ActiveArrays:
    """``arrays`` of a device backend (:func:`union_arrays` with its ``xp``) as tensors
    of ``like``'s framework on its device, sharing their memory (DLPack:
    :func:`lshcore.core.dlpack.from_backend`; no copy)."""
    from lshcore.core.dlpack import from_backend  # imports no framework

    parts = (arrays.ids, arrays.rows, arrays.pos, arrays.valid)
    return ActiveArrays(*(from_backend(a, like) for a in parts))


def dense_arrays(batch: int, n_out: int) -> ActiveArrays:
    """Every output active for each of ``batch`` inputs (the ``active=1.0`` case)."""
    rows = np.arange(n_out, dtype=np.int64)
    ids = np.broadcast_to(rows, (batch, n_out)).copy()
    return ActiveArrays(ids=ids, rows=rows, pos=ids.copy(), valid=np.ones(ids.shape, np.float32))


def check_labels(labels: Any, batch: int, n_out: int, name: str = "labels") -> np.ndarray:
    """Class labels as a (batch,) int64 array in ``[0, n_out)``; InputError otherwise."""
    arr = np.asarray(labels)
    if arr.dtype.kind not in "iu":
        raise InputError(f"{name}: expected integer class ids, got dtype {arr.dtype}")
    arr = arr.reshape(-1) if arr.ndim == 2 and arr.shape[1] == 1 else arr
    if arr.ndim != 1 or arr.shape[0] != batch:
        raise InputError(f"{name}: expected shape ({batch},), got {tuple(np.shape(labels))}")
    if arr.size and (arr.min() < 0 or arr.max() >= n_out):
        bad = int(arr[(arr < 0) | (arr >= n_out)][0])
        raise InputError(f"{name}: label {bad} is out of range [0, {n_out})")
    return arr.astype(np.int64)


def gpu_backend_reason() -> str:
    """Why the ``cupy`` backend cannot run here ("" when it can)."""
    try:
        get_backend("cupy")
    except (BackendUnavailableError, LookupError) as exc:
        return str(exc)
    return ""


_log = logging.getLogger("lshcore.adapters")
_WARNED: set[tuple[str, str]] = set()  # (layer class, reason or backend) said once


def backend_for_input(
    x: Any, requested: str | None, who: str = "layer", *, host_fallback: bool = False
) -> str | None:
    """The backend a layer's selector uses for the input tensor ``x``: ``requested`` (the
    layer's ``backend=``) when given; else ``"cupy"`` for a tensor on a CUDA device (with
    a log line) and None (the default host backend) for a CPU one. Reads the tensor's
    device without importing its framework (:func:`lshcore.core.backend.device_kind`).

    InputError for an object that is no array or tensor; DeviceError for a device other
    than CPU/CUDA, or a CUDA tensor where no GPU backend is usable (with the reason),
    unless ``host_fallback``: then the default host backend, with a warning (the
    selector reads host copies, as the TensorFlow and MXNet layers always did).
    """
    kind = device_kind(x)
    if kind is None:
        dev = getattr(x, "device", None)
        if dev is not None or hasattr(x, "__dlpack_device__"):
            raise DeviceError(
                f"{who}: x is on device {dev!r}, which lshcore does not support (cpu or cuda)"
            )
        raise InputError(
            f"{who}: x must be an array or tensor, got {type(x).__module__}.{type(x).__name__}"
        )
    if requested is not None:
        return requested
    if kind != "cuda":
        return None
    reason = gpu_backend_reason()
    if reason and host_fallback:
        if (who, reason) not in _WARNED:  # once per layer class and reason, not per batch
            _WARNED.add((who, reason))
            _log.warning(
                "%s: input on a CUDA device, no GPU backend (%s): host selection", who, reason
            )
        return None
    if reason:
        raise DeviceError(
            f"{who}: x is on a CUDA device but no GPU backend is usable ({reason}); move the "
            f"layer and input to the CPU, or pass backend='numpy' to select on host copies"
        )
    if (who, "cupy") not in _WARNED:  # once per layer class, not per batch
        _WARNED.add((who, "cupy"))
        _log.info("%s: input on a CUDA device, selecting with backend 'cupy'", who)
    return "cupy"


class IndexFollower:
    """One layer's active-set selector, kept in step with the layer's weights.

    The framework layer calls :meth:`select` with the input as NumPy, marks the rows it
    trained with :meth:`touch`, and calls :meth:`sync` with the current weights whenever
    they may have changed (the adapters detect that themselves). ``sync`` passes the
    changed rows to ``ActiveSelector.after_update``, whose schedule decides whether to
    rehash or rebuild. With ``active=1.0`` there is no selector: every output is active.

    On a device backend whose weights are on the device, :meth:`fit_device` builds the
    index from DLPack views of them; when the selector then picks on the device
    (:attr:`on_device`) the layer calls :meth:`select_device` with a view of its input
    and :meth:`touch_device` with the device rows it trained, which a device mask keeps
    until the next :meth:`sync` hands it to the selector (nothing crosses to the host).
    """

    def __init__(self, spec: LayerSpec, changed_rows: str = "touched"):
        self.spec = spec
        self.changed_rows = check_choice(changed_rows, "changed_rows", CHANGED_ROWS[1:])
        self.selector: Any = None
        self._touched = np.zeros(spec.n_out, dtype=bool)
        #: (n_out,) bool of the backend while the selector picks on the device: the rows
        #: trained since the last sync (see :meth:`touch_device`); None on the host path
        self._dev_touched: Any = None
        #: whether a row was marked in ``_dev_touched`` (a host flag: no device read)
        self._dev_pending = False
        self._fitted = False
        #: multiplications of the training calls so far (see :meth:`select`)
        self.mults = {"selection": 0, "active": 0, "dense": 0, "dense_full": 0}

    # -- selector life cycle ---------------------------------------------------------
    def _make_selector(self) -> Any:
        s = self.spec
        return ActiveSelector(s.n_in, s.n_out, s.params, backend=s.backend)

    @property
    def fitted(self) -> bool:
        """Whether the index has been built over the current weights at least once."""
        return self._fitted

    def fit(self, weight: np.ndarray, bias: np.ndarray | None) -> None:
        """Build a fresh index over all rows of ``weight (n_out, n_in)`` and ``bias``: the
        functions and tie-breaks of a newly made layer with the same seed."""
        if not self.spec.dense:
            selector = self._make_selector()
            selector.fit(_f32(weight), self._bias(bias))
            self.selector = selector
        self._fitted_now()

    def fit_device(self, weight: Any, bias: Any) -> None:
        """:meth:`fit` from arrays of the device backend (DLPack views of the framework's
        device parameters, ``weight (n_out, n_in)``, ``bias (n_out,)`` or None), through
        ``ActiveSelector.fit_device``: built there, without copying the weights, when
        the selector can pick on the device (:attr:`on_device` then), else from one
        host copy (tag ``init``). ``rerank``/``exact`` with settings that keep the choice
        on the host (:func:`scores_host_weights`) are built from that copy and keep host
        arrays."""
        if self.spec.dense:
            self._fitted_now()
            return
        selector = self._make_selector()
        backend = selector.backend
        if not backend.on_device:
            raise ConfigError(
                f"fit_device: backend {backend.name!r} works on host arrays; call fit()"
            )
        if bias is None:
            bias = backend.xp.zeros(self.spec.n_out, dtype=weight.dtype)
        if scores_host_weights(selector):
            # own host copies (not views): the selector keeps and re-scores what it gets
            host_w = np.array(backend.to_host(weight, "init"), dtype=np.float32)
            selector.fit(host_w, np.array(backend.to_host(bias, "init"), dtype=np.float32))
        else:
            selector.fit_device(weight, bias)
        self.selector = selector
        self._fitted_now()

    def attach(self, weight: Any, bias: Any) -> None:
        """Hand the fitted selector DLPack views of the device parameters (after
        :meth:`restore` from host copies): it picks on the device from then on when its
        settings allow. A selector that re-scores host weights keeps host arrays
        (:func:`scores_host_weights`)."""
        selector = self.selector
        if selector is None or scores_host_weights(selector):
            return
        if bias is None:
            bias = selector.backend.xp.zeros(self.spec.n_out, dtype=weight.dtype)
        touched = self._touched.copy()
        selector.attach(weight, bias)
        self._fitted_now()
        self.touch(np.flatnonzero(touched))  # into the device mask when it picks there

    def _fitted_now(self) -> None:
        """A new or newly attached index: nothing trained since; the device mask exists
        exactly while the selector picks on the device."""
        self._touched[:] = False
        self._dev_pending = False
        self._dev_touched = None
        if self.on_device:
            xp = self.selector.backend.xp
            self._dev_touched = xp.zeros(self.spec.n_out, dtype=bool)
        self._fitted = True

    @property
    def on_device(self) -> bool:
        """Whether the selector picks the ids on its device (``selects_on_device``):
        then the layer selects with :meth:`select_device` and marks :meth:`touch_device`."""
        return self.selector is not None and bool(self.selector.selects_on_device)

    def touch(self, rows: np.ndarray) -> None:
        """Mark ``rows`` (host ids) as trained since the last :meth:`sync`."""
        if self._dev_touched is not None:  # a host batch of a device selector: counted
            if len(rows):
                up = self.selector.backend.to_device(np.asarray(rows, np.int64), "rehash_ids")
                self._dev_touched[up] = True
                self._dev_pending = True
            return
        self._touched[rows] = True

    def touch_device(self, rows: Any) -> None:
        """Mark ``rows`` (U,) int64, an array of the device backend (a view of the
        framework's own), as trained since the last :meth:`sync`: into the device mask,
        without a read on the host."""
        if self._dev_touched is None:
            raise LSHError("touch_device: the selector picks on the host; call touch()")
        self._dev_touched[rows] = True
        self._dev_pending = True

    @property
    def touched(self) -> np.ndarray:
        """(n_out,) bool: rows trained since the last :meth:`sync` (a host copy of the
        device mask, tag ``touched``, while the selector picks on the device)."""
        if self._dev_touched is not None:
            return self.selector.backend.to_host(self._dev_touched, "touched").astype(bool)
        return self._touched

    def pending(self) -> bool:
        """Whether some rows were trained since the last :meth:`sync`."""
        if self._dev_touched is not None:
            return self._dev_pending
        return bool(self._touched.any())

    def sync(self, weight: np.ndarray, bias: np.ndarray | None, *, all_rows: bool = False) -> None:
        """Tell the selector the weights changed (the rows trained since the last sync,
        or every row with ``all_rows`` / ``changed_rows="all"``)."""
        if not self._fitted:
            self.fit(weight, bias)
            return
        if self._dev_touched is not None:
            self._sync_on_device(weight, bias, all_rows)
            return
        if self.selector is not None:
            rows: np.ndarray | None = None  # None: every row may have changed
            if not (all_rows or self.changed_rows == "all"):
                rows = np.flatnonzero(self._touched).astype(np.int64)
            if rows is None or rows.size:
                if is_device_array(weight):  # a DLPack view on the device: rows copied there
                    self.selector.after_update(weight, self._device_bias(weight, bias), rows)
                else:
                    self.selector.after_update(_f32(weight), self._bias(bias), rows)
        self._touched[:] = False

    def _sync_on_device(self, weight: Any, bias: Any, all_rows: bool) -> None:
        """:meth:`sync` of a selector that picks on the device: ``weight``/``bias`` are
        views of the device parameters and the changed rows go as the device mask."""
        rows: Any = None  # None: every row may have changed
        if not (all_rows or self.changed_rows == "all"):
            rows = self._dev_touched
        if rows is None or self._dev_pending:
            self.selector.after_update(weight, self._device_bias(weight, bias), rows)
        self._dev_touched[:] = False
        self._dev_pending = False

    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """The selector's state (JSON-able meta, arrays); empty when there is no index."""
        if self.selector is None or not self._fitted:
            return {}, {}
        meta, arrays = self.selector.state()
        return meta, arrays

    def restore(
        self,
        meta: dict[str, Any],
        arrays: dict[str, np.ndarray],
        weight: np.ndarray,
        bias: np.ndarray | None,
    ) -> bool:
        """Resume a selector saved with :meth:`state` over ``weight``/``bias``; False when
        there was nothing saved (then the caller refits)."""
        if self.spec.dense or not meta:
            return False
        self.selector = ActiveSelector.from_state(
            meta, arrays, _f32(weight), self._bias(bias), backend=self.spec.backend
        )
        self._fitted_now()
        return True

    def _device_bias(self, weight: Any, bias: Any) -> Any:
        if bias is not None:
            return bias
        xp = self.selector.backend.xp
        return xp.zeros(self.spec.n_out, dtype=weight.dtype)

    def _bias(self, bias: np.ndarray | None) -> np.ndarray:
        if bias is None:
            return np.zeros(self.spec.n_out, dtype=np.float32)
        return _f32(bias)

    # -- selection -----------------------------------------------------------------
    def select(
        self, x: np.ndarray, labels: np.ndarray | None, training: bool, dense: bool = False
    ) -> ActiveArrays:
        """The active sets of the batch ``x (B, n_in)`` (every output when ``dense``)."""
        if dense or self.spec.dense:
            return dense_arrays(x.shape[0], self.spec.n_out)
        if self.selector is None:
            raise LSHError("the index is not built: call fit(weight, bias) first")
        xs = as_batch(x, self.spec.n_in, "x")
        active = self.selector.select(xs, labels=labels, training=training)
        ids = _padded_ids(active, x.shape[0])
        if training:
            self._count(xs, ids, int(getattr(active, "hash_mults", 0)))
        return union_arrays(ids)

    def select_device(
        self, x: Any, labels: np.ndarray | None, dev_labels: Any, training: bool
    ) -> Any:
        """The padded active ids ``(B, m)`` int64 (-1 padding) of ``x (B, n_in)``, an
        array of the device backend (a DLPack view of the framework's input), picked on
        the device (:attr:`on_device`) and returned there. ``labels (B,)`` (host; their
        count and width) and ``dev_labels``, the same as a ``(B, 1)`` int64 array of the
        device (None: they go up, tag ``labels``), are forced into the sets in training.
        In training the multiplications are counted as :meth:`select` counts them, on
        the device (two int64 come down, tag ``selection_work``)."""
        if not self.on_device:
            raise LSHError("select_device: the selector picks on the host; call select()")
        if tuple(x.shape[1:]) != (self.spec.n_in,):
            raise InputError(f"x: expected shape (batch, {self.spec.n_in}), got {tuple(x.shape)}")
        lab = labels if training else None
        found = self.selector.select_device(
            x, lab, training, dev_labels=None if lab is None else dev_labels
        )
        xp = self.selector.backend.xp
        ids = found.ids
        batch = int(x.shape[0])
        if found.shared:  # one set for the batch: the per-row form the frameworks index
            ids = xp.ascontiguousarray(xp.broadcast_to(ids[None, :], (batch, ids.shape[0])))
        if training:
            self._count_device(x, ids, int(found.hash_mults))
        return ids

    def _count_device(self, x: Any, ids: Any, selection: int) -> None:
        """:meth:`_count` of a batch on the device (the same tallies)."""
        xp = self.selector.backend.xp
        nnz = xp.count_nonzero(x, axis=1).astype(xp.int64)
        per_row = xp.sum((ids >= 0).astype(xp.int64), axis=1)
        tally = xp.stack([xp.sum(per_row * nnz), xp.sum(nnz)])
        active, nonzeros = (int(v) for v in self.selector.backend.to_host(tally, "selection_work"))
        self.mults["selection"] += selection
        self.mults["active"] += active
        self.mults["dense"] += nonzeros * self.spec.n_out
        self.mults["dense_full"] += int(x.shape[0]) * self.spec.n_in * self.spec.n_out

    def _count(self, x: np.ndarray, ids: np.ndarray, selection: int) -> None:
        """Add one training batch to :attr:`mults`, counted over the input's non-zeros as
        the core layer counts them: ``selection`` (hashing the queries, plus the exact
        products of ``rerank``/``exact``), ``active`` (the active outputs' products:
        sum over inputs of active count x non-zeros), ``dense`` (what the dense layer
        multiplies for the same batch: non-zeros x n_out) and ``dense_full`` (batch x
        n_in x n_out, the core benchmarks' dense count). The framework may compute more
        than ``active`` (one GEMM over the union of the batch's active rows)."""
        nnz = np.count_nonzero(x, axis=1)
        self.mults["selection"] += selection
        self.mults["active"] += int(((ids >= 0).sum(axis=1) * nnz).sum())
        self.mults["dense"] += int(nnz.sum()) * self.spec.n_out
        self.mults["dense_full"] += x.shape[0] * self.spec.n_in * self.spec.n_out


class HashedLayerMixin:
    """The framework-neutral half of a hashed layer: its spec, its selector and the index
    refresh. A framework layer class derives from this and its framework's layer base,
    calls :meth:`_init_hashing` in its constructor and :meth:`_bind_input` once the input
    size is known, and supplies :meth:`_weights_numpy`. Everything else it keeps is what
    only its framework can do (parameters, differentiable ops, sparse gradients, saving).
    """

    _index: IndexFollower | None
    _spec_template: LayerSpec
    _changed_rows: str
    _needs_fit: bool
    #: (B, m) int64 active ids (-1 padding) of the last hashed call, for inspection: a
    #: NumPy array on the host path; the framework's device tensor (no copy) when the
    #: selector picks on the device (``.cpu()``/``.numpy()`` it to read it on the host)
    last_active_ids: Any

    def _init_hashing(
        self,
        n_out: int,
        n_in: int | None,
        params: SelectionParams | dict[str, Any] | None,
        options: dict[str, Any],
        *,
        backend: str | None,
        inference: str,
        changed_rows: str = "all",
    ) -> None:
        """Validate the selection settings now (a bad name fails at construction, not at
        the first call); the index itself exists once the input size ``n_in`` is known."""
        # n_in=1 stands in while the size is unknown: only n_out is checked here
        spec = LayerSpec.build(
            n_in or 1, n_out, params, backend=backend, inference=inference, **options
        )
        self._spec_template = spec
        self._changed_rows = check_choice(changed_rows, "changed_rows", CHANGED_ROWS[1:])
        self._index = None
        self._needs_fit = True
        self.last_active_ids = None
        if n_in:
            self._bind_input(n_in)

    #: a CUDA input without a usable GPU backend selects on the host (else DeviceError)
    _host_fallback = False

    def _bind_input(self, n_in: int, x: Any = None) -> IndexFollower:
        """The layer's index follower, made on the first call with input size ``n_in``.

        With the input ``x``, the backend follows its device unless the layer was given
        one (:func:`backend_for_input`): a CUDA tensor selects ``cupy``. When an
        automatically chosen backend changes (the layer moved between CPU and GPU), the
        index is made anew for the new backend and rebuilt from the weights, with a log
        line."""
        backend = self._spec_template.backend
        if x is not None and backend is None:
            backend = backend_for_input(
                x, None, type(self).__name__, host_fallback=self._host_fallback
            )
        if self._index is not None and self._index.spec.backend != backend:
            _log.info(
                "%s: input moved; the index moves from backend %r to %r (rebuilt)",
                type(self).__name__,
                self._index.spec.backend,
                backend,
            )
            self._index = None
            self._needs_fit = True
        if self._index is None:
            spec = dataclasses.replace(self._spec_template, n_in=n_in, backend=backend)
            self._index = IndexFollower(spec, self._changed_rows)
        return self._index

    def _bound_index(self) -> IndexFollower:
        if self._index is None:
            raise InputError(
                f"{type(self).__name__}: the input size is not known yet; call the layer on a batch first"
            )
        return self._index

    @property
    def spec(self) -> LayerSpec:
        """The validated hashing parameters (once the input size is known)."""
        return self._bound_index().spec

    @property
    def selection_params(self) -> SelectionParams:
        """The selection settings (available from construction)."""
        return self._spec_template.params

    @property
    def selector(self) -> Any:
        """The underlying ``lshcore.training.selector.ActiveSelector`` (None when
        ``active=1.0`` or before the first call)."""
        return None if self._index is None else self._index.selector

    # -- the index over the framework's weights -------------------------------------------
    def _weights_numpy(self) -> tuple[Any, Any]:
        """The weight ``(n_out, n_in)`` and bias ``(n_out,)`` (or None) as host arrays."""
        raise NotImplementedError

    def _host_params(self) -> tuple[np.ndarray, np.ndarray | None]:
        w, b = self._weights_numpy()
        return _f32(w), None if b is None else _f32(b)

    def _weight_tensors(self) -> tuple[Any, Any]:
        """The framework's weight and bias (or None) tensors, for a DLPack view on the
        device (a hook: None, None when the framework layer offers none)."""
        return None, None

    def _sync_params(self) -> tuple[Any, Any]:
        """The weights the selector reads at a sync: on a device backend, zero-copy
        DLPack views of the framework's CUDA parameters (the selector gathers the rows
        it rehashes there and copies only those, and ``rerank``/``exact`` score the
        candidates there); else host copies, also for a ``rerank``/``exact`` selector
        whose settings keep the choice on the host (:func:`scores_host_weights`: it runs
        NumPy kernels on the weights it holds)."""
        index = self._bound_index()
        w, b = self._weight_tensors()
        selector = index.selector
        device = selector is not None and selector.backend.on_device
        if device and w is not None and not scores_host_weights(selector):
            if is_device_array(w):
                from lshcore.core.dlpack import to_backend  # imports no framework

                backend = index.selector.backend
                return to_backend(w, backend), None if b is None else to_backend(b, backend)
        return self._host_params()

    def _device_weight_views(self, index: IndexFollower) -> tuple[Any, Any] | None:
        """Zero-copy DLPack views of the framework's weight and bias (or None) as arrays
        of the index's device backend, when its backend is a device one and the
        parameters are on the device; else None (host copies). What the selector keeps
        of them is for :meth:`IndexFollower.fit_device`/``attach`` to decide."""
        backend: Backend = (
            index.selector.backend
            if index.selector is not None
            else get_backend(index.spec.backend)
        )
        if not backend.on_device:
            return None
        w, b = self._weight_tensors()
        if w is None or not is_device_array(w):
            return None
        from lshcore.core.dlpack import to_backend  # imports no framework

        bias = None if b is None else to_backend(b, backend, "bias")
        return to_backend(w, backend, "weight"), bias

    def _index_synced(self) -> None:
        """Called after the index was rebuilt over the current weights (a hook)."""

    def refresh_index(self) -> None:
        """Rebuild the index over the current weights now (same hash functions): from
        DLPack views of them on a device backend whose weights are on the device (see
        :meth:`IndexFollower.fit_device`), else from host copies."""
        index = self._bound_index()
        views = None if index.spec.dense else self._device_weight_views(index)
        if views is not None:
            index.fit_device(*views)
        else:
            index.fit(*self._host_params())
        self._needs_fit = False
        self._index_synced()

    def _selects_on_device(self, x: Any) -> bool:
        """Whether the hashed forward of ``x`` stays on the device: the selector picks
        there and ``x`` is a device tensor (a host batch takes the host path)."""
        index = self._index
        return index is not None and index.on_device and is_device_array(x)

    def _follow_weights(self) -> None:
        """Bring the index in step before a hashed call: rebuild it when asked to (new or
        loaded weights), else hand the rows trained since the last call to the selector
        (the optimizer moved them in between)."""
        index = self._bound_index()
        if self._needs_fit or not index.fitted:
            self.refresh_index()
        elif index.pending():
            index.sync(*self._sync_params())

    def _select_active(
        self, x: np.ndarray, labels: np.ndarray | None, training: bool, *, dense: bool, mark: bool
    ) -> ActiveArrays:
        """The active sets of ``x (B, n_in)`` float32; ``mark``: the rows will be trained."""
        index = self._bound_index()
        arrays = index.select(x, labels if training else None, training, dense=dense)
        if mark:
            index.touch(arrays.rows)
        self.last_active_ids = arrays.ids
        return arrays

    def _select_active_device(
        self, x: Any, labels: np.ndarray | None, dev_labels: Any, training: bool, *, mark: bool
    ) -> ActiveArrays:
        """:meth:`_select_active` with the selector picking on the device (see
        :meth:`_selects_on_device`): ``x (B, n_in)``, the framework's device tensor,
        reaches it as a DLPack view; the ids stay there and their union is taken there
        (:func:`union_arrays` with the backend's ``xp``). Returns arrays of the backend
        (``framework_arrays`` makes them tensors). ``labels (B,)`` on the host (their
        count; ``dev_labels`` the same as a (B, 1) int64 array of the device, or None:
        then they go up, tag ``labels``) are forced in when ``training``; ``mark``: the
        rows will be trained (they go into the device mask, no host read)."""
        from lshcore.core.dlpack import to_backend  # imports no framework

        index = self._bound_index()
        backend = index.selector.backend
        ids = index.select_device(to_backend(x, backend), labels, dev_labels, training)
        arrays = union_arrays(ids, backend.xp)
        if mark:
            index.touch_device(arrays.rows)
        return arrays

    @property
    def _batch_rerank(self) -> bool:
        """Whether forward masks each row to its best ``m`` of the shared block (callers
        check this before copying the block's values to the host)."""
        return not self.spec.dense and self.spec.params.policy == "batch_rerank"

    def _rerank_keep(
        self, values: np.ndarray, arrays: ActiveArrays, labels: np.ndarray | None, training: bool
    ) -> np.ndarray | None:
        """``batch_rerank``: a (B, w) float32 mask keeping each row's ``m`` largest
        pre-activations ``values`` (B, w) of the batch's shared block (and, in training,
        its label's column), as the core layer does; None for other policies or when the
        block holds no more than ``m``. The mask is a constant of the step: gradients flow
        through the kept entries only."""
        m = self.selector.m if self.selector is not None else 0
        if not self._batch_rerank or arrays.ids.shape[1] <= m:
            return None
        z = np.where(arrays.valid > 0, values, -np.inf).astype(np.float32)
        lab = labels.reshape(-1, 1) if training and labels is not None else None
        keep = row_top_mask(np, z, m, arrays.ids[0], lab)
        self.selector.add_ranked(int(z.size))  # one partition pass over each row
        return np.asarray(keep * arrays.valid, dtype=np.float32)

    def _rerank_keep_device(self, values: Any, arrays: ActiveArrays, dev_labels: Any) -> Any | None:
        """:meth:`_rerank_keep` on the device: ``values (B, w)`` float32 and ``arrays``
        (``ids``, ``valid``) are arrays of the selector's backend (DLPack views, or
        :meth:`_select_active_device`'s), ``dev_labels`` the training labels (B, 1) int64
        there or None. The same (B, w) float32 mask, an array of the backend; None for
        other policies or when the block holds no more than ``m``."""
        m = self.selector.m if self.selector is not None else 0
        if not self._batch_rerank or arrays.ids.shape[1] <= m:
            return None
        xp = self.selector.backend.xp
        z = xp.where(arrays.valid > 0, values, -xp.inf).astype(xp.float32)
        keep = row_top_mask(xp, z, m, arrays.ids[0], dev_labels)
        self.selector.add_ranked(int(z.size))  # one partition pass over each row
        return keep * arrays.valid

    def _index_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """The index as (JSON-able meta, arrays), the rows trained since the last sync
        included as ``touched``; empty when there is no index."""
        meta, arrays = ({}, {}) if self._index is None else self._index.state()
        if not meta:
            return {}, {}
        assert self._index is not None
        return meta, {**arrays, "touched": self._index.touched.copy()}

    def _restore_index(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> bool:
        """Resume the index saved by :meth:`_index_state` over the current weights; False
        when nothing was saved (the next call rebuilds it)."""
        arrays = dict(arrays)
        touched = arrays.pop("touched", None)
        index = self._bound_index()
        if not index.restore(meta, arrays, *self._host_params()):
            return False
        if touched is not None:
            index.touch(np.flatnonzero(touched))
        views = self._device_weight_views(index)
        if views is not None:  # the selector reads (and picks with) the device weights
            index.attach(*views)
        self._needs_fit = False
        return True


def scores_host_weights(selector: Any) -> bool:
    """Whether ``selector`` re-scores its candidates with NumPy kernels on the weights it
    holds: ``rerank``/``exact`` (``HOST_WEIGHT_POLICIES``) with settings that keep the
    choice on the host (not ``can_select_on_device``: ``tables="index"``, a family without
    ``device_hash``, a transform plugin without device methods). Such a selector must be
    given host copies of the weights, never device views; on the device ``rerank`` and
    ``exact`` score the device weights themselves."""
    return selector.policy in HOST_WEIGHT_POLICIES and not selector.can_select_on_device


def mult_summary(followers: list[IndexFollower]) -> dict[str, Any]:
    """The training multiplications of some hashed layers, summed, and their share of the
    dense layers': ``forward_share`` = (selection + active) / dense and ``train_share`` =
    (selection + rehash + 2 active) / (2 dense) (forward and weight gradient; the input gradient
    of a first layer is not needed by either), all over the inputs' non-zeros;
    ``train_share_of_dense_full`` the same against batch x n_in x n_out."""
    keys = ("selection", "active", "dense", "dense_full")
    tot = {key: sum(f.mults[key] for f in followers) for key in keys}
    tot["rehash"] = sum(
        int(getattr(f.selector, "rehash_mults", 0)) for f in followers if f.selector is not None
    )
    dense = max(tot["dense"], 1)
    hashed = tot["selection"] + tot["rehash"] + 2 * tot["active"]
    return {
        "mults": tot,
        "train_share_of_dense_full": hashed / (2 * max(tot["dense_full"], 1)),
        "forward_share": (tot["selection"] + tot["active"]) / dense,
        "train_share": hashed / (2 * dense),
        "selection_share": tot["selection"] / dense,
    }


def _f32(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float32)


def _padded_ids(active: Any, batch: int) -> np.ndarray:
    """The (B, m) padded id array of an ``ActiveSet`` (or of a bare array)."""
    ids = getattr(active, "ids", active)
    if hasattr(active, "padded") and callable(active.padded):
        ids = active.padded()
    ids = np.asarray(ids, dtype=np.int64)
    if ids.ndim == 1:  # one set shared by the whole batch (batch_union)
        ids = np.broadcast_to(ids, (batch, ids.shape[0]))
    return np.ascontiguousarray(ids)
