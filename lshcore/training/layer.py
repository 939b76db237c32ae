"""Fully connected layers of the core engine: dense, and hashed (LSH-selected neurons).

Activations between layers are either a dense array ``(B, n)`` float32 or a
:class:`~lshcore.training.selector.SparseBatch` (the active ids and their values). A
:class:`HashedLayer` computes only its active neurons and returns a SparseBatch, so a
following hashed layer multiplies only active inputs by active rows: the savings compound.

Each worker thread owns a :class:`Workspace` per layer (gradient buffers, touched lists,
what the forward pass must remember); the weights and optimizer state are shared
(Hogwild: no locks). Every kernel reports its multiply-adds into a :class:`Counts`.

On a device backend (``backend.on_device``: ``cupy``, or the simulator's stand-in in the
tests) the weights, biases, optimizer state, workspaces, pre-activations and gradients
live in the backend's array namespace and stay there: the kernels update them in place.
What crosses goes through ``backend.to_device`` / ``backend.to_host`` (counted, see
:func:`lshcore.core.backend.count_transfers`), each with a tag: ``input`` (the batch),
``active_ids`` (a host selector's choice), ``labels``, ``activations`` (a hashed
layer's input on its way to a host selector), ``rehash`` (the changed rows the host
hash tables re-hash), ``selection_work`` (a device selector's work tally),
``loss``/``metrics``, ``init`` (the initial weights up; down only to build a host
selector's tables), ``save``/``load``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lshcore.core.backend import Backend, is_device_array
from lshcore.core.validation import check_int
from lshcore.errors import ConfigError, InputError
from lshcore.registry.catalog import get_backend
from lshcore.training.optim import Optimizer
from lshcore.training.params import SelectionParams
from lshcore.training.selector import ActiveSelector, SparseBatch, labels_matrix

__all__ = ["Counts", "Workspace", "DenseLayer", "HashedLayer", "ACTIVATIONS", "row_top_mask"]

ACTIVATIONS = ("relu", "linear")
_COL0 = np.zeros(1, np.int64)
#: policies whose selection reads the weights: a selector choosing on the host scores
#: them with NumPy kernels on host arrays (the adapters hand such a selector host
#: copies); on a device backend the core layer offers them only where the selector
#: chooses on the device (``can_select_on_device``), which scores the device weights
HOST_WEIGHT_POLICIES = ("rerank", "exact")


@dataclass
class Counts:
    """Work in two currencies, each counted by the kernel that does it.

    Multiply-adds by kind: ``forward``, ``backward``, ``hashing`` (hashing the queries,
    plus ``rerank``'s exact candidate products), ``rehashing`` (table build, rehash and
    rebuild), ``optimizer`` (the update: ``OPT_MULTS`` per updated entry). ``selection``:
    selection work that is not multiplication (bucket entries read, candidates counted,
    keys ranked, binary-search steps, WTA/DWTA comparisons).
    """

    forward: int = 0
    backward: int = 0
    hashing: int = 0
    rehashing: int = 0
    optimizer: int = 0
    selection: int = 0

    @property
    def total(self) -> int:
        """Every multiply-add, the optimizer's included."""
        return self.paper_total + self.optimizer

    @property
    def paper_total(self) -> int:
        """The paper's measure: forward, backward and hashing multiply-adds (no optimizer)."""
        return self.forward + self.backward + self.hashing + self.rehashing

    def add(self, other: Counts) -> None:
        self.forward += other.forward
        self.backward += other.backward
        self.hashing += other.hashing
        self.rehashing += other.rehashing
        self.optimizer += other.optimizer
        self.selection += other.selection

    def as_dict(self) -> dict[str, int]:
        return {
            "forward": self.forward,
            "backward": self.backward,
            "hashing": self.hashing,
            "rehashing": self.rehashing,
            "optimizer": self.optimizer,
            "total": self.total,
            "selection_ops": self.selection,
        }


@dataclass
class Workspace:
    """One worker's buffers for one layer (never shared between threads)."""

    grad_w: np.ndarray
    grad_b: np.ndarray
    mark_w: np.ndarray
    mark_b: np.ndarray
    touched_w: np.ndarray
    touched_b: np.ndarray
    n_w: int = 0
    n_b: int = 0
    dense_grad: bool = False  # the last backward produced a dense gradient (grad_w as 2-D)
    cache: dict[str, Any] = field(default_factory=dict)


