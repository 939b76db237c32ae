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
from dataclasses import dataclass, field
from typing import Any

from lshcore.core.validation import check_float, check_int
from lshcore.errors import ConfigError, UnknownNameError
from lshcore.training.schedule import Schedule, parse_schedule

__all__ = ["SelectionParams", "POLICIES", "LSH_POLICIES", "TIEBREAKS", "TABLE_KINDS"]

POLICIES = ("topk", "union", "threshold", "batch_union", "rerank", "exact", "random")
LSH_POLICIES = ("topk", "union", "threshold", "batch_union", "rerank")
TIEBREAKS = ("random", "norm")
TABLE_KINDS = ("sorted", "index")
#: default rehash schedule, chosen by benchmarks/bench_mnist_schedules.py (docs/training.md)
DEFAULT_REHASH = "changed:0.1:10"


@dataclass(frozen=True)
class SelectionParams:
    """Validated selection settings (immutable; derive variants with :meth:`replace`).

    ``active`` share of neurons per input in (0, 1] (``m = ceil(active * n_out)``);
    ``policy`` one of :data:`POLICIES`; ``family``/``k``/``l`` the LSH functions (a
    registered family name, bits per table, tables); ``transform`` a registered MIPS
    transform or None (hash the rows ``[w, b]`` as they are); ``seed`` >= 0;
    ``rehash``/``rebuild`` schedule specs (``"fixed:P"``, ``"exp:P0:G"``,
    ``"changed:T:C"``, ``"never"``); ``threshold`` hit count of the ``threshold`` policy;
    ``batch_factor`` set size of ``batch_union`` in units of m; ``rerank`` candidates of
    ``rerank`` in units of m; ``tables`` ``"sorted"`` or ``"index"`` (an LSHIndex with
    buckets of ``bucket_size``); ``tiebreak`` ``"random"`` or ``"norm"``;
    ``family_params`` extra keywords of the family (e.g. ``bin_size`` of WTA/DWTA).
    """

    active: float = 0.05
    policy: str = "topk"
    family: str = "srp"
    k: int = 6
    l: int = 20  # noqa: E741
    transform: str | None = "simple_lsh"
    seed: int = 0
    rehash: str = "fixed:50"
    rebuild: str = "never"
    threshold: int = 2
    batch_factor: float = 4.0
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
        put("k", check_int(self.k, "k", low=1, high=62))
        put("l", check_int(self.l, "l", low=1))
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
        from lshcore.registry import catalog

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
