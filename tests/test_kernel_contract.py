"""The kernel contract: every registered backend implements every kernel, each kernel
agrees with the NumPy reference, and a backend that lacks one is refused at registration."""

from __future__ import annotations

import copy
import inspect
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.sparse as sp

import lshcore
from lshcore.core.backend import Backend
from lshcore.core.contract import KERNEL_NAMES, Kernels, declared_kernels
from lshcore.errors import PluginError
from lshcore.kernels import _np_tables
from lshcore.kernels import numpy_ref as ref
from lshcore.kernels._np_tables import pending_directory
from lshcore.registry import manager as registry


@pytest.fixture(autouse=True)
def fresh_registry(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv(registry.AUTOLOAD_ENV, "1")
    registry.reset()
    yield
    registry.reset()


# -- small inputs for every kernel ------------------------------------------------------
# Each builder returns the argument list of one call; table kernels take arrays of the
# backend's module (converted for cupy), the others host arrays.

# the kernels of the tables module (their arrays are the backend's)
TABLE_KERNELS = frozenset(KERNEL_NAMES) & vars(_np_tables).keys()
RNG_SEED = 20240601


def _dense(rng: np.random.Generator, n: int = 6, dim: int = 16) -> np.ndarray:
    x = rng.uniform(-1, 1, (n, dim)).astype(np.float32)
    x[rng.random((n, dim)) < 0.5] = 0.0
    x[-1] = 0.0  # an all-zero row: every DWTA bin empty
    return x


def _csr(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    c = sp.csr_matrix(x)
    c.eliminate_zeros()
    return c.indptr.astype(np.int64), c.indices.astype(np.int64), c.data.astype(np.float32)


def _wta_layout(rng: np.random.Generator, dim: int = 16, n_bins: int = 6, b: int = 4):
    perm = np.concatenate([rng.permutation(dim), rng.permutation(dim)])
    bin_coords = np.ascontiguousarray(perm[: n_bins * b].reshape(n_bins, b).astype(np.int64))
    coord_slots = np.argsort(bin_coords.ravel(), kind="stable").astype(np.int64)
    counts = np.bincount(bin_coords.ravel(), minlength=dim)
    coord_ptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return bin_coords, coord_ptr, coord_slots, n_bins, b


def _candidates(rng: np.random.Generator, batch: int = 5, n_out: int = 20):
    rows = [np.sort(rng.choice(n_out, rng.integers(0, 8), replace=False)) for _ in range(batch)]
    indptr = np.concatenate([[0], np.cumsum([len(r) for r in rows])]).astype(np.int64)
    ids = np.concatenate(rows).astype(np.int64)
    counts = rng.integers(1, 4, ids.shape[0]).astype(np.int32)
    labels = np.full((batch, 2), -1, np.int64)
    labels[0, 0], labels[2, :] = 3, (7, 11)
    return indptr, ids, counts, labels, n_out


def _sorted_tables(rng: np.random.Generator, l: int = 3, n: int = 20):  # noqa: E741
    codes = rng.integers(0, 5, (l, n)).astype(np.int64)
    order = np.argsort(codes, axis=1, kind="stable")
    sorted_codes = np.ascontiguousarray(np.take_along_axis(codes, order, axis=1))
    qcodes = rng.integers(0, 5, (4, l)).astype(np.int64)
    return qcodes, sorted_codes, np.ascontiguousarray(order.astype(np.int64)), n


def _fixed_state(rng: np.random.Generator, l: int = 3, t: int = 4, c: int = 3, n: int = 20):  # noqa: E741
    slots = np.full((l, t, c), -1, np.int32)
    fill = np.zeros((l, t), np.int32)
    head = np.zeros((l, t), np.int32)
    seen = np.zeros((l, t), np.int64)
    buckets = rng.integers(0, t, (n, l)).astype(np.int64)
    ids = np.arange(n, dtype=np.int32)
    return slots, fill, head, seen, buckets, ids


def _sorted_run(rng: np.random.Generator, n_keys: int = 12, n: int = 30):
    keys = np.sort(rng.integers(0, n_keys, n)).astype(np.int64)
    ids = rng.integers(0, 25, n).astype(np.int32)
    ids[::7] = -1  # tombstones
    pkeys = np.sort(rng.integers(0, n_keys, 5)).astype(np.int64)
    pids = rng.integers(0, 25, 5).astype(np.int32)
    qkeys = rng.integers(-1, n_keys, (4, 3)).astype(np.int64)
    return keys, ids, ref.bucket_offsets(keys, n_keys), pkeys, pids, qkeys, 25


def _vectors(rng: np.random.Generator, n: int = 25, d: int = 6, m: int = 4):
    vectors = rng.standard_normal((n, d)).astype(np.float32)
    queries = rng.standard_normal((m, d)).astype(np.float32)
    return (
        vectors,
        np.linalg.norm(vectors, axis=1).astype(np.float32),
        queries,
        np.linalg.norm(queries, axis=1).astype(np.float32),
    )


def _layer(rng: np.random.Generator, batch: int = 5, n_in: int = 12, n_out: int = 10, m: int = 4):
    w = rng.standard_normal((n_out, n_in)).astype(np.float32)
    b = rng.standard_normal(n_out).astype(np.float32)
    x = rng.standard_normal((batch, n_in)).astype(np.float32)
    x[x < 0.3] = 0.0
    in_ids, in_vals = ref.dense_to_sparse(x)
    out_ids = np.sort(np.stack([rng.choice(n_out, m, replace=False) for _ in range(batch)]), axis=1)
    out_ids[1, -1] = -1
    grad = rng.standard_normal((batch, m)).astype(np.float32)
    return w, b, in_ids, in_vals, out_ids.astype(np.int64), grad


def _backward_buffers(n_out: int, n_in: int) -> list[Any]:
    size = n_out * n_in
    return [
        np.zeros(size, np.float32),
        np.zeros(n_out, np.float32),
        np.zeros(size, np.uint8),
        np.zeros(n_out, np.uint8),
        np.zeros(size, np.int64),
        np.zeros(n_out, np.int64),
        0,
        0,
    ]


def _args(name: str, rng: np.random.Generator) -> list[Any]:
    if name == "wta_bins_dense":
        return [_dense(rng), _wta_layout(rng)[0], True]
    if name == "wta_bins_csr":
        bin_coords, coord_ptr, coord_slots, n_bins, b = _wta_layout(rng)
        return [*_csr(_dense(rng)), coord_ptr, coord_slots, n_bins, b, False]
    if name == "densify_bins":
        codes = rng.integers(0, 4, (5, 2, 6)).astype(np.int64)
        codes[rng.random(codes.shape) < 0.4] = -1
        codes[0] = -1
        a = rng.integers(1, 2**31 - 1, 2).astype(np.int64)
        return [codes, a, rng.integers(0, 2**31 - 1, 2).astype(np.int64), 4]
    if name in ("minhash_bins_dense", "minhash_bins_csr"):
        x = (rng.random((6, 20)) < 0.2).astype(np.float32)
        rank = np.stack([rng.permutation(20) for _ in range(3)]).astype(np.int64)
        if name == "minhash_bins_dense":
            return [x, rank, 4]
        indptr, indices, _ = _csr(x)
        return [indptr, indices, rank, 4]
    if name == "srp_probes":
        proj = rng.standard_normal((6, 3, 7)).astype(np.float32)
        proj[0, 0] = 0.5  # equal margins: ties broken by bit, then by canonical set order
        proj[1, 1, :3] = [-0.25, 0.25, 0.0]
        return [proj, 12]
    if name == "tiebreak_priority":
        return [7, rng.integers(0, 9, (3, 1)), rng.integers(0, 50, (1, 5))]
    if name == "dense_to_sparse":
        return [_dense(rng)]
    if name == "layer_forward":
        w, b, in_ids, in_vals, out_ids, _ = _layer(rng)
        return [w, b, in_ids, in_vals, out_ids]
    if name == "layer_backward":
        w, _, in_ids, in_vals, out_ids, grad = _layer(rng)
        return [w, in_ids, in_vals, out_ids, grad, True, *_backward_buffers(*w.shape)]
    if name == "sparse_update":
        touched = np.zeros(20, np.int64)
        touched[:4] = [2, 5, 7, 13]
        grad = np.zeros(20, np.float32)
        grad[touched[:4]] = rng.standard_normal(4)
        mark = np.zeros(20, np.uint8)
        mark[touched[:4]] = 1
        param = rng.standard_normal(20).astype(np.float32)
        s1, s2 = np.full(20, 0.5, np.float32), np.full(20, 0.25, np.float32)
        return [3, param, grad, mark, touched, 4, s1, s2, 0.1, 0.9, 0.99, 1e-8, 3]
    if name == "select_active":
        indptr, ids, counts, labels, n_out = _candidates(rng)
        return [indptr, ids, counts, labels, n_out, 5, 1, True, True, 3, None]
    if name in ("sorted_table_candidates", "table_hit_counts"):
        return list(_sorted_tables(rng))
    if name == "select_from_tables":
        qcodes, codes, ids, n_out = _sorted_tables(rng)
        labels = np.full((qcodes.shape[0], 1), -1, np.int64)
        labels[1, 0] = 4
        return [qcodes, codes, ids, n_out, labels, 6, 1, True, True, 5, None]
    if name == "batch_select_from_tables":
        qcodes, codes, ids, n_out = _sorted_tables(rng)
        offsets = np.stack([np.searchsorted(row, np.arange(qcodes.max() + 2)) for row in codes])
        return [qcodes, codes, ids, n_out, np.array([4, -1], np.int64), 6, 5,
                np.zeros(4, np.int64), offsets.astype(np.int64)]  # fmt: skip
    if name == "block_update":
        param = rng.standard_normal((6, 5)).astype(np.float32)
        s1, s2 = np.full((6, 5), 0.5, np.float32), np.full((6, 5), 0.25, np.float32)
        rows, cols = np.array([1, 4], np.int64), np.array([0, 2, 3], np.int64)
        grad = rng.standard_normal((2, 3)).astype(np.float32)
        return [3, param, grad, rows, cols, s1, s2, 0.1, 0.9, 0.99, 1e-8, 3]
    if name == "reservoir_draw":
        return [9, 123, np.arange(1, 60, dtype=np.int64)]
    if name == "fixed_insert":
        return [*_fixed_state(rng), True, 5]
    if name in ("fixed_remove", "fixed_query"):
        slots, fill, head, seen, buckets, ids = _fixed_state(rng)
        ref.fixed_insert(slots, fill, head, seen, buckets, ids, False, 5)
        if name == "fixed_remove":
            return [slots, fill, head, buckets[::3].copy(), ids[::3].copy()]
        q = rng.integers(-1, 4, (5, 3, 2)).astype(np.int64)
        return [slots, fill, head, q, ids.shape[0]]
    if name in ("sorted_insert", "sorted_remove"):
        keys, ids = _sorted_run(rng)[:2]
        new_keys = rng.integers(0, 12, 6).astype(np.int64)
        new_ids = rng.integers(0, 25, 6).astype(np.int32)
        if name == "sorted_remove":
            new_keys[:3], new_ids[:3] = keys[[1, 4, 9]], ids[[1, 4, 9]]
        return [keys, ids, new_keys, new_ids]
    if name == "sorted_query":
        return list(_sorted_run(rng))
    if name == "sorted_remove_at":
        keys, ids = _sorted_run(rng)[:2]
        pick = np.array([1, 4, 9, 4])  # one entry twice: removed once
        del_keys = np.concatenate([keys[pick], [3, 11]]).astype(np.int64)
        del_ids = np.concatenate([ids[pick], [24, 0]]).astype(np.int32)
        return [keys, ids, ref.bucket_offsets(keys, 12), del_keys, del_ids]
    if name == "bucket_offsets":
        return [_sorted_run(rng)[0], 12]
    if name == "rerank_topk":
        vectors, xnorm, queries, qnorm = _vectors(rng)
        rows = [np.sort(rng.choice(25, rng.integers(0, 9), replace=False)) for _ in range(4)]
        indptr = np.concatenate([[0], np.cumsum([len(r) for r in rows])]).astype(np.int64)
        cand = np.concatenate(rows).astype(np.int64)
        return [vectors, xnorm, indptr, cand, queries, qnorm, 3, ref.METRIC_COSINE]
    if name == "sorted_query_rerank":
        vectors, xnorm, queries, qnorm = _vectors(rng)
        return [*_sorted_run(rng), vectors, xnorm, queries, qnorm, 3, ref.METRIC_IP]
    if name == "sorted_query_sketch_rerank":
        # more entries than _sorted_run's default, so that queries pass the first stage
        vectors, xnorm, queries, qnorm = _vectors(rng)
        sketches = rng.integers(0, 2**63, (25, 2), dtype=np.int64).astype(np.uint64)
        qsketches = rng.integers(0, 2**63, (4, 2), dtype=np.int64).astype(np.uint64)
        sketches[:, 1] &= np.uint64(2**36 - 1)  # 100 bits: zero above
        qsketches[:, 1] &= np.uint64(2**36 - 1)
        run = list(_sorted_run(rng, n=90))
        pdir, pshift = pending_directory(run[3], 12)
        return [
            *run,
            vectors,
            xnorm,
            queries,
            qnorm,
            1,
            ref.METRIC_COSINE,
            pdir,
            pshift,
            sketches,
            qsketches,
            100,
            0.3,
        ]
    if name.startswith("xmc_"):
        return _xmc_args(name, rng)
    raise AssertionError(f"no test input for kernel {name!r}: add one here")


def _xmc_args(name: str, rng: np.random.Generator) -> list[Any]:
    """Inputs of the XMC kernels: a CSR batch of 5 over 12 features (one empty row),
    hidden 8 (some ReLUs off), 20 output rows, active sets of 6 with padding and repeats
    across rows, labels inside and outside the active sets, one row without labels."""
    x = rng.uniform(0.1, 1, (5, 12)).astype(np.float32)
    x[rng.random((5, 12)) < 0.6] = 0.0
    x[2] = 0.0
    indptr, indices, data = _csr(x)
    w1 = rng.standard_normal((12, 8)).astype(np.float32)
    b1 = rng.standard_normal(8).astype(np.float32) * 0.5
    w2 = rng.standard_normal((20, 8)).astype(np.float32)
    b2 = rng.standard_normal(20).astype(np.float32)
    act = np.stack([np.sort(rng.choice(20, 6, replace=False)) for _ in range(5)])
    act[1, 4:] = -1
    labels = np.full((5, 2), -1, np.int64)
    labels[0] = act[0, [1, 3]]
    labels[1, 0] = act[1, 2]
    labels[2, 0] = act[2, 0]
    labels[3] = [act[3, 5], 19 if 19 not in act[3] else -1]
    h = rng.uniform(-1, 1, (5, 8)).astype(np.float32)
    if name == "xmc_hidden_forward":
        return [indptr, indices, data, w1, b1]
    if name == "xmc_output_forward":
        return [np.maximum(h, 0), w2, b2, act]
    if name == "xmc_output_backward":
        logits = rng.standard_normal(act.shape).astype(np.float32)
        return [np.maximum(h, 0), w2, act, logits, labels, np.full(20, -1, np.int64)]
    if name == "xmc_hidden_backward":
        grad_h = rng.standard_normal((5, 8)).astype(np.float32)
        return [indptr, indices, data, h, grad_h, np.full(12, -1, np.int64)]
    if name == "xmc_adam_rows":
        m = rng.standard_normal((20, 8)).astype(np.float32) * 0.1
        v = rng.uniform(0, 0.1, (20, 8)).astype(np.float32)
        last = rng.integers(0, 7, 20).astype(np.int64)
        rows = np.array([3, 0, 17, 9], np.int64)
        grad = rng.standard_normal((4, 8)).astype(np.float32)
        return [w2, m, v, last, rows, grad, 7, 1e-2, 0.9, 0.999, 1e-8, False]
    if name == "xmc_build_tables":
        return [rng.integers(0, 7, (20, 3)).astype(np.int64), 7]
    if name == "xmc_select":
        offsets, ids = ref.xmc_build_tables(rng.integers(0, 4, (20, 3)).astype(np.int64), 4)
        qcodes = rng.integers(0, 4, (5, 3)).astype(np.int64)
        return [qcodes, offsets, ids, labels, 20, 6, 3, True, 11, 4]
    if name == "xmc_select_batch":
        offsets, ids = ref.xmc_build_tables(rng.integers(0, 4, (20, 3)).astype(np.int64), 4)
        qcodes = rng.integers(0, 4, (5, 3)).astype(np.int64)
        return [qcodes, offsets, ids, labels, 20, 4, 3, 3, True, 11, np.full(20, -1, np.int64)]
    if name == "xmc_batch_output_step":
        cand = np.array([7, 2, 19, 0, 11, 5], np.int64)
        labcols = np.array([[1, 3], [0, 0], [-1, -1], [5, -1], [2, 4]], np.int64)
        return [np.maximum(h, 0), w2, b2, cand, labcols]
    if name == "xmc_topk_rows":
        scores = rng.standard_normal((5, 9)).astype(np.float32)
        scores[1, [2, 6]] = scores[1].max() + 1  # a tie at the top: lower column first
        return [scores, 4]
    if name in ("xmc_infer_topk", "xmc_infer_candidates"):
        # 3 probes per table, the third repeating the first (read once); 20 ids over 3
        # buckets per table: ties in hit counts at the cut-off of 5
        offsets, ids = ref.xmc_build_tables(rng.integers(0, 3, (20, 4)).astype(np.int64), 3)
        qcodes = rng.integers(0, 3, (5, 4)).astype(np.int64)
        probes = np.stack([qcodes, rng.integers(0, 3, (5, 4)), qcodes], axis=2).reshape(5, 12)
        extra = np.array([4, 17], np.int64)
        if name == "xmc_infer_candidates":
            return [probes, offsets, ids, extra, 5, 3]
        return [probes, offsets, ids, h, w2, b2, extra, 5, 3, 3]
    raise AssertionError(name)


def _assert_same(got: Any, want: Any, where: str) -> None:
    """Equal results: arrays by dtype and value (float to 1e-5), tuples element-wise."""
    if isinstance(want, tuple):
        assert isinstance(got, tuple) and len(got) == len(want), where
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            _assert_same(g, w, f"{where}[{i}]")
        return
    if want is None:
        assert got is None, where
        return
    g, w = lshcore.to_numpy(got), np.asarray(want)
    assert g.shape == w.shape, f"{where}: shape {g.shape} != {w.shape}"
    if w.dtype.kind == "f":
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6, err_msg=where)
    else:
        assert g.dtype == w.dtype or w.ndim == 0, f"{where}: dtype {g.dtype} != {w.dtype}"
        np.testing.assert_array_equal(g, w, err_msg=where)


def _usable(name: str) -> Backend:
    backend = registry.lookup("backend", name)
    if not backend.available():
        pytest.skip(f"backend {name!r} unavailable here: {backend.why_unavailable()}")
    return backend


# -- the contract ---------------------------------------------------------------------


def test_the_contract_lists_every_reference_kernel() -> None:
    public = {n for n in dir(ref) if not n.startswith("_") and callable(getattr(ref, n))}
    assert set(KERNEL_NAMES) == public
    assert len(KERNEL_NAMES) == len(set(KERNEL_NAMES)) >= 23


@pytest.mark.parametrize("name", ["numpy", "numba", "cupy"])
def test_each_registered_backend_declares_the_whole_contract(name: str) -> None:
    backend = registry.lookup("backend", name)
    assert backend.missing_kernels() == []
    assert set(KERNEL_NAMES) <= declared_kernels(backend.kernel_module)


@pytest.mark.parametrize("name", ["numpy", "numba", "cupy"])
def test_each_usable_backend_implements_the_contract_signatures(name: str) -> None:
    kernels = _usable(name).kernels
    for kernel in KERNEL_NAMES:
        fn = getattr(kernels, kernel)
        fn = getattr(fn, "py_func", fn)  # a numba dispatcher: its Python function
        want = list(inspect.signature(getattr(Kernels, kernel)).parameters)[1:]  # no self
        assert list(inspect.signature(fn).parameters) == want, kernel


@pytest.mark.parametrize("kernel", KERNEL_NAMES)
@pytest.mark.parametrize("name", ["numba", "cupy"])
def test_kernel_agrees_with_the_numpy_reference(name: str, kernel: str) -> None:
    backend = _usable(name)
    args = _args(kernel, np.random.default_rng(RNG_SEED))
    ref_args = copy.deepcopy(args)
    if backend.host_arrays or kernel not in TABLE_KERNELS:
        mine = copy.deepcopy(args)
    else:
        xp = backend.xp
        mine = [xp.asarray(a) if isinstance(a, np.ndarray) else a for a in args]
    want = getattr(ref, kernel)(*ref_args)
    got = getattr(backend.kernels, kernel)(*mine)
    if kernel == "layer_backward":  # the order of first touches is free, the set is not
        for arrays, n in ((ref_args, want[1]), (mine, got[1])):
            arrays[10][:n].sort()
        for arrays, n in ((ref_args, want[2]), (mine, got[2])):
            arrays[11][:n].sort()
    _assert_same(got, want, f"{name}.{kernel} result")
    for i, (g, w) in enumerate(zip(mine, ref_args, strict=True)):  # in-place effects too
        if isinstance(w, np.ndarray):
            _assert_same(g, w, f"{name}.{kernel} argument {i} after the call")


def test_the_inputs_exercise_the_kernels() -> None:
    # guards the agreement test against inputs so trivial that any kernel would agree
    rng = np.random.default_rng(RNG_SEED)
    codes = ref.wta_bins_dense(*_args("wta_bins_dense", rng))
    assert (codes == -1).any() and (codes >= 1).any()
    args = _args("fixed_remove", np.random.default_rng(RNG_SEED))
    before = args[1].sum()
    ref.fixed_remove(*args)
    assert args[1].sum() < before
    indptr, ids, _ = ref.fixed_query(*_args("fixed_query", np.random.default_rng(RNG_SEED)))
    assert ids.size > 0 and (np.diff(indptr) > 0).sum() >= 2
    assert ref.sorted_remove(*_args("sorted_remove", np.random.default_rng(RNG_SEED))) >= 3
    assert ref.sorted_remove_at(*_args("sorted_remove_at", np.random.default_rng(RNG_SEED))) >= 3
    sk = ref.sorted_query_sketch_rerank(
        *_args("sorted_query_sketch_rerank", np.random.default_rng(RNG_SEED))
    )
    assert 0 < sk[3] < sk[2]  # both stages ran and the sketch ruled some candidates out


def _tied_tables(rng: np.random.Generator, n_out: int, n_tables: int, n_buckets: int):
    """Tables over n_out ids with few buckets (hit counts tie often) and queries of 4 rows
    with 2 probes per table (the second sometimes repeating the first)."""
    codes = rng.integers(0, n_buckets, (n_out, n_tables)).astype(np.int64)
    offsets, ids = ref.xmc_build_tables(codes, n_buckets)
    first = rng.integers(0, n_buckets, (4, n_tables))
    second = np.where(
        rng.random((4, n_tables)) < 0.3, first, rng.integers(0, n_buckets, (4, n_tables))
    )
    probes = np.stack([first, second], axis=2).reshape(4, 2 * n_tables).astype(np.int64)
    return offsets, ids, probes


@pytest.mark.parametrize("seed", range(6))
def test_infer_candidates_numba_agrees_at_cut_off_ties(seed: int) -> None:
    # the candidate rule of hashed inference, numba against the reference: extras first
    # (a repeated one once), then the most hit ids, a tie at the cut-off to the earlier
    # touched, all in order of first touch; one probe per table and two (multiprobe)
    fast = _usable("numba").kernels
    rng = np.random.default_rng(seed)
    offsets, ids, probes = _tied_tables(rng, 40, 5, 3)
    extra = np.array([7, 31, 7], np.int64)
    cut_ties = 0
    for qcodes, n_probes in ((probes[:, ::2].copy(), 1), (probes, 2)):
        for n_cand in (1, 4, 9, 40):
            want = ref.xmc_infer_candidates(qcodes, offsets, ids, extra, n_cand, n_probes)
            got = fast.xmc_infer_candidates(qcodes, offsets, ids, extra, n_cand, n_probes)
            _assert_same(got, want, f"n_cand={n_cand}, n_probes={n_probes}")
            cand = want[0]
            assert (cand[:, :2] == [7, 31]).all()  # extras first, the repeat dropped
            assert (cand[:, 2:] != 7).all() and (cand[:, 2:] != 31).all()
            # a row whose last pick tied with an id left out: the cut-off split a tie
            for b in range(4):
                hits = np.zeros(40, np.int64)
                for j in range(qcodes.shape[1]):
                    t, c = j // n_probes, qcodes[b, j]
                    if c not in qcodes[b, t * n_probes : j]:
                        hits[ids[t, offsets[t, c] : offsets[t, c + 1]]] += 1
                picked = cand[b, 2:][cand[b, 2:] >= 0]
                out = np.setdiff1d(np.flatnonzero(hits), np.r_[picked, extra])
                if picked.size and out.size and hits[out].max() == hits[picked].min():
                    cut_ties += 1
    assert cut_ties > 0  # the inputs reach the tie rule


def test_infer_topk_is_the_candidates_scored() -> None:
    # one definition of the candidate rule: the reference's xmc_infer_topk scores exactly
    # xmc_infer_candidates' ids (a tie in score goes to the earlier candidate)
    rng = np.random.default_rng(11)
    offsets, ids, probes = _tied_tables(rng, 40, 5, 3)
    h = rng.standard_normal((4, 6)).astype(np.float32)
    w2 = rng.standard_normal((40, 6)).astype(np.float32)
    b2 = rng.standard_normal(40).astype(np.float32)
    w2[[3, 22, 35]] = 0.0  # equal scores, above every other: the tie rule decides
    b2[[3, 22, 35]] = 50.0
    extra = np.array([35], np.int64)
    cand, reads = ref.xmc_infer_candidates(probes, offsets, ids, extra, 12, 2)
    for kernels in (ref, _usable("numba").kernels):
        top, reads_topk, macs = kernels.xmc_infer_topk(
            probes, offsets, ids, h, w2, b2, extra, 12, 4, 2
        )
        assert reads_topk == reads and macs == int((cand >= 0).sum()) * 6
        for b in range(4):
            row = cand[b][cand[b] >= 0]
            order = np.argsort(-(w2[row] @ h[b] + b2[row]), kind="stable")[:4]
            np.testing.assert_array_equal(top[b, : order.size], row[order])
            tied = [r for r in row if r in (3, 22, 35)]
            np.testing.assert_array_equal(top[b, : len(tied)], tied)  # candidate order


# -- registration refuses an incomplete backend -----------------------------------------


def _kernel_module(tmp_path: Path, name: str, body: str) -> str:
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(body))
    return name


