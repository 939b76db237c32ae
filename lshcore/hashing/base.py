"""Base classes for hash families and MIPS transforms.

A hash family is constructed as ``cls(dim, k, l, seed=0, **params)`` and maps a batch
of vectors of shape (n, dim) to int64 codes of shape (n, l): one code per table, each
the concatenation of ``k`` sub-hashes, in ``[0, num_buckets)``. A plugin family needs
only ``hash`` (and ``collision_probability`` where a closed form exists).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from lshcore.core.validation import as_batch, check_int

__all__ = ["HashFamily", "Transform"]


class HashFamily:
    """Base class of every hash family.

    Attributes: ``dim`` (input size), ``k`` (sub-hashes per table), ``l`` (tables),
    ``seed``, ``num_buckets`` (codes lie in ``[0, num_buckets)``), ``measure`` (the
    similarity the family is sensitive to: "cosine", "jaccard", "l2", "rank", ...),
    ``supports_sparse`` (whether ``hash`` takes a scipy CSR matrix), ``sign_sketch``
    (whether bit j of table t's code is the sign of an independent Gaussian projection
    number ``t * k + j``, so that the codes of two vectors at angle theta differ in each
    bit with probability theta / pi: an index may then use the codes as a sign sketch).
    """

    measure: ClassVar[str] = "cosine"
    supports_sparse: ClassVar[bool] = False
    sign_sketch: ClassVar[bool] = False
    #: absolute slack the family claims for ``collision_probability`` (0 = exact form);
    #: the conformance kit widens its confidence band by this much
    collision_tolerance: ClassVar[float] = 0.0
    name: ClassVar[str] = ""

    def __init__(self, dim: int, k: int, l: int, seed: int = 0, **params: Any):  # noqa: E741
        self.dim = check_int(dim, "dim", low=1)
        self.k = check_int(k, "k", low=1)
        self.l = check_int(l, "l", low=1)
        self.seed = check_int(seed, "seed", low=0)
        self.params: dict[str, Any] = dict(params)
        self.num_buckets: int = 2**self.k

    # -- what a family implements -------------------------------------------------
    def hash(self, x: Any) -> np.ndarray:
        """Codes of shape (n, l), int64 in [0, num_buckets), for x of shape (n, dim)."""
        raise NotImplementedError(f"{type(self).__name__} does not implement hash()")

    def collision_probability(self, s: Any) -> np.ndarray:
        """P(two points at similarity ``s`` share a bucket of one table), all k sub-hashes."""
        raise NotImplementedError(f"{type(self).__name__} has no closed-form collision probability")

    # -- optional extras ------------------------------------------------------------
    def probes(self, x: Any, n_probes: int) -> np.ndarray:
        """Codes of shape (n, l, n_probes) to look up, best first (column 0 = ``hash(x)``).

        Families without multiprobe support only ``n_probes == 1``.
        """
        if n_probes != 1:
            raise NotImplementedError(f"{type(self).__name__} does not support multiprobe")
        return self.hash(x)[:, :, None]

    def hash_cost(self, n: int, nnz: int | None = None) -> int:
        """Multiply-adds spent hashing ``n`` inputs (``nnz`` non-zeros if sparse)."""
        return 0

    def hash_comparisons(self, n: int, nnz: int | None = None) -> int:
        """Value comparisons spent hashing ``n`` inputs (``nnz`` non-zeros if sparse).

        The work of comparison-based families (WTA, DWTA, MinHash), which
        :meth:`hash_cost` (multiply-adds only) does not see; 0 for projection families.
        """
        return 0

    def config(self) -> dict[str, Any]:
        """The constructor arguments; ``type(self)(**config())`` rebuilds the same functions."""
        return {"dim": self.dim, "k": self.k, "l": self.l, "seed": self.seed, **self.params}

    def check_input(self, x: Any, name: str = "x", xp: Any = np) -> Any:
        """Validated float32 input of shape (n, dim) (CSR if the family takes sparse)."""
        return as_batch(x, self.dim, name, allow_sparse=self.supports_sparse, xp=xp)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({args})"


class Transform:
    """An asymmetric transform that turns inner-product search into cosine search.

    ``fit(x)`` learns the scale from the data (e.g. the largest norm); ``data(x)``
    maps stored vectors of shape (n, dim) to (n, out_dim); ``query(q)`` maps queries.
    After the transform, the cosine between ``data(x)`` and ``query(q)`` is monotone in
    ``x . q`` for a fixed q.

    Optional: ``device_data(xp, x)``, ``device_query(xp, q)``, ``device_fit(backend, x)``
    and ``device_needs_refit(backend, x)``, the same maps of a backend's device arrays
    computed there (see :mod:`lshcore.hashing.mips`); a selector on a device backend
    keeps a transform without all four on the host.
    """

    name: ClassVar[str] = ""

    def __init__(self, dim: int, **params: Any):
        self.dim = check_int(dim, "dim", low=1)
        self.params: dict[str, Any] = dict(params)
        self.out_dim: int = self.dim + 1
        self.scale: float | None = None

    def fit(self, x: np.ndarray) -> Transform:
        """Learn the scale from data of shape (n, dim); returns self."""
        raise NotImplementedError

    def data(self, x: np.ndarray) -> np.ndarray:
        """Transformed stored vectors, shape (n, out_dim)."""
        raise NotImplementedError

    def query(self, q: np.ndarray) -> np.ndarray:
        """Transformed queries, shape (m, out_dim)."""
        raise NotImplementedError

    def needs_refit(self, x: np.ndarray) -> bool:
        """True when ``x`` lies outside what the current fit covers (e.g. a larger norm)."""
        return self.scale is None

    def config(self) -> dict[str, Any]:
        """Constructor arguments plus the fitted state, JSON-able."""
        return {"dim": self.dim, **self.params, "scale": self.scale}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({args})"
