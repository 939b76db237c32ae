"""The hashed layer as a native PyTorch module (imports torch, and no other framework).

``LSHLinear`` is an ``nn.Module`` whose forward asks an ``lshcore.training.selector.ActiveSelector``
for each input's active outputs and computes only those, through custom
``torch.autograd.Function``\\ s, so gradients reach the input and the active weight rows
only (a sparse COO row gradient with ``sparse_grad=True``, for ``torch.optim.SparseAdam``).
The index follows the weights by itself: every forward compares the parameters' version
counters (bumped by any in-place change: an optimizer step, ``load_state_dict``, a manual
``copy_``) with the last ones it saw, and hands the changed rows to the selector, whose
schedule decides when to rehash or rebuild. Nothing needs to be called after ``step()``.

On CUDA, when the selector picks on the device (a device backend and settings the
device selector offers: every policy, the default ``rerank`` included), the forward
stays there: the input, the labels and the parameters
reach the selector as DLPack views, its ids come back through ``torch.from_dlpack``, and
the union rows, positions and mask are torch ops on the device (:func:`_union_tensors`).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from lshcore.adapters._common import (
    ActiveArrays,
    DeviceError,
    HashedLayerMixin,
    check_labels,
    dense_arrays,
)
from lshcore.adapters._driver import MLPFramework, make_train_mlp
from lshcore.core.dlpack import from_backend, to_backend
from lshcore.core.validation import check_choice
from lshcore.errors import ConfigError, InputError
from lshcore.training.layer import row_top_mask
from lshcore.training.params import SelectionParams

__all__ = ["DeviceError", "LSHLinear", "LSHSoftmaxLoss", "lsh_softmax_cross_entropy", "train_mlp"]

COMPUTE_MODES = ("auto", "union", "gather")
# "auto" multiplies the batch against the union of its active rows (one GEMM) unless
# that costs this many times more multiply-adds than gathering each active pair
UNION_GEMM_ADVANTAGE = 128


def _row_grad(
    grad_rows: torch.Tensor, rows: torch.Tensor, shape: tuple[int, ...], sparse: bool
) -> torch.Tensor:
    """The gradient of a full parameter from the gradient of its gathered ``rows``."""
    if sparse:
        return torch.sparse_coo_tensor(
            rows.unsqueeze(0), grad_rows, shape, check_invariants=False, is_coalesced=True
        )
    full = torch.zeros(shape, dtype=grad_rows.dtype, device=grad_rows.device)
    return full.index_add_(0, rows, grad_rows)


class _UnionLinear(torch.autograd.Function):
    """``z = x @ weight[rows].T + bias[rows]``, (B, U), one GEMM over the batch's rows."""

    @staticmethod
    def forward(
        ctx: Any,
        x: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        rows: torch.Tensor,
        sparse: bool,
    ) -> torch.Tensor:
        w_rows = weight.index_select(0, rows)
        z = x @ w_rows.t()
        if bias is not None:
            z = z + bias.index_select(0, rows)
        ctx.save_for_backward(x, w_rows, rows)
        ctx.sparse = sparse
        ctx.shapes = (tuple(weight.shape), None if bias is None else tuple(bias.shape))
        return z

    @staticmethod
    def backward(ctx: Any, grad_z: torch.Tensor) -> tuple[Any, ...]:
        x, w_rows, rows = ctx.saved_tensors
        w_shape, b_shape = ctx.shapes
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = grad_z @ w_rows
        if ctx.needs_input_grad[1]:
            grad_w = _row_grad(grad_z.t() @ x, rows, w_shape, ctx.sparse)
        if b_shape is not None and ctx.needs_input_grad[2]:
            grad_b = _row_grad(grad_z.sum(0), rows, b_shape, ctx.sparse)
        return grad_x, grad_w, grad_b, None, None