class _Layer:
    """Shared parts: parameters, optimizer state, activation, kernels."""

    hashed = False
    #: the layer's active sets are chosen on its device (HashedLayer with a device
    #: selector): the rows it changes are reported as device ids
    device_selection = False

    def __init__(
        self,
        n_in: int,
        n_out: int,
        activation: str = "relu",
        seed: int = 0,
        backend: str | Backend | None = None,
        fan_in: int | None = None,
    ):
        self.n_in = check_int(n_in, "n_in", low=1)
        self.n_out = check_int(n_out, "n_out", low=1)
        if activation not in ACTIVATIONS:
            raise ConfigError(f"activation must be one of {ACTIVATIONS}; got {activation!r}")
        self.activation = activation
        self.seed = check_int(seed, "seed", low=0)
        self.backend = get_backend(backend)
        self.kernels = self.backend.kernels
        #: parameters, state and workspaces live on the device (backend.on_device)
        self.on_device = self.backend.on_device
        #: the array namespace of the parameters (numpy, or cupy on a device)
        self.xp: Any = self.backend.xp if self.on_device else np
        rng = np.random.default_rng(self.seed)
        # He/LeCun scale for the inputs that are actually non-zero: after a hashed layer
        # only ``fan_in`` of the n_in inputs are active, and a full-fan-in scale would shrink
        # the signal by sqrt(fan_in / n_in) per layer
        self.fan_in = check_int(fan_in if fan_in is not None else n_in, "fan_in", low=1)
        scale = np.sqrt((2.0 if activation == "relu" else 1.0) / self.fan_in)
        # drawn on the host (the same numbers on every backend), copied once to a device
        weight = np.ascontiguousarray(
            (rng.standard_normal((n_out, n_in)) * scale).astype(np.float32)
        )
        self.weight: Any = self._put(weight, "init")
        self.bias: Any = self._put(np.zeros(n_out, np.float32), "init")
        self.states_w: list[Any] = []
        self.states_b: list[Any] = []
        self.step = 0

    # -- host/device: every copy through the backend's counted helpers -----------------
    def _put(self, a: Any, tag: str) -> Any:
        """``a`` in the parameters' namespace (a counted copy when it is on the host)."""
        return self.backend.to_device(a, tag) if self.on_device else a

    def _get(self, a: Any, tag: str) -> Any:
        """``a`` on the host (a counted copy when the parameters are on a device)."""
        return self.backend.to_host(a, tag) if self.on_device else a

    def host_params(self, tag: str = "save") -> tuple[np.ndarray, np.ndarray]:
        """(weight, bias) as NumPy arrays (a counted copy from a device)."""
        return self._get(self.weight, tag), self._get(self.bias, tag)

    def init_optimizer(self, opt: Optimizer) -> None:
        """Allocate (zeroed) optimizer state for ``opt`` unless it already has that shape."""
        if len(self.states_w) != opt.n_states:
            xp = self.xp
            self.states_w = [xp.zeros_like(self.weight) for _ in range(opt.n_states)]
            self.states_b = [xp.zeros_like(self.bias) for _ in range(opt.n_states)]

    def new_workspace(self) -> Workspace:
        """Buffers for one worker, their pages touched now: first-touch page faults in
        the timed loop serialize Hogwild threads on the kernel's memory-map lock."""
        size = self.n_out * self.n_in

        def zeros(n: int, dtype: Any) -> Any:
            if self.on_device:
                return self.xp.zeros(n, dtype=dtype)
            arr = np.empty(n, dtype)
            arr.fill(0)
            return arr

        return Workspace(
            grad_w=zeros(size, np.float32),
            grad_b=zeros(self.n_out, np.float32),
            mark_w=zeros(size, np.uint8),
            mark_b=zeros(self.n_out, np.uint8),
            touched_w=zeros(size, np.int64),
            touched_b=zeros(self.n_out, np.int64),
        )

    def _activate(self, z: Any) -> Any:
        return self.xp.maximum(z, 0) if self.activation == "relu" else z

    def _grad_z(self, grad: Any, z: Any) -> Any:
        xp = self.xp
        if self.activation == "relu":
            return xp.where(z > 0, grad, xp.float32(0)).astype(xp.float32)
        return xp.ascontiguousarray(grad, dtype=xp.float32)

    def _check_dense(self, x: Any) -> None:
        ok = isinstance(x, np.ndarray) or (self.on_device and is_device_array(x))
        if not ok or x.ndim != 2 or x.shape[1] != self.n_in:
            raise InputError(
                f"x: expected a (B, {self.n_in}) array, got {getattr(x, 'shape', type(x))}"
            )

    def _x_on_device(self, x: Any, ws: Workspace) -> bool:
        """Whether the dense input ``x`` already lives in the parameters' namespace: the
        output of an earlier layer of the same model (``Model.forward`` marks it in the
        workspace), or a device array. A user's batch is a host array."""
        if not self.on_device:
            return False
        return bool(ws.cache.get("x_device")) or is_device_array(x)

    def _dense_device(self, x: Any, ws: Workspace) -> Any:
        """The dense input as a float32 array of the parameters' namespace."""
        if self._x_on_device(x, ws):
            return self.xp.ascontiguousarray(x, dtype=self.xp.float32)
        return self._put(np.ascontiguousarray(x, dtype=np.float32), "input")

    def _dense_host(self, x: Any, ws: Workspace) -> np.ndarray:
        """The dense input as a host float32 array (a counted copy when it is a device
        layer's output: the host selector and host kernels read it)."""
        if self._x_on_device(x, ws):
            return np.ascontiguousarray(self._get(x, "activations"), dtype=np.float32)
        return np.ascontiguousarray(x, dtype=np.float32)

    def _sparse_input(self, x: Any, ws: Workspace) -> tuple[Any, Any, bool]:
        """``(ids, vals, was_dense)`` of the input, in the parameters' namespace."""
        if isinstance(x, SparseBatch):
            if x.dim != self.n_in:
                raise InputError(f"x: expected vectors of length {self.n_in}, got {x.dim}")
            if not self.on_device:
                return x.ids, x.vals, False
            ids = x.dev_ids if x.dev_ids is not None else self._put(x.ids, "active_ids")
            vals = x.vals if x.device else self._put(x.vals, "input")
            return ids, vals, False
        self._check_dense(x)
        if self._x_on_device(x, ws):
            # a device layer's dense output: its non-zeros marked where it lives, every
            # column kept (-1 and 0 at the zeros; in column order as dense_to_sparse, so the
            # kernels sum in the same order) instead of a round trip to the host kernel
            xp = self.xp
            xd = self._dense_device(x, ws)
            nonzero = xd != 0
            cols = xp.arange(self.n_in, dtype=xp.int64)[None, :]
            ids = xp.ascontiguousarray(xp.where(nonzero, cols, -1).astype(xp.int64))
            return ids, xp.ascontiguousarray(xp.where(nonzero, xd, xp.float32(0))), True
        # dense_to_sparse is a host kernel on every backend
        ids, vals = self.kernels.dense_to_sparse(self._dense_host(x, ws))
        return self._put(ids, "input"), self._put(vals, "input"), True

    def _host_query(self, x: Any, ws: Workspace) -> Any:
        """``x`` as the host selector reads it (dense array or SparseBatch on the host)."""
        if not self.on_device:
            return x
        if isinstance(x, SparseBatch):
            if not x.device:
                return x
            vals = self._get(x.vals, "activations")
            ids = x.ids
            if ids is x.dev_ids:  # chosen by a device selector: the ids live there too
                ids = self._get(ids, "active_ids")
            return SparseBatch(ids, vals, x.dim, shared=x.shared)
        self._check_dense(x)
        return self._dense_host(x, ws)

    def _sparse_backward(
        self, ws: Workspace, gz: np.ndarray, need_grad_in: bool, counts: Counts
    ) -> Any:
        c = ws.cache
        grad_in, ws.n_w, ws.n_b, mults = self.kernels.layer_backward(
            self.weight,
            c["in_ids"],
            c["in_vals"],
            c["out_ids"],
            gz,
            need_grad_in,
            ws.grad_w,
            ws.grad_b,
            ws.mark_w,
            ws.mark_b,
            ws.touched_w,
            ws.touched_b,
            ws.n_w,
            ws.n_b,
        )
        ws.dense_grad = False
        counts.backward += int(mults)
        if not need_grad_in:
            return None
        if c["in_dense"] and self.on_device:  # scatter back: a row's ids are distinct
            xp = self.xp
            ids = c["in_ids"]
            dense = xp.zeros((gz.shape[0], self.n_in + 1), dtype=xp.float32)
            rows = xp.broadcast_to(xp.arange(ids.shape[0])[:, None], ids.shape)
            dense[rows, xp.where(ids >= 0, ids, self.n_in)] = grad_in
            return dense[:, : self.n_in]
        if c["in_dense"]:  # the previous layer gave a dense array: scatter back
            dense = np.zeros((gz.shape[0], self.n_in + 1), np.float32)
            ids = c["in_ids"]
            cols = np.where(ids >= 0, ids, self.n_in)
            np.add.at(
                dense, (np.broadcast_to(np.arange(ids.shape[0])[:, None], ids.shape), cols), grad_in
            )
            return dense[:, : self.n_in]
        return grad_in

    def forward(
        self, x: Any, ws: Workspace, counts: Counts, labels: Any = None, training: bool = False
    ) -> Any:
        """Activations of input ``x`` (dense (B, n_in) or SparseBatch)."""
        raise NotImplementedError

    # -- shared active sets (batch_union): one dense product over the gathered block -----
    def _block_input(self, x: Any, ws: Workspace) -> tuple[Any, Any, Any]:
        """``(xin (B, C) float32, cols (C,) or None = every input, sparse ids or None)``,
        arrays of the parameters' namespace."""
        xp = self.xp
        if isinstance(x, SparseBatch):
            if x.dim != self.n_in:
                raise InputError(f"x: expected vectors of length {self.n_in}, got {x.dim}")
            if x.shared:
                cols = x.ids[0]
                if self.on_device:
                    vals = x.vals if x.device else self._put(x.vals, "input")
                    dcols = x.dev_ids[0] if x.dev_ids is not None else None
                    if dcols is None:
                        dcols = self._put(np.ascontiguousarray(cols), "active_ids")
                    return xp.ascontiguousarray(vals, dtype=xp.float32), dcols, None
                return np.ascontiguousarray(x.vals, np.float32), cols, None
            if self.on_device:
                ids, vals, _ = self._sparse_input(x, ws)
                dense = xp.zeros((ids.shape[0], self.n_in + 1), dtype=xp.float32)
                rows = xp.broadcast_to(xp.arange(ids.shape[0])[:, None], ids.shape)
                dense[rows, xp.where(ids >= 0, ids, self.n_in)] = xp.where(ids >= 0, vals, 0)
                return dense[:, : self.n_in], None, ids
            return x.to_dense(), None, x.ids
        self._check_dense(x)
        if self.on_device:
            xd = self._dense_device(x, ws)
            # only the columns some row uses (see below), found where the batch lives
            used = xp.nonzero(xp.any(xd != 0, axis=0))[0]
            if int(used.shape[0]) > 0.9 * self.n_in:
                return xd, None, None
            return xp.ascontiguousarray(xp.take(xd, used, axis=1)), used, None
        x = np.ascontiguousarray(x, dtype=np.float32)
        # only the columns some row of the batch uses: the others multiply zeros (and would
        # only decay optimizer state); MNIST's border pixels, a sparse input's absent words
        used = np.flatnonzero(x.any(axis=0))
        if used.size > 0.9 * self.n_in:
            return x, None, None
        return np.ascontiguousarray(x[:, used]), used, None

    def _block_forward(
        self, x: Any, rows: Any, ws: Workspace, counts: Counts, device_rows: bool = False
    ) -> Any:
        """Pre-activations (B, len(rows)) of the neurons ``rows`` (None = all; host ids,
        or ids of the parameters' namespace with ``device_rows``) for every input row:
        one BLAS product over the gathered weights (all counted)."""
        xp = self.xp
        xin, cols, sparse_ids = self._block_input(x, ws)
        if device_rows:
            drows = rows
        else:
            drows = None if rows is None else self._put(np.ascontiguousarray(rows), "active_ids")
        w = self.weight if drows is None else xp.take(self.weight, drows, axis=0)
        if cols is not None:
            w = xp.take(w, cols, axis=1)
        b = self.bias if drows is None else xp.take(self.bias, drows, axis=0)
        z = xin @ w.T
        z += b
        counts.forward += int(xin.shape[0] * w.shape[0] * w.shape[1])
        ws.cache.update(
            block=True, xin=xin, rows=rows, drows=drows, cols=cols, wsub=w, z=z, sids=sparse_ids
        )
        return z

    def _block_backward(self, ws: Workspace, grad: Any, need_grad_in: bool, counts: Counts) -> Any:
        xp = self.xp
        c = ws.cache
        gz = self._grad_z(grad, c["z"])
        keep = c.pop("keep", None)
        if keep is not None:
            gz *= keep
        xin, w = c["xin"], c["wsub"]
        gw = gz.T @ xin
        gb = gz.sum(axis=0)
        ws.dense_grad = False
        c["block_grad"] = (c["rows"], c["drows"], c["cols"], gw, gb)
        n = int(xin.shape[0] * w.shape[0] * w.shape[1])
        counts.backward += n * (2 if need_grad_in else 1)
        if not need_grad_in:
            return None
        grad_in = gz @ w
        sids = c["sids"]
        if sids is not None:  # the input was a per-row SparseBatch: back to its columns
            picked = xp.take_along_axis(grad_in, xp.maximum(sids, 0), axis=1)
            return xp.where(sids >= 0, picked, xp.float32(0)).astype(xp.float32)
        return grad_in

    def backward(self, ws: Workspace, grad: Any, need_grad_in: bool, counts: Counts) -> Any:
        """Gradient on the input (same form as the forward input) from ``grad`` on the output."""
        raise NotImplementedError

    def config(self) -> dict[str, Any]:
        """JSON-able description (type, sizes, activation, seed, selector options)."""
        raise NotImplementedError

    def _ids(self, n: int) -> Any:
        return self.xp.arange(n, dtype=self.xp.int64)

    def apply_update(self, ws: Workspace, opt: Optimizer, counts: Counts | None = None) -> Any:
        """One optimizer step from the workspace's gradient; returns the rows changed
        (int64 ids, on the host for a hashed layer whose selector chooses on the host,
        else in the parameters' namespace: the device's on a device backend)."""
        self.step += 1
        step = self.step
        counts = counts if counts is not None else Counts()
        xp = self.xp
        col0 = self._ids(1) if self.on_device else _COL0
        if ws.dense_grad:  # every entry: the fused kernel over the whole matrix
            rows = self._ids(self.n_out)
            counts.optimizer += opt.block_step(
                self.kernels, self.weight, ws.cache["dense_gw"], rows,
                self._ids(self.n_in), self.states_w, step, xp=xp,
            )  # fmt: skip
            counts.optimizer += opt.block_step(
                self.kernels, self.bias.reshape(-1, 1), ws.cache["dense_gb"].reshape(-1, 1),
                rows, col0, [s.reshape(-1, 1) for s in self.states_b], step, xp=xp,
            )  # fmt: skip
            return np.arange(self.n_out, dtype=np.int64)
        block = ws.cache.pop("block_grad", None)
        if block is not None:  # a shared active set: one dense block of rows x cols
            rows, drows, cols, gw, gb = block
            rows = np.arange(self.n_out, dtype=np.int64) if rows is None else rows
            drows = self._ids(self.n_out) if drows is None else drows
            cols = self._ids(self.n_in) if cols is None else cols
            counts.optimizer += opt.block_step(
                self.kernels, self.weight, gw, drows, cols, self.states_w, step, xp=xp
            )
            counts.optimizer += opt.block_step(
                self.kernels, self.bias.reshape(-1, 1), gb.reshape(-1, 1), drows,
                col0, [s.reshape(-1, 1) for s in self.states_b], step, xp=xp,
            )  # fmt: skip
            return rows
        counts.optimizer += opt.sparse_step(
            self.kernels,
            self.weight.reshape(-1),
            ws.grad_w,
            ws.mark_w,
            ws.touched_w,
            ws.n_w,
            self.states_w,
            step,
            xp=xp,
        )
        if self.hashed and not self.device_selection:
            # the touched rows, for the host selector's rehash bookkeeping (ids only)
            rows = self._get(ws.touched_b[: ws.n_b], "active_ids").copy()
        else:  # a device selector marks them where they are; a dense layer has no use
            rows = ws.touched_b[: ws.n_b].copy()
        counts.optimizer += opt.sparse_step(
            self.kernels, self.bias, ws.grad_b, ws.mark_b, ws.touched_b, ws.n_b, self.states_b,
            step, xp=xp,
        )  # fmt: skip
        ws.n_w = 0
        ws.n_b = 0
        return rows

    def dense_cost(self) -> int:
        """Multiply-adds of one dense forward pass of one input."""
        return self.n_in * self.n_out


