"""The conformance suite for hash families, as module-level named checks.

Each check is ``check(case) -> None | "skip: why" | "failure message"`` over a
:class:`FamilyCase` (the family built once, plus its inputs). :func:`yield_checks`
gives ``(name, check)`` pairs, in the manner of scikit-learn's ``_yield_all_checks``,
so each runs alone or as its own pytest case::

    case = build_case("srp")
    for name, check in yield_checks():
        assert run_check(check, case) is None, name

:func:`check_hash_family` runs them all and raises one AssertionError listing every
failure (its report is unchanged from before the split).
"""

from __future__ import annotations

import inspect
import math
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp

from lshcore.core.backend import Backend, to_numpy
from lshcore.hashing.base import HashFamily
from lshcore.registry.catalog import backends as usable_backends
from lshcore.registry.catalog import family_class
from lshcore.testing import _counting
from lshcore.testing.strategies import pairs_at_angle, pairs_at_distance, pairs_at_jaccard

__all__ = [
    "KitReport",
    "FamilyCase",
    "Check",
    "build_case",
    "yield_checks",
    "run_check",
    "check_hash_family",
    "check_attributes",
    "check_codes",
    "check_determinism",
    "check_seed",
    "check_config",
    "check_batch",
    "check_probes",
    "check_cost",
    "check_sparse",
    "check_backends",
    "check_bad_input",
    "check_collision",
    "CHECK_NAMES",
    "codes_of",
]


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


Check = Callable[["FamilyCase"], "str | None"]


@dataclass
class FamilyCase:
    """One family under test: the class, its settings, an instance and the inputs.

    ``x``: float32 (n, dim) inputs; ``codes``: ``fam.hash(x)`` as NumPy (computed once).
    """

    cls: type[HashFamily]
    label: str
    dim: int
    k: int
    l: int  # noqa: E741
    seed: int
    params: dict[str, Any]
    backends: list[str] | None
    trials: int
    alpha: float
    fam: Any
    x: np.ndarray
    _codes: np.ndarray | None = field(default=None, repr=False)

    @property
    def n(self) -> int:
        return int(self.x.shape[0])

    @property
    def measure(self) -> str:
        return str(getattr(self.fam, "measure", ""))

    @property
    def sparse_ok(self) -> bool:
        return bool(getattr(self.fam, "supports_sparse", False))

    def make(self, seed: int, tables: int | None = None, **extra: Any) -> Any:
        """A new instance with ``seed`` (and ``tables`` tables)."""
        return self.cls(
            self.dim,
            self.k,
            self.l if tables is None else tables,
            seed=seed,
            **self.params,
            **extra,
        )

    @property
    def codes(self) -> np.ndarray:
        if self._codes is None:
            self._codes = codes_of(self.fam, self.x)
        return self._codes


def codes_of(f: Any, data: Any) -> np.ndarray:
    return to_numpy(f.hash(data))


def build_case(
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
) -> FamilyCase:
    """The family built with these settings and its inputs (see :func:`check_hash_family`).

    Raises whatever the constructor raises.
    """
    if isinstance(name_or_class, str):
        cls = family_class(name_or_class)
        label = repr(name_or_class)
    else:
        cls = name_or_class
        label = getattr(cls, "__name__", repr(cls))
    fam = cls(dim, k, l, seed=seed, **params)
    measure = getattr(fam, "measure", "")
    sparse_ok = bool(getattr(fam, "supports_sparse", False))
    rng = np.random.default_rng(seed)
    raw: Any
    if inputs is None:
        raw = _default_inputs(measure, sparse_ok)(rng, n_inputs, dim)
    elif callable(inputs):
        raw = inputs(rng, n_inputs, dim)
    else:
        raw = inputs
    x = np.asarray(raw.toarray() if sp.issparse(raw) else raw, dtype=np.float32)
    return FamilyCase(cls, label, dim, k, l, seed, dict(params), backends, trials, alpha, fam, x)