class _GatherLinear(torch.autograd.Function):
    """``v[t] = x[batch[t]] . weight[ids[t]] + bias[ids[t]]`` for each active pair t."""

    @staticmethod
    def forward(
        ctx: Any,
        x: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        batch: torch.Tensor,
        ids: torch.Tensor,
        sparse: bool,
    ) -> torch.Tensor:
        v = (weight.index_select(0, ids) * x.index_select(0, batch)).sum(1)
        if bias is not None:
            v = v + bias.index_select(0, ids)
        ctx.save_for_backward(x, weight, batch, ids)
        ctx.sparse = sparse
        ctx.has_bias = bias is not None
        return v

    @staticmethod
    def backward(ctx: Any, grad_v: torch.Tensor) -> tuple[Any, ...]:
        x, weight, batch, ids = ctx.saved_tensors
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            contrib = weight.index_select(0, ids) * grad_v.unsqueeze(1)
            grad_x = torch.zeros_like(x).index_add_(0, batch, contrib)
        if ctx.needs_input_grad[1] or (ctx.has_bias and ctx.needs_input_grad[2]):
            rows, inverse = torch.unique(ids, return_inverse=True)
            if ctx.needs_input_grad[1]:
                pair = x.index_select(0, batch) * grad_v.unsqueeze(1)
                g_rows = torch.zeros((rows.shape[0], x.shape[1]), dtype=x.dtype, device=x.device)
                grad_w = _row_grad(
                    g_rows.index_add_(0, inverse, pair), rows, tuple(weight.shape), ctx.sparse
                )
            if ctx.has_bias and ctx.needs_input_grad[2]:
                b_rows = torch.zeros(rows.shape[0], dtype=x.dtype, device=x.device)
                grad_b = _row_grad(
                    b_rows.index_add_(0, inverse, grad_v), rows, (weight.shape[0],), ctx.sparse
                )
        return grad_x, grad_w, grad_b, None, None, None


def _union_tensors(ids: torch.Tensor, dtype: torch.dtype) -> ActiveArrays:
    """``union_arrays`` with torch ops on ``ids``' device: ``ids (B, m)`` int64 (-1
    padding) -> the batch's sorted distinct rows (U,), each id's place in them (B, m)
    (0 on padding) and the mask (B, m) of ``dtype``."""
    ok = ids >= 0
    rows, inverse = torch.unique(ids[ok], sorted=True, return_inverse=True)
    pos = torch.zeros_like(ids)
    pos[ok] = inverse
    return ActiveArrays(ids=ids, rows=rows, pos=pos, valid=ok.to(dtype))


