"""Extreme classification on one machine: sparse input -> dense hidden -> hashed output.

The SLIDE network (MLSys 2020): a sparse, high-dimensional input ``x`` (CSR, never
densified) times a dense ``W1 (D, H)`` gives ``h = relu(x W1 + b1)`` (``H`` = 128 by
default); the output layer has one neuron per label, and each sample computes only its
*active set*: the neurons an :class:`~lshcore.training.selector.ActiveSelector` picks by
LSH from ``h`` (DWTA over the rows ``[w, b]``), with the sample's labels always active in
training. The loss is the softmax over the active set with target ``1/|Y|`` on each
label. Gradients are row-compact and the optimizer is a lazy row Adam
(``xmc_adam_rows``): a step touches only the rows of ``W1`` (features present in the
batch) and ``W2`` (active neurons) that received gradient.

Training runs Hogwild: ``workers`` threads take different batches and update the shared
weights without locks; the kernels (``backend.kernels.xmc_*``) release the GIL.

Evaluation scores with the full output layer by default (``h W2^T + b2`` for every label,
as SLIDE does), or with hashed inference (only the selected neurons).

On a device backend (``backend.on_device``, e.g. ``cupy``) the weights, the Adam state
and every gradient live on the device, and the step runs there (``kernels/_cuda_xmc``);
the LSH tables stay on the host (integer work). Per step, these copies cross (each
through ``backend.to_device``/``to_host``, counted by ``count_transfers``): up the CSR
batch (``input``) and the shared active set with the label columns (``active_ids``);
down the query codes of ``[h, 1]``, hashed on the device (``query_codes``, (B, L)
int64), and the loss (``loss``). A rehash/rebuild hashes the changed rows on the device
(their ids go up, ``rehash_ids``) and brings down their codes only (``table_codes``).
Full-scoring inference brings down the top k ids (``predictions``). Hashed inference
takes its candidates from the host tables (``xmc_infer_candidates`` on the query codes;
with ``infer_probes > 1`` the SRP projections come down instead, ``query_projections``,
and the probes are ranked on the host), sends them up (``active_ids``), scores them on
the device and brings down the top k ids (``predictions``). A device backend refuses
``workers > 1``, ``active_sets="sample"``, families without ``device_hash`` and
``infer_probes > 1`` with a family without ``device_probes`` (``dwta``).
"""

from __future__ import annotations

import contextlib
import itertools
import math
import resource
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from lshcore.core.validation import check_int
from lshcore.errors import ConfigError, InputError
from lshcore.registry import catalog
from lshcore.registry.catalog import get_backend

__all__ = [
    "XMCConfig",
    "XMCModel",
    "XMCTrainer",
    "precision_at_k",
    "labels_padded",
    "peak_rss_mb",
    "SLIDE_SETTINGS",
]

#: SLIDE's Amazon-670K settings (the starting point of the defaults)
SLIDE_SETTINGS: dict[str, Any] = {
    "hidden": 128,
    "family": "dwta",
    "k": 6,
    "l": 50,
    "bin_size": 8,
    "lr": 1e-4,
    "batch_size": 128,
    "rehash_samples": 6_400,
    "rebuild_samples": 128_000,
}


