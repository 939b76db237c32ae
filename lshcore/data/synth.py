"""A synthetic extreme-classification problem written straight into a store.

Model (all seeded; memory bounded by one chunk of ``chunk_rows`` points plus O(labels)
for the label popularity table, never by the number of points):

- Label popularity is Zipf-like: the label of popularity rank ``r`` (1-based) is drawn
  with probability proportional to ``r ** -zipf``; ranks are assigned to label ids by a
  random permutation so popular labels are spread over the id range.
- A point has ``1 + Poisson(labels_per_point - 1)`` label draws (with replacement;
  repeats count once, so popular labels make the mean slightly lower).
- Each label ``j`` has ``prototype_size`` prototype features: ids
  ``hash(seed, j, t) mod n_features`` with label-specific weights in [0.5, 1)
  (computed by a hash, not stored). A point takes each prototype feature of each of its
  labels with probability ``keep`` (value = weight x U(0.5, 1.5)), plus
  ``Poisson(noise_features)`` uniformly random noise features with values U(0, 0.5).
  Repeated feature ids are summed. Features are non-negative float32.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from lshcore.core.validation import check_float, check_int
from lshcore.data.store import StoreWriter, XMCStore
from lshcore.data.xmc import DEFAULT_CHUNK_ROWS, MAX_ID, coo_to_csr, progress_bar

__all__ = ["synth_xmc", "prototype_features"]

_M1 = np.uint64(0x9E3779B97F4A7C15)
_M2 = np.uint64(0xBF58476D1CE4E5B9)
_M3 = np.uint64(0x94D049BB133111EB)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser on uint64 arrays (wrapping arithmetic)."""
    z = x + _M1
    z = (z ^ (z >> np.uint64(30))) * _M2
    z = (z ^ (z >> np.uint64(27))) * _M3
    return np.asarray(z ^ (z >> np.uint64(31)))


def prototype_features(
    labels: np.ndarray, n_features: int, prototype_size: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Prototype feature ids ``(len(labels), prototype_size)`` int64 and weights float32."""
    lab = np.asarray(labels, dtype=np.uint64)[:, None]
    t = np.arange(prototype_size, dtype=np.uint64)[None, :]
    with np.errstate(over="ignore"):
        key = _mix(np.uint64(seed) * _M3 + lab * np.uint64(1_000_003) + t)
        ids = (key % np.uint64(n_features)).astype(np.int64)
        w = _mix(key) >> np.uint64(40)  # 24 random bits
    weights = (0.5 + 0.5 * w.astype(np.float64) / float(1 << 24)).astype(np.float32)
    return ids, weights


def synth_xmc(
    out: str | os.PathLike[str],
    n_points: int,
    n_labels: int,
    n_features: int,
    *,
    seed: int = 0,
    labels_per_point: float = 5.0,
    zipf: float = 1.0,
    prototype_size: int = 8,
    keep: float = 0.8,
    noise_features: float = 4.0,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    overwrite: bool = False,
    progress: bool = False,
) -> XMCStore:
    """Write a synthetic problem of ``n_points`` x ``n_features`` with ``n_labels`` labels
    into a new store at ``out`` (see the module docstring for the model); returns it.

    The output depends on ``seed`` and every parameter including ``chunk_rows``.
    """
    n_points = check_int(n_points, "n_points", low=0)
    n_labels = check_int(n_labels, "n_labels", low=1, high=MAX_ID + 1)
    n_features = check_int(n_features, "n_features", low=1, high=MAX_ID + 1)
    seed = check_int(seed, "seed", low=0)
    labels_per_point = check_float(labels_per_point, "labels_per_point", low=1.0)
    zipf = check_float(zipf, "zipf", low=0.0)
    prototype_size = check_int(prototype_size, "prototype_size", low=1)
    keep = check_float(keep, "keep", low=0.0, high=1.0)
    noise_features = check_float(noise_features, "noise_features", low=0.0)
    chunk_rows = check_int(chunk_rows, "chunk_rows", low=1)
    params: dict[str, Any] = {
        "kind": "synth-xmc",
        "seed": seed,
        "labels_per_point": labels_per_point,
        "zipf": zipf,
        "prototype_size": prototype_size,
        "keep": keep,
        "noise_features": noise_features,
        "chunk_rows": chunk_rows,
    }
    rng = np.random.default_rng(seed)
    popularity = np.arange(1, n_labels + 1, dtype=np.float64) ** -zipf
    cdf = np.cumsum(popularity)
    cdf /= cdf[-1]
    del popularity
    label_of_rank = rng.permutation(n_labels).astype(np.int64)
    bar = progress_bar(n_points, "synth-xmc", unit="pt", enabled=progress)
    try:
        with StoreWriter(
            out, n_features=n_features, n_labels=n_labels, overwrite=overwrite, source=params
        ) as writer:
            for c, start in enumerate(range(0, n_points, chunk_rows)):
                b = min(chunk_rows, n_points - start)
                crng = np.random.default_rng([seed, 1, c])  # one stream per chunk
                _write_chunk(writer, crng, b, cdf, label_of_rank, n_features, params)
                bar.update(b)
            return writer.commit()
    finally:
        bar.close()


def _write_chunk(
    writer: StoreWriter,
    rng: np.random.Generator,
    b: int,
    cdf: np.ndarray,
    label_of_rank: np.ndarray,
    n_features: int,
    p: dict[str, Any],
) -> None:
    n_labels = len(cdf)
    k = np.minimum(1 + rng.poisson(p["labels_per_point"] - 1.0, b), n_labels)
    rows = np.repeat(np.arange(b, dtype=np.int64), k)
    ranks = np.minimum(np.searchsorted(cdf, rng.random(len(rows)), side="right"), n_labels - 1)
    y_ptr, y_ids, _ = coo_to_csr(b, rows, label_of_rank[ranks], None)
    # prototype features of each (point, label) pair, each kept with probability `keep`
    pair_rows = np.repeat(np.arange(b, dtype=np.int64), np.diff(y_ptr))
    ids, weights = prototype_features(y_ids, n_features, p["prototype_size"], p["seed"])
    kept = rng.random(ids.shape) < p["keep"]
    f_rows = np.broadcast_to(pair_rows[:, None], ids.shape)[kept]
    f_ids = ids[kept]
    f_vals = weights[kept] * rng.uniform(0.5, 1.5, int(kept.sum())).astype(np.float32)
    # noise features, independent of the labels
    n_noise = rng.poisson(p["noise_features"], b)
    noise_rows = np.repeat(np.arange(b, dtype=np.int64), n_noise)
    noise_ids = rng.integers(0, n_features, len(noise_rows), dtype=np.int64)
    noise_vals = rng.uniform(0.0, 0.5, len(noise_rows)).astype(np.float32)
    x_ptr, x_ids, x_vals = coo_to_csr(
        b,
        np.concatenate([f_rows, noise_rows]),
        np.concatenate([f_ids, noise_ids]),
        np.concatenate([f_vals, noise_vals]),
    )
    assert x_vals is not None
    writer.append(x_ptr, x_ids.astype(np.int32), x_vals, y_ptr, y_ids.astype(np.int32))
