"""When a hashed layer refreshes its LSH tables: rehash (same functions) and rebuild (new ones).

Rehash and rebuild each have their own schedule, counted in optimizer steps:

- ``fixed:P`` - every P steps (SLIDE);
- ``exp:P0:G`` - first after P0 steps, then each interval G times the previous one (the
  paper's exponentially decaying update frequency);
- ``changed:T:C`` - every C steps, measure the share of changed codes on a sample of
  the rows updated since the last refresh; refresh when it is at least T (Mongoose);
- ``never``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lshcore.core.validation import check_float
from lshcore.errors import ConfigError

__all__ = ["Schedule", "parse_schedule"]

KINDS = ("fixed", "exp", "changed", "never")


@dataclass
class Schedule:
    """A refresh schedule; ``due(step)`` says whether to refresh after optimizer step ``step``.

    ``kind`` is one of ``fixed``, ``exp``, ``changed``, ``never``; ``period`` is the
    (initial) interval in steps, ``growth`` the interval factor of ``exp``, ``threshold``
    the changed-code share of ``changed``. ``next_step`` is mutable state (saved with a
    model so that resumed training refreshes at the same steps).
    """

    kind: str = "fixed"
    period: float = 50.0
    growth: float = 1.0
    threshold: float = 0.1
    next_step: float = 0.0
    interval: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(
                f"schedule kind must be one of {', '.join(map(repr, KINDS))}; got {self.kind!r}"
            )
        check_float(self.period, "schedule period", low=1.0)
        check_float(self.growth, "schedule growth", low=1.0)
        check_float(self.threshold, "schedule threshold", low=0.0, high=1.0)
        if self.interval <= 0:
            self.interval = float(self.period)
        if self.next_step <= 0:
            self.next_step = float(self.period)

    def due(self, step: int) -> bool:
        """True when a refresh (``fixed``/``exp``) or a change check (``changed``) is due."""
        return self.kind != "never" and step >= self.next_step

    def fired(self, step: int) -> None:
        """Record that the refresh (or check) due at ``step`` happened; plans the next one."""
        if self.kind == "exp":
            self.interval *= self.growth
        self.next_step = step + self.interval

    def spec(self) -> str:
        """The string form accepted by :func:`parse_schedule`."""
        if self.kind == "never":
            return "never"
        if self.kind == "fixed":
            return f"fixed:{self.period:g}"
        if self.kind == "exp":
            return f"exp:{self.period:g}:{self.growth:g}"
        return f"changed:{self.threshold:g}:{self.period:g}"

    def state(self) -> dict[str, Any]:
        """JSON-able mutable state."""
        return {"spec": self.spec(), "next_step": self.next_step, "interval": self.interval}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Schedule:
        sched = parse_schedule(state["spec"])
        sched.next_step = float(state["next_step"])
        sched.interval = float(state["interval"])
        return sched


def parse_schedule(
    spec: str | Schedule | None, name: str = "schedule", default: str = "fixed:50"
) -> Schedule:
    """A :class:`Schedule` from ``"fixed:P"``, ``"exp:P0:G"``, ``"changed:T:C"`` or ``"never"``."""
    if spec is None:
        spec = default
    if isinstance(spec, Schedule):
        return Schedule(spec.kind, spec.period, spec.growth, spec.threshold)
    if not isinstance(spec, str):
        raise ConfigError(f"{name} must be a string like 'fixed:50', got {spec!r}")
    parts = spec.strip().split(":")
    kind = parts[0]
    try:
        nums = [float(p) for p in parts[1:]]
    except ValueError:
        raise ConfigError(
            f"{name}: cannot parse {spec!r} (numbers expected after the kind)"
        ) from None
    try:
        if kind == "never" and not nums:
            return Schedule("never")
        if kind == "fixed" and len(nums) == 1:
            return Schedule("fixed", period=nums[0])
        if kind == "exp" and len(nums) in (1, 2):
            return Schedule("exp", period=nums[0], growth=nums[1] if len(nums) == 2 else 1.5)
        if kind == "changed" and len(nums) in (1, 2):
            return Schedule("changed", threshold=nums[0], period=nums[1] if len(nums) == 2 else 10)
    except ConfigError as exc:
        raise ConfigError(f"{name}: {exc}") from None
    raise ConfigError(
        f"{name} must be 'fixed:P', 'exp:P0:G', 'changed:T:C' or 'never'; got {spec!r}"
    )
