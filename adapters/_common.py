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
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lshcore.core.validation import as_batch, check_choice, check_int
from lshcore.errors import BackendUnavailableError, InputError, LSHError
from lshcore.training.params import SelectionParams

__all__ = [
    "ActiveArrays",
    "DeviceError",
    "IndexFollower",
    "LayerSpec",
    "check_labels",
    "dense_arrays",
    "gpu_backend_reason",
    "load_digits_split",
    "load_example_data",
    "mult_summary",
    "union_arrays",
]

INFERENCE_MODES = ("sparse", "dense")
CHANGED_ROWS = ("auto", "touched", "all")


class DeviceError(LSHError, RuntimeError):
    """A tensor lives on a device the layer cannot serve (e.g. CUDA with no GPU backend)."""


@dataclass(frozen=True)
class LayerSpec:
    """The validated hashing parameters of one hashed layer (shared by all adapters).

    ``active`` is the share of outputs kept per input (1.0 = dense, no index at all);
    ``inference`` says what evaluation computes: ``"sparse"`` (hash as in training) or
    ``"dense"`` (every output). ``k``/``l`` None mean the defaults of
    :class:`~lshcore.training.params.SelectionParams`; ``selector_params`` are its other
    settings (``rehash``, ``tiebreak``, ...) and family keywords. Everything is validated
    here, names included (UnknownNameError for an unknown family, policy or transform),
    and :attr:`params` holds the result.
    """

    n_in: int
    n_out: int
    active: float = 0.05
    family: str = "srp"
    k: int | None = None
    l: int | None = None  # noqa: E741
    policy: str = "topk"
    transform: str | None = "simple_lsh"
    seed: int = 0
    backend: str | None = None
    inference: str = "sparse"
    selector_params: dict[str, Any] = field(default_factory=dict)
    params: SelectionParams = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        check_int(self.n_in, "in_features", low=1)
        check_int(self.n_out, "out_features", low=1)
        check_choice(self.inference, "inference", INFERENCE_MODES)
        params = SelectionParams.from_kwargs(
            active=self.active, family=self.family, k=self.k, l=self.l, policy=self.policy,
            transform=self.transform, seed=self.seed, **self.selector_params,
        )  # fmt: skip
        object.__setattr__(self, "params", params)  # frozen: set once, here

    @property
    def dense(self) -> bool:
        """True when every output is active (``active=1.0``): no index is built."""
        return self.active >= 1.0

    def config(self) -> dict[str, Any]:
        """JSON-able hashing parameters (what a framework's ``get_config`` stores)."""
        return {
            "active": self.active,
            "family": self.family,
            "k": self.k,
            "l": self.l,
            "policy": self.policy,
            "transform": self.transform,
            "seed": self.seed,
            "backend": self.backend,
            "inference": self.inference,
            **self.selector_params,
        }


@dataclass
class ActiveArrays:
    """One batch's active sets in the forms a framework computes with (see module doc)."""

    ids: np.ndarray  # (B, m) int64, -1 padding
    rows: np.ndarray  # (U,) int64, sorted distinct active ids
    pos: np.ndarray  # (B, m) int64 index into rows (0 on padding)
    valid: np.ndarray  # (B, m) float32, 1 on an active id and 0 on padding


def union_arrays(ids: np.ndarray) -> ActiveArrays:
    """``ActiveArrays`` from padded ``ids (B, m)`` (-1 padding)."""
    ids = np.ascontiguousarray(ids, dtype=np.int64)
    ok = ids >= 0
    rows, inverse = np.unique(ids[ok], return_inverse=True)
    pos = np.zeros(ids.shape, dtype=np.int64)
    pos[ok] = inverse.reshape(-1)
    return ActiveArrays(ids=ids, rows=rows.astype(np.int64), pos=pos, valid=ok.astype(np.float32))


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
    from lshcore.registry.catalog import get_backend

    try:
        get_backend("cupy")
    except (BackendUnavailableError, LookupError) as exc:
        return str(exc)
    return ""


class IndexFollower:
    """One layer's active-set selector, kept in step with the layer's weights.

    The framework layer calls :meth:`select` with the input as NumPy, marks the rows it
    trained with :meth:`touch`, and calls :meth:`sync` with the current weights whenever
    they may have changed (the adapters detect that themselves). ``sync`` passes the
    changed rows to ``ActiveSelector.after_update``, whose schedule decides whether to
    rehash or rebuild. With ``active=1.0`` there is no selector: every output is active.
    """

    def __init__(self, spec: LayerSpec, changed_rows: str = "touched"):
        self.spec = spec
        self.changed_rows = check_choice(changed_rows, "changed_rows", CHANGED_ROWS[1:])
        self.selector: Any = None
        self._touched = np.zeros(spec.n_out, dtype=bool)
        self._fitted = False
        #: multiplications of the training calls so far (see :meth:`select`)
        self.mults = {"selection": 0, "active": 0, "dense": 0, "dense_full": 0}

    # -- selector life cycle ---------------------------------------------------------
    def _make_selector(self) -> Any:
        try:
            from lshcore.training.selector import ActiveSelector
        except ImportError as exc:  # the core module is required for active < 1
            raise BackendUnavailableError(
                f"active={self.spec.active} needs lshcore.training.selector ({exc}); "
                "use active=1.0 for a dense layer"
            ) from exc
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
        self._touched[:] = False
        self._fitted = True

    def touch(self, rows: np.ndarray) -> None:
        """Mark ``rows`` as trained since the last :meth:`sync`."""
        self._touched[rows] = True

    @property
    def touched(self) -> np.ndarray:
        """(n_out,) bool: rows trained since the last :meth:`sync`."""
        return self._touched

    def pending(self) -> bool:
        """Whether some rows were trained since the last :meth:`sync`."""
        return bool(self._touched.any())

    def sync(self, weight: np.ndarray, bias: np.ndarray | None, *, all_rows: bool = False) -> None:
        """Tell the selector the weights changed (the rows trained since the last sync,
        or every row with ``all_rows`` / ``changed_rows="all"``)."""
        if not self._fitted:
            self.fit(weight, bias)
            return
        if self.selector is not None:
            rows: np.ndarray | None = None  # None: every row may have changed
            if not (all_rows or self.changed_rows == "all"):
                rows = np.flatnonzero(self._touched).astype(np.int64)
            if rows is None or rows.size:
                self.selector.after_update(_f32(weight), self._bias(bias), rows)
        self._touched[:] = False

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
        from lshcore.training.selector import ActiveSelector

        self.selector = ActiveSelector.from_state(
            meta, arrays, _f32(weight), self._bias(bias), backend=self.spec.backend
        )
        self._touched[:] = False
        self._fitted = True
        return True

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


def load_digits_split(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """scikit-learn's bundled 8x8 digits scaled to [0, 1], split 80/20 with ``seed``."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = (data.data / 16.0).astype(np.float32)
    y = data.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(y))
    cut = int(0.8 * len(y))
    tr, te = order[:cut], order[cut:]
    return x[tr], y[tr], x[te], y[te]


def load_example_data(
    data_dir: str | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """MNIST ``(x_train, y_train, x_test, y_test)`` from ``data_dir`` or ``$LSHCORE_DATA``
    (never downloaded); scikit-learn's digits when MNIST is not there (says so)."""
    from lshcore.data.datasets import load_mnist
    from lshcore.errors import DataError

    try:
        d = load_mnist(data_dir, download=False)
    except DataError as exc:
        print(f"{str(exc).splitlines()[0]} -- using scikit-learn's digits instead")
        return load_digits_split()
    return d.x_train, d.y_train, d.x_test, d.y_test
