"""A model: a stack of dense and hashed layers, its loss, and save/load.

The loss is softmax cross-entropy over the output layer's active neurons (all of them
for a dense output layer); with |Y| labels the target is 1/|Y| on each, so the
gradient on z is (p - 1/|Y|)/B on label neurons and p/B on the others.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from lshcore.core.backend import Backend
from lshcore.core.fileformat import load_arrays, save_arrays
from lshcore.core.validation import as_batch
from lshcore.errors import ConfigError, FileFormatError, LSHError
from lshcore.training.layer import Counts, DenseLayer, HashedLayer, Workspace, _Layer
from lshcore.training.optim import Optimizer
from lshcore.training.params import SelectionParams
from lshcore.training.selector import ActiveSelector, SparseBatch, labels_matrix

__all__ = ["Model", "softmax_xent", "MODEL_KIND", "MODEL_VERSION"]

MODEL_KIND = "lsh-model"
MODEL_VERSION = 1


def softmax_xent(
    ids: np.ndarray | None, z: np.ndarray, labels: np.ndarray
) -> tuple[float, np.ndarray, np.ndarray]:
    """Softmax cross-entropy over the active logits ``z (B, m)`` of neurons ``ids``.

    ``ids`` None means neuron j is column j; -1 ids are padding. ``labels (B, n)`` -1
    padded. Returns ``(mean loss, grad on z (B, m), predicted neuron ids (B,))``.
    """
    loss, grad, pred = _softmax_xent(np, ids, z, labels)
    return float(loss), grad, pred


def _softmax_xent(xp: Any, ids: Any, z: Any, labels: Any) -> tuple[Any, Any, Any]:
    """:func:`softmax_xent` on arrays of ``xp`` (NumPy, or CuPy on a device), the loss a
    0-d array of ``xp`` (so that only it need cross to the host)."""
    batch, m = z.shape
    if ids is None:
        ids = xp.broadcast_to(xp.arange(m, dtype=xp.int64), (batch, m))
    valid = ids >= 0
    zz = xp.where(valid, z, -xp.inf).astype(xp.float64)
    zmax = zz.max(axis=1, keepdims=True)
    e = xp.where(valid, xp.exp(zz - zmax), 0.0)
    p = e / e.sum(axis=1, keepdims=True)
    is_label = (
        valid & (ids[:, :, None] == labels[:, None, :]).any(axis=2)
        if labels.shape[1]
        else xp.zeros_like(valid)
    )
    n_labels = is_label.sum(axis=1, keepdims=True)
    target = xp.where(n_labels > 0, is_label / xp.maximum(n_labels, 1), 0.0)
    logp = xp.where(valid, zz - zmax - xp.log(e.sum(axis=1, keepdims=True)), 0.0)
    loss = -(target * logp).sum() / batch
    has = n_labels > 0
    grad = xp.where(valid & has, (p - target) / batch, 0.0).astype(xp.float32)
    pred = ids[xp.arange(batch), xp.argmax(zz, axis=1)]
    return loss, grad, pred


class Model:
    """A stack of layers; ``layers[i].n_out == layers[i+1].n_in``. The last layer's
    outputs are the class scores (use ``activation="linear"`` there)."""

    def __init__(self, layers: list[_Layer]):
        if not layers:
            raise ConfigError("a model needs at least one layer")
        for i in range(1, len(layers)):
            if layers[i].n_in != layers[i - 1].n_out:
                raise ConfigError(
                    f"layer {i} takes {layers[i].n_in} inputs but layer {i - 1} has {layers[i - 1].n_out} outputs"
                )
        self.layers = layers
        self.optimizer: Optimizer | None = None

    @classmethod
    def mlp(
        cls,
        n_in: int,
        hidden: list[int],
        n_out: int,
        active: float | None = None,
        hashed_output: bool = False,
        sparse_init: bool = False,
        seed: int = 0,
        backend: str | Backend | None = None,
        params: SelectionParams | None = None,
        **selector_options: Any,
    ) -> Model:
        """ReLU hidden layers (hashed when ``active < 1``) and a linear output layer
        (dense unless ``hashed_output``); layer i is seeded with ``seed + i``. With
        ``sparse_init`` a layer after a hashed layer is initialised for its active fan-in
        (``ceil(active * n_in)``) instead of n_in. The hashed layers' selection settings
        are ``params`` (a :class:`SelectionParams`) with ``active`` and
        ``**selector_options`` applied, validated once here."""
        if active is not None:
            selector_options["active"] = active
        selection = SelectionParams.from_kwargs(params, **selector_options)
        active = selection.active
        sizes = [n_in, *hidden, n_out]
        layers: list[_Layer] = []
        for i in range(len(sizes) - 1):
            last = i == len(sizes) - 2
            act = "linear" if last else "relu"
            hashed = active < 1.0 and (not last or hashed_output)
            prev_hashed = bool(layers) and layers[-1].hashed
            fan_in = int(np.ceil(active * sizes[i])) if (prev_hashed and sparse_init) else None
            if hashed:
                layers.append(
                    HashedLayer(
                        sizes[i],
                        sizes[i + 1],
                        act,
                        seed + i,
                        backend,
                        fan_in,
                        selection,
                    )
                )
            else:
                layers.append(DenseLayer(sizes[i], sizes[i + 1], act, seed + i, backend, fan_in))
        return cls(layers)

    @property
    def n_in(self) -> int:
        return self.layers[0].n_in

    @property
    def n_out(self) -> int:
        return self.layers[-1].n_out

    def set_optimizer(self, opt: Optimizer) -> None:
        """Use ``opt`` for training; allocates state when the kind of optimizer changes."""
        for layer in self.layers:
            layer.init_optimizer(opt)
        self.optimizer = opt

    def workspaces(self) -> list[Workspace]:
        """A fresh set of per-layer buffers for one worker thread."""
        return [layer.new_workspace() for layer in self.layers]

    # -- passes ------------------------------------------------------------------------
    def forward(
        self,
        x: Any,
        wss: list[Workspace],
        counts: Counts,
        labels: Any = None,
        training: bool = False,
    ) -> Any:
        h = x
        last = len(self.layers) - 1
        for i, (layer, ws) in enumerate(zip(self.layers, wss, strict=True)):
            # a dense input after layer 0 is an earlier layer's output: on a device
            # backend it lives there already (the user's batch is a host array)
            ws.cache["x_device"] = i > 0
            h = layer.forward(
                h, ws, counts, labels=labels if i == last else None, training=training
            )
        return h

    def _logits(self, out: Any) -> tuple[np.ndarray | None, np.ndarray]:
        if isinstance(out, SparseBatch):
            if out.device:
                return out.dev_ids, out.vals
            return out.ids, out.vals
        return None, out

    def _xent(self, out: Any, lab: np.ndarray) -> tuple[Any, Any, Any]:
        """(loss, grad on the logits, predictions) where the last layer's arrays live;
        on a device only the labels go over (the caller fetches the loss/predictions)."""
        last = self.layers[-1]
        ids, z = self._logits(out)
        if not last.on_device:
            return _softmax_xent(np, ids, z, lab)
        dev_lab = last.backend.to_device(np.ascontiguousarray(lab, np.int64), "labels")
        return _softmax_xent(last.xp, ids, z, dev_lab)

    @property
    def on_device(self) -> bool:
        """Whether the last layer's arrays (and so the loss) live on a device."""
        return self.layers[-1].on_device

    def train_step(self, x: np.ndarray, labels: Any, wss: list[Workspace], counts: Counts) -> float:
        """Forward, backward and one optimizer step on one mini-batch; returns the loss."""
        if self.optimizer is None:
            raise ConfigError("call set_optimizer() before training")
        lab = labels_matrix(labels, x.shape[0], self.n_out)
        out = self.forward(x, wss, counts, labels=lab, training=True)
        loss_arr, grad, _ = self._xent(out, lab)
        if self.on_device:
            loss = float(self.layers[-1].backend.to_host(loss_arr, "loss"))
        else:
            loss = float(loss_arr)
        g: Any = grad
        for i in range(len(self.layers) - 1, -1, -1):
            g = self.layers[i].backward(wss[i], g, i > 0, counts)
        for layer, ws in zip(self.layers, wss, strict=True):
            layer.apply_update(ws, self.optimizer, counts)
        return loss

    def predict(
        self,
        x: Any,
        wss: list[Workspace] | None = None,
        counts: Counts | None = None,
        batch_size: int = 512,
    ) -> np.ndarray:
        """Predicted class ids (n,), with the layers' active sets (sparse inference)."""
        x = as_batch(x, self.n_in, "x")
        wss = wss or self.workspaces()
        counts = counts if counts is not None else Counts()
        preds = []
        for start in range(0, x.shape[0], batch_size):
            out = self.forward(x[start : start + batch_size], wss, counts)
            lab = np.full((min(batch_size, x.shape[0] - start), 0), -1, np.int64)
            pred = self._xent(out, lab)[2]
            if self.on_device:
                pred = self.layers[-1].backend.to_host(pred, "metrics")
            preds.append(np.asarray(pred))
        return np.concatenate(preds)

    def dense_cost(self, n_samples: int, training: bool = True) -> int:
        """Multiply-adds of the dense network for ``n_samples`` inputs: forward, plus in
        training the weight gradient of every layer and the input gradient of all but
        the first."""
        fwd = sum(layer.dense_cost() for layer in self.layers)
        if not training:
            return n_samples * fwd
        bwd = 2 * fwd - self.layers[0].dense_cost()
        return n_samples * (fwd + bwd)

    def dense_twin(self, seed: int | None = None) -> Model:
        """The same architecture with every layer dense (same initial weights when
        ``seed`` is None and this model is untrained)."""
        layers: list[_Layer] = []
        for layer in self.layers:
            twin = DenseLayer(
                layer.n_in,
                layer.n_out,
                layer.activation,
                layer.seed if seed is None else seed,
                layer.backend,
            )
            layers.append(twin)
        return Model(layers)

    def config(self) -> list[dict[str, Any]]:
        return [layer.config() for layer in self.layers]

    # -- files -------------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str], extra: dict[str, Any] | None = None) -> Path:
        """Write weights, optimizer state and hash-table state atomically (kind "lsh-model")."""
        arrays: dict[str, np.ndarray] = {}
        layers_meta = []
        for i, layer in enumerate(self.layers):
            arrays[f"l{i}.weight"], arrays[f"l{i}.bias"] = layer.host_params("save")
            for j, s in enumerate(layer.states_w):
                arrays[f"l{i}.state_w{j}"] = layer._get(s, "save")
                arrays[f"l{i}.state_b{j}"] = layer._get(layer.states_b[j], "save")
            entry: dict[str, Any] = {
                "config": layer.config(),
                "step": layer.step,
                "n_states": len(layer.states_w),
            }
            if isinstance(layer, HashedLayer):
                sel_meta, sel_arrays = layer.selector.state()
                entry["selector"] = sel_meta
                for name, arr in sel_arrays.items():
                    arrays[f"l{i}.sel.{name}"] = arr
            layers_meta.append(entry)
        meta = {
            "layers": layers_meta,
            "optimizer": self.optimizer.config() if self.optimizer is not None else None,
            "extra": extra or {},
        }
        return save_arrays(path, MODEL_KIND, MODEL_VERSION, meta, arrays)

    @classmethod
    def load(
        cls, path: str | os.PathLike[str], backend: str | Backend | None = None
    ) -> tuple[Model, dict[str, Any]]:
        """A model saved with :meth:`save`, and the ``extra`` metadata saved with it."""
        meta, arrays, _ = load_arrays(path, MODEL_KIND, MODEL_VERSION)
        try:
            layers: list[_Layer] = []
            for i, entry in enumerate(meta["layers"]):
                cfg = entry["config"]
                weight = arrays[f"l{i}.weight"]
                bias = arrays[f"l{i}.bias"]
                if weight.shape != (cfg["n_out"], cfg["n_in"]) or bias.shape != (cfg["n_out"],):
                    raise FileFormatError(f"{path}: layer {i} arrays do not match its shape")
                layer: _Layer
                args = (
                    cfg["n_in"],
                    cfg["n_out"],
                    cfg["activation"],
                    cfg["seed"],
                    backend,
                    cfg.get("fan_in"),
                )
                if cfg["type"] == "dense":
                    layer = DenseLayer(*args)
                else:
                    layer = HashedLayer.__new__(HashedLayer)
                    _Layer.__init__(layer, *args)
                host_w = np.ascontiguousarray(weight, dtype=np.float32)
                host_b = np.ascontiguousarray(bias, dtype=np.float32)
                layer.weight = layer._put(host_w, "load")
                layer.bias = layer._put(host_b, "load")
                layer.states_w = [
                    layer._put(np.ascontiguousarray(arrays[f"l{i}.state_w{j}"]), "load")
                    for j in range(entry["n_states"])
                ]
                layer.states_b = [
                    layer._put(np.ascontiguousarray(arrays[f"l{i}.state_b{j}"]), "load")
                    for j in range(entry["n_states"])
                ]
                layer.step = int(entry["step"])
                if cfg["type"] == "hashed":
                    prefix = f"l{i}.sel."
                    sel_arrays = {
                        k[len(prefix) :]: v for k, v in arrays.items() if k.startswith(prefix)
                    }
                    layer.selector = ActiveSelector.from_state(  # type: ignore[union-attr]
                        entry["selector"],
                        sel_arrays,
                        host_w,
                        host_b,
                        backend=layer.backend,
                    )
                    if layer.on_device:
                        layer.selector.attach(layer.weight, layer.bias)  # type: ignore[union-attr]
                layers.append(layer)
            model = cls(layers)
            if meta.get("optimizer"):
                opt_cfg = dict(meta["optimizer"])
                opt = Optimizer(**opt_cfg)
                model.optimizer = opt
            extra = dict(meta.get("extra", {}))
        except FileFormatError:
            raise
        # a tampered file reaches the constructors with values of any type: every
        # failure there (KeyError, AttributeError, an InputError about the rebuilt
        # tables' "x", ...) is a damaged file, not a caller's mistake
        except (LookupError, TypeError, ValueError, AttributeError, LSHError) as exc:
            raise FileFormatError(
                f"{path}: not a valid model file ({type(exc).__name__}: {exc})"
            ) from exc
        for layer in model.layers:  # a file's settings that the device cannot serve
            if isinstance(layer, HashedLayer):
                layer.check_device_selection()
        return model, extra