def run_check(check: Check, case: FamilyCase) -> str | None:
    """Run one check: None = pass, "skip: why" = skipped, another str = failure."""
    try:
        return check(case)
    except AssertionError as exc:
        return str(exc)
    except Exception as exc:
        return f"raised {_short(exc)}"


# -- the checks ------------------------------------------------------------------------


def check_attributes(case: FamilyCase) -> str | None:
    """dim, k, l, seed as given; num_buckets a positive int64; measure a non-empty str."""
    fam, bad = case.fam, []
    for attr, want in (("dim", case.dim), ("k", case.k), ("l", case.l), ("seed", case.seed)):
        if getattr(fam, attr, None) != want:
            bad.append(f"{attr}={getattr(fam, attr, None)!r} (expected {want!r})")
    nb = getattr(fam, "num_buckets", None)
    if not isinstance(nb, (int, np.integer)) or isinstance(nb, bool) or nb < 1:
        bad.append(f"num_buckets={nb!r} is not a positive int")
    elif nb > 2**63 - 1:
        bad.append(f"num_buckets={nb} does not fit in int64")
    if not case.measure:
        bad.append(f"measure={getattr(fam, 'measure', None)!r} is not a non-empty string")
    return "; ".join(bad) or None


def check_codes(case: FamilyCase) -> str | None:
    """hash(x) of (n, dim) is int64 of shape (n, l) in [0, num_buckets)."""
    codes, n, l = case.codes, case.n, case.l  # noqa: E741
    if codes.shape != (n, l):
        return (
            f"hash(x) of shape ({n}, {case.dim}) returned shape {codes.shape}, expected ({n}, {l})"
        )
    if codes.dtype != np.int64:
        return f"codes have dtype {codes.dtype}, expected int64"
    nb = int(case.fam.num_buckets)
    out = (codes < 0) | (codes >= nb)
    if out.any():
        return (
            f"{int(out.sum())} of {codes.size} codes out of range [0, {nb}): "
            f"min {int(codes.min())}, max {int(codes.max())}"
        )
    return None


def check_determinism(case: FamilyCase) -> str | None:
    """The same batch twice, and a second instance with the same seed, give the same codes."""
    ref = case.codes
    again = codes_of(case.fam, case.x)
    if not np.array_equal(again, ref):
        return f"not deterministic: hashing the same batch twice gave different codes ({int((again != ref).sum())} differ)"
    twin = codes_of(case.make(case.seed), case.x)
    if not np.array_equal(twin, ref):
        return (
            f"two instances with seed={case.seed} gave different codes "
            f"({int((twin != ref).sum())} of {ref.size} differ): not deterministic under seed"
        )
    return None


def check_seed(case: FamilyCase) -> str | None:
    """Another seed gives other codes."""
    if int(case.fam.num_buckets) < 2:
        return "skip: num_buckets < 2"
    other = codes_of(case.make(case.seed + 1), case.x)
    if np.array_equal(other, case.codes):
        return f"seed={case.seed + 1} gave exactly the same codes as seed={case.seed} on {case.n} inputs"
    return None


def check_config(case: FamilyCase) -> str | None:
    """type(f)(**f.config()) hashes the same."""
    cfg = case.fam.config()
    if not np.array_equal(codes_of(type(case.fam)(**cfg), case.x), case.codes):
        return f"type(f)(**f.config()) hashes differently; config() = {cfg!r}"
    return None


def check_batch(case: FamilyCase) -> str | None:
    """A batch hashes like its rows one at a time."""
    rows = np.concatenate([codes_of(case.fam, case.x[i : i + 1]) for i in range(case.n)], axis=0)
    diff = np.flatnonzero((rows != case.codes).any(axis=1))
    if diff.size:
        return f"a batch hashes differently from its rows one at a time (rows {diff[:5].tolist()})"
    return None


