"""One training driver for the adapters' ``train_mlp`` (framework-neutral; NumPy and tqdm).

:func:`make_train_mlp` gives each adapter module its ``train_mlp``: it validates the
arguments, resolves the selection settings into one
:class:`~lshcore.training.params.SelectionParams`, shuffles and batches the data, shows
progress, times the training, scores the test set and writes the result record. A
framework supplies only an :class:`MLPFramework`: build the model, run one training step,
predict logits.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import numpy as np

from lshcore.adapters._common import HashedLayerMixin, adapter_params, mult_summary
from lshcore.core.validation import check_float, check_int
from lshcore.errors import ConfigError, InputError
from lshcore.training.params import SelectionParams

__all__ = ["MLPFramework", "make_train_mlp", "run_mlp", "selection_from_options"]

#: rows per prediction call (bounds the memory of scoring a large test set)
PREDICT_CHUNK = 1024


class MLPFramework(ABC):
    """What one framework supplies to :func:`run_mlp`: an MLP of ReLU hidden layers (hashed
    with ``params``, or the framework's dense layers when ``params`` is None) and a dense
    output layer, trained with Adam at ``lr``.

    ``options`` names the framework's own ``train_mlp`` keywords (e.g. torch's
    ``sparse_grad``); they reach the constructor.
    """

    name: ClassVar[str]
    options: ClassVar[tuple[str, ...]] = ()

    def __init__(self, lr: float, seed: int, **options: Any):
        self.lr = lr
        self.seed = seed

    @abstractmethod
    def build(
        self, n_in: int, sizes: list[int], n_classes: int, params: list[SelectionParams] | None
    ) -> list[HashedLayerMixin]:
        """Make the model (seeded with ``self.seed``) and its optimizer; return its hashed
        layers (``params[i]`` for hidden layer i; none when ``params`` is None)."""

    @abstractmethod
    def train_step(self, x: np.ndarray, y: np.ndarray) -> None:
        """One optimizer step on ``x (B, n_in)`` float32 and ``y (B,)`` int64."""

    @abstractmethod
    def predict(self, x: np.ndarray) -> np.ndarray:
        """Logits ``(B, n_classes)`` of ``x (B, n_in)`` float32 in evaluation mode."""

    def wait(self) -> None:  # noqa: B027 (optional hook: synchronous engines need nothing)
        """Block until queued work is done (for asynchronous engines; timing stops after)."""


def selection_from_options(
    params: SelectionParams | None, seed: int, options: dict[str, Any]
) -> SelectionParams:
    """``params`` with the selection keywords ``options`` (``active=``, ``family=``, ...,
    ``selector_params={...}``) applied; without ``params`` the settings start from the
    adapters' defaults (:data:`~lshcore.adapters._common.ADAPTER_DEFAULTS`) and the
    selection seed is ``seed``.
    ConfigError names a keyword that is no selection setting."""
    if params is not None and not isinstance(params, SelectionParams):
        raise ConfigError(f"params must be a SelectionParams, got {type(params).__name__}")
    options = dict(options)
    extra = options.pop("selector_params", None) or {}
    if not isinstance(extra, dict):
        raise ConfigError(f"selector_params must be a dict, got {type(extra).__name__}")
    known = {*SelectionParams.fields(), "schedule"}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ConfigError(
            f"train_mlp got unknown keyword {unknown[0]!r}; selection settings are "
            f"{', '.join(sorted(known))} (family parameters go in selector_params)"
        )
    if params is None:
        options.setdefault("seed", seed)  # one seed for the run, as before params= existed
    return adapter_params(params, **extra, **options)


def _check_data(
    x_train: Any, y_train: Any, x_test: Any, y_test: Any
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """float32 ``x (n, d)`` and int64 ``y (n,)`` arrays; InputError names the argument."""
    xs = [np.ascontiguousarray(x, dtype=np.float32) for x in (x_train, x_test)]
    ys = [np.asarray(y) for y in (y_train, y_test)]
    for name, x, y in (("train", xs[0], ys[0]), ("test", xs[1], ys[1])):
        if x.ndim != 2 or x.shape[0] == 0:
            raise InputError(f"x_{name}: expected a non-empty (n, features) array, got {x.shape}")
        if y.ndim != 1 or y.shape[0] != x.shape[0]:
            raise InputError(f"y_{name}: expected shape ({x.shape[0]},), got {y.shape}")
        if y.dtype.kind not in "iu" or y.min() < 0:
            raise InputError(f"y_{name}: expected non-negative integer class ids")
    if xs[1].shape[1] != xs[0].shape[1]:
        raise InputError(
            f"x_test: expected {xs[0].shape[1]} features like x_train, got {xs[1].shape[1]}"
        )
    return xs[0], ys[0].astype(np.int64), xs[1], ys[1].astype(np.int64)


def run_mlp(
    framework: MLPFramework,
    x_train: Any,
    y_train: Any,
    x_test: Any,
    y_test: Any,
    *,
    hidden: int | Sequence[int],
    params: SelectionParams,
    epochs: int,
    batch_size: int,
    seed: int,
    progress: bool,
) -> dict[str, Any]:
    """Train ``framework``'s MLP and score it: ``accuracy`` (test, in [0, 1]),
    ``train_seconds``, ``samples_per_second`` and, with hashed layers, the training
    multiplications their indexes counted (:func:`~lshcore.adapters._common.mult_summary`)."""
    from tqdm import tqdm

    sizes = [hidden] if isinstance(hidden, int) else list(hidden)
    sizes = [check_int(h, "hidden", low=1) for h in sizes]
    if not sizes:
        raise ConfigError("hidden: give at least one hidden layer size")
    epochs = check_int(epochs, "epochs", low=1)
    batch_size = check_int(batch_size, "batch_size", low=1)
    xtr, ytr, xte, yte = _check_data(x_train, y_train, x_test, y_test)
    n_classes = int(max(ytr.max(), yte.max())) + 1
    # each hashed layer draws its own hash functions: seeds params.seed, params.seed + 1, ...
    layer_params = (
        None
        if params.active >= 1.0
        else [params.replace(seed=params.seed + i) for i in range(len(sizes))]
    )
    hashed = framework.build(xtr.shape[1], sizes, n_classes, layer_params)
    rng = np.random.default_rng(seed)
    n = xtr.shape[0]
    steps = epochs * -(-n // batch_size)
    desc = f"{framework.name} active={params.active:g}"
    bar = tqdm(total=steps, disable=not progress, desc=desc, leave=False)
    start = time.perf_counter()
    for _ in range(epochs):
        order = rng.permutation(n)
        for lo in range(0, n, batch_size):
            idx = order[lo : lo + batch_size]
            framework.train_step(xtr[idx], ytr[idx])
            bar.update(1)
    framework.wait()
    train_seconds = time.perf_counter() - start
    bar.close()
    followers = [layer._index for layer in hashed if layer._index is not None]
    logits = np.concatenate(
        [
            framework.predict(xte[lo : lo + PREDICT_CHUNK])
            for lo in range(0, len(xte), PREDICT_CHUNK)
        ]
    )
    return {
        "accuracy": float((logits.argmax(1) == yte).mean()),
        "train_seconds": train_seconds,
        "samples_per_second": epochs * n / train_seconds,
        **(mult_summary(followers) if hashed else {}),
    }


def make_train_mlp(framework: type[MLPFramework]) -> Callable[..., dict[str, Any]]:
    """The ``train_mlp`` function of an adapter module, over ``framework``."""

    def train_mlp(
        x_train: np.ndarray,
        y_train: np.ndarray,
        x_test: np.ndarray,
        y_test: np.ndarray,
        *,
        hidden: int | Sequence[int] = 1000,
        params: SelectionParams | None = None,
        epochs: int = 1,
        batch_size: int = 128,
        lr: float = 1e-3,
        seed: int = 0,
        progress: bool = True,
        **options: Any,
    ) -> dict[str, Any]:
        lr = check_float(lr, "lr", low=0.0, open_low=True)
        seed = check_int(seed, "seed", low=0)
        own = {k: options.pop(k) for k in framework.options if k in options}
        selection = selection_from_options(params, seed, options)
        return run_mlp(
            framework(lr, seed, **own), x_train, y_train, x_test, y_test, hidden=hidden,
            params=selection, epochs=epochs, batch_size=batch_size, seed=seed, progress=progress,
        )  # fmt: skip

    own = "".join(f", {k}" for k in framework.options)
    train_mlp.__doc__ = f"""Train a {framework.name} MLP whose hidden layers are hashed
    (the framework's dense layers when ``active=1.0``); ReLU hidden layers, a dense output
    layer, Adam at ``lr``, ``epochs`` passes in shuffled batches (seeded by ``seed``).

    Selection: ``params`` (a SelectionParams) and/or its settings as keywords (``active``,
    ``family``, ``k``, ``l``, ``policy``, ``transform``, ..., ``selector_params={{...}}``
    for family parameters); keywords override ``params``. Hidden layer i hashes with seed
    ``params.seed + i`` (without ``params``: ``seed + i``). Framework keywords: {own[2:] or "none"}.
    Returns ``accuracy`` (test, in [0, 1]), ``train_seconds``, ``samples_per_second`` and,
    for hashed layers, the multiplications counted (``mults``, ``train_share``, ...).
    """
    train_mlp.__module__ = framework.__module__  # shown as the adapter's own function
    return train_mlp