class LSHLinear(HashedLayerMixin, nn.Module):
    """A linear layer that computes only the outputs an LSH index selects per input.

    ``forward(x, labels=None, return_active=False)`` takes ``x (B, in_features)`` and
    returns a dense ``(B, out_features)`` tensor, zero outside each input's active set,
    or with ``return_active=True`` the pair ``(ids (B, m) int64 with -1 padding,
    values (B, m))``. In training, ``labels (B,)`` are always active (an output layer).
    Selection: ``params`` (a :class:`~lshcore.training.params.SelectionParams`) and/or its
    settings as keywords (``active=0.05``, ``family``, ``k``, ``l``, ``policy``,
    ``transform``, ``seed``, ``rehash``, ..., family parameters), keywords over ``params``.
    ``active=1.0`` is exactly ``nn.Linear``. Evaluation hashes too unless
    ``inference="dense"``. ``sparse_grad=True`` makes the weight and bias gradients sparse
    COO tensors of the active rows (train them with ``torch.optim.SparseAdam``).
    ``compute`` picks how the active outputs are multiplied: one GEMM over the union of
    the batch's active rows, a gather of each active (input, row) pair, or ``"auto"``.
    The weight has ``nn.Linear``'s layout (out_features, in_features) and init.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        params: SelectionParams | None = None,
        *,
        sparse_grad: bool = False,
        backend: str | None = None,
        inference: str = "sparse",
        compute: str = "auto",
        device: Any = None,
        dtype: Any = None,
        **options: Any,
    ):
        super().__init__()
        # the rows trained since the last sync are exactly the changed ones when only
        # sparse gradients update the weights; a dense optimizer may move every row
        self._init_hashing(
            out_features, in_features, params, options, backend=backend, inference=inference,
            changed_rows="touched" if sparse_grad else "all",
        )  # fmt: skip
        self.compute = check_choice(compute, "compute", COMPUTE_MODES)
        self.in_features = in_features
        self.out_features = out_features
        self.sparse_grad = bool(sparse_grad)
        factory = {"device": device, "dtype": dtype}
        self.weight = nn.Parameter(torch.empty((out_features, in_features), **factory))
        self.bias = nn.Parameter(torch.empty(out_features, **factory)) if bias else None
        self._seen_versions: tuple[int, int] = (-1, -1)
        self._restored: bool | str = False
        self.reset_parameters()
        self.register_load_state_dict_post_hook(_mark_reloaded)

    @classmethod
    def from_linear(cls, linear: nn.Linear, **kwargs: Any) -> LSHLinear:
        """A hashed copy of ``linear`` (same weights, device and dtype); ``kwargs`` as in
        the constructor (``params``, ``active``, ``family``, ...)."""
        layer = cls(
            linear.in_features, linear.out_features, bias=linear.bias is not None,
            device=linear.weight.device, dtype=linear.weight.dtype, **kwargs,
        )  # fmt: skip
        with torch.no_grad():
            layer.weight.copy_(linear.weight)
            if linear.bias is not None and layer.bias is not None:
                layer.bias.copy_(linear.bias)
        layer._needs_fit = True  # build the index over the copied weights
        return layer

    # -- parameters and index ---------------------------------------------------------
    def reset_parameters(self) -> None:
        """``nn.Linear``'s initialization, drawn from the global torch RNG."""
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1 / math.sqrt(self.in_features) if self.in_features > 0 else 0
            nn.init.uniform_(self.bias, -bound, bound)
        self._needs_fit = True  # the next forward rebuilds the index

    def _versions(self) -> tuple[int, int]:
        return (self.weight._version, -1 if self.bias is None else self.bias._version)

    def _weights_numpy(self) -> tuple[np.ndarray, np.ndarray | None]:
        w = self.weight.detach().to("cpu", torch.float32).numpy()
        b = None if self.bias is None else self.bias.detach().to("cpu", torch.float32).numpy()
        return w, b

    def _weight_tensors(self) -> tuple[Any, Any]:
        return self.weight.detach(), None if self.bias is None else self.bias.detach()

    def _index_synced(self) -> None:
        self._seen_versions = self._versions()

    def _follow_weights(self) -> None:
        """Bring the index in step when the parameters changed since the last forward:
        any in-place change bumps a version counter, so no call after ``step()`` is needed."""
        index = self._bound_index()
        if self._needs_fit or not index.fitted:
            self.refresh_index()
        elif self._versions() != self._seen_versions:
            untracked = not index.pending()  # changed without our gradients
            index.sync(*self._sync_params(), all_rows=untracked)
            self._seen_versions = self._versions()

    def get_extra_state(self) -> dict[str, Any]:
        """The index (codes, schedule and tie-break counters) for ``state_dict()``.

        Saving changes nothing: weights changed since the last forward are recorded as
        pending, and the loaded layer syncs them on its first forward as this one would.
        Only tensors and plain Python values, so ``torch.load(weights_only=True)`` reads it.
        """
        meta, arrays = self._index_state()
        if not meta:
            return {}
        pending = not self._needs_fit and self._versions() != self._seen_versions
        return {
            "meta": meta,
            "pending": bool(pending),
            "arrays": {k: torch.from_numpy(np.array(v)) for k, v in arrays.items()},
        }

    def set_extra_state(self, state: Any) -> None:
        """Restore the index saved by :meth:`get_extra_state` (after the weights loaded)."""
        meta = state.get("meta", {}) if isinstance(state, dict) else {}
        self._restored = False
        if not meta:
            return
        arrays = {k: v.numpy() for k, v in state["arrays"].items()}
        if self._restore_index(meta, arrays):
            self._restored = "pending" if state.get("pending") else "synced"

    # -- forward -----------------------------------------------------------------------
    def _check_input(self, x: Any, labels: Any) -> np.ndarray | None:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"LSHLinear: x must be a torch.Tensor, got {type(x).__name__}")
        if x.dim() != 2 or x.shape[1] != self.in_features:
            raise InputError(
                f"LSHLinear: x must have shape (batch, {self.in_features}), got {tuple(x.shape)}"
            )
        if x.shape[0] == 0:
            raise InputError("LSHLinear: x is an empty batch (0 rows)")
        if x.dtype != self.weight.dtype:
            raise InputError(
                f"LSHLinear: x has dtype {x.dtype} but the weight has {self.weight.dtype}; cast one of them"
            )
        if x.device != self.weight.device:
            raise DeviceError(
                f"LSHLinear: x is on {x.device} but the layer is on {self.weight.device}"
            )
        if x.device.type not in ("cpu", "cuda"):
            raise DeviceError(f"LSHLinear: device {x.device} is not supported (cpu or cuda)")
        if not self.spec.dense:  # the selector's backend follows x's device (cuda: cupy)
            self._bind_input(self.in_features, x)
        if labels is None:
            return None
        lab = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else labels
        return check_labels(lab, x.shape[0], self.out_features)

    def forward(self, x: torch.Tensor, labels: Any = None, return_active: bool = False) -> Any:
        """Active outputs of ``x (B, in_features)``: dense (B, out_features), or ``(ids, values)``."""
        labels_np = self._check_input(x, labels)
        dense = self.spec.dense or (not self.training and self.spec.inference == "dense")
        if dense and not (self.sparse_grad and torch.is_grad_enabled()):
            out = F.linear(x, self.weight, self.bias)
            if not return_active:
                return out
            return torch.as_tensor(
                dense_arrays(x.shape[0], self.out_features).ids, device=x.device
            ), out
        if not self.spec.dense:
            self._follow_weights()
        train = self.training and torch.is_grad_enabled()
        if not dense and self._selects_on_device(x):
            return self._forward_on_device(x, labels, labels_np, train, return_active)
        xs = x.detach().to("cpu", torch.float32).numpy()
        arrays = self._select_active(xs, labels_np, self.training, dense=dense, mark=train)
        values = self._active_values(x, arrays)
        if self._batch_rerank:  # each row keeps its m best of the shared block
            keep = self._rerank_keep(
                values.detach().to("cpu", torch.float32).numpy(), arrays, labels_np, self.training
            )
            if keep is not None:
                values = values * torch.as_tensor(keep, dtype=values.dtype, device=x.device)
        ids = torch.as_tensor(arrays.ids, device=x.device)
        if return_active:
            return ids, values
        out = torch.zeros((x.shape[0], self.out_features), dtype=values.dtype, device=x.device)
        return out.scatter_add(1, ids.clamp(min=0), values)

    def _forward_on_device(
        self,
        x: torch.Tensor,
        labels: Any,
        labels_np: np.ndarray | None,
        train: bool,
        return_active: bool,
    ) -> Any:
        """:meth:`forward` with the selector picking on the device: ``x`` and the labels
        go to it as DLPack views, its ids (B, m) come back as a tensor on ``x``'s device,
        and the union, the values and the trained rows' mark stay there."""
        index = self._bound_index()
        backend = index.selector.backend
        dev_labels = None
        if labels_np is not None and self.training:
            lab = labels if isinstance(labels, torch.Tensor) else torch.as_tensor(labels_np)
            # (B, 1) int64 on x's device: a view when the labels are there already
            lab = lab.detach().to(device=x.device, dtype=torch.int64).reshape(-1, 1).contiguous()
            dev_labels = to_backend(lab, backend, "labels")
        # the selector reads float32 (as the host path casts): a bfloat16/half input is
        # cast on the device, a float32 one passes as a view
        xs = x.detach().to(torch.float32).contiguous()
        found = index.select_device(to_backend(xs, backend), labels_np, dev_labels, self.training)
        ids = from_backend(found, x)
        arrays = _union_tensors(ids, x.dtype)
        if train:
            index.touch_device(to_backend(arrays.rows, backend, "rows"))
        self.last_active_ids = ids
        values = self._active_values(x, arrays)
        if self._batch_rerank:
            keep = self._rerank_keep_on_device(values, arrays, dev_labels)
            if keep is not None:
                values = values * keep
        if return_active:
            return ids, values
        out = torch.zeros((x.shape[0], self.out_features), dtype=values.dtype, device=x.device)
        return out.scatter_add(1, ids.clamp(min=0), values)

    def _rerank_keep_on_device(
        self, values: torch.Tensor, a: ActiveArrays, dev_labels: Any
    ) -> torch.Tensor | None:
        """:meth:`_rerank_keep` on the device: the same mask (B, w) of ``values``' dtype,
        computed by ``row_top_mask`` on DLPack views (``dev_labels``: the training labels
        (B, 1) of the device, or None)."""
        m = self.selector.m
        if a.ids.shape[1] <= m:
            return None
        backend = self.selector.backend
        z = values.detach().to(torch.float32).masked_fill(a.valid <= 0, float("-inf"))
        keep = row_top_mask(
            backend.xp,
            to_backend(z.contiguous(), backend, "values"),
            m,
            to_backend(a.ids[0].contiguous(), backend, "ids"),
            dev_labels,
        )
        self.selector.add_ranked(int(z.numel()))  # one partition pass over each row
        return from_backend(keep, values).to(values.dtype) * a.valid

    def _active_values(self, x: torch.Tensor, a: ActiveArrays) -> torch.Tensor:
        """Values (B, m) of the active outputs (0 on padding), differentiable. ``a`` holds
        NumPy arrays (host path: uploaded here) or tensors on ``x``'s device."""
        dev = x.device
        if isinstance(a.ids, torch.Tensor):
            return self._active_values_of_tensors(x, a)
        nnz = int(a.valid.sum())
        batch = x.shape[0]
        mode = self.compute
        if mode == "auto":
            mode = "union" if batch * a.rows.shape[0] <= UNION_GEMM_ADVANTAGE * nnz else "gather"
        valid = torch.as_tensor(a.valid, dtype=x.dtype, device=dev)
        if mode == "union":
            rows = torch.as_tensor(a.rows, device=dev)
            z = _UnionLinear.apply(x, self.weight, self.bias, rows, self.sparse_grad)
            return z.gather(1, torch.as_tensor(a.pos, device=dev)) * valid
        ok = a.valid.reshape(-1) > 0
        flat = torch.as_tensor(np.flatnonzero(ok), device=dev)
        ids = torch.as_tensor(a.ids.reshape(-1)[ok], device=dev)
        rows_of = torch.as_tensor(np.flatnonzero(ok) // a.ids.shape[1], device=dev)
        v = _GatherLinear.apply(x, self.weight, self.bias, rows_of, ids, self.sparse_grad)
        out = torch.zeros(a.ids.size, dtype=x.dtype, device=dev)
        return out.index_put((flat,), v).view(a.ids.shape)

    def _active_values_of_tensors(self, x: torch.Tensor, a: ActiveArrays) -> torch.Tensor:
        """:meth:`_active_values` of ``ActiveArrays`` of tensors on ``x``'s device."""
        batch, width = a.ids.shape
        mode = self.compute
        if mode == "auto":
            nnz = int(a.valid.sum())  # a scalar read, as the host path's
            mode = "union" if batch * a.rows.shape[0] <= UNION_GEMM_ADVANTAGE * nnz else "gather"
        if mode == "union":
            z = _UnionLinear.apply(x, self.weight, self.bias, a.rows, self.sparse_grad)
            return z.gather(1, a.pos) * a.valid
        flat = torch.nonzero(a.valid.reshape(-1) > 0).reshape(-1)
        ids = a.ids.reshape(-1).index_select(0, flat)
        v = _GatherLinear.apply(x, self.weight, self.bias, flat // width, ids, self.sparse_grad)
        out = torch.zeros(batch * width, dtype=x.dtype, device=x.device)
        return out.index_put((flat,), v).view(batch, width)

    def full_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Every output of ``x`` (B, out_features), as ``nn.Linear`` computes it."""
        self._check_input(x, None)
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        head = f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"
        return f"{head}, {self.spec.describe()}, sparse_grad={self.sparse_grad}"


def _mark_reloaded(module: nn.Module, incompatible_keys: Any) -> None:
    """After ``load_state_dict``: rebuild the index over the loaded weights on next use."""
    if isinstance(module, LSHLinear):
        restored = module._restored
        if restored == "synced":
            module._seen_versions = module._versions()
        elif restored == "pending":  # the saved layer had unsynced changes: sync next forward
            module._seen_versions = (-1, -1)
        else:
            module._needs_fit = True  # nothing saved: rebuild over the loaded weights
        module._restored = False


def lsh_softmax_cross_entropy(
    ids: torch.Tensor, values: torch.Tensor, labels: torch.Tensor
) -> torch.Tensor:
    """Mean softmax cross-entropy over each input's active outputs.

    ``ids (B, m)`` (-1 padding) and ``values (B, m)`` come from
    ``LSHLinear(..., return_active=True)`` called with the same ``labels (B,)``, which
    must be active in every row (InputError otherwise). The softmax runs over the
    active logits only; the gradient is ``(1 - p)/B`` on the label and ``-p/B`` elsewhere.
    """
    if ids.shape != values.shape or ids.dim() != 2:
        raise InputError(
            f"ids and values must have the same (B, m) shape, got {tuple(ids.shape)} and {tuple(values.shape)}"
        )
    labels = torch.as_tensor(labels, device=ids.device).reshape(-1)
    if labels.shape[0] != ids.shape[0]:
        raise InputError(f"labels: expected {ids.shape[0]} labels, got {labels.shape[0]}")
    hit = ids == labels.unsqueeze(1)
    if not bool(hit.any(1).all()):
        raise InputError(
            "labels: some label is not in its row's active set; pass labels= to the layer in training"
        )
    logits = values.masked_fill(ids < 0, float("-inf"))
    logp = torch.log_softmax(logits, dim=1)
    return -(logp.masked_fill(~hit, 0.0).sum(1) / hit.sum(1)).mean()


class LSHSoftmaxLoss(nn.Module):
    """Softmax cross-entropy through a hashed output layer ``layer`` (an ``LSHLinear``).

    In training, ``forward(x, labels)`` scores only the active outputs, labels included;
    in evaluation it scores every output (``full_eval=True``, the default) as SLIDE does.
    """

    def __init__(self, layer: LSHLinear, full_eval: bool = True):
        super().__init__()
        if not isinstance(layer, LSHLinear):
            raise ConfigError(f"layer must be an LSHLinear, got {type(layer).__name__}")
        self.layer = layer
        self.full_eval = bool(full_eval)

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if not self.layer.training and self.full_eval:
            logits = self.layer.full_logits(x)
            check_labels(labels.detach().cpu().numpy(), x.shape[0], self.layer.out_features)
            return F.cross_entropy(logits, labels)
        ids, values = self.layer(x, labels=labels, return_active=True)
        return lsh_softmax_cross_entropy(ids, values, labels)


class _TorchMLP(MLPFramework):
    """``train_mlp``'s model in PyTorch. With ``sparse_grad=True`` the hashed layers train
    with ``SparseAdam`` on row-sparse gradients (slower here when a batch's active sets
    cover most rows), everything else with ``Adam``."""

    name = "torch"
    options = ("sparse_grad",)

    def __init__(self, lr: float, seed: int, sparse_grad: bool = False):
        super().__init__(lr, seed)
        self.sparse_grad = bool(sparse_grad)

    def build(
        self, n_in: int, sizes: list[int], n_classes: int, params: list[SelectionParams] | None
    ) -> list[HashedLayerMixin]:
        torch.manual_seed(self.seed)
        layers: list[nn.Module] = []
        hashed: list[LSHLinear] = []
        for i, h in enumerate(sizes):
            if params is None:
                layers.append(nn.Linear(n_in, h))
            else:
                hashed.append(LSHLinear(n_in, h, params=params[i], sparse_grad=self.sparse_grad))
                layers.append(hashed[-1])
            layers += [nn.ReLU()]
            n_in = h
        self.model = nn.Sequential(*layers, nn.Linear(n_in, n_classes)).train()
        sparse = [p for layer in hashed if layer.sparse_grad for p in layer.parameters()]
        dense = [p for p in self.model.parameters() if all(p is not q for q in sparse)]
        self.optimizers: list[torch.optim.Optimizer] = [torch.optim.Adam(dense, lr=self.lr)]
        if sparse:
            self.optimizers.append(torch.optim.SparseAdam(sparse, lr=self.lr))
        return list(hashed)

    def train_step(self, x: np.ndarray, y: np.ndarray) -> None:
        loss = F.cross_entropy(self.model(torch.from_numpy(x)), torch.from_numpy(y))
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=True)
        loss.backward()
        for opt in self.optimizers:
            opt.step()

    def predict(self, x: np.ndarray) -> np.ndarray:
        self.model.eval()
        with torch.no_grad():
            return self.model(torch.from_numpy(x)).numpy()


train_mlp = make_train_mlp(_TorchMLP)
