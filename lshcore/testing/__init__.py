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

from lshcore.testing.checks import (
    CHECK_NAMES,
    FamilyCase,
    KitReport,
    build_case,
    check_hash_family,
    run_check,
    yield_checks,
)
from lshcore.testing.strategies import (
    angle_pairs,
    dense_vectors,
    distance_pairs,
    jaccard_pairs,
    pair_at_angle_from,
    pair_at_distance_from,
    pair_at_jaccard_from,
    pairs_at_angle,
    pairs_at_distance,
    pairs_at_jaccard,
    sparse_vectors,
)

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
    "check_hash_family",
    "KitReport",
    "FamilyCase",
    "build_case",
    "yield_checks",
    "run_check",
    "CHECK_NAMES",
]