def check_probes(case: FamilyCase) -> str | None:
    """probes(x, 3): (n, l, 3) int64 in range, column 0 = hash(x)."""
    fam, n, l = case.fam, case.n, case.l  # noqa: E741
    if getattr(type(fam), "probes", None) is getattr(HashFamily, "probes", None):
        return "skip: no multiprobe (base probes)"
    got = to_numpy(fam.probes(case.x, 3))
    if got.shape != (n, l, 3):
        return f"probes(x, 3) returned shape {got.shape}, expected ({n}, {l}, 3)"
    if not np.array_equal(got[:, :, 0], case.codes):
        return "probes(x, 3)[:, :, 0] differs from hash(x)"
    if got.dtype != np.int64 or got.min() < 0 or got.max() >= int(fam.num_buckets):
        return f"probe codes must be int64 in [0, num_buckets); got {got.dtype} in [{got.min()}, {got.max()}]"
    return None


#: relative slack for costs a family can only estimate from ``nnz`` (not the CSR itself)
COST_NNZ_TOLERANCE = 0.25


def _projection_mults(fam: Any, x: np.ndarray, sparse: bool) -> int | None:
    """Multiply-adds of ``x @ fam.projections`` (None when the family exposes no
    (dim, P) projection matrix): every entry of W's non-zeros times every input entry
    for dense input; one per (stored input entry, non-zero of W's row) for CSR."""
    w = getattr(fam, "projections", None)
    if w is None:
        return None
    w = to_numpy(w)
    if w.ndim != 2 or w.shape[0] != x.shape[1]:
        return None
    per_coord = np.count_nonzero(w, axis=1)
    if sparse:
        return int(per_coord[np.nonzero(x)[1]].sum())
    return int(x.shape[0] * per_coord.sum())


def _counted_comparisons(case: FamilyCase, data: Any) -> int | None:
    """Comparisons the hashing kernels did for ``data`` (None: no backend= to count with)."""
    if not _accepts_backend(case.cls):
        return None
    counting = Backend("counting", "lshcore.testing._counting")
    fam = case.make(case.seed, backend=counting)
    _counting.reset()
    fam.hash(data)
    return _counting.COUNTS["comparisons"]


def check_cost(case: FamilyCase) -> str | None:
    """hash_cost (multiply-adds) and hash_comparisons against the work actually done.

    Multiply-adds are checked for families exposing a (dim, P) ``projections`` matrix:
    between the projection's products and those plus k per table and input (the
    hashing of the projected values). Comparisons are counted in the WTA/DWTA/MinHash
    kernels through a counting backend. Estimates from ``nnz`` alone may be off by
    COST_NNZ_TOLERANCE.
    """
    fam, x, n = case.fam, case.x, case.n
    nnz = int(np.count_nonzero(x))
    bad = []
    comparisons = getattr(fam, "hash_comparisons", None)
    for what, fn in (("hash_cost", fam.hash_cost), ("hash_comparisons", comparisons)):
        if fn is None:
            continue
        for sizes in ((n,), (n, nnz)):
            c = fn(*sizes)
            if isinstance(c, bool) or not isinstance(c, (int, np.integer)) or c < 0:
                bad.append(f"{what}{sizes} = {c!r} is not a non-negative int")
    if bad:
        return "; ".join(bad)
    extra = n * case.k * case.l
    forms: list[tuple[tuple[int, ...], bool, float]] = [((n,), False, 0.0)]
    if case.sparse_ok:
        forms.append(((n, nnz), True, COST_NNZ_TOLERANCE))
    for args, sparse, tol in forms:
        done = _projection_mults(fam, x, sparse)
        if done is not None:
            claimed = int(fam.hash_cost(*args))
            if not done * (1 - tol) <= claimed <= done * (1 + tol) + extra:
                bad.append(
                    f"hash_cost{args} = {claimed} but the projection does {done} multiply-adds "
                    f"(allowed [{done * (1 - tol):.0f}, {done * (1 + tol) + extra:.0f}])"
                )
        if comparisons is None:
            continue
        counted = _counted_comparisons(case, sp.csr_matrix(x) if sparse else x)
        if counted:
            claimed = int(comparisons(*args))
            if not counted * (1 - tol) <= claimed <= counted * (1 + tol):
                bad.append(
                    f"hash_comparisons{args} = {claimed} but the kernels compared {counted} "
                    f"values (tolerance {tol:g})"
                )
    return "; ".join(bad) or None


