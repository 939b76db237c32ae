"""Tests of lshcore.training.params.SelectionParams (the selection settings object)."""

from __future__ import annotations

import dataclasses
import json

import pytest

from lshcore.errors import ConfigError, UnknownNameError
from lshcore.training.params import POLICIES, SelectionParams
from lshcore.training.selector import ActiveSelector


def test_defaults_round_trip_through_json() -> None:
    p = SelectionParams(family="dwta", k=1, l=50, transform="none", family_params={"bin_size": 16})
    assert p.transform is None  # "none" normalised
    again = SelectionParams.from_dict(json.loads(json.dumps(p.to_dict())))
    assert again == p and again.family_params == {"bin_size": 16}


def test_frozen_and_replace_validates() -> None:
    p = SelectionParams()
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.k = 3  # type: ignore[misc]
    assert p.replace(k=3).k == 3 and p.k == "auto"
    with pytest.raises(ConfigError, match="k"):
        p.replace(k=0)


@pytest.mark.parametrize(
    "kwargs, error, word",
    [
        ({"policy": "bogus"}, UnknownNameError, "policy"),
        ({"family": "nope"}, UnknownNameError, "nope"),
        ({"transform": "nope"}, UnknownNameError, "transform"),
        ({"tiebreak": "largest"}, UnknownNameError, "tiebreak"),
        ({"tables": "btree"}, ConfigError, "tables"),
        ({"active": 0.0}, ConfigError, "active"),
        ({"rehash": "sometimes"}, ConfigError, "rehash"),
        ({"rerank": 0.5}, ConfigError, "rerank"),
        ({"rehash": "fixed:1", "schedule": "fixed:2"}, ConfigError, "schedule"),
    ],
)
def test_bad_settings_name_the_argument(kwargs: dict, error: type, word: str) -> None:
    with pytest.raises(error, match=word):
        SelectionParams.from_kwargs(**kwargs)


def test_unknown_policy_lists_every_policy() -> None:
    with pytest.raises(UnknownNameError) as info:
        SelectionParams(policy="bogus")
    assert all(name in str(info.value) for name in POLICIES)


def test_selector_takes_params_and_keywords_alike() -> None:
    p = SelectionParams(active=0.1, policy="union", k=4, l=8, seed=3)
    a = ActiveSelector(24, 200, p)
    b = ActiveSelector(24, 200, active=0.1, policy="union", k=4, l=8, seed=3)
    assert a.params == b.params == p
    assert ActiveSelector(24, 200, p, k=5).params == p.replace(k=5)
    with pytest.raises(ConfigError, match="SelectionParams"):
        ActiveSelector(24, 200, 0.1)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("n_out", "m", "factor", "expected"),
    [
        (1000, 50, 4.0, 200),  # 5% of 1,000: 4m equals the 20% budget
        (1000, 50, 8.0, 400),  # a larger factor is kept
        (64000, 256, 4.0, 1600),  # the budget (2.5%) exceeds 4m
        (100, 40, 4.0, 100),  # never more than the layer
    ],
)
def test_batch_block_size_is_the_factor_with_the_budget_as_floor(
    n_out: int, m: int, factor: float, expected: int
) -> None:
    from lshcore.training.params import batch_block_size

    assert batch_block_size(n_out, m, factor) == expected
    assert batch_block_size(n_out, m, factor, floor=False) == min(n_out, int(factor * m))


def test_wide_layer_shares_a_block_of_the_budget_not_of_4m() -> None:
    """20,000 neurons, 20 active: 4m is 80, batch_rerank's floor (the budget) 895 (4.47%)."""
    import numpy as np

    rng = np.random.default_rng(0)
    weight = rng.standard_normal((20000, 8)).astype(np.float32)
    bias = np.zeros(20000, np.float32)
    x = rng.standard_normal((16, 8)).astype(np.float32)
    # batch_union's block is every row's active set: no floor (an --active sweep stays true)
    for policy, width in (("batch_rerank", 895), ("batch_union", 80)):
        sel = ActiveSelector(8, 20000, active=20 / 20000, policy=policy, seed=0)
        ids = sel.fit(weight, bias).select(x).ids
        assert ids.shape == (16, width)
        assert (ids == ids[0]).all() and np.unique(ids[0]).size == width
