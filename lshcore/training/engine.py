"""The training engine: mini-batch training with Hogwild worker threads, and the accounting.

``workers=N`` Python threads take different mini-batches of an epoch and update the
shared weights without locks (Hogwild). The heavy work runs in numba kernels compiled
with ``nogil=True``, so the threads run in parallel. With ``workers=1`` training is
deterministic under ``seed`` and resumes bit-for-bit from a saved model.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lshcore.core.validation import as_batch, check_int
from lshcore.errors import ConfigError, InputError
from lshcore.training.layer import Counts, Workspace
from lshcore.training.model import Model
from lshcore.training.optim import make_optimizer

__all__ = ["Trainer", "TrainStats", "label_matrix"]


@dataclass
class TrainStats:
    """What a call of :meth:`Trainer.fit` did: time, samples, losses, multiply-adds."""

    epochs: int = 0
    samples: int = 0
    train_seconds: float = 0.0
    losses: list[float] = field(default_factory=list)
    counts: Counts = field(default_factory=Counts)
    mults_dense: int = 0

    @property
    def samples_per_second(self) -> float:
        return self.samples / self.train_seconds if self.train_seconds > 0 else 0.0

    @property
    def mult_fraction(self) -> float:
        return self.counts.total / self.mults_dense if self.mults_dense else float("nan")


def _single_threaded_blas() -> Any:
    """A context limiting BLAS/OpenMP pools to one thread (no-op without threadpoolctl)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - scikit-learn brings threadpoolctl
        return contextlib.nullcontext()
    return threadpool_limits(limits=1)


def _labels(y: Any, n: int, n_out: int) -> np.ndarray:
    """``y`` as (n,) class ids, or (n, k) label sets padded with -1 (multi-label)."""
    arr = np.asarray(y)
    if arr.ndim not in (1, 2) or arr.shape[0] != n or arr.dtype.kind not in "iu":
        raise InputError(
            f"y: expected ({n},) integer labels or an ({n}, k) label matrix padded with -1, "
            f"got {arr.dtype} {arr.shape}"
        )
    low = -1 if arr.ndim == 2 else 0
    if arr.size and (arr.min() < low or arr.max() >= n_out):
        raise InputError(f"y: labels must lie in [{low}, {n_out}), got [{arr.min()}, {arr.max()}]")
    return arr.astype(np.int64)


def label_matrix(rows: Any, n_out: int) -> np.ndarray:
    """(n, k) int64 label sets padded with -1 from a 0/1 label matrix ``rows`` (n, n_out)
    (dense or scipy sparse), the form :meth:`Trainer.fit` takes for multi-label data."""
    if hasattr(rows, "tocsr"):
        csr = rows.tocsr()
        lists = np.split(csr.indices.astype(np.int64), csr.indptr[1:-1])
    else:
        dense = np.asarray(rows)
        if dense.ndim != 2 or dense.shape[1] != n_out:
            raise InputError(f"labels: expected (n, {n_out}) 0/1 rows, got {dense.shape}")
        lists = [np.flatnonzero(r) for r in dense]
    width = max((v.size for v in lists), default=0)
    out = np.full((len(lists), max(width, 1)), -1, np.int64)
    for i, v in enumerate(lists):
        out[i, : v.size] = v
    return out


