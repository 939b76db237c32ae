"""Tests of the winner-take-all families (``wta``, ``dwta``) and their kernels."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

import lshcore
from lshcore.errors import ConfigError, InputError
from lshcore.hashing.wta import DWTA, PROBE_ATTEMPTS, WTA, bin_layout
from lshcore.kernels import numpy_ref

BACKENDS = [
    "numpy",
    pytest.param(
        "numba",
        marks=pytest.mark.skipif("numba" not in lshcore.backends(), reason="numba not installed"),
    ),
]


def _sparse_rows(
    rng: np.random.Generator, n: int, dim: int, density: float, signed: bool
) -> np.ndarray:
    """Rows with ~density non-zeros (ties included), a zero row and a fully dense row."""
    x = rng.integers(-4 if signed else 1, 6, size=(n, dim)).astype(np.float32)
    x[rng.random((n, dim)) > density] = 0
    x[0] = 0
    x[1] = rng.standard_normal(dim).astype(np.float32) + (0 if signed else 10)
    x[1][x[1] == 0] = 1
    return x


# --- an independent, loop-based reading of design.md §2 ---------------------------------
def _reference_bin_codes(f: DWTA, x: np.ndarray, densify: bool) -> np.ndarray:
    n_perms, dim = f.permutations.shape
    b = f.bin_size
    n_bins = f.k * f.l
    out = np.zeros((x.shape[0], n_bins), dtype=np.int64)
    for r, row in enumerate(x):
        best = [(-np.inf, -1)] * n_bins
        for p in range(n_perms):
            for i in range(dim):
                s = p * dim + int(f.permutations[p, i])
                j, q = s // b, s % b
                if j >= n_bins or (densify and row[i] == 0):
                    continue
                if row[i] > best[j][0] or (row[i] == best[j][0] and q < best[j][1]):
                    best[j] = (float(row[i]), q)
        codes = [q for _, q in best]
        if densify:
            full = [j for j in range(n_bins) if codes[j] >= 0]
            for j in range(n_bins):
                if codes[j] >= 0:
                    continue
                if not full:
                    codes[j] = 0
                    continue
                seq = [
                    (
                        (int(f.probe_a[0]) * (j * PROBE_ATTEMPTS + t) + int(f.probe_c[0]))
                        % (2**31 - 1)
                    )
                    % n_bins
                    for t in range(PROBE_ATTEMPTS)
                ] + [(j + o) % n_bins for o in range(1, n_bins)]
                codes[j] = next(best[t][1] for t in seq if best[t][1] >= 0)
        out[r] = codes
    return out


def test_bin_layout_hand_computed() -> None:
    # dim 3, bins of 2, 3 bins -> 6 slots from 2 permutations (design.md §2):
    # perm 0 sends coords (0, 1, 2) to slots (2, 0, 1); perm 1 to slots 3 + (1, 2, 0)
    perms = np.array([[2, 0, 1], [1, 2, 0]])
    np.testing.assert_array_equal(bin_layout(perms, 3, 2), [[1, 2], [0, 2], [0, 1]])
    with pytest.raises(ConfigError):
        bin_layout(perms, 4, 2)


def test_hand_computed_codes_and_key() -> None:
    f = DWTA(3, 3, 1, backend="numpy", bin_size=2)
    assert f.permutations.shape == (2, 3)  # ceil(3 * 1 * 2 / 3) permutations
    layout = bin_layout(f.permutations, 3, 2)
    np.testing.assert_array_equal(f.bin_coords, layout)
    x = np.array([[5.0, 1.0, 3.0]], dtype=np.float32)
    # each bin's code: the position of its largest entry
    expected = [int(np.argmax(x[0, layout[j]])) for j in range(3)]
    np.testing.assert_array_equal(f.bin_codes(x)[0], expected)
    # the key concatenates 1-bit codes, sub-hash j in bit j, with no overlap
    assert f.hash(x)[0, 0] == expected[0] + 2 * expected[1] + 4 * expected[2]
    assert f.num_buckets == 8


@pytest.mark.parametrize("cls", [DWTA, WTA])
@pytest.mark.parametrize("dim,k,l,bin_size", [(5, 2, 3, 4), (40, 3, 4, 8), (300, 2, 6, 16)])
def test_codes_follow_the_formula(cls: type[DWTA], dim: int, k: int, l: int, bin_size: int) -> None:  # noqa: E741
    rng = np.random.default_rng(dim)
    f = cls(dim, k, l, seed=3, backend="numpy", bin_size=bin_size)
    assert f.permutations.shape[0] == -(-k * l * bin_size // dim)
    x = _sparse_rows(rng, 6, dim, 0.1, signed=True)
    bins = _reference_bin_codes(f, x, cls.densify)
    np.testing.assert_array_equal(f.bin_codes(x), bins)
    # table t concatenates bins t*k .. t*k+k-1, log2(bin_size) bits each, no overlap
    bits = bin_size.bit_length() - 1
    keys = sum(bins[:, j::k] << (j * bits) for j in range(k))
    np.testing.assert_array_equal(f.hash(x), keys)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cls", [DWTA, WTA])
@pytest.mark.parametrize("signed", [False, True])
def test_dense_sparse_and_backends_agree(backend: str, cls: type[DWTA], signed: bool) -> None:
    rng = np.random.default_rng(7)
    for dim, density in [(7, 0.5), (200, 0.05), (1000, 0.01)]:
        x = _sparse_rows(rng, 30, dim, density, signed)
        f = cls(dim, 3, 5, seed=11, backend=backend, bin_size=8)
        ref = cls(dim, 3, 5, seed=11, backend="numpy", bin_size=8)
        codes = f.hash(x)
        assert codes.dtype == np.int64 and codes.shape == (30, 5)
        assert codes.min() >= 0 and codes.max() < f.num_buckets == 8**3
        csr = sp.csr_matrix(x)
        np.testing.assert_array_equal(f.hash(csr), codes)
        np.testing.assert_array_equal(ref.hash(x), codes)
        np.testing.assert_array_equal(ref.hash(csr), codes)
        bins = f.bin_codes(x)
        assert bins.min() >= 0 and bins.max() < 8


def test_stored_zeros_and_unsorted_csr_are_zeros() -> None:
    x = np.array([[0, 2, 0, -1, 3, 0, 0, 1]], dtype=np.float32)
    for cls in (DWTA, WTA):
        f = cls(8, 2, 3, seed=2, backend="numpy", bin_size=4)
        # explicit zeros and an out-of-order, duplicated entry list
        coo = sp.coo_matrix(
            ([0.0, 3.0, 2.0, -1.0, 0.0, 1.0, 0.0], ([0] * 7, [0, 4, 1, 3, 2, 7, 5])), shape=(1, 8)
        )
        np.testing.assert_array_equal(f.hash(coo.tocsr()), f.hash(x))


@pytest.mark.parametrize("cls", [DWTA, WTA])
def test_deterministic_under_seed_and_config_round_trip(cls: type[DWTA]) -> None:
    rng = np.random.default_rng(0)
    x = _sparse_rows(rng, 20, 100, 0.1, signed=False)
    f = cls(100, 4, 6, seed=5, bin_size=4)
    g = cls(**f.config())
    assert f.config() == {"dim": 100, "k": 4, "l": 6, "seed": 5, "bin_size": 4}
    np.testing.assert_array_equal(f.hash(x), g.hash(x))
    np.testing.assert_array_equal(f.hash(x), f.hash(x))
    other = cls(100, 4, 6, seed=6, bin_size=4)
    assert not np.array_equal(f.hash(x), other.hash(x))
    # a batch hashes the same as its rows one by one
    np.testing.assert_array_equal(np.concatenate([f.hash(r[None]) for r in x]), f.hash(x))


@pytest.mark.parametrize("cls", [DWTA, WTA])
def test_rank_only_and_zero_vector(cls: type[DWTA]) -> None:
    rng = np.random.default_rng(1)
    x = _sparse_rows(rng, 10, 60, 0.2, signed=False)
    f = cls(60, 3, 4, seed=0, backend="numpy")
    np.testing.assert_array_equal(f.hash(3.5 * x), f.hash(x))  # only the order matters
    zero = np.zeros((2, 60), dtype=np.float32)
    np.testing.assert_array_equal(f.bin_codes(zero), 0)  # documented: the zero vector -> 0
    np.testing.assert_array_equal(f.hash(sp.csr_matrix(zero)), 0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_bins_borrow_in_range_and_deterministically(backend: str) -> None:
    dim = 500
    f = DWTA(dim, 4, 10, seed=9, backend=backend)
    x = np.zeros((dim, dim), dtype=np.float32)
    np.fill_diagonal(x, 1.0)  # every single-coordinate vector: nearly every bin is empty
    bins = f.bin_codes(x)
    assert bins.min() >= 0 and bins.max() < f.bin_size
    np.testing.assert_array_equal(bins, f.bin_codes(sp.csr_matrix(x)))
    np.testing.assert_array_equal(bins, DWTA(dim, 4, 10, seed=9, backend="numpy").bin_codes(x))
    # a borrowed code is the code of one of the bins the coordinate occupies
    for i in range(0, dim, 37):
        own = {int(s % f.bin_size) for s in f.coord_slots[f.coord_ptr[i] : f.coord_ptr[i + 1]]}
        if own:
            assert set(bins[i].tolist()) <= own
        else:
            np.testing.assert_array_equal(bins[i], 0)  # coordinate in no bin: an all-empty row


@pytest.mark.parametrize("backend", BACKENDS)
def test_densify_kernel_against_reference(backend: str) -> None:
    rng = np.random.default_rng(4)
    codes = rng.integers(0, 8, size=(50, 3, 40))
    codes[rng.random(codes.shape) < 0.95] = -1
    codes[0] = -1  # every bin empty
    codes[1, :, 1:] = -1  # a single full bin
    codes[1, :, 0] = [3, 0, 7]
    a = rng.integers(1, 2**31 - 1, size=3)
    c = rng.integers(0, 2**31 - 1, size=3)
    kernel = lshcore.get_backend(backend).kernels.densify_bins
    for attempts in (0, 1, PROBE_ATTEMPTS):
        out = kernel(codes, a, c, attempts)
        np.testing.assert_array_equal(out, numpy_ref.densify_bins(codes, a, c, attempts))
        assert out.min() >= 0
        np.testing.assert_array_equal(out[codes >= 0], codes[codes >= 0])  # full bins kept
        np.testing.assert_array_equal(out[0], 0)
        np.testing.assert_array_equal(out[1], codes[1, :, :1].repeat(40, axis=1))


@pytest.mark.parametrize("cls", [DWTA, WTA])
def test_similar_inputs_collide_more(cls: type[DWTA]) -> None:
    rng = np.random.default_rng(2)
    dim = 2000
    f = cls(dim, 2, 200, seed=1, backend="numpy")
    x = np.zeros((1, dim), dtype=np.float32)
    support = rng.choice(dim, 200, replace=False)
    x[0, support] = rng.random(200) + 0.1
    near = x.copy()
    near[0, support] += 0.05 * rng.standard_normal(200).astype(np.float32)
    near = np.abs(near)
    far = np.zeros_like(x)
    far[0, rng.choice(dim, 200, replace=False)] = rng.random(200) + 0.1
    h = f.hash(np.concatenate([x, near, far]))
    near_rate = np.mean(h[0] == h[1])
    far_rate = np.mean(h[0] == h[2])
    assert near_rate > 0.5
    assert near_rate > far_rate + 0.3


@pytest.mark.parametrize("bad", [0, 1, 3, 6, 12, 2.0, True, "8"])
def test_bin_size_validation(bad: object) -> None:
    with pytest.raises(ConfigError, match="bin_size"):
        DWTA(10, 2, 2, bin_size=bad)  # type: ignore[arg-type]


def test_key_width_and_params_validation() -> None:
    with pytest.raises(ConfigError, match="bin_size"):
        WTA(10, 21, 2, bin_size=8)  # 63 bits
    assert WTA(10, 20, 2, bin_size=8).num_buckets == 8**20
    with pytest.raises(ConfigError, match="k"):
        DWTA(10, 0, 2)
    with pytest.raises(ConfigError, match="bin_size"):
        lshcore.hash_family("dwta", 10, 2, 2, bin_size=5)
    with pytest.raises(ConfigError, match="dwta"):
        lshcore.hash_family("dwta", 10, 2, 2, bits=4)  # minhash's parameter, not DWTA's


@pytest.mark.parametrize("cls", [DWTA, WTA])
def test_bad_inputs(cls: type[DWTA]) -> None:
    f = cls(10, 2, 3)
    x = np.ones((2, 10), dtype=np.float32)
    x[1, 3] = np.nan
    with pytest.raises(InputError, match="NaN"):
        f.hash(x)
    with pytest.raises(InputError, match="shape"):
        f.hash(np.ones((2, 9)))
    with pytest.raises(InputError, match="empty"):
        f.hash(np.ones((0, 10)))
    with pytest.raises(InputError, match="shape"):
        f.hash(sp.csr_matrix(np.ones((2, 11))))
    with pytest.raises(InputError, match="NaN"):
        f.hash(sp.csr_matrix(x))


def test_registered_and_described() -> None:
    assert {"wta", "dwta"} <= set(lshcore.families())
    f = lshcore.hash_family("dwta", 50, 3, 4, seed=2, bin_size=4, backend="numpy")
    assert isinstance(f, DWTA) and f.measure == "rank" and f.supports_sparse
    assert lshcore.hash_family("wta", 50, 3, 4).measure == "rank"
    assert f.hash_cost(100) == 0 and f.hash_cost(100, nnz=500) == 0  # no multiplications
    # comparisons: b - 1 per bin dense; one per occupied slot sparse (12 bins * 4 / 50)
    assert f.hash_comparisons(100) == 100 * 12 * 3
    assert f.hash_comparisons(100, nnz=500) == round(500 * 12 * 4 / 50)
    with pytest.raises(NotImplementedError):
        f.collision_probability(0.5)


@pytest.mark.parametrize("name", ["wta", "dwta"])
def test_conformance_kit(name: str) -> None:
    from lshcore import testing

    testing.check_hash_family(name)


@pytest.mark.parametrize("backend", BACKENDS)
def test_concurrent_calls_agree(backend: str) -> None:
    from concurrent.futures import ThreadPoolExecutor

    rng = np.random.default_rng(8)
    batches = [sp.csr_matrix(_sparse_rows(rng, 40, 3000, 0.02, signed=False)) for _ in range(4)]
    f = DWTA(3000, 4, 16, seed=3, backend=backend)
    expected = [f.hash(b) for b in batches]
    with ThreadPoolExecutor(max_workers=4) as pool:
        got = list(pool.map(f.hash, batches))
    for e, g in zip(expected, got, strict=True):
        np.testing.assert_array_equal(e, g)
