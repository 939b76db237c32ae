"""A property-testing kit for hash families (built-in or from a plugin).

Two parts:

* :mod:`.strategies`: exact pair constructions (``pairs_at_angle``, ``pairs_at_jaccard``,
  ``pairs_at_distance``) and hypothesis strategies that draw their arrays with
  ``hypothesis.extra.numpy`` (``dense_vectors``, ``sparse_vectors``, ``angle_pairs``,
  ``jaccard_pairs``, ``distance_pairs``);
* :mod:`.checks`: the conformance suite as module-level named checks
  (:func:`yield_checks`), and :func:`check_hash_family`, which runs them all on a family
  and raises one AssertionError listing every failed check.

Typical use in a plugin's own tests::

    from lshcore.testing import check_hash_family

    def test_my_family_conforms():
        check_hash_family(MyFamily)          # or the registered name, "my_family"

This package imports hypothesis and scipy; ``import lshcore`` does not import it.
"""

from lshcore.testing import strategies
from lshcore.testing.checks import (
    CHECK_NAMES,
    FamilyCase,
    KitReport,
    build_case,
    check_hash_family,
    run_check,
    yield_checks,
)
from lshcore.testing.strategies import *  # noqa: F403

__all__ = [
    "check_hash_family",
    "KitReport",
    "FamilyCase",
    "build_case",
    "yield_checks",
    "run_check",
    "CHECK_NAMES",
]
__all__ += strategies.__all__
