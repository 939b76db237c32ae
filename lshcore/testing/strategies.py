"""Exact pair constructions and hypothesis strategies for testing hash families.

The ``pairs_at_*`` functions build pairs at an exact similarity from a seeded NumPy
generator (the conformance kit uses them); the ``pair_at_*_from`` functions build the
same from given arrays, which is how the strategies work: every array is drawn with
``hypothesis.extra.numpy``, so a failing example shrinks element by element.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import scipy.sparse as sp
from hypothesis import assume
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from lshcore.errors import ConfigError

__all__ = [
    "pairs_at_angle",
    "pairs_at_jaccard",
    "pairs_at_distance",
    "pair_at_angle_from",
    "pair_at_jaccard_from",
    "pair_at_distance_from",
    "dense_vectors",
    "sparse_vectors",
    "angle_pairs",
    "jaccard_pairs",
    "distance_pairs",
]

# ---------------------------------------------------------------------------------------
# exact pair constructions (seeded NumPy; used by the strategies and by the kit)


def pairs_at_angle(
    rng: np.random.Generator, n: int, dim: int, angle: float
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` pairs of unit vectors (x_i, y_i) at exactly ``angle`` radians, float64 (n, dim).

    x is uniform on the sphere; y = cos(angle) x + sin(angle) v with v a uniform unit
    vector orthogonal to x, so the pair's distribution is rotation invariant.
    """
    if dim < 2:
        raise ConfigError(f"dim must be >= 2 to build pairs at an angle, got {dim}")
    return pair_at_angle_from(rng.standard_normal((n, dim)), rng.standard_normal((n, dim)), angle)


def pair_at_angle_from(x: np.ndarray, v: np.ndarray, angle: float) -> tuple[np.ndarray, np.ndarray]:
    """Unit pairs at exactly ``angle`` built from raw float arrays x, v of shape (n, dim).

    x is normalized; v's part orthogonal to x gives the direction of y. Rows of x, or of
    v's orthogonal part, with norm below 1e-6 are degenerate: ConfigError.
    """
    if not 0.0 <= angle <= math.pi:
        raise ConfigError(f"angle must lie in [0, pi], got {angle}")
    x = np.array(x, dtype=np.float64)
    v = np.array(v, dtype=np.float64)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    if np.any(norm < 1e-6):
        raise ConfigError("x has a (near-)zero row: no direction to build a pair from")
    x /= norm
    v -= np.einsum("ij,ij->i", v, x)[:, None] * x
    v -= np.einsum("ij,ij->i", v, x)[:, None] * x  # second pass: orthogonal to 1e-16
    vnorm = np.linalg.norm(v, axis=1, keepdims=True)
    if np.any(vnorm < 1e-6):
        raise ConfigError("v is (nearly) parallel to x in some row: no orthogonal direction")
    v /= vnorm
    return x, math.cos(angle) * x + math.sin(angle) * v


