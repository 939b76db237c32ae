"""MIPS transforms: simple_lsh and sign_alsh."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings

import lshcore
from lshcore.errors import ConfigError, InputError, NotFittedError
from lshcore.hashing.mips import SignALSH, SimpleLSH
from lshcore.hashing.projection import SRP
from lshcore.testing import dense_vectors

RNG = np.random.default_rng(2024)


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosines between rows of a (n, d) and one vector b (d,), in float64."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    return a @ b / (np.linalg.norm(a, axis=1) * np.linalg.norm(b))


def _data(n: int = 60, dim: int = 8) -> np.ndarray:
    # rows of very different norms: cosine ranking alone would differ from x . q ranking
    return (RNG.standard_normal((n, dim)) * RNG.uniform(0.1, 5.0, (n, 1))).astype(np.float32)


def test_registered() -> None:
    assert {"simple_lsh", "sign_alsh"} <= set(lshcore.transforms())
    assert isinstance(lshcore.transform("simple_lsh", 4), SimpleLSH)
    assert lshcore.transform("sign_alsh", 4, m=3).out_dim == 7
    with pytest.raises(ConfigError, match="sign_alsh"):
        lshcore.transform("sign_alsh", 4, bogus=1)


# -- simple_lsh -------------------------------------------------------------------------


def test_simple_lsh_shapes_and_unit_norms() -> None:
    x = _data()
    t = SimpleLSH(8).fit(x)
    assert t.scale == pytest.approx(float(np.linalg.norm(x.astype(np.float64), axis=1).max()))
    p = t.data(x)
    q = t.query(RNG.standard_normal((3, 8)))
    assert p.shape == (60, 9) and q.shape == (3, 9)
    assert p.dtype == np.float32 and q.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(p, axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(q, axis=1), 1.0, atol=1e-6)
    np.testing.assert_array_equal(q[:, 8], 0.0)


@settings(max_examples=40, deadline=None)
@given(x=dense_vectors(6, n=12, max_abs=50.0), q=dense_vectors(6, n=1, max_abs=50.0))
def test_simple_lsh_cosine_ranking_is_inner_product_ranking(x: np.ndarray, q: np.ndarray) -> None:
    if not np.any(x) or not np.any(q):
        return  # nothing to rank
    t = SimpleLSH(6).fit(x)
    cos = _cosine(t.data(x), t.query(q)[0])
    ip = x.astype(np.float64) @ q[0].astype(np.float64)
    # cos(P(x), Q(q)) = x . q / (M |q|): a positive multiple, hence the same ranking
    np.testing.assert_allclose(
        cos * t.scale * np.linalg.norm(q[0].astype(np.float64)),
        ip,
        rtol=1e-4,
        atol=1e-3 * t.scale * np.linalg.norm(q[0]),
    )


def test_simple_lsh_ranking_exact_on_separated_products() -> None:
    x = _data(200)
    t = SimpleLSH(8).fit(x)
    for q in RNG.standard_normal((5, 8)):
        ip = x.astype(np.float64) @ q
        cos = _cosine(t.data(x), t.query(q[None])[0])
        np.testing.assert_array_equal(
            np.argsort(-cos, kind="stable"), np.argsort(-ip, kind="stable")
        )
        # and it is not the plain cosine ranking (norms matter)
        assert not np.array_equal(np.argsort(-_cosine(x, q)), np.argsort(-ip))


def test_simple_lsh_clips_rows_beyond_the_scale() -> None:
    t = SimpleLSH(3).fit(np.array([[1.0, 0, 0], [0, 2.0, 0]]))
    big = np.array([[3.0, 0.0, 0.0]])
    assert t.needs_refit(big)
    assert not t.needs_refit(np.array([[0.0, 1.5, 0.0]]))
    p = t.data(big)
    assert np.all(np.isfinite(p)) and p[0, 3] == 0.0
    t.fit(big)
    assert not t.needs_refit(big) and t.scale == 3.0


def test_zero_queries_and_sparse_queries() -> None:
    for t in (SimpleLSH(5), SignALSH(5)):
        q = np.zeros((2, 5))
        q[1, 2] = -4.0
        out = t.query(q)
        assert np.all(np.isfinite(out))
        np.testing.assert_array_equal(out[0], 0.0)
        assert out[1, 2] == -1.0
        csr = t.query(sp.csr_matrix(q))
        assert sp.issparse(csr) and csr.shape == out.shape
        np.testing.assert_allclose(csr.toarray(), out)


def test_fit_errors_leave_the_scale_unchanged() -> None:
    t = SimpleLSH(4)
    with pytest.raises(NotFittedError, match="fit"):
        t.data(np.ones((1, 4)))
    assert t.needs_refit(np.ones((1, 4)))
    t.fit(np.ones((2, 4)))
    for bad, match in (
        (np.zeros((0, 4)), "empty"),
        (np.full((2, 4), np.nan), "NaN"),
        (np.ones((2, 3)), "x: expected shape"),
    ):
        with pytest.raises(InputError, match=match):
            t.fit(bad)
        assert t.scale == 2.0
    with pytest.raises(InputError, match="q:"):
        t.query(np.ones((1, 5)))


def test_all_zero_data_fits_with_unit_scale() -> None:
    t = SimpleLSH(3).fit(np.zeros((4, 3)))
    assert t.scale == 1.0
    np.testing.assert_array_equal(t.data(np.zeros((1, 3))), [[0, 0, 0, 1]])


@pytest.mark.parametrize("cls", [SimpleLSH, SignALSH])
def test_config_round_trip(cls: type) -> None:
    x = _data(10)
    t = cls(8).fit(x)
    again = cls(**t.config())
    np.testing.assert_array_equal(again.data(x), t.data(x))
    assert again.config() == t.config()


# -- sign_alsh --------------------------------------------------------------------------


def test_sign_alsh_formula() -> None:
    x = _data(20)
    t = SignALSH(8, m=3, U=0.8).fit(x)
    p = t.data(x).astype(np.float64)
    xs = x.astype(np.float64) * 0.8 / t.scale
    norm2 = np.sum(xs**2, axis=1)
    np.testing.assert_allclose(p[:, :8], xs, rtol=1e-6)
    for i, power in enumerate((1, 2, 4)):
        np.testing.assert_allclose(p[:, 8 + i], 0.5 - norm2**power, rtol=1e-5, atol=1e-6)
    # |P(x)|^2 = m/4 + |xU/M|^(2^(m+1)) (the telescoping sum of the paper)
    np.testing.assert_allclose(np.sum(p**2, axis=1), 0.75 + norm2**8, rtol=1e-5)
    q = t.query(RNG.standard_normal((1, 8)))
    assert q.shape == (1, 11)
    np.testing.assert_array_equal(q[0, 8:], 0.0)


def test_sign_alsh_ranking() -> None:
    x = _data(300)
    t = SignALSH(8).fit(x)
    same_norm = x / np.linalg.norm(x, axis=1, keepdims=True) * 2.0
    for q in RNG.standard_normal((5, 8)):
        ip = x.astype(np.float64) @ q
        cos = _cosine(t.data(x), t.query(q[None])[0])
        # exact among rows of equal norm ...
        ip_same = same_norm.astype(np.float64) @ q
        cos_same = _cosine(t.data(same_norm), t.query(q[None])[0])
        np.testing.assert_array_equal(np.argsort(-cos_same), np.argsort(-ip_same))
        # ... and close otherwise (the norm term |xU/M|^8 is at most 0.1 against m/4 = 0.5)
        top = set(np.argsort(-ip)[:10])
        assert len(top & set(np.argsort(-cos)[:10])) >= 7
        assert np.corrcoef(np.argsort(np.argsort(cos)), np.argsort(np.argsort(ip)))[0, 1] > 0.95


@pytest.mark.parametrize("kw", [{"m": 0}, {"U": 1.0}, {"U": 0.0}, {"m": 1.5}, {"scale": -1.0}])
def test_sign_alsh_rejects_bad_parameters(kw: dict) -> None:
    with pytest.raises(ConfigError):
        SignALSH(4, **kw)


# -- with a cosine family ----------------------------------------------------------------


@pytest.mark.parametrize("name", ["simple_lsh", "sign_alsh"])
def test_srp_after_transform_favours_large_inner_products(name: str) -> None:
    x = _data(400, 16)
    q = RNG.standard_normal((1, 16))
    t = lshcore.transform(name, 16).fit(x)
    fam = SRP(t.out_dim, 4, 64, seed=1, backend="numpy")
    hits = (fam.hash(t.data(x)) == fam.hash(t.query(q))).sum(axis=1)
    order = np.argsort(-(x.astype(np.float64) @ q[0]))
    assert hits[order[:20]].mean() > 2 * hits[order[-20:]].mean()


# -- the device methods (the device selector's), here on NumPy as the namespace -------


class _CountingBackend:
    """What the device methods use of a backend: ``xp`` and the counted ``to_host``."""

    xp = np

    def __init__(self) -> None:
        self.reads: list[tuple[str, tuple[int, ...]]] = []

    def to_host(self, x: np.ndarray, tag: str) -> np.ndarray:
        self.reads.append((tag, tuple(np.shape(x))))
        return np.asarray(x)


@pytest.mark.parametrize("name", ["simple_lsh", "sign_alsh"])
def test_device_methods_match_the_host_maps(name: str) -> None:
    # the same float64 arithmetic: bit-identical images, the same scale and refit verdict
    x = _data(40, 6)
    host, dev = lshcore.transform(name, 6), lshcore.transform(name, 6)
    backend = _CountingBackend()
    host.fit(x)
    assert dev.device_fit(backend, x) is dev
    assert dev.scale == host.scale and isinstance(dev.scale, float)
    assert backend.reads == [("transform_scale", (1,))]  # one scalar read per fit
    np.testing.assert_array_equal(dev.device_data(np, x), host.data(x))
    assert dev.device_data(np, x).dtype == np.float32
    q = np.vstack([_data(5, 6), np.zeros((1, 6), np.float32)])  # a zero query maps to zeros
    np.testing.assert_array_equal(dev.device_query(np, q), host.query(q))
    grown = x.copy()
    grown[3] *= 2 * host.scale / np.linalg.norm(x[3])
    assert dev.device_needs_refit(backend, x) is host.needs_refit(x) is False
    assert dev.device_needs_refit(backend, grown) is host.needs_refit(grown) is True
    assert len(backend.reads) == 3


def test_device_methods_refuse_bad_shapes_keeping_the_scale() -> None:
    tf = SimpleLSH(4)
    backend = _CountingBackend()
    assert tf.device_needs_refit(backend, np.ones((2, 4), np.float32))  # not fitted
    tf.device_fit(backend, np.ones((2, 4), np.float32))
    for bad in (np.ones((2, 5), np.float32), np.ones((0, 4), np.float32)):
        with pytest.raises(InputError, match=r"\(n, 4\)"):
            tf.device_fit(backend, bad)
        with pytest.raises(InputError, match=r"\(n, 4\)"):
            tf.device_data(np, bad)
    assert tf.scale == 2.0
    bad_rows = np.ones((3, 4), np.float32)
    bad_rows[1, 2] = np.nan  # refused as the host's fit refuses it, the scale kept
    with pytest.raises(InputError, match="NaN"):
        tf.device_fit(backend, bad_rows)
    with pytest.raises(InputError, match="NaN"):
        tf.device_needs_refit(backend, bad_rows)
    with pytest.raises(InputError, match="NaN"):
        tf.fit(bad_rows)
    assert tf.scale == 2.0
    with pytest.raises(NotFittedError):
        SignALSH(4).device_data(np, np.ones((2, 4), np.float32))
