"""Optimizers that touch only the active entries (and their state): SGD, momentum, Adagrad, Adam.

A sparse step updates the flat entries a backward pass touched (listed by the kernel),
like PyTorch's ``SparseAdam`` and SLIDE: state of untouched entries is not decayed
("lazy"). A dense step (dense layers with dense input) updates every entry with the
same formulas, vectorized.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from lshcore.core.validation import check_float
from lshcore.errors import ConfigError, UnknownNameError

__all__ = ["Optimizer", "make_optimizer", "OPTIMIZERS", "OPT_MULTS"]

OPTIMIZERS = ("sgd", "momentum", "adagrad", "adam")
_KIND = {"sgd": 0, "momentum": 1, "adagrad": 2, "adam": 3}
_STATES = {"sgd": 0, "momentum": 1, "adagrad": 1, "adam": 2}
#: multiply-adds per updated entry by kind (SGD, momentum, Adagrad, Adam): the products,
#: divisions and square roots of the update formulas (same table as the kernels')
OPT_MULTS = (1, 2, 4, 8)


@dataclass(frozen=True)
class Optimizer:
    """Hyper-parameters of one optimizer; layers hold the state arrays.

    ``h1`` is the momentum (``momentum``) or beta1 (``adam``); ``h2`` beta2 (``adam``);
    ``eps`` the denominator guard (``adagrad``, ``adam``).
    """

    name: str = "adam"
    lr: float = 1e-3
    h1: float = 0.9
    h2: float = 0.999
    eps: float = 1e-8

    @property
    def kind(self) -> int:
        return _KIND[self.name]

    @property
    def n_states(self) -> int:
        """How many state arrays of the parameter's shape this optimizer keeps."""
        return _STATES[self.name]

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "lr": self.lr, "h1": self.h1, "h2": self.h2, "eps": self.eps}

    def sparse_step(
        self,
        kernels: Any,
        param: np.ndarray,
        grad: np.ndarray,
        mark: np.ndarray,
        touched: np.ndarray,
        n: int,
        states: list[np.ndarray],
        step: int,
        xp: Any = np,
    ) -> int:
        """Update ``param`` (flat view) at ``touched[:n]`` from the flat ``grad``; clears
        them. Returns the multiply-adds. ``xp`` is the arrays' namespace (CuPy on a
        device: the unused state stand-ins are made there too)."""
        empty = _EMPTY if xp is np else xp.zeros(0, dtype=xp.float32)
        s1 = states[0].reshape(-1) if states else empty
        s2 = states[1].reshape(-1) if len(states) > 1 else empty
        return kernels.sparse_update(
            self.kind,
            param,
            grad,
            mark,
            touched,
            n,
            s1,
            s2,
            self.lr,
            self.h1,
            self.h2,
            self.eps,
            max(step, 1),
        )

    def block_step(
        self,
        kernels: Any,
        param: np.ndarray,
        grad: np.ndarray,
        rows: np.ndarray,
        cols: np.ndarray,
        states: list[np.ndarray],
        step: int,
        xp: Any = np,
    ) -> int:
        """Update the block ``param[rows][:, cols]`` (2-D ``param``) from its dense
        gradient, in place (a shared active set). Returns the multiply-adds. ``xp`` is
        the arrays' namespace (CuPy on a device)."""
        empty = _EMPTY2 if xp is np else xp.zeros((0, 0), dtype=xp.float32)
        s1 = states[0] if states else empty
        s2 = states[1] if len(states) > 1 else empty
        return int(
            kernels.block_update(
                self.kind, param, xp.ascontiguousarray(grad, dtype=xp.float32), rows, cols,
                s1, s2,
                self.lr, self.h1, self.h2, self.eps, max(step, 1),
            )
        )  # fmt: skip

    def dense_step(
        self, param: np.ndarray, grad: np.ndarray, states: list[np.ndarray], step: int
    ) -> None:
        """Update every entry of ``param`` in place from ``grad`` (same formulas as the kernels)."""
        lr = np.float32(self.lr)
        if self.name == "sgd":
            param -= lr * grad
        elif self.name == "momentum":
            v = states[0]
            v *= np.float32(self.h1)
            v += grad
            param -= lr * v
        elif self.name == "adagrad":
            acc = states[0]
            acc += grad * grad
            param -= lr * grad / (np.sqrt(acc) + np.float32(self.eps))
        else:
            m, v = states
            step = max(step, 1)
            m *= np.float32(self.h1)
            m += np.float32(1 - self.h1) * grad
            v *= np.float32(self.h2)
            v += np.float32(1 - self.h2) * grad * grad
            c1 = np.float32(1.0 - self.h1**step)
            c2 = np.float32(1.0 - self.h2**step)
            param -= lr * (m / c1) / (np.sqrt(v / c2) + np.float32(self.eps))


_EMPTY = np.zeros(0, np.float32)
_EMPTY2 = np.zeros((0, 0), np.float32)


def make_optimizer(name: str = "adam", lr: float | None = None, **params: Any) -> Optimizer:
    """An :class:`Optimizer` by name (``sgd``, ``momentum``, ``adagrad``, ``adam``).

    Default learning rates: 0.01 for SGD/momentum/Adagrad, 1e-3 for Adam. ``momentum=``,
    ``beta1=``, ``beta2=``, ``eps=`` set the other hyper-parameters.
    """
    if name not in _KIND:
        raise UnknownNameError("optimizer", str(name), OPTIMIZERS)
    if lr is None:
        lr = 1e-3 if name == "adam" else 0.01
    lr = check_float(lr, "lr", low=0.0, open_low=True)
    h1 = params.pop("momentum", params.pop("beta1", 0.9))
    h2 = params.pop("beta2", 0.999)
    eps = params.pop("eps", 1e-8)
    if params:
        raise UnknownNameError(
            "optimizer parameter", sorted(params)[0], ["momentum", "beta1", "beta2", "eps"]
        )
    h1 = check_float(h1, "momentum/beta1", low=0.0, high=1.0)
    h2 = check_float(h2, "beta2", low=0.0, high=1.0)
    eps = check_float(eps, "eps", low=0.0)
    if name == "adam" and (h1 >= 1.0 or h2 >= 1.0):
        raise ConfigError(f"adam betas must be < 1, got beta1={h1}, beta2={h2}")
    return Optimizer(name, lr, h1, h2, eps)
