"""Asymmetric MIPS transforms: inner-product search as cosine search.

A neuron's activation is an inner product ``w . x``; hashing it with a cosine family
(``srp``, ``sparse_srp``, ``crosspolytope``) needs the stored vectors (``data``) and the
queries (``query``) mapped differently so that the cosine of the images grows with the
inner product of the originals. Both transforms learn the scale M (the largest row norm
of the data) with ``fit``. A layer folds its bias in itself (w' = [w, b], x' = [x, 1]).

* ``simple_lsh`` (Neyshabur & Srebro 2015): P(x) = [x/M, sqrt(1 - |x/M|^2)],
  Q(q) = [q/|q|, 0]. |P(x)| = |Q(q)| = 1, so cos(P(x), Q(q)) = x.q / (M |q|): ranking by
  the cosine is exactly ranking by the inner product.
* ``sign_alsh`` (Shrivastava & Li 2015, "Improved asymmetric LSH"):
  P(x) = [x U/M, 1/2 - |x U/M|^2, 1/2 - |x U/M|^4, ..., 1/2 - |x U/M|^(2^m)],
  Q(q) = [q/|q|, 0, ..., 0]. cos(P(x), Q(q)) = (U/M) x.q / (|q| sqrt(m/4 + |xU/M|^(2^(m+1)))):
  monotone in x.q among rows of equal norm, and up to the small norm term otherwise.

Both also map dense arrays that live on a device, computed there (``device_data``,
``device_query``, ``device_fit``, ``device_needs_refit``: an
:class:`~lshcore.training.selector.ActiveSelector` that selects on a device uses them),
in float64 as on the host, so the images and the codes hashed from them agree with the
host's. M stays a Python float on the transform: reading the largest norm is one scalar
copy to the host per fit or refit check, counted under the tag ``transform_scale``.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np

from lshcore.core.validation import as_batch, check_float, check_int, is_sparse
from lshcore.errors import ConfigError, InputError, NotFittedError
from lshcore.hashing.base import Transform

__all__ = ["SimpleLSH", "SignALSH"]


def _device_row_norms(xp: Any, x: Any) -> Any:
    """Euclidean norms of the rows of a dense array ``x (n, d)`` of the namespace ``xp``,
    float64 of shape (n,), computed where ``x`` lives (the host's float64 formula)."""
    x64 = x.astype(xp.float64)
    return xp.sqrt(xp.sum(x64 * x64, axis=1))


def _row_norms(x: Any) -> np.ndarray:
    """Euclidean norms of the rows of a dense array or CSR matrix, float64 of shape (n,)."""
    if is_sparse(x):
        sq = np.asarray(x.multiply(x).sum(axis=1), dtype=np.float64).ravel()
        return np.sqrt(sq)
    return np.linalg.norm(np.asarray(x, dtype=np.float64), axis=1)


class _ScaledTransform(Transform):
    """Shared parts: the scale M (max row norm), fit/needs_refit, and the query side."""

    def __init__(self, dim: int, *, scale: float | None = None, **params: Any):
        super().__init__(dim, **params)
        if scale is not None:
            scale = check_float(scale, "scale", low=0.0, open_low=True)
        self.scale = scale

    def _check(self, x: Any, name: str, allow_sparse: bool = False) -> Any:
        return as_batch(x, self.dim, name, allow_sparse=allow_sparse)

    def fit(self, x: Any) -> _ScaledTransform:
        """Set M to the largest row norm of ``x`` (n, dim); all-zero data gives M = 1.

        Raises InputError (naming ``x``) for an empty batch, a wrong shape or NaN; the
        previous scale is kept then.
        """
        norms = _row_norms(self._check(x, "x", allow_sparse=True))
        largest = float(norms.max())
        # all-zero data (e.g. zero-initialised weights): any scale maps them the same way
        self.scale = largest if largest > 0 else 1.0
        return self

    def needs_refit(self, x: Any) -> bool:
        """True when not fitted, or when a row of ``x`` has a norm above M."""
        if self.scale is None:
            return True
        norms = _row_norms(self._check(x, "x", allow_sparse=True))
        return bool(norms.max() > self.scale)

    # -- the same on a device: dense arrays of a backend, computed there ----------------
    def _check_device(self, x: Any, name: str) -> None:
        if len(x.shape) != 2 or x.shape[1] != self.dim or x.shape[0] == 0:
            raise InputError(
                f"{name}: expected a non-empty (n, {self.dim}) array, got {tuple(x.shape)}"
            )

    def _device_largest_norm(self, backend: Any, x: Any) -> float:
        """The largest row norm of the device array ``x (n, dim)``: one float64 copied to
        the host, tag ``transform_scale``."""
        self._check_device(x, "x")
        largest = backend.xp.max(_device_row_norms(backend.xp, x), keepdims=True)
        value = float(backend.to_host(largest, "transform_scale")[0])
        if not math.isfinite(value):  # as the host's as_batch refuses them (scale kept)
            raise InputError("x: contains NaN or infinite values")
        return value

    def device_fit(self, backend: Any, x: Any) -> _ScaledTransform:
        """:meth:`fit` on a dense device array ``x (n, dim)`` of ``backend`` (a device
        backend): M = the largest row norm, computed there (one scalar read, tag
        ``transform_scale``). InputError for a wrong shape, an empty batch or a row that
        is not finite (the scale kept then)."""
        largest = self._device_largest_norm(backend, x)
        self.scale = largest if largest > 0 else 1.0
        return self

    def device_needs_refit(self, backend: Any, x: Any) -> bool:
        """:meth:`needs_refit` of a dense device array ``x (n, dim)`` (one scalar read,
        tag ``transform_scale``; none when not fitted)."""
        if self.scale is None:
            return True
        return self._device_largest_norm(backend, x) > self.scale

    def device_query(self, xp: Any, q: Any) -> Any:
        """:meth:`query` of a dense array ``q (m, dim)`` of the namespace ``xp``, computed
        there: [q/|q|, 0, ..., 0], (m, out_dim) float32 (float64 arithmetic, as the host's
        dense path)."""
        self._check_device(q, "q")
        norms = _device_row_norms(xp, q)
        inv = 1.0 / xp.where(norms > 0, norms, 1.0)
        scaled = q.astype(xp.float64) * xp.reshape(inv, (-1, 1))
        zeros = xp.zeros((q.shape[0], self.out_dim - self.dim), dtype=xp.float64)
        return xp.concatenate([scaled, zeros], axis=1).astype(xp.float32)

    def _scale(self) -> float:
        if self.scale is None:
            raise NotFittedError(f"{type(self).__name__}: call fit(x) before data(x)")
        return self.scale

    def query(self, q: Any) -> Any:
        """[q/|q|, 0, ..., 0], shape (m, out_dim), float32; a zero query maps to zeros.

        A CSR ``q`` gives a CSR result (the extra coordinates are structural zeros).
        """
        q = self._check(q, "q", allow_sparse=True)
        norms = _row_norms(q)
        inv = 1.0 / np.where(norms > 0, norms, 1.0)
        if is_sparse(q):
            import scipy.sparse as sp

            scaled = sp.diags(inv.astype(np.float32)) @ q
            out = sp.csr_matrix(
                (scaled.data.astype(np.float32), scaled.indices, scaled.indptr),
                shape=(q.shape[0], self.out_dim),
            )
            return out
        out = np.zeros((q.shape[0], self.out_dim), dtype=np.float32)
        out[:, : self.dim] = np.asarray(q, dtype=np.float64) * inv[:, None]
        return out


class SimpleLSH(_ScaledTransform):
    """Neyshabur & Srebro's Simple-LSH: P(x) = [x/M, sqrt(1 - |x/M|^2)], Q(q) = [q/|q|, 0].

    ``data`` of a row whose norm exceeds M (data added after ``fit``) clips the extra
    coordinate at 0 instead of taking the root of a negative number; ``needs_refit``
    reports such rows so that the caller can refit and rehash.
    """

    name: ClassVar[str] = "simple_lsh"

    def __init__(self, dim: int, *, scale: float | None = None):
        super().__init__(dim, scale=scale)
        self.out_dim = self.dim + 1

    def data(self, x: Any) -> np.ndarray:
        """[x/M, sqrt(max(0, 1 - |x/M|^2))], shape (n, dim + 1), float32."""
        m = self._scale()
        x = np.asarray(self._check(x, "x"), dtype=np.float64) / m
        extra = np.sqrt(np.clip(1.0 - np.einsum("ij,ij->i", x, x), 0.0, None))
        return np.concatenate([x, extra[:, None]], axis=1).astype(np.float32)

    def device_data(self, xp: Any, x: Any) -> Any:
        """:meth:`data` of a dense array ``x (n, dim)`` of the namespace ``xp``, computed
        there in float64: (n, dim + 1) float32."""
        self._check_device(x, "x")
        x = x.astype(xp.float64) / self._scale()
        extra = xp.sqrt(xp.maximum(1.0 - xp.einsum("ij,ij->i", x, x), 0.0))
        return xp.concatenate([x, xp.reshape(extra, (-1, 1))], axis=1).astype(xp.float32)


class SignALSH(_ScaledTransform):
    """Shrivastava & Li's Sign-ALSH with ``m`` extra terms and shrink factor ``U``.

    P(x) = [x U/M, 1/2 - |xU/M|^2, ..., 1/2 - |xU/M|^(2^m)], Q(q) = [q/|q|, 0, ..., 0];
    defaults m = 2, U = 0.75 (the paper's recommendation). No clipping is needed for
    rows above M (the terms just grow more negative); ``needs_refit`` reports them.
    """

    name: ClassVar[str] = "sign_alsh"

    def __init__(self, dim: int, *, m: int = 2, U: float = 0.75, scale: float | None = None):  # noqa: N803
        m = check_int(m, "m", low=1, high=16)
        U = check_float(U, "U", low=0.0, high=1.0, open_low=True)  # noqa: N806
        if U >= 1.0:
            raise ConfigError(f"U must be < 1 (the data side shrinks norms below 1), got {U}")
        super().__init__(dim, scale=scale, m=m, U=U)
        self.m = m
        self.U = U
        self.out_dim = self.dim + m

    def data(self, x: Any) -> np.ndarray:
        """[xU/M, 1/2 - |xU/M|^2, ..., 1/2 - |xU/M|^(2^m)], shape (n, dim + m), float32."""
        scale = self._scale()
        x = np.asarray(self._check(x, "x"), dtype=np.float64) * (self.U / scale)
        sq = np.einsum("ij,ij->i", x, x)
        powers = sq[:, None] ** (2.0 ** np.arange(self.m))[None, :]  # |x|^2, |x|^4, ...
        return np.concatenate([x, 0.5 - powers], axis=1).astype(np.float32)

    def device_data(self, xp: Any, x: Any) -> Any:
        """:meth:`data` of a dense array ``x (n, dim)`` of the namespace ``xp``, computed
        there in float64: (n, dim + m) float32."""
        self._check_device(x, "x")
        x = x.astype(xp.float64) * (self.U / self._scale())
        sq = xp.einsum("ij,ij->i", x, x)
        exponents = 2.0 ** xp.arange(self.m, dtype=xp.float64)  # |x|^2, |x|^4, ...
        powers = xp.reshape(sq, (-1, 1)) ** xp.reshape(exponents, (1, -1))
        return xp.concatenate([x, 0.5 - powers], axis=1).astype(xp.float32)
