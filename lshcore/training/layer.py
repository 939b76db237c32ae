"""Fully connected layers of the core engine: dense, and hashed (LSH-selected neurons).

Activations between layers are either a dense array ``(B, n)`` float32 or a
:class:`~lshcore.training.selector.SparseBatch` (the active ids and their values). A
:class:`HashedLayer` computes only its active neurons and returns a SparseBatch, so a
following hashed layer multiplies only active inputs by active rows: the savings compound.

Each worker thread owns a :class:`Workspace` per layer (gradient buffers, touched lists,
what the forward pass must remember); the weights and optimizer state are shared
(Hogwild: no locks). Every kernel reports its multiply-adds into a :class:`Counts`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lshcore.core.backend import Backend
from lshcore.core.validation import check_int
from lshcore.errors import ConfigError, InputError
from lshcore.registry.catalog import get_backend
from lshcore.training.optim import Optimizer
from lshcore.training.params import SelectionParams
from lshcore.training.selector import ActiveSelector, SparseBatch

__all__ = ["Counts", "Workspace", "DenseLayer", "HashedLayer", "ACTIVATIONS"]

ACTIVATIONS = ("relu", "linear")
_COL0 = np.zeros(1, np.int64)


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
        # a device backend (cupy) takes these host arrays too: its layer kernels copy them
        self.backend = get_backend(backend)
        self.kernels = self.backend.kernels
        rng = np.random.default_rng(self.seed)
        # He/LeCun scale for the inputs that are actually non-zero: after a hashed layer
        # only ``fan_in`` of the n_in inputs are active, and a full-fan-in scale would shrink
        # the signal by sqrt(fan_in / n_in) per layer
        self.fan_in = check_int(fan_in if fan_in is not None else n_in, "fan_in", low=1)
        scale = np.sqrt((2.0 if activation == "relu" else 1.0) / self.fan_in)
        self.weight = np.ascontiguousarray(
            (rng.standard_normal((n_out, n_in)) * scale).astype(np.float32)
        )
        self.bias = np.zeros(n_out, np.float32)
        self.states_w: list[np.ndarray] = []
        self.states_b: list[np.ndarray] = []
        self.step = 0

    def init_optimizer(self, opt: Optimizer) -> None:
        """Allocate (zeroed) optimizer state for ``opt`` unless it already has that shape."""
        if len(self.states_w) != opt.n_states:
            self.states_w = [np.zeros_like(self.weight) for _ in range(opt.n_states)]
            self.states_b = [np.zeros_like(self.bias) for _ in range(opt.n_states)]

    def new_workspace(self) -> Workspace:
        """Buffers for one worker, their pages touched now: first-touch page faults in
        the timed loop serialize Hogwild threads on the kernel's memory-map lock."""
        size = self.n_out * self.n_in

        def zeros(n: int, dtype: Any) -> np.ndarray:
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

    def _activate(self, z: np.ndarray) -> np.ndarray:
        return np.maximum(z, 0) if self.activation == "relu" else z

    def _grad_z(self, grad: np.ndarray, z: np.ndarray) -> np.ndarray:
        if self.activation == "relu":
            return np.where(z > 0, grad, np.float32(0)).astype(np.float32)
        return np.ascontiguousarray(grad, dtype=np.float32)

    def _sparse_input(self, x: Any) -> tuple[np.ndarray, np.ndarray, bool]:
        """``(ids, vals, was_dense)`` of the input."""
        if isinstance(x, SparseBatch):
            if x.dim != self.n_in:
                raise InputError(f"x: expected vectors of length {self.n_in}, got {x.dim}")
            return x.ids, x.vals, False
        if not isinstance(x, np.ndarray) or x.ndim != 2 or x.shape[1] != self.n_in:
            raise InputError(
                f"x: expected a (B, {self.n_in}) array, got {getattr(x, 'shape', type(x))}"
            )
        ids, vals = self.kernels.dense_to_sparse(np.ascontiguousarray(x, dtype=np.float32))
        return ids, vals, True

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
    def _block_input(self, x: Any) -> tuple[np.ndarray, np.ndarray | None, Any]:
        """``(xin (B, C) float32, cols (C,) or None = every input, sparse ids or None)``."""
        if isinstance(x, SparseBatch):
            if x.dim != self.n_in:
                raise InputError(f"x: expected vectors of length {self.n_in}, got {x.dim}")
            if x.shared:
                return np.ascontiguousarray(x.vals, np.float32), x.ids[0], None
            return x.to_dense(), None, x.ids
        if not isinstance(x, np.ndarray) or x.ndim != 2 or x.shape[1] != self.n_in:
            raise InputError(
                f"x: expected a (B, {self.n_in}) array, got {getattr(x, 'shape', type(x))}"
            )
        x = np.ascontiguousarray(x, dtype=np.float32)
        # only the columns some row of the batch uses: the others multiply zeros (and would
        # only decay optimizer state); MNIST's border pixels, a sparse input's absent words
        used = np.flatnonzero(x.any(axis=0))
        if used.size > 0.9 * self.n_in:
            return x, None, None
        return np.ascontiguousarray(x[:, used]), used, None

    def _block_forward(
        self, x: Any, rows: np.ndarray | None, ws: Workspace, counts: Counts
    ) -> np.ndarray:
        """Pre-activations (B, len(rows)) of the neurons ``rows`` (None = all) for every
        input row: one BLAS product over the gathered weights (all of it counted)."""
        xin, cols, sparse_ids = self._block_input(x)
        w = self.weight if rows is None else self.weight[rows]
        if cols is not None:
            w = np.take(w, cols, axis=1)
        b = self.bias if rows is None else self.bias[rows]
        z = xin @ w.T
        z += b
        counts.forward += int(xin.shape[0] * w.shape[0] * w.shape[1])
        ws.cache.update(block=True, xin=xin, rows=rows, cols=cols, wsub=w, z=z, sids=sparse_ids)
        return z

    def _block_backward(
        self, ws: Workspace, grad: np.ndarray, need_grad_in: bool, counts: Counts
    ) -> Any:
        c = ws.cache
        gz = self._grad_z(grad, c["z"])
        keep = c.pop("keep", None)
        if keep is not None:
            gz *= keep
        xin, w = c["xin"], c["wsub"]
        gw = gz.T @ xin
        gb = gz.sum(axis=0)
        ws.dense_grad = False
        c["block_grad"] = (c["rows"], c["cols"], gw, gb)
        n = int(xin.shape[0] * w.shape[0] * w.shape[1])
        counts.backward += n * (2 if need_grad_in else 1)
        if not need_grad_in:
            return None
        grad_in = gz @ w
        sids = c["sids"]
        if sids is not None:  # the input was a per-row SparseBatch: back to its columns
            picked = np.take_along_axis(grad_in, np.maximum(sids, 0), axis=1)
            return np.where(sids >= 0, picked, np.float32(0)).astype(np.float32)
        return grad_in

    def backward(self, ws: Workspace, grad: np.ndarray, need_grad_in: bool, counts: Counts) -> Any:
        """Gradient on the input (same form as the forward input) from ``grad`` on the output."""
        raise NotImplementedError

    def config(self) -> dict[str, Any]:
        """JSON-able description (type, sizes, activation, seed, selector options)."""
        raise NotImplementedError

    def apply_update(
        self, ws: Workspace, opt: Optimizer, counts: Counts | None = None
    ) -> np.ndarray:
        """One optimizer step from the workspace's gradient; returns the rows changed."""
        self.step += 1
        step = self.step
        counts = counts if counts is not None else Counts()
        if ws.dense_grad:  # every entry: the fused kernel over the whole matrix
            rows = np.arange(self.n_out, dtype=np.int64)
            counts.optimizer += opt.block_step(
                self.kernels, self.weight, ws.cache["dense_gw"], rows,
                np.arange(self.n_in, dtype=np.int64), self.states_w, step,
            )  # fmt: skip
            counts.optimizer += opt.block_step(
                self.kernels, self.bias.reshape(-1, 1), ws.cache["dense_gb"].reshape(-1, 1),
                rows, _COL0, [s.reshape(-1, 1) for s in self.states_b], step,
            )  # fmt: skip
            return rows
        block = ws.cache.pop("block_grad", None)
        if block is not None:  # a shared active set: one dense block of rows x cols
            rows, cols, gw, gb = block
            rows = np.arange(self.n_out, dtype=np.int64) if rows is None else rows
            cols = np.arange(self.n_in, dtype=np.int64) if cols is None else cols
            counts.optimizer += opt.block_step(
                self.kernels, self.weight, gw, rows, cols, self.states_w, step
            )
            counts.optimizer += opt.block_step(
                self.kernels, self.bias.reshape(-1, 1), gb.reshape(-1, 1), rows,
                _COL0, [s.reshape(-1, 1) for s in self.states_b], step,
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
        )
        rows = ws.touched_b[: ws.n_b].copy()
        counts.optimizer += opt.sparse_step(
            self.kernels, self.bias, ws.grad_b, ws.mark_b, ws.touched_b, ws.n_b, self.states_b, step
        )
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
    ) -> np.ndarray:
        """Activations (B, n_out) of input ``x`` (dense (B, n_in) or SparseBatch)."""
        c = ws.cache
        c["block"] = False
        if isinstance(x, SparseBatch) and x.shared:
            return self._activate(self._block_forward(x, None, ws, counts))
        if isinstance(x, SparseBatch):
            ids, vals, _ = self._sparse_input(x)
            out_ids = np.ascontiguousarray(
                np.broadcast_to(np.arange(self.n_out, dtype=np.int64), (ids.shape[0], self.n_out))
            )
            z, mults = self.kernels.layer_forward(self.weight, self.bias, ids, vals, out_ids)
            c.update(in_ids=ids, in_vals=vals, out_ids=out_ids, in_dense=False, sparse=True)
        else:
            x = np.ascontiguousarray(x, dtype=np.float32)
            z = x @ self.weight.T + self.bias
            mults = x.shape[0] * self.n_in * self.n_out
            c.update(x=x, sparse=False)
        counts.forward += int(mults)
        c["z"] = z
        return self._activate(z)

    def backward(self, ws: Workspace, grad: np.ndarray, need_grad_in: bool, counts: Counts) -> Any:
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
        self.selector.fit(self.weight, self.bias)

    def forward(
        self, x: Any, ws: Workspace, counts: Counts, labels: Any = None, training: bool = False
    ) -> SparseBatch:
        """Active ids and activations (a SparseBatch) for input ``x`` (dense or SparseBatch)."""
        ws.cache["block"] = False
        ws.cache.pop("keep", None)
        if self.selector.policy in ("batch_union", "batch_rerank"):
            active = self.selector.select(x, labels=labels, training=training)
            counts.hashing += active.hash_mults
            counts.selection += active.work
            z = self._block_forward(x, active.ids[0], ws, counts)
            a = self._activate(z)
            m = self.selector.m
            if self.selector.policy == "batch_rerank" and m < z.shape[1]:
                keep = _row_top(z, m, active.ids[0], labels if training else None)
                counts.selection += int(z.size)  # one partition pass over each row's block
                ws.cache["keep"] = keep
                a *= keep
            return SparseBatch(active.ids, a, self.n_out, shared=True)
        ids, vals, was_dense = self._sparse_input(x)
        query = x if was_dense else SparseBatch(ids, vals, self.n_in)
        active = self.selector.select(query, labels=labels, training=training)
        counts.hashing += active.hash_mults
        counts.selection += active.work
        z, mults = self.kernels.layer_forward(self.weight, self.bias, ids, vals, active.ids)
        counts.forward += int(mults)
        ws.cache.update(in_ids=ids, in_vals=vals, out_ids=active.ids, in_dense=was_dense, z=z)
        a = self._activate(z)
        return SparseBatch(
            active.ids, np.where(active.ids >= 0, a, np.float32(0)).astype(np.float32), self.n_out
        )

    def backward(self, ws: Workspace, grad: np.ndarray, need_grad_in: bool, counts: Counts) -> Any:
        if ws.cache.get("block"):
            return self._block_backward(ws, grad, need_grad_in, counts)
        gz = self._grad_z(grad, ws.cache["z"])
        return self._sparse_backward(ws, gz, need_grad_in, counts)

    def apply_update(
        self, ws: Workspace, opt: Optimizer, counts: Counts | None = None
    ) -> np.ndarray:
        rows = super().apply_update(ws, opt, counts)
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


def _row_top(z: np.ndarray, m: int, ids: np.ndarray, labels: Any) -> np.ndarray:
    """(B, U) float32 mask: 1 at each row's ``m`` largest ``z`` (and its label columns)."""
    u = z.shape[1]
    kth = np.partition(z, u - m, axis=1)[:, u - m]
    keep = z >= kth[:, None]
    if labels is not None:
        lab = np.asarray(labels)
        if lab.ndim == 2 and lab.shape[1]:
            keep |= (ids[None, :, None] == lab[:, None, :]).any(axis=2)
    return keep.astype(np.float32)