def pairs_at_jaccard(
    rng: np.random.Generator,
    n: int,
    dim: int,
    similarity: float,
    *,
    union_size: int | None = None,
) -> tuple[np.ndarray, np.ndarray, float]:
    """``n`` pairs of binary sets (0/1 float64 arrays of shape (n, dim)) at one Jaccard value.

    Each pair's union has ``union_size`` elements (default ``dim // 2``) placed uniformly
    at random, of which ``round(similarity * union_size)`` are shared and the rest split
    between x and y. Returns ``(x, y, exact_similarity)``: the similarity actually built.
    """
    u = max(1, dim // 2) if union_size is None else union_size
    return pair_at_jaccard_from(rng.random((n, dim)), similarity, u)


def pair_at_jaccard_from(
    keys: np.ndarray, similarity: float, union_size: int
) -> tuple[np.ndarray, np.ndarray, float]:
    """Binary pairs at one Jaccard value from sort keys (n, dim): each row's union is the
    ``union_size`` coordinates with the smallest keys (ties by position)."""
    n, dim = keys.shape
    u = union_size
    if not 1 <= u <= dim:
        raise ConfigError(f"union_size must lie in [1, {dim}], got {u}")
    if not 0.0 <= similarity <= 1.0:
        raise ConfigError(f"similarity must lie in [0, 1], got {similarity}")
    shared = int(round(similarity * u))
    x_only = (u - shared) // 2
    coords = np.argsort(keys, axis=1, kind="stable")[:, :u]
    rows = np.arange(n)[:, None]
    x = np.zeros((n, dim))
    y = np.zeros((n, dim))
    x[rows, coords[:, : shared + x_only]] = 1.0
    y[rows, coords[:, :shared]] = 1.0
    y[rows, coords[:, shared + x_only :]] = 1.0
    return x, y, shared / u


def pairs_at_distance(
    rng: np.random.Generator, n: int, dim: int, distance: float, *, scale: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` pairs at exactly Euclidean ``distance``: x ~ N(0, scale^2 I), y = x + distance u."""
    if distance < 0:
        raise ConfigError(f"distance must be >= 0, got {distance}")
    x = rng.standard_normal((n, dim)) * scale
    return pair_at_distance_from(x, rng.standard_normal((n, dim)), distance)


def pair_at_distance_from(
    x: np.ndarray, u: np.ndarray, distance: float
) -> tuple[np.ndarray, np.ndarray]:
    """``(x, x + distance * u / |u|)`` from raw arrays (n, dim); ConfigError for a zero u row."""
    if distance < 0:
        raise ConfigError(f"distance must be >= 0, got {distance}")
    u = np.array(u, dtype=np.float64)
    norm = np.linalg.norm(u, axis=1, keepdims=True)
    if np.any(norm < 1e-6):
        raise ConfigError("u has a (near-)zero row: no direction")
    x = np.asarray(x, dtype=np.float64)
    return x, x + distance * (u / norm)


# ---------------------------------------------------------------------------------------
# hypothesis strategies


def _rows(n: int | None) -> st.SearchStrategy[int]:
    return st.integers(1, 8) if n is None else st.just(n)


def dense_vectors(
    dim: int, *, n: int | None = None, nonnegative: bool = False, max_abs: float = 100.0
) -> st.SearchStrategy[np.ndarray]:
    """Finite float32 batches of shape (n, dim) (n drawn from 1..8 unless given)."""
    elements = st.floats(
        0.0 if nonnegative else -max_abs,
        max_abs,
        width=32,
        allow_nan=False,
        allow_infinity=False,
        allow_subnormal=False,
    )
    return _rows(n).flatmap(lambda rows: hnp.arrays(np.float32, (rows, dim), elements=elements))


def _raw(n: int, dim: int) -> st.SearchStrategy[np.ndarray]:
    """float64 (n, dim) arrays drawn element by element (so hypothesis can shrink them)."""
    elements = st.floats(-1.0, 1.0, allow_nan=False, allow_subnormal=False)
    return hnp.arrays(np.float64, (n, dim), elements=elements)


def _directional(n: int, dim: int) -> st.SearchStrategy[np.ndarray]:
    return _raw(n, dim).filter(lambda a: bool(np.all(np.linalg.norm(a, axis=1) > 1e-3)))


@st.composite
def sparse_vectors(
    draw: st.DrawFn,
    dim: int,
    *,
    n: int | None = None,
    min_nnz: int = 1,
    max_nnz: int | None = None,
    nonnegative: bool = False,
    binary: bool = False,
    max_abs: float = 100.0,
) -> sp.csr_matrix:
    """float32 CSR batches of shape (n, dim) with ``min_nnz..max_nnz`` non-zeros per row.

    The pattern (a bool array) and the values (a float32 array) are drawn with
    ``hypothesis.extra.numpy``; rows outside the bounds are repaired deterministically
    (first missing coordinates added, last extra ones dropped), so shrinking works.
    ``nonnegative`` keeps values > 0; ``binary`` makes every stored value 1 (a set).
    """
    rows = draw(_rows(n))
    top = dim if max_nnz is None else min(max_nnz, dim)
    mask = draw(hnp.arrays(np.bool_, (rows, dim)))
    for r in range(rows):
        on = np.flatnonzero(mask[r])
        if on.size < min_nnz:
            mask[r, np.flatnonzero(~mask[r])[: min_nnz - on.size]] = True
        elif on.size > top:
            mask[r, on[top:]] = False
    if binary:
        values = np.ones((rows, dim), np.float32)
    else:
        low = float(np.float32(2**-20)) if nonnegative else -max_abs
        value = st.floats(low, max_abs, width=32, allow_subnormal=False).filter(lambda v: v != 0)
        values = draw(hnp.arrays(np.float32, (rows, dim), elements=value))
    dense = np.where(mask, values, np.float32(0))
    return sp.csr_matrix(dense, dtype=np.float32)


@st.composite
def angle_pairs(
    draw: st.DrawFn,
    dim: int,
    *,
    angle: float | None = None,
    n: int = 1,
    min_angle: float = 0.0,
    max_angle: float = math.pi,
) -> tuple[np.ndarray, np.ndarray, float]:
    """``(x, y, angle)``: n pairs of unit vectors at exactly ``angle`` radians (drawn if None).

    x and the direction of y are float64 arrays drawn with ``hypothesis.extra.numpy``.
    """
    theta = draw(st.floats(min_angle, max_angle)) if angle is None else angle
    raw_x, raw_v = draw(_directional(n, dim)), draw(_directional(n, dim))
    try:
        x, y = pair_at_angle_from(raw_x, raw_v, theta)
    except ConfigError:
        assume(False)  # v parallel to x: no orthogonal direction (rare; rejected)
        raise
    return x, y, theta


@st.composite
def jaccard_pairs(
    draw: st.DrawFn,
    dim: int,
    *,
    similarity: float | None = None,
    n: int = 1,
    union_size: int | None = None,
    sparse: bool = False,
) -> tuple[Any, Any, float]:
    """``(x, y, J)``: n pairs of binary sets at Jaccard similarity J (exact; drawn if None).

    Which coordinates form each union comes from sort keys drawn as an array. The
    returned J is the value actually built (``round(J * union) / union``). With
    ``sparse=True`` x and y are CSR matrices.
    """
    target = draw(st.floats(0.0, 1.0)) if similarity is None else similarity
    u = union_size if union_size is not None else draw(st.integers(1, dim))
    keys = draw(hnp.arrays(np.float64, (n, dim), elements=st.floats(0.0, 1.0)))
    x, y, exact = pair_at_jaccard_from(keys, target, u)
    if sparse:
        return sp.csr_matrix(x.astype(np.float32)), sp.csr_matrix(y.astype(np.float32)), exact
    return x, y, exact


@st.composite
def distance_pairs(
    draw: st.DrawFn,
    dim: int,
    *,
    distance: float | None = None,
    n: int = 1,
    max_distance: float = 10.0,
) -> tuple[np.ndarray, np.ndarray, float]:
    """``(x, y, d)``: n pairs at exactly Euclidean distance d (drawn from [0, max] if None);
    x and the direction are arrays drawn with ``hypothesis.extra.numpy``."""
    d = draw(st.floats(0.0, max_distance)) if distance is None else distance
    x, y = pair_at_distance_from(draw(_raw(n, dim)), draw(_directional(n, dim)), d)
    return x, y, d
