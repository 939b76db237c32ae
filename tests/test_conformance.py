"""Every registered hash family passes the conformance kit, and the kit can fail."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import lshcore
from lshcore.core.validation import as_batch
from lshcore.hashing.base import HashFamily
from lshcore.hashing.projection import SRP
from lshcore.testing import check_hash_family


@pytest.mark.parametrize("name", lshcore.families())
def test_family_conforms(name: str) -> None:
    report = check_hash_family(name)
    assert not report.failed
    for must in ("codes", "determinism", "batch", "bad input"):
        assert must in report.passed, str(report)


@pytest.mark.parametrize("name", lshcore.families())
def test_family_conforms_at_odd_sizes(name: str) -> None:
    # a non-power-of-two dim, k > l, another seed: padding, packing and seeding paths
    check_hash_family(name, dim=7, k=3, l=2, seed=5, trials=1024)


@pytest.mark.parametrize("name", ["srp", "pstable", "minhash"])
def test_collision_check_runs_for_exact_families(name: str) -> None:
    report = check_hash_family(name, k=3)
    assert "collision" in report.passed, str(report)


def test_families_with_params() -> None:
    check_hash_family("pstable", r=1.5, bits=12, k=1)
    check_hash_family("crosspolytope", dim=20, k=3, last_cp_dim=4)
    check_hash_family("sparse_srp", dim=40, ratio=2)


# -- deliberately broken families: the kit must name the problem -----------------------


class OutOfRange(SRP):
    """Codes shifted past num_buckets."""

    def hash(self, x: Any) -> Any:
        return super().hash(x) + self.num_buckets


class NonDeterministic(HashFamily):
    """Draws fresh random projections on every call."""

    supports_sparse = False

    def hash(self, x: Any) -> np.ndarray:
        x = as_batch(x, self.dim, "x")
        proj = np.random.default_rng().standard_normal((self.dim, self.k * self.l))
        bits = (x @ proj >= 0).reshape(x.shape[0], self.l, self.k)
        return (bits.astype(np.int64) << np.arange(self.k)).sum(axis=2)


class WrongCollision(SRP):
    """Claims the per-bit probability of an angle twice as large (1 - theta / (2 pi))."""

    def collision_probability(self, s: Any) -> np.ndarray:
        s = np.clip(np.asarray(s, dtype=np.float64), -1.0, 1.0)
        return (1.0 - np.arccos(s) / (2 * np.pi)) ** self.k


class OffByOneK(SRP):
    """Forgets one of the k sub-hashes in the collision probability."""

    def collision_probability(self, s: Any) -> np.ndarray:
        s = np.clip(np.asarray(s, dtype=np.float64), -1.0, 1.0)
        return (1.0 - np.arccos(s) / np.pi) ** (self.k - 1)


class AcceptsNaN(SRP):
    """Skips input validation (NaN hashes silently)."""

    def hash(self, x: Any) -> Any:
        x = np.nan_to_num(np.asarray(x, dtype=np.float32), posinf=0.0, neginf=0.0).reshape(
            -1, self.dim
        )
        return (
            (x @ self.projections >= 0).reshape(-1, self.l, self.k).astype(np.int64)
            << np.arange(self.k)
        ).sum(axis=2)


class BatchDependent(SRP):
    """Centres the batch before hashing: a row's code depends on the other rows."""

    def hash(self, x: Any) -> Any:
        x = as_batch(x, self.dim, "x")
        return super().hash(x - x.mean(axis=0) + 1e-3)


class BadProbes(SRP):
    """Multiprobe whose first column is not the hash."""

    def probes(self, x: Any, n_probes: int) -> Any:
        return super().probes(x, n_probes)[:, :, ::-1].copy()


def _failures(cls: type, **kwargs: Any) -> str:
    with pytest.raises(AssertionError) as info:
        check_hash_family(cls, **kwargs)
    return str(info.value)


def test_kit_catches_codes_out_of_range() -> None:
    text = _failures(OutOfRange)
    assert "[codes]" in text and "out of range" in text


def test_kit_catches_nondeterminism() -> None:
    text = _failures(NonDeterministic)
    assert "[determinism]" in text and "not deterministic" in text


@pytest.mark.parametrize("cls", [WrongCollision, OffByOneK])
def test_kit_catches_wrong_collision_probability(cls: type) -> None:
    text = _failures(cls)
    assert "[collision]" in text
    # only the collision check fails: the rest of the family is fine
    assert text.count("FAILED") == 1, text


def test_kit_catches_missing_validation() -> None:
    text = _failures(AcceptsNaN)
    assert "[bad input]" in text and "NaN value was accepted" in text


def test_kit_catches_batch_dependence() -> None:
    text = _failures(BatchDependent)
    assert "[batch]" in text


def test_kit_reports_a_family_that_cannot_be_built() -> None:
    text = _failures(SRP, bogus=1)
    assert "[construct]" in text


def test_kit_catches_probes_that_do_not_start_with_the_hash() -> None:
    text = _failures(BadProbes)
    assert "[probes]" in text and "differs from hash(x)" in text