class DenseLayer(_Layer):
    """Every neuron computed: BLAS on dense input, the gather kernel on sparse input."""

    def forward(
        self, x: Any, ws: Workspace, counts: Counts, labels: Any = None, training: bool = False
    ) -> Any:
        """Activations (B, n_out) of input ``x`` (dense (B, n_in) or SparseBatch)."""
        c = ws.cache
        c["block"] = False
        if isinstance(x, SparseBatch) and x.shared:
            return self._activate(self._block_forward(x, None, ws, counts))
        if isinstance(x, SparseBatch):
            ids, vals, _ = self._sparse_input(x, ws)
            xp = self.xp
            out_ids = xp.ascontiguousarray(
                xp.broadcast_to(xp.arange(self.n_out, dtype=xp.int64), (ids.shape[0], self.n_out))
            )
            z, mults = self.kernels.layer_forward(self.weight, self.bias, ids, vals, out_ids)
            c.update(in_ids=ids, in_vals=vals, out_ids=out_ids, in_dense=False, sparse=True)
        else:
            if self.on_device:
                self._check_dense(x)
                x = self._dense_device(x, ws)
            else:
                x = np.ascontiguousarray(x, dtype=np.float32)
            z = x @ self.weight.T + self.bias
            mults = x.shape[0] * self.n_in * self.n_out
            c.update(x=x, sparse=False)
        counts.forward += int(mults)
        c["z"] = z
        return self._activate(z)

    def backward(self, ws: Workspace, grad: Any, need_grad_in: bool, counts: Counts) -> Any:
        """Gradient on the input (same form as the forward input) from ``grad`` on the output."""
        c = ws.cache
        if c.get("block"):
            return self._block_backward(ws, grad, need_grad_in, counts)
        gz = self._grad_z(grad, c["z"])
        if c["sparse"]:
            return self._sparse_backward(ws, gz, need_grad_in, counts)
        x = c["x"]
        c["dense_gw"] = gz.T @ x
        c["dense_gb"] = gz.sum(axis=0)
        ws.dense_grad = True
        mults = x.shape[0] * self.n_in * self.n_out
        counts.backward += mults * (2 if need_grad_in else 1)
        return gz @ self.weight if need_grad_in else None

    def config(self) -> dict[str, Any]:
        return {
            "type": "dense",
            "n_in": self.n_in,
            "n_out": self.n_out,
            "activation": self.activation,
            "seed": self.seed,
            "fan_in": self.fan_in,
        }


