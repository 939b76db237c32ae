"""Every registered hash family passes the conformance kit, and the kit can fail."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import lshcore
from lshcore.core.validation import as_batch
from lshcore.hashing.base import HashFamily
from lshcore.hashing.projection import SRP
from lshcore.hashing.wta import DWTA, WTA
from lshcore.testing import CHECK_NAMES, build_case, check_hash_family, run_check, yield_checks


@pytest.mark.parametrize("check", CHECK_NAMES)
@pytest.mark.parametrize("name", lshcore.families())
def test_family_passes_each_check_alone(name: str, check: str) -> None:
    fn = dict(yield_checks())[check]
    msg = run_check(fn, build_case(name))
    assert msg is None or msg.startswith("skip:"), f"[{check}] {msg}"


@pytest.mark.parametrize("name", lshcore.families())
def test_family_conforms(name: str) -> None:
    # the whole suite, as a plugin author runs it: the report lists every check
    report = check_hash_family(name)
    assert sorted(report.passed + [m[1 : m.index("]")] for m in report.skipped]) == sorted(
        CHECK_NAMES
    )
    assert not report.failed
    for must in ("codes", "determinism", "batch", "bad input"):
        assert must in report.passed, str(report)


@pytest.mark.parametrize("name", lshcore.families())
def test_family_conforms_at_odd_sizes(name: str) -> None:
    # a non-power-of-two dim, k > l, another seed: padding, packing and seeding paths
    check_hash_family(name, dim=7, k=3, l=2, seed=5, trials=1024)


@pytest.mark.parametrize("name", ["srp", "pstable", "minhash", "wta", "dwta"])
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


class FreeProjection(SRP):
    """Claims its projection costs nothing."""

    def hash_cost(self, n: int, nnz: int | None = None) -> int:
        return 0


class HalfCostProjection(SRP):
    """Counts half the projection's multiply-adds."""

    def hash_cost(self, n: int, nnz: int | None = None) -> int:
        return super().hash_cost(n, nnz) // 2


class FreeComparisons(DWTA):
    """Claims its comparisons cost nothing (the old DWTA report)."""

    def hash_comparisons(self, n: int, nnz: int | None = None) -> int:
        return 0


class DenseCountForSparse(WTA):
    """Charges a sparse batch as if it were dense."""

    def hash_comparisons(self, n: int, nnz: int | None = None) -> int:
        return super().hash_comparisons(n)


@pytest.mark.parametrize("cls", [FreeProjection, HalfCostProjection])
def test_kit_catches_a_wrong_multiplication_count(cls: type) -> None:
    text = _failures(cls)
    assert "[cost]" in text and "multiply-adds" in text and text.count("FAILED") == 1, text


@pytest.mark.parametrize("cls", [FreeComparisons, DenseCountForSparse])
def test_kit_catches_a_wrong_comparison_count(cls: type) -> None:
    text = _failures(cls, trials=256)
    assert "[cost]" in text and "compared" in text and text.count("FAILED") == 1, text


class ScaleSensitiveWTA(WTA):
    """Adds a bit that depends on the values' scale, not their order."""

    def hash(self, x: Any) -> Any:
        codes = super().hash(x)
        big = np.asarray(x.max(axis=1).toarray() if hasattr(x, "toarray") else np.max(x, axis=1))
        return (codes + (big.reshape(-1, 1) > 1.2)) % self.num_buckets


class RandomWTA(DWTA):
    """Rank-invariant but not locality-sensitive: each code hashes the row's whole
    ranking, so a pair that differs in any order collides only by chance."""

    def hash(self, x: Any) -> Any:
        x = self.check_input(x)
        dense = np.asarray(x.toarray() if hasattr(x, "toarray") else x)
        order = np.argsort(dense, axis=1, kind="stable").astype(np.int64)
        weights = (np.arange(self.dim, dtype=np.int64) * 2654435761 + 97) % 1000003
        key = (order * weights).sum(axis=1, keepdims=True)
        salt = np.arange(self.l, dtype=np.int64)[None, :] * 7919 + self.seed
        return (key * 31 + salt) % self.num_buckets


def test_kit_catches_a_rank_family_that_reads_values() -> None:
    text = _failures(ScaleSensitiveWTA, trials=256)
    assert "[collision]" in text and "rank-preserving" in text


def test_kit_catches_a_rank_family_blind_to_similarity() -> None:
    text = _failures(RandomWTA, trials=256)
    assert "[collision]" in text and "near pairs" in text