def _plugin(backend: Backend) -> object:
    class Plugin:
        @lshcore.hookimpl
        def lshcore_register_backends(self, register: Callable[[str, Any], None]) -> None:
            register(backend.name, backend)

    return Plugin()


def test_a_backend_missing_kernels_is_refused_at_registration(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(tmp_path))
    module = _kernel_module(
        tmp_path,
        "lshcore_partial_kernels",
        """
        import lshcore_no_such_accelerator  # proves registration does not import this module

        __all__ = ["wta_bins_dense", "densify_bins"]

        def wta_bins_dense(x, bin_coords, densify): ...
        def densify_bins(codes, probe_a, probe_c, attempts): ...
        """,
    )
    before = lshcore.backends(usable_only=False)
    with pytest.raises(PluginError) as info:
        lshcore.register_plugin(_plugin(Backend("partial", module)), name="partial-plugin")
    text = str(info.value)
    assert "'partial'" in text and "'partial-plugin'" in text and module in text
    assert "layer_forward" in text and "sorted_query_rerank" in text
    assert "wta_bins_dense," not in text and "densify_bins" not in text  # only the missing
    assert module not in sys.modules
    assert lshcore.backends(usable_only=False) == before  # registry unchanged
    assert "partial-plugin" not in registry.plugins()


