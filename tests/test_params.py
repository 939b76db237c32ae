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
