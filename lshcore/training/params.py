"""The selection settings of a hashed layer, as one frozen, validated object.

:class:`SelectionParams` holds what decides which neurons an
:class:`~lshcore.training.selector.ActiveSelector` computes (share, policy, LSH family,
tables, schedules, tie-breaks). The selector, the core layers and model, the framework
adapters and ``lshcore train`` all take it; their keyword arguments build one through
:meth:`SelectionParams.from_kwargs`, validated once, with errors that name the argument.
``to_dict()`` / ``from_dict()`` round-trip it through JSON (what model files store).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from lshcore.core.validation import check_float, check_int
from lshcore.errors import ConfigError, UnknownNameError
from lshcore.registry import catalog
from lshcore.training.schedule import Schedule, parse_schedule

__all__ = [
    "auto_params",
    "default_budget",
    "batch_block_size",
    "SelectionParams",
    "POLICIES",
    "LSH_POLICIES",
    "BATCH_POLICIES",
    "TIEBREAKS",
    "TABLE_KINDS",
]

POLICIES = (
    "topk", "union", "threshold", "batch_union", "batch_rerank", "rerank", "exact", "random",
)  # fmt: skip
LSH_POLICIES = ("topk", "union", "threshold", "batch_union", "batch_rerank", "rerank")
#: policies that choose one set for the whole batch (computed as one dense block)
BATCH_POLICIES = ("batch_union", "batch_rerank")
TIEBREAKS = ("random", "norm")
TABLE_KINDS = ("sorted", "index")
#: default rehash schedule, chosen by benchmarks/bench_mnist_schedules.py (docs/training.md)
DEFAULT_REHASH = "changed:0.1:10"
#: default policy and batch set size, chosen on a validation split (benchmarks/bench_engine.py,
#: docs/training.md "Choosing the defaults"): batch_rerank ties batch_union at 1,000 wide
#: and 5% (MNIST and Fashion-MNIST validation) and is 2-5 points better on wide layers
#: with few active neurons (64,000 wide, 256 active), at the same speed
DEFAULT_POLICY = "batch_rerank"
DEFAULT_BATCH_FACTOR = 4.0
#: the work budget of :func:`auto_params`: bucket entries a query reads, as a share of the
#: layer, 20% at 1,000 neurons or fewer, 2% at 100,000 or more, log-linear between
BUDGET_SMALL, BUDGET_LARGE = 0.2, 0.02
#: tables :func:`auto_params` aims for (SLIDE uses 50)
L_TARGET = 50


def default_budget(n_out: int) -> float:
    """The share of an ``n_out``-wide layer one query may examine (see BUDGET_*)."""
    n = max(int(n_out), 1)
    if n <= 1000:
        return BUDGET_SMALL
    if n >= 100_000:
        return BUDGET_LARGE
    frac = (math.log10(n) - 3.0) / 2.0
    return float(BUDGET_SMALL * (BUDGET_LARGE / BUDGET_SMALL) ** frac)


def batch_block_size(n_out: int, m: int, batch_factor: float, *, floor: bool = True) -> int:
    """Neurons in the shared block of ``batch_union``/``batch_rerank`` for a layer of
    ``n_out`` with ``m`` active per input: ``batch_factor * m``, at most ``n_out``, and
    with ``floor`` (``batch_rerank``, whose rows then keep their own m) at least the
    layer's work budget ``default_budget(n_out) * n_out``. ``batch_union`` gets no floor:
    its block is every row's active set, which the floor would silently enlarge.

    The floor matters only when m is a small share of the layer: at 1,000 wide and 5% the
    two are equal (200); at 64,000 wide with 256 active the block holds 1,600 instead of
    1,024, which gained 1.9 points of validation accuracy after one MNIST epoch
    (``benchmarks/results/engine.md``, session 4): every row of the batch must find its
    own m among neurons chosen by the whole batch's hits.
    """
    least = math.ceil(default_budget(n_out) * n_out - 1e-9) if floor else 1
    return int(min(n_out, max(math.ceil(batch_factor * m - 1e-9), least)))


def auto_params(
    n_out: int,
    family: str = "dwta",
    budget: float | None = None,
    bin_size: int = 16,
) -> dict[str, int]:
    """LSH parameters for a layer of ``n_out`` neurons (in the manner of FALCONN's
    ``get_default_parameters``): ``k`` (codes per table key), ``l`` (tables),
    ``bucket_size`` (slots per bucket of index tables, four times the mean load) and
    ``bin_size`` (WTA/DWTA), chosen so that a query reads at most ``budget * n_out``
    bucket entries on average, with keys of ``bin_size**k`` (WTA/DWTA) or ``2**k`` (bit
    families) buckets. ``budget`` defaults to :func:`default_budget` (20% of a 1,000-wide
    layer, 2% of a 100,000-wide one). The tables read one bucket each (no multiprobe).

    Example: 1,000 neurons, DWTA bins of 16: k=2 (256 buckets, ~3.9 neurons each),
    l=50, about 195 entries per query (19.5%); 100,000 neurons: k=3, l=50, ~1,221 (1.2%).
    """
    budget = default_budget(n_out) if budget is None else check_float(
        budget, "budget", low=0.0, high=1.0, open_low=True
    )  # fmt: skip
    base = bin_size if family in ("dwta", "wta") else 2
    # the fewest key bits whose buckets leave room for L_TARGET tables within the budget
    need = L_TARGET / budget
    k = max(1, math.ceil(math.log(need) / math.log(base) - 1e-9))
    buckets = base**k
    # L_TARGET tables unless the budget allows fewer (more tables cost hashing and
    # probing time: measured on the width benchmark)
    l = int(min(L_TARGET, max(1, math.floor(budget * buckets))))  # noqa: E741
    return {
        "k": int(k),
        "l": l,
        "bucket_size": int(max(8, math.ceil(4 * n_out / buckets))),
        "bin_size": int(bin_size),
    }


@dataclass(frozen=True)
class SelectionParams:
    """Validated selection settings (immutable; derive variants with :meth:`replace`).

    ``active`` share of neurons per input in (0, 1] (``m = ceil(active * n_out)``);
    ``policy`` one of :data:`POLICIES`; ``family``/``k``/``l`` the LSH functions (a
    registered family name, codes per table key, tables; ``"auto"``: chosen per layer
    from its width by :func:`auto_params`, which also sets ``bucket_size`` and WTA/DWTA's
    ``bin_size`` unless given); ``transform`` a registered MIPS
    transform or None (hash the rows ``[w, b]`` as they are); ``seed`` >= 0;
    ``rehash``/``rebuild`` schedule specs (``"fixed:P"``, ``"exp:P0:G"``,
    ``"changed:T:C"``, ``"never"``); ``threshold`` hit count of the ``threshold`` policy;
    ``batch_factor`` set size of ``batch_union``/``batch_rerank`` in units of m (for
    ``batch_rerank`` at least the layer's work budget: :func:`batch_block_size`); ``rerank`` candidates of
    ``rerank`` in units of m; ``tables`` ``"sorted"`` or ``"index"`` (an LSHIndex with
    buckets of ``bucket_size``); ``tiebreak`` ``"random"`` or ``"norm"``;
    ``family_params`` extra keywords of the family (e.g. ``bin_size`` of WTA/DWTA).
    """

    active: float = 0.05
    policy: str = DEFAULT_POLICY
    family: str = "dwta"
    k: int | str = "auto"
    l: int | str = "auto"  # noqa: E741
    transform: str | None = None
    seed: int = 0
    rehash: str = DEFAULT_REHASH
    rebuild: str = "never"
    threshold: int = 2
    batch_factor: float = DEFAULT_BATCH_FACTOR
    rerank: float = 4.0
    tables: str = "sorted"
    bucket_size: int = 128
    tiebreak: str = "random"
    family_params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # normalise in place once (frozen: through object.__setattr__), so that every
        # holder sees the same canonical values and equal settings compare equal
        def put(name: str, value: Any) -> None:
            object.__setattr__(self, name, value)

        put("active", check_float(self.active, "active", low=0.0, high=1.0, open_low=True))
        if self.policy not in POLICIES:
            raise UnknownNameError("policy", str(self.policy), POLICIES)
        if not isinstance(self.family, str):
            raise ConfigError(f"family must be a string, got {self.family!r}")
        put("k", self.k if self.k == "auto" else check_int(self.k, "k", low=1, high=62))
        put("l", self.l if self.l == "auto" else check_int(self.l, "l", low=1))
        transform = self.transform
        if transform is not None and not isinstance(transform, str):
            raise ConfigError(f"transform must be a string or None, got {transform!r}")
        put("transform", None if transform in (None, "none") else transform)
        put("seed", check_int(self.seed, "seed", low=0))
        put("rehash", _schedule_spec(self.rehash, "rehash"))
        put("rebuild", _schedule_spec(self.rebuild, "rebuild"))
        put("threshold", check_int(self.threshold, "threshold", low=1))
        put("batch_factor", check_float(self.batch_factor, "batch_factor", low=1.0))
        put("rerank", check_float(self.rerank, "rerank", low=1.0))
        if self.tables not in TABLE_KINDS:
            raise ConfigError(f"tables must be 'sorted' or 'index'; got {self.tables!r}")
        put("bucket_size", check_int(self.bucket_size, "bucket_size", low=1))
        if self.tiebreak not in TIEBREAKS:
            raise UnknownNameError("tiebreak", str(self.tiebreak), TIEBREAKS)
        if not isinstance(self.family_params, dict):
            raise ConfigError(f"family_params must be a dict, got {self.family_params!r}")
        put("family_params", dict(self.family_params))  # a private copy: callers may mutate theirs
        if self.uses_hashing:
            self._check_names()

    def _check_names(self) -> None:
        """Unknown family/transform: UnknownNameError now, not at the first forward call."""
        # the catalog loads the plugin registry; imported here so that importing this
        # module (and `import lshcore`) stays free of it
        catalog.family_class(self.family)
        if self.transform is not None and self.transform not in catalog.transforms():
            raise UnknownNameError("transform", self.transform, [*catalog.transforms(), "none"])

    @property
    def uses_hashing(self) -> bool:
        """Whether the policy reads LSH tables (not ``exact``/``random``)."""
        return self.policy in LSH_POLICIES

    @classmethod
    def fields(cls) -> tuple[str, ...]:
        """The settings' names (``family_params`` excluded)."""
        return tuple(f.name for f in dataclasses.fields(cls) if f.name != "family_params")

    @classmethod
    def from_kwargs(cls, base: SelectionParams | None = None, **kwargs: Any) -> SelectionParams:
        """``base`` (or the defaults) with ``kwargs`` applied; keywords that are not
        settings go to ``family_params``. ``schedule`` is an alias of ``rehash``. A value
        of None keeps the default (so ``k=None`` means "the default k")."""
        if "schedule" in kwargs:
            alias = kwargs.pop("schedule")
            if alias is not None:
                if kwargs.get("rehash") is not None:
                    raise ConfigError("give either rehash= or its alias schedule=, not both")
                kwargs["rehash"] = alias
        names = set(cls.fields())
        # None keeps the default, except for transform, where None means "no transform"
        settings = {
            k: v for k, v in kwargs.items() if k in names and (v is not None or k == "transform")
        }
        extra = {k: v for k, v in kwargs.items() if k not in names and k != "family_params"}
        if kwargs.get("family_params"):
            extra = {**dict(kwargs["family_params"]), **extra}
        if base is None:
            return cls(**settings, family_params=extra)
        if not isinstance(base, SelectionParams):
            raise ConfigError(f"params must be a SelectionParams, got {type(base).__name__}")
        if not settings and not extra:
            return base
        return dataclasses.replace(base, **settings, family_params={**base.family_params, **extra})

    def replace(self, **changes: Any) -> SelectionParams:
        """A validated copy with ``changes`` applied (same rules as :meth:`from_kwargs`)."""
        return self.from_kwargs(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able flat dict (family parameters merged in); ``from_dict`` inverts it."""
        out = {name: getattr(self, name) for name in self.fields()}
        return {**out, **self.family_params}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SelectionParams:
        """The params written by :meth:`to_dict` (ConfigError on a non-dict)."""
        if not isinstance(data, dict):
            raise ConfigError(f"selection params must be a dict, got {type(data).__name__}")
        return cls.from_kwargs(**data)


def _schedule_spec(value: Any, name: str) -> str:
    """The canonical spec string of a schedule given as a string or a Schedule."""
    sched = value if isinstance(value, Schedule) else parse_schedule(value, name)
    return sched.spec()