class Trainer:
    """Trains a :class:`Model` with ``optimizer`` (``sgd``, ``momentum``, ``adagrad``,
    ``adam``) at learning rate ``lr`` on mini-batches of ``batch_size``, with ``workers``
    Hogwild threads. ``epoch`` counts completed epochs (the shuffling of epoch e depends
    only on ``seed`` and e, so resumed training sees the same batches)."""

    def __init__(
        self,
        model: Model,
        optimizer: str = "adam",
        lr: float | None = None,
        batch_size: int = 128,
        workers: int = 1,
        seed: int = 0,
        **optimizer_params: Any,
    ):
        self.model = model
        self.batch_size = check_int(batch_size, "batch_size", low=1)
        self.workers = check_int(workers, "workers", low=1, high=256)
        self.seed = check_int(seed, "seed", low=0)
        if (
            model.optimizer is not None
            and lr is None
            and not optimizer_params
            and model.optimizer.name == optimizer
        ):
            opt = model.optimizer  # resuming: keep the saved hyper-parameters
        else:
            opt = make_optimizer(optimizer, lr, **optimizer_params)
        model.set_optimizer(opt)
        self.epoch = 0
        self._workspaces: list[list[Workspace]] = []

    def _ws(self, worker: int) -> list[Workspace]:
        while len(self._workspaces) <= worker:
            self._workspaces.append(self.model.workspaces())
        return self._workspaces[worker]

    def fit(
        self,
        x: Any,
        y: Any,
        epochs: int = 1,
        progress: bool = False,
        callback: Any = None,
    ) -> TrainStats:
        """Train ``epochs`` more epochs on ``x (n, n_in)`` and ``y``: (n,) class ids, or
        an (n, k) int matrix of label sets padded with -1 (multi-label: the target spreads
        evenly over a row's labels, as in XMC; see :func:`label_matrix`).

        ``callback(epoch, stats)`` runs after each epoch. Returns the stats of this call.
        """
        x = as_batch(x, self.model.n_in, "x")
        y = _labels(y, x.shape[0], self.model.n_out)
        epochs = check_int(epochs, "epochs", low=0)
        stats = TrainStats()
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=epochs * x.shape[0], unit="sample", leave=False, dynamic_ncols=True)
        try:
            for _ in range(epochs):
                loss, counts, seconds = self._epoch(x, y, bar)
                stats.epochs += 1
                stats.samples += x.shape[0]
                stats.train_seconds += seconds
                stats.losses.append(loss)
                stats.counts.add(counts)
                self.epoch += 1
                if bar is not None:
                    bar.set_postfix(epoch=self.epoch, loss=f"{loss:.4f}")
                if callback is not None:
                    callback(self.epoch, stats)
        finally:
            if bar is not None:
                bar.close()
        stats.mults_dense = self.model.dense_cost(stats.samples)
        return stats

    def _epoch(self, x: np.ndarray, y: np.ndarray, bar: Any) -> tuple[float, Counts, float]:
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(x.shape[0])
        batches = [order[i : i + self.batch_size] for i in range(0, x.shape[0], self.batch_size)]
        queue = iter(batches)
        counts = [Counts() for _ in range(self.workers)]
        losses: list[list[float]] = [[] for _ in range(self.workers)]
        errors: list[BaseException] = []
        bar_lock = threading.Lock()  # guards the progress bar only, never the weights

        def work(wid: int) -> None:
            wss = self._ws(wid)
            try:
                while not errors:
                    try:
                        idx = next(queue)
                    except StopIteration:
                        return
                    losses[wid].append(
                        self.model.train_step(x[idx], y[idx], wss, counts[wid]) * len(idx)
                    )
                    if bar is not None:
                        with bar_lock:
                            bar.update(len(idx))
            except BaseException as exc:  # surface a worker's failure in the caller
                errors.append(exc)

        for wid in range(self.workers):
            self._ws(wid)
        start = time.perf_counter()
        if self.workers == 1:
            work(0)
        else:
            # the workers are the parallelism: BLAS threads per worker would oversubscribe
            # the cores (measured: 0.8x instead of 2.0x with 2 workers on 2 cores)
            with _single_threaded_blas():
                threads = [
                    threading.Thread(target=work, args=(w,), daemon=True)
                    for w in range(self.workers)
                ]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
        seconds = time.perf_counter() - start
        if errors:
            raise errors[0]
        total = Counts()
        for c in counts:
            total.add(c)
        loss = float(sum(sum(v) for v in losses) / x.shape[0])
        return loss, total, seconds

    def evaluate(self, x: Any, y: Any, batch_size: int = 512) -> tuple[float, Counts]:
        """Test accuracy (share of rows whose top active output is the label; with an
        (n, k) label matrix, precision at 1: the top output is one of the row's labels)
        and the multiply-adds of inference."""
        x = as_batch(x, self.model.n_in, "x")
        y = _labels(y, x.shape[0], self.model.n_out)
        counts = Counts()
        pred = self.model.predict(x, self._ws(0), counts, batch_size=batch_size)
        hit = pred == y if y.ndim == 1 else (pred[:, None] == y).any(axis=1)
        return float(np.mean(hit)), counts

    # -- files ---------------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str]) -> Path:
        """Save the model with its optimizer state and this trainer's position."""
        extra = {"trainer": {"epoch": self.epoch, "seed": self.seed, "batch_size": self.batch_size}}
        return self.model.save(path, extra=extra)

    @classmethod
    def load(cls, path: str | os.PathLike[str], workers: int = 1, backend: Any = None) -> Trainer:
        """A trainer that continues where the saved one stopped."""
        model, extra = Model.load(path, backend=backend)
        info = extra.get("trainer")
        if model.optimizer is None or info is None:
            raise ConfigError(f"{path}: the model was not saved by a Trainer (no optimizer state)")
        trainer = cls(
            model,
            model.optimizer.name,
            batch_size=info["batch_size"],
            workers=workers,
            seed=info["seed"],
        )
        trainer.epoch = int(info["epoch"])
        return trainer