class HashedLayer(_Layer):
    """Only the neurons its :class:`ActiveSelector` picks are computed, forward and backward.

    ``params`` (a :class:`~lshcore.training.params.SelectionParams`) are the selection
    settings; ``**selector_options`` (``active``, ``policy``, ``family``, ``k``, ...)
    override them. The selector is seeded with the layer's ``seed`` unless an option says
    otherwise. Unknown names fail here (UnknownNameError), not at the first forward call.

    On a device backend the selector chooses on the device when its settings allow
    (``selector.selects_on_device``: see :mod:`lshcore.training.device_select`): the
    query, its codes, the tables and the chosen ids stay there. Otherwise it works on the
    host: it reads the layer's input (the batch, or a hashed layer's activations) and,
    when its schedule rehashes, the changed rows; the weights never leave the device
    otherwise. ``rerank`` and ``exact`` score against the weights: on a device backend
    they are offered only where the selector chooses on the device (a ``rerank`` whose
    tables would stay on the host, e.g. index tables, is refused: ConfigError).
    """

    hashed = True

    def __init__(
        self,
        n_in: int,
        n_out: int,
        activation: str = "relu",
        seed: int = 0,
        backend: str | Backend | None = None,
        fan_in: int | None = None,
        params: SelectionParams | None = None,
        **selector_options: Any,
    ):
        super().__init__(n_in, n_out, activation, seed, backend, fan_in)
        selector_options.setdefault("seed", self.seed)
        self.selector = ActiveSelector(
            n_in, n_out, params, backend=self.backend, **selector_options
        )
        self.check_device_selection()
        if self.on_device:
            # hashed where the weights are when the selector chooses on the device (no
            # copy); else from one host copy, then it reads the rows it rehashes there
            self.selector.fit_device(self.weight, self.bias)
        else:
            self.selector.fit(self.weight, self.bias)

    def check_device_selection(self) -> None:
        """ConfigError on a device backend for a ``rerank``/``exact`` selector whose
        settings keep the choice on the host: it would score candidates against host
        weights, a copy of the weights every step (checked at construction and at load)."""
        sel = self.selector
        if self.on_device and sel.policy in HOST_WEIGHT_POLICIES and not sel.can_select_on_device:
            raise ConfigError(
                f"policy {sel.policy!r} with these settings selects on the host and scores "
                f"candidates against host weights: not offered on the device backend "
                f"{self.backend.name!r} (it would copy the weights every step); on the "
                f"device it needs sorted tables, a family that hashes there (dwta, wta, "
                f"srp) and no transform or one with device methods (simple_lsh, "
                f"sign_alsh), or use another policy"
            )

    def forward(
        self, x: Any, ws: Workspace, counts: Counts, labels: Any = None, training: bool = False
    ) -> SparseBatch:
        """Active ids and activations (a SparseBatch) for input ``x`` (dense or SparseBatch)."""
        xp = self.xp
        ws.cache["block"] = False
        ws.cache.pop("keep", None)
        if self.device_selection:
            return self._forward_selecting_on_device(x, ws, counts, labels, training)
        if self.selector.policy in ("batch_union", "batch_rerank"):
            active = self.selector.select(self._host_query(x, ws), labels=labels, training=training)
            counts.hashing += active.hash_mults
            counts.selection += active.work
            z = self._block_forward(x, active.ids[0], ws, counts)
            a = self._activate(z)
            m = self.selector.m
            if self.selector.policy == "batch_rerank" and m < z.shape[1]:
                row_ids = ws.cache["drows"] if self.on_device else active.ids[0]
                lab = labels if training else None
                if lab is not None and self.on_device:
                    lab = self._put(np.asarray(lab), "labels")
                keep = row_top_mask(xp, z, m, row_ids, lab)
                counts.selection += int(z.size)  # one partition pass over each row's block
                ws.cache["keep"] = keep
                a *= keep
            dev_ids = None
            if self.on_device:
                drows = ws.cache["drows"]
                dev_ids = xp.broadcast_to(drows[None, :], (z.shape[0], drows.shape[0]))
            return SparseBatch(
                active.ids, a, self.n_out, shared=True, device=self.on_device, dev_ids=dev_ids
            )
        ids, vals, was_dense = self._sparse_input(x, ws)
        if self.on_device:
            query = self._host_query(x, ws)
        else:
            query = x if was_dense else SparseBatch(ids, vals, self.n_in)
        active = self.selector.select(query, labels=labels, training=training)
        counts.hashing += active.hash_mults
        counts.selection += active.work
        out_ids = self._put(active.ids, "active_ids")
        z, mults = self.kernels.layer_forward(self.weight, self.bias, ids, vals, out_ids)
        counts.forward += int(mults)
        ws.cache.update(in_ids=ids, in_vals=vals, out_ids=out_ids, in_dense=was_dense, z=z)
        a = self._activate(z)
        vals_out = xp.where(out_ids >= 0, a, xp.float32(0)).astype(xp.float32)
        if self.on_device:
            return SparseBatch(active.ids, vals_out, self.n_out, device=True, dev_ids=out_ids)
        return SparseBatch(active.ids, vals_out, self.n_out)

    @property
    def device_selection(self) -> bool:  # type: ignore[override]
        """Whether the selector chooses on the device (see ``ActiveSelector.attach``)."""
        return self.selector.selects_on_device

    def _forward_selecting_on_device(
        self, x: Any, ws: Workspace, counts: Counts, labels: Any, training: bool
    ) -> SparseBatch:
        """:meth:`forward` with the selector's tables on the device: the query, its codes
        and the chosen ids never leave it (only the batch and the labels go up)."""
        xp = self.xp
        sel = self.selector
        batch = x.batch_size if isinstance(x, SparseBatch) else int(x.shape[0])
        lab = labels_matrix(labels if training else None, batch, self.n_out)
        dev_lab = self._put(lab, "labels") if lab.shape[1] else None
        if sel.policy in ("batch_union", "batch_rerank"):
            if isinstance(x, SparseBatch):
                ids, vals, _ = self._sparse_input(x, ws)
                x = SparseBatch(ids, vals, self.n_in, shared=x.shared, device=True, dev_ids=ids)
            elif not self._x_on_device(x, ws):
                self._check_dense(x)
                x = self._dense_device(x, ws)  # up once: the query and the block share it
                ws.cache["x_device"] = True
            found = sel.select_device(x, lab, training=training, dev_labels=dev_lab)
            counts.hashing += found.hash_mults
            counts.selection += found.work
            z = self._block_forward(x, found.ids, ws, counts, device_rows=True)
            a = self._activate(z)
            m = sel.m
            if sel.policy == "batch_rerank" and m < z.shape[1]:
                keep = row_top_mask(xp, z, m, found.ids, dev_lab)
                counts.selection += int(z.size)  # one partition pass over each row's block
                ws.cache["keep"] = keep
                a *= keep
            dev_ids = xp.broadcast_to(found.ids[None, :], (z.shape[0], found.ids.shape[0]))
            return SparseBatch(dev_ids, a, self.n_out, shared=True, device=True, dev_ids=dev_ids)
        ids, vals, was_dense = self._sparse_input(x, ws)
        query = SparseBatch(ids, vals, self.n_in, device=True, dev_ids=ids)
        dense_form = was_dense or (isinstance(x, SparseBatch) and x.shared)
        found = sel.select_device(
            query, lab, training=training, dev_labels=dev_lab, dense_input=dense_form
        )
        counts.hashing += found.hash_mults
        counts.selection += found.work
        out_ids = found.ids
        z, mults = self.kernels.layer_forward(self.weight, self.bias, ids, vals, out_ids)
        counts.forward += int(mults)
        ws.cache.update(in_ids=ids, in_vals=vals, out_ids=out_ids, in_dense=was_dense, z=z)
        vals_out = xp.where(out_ids >= 0, self._activate(z), xp.float32(0)).astype(xp.float32)
        return SparseBatch(out_ids, vals_out, self.n_out, device=True, dev_ids=out_ids)

    def backward(self, ws: Workspace, grad: Any, need_grad_in: bool, counts: Counts) -> Any:
        if ws.cache.get("block"):
            return self._block_backward(ws, grad, need_grad_in, counts)
        gz = self._grad_z(grad, ws.cache["z"])
        return self._sparse_backward(ws, gz, need_grad_in, counts)

    def apply_update(self, ws: Workspace, opt: Optimizer, counts: Counts | None = None) -> Any:
        rows = super().apply_update(ws, opt, counts)
        # device weights go as they are: the selector copies only the rows it rehashes
        cost = self.selector.after_update(self.weight, self.bias, rows)
        if counts is not None:
            counts.rehashing += cost
        return rows

    def config(self) -> dict[str, Any]:
        sel = self.selector.config()
        for key in ("n_in", "n_out", "seed"):
            sel.pop(key)
        return {
            "type": "hashed",
            "n_in": self.n_in,
            "n_out": self.n_out,
            "activation": self.activation,
            "seed": self.seed,
            "fan_in": self.fan_in,
            "selector": sel,
        }


def row_top_mask(xp: Any, z: Any, m: int, ids: Any, labels: Any) -> Any:
    """(B, U) float32 mask: 1 at each row's ``m`` largest ``z`` over the shared ids
    ``ids`` (U,) (and its label columns: ``labels`` (B,) or (B, n), -1 ignored, or None);
    arrays of ``xp`` (NumPy, or CuPy on a device)."""
    u = z.shape[1]
    kth = xp.partition(z, u - m, axis=1)[:, u - m]
    keep = z >= kth[:, None]
    if labels is not None:
        lab = labels if xp is not np else np.asarray(labels)
        if lab.ndim == 1:  # one label per row, (B,)
            lab = lab.reshape(-1, 1)
        if lab.ndim == 2 and lab.shape[1]:
            keep |= (ids[None, :, None] == lab[:, None, :]).any(axis=2)
    return keep.astype(xp.float32)
