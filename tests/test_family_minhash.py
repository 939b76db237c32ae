"""Tests of the densified one-permutation MinHash family (``minhash``) and its kernels."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.stats import binom

import lshcore
from lshcore.errors import ConfigError, InputError
from lshcore.hashing.minhash import MinHash
from lshcore.kernels import numpy_ref

BACKENDS = [
    "numpy",
    pytest.param(
        "numba",
        marks=pytest.mark.skipif("numba" not in lshcore.backends(), reason="numba not installed"),
    ),
]


def _sets(rng: np.random.Generator, n: int, dim: int, density: float) -> np.ndarray:
    """Rows with ~density non-zeros of either sign, a zero row and a one-element row."""
    x = rng.standard_normal((n, dim)).astype(np.float32)
    x[rng.random((n, dim)) > density] = 0
    x[0] = 0
    x[1] = 0
    x[1, dim // 2] = 2.0
    return x


def _pair(rng: np.random.Generator, dim: int, inter: int, only: int) -> np.ndarray:
    """Two 0/1 rows sharing ``inter`` members, each with ``only`` of its own."""
    idx = rng.permutation(dim)
    x = np.zeros((2, dim), dtype=np.float32)
    x[0, idx[: inter + only]] = 1
    x[1, idx[:inter]] = 1
    x[1, idx[inter + only : inter + 2 * only]] = 1
    return x


def test_bins_are_minima_of_permuted_positions() -> None:
    dim, k, l = 12, 2, 3  # noqa: E741
    f = MinHash(dim, k, l, seed=4, backend="numpy")
    x = np.zeros((1, dim), dtype=np.float32)
    members = [1, 5, 6, 10]
    x[0, members] = [1, -2, 3, 0.5]
    low = numpy_ref.minhash_bins_dense(x, f.coord_rank, l)
    for g in range(k):
        for j in range(l):
            # position r lies in bin r * l // dim: bins of 4 consecutive positions here
            ranks = [int(f.coord_rank[g, c]) for c in members if f.coord_rank[g, c] // 4 == j]
            assert low[0, g, j] == (min(ranks) if ranks else -1)
    codes = f.bin_codes(x)
    full = low[0] >= 0
    np.testing.assert_array_equal(
        codes[0][full], f.position_code[np.nonzero(full)[0], low[0][full]]
    )
    # the key concatenates sub-hash j of table t in bits 4j..4j+3
    keys = f.hash(x)
    for t in range(l):
        assert keys[0, t] == sum(int(codes[0, g, t]) << (4 * g) for g in range(k))


@pytest.mark.parametrize("backend", BACKENDS)
def test_dense_sparse_and_backends_agree(backend: str) -> None:
    rng = np.random.default_rng(3)
    for dim, density, l in [(5, 0.5, 8), (300, 0.03, 16), (2000, 0.005, 10)]:  # noqa: E741
        x = _sets(rng, 25, dim, density)
        f = MinHash(dim, 3, l, seed=8, backend=backend, bits=5)
        ref = MinHash(dim, 3, l, seed=8, backend="numpy", bits=5)
        codes = f.hash(x)
        assert codes.dtype == np.int64 and codes.shape == (25, l)
        assert codes.min() >= 0 and codes.max() < f.num_buckets == 2**15
        csr = sp.csr_matrix(x)
        np.testing.assert_array_equal(f.hash(csr), codes)
        np.testing.assert_array_equal(ref.hash(x), codes)
        np.testing.assert_array_equal(ref.hash(csr), codes)
        kernel = f.backend.kernels.minhash_bins_csr
        np.testing.assert_array_equal(
            kernel(csr.indptr.astype(np.int64), csr.indices.astype(np.int64), f.coord_rank, l),
            numpy_ref.minhash_bins_dense(x, f.coord_rank, l),
        )


def test_set_semantics_and_stored_zeros() -> None:
    rng = np.random.default_rng(5)
    x = _sets(rng, 10, 80, 0.2)
    f = MinHash(80, 2, 6, seed=1, backend="numpy")
    np.testing.assert_array_equal(f.hash(np.abs(x) * 7 + (x != 0)), f.hash(x))  # only membership
    np.testing.assert_array_equal(f.hash(-x), f.hash(x))  # negative values are members
    coo = sp.coo_matrix(([0.0, 1.0, 0.0, 2.0], ([0, 0, 0, 0], [3, 9, 40, 9])), shape=(1, 80))
    single = np.zeros((1, 80), dtype=np.float32)
    single[0, 9] = 1
    np.testing.assert_array_equal(f.hash(coo.tocsr()), f.hash(single))


def test_empty_bins_borrow_and_zero_vector() -> None:
    dim, k, l = 400, 3, 20  # noqa: E741
    f = MinHash(dim, k, l, seed=2, backend="numpy")
    x = np.zeros((3, dim), dtype=np.float32)
    x[1, 17] = 1  # one member: every bin of a permutation borrows its single value
    x[2, [17, 300]] = 1
    codes = f.bin_codes(x)
    np.testing.assert_array_equal(codes[0], 0)  # documented: the empty set -> code 0
    for g in range(k):
        np.testing.assert_array_equal(codes[1, g], f.position_code[g, f.coord_rank[g, 17]])
        allowed = {int(f.position_code[g, f.coord_rank[g, c]]) for c in (17, 300)}
        assert set(codes[2, g].tolist()) <= allowed
    np.testing.assert_array_equal(f.bin_codes(x), codes)  # deterministic
    assert codes.min() >= 0 and codes.max() < 2**f.bits


def test_more_bins_than_coordinates() -> None:
    f = MinHash(3, 2, 10, seed=0)  # 7 of every 10 bins can never hold a member
    x = np.array([[1, 0, 0], [0, 1, 1], [1, 1, 1]], dtype=np.float32)
    codes = f.hash(x)
    assert codes.min() >= 0 and codes.max() < f.num_buckets
    np.testing.assert_array_equal(f.hash(sp.csr_matrix(x)), codes)


def test_deterministic_under_seed_and_config_round_trip() -> None:
    rng = np.random.default_rng(6)
    x = _sets(rng, 20, 150, 0.1)
    f = MinHash(150, 3, 7, seed=12, bits=6)
    assert f.config() == {"dim": 150, "k": 3, "l": 7, "seed": 12, "bits": 6}
    np.testing.assert_array_equal(MinHash(**f.config()).hash(x), f.hash(x))
    assert not np.array_equal(MinHash(150, 3, 7, seed=13, bits=6).hash(x), f.hash(x))
    np.testing.assert_array_equal(np.concatenate([f.hash(r[None]) for r in x]), f.hash(x))


@pytest.mark.parametrize(
    "dim,k,l,bits,inter,only",
    [
        (200, 3, 16, 2, 3, 2),  # small sets: most bins empty and borrowed
        (200, 2, 24, 1, 1, 3),  # more bins than members, low similarity
        (300, 4, 8, 3, 40, 10),  # every bin full, high similarity
        (100, 1, 4, 8, 0, 5),  # disjoint sets: only false b-bit collisions
    ],
)
def test_collision_rate_matches_collision_probability(
    dim: int,
    k: int,
    l: int,  # noqa: E741
    bits: int,
    inter: int,
    only: int,
) -> None:
    """One table, many seeds: the collision count stays inside a 99.9% binomial band."""
    rng = np.random.default_rng(dim + k)
    x = _pair(rng, dim, inter, only)
    jaccard = inter / (inter + 2 * only)
    trials = 1000
    hits = 0
    for seed in range(trials):
        h = MinHash(dim, k, l, seed=seed, bits=bits, backend="numpy").hash(x)
        hits += int(h[0, seed % l] == h[1, seed % l])  # one table per seed: independent trials
    p = float(MinHash(dim, k, l, bits=bits).collision_probability(jaccard))
    lo, hi = binom.ppf([0.0005, 0.9995], trials, p)
    assert lo <= hits <= hi, (hits / trials, p)


def test_collision_probability_values() -> None:
    f = MinHash(10, 2, 3, bits=1)
    np.testing.assert_allclose(f.collision_probability([0.0, 0.5, 1.0]), [0.25, 0.5625, 1.0])
    assert f.collision_tolerance == 0.0
    # similar sets collide more often than dissimilar ones
    assert f.collision_probability(0.8) > f.collision_probability(0.3)


def test_similar_sets_collide_more() -> None:
    rng = np.random.default_rng(9)
    dim = 5000
    f = MinHash(dim, 2, 300, seed=0, backend="numpy")
    near = _pair(rng, dim, 90, 5)  # J ~ 0.9
    far = _pair(rng, dim, 20, 75)  # J ~ 0.12
    hn, hf = f.hash(near), f.hash(far)
    assert np.mean(hn[0] == hn[1]) > np.mean(hf[0] == hf[1]) + 0.4


@pytest.mark.parametrize(
    "params,match",
    [
        ({"bits": 0}, "bits"),
        ({"bits": 63}, "bits"),
        ({"bits": 2.5}, "bits"),
        ({"bits": 21}, "k \\* bits"),
    ],
)
def test_param_validation(params: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        MinHash(10, 3, 2, **params)


def test_bad_inputs() -> None:
    f = MinHash(10, 2, 3)
    x = np.ones((2, 10), dtype=np.float32)
    x[0, 0] = np.inf
    with pytest.raises(InputError, match="NaN or infinite"):
        f.hash(x)
    with pytest.raises(InputError, match="shape"):
        f.hash(np.ones(10))
    with pytest.raises(InputError, match="empty"):
        f.hash(sp.csr_matrix((0, 10), dtype=np.float32))
    with pytest.raises(InputError, match="dtype"):
        f.hash(np.array([["a"] * 10]))


def test_registered_and_described() -> None:
    assert "minhash" in lshcore.families()
    f = lshcore.hash_family("minhash", 64, 3, 4, seed=1, bits=2, backend="numpy")
    assert isinstance(f, MinHash) and f.measure == "jaccard" and f.supports_sparse
    assert f.num_buckets == 2**6
    assert f.hash_cost(10) == 0 and f.hash_cost(10, nnz=99) == 0  # no multiplications
    assert f.hash_comparisons(10) == 10 * 3 * 64 and f.hash_comparisons(10, nnz=99) == 99 * 3
    with pytest.raises(ConfigError, match="minhash"):
        lshcore.hash_family("minhash", 64, 3, 4, bin_size=8)


def test_conformance_kit() -> None:
    from lshcore import testing

    testing.check_hash_family("minhash")
