"""lshcore.testing: the exact pair constructions, the strategies and the kit's options."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

import lshcore
from lshcore.core.validation import as_batch
from lshcore.errors import ConfigError
from lshcore.hashing.base import HashFamily
from lshcore.hashing.projection import SRP
from lshcore.testing import (
    KitReport,
    angle_pairs,
    check_hash_family,
    dense_vectors,
    distance_pairs,
    jaccard_pairs,
    pairs_at_angle,
    pairs_at_distance,
    pairs_at_jaccard,
    sparse_vectors,
)

DOCS = Path(__file__).resolve().parents[1] / "docs" / "families.md"


# -- strategies --------------------------------------------------------------------------


@settings(max_examples=30, deadline=None)
@given(pair=angle_pairs(7, n=3))
def test_angle_pairs_are_exact(pair: tuple) -> None:
    x, y, angle = pair
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(y, axis=1), 1.0, atol=1e-12)
    cos = np.clip(np.einsum("ij,ij->i", x, y), -1, 1)
    np.testing.assert_allclose(cos, math.cos(angle), atol=1e-12)


@settings(max_examples=30, deadline=None)
@given(pair=jaccard_pairs(20, n=4))
def test_jaccard_pairs_are_exact(pair: tuple) -> None:
    x, y, similarity = pair
    assert set(np.unique(np.concatenate([x, y]))) <= {0.0, 1.0}
    inter = np.sum((x > 0) & (y > 0), axis=1)
    union = np.sum((x > 0) | (y > 0), axis=1)
    np.testing.assert_allclose(inter / union, similarity)
    assert len(set(union.tolist())) == 1  # same union size for every pair


@settings(max_examples=20, deadline=None)
@given(pair=jaccard_pairs(16, similarity=0.5, union_size=8, sparse=True))
def test_jaccard_pairs_sparse(pair: tuple) -> None:
    x, y, similarity = pair
    assert sp.issparse(x) and sp.issparse(y) and similarity == 0.5
    assert x.nnz + y.nnz == 8 + 4  # |A| + |B| = |union| + |intersection|


@settings(max_examples=30, deadline=None)
@given(pair=distance_pairs(5, n=2))
def test_distance_pairs_are_exact(pair: tuple) -> None:
    x, y, distance = pair
    np.testing.assert_allclose(np.linalg.norm(x - y, axis=1), distance, atol=1e-9)


@settings(max_examples=30, deadline=None)
@given(x=sparse_vectors(12, min_nnz=2, max_nnz=5, nonnegative=True))
def test_sparse_vectors(x: sp.csr_matrix) -> None:
    assert sp.isspmatrix_csr(x) and x.shape[1] == 12 and x.dtype == np.float32
    per_row = np.diff(x.indptr)
    assert np.all((per_row >= 2) & (per_row <= 5))
    assert np.all(x.data > 0)
    x.check_format(full_check=True)


@settings(max_examples=20, deadline=None)
@given(x=sparse_vectors(6, n=3, binary=True), y=dense_vectors(6, n=2, nonnegative=True))
def test_binary_and_dense_vectors(x: sp.csr_matrix, y: np.ndarray) -> None:
    assert np.all(x.data == 1.0) and x.shape == (3, 6)
    assert y.shape == (2, 6) and y.dtype == np.float32 and np.all(y >= 0)
    assert np.all(np.isfinite(y))


@settings(max_examples=15, deadline=None)
@given(x=sparse_vectors(40, max_nnz=6), seed=st.integers(0, 100))
def test_srp_dense_and_sparse_agree_on_generated_inputs(x: sp.csr_matrix, seed: int) -> None:
    fam = lshcore.hash_family("sparse_srp", 40, 3, 4, seed=seed)
    np.testing.assert_array_equal(fam.hash(x), fam.hash(x.toarray()))


def test_pair_constructions_reject_bad_arguments() -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(ConfigError, match="dim"):
        pairs_at_angle(rng, 2, 1, 0.5)
    with pytest.raises(ConfigError, match="angle"):
        pairs_at_angle(rng, 2, 4, 4.0)
    with pytest.raises(ConfigError, match="union_size"):
        pairs_at_jaccard(rng, 2, 4, 0.5, union_size=5)
    with pytest.raises(ConfigError, match="similarity"):
        pairs_at_jaccard(rng, 2, 4, 1.5)
    with pytest.raises(ConfigError, match="distance"):
        pairs_at_distance(rng, 2, 4, -1.0)


# -- the kit's options ---------------------------------------------------------------------


class MinimalPlugin(HashFamily):
    """What a plugin author writes: only ``hash`` (sign of the coordinate sums of k*l blocks)."""

    measure = "parity"

    def __init__(self, dim: int, k: int, l: int, seed: int = 0):  # noqa: E741
        super().__init__(dim, k, l, seed=seed)
        rng = np.random.default_rng(seed)
        self.perm = rng.permutation(dim)
        self.signs = rng.choice([-1.0, 1.0], size=(dim, k * l))

    def hash(self, x: Any) -> np.ndarray:
        x = as_batch(x, self.dim, "x")
        bits = (x[:, self.perm] @ self.signs >= 0).reshape(x.shape[0], self.l, self.k)
        return (bits.astype(np.int64) << np.arange(self.k)).sum(axis=2)


def test_a_minimal_plugin_passes_and_gets_a_report() -> None:
    report = check_hash_family(MinimalPlugin, dim=10, k=3, l=5)
    assert isinstance(report, KitReport)
    assert {"codes", "determinism", "seed", "config", "batch", "bad input"} <= set(report.passed)
    skipped = "\n".join(report.skipped)
    assert "backend" in skipped and "parity" in skipped and "supports_sparse" in skipped
    assert "0 failed" in str(report)


def test_inputs_override_array_and_callable() -> None:
    seen = []

    def make(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
        seen.append((n, dim))
        return np.abs(rng.standard_normal((n, dim)))

    check_hash_family("srp", dim=9, inputs=make, n_inputs=5)
    assert seen == [(5, 9)]
    check_hash_family("srp", dim=3, inputs=np.eye(3))


def test_explicit_backends_are_compared() -> None:
    report = check_hash_family("srp", backends=["numpy"])
    assert "backends" in report.passed


class BackendDependent(SRP):
    """Hashes differently on the numpy backend (a backend bug)."""

    def hash(self, x: Any) -> Any:
        codes = super().hash(x)
        return (codes + 1) % self.num_buckets if self.backend.name == "numpy" else codes


def test_kit_catches_backend_disagreement() -> None:
    if len(lshcore.backends()) < 2:
        pytest.skip("needs two usable backends")
    with pytest.raises(AssertionError, match=r"\[backends\].*differs"):
        check_hash_family(BackendDependent)


class SparseDisagrees(SRP):
    """Drops the last column of CSR input."""

    def hash(self, x: Any) -> Any:
        if sp.issparse(x):
            x = x.tolil()
            x[:, -1] = 0
            x = x.tocsr()
        return super().hash(x)


def test_kit_catches_dense_sparse_disagreement() -> None:
    with pytest.raises(AssertionError, match=r"\[sparse\] CSR input hashes differently"):
        check_hash_family(SparseDisagrees)


class SameForEverySeed(SRP):
    """Ignores its seed."""

    def __init__(self, dim: int, k: int, l: int, seed: int = 0, **kw: Any):  # noqa: E741
        super().__init__(dim, k, l, 0, **kw)
        self.seed = seed


def test_kit_catches_an_ignored_seed() -> None:
    with pytest.raises(AssertionError, match=r"\[seed\]"):
        check_hash_family(SameForEverySeed)


def test_kit_checks_the_tolerance_widening() -> None:
    class Loose(SRP):
        collision_tolerance = 0.5

        def collision_probability(self, s: Any) -> np.ndarray:
            return np.clip(super().collision_probability(s) + 0.2, 0, 1)

    check_hash_family(Loose)  # within the declared slack
    Loose.collision_tolerance = 0.0
    with pytest.raises(AssertionError, match=r"\[collision\]"):
        check_hash_family(Loose)


# -- the snippet in docs/families.md works as pasted --------------------------------------


def test_docs_snippet_runs(tmp_path: Path) -> None:
    text = DOCS.read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    snippet = next(b for b in blocks if "check_hash_family" in b)
    namespace: dict[str, Any] = {"__name__": "docs_snippet"}
    exec(compile(snippet, str(DOCS), "exec"), namespace)
    tests = [fn for name, fn in namespace.items() if name.startswith("test_") and callable(fn)]
    assert tests
    for fn in tests:
        fn()


# -- the strategies draw arrays, so hypothesis shrinks failing examples -------------------


def test_angle_pairs_shrink_their_arrays() -> None:
    from hypothesis import find

    # a seed-drawn construction cannot shrink x toward simple vectors; drawn arrays do
    x, _, _ = find(angle_pairs(4, angle=1.0), lambda p: p[0][0, 0] > 0.9)
    assert np.count_nonzero(np.round(x[0], 6)) <= 2