def test_a_complete_third_party_backend_registers_without_being_imported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(tmp_path))
    # no __all__: the top-level imports are read instead
    module = _kernel_module(
        tmp_path,
        "lshcore_complete_kernels",
        "from lshcore.kernels.numpy_ref import (\n"
        + "".join(f"    {n},\n" for n in KERNEL_NAMES)
        + ")\n",
    )
    lshcore.register_plugin(_plugin(Backend("complete", module)), name="complete-plugin")
    assert module not in sys.modules
    backend = lshcore.get_backend("complete")
    assert backend.kernels.layer_forward is ref.layer_forward


def test_a_module_that_declares_a_kernel_it_lacks_fails_at_first_use(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(tmp_path))
    names = ", ".join(repr(n) for n in KERNEL_NAMES)
    module = _kernel_module(tmp_path, "lshcore_lying_kernels", f"__all__ = [{names}]\n")
    lshcore.register_plugin(_plugin(Backend("lying", module)), name="lying-plugin")
    with pytest.raises(PluginError, match=r"'lying'.*does not define kernel\(s\) wta_bins_dense"):
        _ = lshcore.get_backend("lying").kernels


def test_an_unknown_kernel_module_is_refused_at_registration() -> None:
    with pytest.raises(PluginError, match=r"'ghost'.*lshcore_no_such_kernel_module"):
        lshcore.register_plugin(_plugin(Backend("ghost", "lshcore_no_such_kernel_module")))
    assert "ghost" not in lshcore.backends(usable_only=False)
