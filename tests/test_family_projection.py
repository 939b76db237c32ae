"""The projection families: srp, sparse_srp, crosspolytope, pstable."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.integrate import quad
from scipy.linalg import hadamard

import lshcore
from lshcore.errors import ConfigError, InputError
from lshcore.hashing.projection import (
    SRP,
    CrossPolytope,
    PStable,
    SparseSRP,
    _fwht,
    _pstable_p,
)
from lshcore.testing import pairs_at_angle, pairs_at_distance

RNG = np.random.default_rng(12345)


def _sparse_batch(n: int, dim: int, density: float = 0.2) -> sp.csr_matrix:
    x = RNG.standard_normal((n, dim)).astype(np.float32)
    x[RNG.random((n, dim)) > density] = 0
    return sp.csr_matrix(x)


# -- srp ------------------------------------------------------------------------------


def test_srp_collision_probability_formula() -> None:
    fam = SRP(16, 3, 2, backend="numpy")
    s = np.cos(np.array([0.0, math.pi / 4, math.pi / 2, math.pi]))
    np.testing.assert_allclose(fam.collision_probability(s), [1.0, 0.75**3, 0.5**3, 0.0])


def test_srp_probes_start_with_the_hash_and_are_distinct() -> None:
    fam = SRP(12, 4, 3, backend="numpy")
    x = RNG.standard_normal((5, 12))
    probes = fam.probes(x, 6)
    assert probes.shape == (5, 3, 6)
    np.testing.assert_array_equal(probes[:, :, 0], fam.hash(x))
    assert all(len(set(row)) == 6 for row in probes.reshape(-1, 6).tolist())


def _probes_by_brute_force(proj: np.ndarray, n_probes: int) -> np.ndarray:
    """Reference multiprobe: all 1- and 2-bit flip sets ranked by summed |projection|."""
    n, n_tables, k = proj.shape
    sets = [(i,) for i in range(k)] + [(i, j) for i in range(k) for j in range(i + 1, k)]
    out = np.empty((n, n_tables, n_probes), dtype=np.int64)
    for p in range(n):
        for t in range(n_tables):
            bits = proj[p, t] >= 0
            code = int(sum(1 << b for b in range(k) if bits[b]))
            ranked = sorted(sets, key=lambda s: sum(abs(float(proj[p, t, b])) for b in s))
            row = [code] + [code ^ sum(1 << b for b in s) for s in ranked]
            row += [code] * (n_probes - len(row))
            out[p, t] = row[:n_probes]
    return out


@pytest.mark.parametrize(("k", "n_probes"), [(6, 2), (6, 5), (6, 30), (3, 9), (12, 4), (16, 8)])
def test_srp_probes_follow_the_least_certain_bits(k: int, n_probes: int) -> None:
    """probes() ranks flip sets by the summed margins of the flipped bits (checked against
    an exhaustive enumeration); beyond the k(k+1)/2 sets the exact code repeats."""
    fam = SRP(10, k, 4, seed=3, backend="numpy")
    x = RNG.standard_normal((7, 10)).astype(np.float32)
    proj = (x @ fam.projections).reshape(7, 4, k)
    want = _probes_by_brute_force(proj, n_probes)
    for backend in ("numpy", "numba"):
        got = SRP(10, k, 4, seed=3, backend=backend).probes(x, n_probes)
        assert got.shape == (7, 4, n_probes) and got.dtype == np.int64
        np.testing.assert_array_equal(got, want)
    with pytest.raises(ConfigError, match="n_probes"):
        fam.probes(x, 0)


@pytest.mark.parametrize("k", [1, 5, 8, 24, 25, 40, 62])
def test_pack_bits_any_k_and_layout(k: int) -> None:
    """_pack_bits puts sub-hash j in bit j on every path (byte packing, float32 dot, the
    array-generic bit-plane loop used for CuPy, wide k and non-contiguous input)."""
    from lshcore.hashing.projection import _pack_bits

    n_tables = 3
    bits = RNG.random((9, k * n_tables)) < 0.5
    want = np.zeros((9, n_tables), dtype=np.int64)
    for j in range(k):
        want |= bits.reshape(9, n_tables, k)[:, :, j].astype(np.int64) << j
    assert np.array_equal(_pack_bits(bits, k, n_tables, np), want)
    wide = np.repeat(bits, 2, axis=0)[::2]  # same values, not C-contiguous
    assert not wide.flags.c_contiguous
    assert np.array_equal(_pack_bits(wide, k, n_tables, np), want)
    assert np.array_equal(_pack_bits(bits.astype(np.int8), k, n_tables, np), want)


def test_srp_rejects_unknown_parameters() -> None:
    with pytest.raises(ConfigError, match="srp"):
        lshcore.hash_family("srp", 8, 2, 2, bogus=1)


# -- sparse_srp -------------------------------------------------------------------------


def test_sparse_srp_samples_a_third_with_signs() -> None:
    fam = SparseSRP(30, 4, 5, seed=3, backend="numpy")
    proj = fam.sparse_projections.toarray()  # (dim, k*l)
    assert proj.shape == (30, 20)
    assert np.all((proj != 0).sum(axis=0) == 10)  # ceil(30 / 3) coordinates each
    assert set(np.unique(proj)) == {-1.0, 0.0, 1.0}
    # different projections sample different coordinates
    assert len({tuple(np.flatnonzero(proj[:, j])) for j in range(20)}) > 15
    assert SparseSRP(30, 4, 5, ratio=2).sample_size == 15


def test_sparse_srp_sparse_input_uses_only_non_zeros() -> None:
    fam = SparseSRP(50, 3, 4, seed=1, backend="numpy")
    x = _sparse_batch(40, 50)
    codes = fam.hash(x)
    np.testing.assert_array_equal(codes, fam.hash(x.toarray()))
    # exact count: one multiply-add per (non-zero, projection sampling its coordinate)
    dense_proj = fam.sparse_projections.toarray() != 0
    expected = sum(int(dense_proj[j].sum()) for j in x.indices)
    assert fam.hash_cost(40, x.nnz, x=x) == expected
    assert fam.hash_cost(40) == 40 * 12 * fam.sample_size
    assert abs(fam.hash_cost(40, x.nnz) - expected) < 0.25 * expected


def test_sparse_srp_bits_follow_the_sampled_signs() -> None:
    fam = SparseSRP(9, 1, 1, seed=0, backend="numpy")
    w = fam.sparse_projections.toarray()[:, 0]
    i = int(np.flatnonzero(w)[0])
    x = np.zeros((2, 9), np.float32)
    x[0, i] = w[i]  # w . x = +1 -> bit 1
    x[1, i] = -w[i]  # w . x = -1 -> bit 0
    np.testing.assert_array_equal(fam.hash(x), [[1], [0]])


def test_sparse_srp_has_no_exact_collision_probability() -> None:
    with pytest.raises(NotImplementedError, match="asymptotically"):
        SparseSRP(16, 2, 2).collision_probability(0.5)


def test_sparse_srp_rejects_bad_ratio() -> None:
    with pytest.raises(ConfigError, match="ratio"):
        SparseSRP(16, 2, 2, ratio=0)


# -- crosspolytope ----------------------------------------------------------------------


@pytest.mark.parametrize("size", [1, 2, 4, 8, 32, 64])
def test_fwht_matches_the_hadamard_matrix(size: int) -> None:
    y = RNG.standard_normal((size, 3, 2))  # the transformed axis comes first
    want = np.einsum("ij,jab->iab", hadamard(size), y)
    out = _fwht(y, np)
    assert out is y  # in place
    np.testing.assert_allclose(out, want, atol=1e-10)
    with pytest.raises(ValueError, match="contiguous"):
        _fwht(np.zeros((size, 4))[:, ::2], np)


def _reference_crosspolytope(fam: CrossPolytope, x: np.ndarray) -> np.ndarray:
    """The same function computed with explicit Hadamard matrices and loops."""
    d = fam.rotation_dim
    h = hadamard(d).astype(np.float64)
    diag = fam.diagonals.astype(np.float64)
    codes = np.zeros((x.shape[0], fam.l), dtype=np.int64)
    for i, row in enumerate(x):
        padded = np.zeros(d)
        padded[: fam.dim] = row
        for t in range(fam.l):
            code, place = 0, 1
            for j in range(fam.k):
                y = padded
                for r in range(3):
                    y = h @ (diag[r, t * fam.k + j] * y)
                width = d if j < fam.k - 1 else fam.last_cp_dim
                y = y[:width]
                idx = int(np.argmax(np.abs(y)))
                code += place * (idx + width * (y[idx] < 0))
                place *= 2 * d
            codes[i, t] = code
    return codes


@pytest.mark.parametrize("dim,k,last", [(5, 1, None), (16, 2, None), (20, 3, 4)])
def test_crosspolytope_matches_a_reference(dim: int, k: int, last: int | None) -> None:
    fam = CrossPolytope(dim, k, 3, seed=7, last_cp_dim=last, backend="numpy")
    x = RNG.standard_normal((6, dim)).astype(np.float32)
    np.testing.assert_array_equal(fam.hash(x), _reference_crosspolytope(fam, x))


def test_crosspolytope_buckets_and_symmetry() -> None:
    fam = CrossPolytope(20, 3, 2, last_cp_dim=4, backend="numpy")
    assert fam.rotation_dim == 32
    assert fam.num_buckets == 64 * 64 * 8
    one = CrossPolytope(20, 1, 4, backend="numpy")
    x = RNG.standard_normal((10, 20)).astype(np.float32)
    codes = one.hash(x)
    # scale invariant; -x lands on the antipodal vertex (same index, other sign)
    np.testing.assert_array_equal(one.hash(3.5 * x), codes)
    np.testing.assert_array_equal(one.hash(-x), (codes + 32) % 64)


def test_crosspolytope_rejects_too_many_buckets() -> None:
    with pytest.raises(ConfigError, match="2\\*\\*62"):
        CrossPolytope(1024, 7, 1)
    CrossPolytope(1024, 6, 1, last_cp_dim=2)  # (2048**5) * 4 = 2**57 fits
    with pytest.raises(ConfigError, match="last_cp_dim"):
        CrossPolytope(16, 2, 1, last_cp_dim=17)


def test_crosspolytope_nearer_pairs_collide_more() -> None:
    rates = []
    for angle in (0.2 * math.pi, 0.4 * math.pi, 0.5 * math.pi):
        x, y = pairs_at_angle(np.random.default_rng(0), 400, 32, angle)
        fam = CrossPolytope(32, 1, 8, seed=2, backend="numpy")
        rates.append(float(np.mean(fam.hash(x) == fam.hash(y))))
    assert rates[0] > rates[1] > rates[2]
    assert rates[2] < 0.05  # orthogonal vectors rarely share a vertex of 64


def test_crosspolytope_cost_counts_butterflies_and_signs() -> None:
    fam = CrossPolytope(30, 2, 5)
    assert fam.hash_cost(7) == 7 * 2 * 5 * 3 * 32 * (1 + 5)
    with pytest.raises(NotImplementedError):
        fam.collision_probability(0.5)


def test_crosspolytope_chunks_large_batches() -> None:
    fam = CrossPolytope(8, 2, 2, seed=1, backend="numpy")
    fam._CHUNK_ELEMENTS = 64  # force several chunks
    x = RNG.standard_normal((37, 8)).astype(np.float32)
    whole = CrossPolytope(8, 2, 2, seed=1, backend="numpy").hash(x)
    np.testing.assert_array_equal(fam.hash(x), whole)
    np.testing.assert_array_equal(fam.hash(sp.csr_matrix(x)), whole)


# -- pstable --------------------------------------------------------------------------


@pytest.mark.parametrize("c,r", [(0.5, 4.0), (1.0, 4.0), (4.0, 4.0), (10.0, 2.0)])
def test_pstable_p_matches_numerical_integration(c: float, r: float) -> None:
    # Datar et al.: p(c) = int_0^r (1/c) f(t/c) (1 - t/r) dt, f the density of |N(0,1)|
    def integrand(t: float) -> float:
        return 2 * math.exp(-((t / c) ** 2) / 2) / math.sqrt(2 * math.pi) / c * (1 - t / r)

    expected, _ = quad(integrand, 0, r)
    assert _pstable_p(c, r) == pytest.approx(expected, abs=1e-9)


def test_pstable_collision_probability_shape_and_limits() -> None:
    fam = PStable(8, 3, 2, bits=10)
    p = fam.collision_probability([0.0, 0.5, 2.0, 1e6])
    assert p[0] == 1.0
    assert np.all(np.diff(p) < 0)
    assert p[-1] == pytest.approx(2.0**-10, rel=1e-3)  # only false collisions remain
    with pytest.raises(ValueError, match="distances"):
        fam.collision_probability(-1.0)


def test_pstable_sub_hashes_are_floors_of_shifted_projections() -> None:
    fam = PStable(6, 2, 3, seed=4, r=2.5, backend="numpy")
    x = RNG.standard_normal((5, 6)).astype(np.float32)
    h = fam.bucket_indices(x)
    # the same values from the raw definition floor((a . x + b) / r)
    a = fam.projections * fam.r
    b = fam.offsets * fam.r
    want = np.floor((x.astype(np.float64) @ a + b) / fam.r).astype(np.int64)
    np.testing.assert_array_equal(h, want.reshape(5, 3, 2))


def test_pstable_universal_hash_spreads_distinct_cells() -> None:
    fam = PStable(4, 3, 200, seed=0, bits=4, backend="numpy")
    # far-apart points: their cells differ, so only false collisions (rate 1/16) remain
    x, y = pairs_at_distance(np.random.default_rng(1), 50, 4, 1e4)
    rate = float(np.mean(fam.hash(x) == fam.hash(y)))
    assert abs(rate - 1 / 16) < 0.02
    assert fam.num_buckets == 16


def test_pstable_collisions_follow_the_formula() -> None:
    fam = PStable(10, 2, 400, seed=9, r=4.0, backend="numpy")
    x, y = pairs_at_distance(np.random.default_rng(5), 1, 10, 3.0)
    rate = float(np.mean(fam.hash(x) == fam.hash(y)))
    assert rate == pytest.approx(float(fam.collision_probability(3.0)), abs=0.08)


@pytest.mark.parametrize("kw", [{"r": 0.0}, {"r": -1.0}, {"bits": 31}, {"bits": 0}, {"r": "a"}])
def test_pstable_rejects_bad_parameters(kw: dict) -> None:
    with pytest.raises(ConfigError):
        PStable(8, 2, 2, **kw)


def test_pstable_cost() -> None:
    fam = PStable(10, 2, 3)
    assert fam.hash_cost(4) == 4 * 10 * 6 + 4 * 6
    assert fam.hash_cost(4, nnz=7) == 7 * 6 + 4 * 6


# -- shared behaviour ------------------------------------------------------------------


@pytest.mark.parametrize("name", ["srp", "sparse_srp", "crosspolytope", "pstable"])
def test_registered_and_rebuilt_from_config(name: str) -> None:
    fam = lshcore.hash_family(name, 12, 2, 3, seed=5)
    assert fam.name == name and name in lshcore.families()
    x = RNG.standard_normal((4, 12))
    np.testing.assert_array_equal(type(fam)(**fam.config()).hash(x), fam.hash(x))


@pytest.mark.parametrize("name", ["srp", "sparse_srp", "crosspolytope", "pstable"])
def test_bad_input_names_the_argument(name: str) -> None:
    fam = lshcore.hash_family(name, 6, 2, 2)
    with pytest.raises(InputError, match="x: expected shape"):
        fam.hash(np.zeros((3, 5)))
    with pytest.raises(InputError, match="NaN"):
        fam.hash(np.full((2, 6), np.nan))
    with pytest.raises(InputError, match="empty"):
        fam.hash(sp.csr_matrix((0, 6)))
    with pytest.raises(ConfigError, match="k"):
        lshcore.hash_family(name, 6, 0, 2)


def _sparse_pairs_at_angle(n: int, dim: int, nnz: int, angle: float) -> tuple:
    """Pairs at an exact angle supported on the same ``nnz`` random coordinates."""
    rng = np.random.default_rng(3)
    x2, y2 = pairs_at_angle(rng, n, nnz, angle)
    x = np.zeros((n, dim))
    y = np.zeros((n, dim))
    cols = np.argsort(rng.random((n, dim)), axis=1)[:, :nnz]
    rows = np.arange(n)[:, None]
    x[rows, cols] = x2
    y[rows, cols] = y2
    return x, y


def test_sparse_srp_collisions_depend_on_sparsity() -> None:
    """Why sparse_srp has no collision_probability: the rate depends on the support."""
    angle, k, dim = 0.5 * math.pi, 2, 64
    formula = (1 - angle / math.pi) ** k  # 0.25
    fam = SparseSRP(dim, k, 600, seed=0, backend="numpy")
    x, y = pairs_at_angle(np.random.default_rng(0), 600, dim, angle)
    dense_rate = float(np.mean(np.diag(fam.hash(x) == fam.hash(y))))
    assert abs(dense_rate - formula) < 0.06
    xs, ys = _sparse_pairs_at_angle(600, dim, 2, angle)
    sparse_rate = float(np.mean(np.diag(fam.hash(xs) == fam.hash(ys))))
    # two non-zeros: a projection misses both with probability (2/3)**2, w.x = 0, bits agree
    assert sparse_rate > formula + 0.12