def check_sparse(case: FamilyCase) -> str | None:
    """CSR input hashes like the same dense input."""
    if not case.sparse_ok:
        return "skip: supports_sparse is False"
    ref = case.codes
    csr = codes_of(case.fam, sp.csr_matrix(case.x))
    if csr.shape != ref.shape or not np.array_equal(csr, ref):
        bad = np.flatnonzero((csr != ref).any(axis=1)) if csr.shape == ref.shape else "all"
        return f"CSR input hashes differently from the same dense input (rows {bad})"
    return None


def check_backends(case: FamilyCase) -> str | None:
    """Every usable backend (or the given ones) gives the codes of the NumPy one."""
    if not _accepts_backend(case.cls):
        return "skip: the constructor takes no backend="
    names = usable_backends() if case.backends is None else list(case.backends)
    if len(names) < 2 and case.backends is None:
        return f"skip: only one usable backend ({names})"
    reference_name = "numpy" if "numpy" in names else names[0]
    want = codes_of(case.make(case.seed, backend=reference_name), case.x)
    bad = []
    for name in names:
        got = codes_of(case.make(case.seed, backend=name), case.x)
        if got.shape != want.shape or not np.array_equal(got, want):
            frac = float(np.mean(got != want)) if got.shape == want.shape else 1.0
            bad.append(f"{name!r} differs from {reference_name!r} on {frac:.1%} of codes")
    return "; ".join(bad) or None


def check_bad_input(case: FamilyCase) -> str | None:
    """NaN, inf, a wrong shape, a 1-D array and an empty batch raise ValueError."""
    x, n, dim = case.x, case.n, case.dim
    nan = x.copy()
    nan[0, 0] = np.nan
    cases = {
        "NaN value": nan,
        "inf value": np.where(np.arange(dim) == 0, np.inf, x[:1]),
        f"wrong shape ({n}, {dim + 1})": np.zeros((n, dim + 1), np.float32) + 1,
        "1-D array": x[0],
        f"empty batch (0, {dim})": np.zeros((0, dim), np.float32),
    }
    if case.sparse_ok:
        cases["CSR with NaN"] = sp.csr_matrix(nan)
    problems = []
    for what, data in cases.items():
        try:
            case.fam.hash(data)
        except ValueError:
            continue
        except Exception as exc:
            problems.append(f"{what} raised {type(exc).__name__}, expected a ValueError")
            continue
        problems.append(f"{what} was accepted, expected a ValueError")
    return "; ".join(problems) or None