def peak_rss_mb() -> float:
    """This process's peak resident set size in MiB (Linux ``ru_maxrss`` is in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


#: the forms of active set: one per batch (shared, one matrix product) or one per sample
ACTIVE_SETS = ("batch", "sample")


@dataclass(frozen=True)
class XMCConfig:
    """Settings of the XMC network and its training (validated on construction).

    ``active_sets``: ``"batch"`` (default): one active set shared by the whole batch, its
    labels plus ``active`` LSH-selected neurons (round-robin over the samples' buckets,
    padded with random ones), scored as one matrix product (Mongoose; sampled softmax with
    LSH negatives); ``"sample"``: SLIDE's per-sample sets of ``active`` neurons (labels
    first, then the hit buckets, at most ``bucket_size`` ids from each; with ``pad``
    training fills up with random neurons), where ``shared_labels`` adds the batch's
    labels (at most this many; 0 = off) to every sample's set as shared negatives.
    ``family``/``k``/``l``/``bin_size``: the LSH functions over the rows ``[w, b]`` (a
    registered family, e.g. ``srp`` or SLIDE's ``dwta``). Hashed inference scores exactly
    the ``infer_candidates`` ids hit most often in a query's L buckets (``infer_probes``
    buckets per table) plus the ``infer_frequent`` most frequent training labels.
    ``adam_catch_up``: decay a skipped row's moments (dense Adam's) or leave them
    (SparseAdam's; the default).
    ``rehash_samples``/``rebuild_samples``: the periods, in training samples, of
    re-inserting changed rows and of drawing new hash functions (0 = never).
    """

    hidden: int = 128
    lr: float = 1e-3
    batch_size: int = 128
    active: int = 128
    family: str = "srp"
    k: int = 10
    l: int = 16  # noqa: E741
    bin_size: int = 8
    bucket_size: int = 128
    pad: bool = True
    active_sets: str = "batch"
    random_negatives: int = 0
    shared_labels: int = 1024
    infer_candidates: int = 1024
    infer_frequent: int = 1024
    infer_probes: int = 1
    rehash_samples: int = 6_400
    rebuild_samples: int = 128_000
    workers: int = 1
    seed: int = 0
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    adam_catch_up: bool = False
    backend: Any = None  # a registered name, a Backend, or None (the default)

    def __post_init__(self) -> None:
        check_int(self.hidden, "hidden", low=1)
        check_int(self.batch_size, "batch_size", low=1)
        check_int(self.active, "active", low=0 if self.active_sets == "batch" else 1)
        check_int(self.k, "k", low=1)
        check_int(self.l, "l", low=1)
        check_int(self.bin_size, "bin_size", low=2)
        check_int(self.bucket_size, "bucket_size", low=1)
        check_int(self.shared_labels, "shared_labels", low=0)
        check_int(self.random_negatives, "random_negatives", low=0)
        check_int(self.infer_candidates, "infer_candidates", low=1)
        check_int(self.infer_frequent, "infer_frequent", low=0)
        check_int(self.infer_probes, "infer_probes", low=1)
        if self.active_sets not in ACTIVE_SETS:
            raise ConfigError(
                f"active_sets must be one of {', '.join(ACTIVE_SETS)}, got {self.active_sets!r}"
            )
        check_int(self.rehash_samples, "rehash_samples", low=0)
        check_int(self.rebuild_samples, "rebuild_samples", low=0)
        check_int(self.workers, "workers", low=1, high=64)
        check_int(self.seed, "seed", low=0)
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError(f"lr must be a positive number, got {self.lr!r}")
        for name in ("beta1", "beta2"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ConfigError(f"{name} must lie in [0, 1), got {value!r}")

    def to_dict(self) -> dict[str, Any]:
        """The settings as plain values (a Backend object given as ``backend`` by its
        name: a deep copy of it would copy its kernel module)."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        if out["backend"] is not None and not isinstance(out["backend"], str):
            out["backend"] = out["backend"].name
        return out

    def steps(self, samples: int) -> int:
        """A period in samples as a whole number of steps (at least 1)."""
        return max(1, round(samples / self.batch_size))


def labels_padded(lists: Iterable[np.ndarray]) -> np.ndarray:
    """A list of label-id arrays as a (B, n) int64 matrix, -1 padded (n >= 1)."""
    lists = [np.asarray(v, np.int64).reshape(-1) for v in lists]
    width = max([1, *(v.size for v in lists)])
    out = np.full((len(lists), width), -1, np.int64)
    for i, v in enumerate(lists):
        out[i, : v.size] = v
    return out


def precision_at_k(
    top: np.ndarray, labels: Iterable[np.ndarray], ks: Iterable[int]
) -> dict[int, float]:
    """Sum over samples of P@k: ``top (B, >= max k)`` predicted label ids, best first;
    ``labels`` one array of true label ids per sample. P@k = |top k ∩ Y| / k (a sample
    without labels scores 0). Returns ``{k: sum}``; divide by the sample count."""
    ks = list(ks)
    sums = {k: 0.0 for k in ks}
    for row, lab in zip(top, labels, strict=True):
        lab = np.asarray(lab)
        hit = np.isin(row[: max(ks)], lab) if lab.size else np.zeros(max(ks), bool)
        for k in ks:
            sums[k] += float(hit[:k].sum()) / k
    return sums


class HashTables:
    """LSH tables over the output rows ``[w, b]``: a registered hash family gives each row
    one code per table; ``xmc_build_tables`` sorts the rows into buckets (a counting sort,
    linear in the rows); ``xmc_select`` reads the buckets of a batch's query codes
    ``[h, 1]``. Rehash re-codes only the rows changed since the last one (same functions);
    rebuild draws new functions. Workers read the current tables without locks (they are
    replaced as a whole); a rehash runs under a lock in the worker whose step is due."""

    def __init__(self, hidden: int, n_out: int, cfg: XMCConfig, backend: Any):
        self._catalog = catalog
        self.hidden, self.n_out, self.cfg, self.backend = hidden, n_out, cfg, backend
        self.kernels = backend.kernels
        self.rehash_every = cfg.steps(cfg.rehash_samples) if cfg.rehash_samples else 0
        self.rebuild_every = cfg.steps(cfg.rebuild_samples) if cfg.rebuild_samples else 0
        self.rehashes = 0
        self.rebuilds = 0
        self.rehash_seconds = 0.0
        self.dirty = np.zeros(n_out, bool)
        self._lock = threading.Lock()
        self.on_device = bool(backend.on_device)
        self.xp = backend.xp if self.on_device else np
        self.family = self._family(cfg.seed)
        if self.on_device and not hasattr(self.family, "device_hash"):
            raise ConfigError(
                f"family {cfg.family!r} cannot hash on the device (no device_hash); on the "
                f"device backend {backend.name!r} use family 'srp' or 'dwta'"
            )
        if self.on_device and cfg.infer_probes > 1:
            self._check_device_probes(self.family)
        self.n_buckets = int(self.family.num_buckets)
        if self.n_buckets > 1 << 22:
            raise ConfigError(
                f"{cfg.family} with k={cfg.k} has {self.n_buckets:,} buckets per table; "
                f"at most {1 << 22:,} are supported (lower k or bin_size)"
            )
        self.codes = np.zeros((n_out, cfg.l), np.int64)
        self._tables: tuple[Any, np.ndarray, np.ndarray] | None = None

    def _check_device_probes(self, family: Any) -> None:
        """ConfigError unless ``family`` serves multiprobe on the device (``device_probes``)."""
        if not hasattr(family, "device_probes"):
            raise ConfigError(
                f"infer_probes={self.cfg.infer_probes}: family {self.cfg.family!r} has no "
                f"multiprobe on the device backend {self.backend.name!r} (device_probes); "
                "use family 'srp' or infer_probes=1"
            )

    def _family(self, seed: int) -> Any:
        cfg = self.cfg
        params = {"bin_size": cfg.bin_size} if cfg.family in ("dwta", "wta") else {}
        return self._catalog.hash_family(
            cfg.family, self.hidden + 1, cfg.k, cfg.l, seed=seed, backend=self.backend, **params
        )

    def _rows(self, w: Any, b: Any) -> Any:
        """The rows ``[w, b]`` (n, H + 1) where w and b live."""
        return self.xp.concatenate([w, self.xp.reshape(b, (-1, 1))], axis=1)

    def _codes(self, family: Any, rows: Any) -> np.ndarray:
        """Host codes (n, L) int64 of rows (n, H + 1): on a device backend hashed there,
        only the codes come down (tag ``table_codes``)."""
        out = np.empty((rows.shape[0], self.cfg.l), np.int64)
        step = 65536
        for i in range(0, rows.shape[0], step):
            if self.on_device:
                codes = family.device_hash(rows[i : i + step])
                out[i : i + step] = self.backend.to_host(codes, "table_codes")
            else:
                out[i : i + step] = self.backend.to_numpy(family.hash(rows[i : i + step]))
        return out

    def build(self, w: np.ndarray, b: np.ndarray, family: Any = None) -> None:
        """Hash every row (with ``family``, default the current one) and build the tables."""
        t0 = time.perf_counter()
        family = family or self.family
        codes = np.empty((self.n_out, self.cfg.l), np.int64)
        step = 65536
        for i in range(0, self.n_out, step):
            codes[i : i + step] = self._codes(family, self._rows(w[i : i + step], b[i : i + step]))
        self._install(family, codes)
        self.rehash_seconds += time.perf_counter() - t0

    def _install(self, family: Any, codes: np.ndarray) -> None:
        offsets, ids = self.kernels.xmc_build_tables(codes, self.n_buckets)
        self.family, self.codes = family, codes
        self._tables = (family, offsets, ids)
        self.dirty[:] = False

    def rehash(self, w: np.ndarray, b: np.ndarray) -> None:
        """Re-code the rows changed since the last (re)hash; rebuild the buckets."""
        t0 = time.perf_counter()
        dirty = np.flatnonzero(self.dirty)
        self.dirty[dirty] = False
        codes = self.codes  # read by rehash alone: the live tables hold their own arrays
        if dirty.size:
            at = self.backend.to_device(dirty, "rehash_ids") if self.on_device else dirty
            codes[dirty] = self._codes(self.family, self._rows(w[at], b[at]))
        self._install(self.family, codes)
        self.rehashes += 1
        self.rehash_seconds += time.perf_counter() - t0

    def after_step(self, step: int, w: Any, b: Any, rows: np.ndarray) -> None:
        """Mark ``rows`` (host ids) changed; rehash/rebuild when step ``step`` is due."""
        self.dirty[rows] = True
        if self.rebuild_every and step % self.rebuild_every == 0:
            with self._lock:
                self.rebuilds += 1
                self.build(w, b, self._family(self.cfg.seed + self.rebuilds))
        elif self.rehash_every and step % self.rehash_every == 0:
            with self._lock:
                self.rehash(w, b)

    def query(self, h: Any, probes: int = 1) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray]:
        """The current tables ``(family, offsets, ids)`` and the host codes of the queries
        ``[h, 1]`` under them (one consistent snapshot): (B, L) int64, or with ``probes``
        > 1 the family's multiprobe sequence, (B, L * probes) (table-major). On a device
        backend ``h`` lives there and is hashed there; only the codes come down (tag
        ``query_codes``), or for multiprobe the projections (``query_projections``, the
        family's ``device_probes``; ConfigError for a family without it)."""
        assert self._tables is not None
        family, offsets, ids = self._tables
        if self.on_device:
            if probes > 1:
                self._check_device_probes(family)
            xp = self.xp
            q_dev = xp.concatenate([h, xp.ones((h.shape[0], 1), dtype=xp.float32)], axis=1)
            if probes > 1:  # ranked on the host from the projections (query_projections)
                codes = family.device_probes(q_dev, probes).reshape(h.shape[0], -1)
            else:
                codes = self.backend.to_host(family.device_hash(q_dev), "query_codes")
            return family, offsets, ids, np.ascontiguousarray(codes, np.int64)
        q = np.empty((h.shape[0], h.shape[1] + 1), np.float32)
        q[:, :-1] = h
        q[:, -1] = 1.0
        if probes > 1:
            if not hasattr(family, "probes"):
                raise ConfigError(f"infer_probes > 1: family {self.cfg.family!r} has no probes")
            codes = self.backend.to_numpy(family.probes(q, probes)).reshape(h.shape[0], -1)
        else:
            codes = self.backend.to_numpy(family.hash(q))
        return family, offsets, ids, np.ascontiguousarray(codes, np.int64)

    def select_batch(
        self, h: np.ndarray, labels: np.ndarray, m: int, *, pad: bool, seed: int, slot: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """One shared active set: ``(cand (C,) int64, labcols (B, n) int64)``
        (``xmc_select_batch``)."""
        _, offsets, ids, qcodes = self.query(h)
        return self.kernels.xmc_select_batch(
            qcodes,
            offsets,
            ids,
            labels,
            self.n_out,
            min(m, self.n_out),
            min(self.cfg.random_negatives, self.n_out),
            self.cfg.bucket_size,
            pad,
            (self.cfg.seed * 1_000_003 + seed) & 0x7FFFFFFF,
            slot,
        )

    def select(
        self,
        h: np.ndarray,
        labels: np.ndarray | None,
        m: int,
        *,
        pad: bool,
        seed: int,
        shared: int = 0,
    ) -> np.ndarray:
        """Active sets (B, >= m) int64, -1 padded, for hidden activations h (B, H); with
        ``shared`` the batch's labels (at most that many) join every row."""
        family, offsets, ids, qcodes = self.query(h)
        if labels is None:
            labels = np.full((h.shape[0], 1), -1, np.int64)
        return self.kernels.xmc_select(
            qcodes,
            offsets,
            ids,
            labels,
            self.n_out,
            min(m, self.n_out),
            self.cfg.bucket_size,
            pad,
            (self.cfg.seed * 1_000_003 + seed) & 0x7FFFFFFF,
            shared,
        )


def check_device_config(cfg: XMCConfig, backend: Any) -> None:
    """ConfigError (naming the option) for what a device backend does not run: Hogwild
    threads (``workers``) and per-sample active sets (``active_sets``)."""
    if not backend.on_device:
        return
    if cfg.workers > 1:
        raise ConfigError(
            f"workers={cfg.workers}: Hogwild threads run on the CPU; the device backend "
            f"{backend.name!r} trains with workers=1"
        )
    if cfg.active_sets != "batch":
        raise ConfigError(
            f"active_sets={cfg.active_sets!r}: the device backend {backend.name!r} trains "
            "one active set shared by the batch (active_sets='batch')"
        )


class XMCModel:
    """The weights: ``w1 (D, H)``, ``b1 (H,)``, ``w2 (L, H)``, ``b2 (L,)`` float32, initialised
    like PyTorch's ``nn.Linear`` (uniform in ±1/sqrt(fan_in)), and the LSH selector over
    the output rows. On a device backend the weights are the backend's arrays (copied up
    once here, tag ``init``); :meth:`host_weights` copies them down."""

    def __init__(self, n_features: int, n_labels: int, config: XMCConfig | None = None):
        self.n_features = check_int(n_features, "n_features", low=1)
        self.n_labels = check_int(n_labels, "n_labels", low=1)
        self.config = cfg = config or XMCConfig()
        self.backend = get_backend(cfg.backend)
        check_device_config(cfg, self.backend)
        self.on_device = bool(self.backend.on_device)
        rng = np.random.default_rng(cfg.seed)
        a1, a2 = 1.0 / math.sqrt(self.n_features), 1.0 / math.sqrt(cfg.hidden)
        # drawn on the host in a fixed order: the same initial weights on every backend
        w1 = rng.uniform(-a1, a1, (self.n_features, cfg.hidden)).astype(np.float32)
        b1 = rng.uniform(-a1, a1, cfg.hidden).astype(np.float32)
        w2 = rng.uniform(-a2, a2, (self.n_labels, cfg.hidden)).astype(np.float32)
        b2 = rng.uniform(-a2, a2, self.n_labels).astype(np.float32)
        if self.on_device:
            w1, b1, w2, b2 = (self.backend.to_device(a, "init") for a in (w1, b1, w2, b2))
        self.w1, self.b1, self.w2, self.b2 = w1, b1, w2, b2
        self.kernels = self.backend.kernels
        self.tables = HashTables(cfg.hidden, self.n_labels, cfg, self.backend)
        self.tables.build(self.w2, self.b2)
        #: training occurrences of each label (the frequent ones join hashed inference)
        self.label_counts = np.zeros(self.n_labels, np.int64)
        #: work of the last hashed inference: bucket entries read, multiply-adds
        self.last_hashed_work = (0, 0)
        #: hashed inference on a device gathers the candidates' weight rows in chunks of
        #: rows of at most this many floats (64 MB)
        self.score_chunk_floats = 1 << 24

    def host_weights(self, tag: str = "save") -> dict[str, np.ndarray]:
        """Host copies of ``w1, b1, w2, b2`` (on a device backend counted copies under
        ``tag``; on the host the arrays themselves)."""
        names = ("w1", "b1", "w2", "b2")
        if not self.on_device:
            return {n: getattr(self, n) for n in names}
        return {n: self.backend.to_host(getattr(self, n), tag) for n in names}

    # -- forward pieces ----------------------------------------------------------------
    def csr_arrays(self, x: Any) -> tuple[Any, Any, Any]:
        """A CSR batch's ``(indptr int64, indices int64, data float32)`` where the weights
        live (on a device backend copied up, tag ``input``)."""
        if x.shape[1] != self.n_features:
            raise InputError(f"x: expected {self.n_features} features per row, got {x.shape[1]}")
        parts = (
            np.ascontiguousarray(x.indptr, np.int64),
            np.ascontiguousarray(x.indices, np.int64),
            np.ascontiguousarray(x.data, np.float32),
        )
        if self.on_device:
            return tuple(self.backend.to_device(a, "input") for a in parts)  # type: ignore[return-value]
        return parts

    def hidden(self, x: Any, csr: tuple[Any, Any, Any] | None = None) -> Any:
        """h (B, H) of a CSR batch (scipy CSR with ``dim`` = n_features), where the
        weights live; ``csr``: its :meth:`csr_arrays`, when the caller has them."""
        indptr, indices, data = csr if csr is not None else self.csr_arrays(x)
        return self.kernels.xmc_hidden_forward(indptr, indices, data, self.w1, self.b1)

    def scores_full(self, h: Any) -> Any:
        """Every label's logit, (B, L) float32 (a dense product: BLAS, or the device's)."""
        return h @ self.w2.T + self.b2

    def predict_topk(self, x: Any, k: int = 5, *, hashed: bool = False) -> np.ndarray:
        """The k best label ids of each row, best first: (B, k) int64 (-1 where the active
        set of hashed inference holds fewer than k). ``hashed``: score only the candidates
        of the LSH tables (``xmc_infer_candidates``; on a device backend scored there, the
        same ids as the host path up to float32 rounding); its work goes to
        :attr:`last_hashed_work`."""
        h = self.hidden(x)
        if not hashed:
            rows = max(1, (1 << 24) // self.n_labels)  # about 64 MB of scores at a time
            parts = [
                self.kernels.xmc_topk_rows(self.scores_full(h[i : i + rows]), k)
                for i in range(0, h.shape[0], rows)
            ]
            if self.on_device:  # only the ids come down
                parts = [self.backend.to_host(p, "predictions") for p in parts]
            return np.concatenate(parts) if parts else np.zeros((0, k), np.int64)
        cfg = self.config
        _, offsets, ids, qcodes = self.tables.query(h, probes=cfg.infer_probes)
        extra = self.frequent_labels(cfg.infer_frequent)
        n_cand = min(cfg.infer_candidates, self.n_labels)
        if self.on_device:  # candidates from the host tables, scored on the device
            cand, reads = self.kernels.xmc_infer_candidates(
                qcodes, offsets, ids, extra, n_cand, cfg.infer_probes
            )
            top = self._device_topk_of(h, cand, k)
            macs = int(np.count_nonzero(cand >= 0)) * cfg.hidden
        else:
            top, reads, macs = self.kernels.xmc_infer_topk(
                qcodes, offsets, ids, h, self.w2, self.b2, extra, n_cand, k, cfg.infer_probes
            )
        self.last_hashed_work = (int(reads), int(macs))
        return top

    def _device_topk_of(self, h: Any, cand: np.ndarray, k: int) -> np.ndarray:
        """The k best of each row's candidates, scored on the device: h (B, H) there,
        cand (B, C) host int64 (-1 padded at the end) -> host (B, k) int64, -1 padded; by
        score ``w2[r] . h[b] + b2[r]``, ties to the earlier candidate (``xmc_topk_rows``
        is stable; padding scores -inf, after every candidate). In row chunks of at most
        :attr:`score_chunk_floats` gathered weights (a row more if one row alone is
        larger): up the chunk's candidates (``active_ids``), down its top ids
        (``predictions``)."""
        xp = self.backend.xp
        batch, width = cand.shape
        top = np.full((batch, k), -1, np.int64)
        if width == 0 or k <= 0:
            return top
        hid = self.config.hidden
        step = max(1, self.score_chunk_floats // (width * hid))
        for lo in range(0, batch, step):
            ids_dev = self.backend.to_device(cand[lo : lo + step], "active_ids")
            valid = ids_dev >= 0
            safe = xp.where(valid, ids_dev, 0)
            rows = safe.shape[0]
            w = xp.take(self.w2, safe.reshape(-1), axis=0).reshape(rows, width, hid)
            scores = xp.matmul(w, h[lo : lo + rows, :, None])[:, :, 0]
            scores = scores + xp.take(self.b2, safe, axis=0)
            scores = xp.where(valid, scores, np.float32(-np.inf))
            cols = self.kernels.xmc_topk_rows(scores, k)
            best = xp.take_along_axis(ids_dev, cols, axis=1)
            top[lo : lo + rows, : best.shape[1]] = self.backend.to_host(best, "predictions")
        return top

    def frequent_labels(self, n: int) -> np.ndarray:
        """The n labels seen most often in training (fewer if fewer were seen), (n,) int64."""
        n = min(n, int(np.count_nonzero(self.label_counts)))
        if n <= 0:
            return np.zeros(0, np.int64)
        part = np.argpartition(-self.label_counts, n - 1)[:n]
        return np.sort(part).astype(np.int64)


@dataclass
class _State:
    """Adam moments and last-update steps of each parameter (row form)."""

    m: np.ndarray
    v: np.ndarray
    last: np.ndarray


@dataclass
class TrainResult:
    """What :meth:`XMCTrainer.fit` did."""

    epochs: int = 0
    samples: int = 0
    steps: int = 0
    train_seconds: float = 0.0
    epoch_seconds: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    curve: list[dict[str, float]] = field(default_factory=list)

    @property
    def samples_per_second(self) -> float:
        return self.samples / self.train_seconds if self.train_seconds > 0 else 0.0


class XMCTrainer:
    """Trains an :class:`XMCModel` from batches ``(x CSR, label lists)`` with Hogwild
    workers (``config.workers``) and lazy row Adam. On a device backend the Adam state
    lives on the device with the weights (one worker; see the module doc)."""

    def __init__(self, model: XMCModel):
        self.model = model
        cfg = model.config
        self.step = 0
        self._counter = itertools.count(1)
        self._local = threading.local()

        def state(rows: int, cols: int) -> _State:
            if model.on_device:  # created on the device: nothing crosses
                xp = model.backend.xp
                return _State(
                    xp.zeros((rows, cols), dtype=xp.float32),
                    xp.zeros((rows, cols), dtype=xp.float32),
                    xp.zeros(rows, dtype=xp.int64),
                )
            # filled, not just np.zeros: the pages are written now, so the first updates
            # of each row do not page-fault inside the training steps
            m = np.empty((rows, cols), np.float32)
            v = np.empty((rows, cols), np.float32)
            m.fill(0.0)
            v.fill(0.0)
            return _State(m, v, np.zeros(rows, np.int64))

        self.s_w1 = state(model.n_features, cfg.hidden)
        self.s_b1 = state(1, cfg.hidden)
        self.s_w2 = state(model.n_labels, cfg.hidden)
        self.s_b2 = state(model.n_labels, 1)
        xp = model.backend.xp if model.on_device else np
        self._b1_row = xp.zeros(1, dtype=xp.int64)
        #: the device kernels read no slot scratch (see kernels/_cuda_xmc.py): an empty one
        self._no_slot: Any = xp.zeros(0, dtype=xp.int64) if model.on_device else None

    def _slots(self) -> tuple[np.ndarray, np.ndarray]:
        loc = self._local
        if not hasattr(loc, "slot_in"):
            loc.slot_in = np.full(self.model.n_features, -1, np.int64)
            loc.slot_out = np.full(self.model.n_labels, -1, np.int64)
        return loc.slot_in, loc.slot_out

    def _adam(self, param: Any, st: _State, rows: Any, grad: Any, step: int) -> None:
        cfg = self.model.config
        self.model.kernels.xmc_adam_rows(
            param,
            st.m,
            st.v,
            st.last,
            rows,
            grad,
            step,
            cfg.lr,
            cfg.beta1,
            cfg.beta2,
            cfg.eps,
            cfg.adam_catch_up,
        )

    def train_batch(self, x: Any, labels: list[np.ndarray]) -> float:
        """One step on a batch (CSR ``x``, a list of label-id arrays); returns the loss."""
        model = self.model
        k = model.kernels
        if x.shape[0] != len(labels):
            raise InputError(f"labels: expected {x.shape[0]} label lists, got {len(labels)}")
        lab = labels_padded(labels)
        if lab.size and (lab.max() >= model.n_labels or lab.min() < -1):
            raise InputError(f"labels: ids must lie in [0, {model.n_labels})")
        if model.on_device:
            return self._train_batch_device(x, lab)
        slot_in, slot_out = self._slots()
        indptr, indices, data = model.csr_arrays(x)
        cfg = model.config
        step = next(self._counter)
        h = model.hidden(x, (indptr, indices, data))
        np.add.at(model.label_counts, lab[lab >= 0], 1)  # approximate under Hogwild
        if cfg.active_sets == "batch":
            rows, labcols = model.tables.select_batch(
                h, lab, cfg.active, pad=cfg.pad, seed=step, slot=slot_out
            )
            loss, grad_h, grad_w2, grad_b2 = k.xmc_batch_output_step(
                h, model.w2, model.b2, rows, labcols
            )
        else:
            act = model.tables.select(
                h, lab, cfg.active, pad=cfg.pad, seed=step, shared=cfg.shared_labels
            )
            logits = k.xmc_output_forward(h, model.w2, model.b2, act)
            loss, grad_h, rows, grad_w2, grad_b2 = k.xmc_output_backward(
                h, model.w2, act, logits, lab, slot_out
            )
        frows, grad_w1, grad_b1 = k.xmc_hidden_backward(indptr, indices, data, h, grad_h, slot_in)
        self._adam(model.w2, self.s_w2, rows, grad_w2, step)
        self._adam(model.b2.reshape(-1, 1), self.s_b2, rows, grad_b2.reshape(-1, 1), step)
        self._adam(model.w1, self.s_w1, frows, grad_w1, step)
        self._adam(model.b1.reshape(1, -1), self.s_b1, self._b1_row, grad_b1.reshape(1, -1), step)
        model.tables.after_step(step, model.w2, model.b2, rows)
        self.step = max(self.step, step)
        return float(loss)

    def _train_batch_device(self, x: Any, lab: np.ndarray) -> float:
        """:meth:`train_batch` on a device backend (one shared active set, workers=1):
        the step of the host path with the weights, state and gradients on the device;
        the selection reads the host tables from the query codes (see the module doc)."""
        model, k, cfg = self.model, self.model.kernels, self.model.config
        put = model.backend.to_device
        _, slot_out = self._slots()
        csr = model.csr_arrays(x)
        step = next(self._counter)
        h = model.hidden(x, csr)
        np.add.at(model.label_counts, lab[lab >= 0], 1)
        rows, labcols = model.tables.select_batch(
            h, lab, cfg.active, pad=cfg.pad, seed=step, slot=slot_out
        )
        rows_dev, labcols_dev = put(rows, "active_ids"), put(labcols, "active_ids")
        loss, grad_h, grad_w2, grad_b2 = k.xmc_batch_output_step(
            h, model.w2, model.b2, rows_dev, labcols_dev
        )
        frows, grad_w1, grad_b1 = k.xmc_hidden_backward(*csr, h, grad_h, self._no_slot)
        self._adam(model.w2, self.s_w2, rows_dev, grad_w2, step)
        self._adam(model.b2.reshape(-1, 1), self.s_b2, rows_dev, grad_b2.reshape(-1, 1), step)
        self._adam(model.w1, self.s_w1, frows, grad_w1, step)
        self._adam(model.b1.reshape(1, -1), self.s_b1, self._b1_row, grad_b1.reshape(1, -1), step)
        model.tables.after_step(step, model.w2, model.b2, rows)
        self.step = max(self.step, step)
        return float(model.backend.to_host(loss, "loss"))

    def fit(
        self,
        epochs_batches: Callable[[int], Iterator[tuple[Any, list[np.ndarray]]]],
        epochs: int,
        *,
        evaluate: Callable[[], float] | None = None,
        eval_every: int = 0,
        progress: Callable[[int, float], None] | None = None,
    ) -> TrainResult:
        """Train ``epochs`` epochs; ``epochs_batches(epoch)`` yields ``(x, label lists)``.

        With ``evaluate`` (returns P@1) and ``eval_every`` (steps; 0 = at each epoch's end),
        the result's ``curve`` holds ``{seconds, samples, p_at_1}`` points, the evaluation
        time excluded from ``seconds``. ``progress(samples_done, loss)`` after each step.
        """
        check_int(epochs, "epochs", low=1)
        workers = self.model.config.workers
        res = TrainResult()
        lock = threading.Lock()
        train_clock = 0.0

        def point() -> None:
            if evaluate is not None:
                res.curve.append(
                    {"seconds": train_clock, "samples": res.samples, "p_at_1": float(evaluate())}
                )

        def one(x: Any, y: list[np.ndarray]) -> None:
            loss = self.train_batch(x, y)
            with lock:
                res.samples += x.shape[0]
                res.steps += 1
                res.losses.append(loss)
            if progress is not None:
                progress(x.shape[0], loss)

        pool = None
        if workers > 1:
            from concurrent.futures import ThreadPoolExecutor

            pool = ThreadPoolExecutor(workers, thread_name_prefix="lshcore-xmc")
        with pool if pool is not None else contextlib.nullcontext():
            for epoch in range(epochs):
                t0 = time.perf_counter()
                eval_seconds = 0.0
                pending: list[Any] = []
                for x, y in epochs_batches(epoch):
                    if pool is None:
                        one(x, y)
                    else:
                        pending.append(pool.submit(one, x, y))
                        if len(pending) >= 2 * workers:
                            pending.pop(0).result()
                    if eval_every and evaluate is not None and res.steps % eval_every == 0:
                        for f in pending:
                            f.result()
                        pending.clear()
                        e0 = time.perf_counter()
                        train_clock = sum(res.epoch_seconds) + (e0 - t0 - eval_seconds)
                        point()
                        eval_seconds += time.perf_counter() - e0
                for f in pending:
                    f.result()
                seconds = time.perf_counter() - t0 - eval_seconds
                res.epoch_seconds.append(seconds)
                res.epochs += 1
                train_clock = sum(res.epoch_seconds)
                res.train_seconds = train_clock
                if not eval_every:
                    point()
        return res

    def evaluate(
        self,
        batches: Iterable[tuple[Any, list[np.ndarray]]],
        *,
        hashed: bool = False,
        limit: int | None = None,
    ) -> dict[str, float]:
        """P@1, P@3, P@5 over ``batches`` (full output layer, or ``hashed`` inference),
        with ``samples``, ``seconds`` and the output layer's work per sample (bucket
        entries read, multiply-adds)."""
        sums = {1: 0.0, 3: 0.0, 5: 0.0}
        n = 0
        reads = macs = 0
        t0 = time.perf_counter()
        for x, y in batches:
            top = self.model.predict_topk(x, 5, hashed=hashed)
            if hashed:
                reads += self.model.last_hashed_work[0]
                macs += self.model.last_hashed_work[1]
            else:
                macs += x.shape[0] * self.model.n_labels * self.model.config.hidden
            for k, s in precision_at_k(top, y, (1, 3, 5)).items():
                sums[k] += s
            n += x.shape[0]
            if limit is not None and n >= limit:
                break
        seconds = time.perf_counter() - t0
        if n == 0:
            raise InputError("evaluate: no test samples")
        return {
            "p_at_1": sums[1] / n,
            "p_at_3": sums[3] / n,
            "p_at_5": sums[5] / n,
            "samples": float(n),
            "seconds": seconds,
            "bucket_reads_per_sample": reads / n,
            "output_macs_per_sample": macs / n,
        }
