"""A property-testing kit for hash families (built-in or from a plugin).

Two parts:

* exact pair constructions (``pairs_at_angle``, ``pairs_at_jaccard``,
  ``pairs_at_distance``) and hypothesis strategies built on them (``dense_vectors``,
  ``sparse_vectors``, ``angle_pairs``, ``jaccard_pairs``, ``distance_pairs``);
* :func:`check_hash_family`, the conformance suite a plugin author runs against a family:
  shapes, dtype and range of the codes, determinism under ``seed``, batch = rows one by
  one, dense = CSR input, backends agree, bad input raises ValueError, and the empirical
  collision rate lies inside a binomial confidence band around ``collision_probability``.
  It raises one AssertionError listing every failed check.

Typical use in a plugin's own tests::

    from lshcore.testing import check_hash_family

    def test_my_family_conforms():
        check_hash_family(MyFamily)          # or the registered name, "my_family"

This module imports hypothesis and scipy; ``import lshcore`` does not import it.
"""

from __future__ import annotations

import inspect
import math
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from lshcore.core.backend import to_numpy
from lshcore.errors import ConfigError
from lshcore.hashing.base import HashFamily
from lshcore.registry.catalog import backends as usable_backends

__all__ = [
    "pairs_at_angle",
    "pairs_at_jaccard",
    "pairs_at_distance",
    "dense_vectors",
    "sparse_vectors",
    "angle_pairs",
    "jaccard_pairs",
    "distance_pairs",
    "check_hash_family",
    "KitReport",
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
    if not 0.0 <= angle <= math.pi:
        raise ConfigError(f"angle must lie in [0, pi], got {angle}")
    x = rng.standard_normal((n, dim))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    v = rng.standard_normal((n, dim))
    v -= np.einsum("ij,ij->i", v, x)[:, None] * x
    v -= np.einsum("ij,ij->i", v, x)[:, None] * x  # second pass: orthogonal to 1e-16
    v /= np.linalg.norm(v, axis=1, keepdims=True)
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
    if not 1 <= u <= dim:
        raise ConfigError(f"union_size must lie in [1, {dim}], got {u}")
    if not 0.0 <= similarity <= 1.0:
        raise ConfigError(f"similarity must lie in [0, 1], got {similarity}")
    shared = int(round(similarity * u))
    x_only = (u - shared) // 2
    coords = np.argsort(rng.random((n, dim)), axis=1)[:, :u]  # a random union per row
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
    u = rng.standard_normal((n, dim))
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    return x, x + distance * u


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

    ``nonnegative`` keeps values > 0; ``binary`` makes every stored value 1 (a set).
    """
    rows = draw(_rows(n))
    top = dim if max_nnz is None else min(max_nnz, dim)
    low = 0.0 if nonnegative else -max_abs
    value = st.floats(low, max_abs, width=32, allow_subnormal=False).filter(lambda v: v != 0)
    indptr, indices, data = [0], [], []
    for _ in range(rows):
        idx = sorted(draw(st.sets(st.integers(0, dim - 1), min_size=min_nnz, max_size=top)))
        indices += idx
        data += (
            [1.0] * len(idx)
            if binary
            else draw(st.lists(value, min_size=len(idx), max_size=len(idx)))
        )
        indptr.append(len(indices))
    return sp.csr_matrix(
        (np.asarray(data, np.float32), np.asarray(indices, np.int32), np.asarray(indptr)),
        shape=(rows, dim),
    )


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
    """``(x, y, angle)``: n pairs of unit vectors at exactly ``angle`` radians (drawn if None)."""
    theta = draw(st.floats(min_angle, max_angle)) if angle is None else angle
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    x, y = pairs_at_angle(rng, n, dim, theta)
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

    The returned J is the value actually built (``round(J * union) / union``). With
    ``sparse=True`` x and y are CSR matrices.
    """
    target = draw(st.floats(0.0, 1.0)) if similarity is None else similarity
    u = union_size if union_size is not None else draw(st.integers(1, dim))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    x, y, exact = pairs_at_jaccard(rng, n, dim, target, union_size=u)
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
    """``(x, y, d)``: n pairs at exactly Euclidean distance d (drawn from [0, max] if None)."""
    d = draw(st.floats(0.0, max_distance)) if distance is None else distance
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    x, y = pairs_at_distance(rng, n, dim, d)
    return x, y, d


# ---------------------------------------------------------------------------------------
# the conformance suite


@dataclass
class KitReport:
    """What :func:`check_hash_family` checked: names of passed, skipped and failed checks."""

    family: str
    passed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        lines = [
            f"check_hash_family({self.family}): {len(self.passed)} passed, "
            f"{len(self.skipped)} skipped, {len(self.failed)} failed"
        ]
        lines += [f"  FAILED  {msg}" for msg in self.failed]
        lines += [f"  skipped {msg}" for msg in self.skipped]
        return "\n".join(lines)


#: similarity grids the collision check picks from, per measure (cosine: s = cos(angle))
_CANDIDATES: dict[str, np.ndarray] = {
    "cosine": np.cos(np.linspace(0.05, 0.95, 19) * math.pi),
    "jaccard": np.linspace(0.05, 0.95, 19),
    "l2": 2.0 ** np.linspace(-4, 8, 25),
}


def _accepts_backend(cls: type) -> bool:
    """Whether some ``__init__`` in the class's MRO names a ``backend`` parameter."""
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        try:
            if "backend" in inspect.signature(init).parameters:
                return True
        except (TypeError, ValueError):
            continue
    return False


def _default_inputs(
    measure: str, sparse_ok: bool
) -> Callable[[np.random.Generator, int, int], np.ndarray]:
    """Input generator by measure: sets for jaccard, non-negative for rank, else Gaussian.

    With sparse support, rows get zeros (so the CSR path is exercised); every row keeps at
    least one non-zero.
    """

    def make(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
        if measure == "jaccard":
            x = (rng.random((n, dim)) < 0.25).astype(np.float32)
        elif measure == "rank":
            x = rng.uniform(0.05, 1.0, (n, dim)).astype(np.float32)
            if sparse_ok:
                x[rng.random((n, dim)) < 0.5] = 0.0
        else:
            x = rng.standard_normal((n, dim)).astype(np.float32)
            if sparse_ok:
                x[rng.random((n, dim)) < 0.4] = 0.0
        empty = ~(x != 0).any(axis=1)
        x[empty, rng.integers(0, dim, int(empty.sum()))] = 1.0
        return x

    return make


def _pick_similarities(predicted: np.ndarray, grid: np.ndarray, count: int = 3) -> list[int]:
    """Indices of grid points whose predicted probabilities are near 0.2, 0.5 and 0.8."""
    chosen: list[int] = []
    for target in np.linspace(0.2, 0.8, count):
        order = np.argsort(np.abs(predicted - target))
        for idx in order:
            if int(idx) not in chosen:
                chosen.append(int(idx))
                break
    return sorted(chosen)


def _clopper_pearson(hits: int, trials: int, alpha: float) -> tuple[float, float]:
    from scipy.stats import beta

    lo = 0.0 if hits == 0 else float(beta.ppf(alpha / 2, hits, trials - hits + 1))
    hi = 1.0 if hits == trials else float(beta.ppf(1 - alpha / 2, hits + 1, trials - hits))
    return lo, hi


def _short(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" at {frames[-1].filename.rsplit('/', 1)[-1]}:{frames[-1].lineno}" if frames else ""
    return f"{type(exc).__name__}: {exc}{where}"


def check_hash_family(
    name_or_class: str | type[HashFamily],
    *,
    dim: int = 32,
    k: int = 2,
    l: int = 4,  # noqa: E741
    backends: list[str] | None = None,
    trials: int = 2048,
    alpha: float = 1e-3,
    n_inputs: int = 24,
    seed: int = 0,
    inputs: Callable[[np.random.Generator, int, int], Any] | Any = None,
    **params: Any,
) -> KitReport:
    """Run the conformance suite on a hash family; raise AssertionError listing failures.

    ``name_or_class``: a registered name or a HashFamily subclass, constructed as
    ``cls(dim, k, l, seed=..., **params)``. ``backends``: names to compare (default: every
    usable one, when the constructor takes ``backend=``). ``trials``: (pair, table) trials
    per similarity in the collision check, which uses ``alpha`` (family-wise, Bonferroni
    over the similarities) and widens the Clopper-Pearson band by the family's
    ``collision_tolerance``. Inputs: ``n_inputs`` rows chosen by ``measure`` (0/1 sets
    for "jaccard", non-negative for "rank", Gaussian otherwise), or ``inputs``: an
    (n, dim) array or a callable ``inputs(rng, n_inputs, dim)``. Everything is seeded
    from ``seed``, so a run is reproducible. Returns a :class:`KitReport`.
    """
    if isinstance(name_or_class, str):
        from lshcore.registry.catalog import family_class

        cls = family_class(name_or_class)
        label = repr(name_or_class)
    else:
        cls = name_or_class
        label = getattr(cls, "__name__", repr(cls))
    report = KitReport(label)
    n = n_inputs

    def make(s: int, tables: int = l, **extra: Any) -> Any:
        return cls(dim, k, tables, seed=s, **params, **extra)

    try:
        fam = make(seed)
    except Exception as exc:
        report.failed.append(
            f"[construct] {cls.__name__}({dim}, {k}, {l}, **{params}) raised {_short(exc)}"
        )
        raise AssertionError(str(report)) from exc

    measure = getattr(fam, "measure", "")
    sparse_ok = bool(getattr(fam, "supports_sparse", False))
    rng = np.random.default_rng(seed)
    raw: Any
    if inputs is None:
        raw = _default_inputs(measure, sparse_ok)(rng, n, dim)
    elif callable(inputs):
        raw = inputs(rng, n, dim)
    else:
        raw = inputs
    x = np.asarray(raw.toarray() if sp.issparse(raw) else raw, dtype=np.float32)
    n = x.shape[0]

    def check(name: str, fn: Callable[[], str | None]) -> None:
        """Run one check: None = pass, "skip: why" = skipped, another str = failure."""
        try:
            msg = fn()
        except AssertionError as exc:
            msg = str(exc)
        except Exception as exc:
            msg = f"raised {_short(exc)}"
        if msg is None:
            report.passed.append(name)
        elif msg.startswith("skip:"):
            report.skipped.append(f"[{name}] {msg[5:].strip()}")
        else:
            report.failed.append(f"[{name}] {msg}")

    def codes_of(f: Any, data: Any) -> np.ndarray:
        return to_numpy(f.hash(data))

    # -- attributes ------------------------------------------------------------------
    def attributes() -> str | None:
        bad = []
        for attr, want in (("dim", dim), ("k", k), ("l", l), ("seed", seed)):
            if getattr(fam, attr, None) != want:
                bad.append(f"{attr}={getattr(fam, attr, None)!r} (expected {want!r})")
        nb = getattr(fam, "num_buckets", None)
        if not isinstance(nb, (int, np.integer)) or isinstance(nb, bool) or nb < 1:
            bad.append(f"num_buckets={nb!r} is not a positive int")
        elif nb > 2**63 - 1:
            bad.append(f"num_buckets={nb} does not fit in int64")
        if not isinstance(measure, str) or not measure:
            bad.append(f"measure={measure!r} is not a non-empty string")
        return "; ".join(bad) or None

    check("attributes", attributes)

    # -- codes: shape, dtype, range ------------------------------------------------------
    base: dict[str, np.ndarray] = {}

    def shape_dtype_range() -> str | None:
        codes = codes_of(fam, x)
        base["codes"] = codes
        if codes.shape != (n, l):
            return (
                f"hash(x) of shape ({n}, {dim}) returned shape {codes.shape}, expected ({n}, {l})"
            )
        if codes.dtype != np.int64:
            return f"codes have dtype {codes.dtype}, expected int64"
        nb = int(fam.num_buckets)
        out = (codes < 0) | (codes >= nb)
        if out.any():
            return (
                f"{int(out.sum())} of {codes.size} codes out of range [0, {nb}): "
                f"min {int(codes.min())}, max {int(codes.max())}"
            )
        return None

    check("codes", shape_dtype_range)
    if "codes" not in base:  # nothing else can be compared
        raise AssertionError(str(report))
    ref = base["codes"]

    # -- determinism --------------------------------------------------------------------
    def determinism() -> str | None:
        again = codes_of(fam, x)
        if not np.array_equal(again, ref):
            return f"not deterministic: hashing the same batch twice gave different codes ({int((again != ref).sum())} differ)"
        twin = codes_of(make(seed), x)
        if not np.array_equal(twin, ref):
            return (
                f"two instances with seed={seed} gave different codes "
                f"({int((twin != ref).sum())} of {ref.size} differ): not deterministic under seed"
            )
        return None

    check("determinism", determinism)

    def other_seed() -> str | None:
        if int(fam.num_buckets) < 2:
            return "skip: num_buckets < 2"
        other = codes_of(make(seed + 1), x)
        if np.array_equal(other, ref):
            return f"seed={seed + 1} gave exactly the same codes as seed={seed} on {n} inputs"
        return None

    check("seed", other_seed)

    def config_roundtrip() -> str | None:
        cfg = fam.config()
        rebuilt = codes_of(type(fam)(**cfg), x)
        if not np.array_equal(rebuilt, ref):
            return f"type(f)(**f.config()) hashes differently; config() = {cfg!r}"
        return None

    check("config", config_roundtrip)

    # -- batch vs rows ------------------------------------------------------------------
    def batch_rows() -> str | None:
        rows = np.concatenate([codes_of(fam, x[i : i + 1]) for i in range(n)], axis=0)
        diff = np.flatnonzero((rows != ref).any(axis=1))
        if diff.size:
            return (
                f"a batch hashes differently from its rows one at a time (rows {diff[:5].tolist()})"
            )
        return None

    check("batch", batch_rows)

    # -- multiprobe and cost --------------------------------------------------------------
    def probes() -> str | None:
        if getattr(type(fam), "probes", None) is getattr(HashFamily, "probes", None):
            return "skip: no multiprobe (base probes)"
        got = to_numpy(fam.probes(x, 3))
        if got.shape != (n, l, 3):
            return f"probes(x, 3) returned shape {got.shape}, expected ({n}, {l}, 3)"
        if not np.array_equal(got[:, :, 0], ref):
            return "probes(x, 3)[:, :, 0] differs from hash(x)"
        if got.dtype != np.int64 or got.min() < 0 or got.max() >= int(fam.num_buckets):
            return f"probe codes must be int64 in [0, num_buckets); got {got.dtype} in [{got.min()}, {got.max()}]"
        return None

    check("probes", probes)

    def cost() -> str | None:
        bad = []
        for args in ((n,), (n, int(np.count_nonzero(x)))):
            c = fam.hash_cost(*args)
            if isinstance(c, bool) or not isinstance(c, (int, np.integer)) or c < 0:
                bad.append(f"hash_cost{args} = {c!r} is not a non-negative int")
        return "; ".join(bad) or None

    check("cost", cost)

    # -- dense vs CSR -------------------------------------------------------------------
    def dense_sparse() -> str | None:
        if not sparse_ok:
            return "skip: supports_sparse is False"
        csr = codes_of(fam, sp.csr_matrix(x))
        if csr.shape != ref.shape or not np.array_equal(csr, ref):
            bad = np.flatnonzero((csr != ref).any(axis=1)) if csr.shape == ref.shape else "all"
            return f"CSR input hashes differently from the same dense input (rows {bad})"
        return None

    check("sparse", dense_sparse)

    # -- backends -------------------------------------------------------------------------
    def backends_agree() -> str | None:
        if not _accepts_backend(cls):
            return "skip: the constructor takes no backend="
        names = usable_backends() if backends is None else list(backends)
        if len(names) < 2 and backends is None:
            return f"skip: only one usable backend ({names})"
        reference_name = "numpy" if "numpy" in names else names[0]
        want = codes_of(make(seed, backend=reference_name), x)
        bad = []
        for name in names:
            got = codes_of(make(seed, backend=name), x)
            if got.shape != want.shape or not np.array_equal(got, want):
                frac = float(np.mean(got != want)) if got.shape == want.shape else 1.0
                bad.append(f"{name!r} differs from {reference_name!r} on {frac:.1%} of codes")
        return "; ".join(bad) or None

    check("backends", backends_agree)

    # -- bad input ------------------------------------------------------------------------
    def bad_input() -> str | None:
        nan = x.copy()
        nan[0, 0] = np.nan
        cases = {
            "NaN value": nan,
            "inf value": np.where(np.arange(dim) == 0, np.inf, x[:1]),
            f"wrong shape ({n}, {dim + 1})": np.zeros((n, dim + 1), np.float32) + 1,
            "1-D array": x[0],
            f"empty batch (0, {dim})": np.zeros((0, dim), np.float32),
        }
        if sparse_ok:
            cases["CSR with NaN"] = sp.csr_matrix(nan)
        problems = []
        for what, data in cases.items():
            try:
                fam.hash(data)
            except ValueError:
                continue
            except Exception as exc:
                problems.append(f"{what} raised {type(exc).__name__}, expected a ValueError")
                continue
            problems.append(f"{what} was accepted, expected a ValueError")
        return "; ".join(problems) or None

    check("bad input", bad_input)

    # -- collision probability ------------------------------------------------------------
    def collision() -> str | None:
        if measure not in _CANDIDATES:
            return f"skip: no pair generator for measure {measure!r}"
        grid = _CANDIDATES[measure]
        try:
            predicted = np.asarray(fam.collision_probability(grid), dtype=np.float64)
        except NotImplementedError:
            return "skip: collision_probability is not implemented"
        if predicted.shape != grid.shape:
            return f"collision_probability of an array of shape {grid.shape} returned shape {predicted.shape}"
        if not np.all((predicted >= 0) & (predicted <= 1)):
            return f"collision_probability returned values outside [0, 1]: {predicted}"
        picks = _pick_similarities(predicted, grid)
        tol = float(getattr(fam, "collision_tolerance", 0.0))
        tables = min(32, trials)
        reps = -(-trials // tables)
        pair_rng = np.random.default_rng(seed + 7919)
        problems = []
        for pick in picks:
            s = float(grid[pick])
            hits = total = 0
            for rep in range(reps):
                f = make(seed + 1000 + rep, tables=tables)
                if measure == "cosine":
                    a, b = pairs_at_angle(pair_rng, tables, dim, math.acos(s))
                elif measure == "jaccard":
                    a, b, s = pairs_at_jaccard(pair_rng, tables, dim, float(grid[pick]))
                else:
                    a, b = pairs_at_distance(pair_rng, tables, dim, s)
                a, b = a.astype(np.float32), b.astype(np.float32)
                ca, cb = codes_of(f, a), codes_of(f, b)
                # pair i is hashed by table i only: independent trials across tables
                hits += int(np.sum(np.diag(ca) == np.diag(cb)))
                total += tables
            p = float(np.asarray(fam.collision_probability(s), dtype=np.float64))
            lo, hi = _clopper_pearson(hits, total, alpha / len(picks))
            if not lo - tol <= p <= hi + tol:
                problems.append(
                    f"at {measure} similarity {s:.4g}: collision_probability = {p:.4f} but "
                    f"{hits}/{total} = {hits / total:.4f} collided (band [{lo:.4f}, {hi:.4f}] "
                    f"at alpha {alpha / len(picks):.2g}, tolerance {tol:g})"
                )
        return "\n            ".join(problems) or None

    check("collision", collision)

    if report.failed:
        raise AssertionError(str(report))
    return report