def _rank_collision(case: FamilyCase) -> str | None:
    """Rank families (WTA/DWTA) depend on the order of the entries only: a strictly
    increasing map of the values (zeros kept) must give the same codes; and near pairs
    (small noise on the non-zeros) must collide more often than unrelated pairs, with a
    Clopper-Pearson margin at ``alpha``."""
    x = np.abs(case.x)
    mapped = (x * x + 3.0 * x).astype(np.float32)  # increasing on [0, inf), 0 -> 0
    same = codes_of(case.fam, mapped)
    if not np.array_equal(same, codes_of(case.fam, x)):
        frac = float(np.mean(same != codes_of(case.fam, x)))
        return (
            f"rank-preserving map x -> x^2 + 3x changed {frac:.1%} of codes: "
            "a rank family must depend on the order of the entries only"
        )
    rng = np.random.default_rng(case.seed + 7919)
    tables = min(32, case.trials)
    reps = -(-case.trials // tables)
    near = far = total = 0
    for rep in range(reps):
        f = case.make(case.seed + 1000 + rep, tables=tables)
        a = rng.uniform(0.05, 1.0, (tables, case.dim)).astype(np.float32)
        a[rng.random(a.shape) < 0.5] = 0.0
        a[:, 0] += 0.5  # no empty row
        b = np.where(a != 0, a + rng.normal(0, 0.02, a.shape), 0).astype(np.float32)
        c = np.abs(rng.permutation(a.ravel()).reshape(a.shape)).astype(np.float32)
        c[:, 0] += 0.5
        ca, cb, cc = codes_of(f, a), codes_of(f, np.abs(b)), codes_of(f, c)
        near += int(np.sum(np.diag(ca) == np.diag(cb)))
        far += int(np.sum(np.diag(ca) == np.diag(cc)))
        total += tables
    lo_near, _ = _clopper_pearson(near, total, case.alpha / 2)
    _, hi_far = _clopper_pearson(far, total, case.alpha / 2)
    if lo_near <= hi_far:
        return (
            f"near pairs collided {near}/{total}, unrelated pairs {far}/{total}: "
            "a rank family must collide more often on near pairs"
        )
    return None


def check_collision(case: FamilyCase) -> str | None:
    """The empirical collision rate lies in a binomial band around collision_probability
    (rank families: see ``_rank_collision``)."""
    fam, measure, dim = case.fam, case.measure, case.dim
    if measure == "rank":
        return _rank_collision(case)
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
    tables = min(32, case.trials)
    reps = -(-case.trials // tables)
    pair_rng = np.random.default_rng(case.seed + 7919)
    problems = []
    for pick in picks:
        s = float(grid[pick])
        hits = total = 0
        for rep in range(reps):
            f = case.make(case.seed + 1000 + rep, tables=tables)
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
        lo, hi = _clopper_pearson(hits, total, case.alpha / len(picks))
        if not lo - tol <= p <= hi + tol:
            problems.append(
                f"at {measure} similarity {s:.4g}: collision_probability = {p:.4f} but "
                f"{hits}/{total} = {hits / total:.4f} collided (band [{lo:.4f}, {hi:.4f}] "
                f"at alpha {case.alpha / len(picks):.2g}, tolerance {tol:g})"
            )
    return "\n            ".join(problems) or None


_CHECKS: tuple[tuple[str, Check], ...] = (
    ("attributes", check_attributes),
    ("codes", check_codes),
    ("determinism", check_determinism),
    ("seed", check_seed),
    ("config", check_config),
    ("batch", check_batch),
    ("probes", check_probes),
    ("cost", check_cost),
    ("sparse", check_sparse),
    ("backends", check_backends),
    ("bad input", check_bad_input),
    ("collision", check_collision),
)

#: the names of the checks, in the order they run
CHECK_NAMES: tuple[str, ...] = tuple(name for name, _ in _CHECKS)


def yield_checks() -> Iterator[tuple[str, Check]]:
    """``(name, check)`` for every check, in order ("codes" second: later ones use it)."""
    yield from _CHECKS


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
    label = (
        repr(name_or_class)
        if isinstance(name_or_class, str)
        else getattr(name_or_class, "__name__", repr(name_or_class))
    )
    try:
        case = build_case(
            name_or_class,
            dim=dim,
            k=k,
            l=l,
            backends=backends,
            trials=trials,
            alpha=alpha,
            n_inputs=n_inputs,
            seed=seed,
            inputs=inputs,
            **params,
        )
    except Exception as exc:
        report = KitReport(label)
        name = getattr(name_or_class, "__name__", name_or_class)
        report.failed.append(
            f"[construct] {name}({dim}, {k}, {l}, **{params}) raised {_short(exc)}"
        )
        raise AssertionError(str(report)) from exc
    report = KitReport(case.label)
    for name, check in yield_checks():
        msg = run_check(check, case)
        if msg is None:
            report.passed.append(name)
        elif msg.startswith("skip:"):
            report.skipped.append(f"[{name}] {msg[5:].strip()}")
        else:
            report.failed.append(f"[{name}] {msg}")
            if name == "codes":  # nothing else can be compared
                raise AssertionError(str(report))
    if report.failed:
        raise AssertionError(str(report))
    return report
