"""The GPU backend's hashing and layer kernels: numba.cuda kernels plus array-API glue.

Same names, signatures and results as the NumPy reference (``_np_hashing``,
``_np_layer``). Arrays stay where they arrive: CuPy arrays (or anything with
``__cuda_array_interface__`` that array-api-compat knows) are worked on in place on
the device; NumPy arrays are copied to the device and back by numba per launch (and
run on the CPU under the simulator, which is how CI checks these functions).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lshcore.core.arrayapi import namespace
from lshcore.kernels import _cuda_kernels as ck
from lshcore.kernels import _np_hashing, _np_layer
from lshcore.kernels._np_hashing import PROBE_PRIME
from lshcore.kernels._np_layer import OPT_MULTS, select_active

# the constants of the reference's tie-break hash (``_np_layer.tiebreak_priority``)
_M1, _M2, _M3, _M4 = (int(v) for v in (_np_layer._M1, _np_layer._M2, _np_layer._M3, _np_layer._M4))

__all__ = [
    "srp_codes",
    "wta_bins_dense",
    "layer_forward",
    "layer_backward",
    "sparse_update",
    "block_update",
    "sorted_table_candidates",
    "table_hit_counts",
    "select_from_tables",
    "densify_bins",
    "tiebreak_priority",
]


def srp_codes(proj: Any, k: int, l: int) -> Any:  # noqa: E741
    """Signed-random-projection codes: proj (n, l*k) float32 -> (n, l) int64, bit j of
    table t set when ``proj[:, t*k + j] >= 0`` (as ``SRP.hash``)."""
    xp = namespace(proj)
    out = xp.zeros((proj.shape[0], l), dtype=xp.int64)
    ck.launch_srp_pack(proj, k, out)
    return out


def wta_bins_dense(x: Any, bin_coords: Any, densify: bool) -> Any:
    """DWTA/WTA bin codes: x (n, dim) float32, bin_coords (n_bins, b) int64 -> (n, n_bins)
    int64, the position of each bin's largest entry (ties low); -1 = empty bin (densify)."""
    xp = namespace(x)
    out = xp.full((x.shape[0], bin_coords.shape[0]), -1, dtype=xp.int64)
    ck.launch_wta_bins(x, bin_coords, bool(densify), out)
    return out


def densify_bins(codes: Any, probe_a: Any, probe_c: Any, attempts: int) -> Any:
    """Empty (-1) bins of codes (n, groups, n_bins) int64 borrow a code (probe_a, probe_c
    (groups,) int64) -> a new array, every entry >= 0, one thread per row and group, where the
    codes live (the probe constants are tiny: numba copies host ones per launch). Host
    codes (a CSR query's bins, MinHash) stay on the host: the NumPy reference, not a
    launch that would copy them up and back uncounted."""
    if isinstance(codes, np.ndarray):
        return _np_hashing.densify_bins(codes, probe_a, probe_c, attempts)
    xp = namespace(codes)
    out = xp.empty(codes.shape, dtype=xp.int64)
    ck.launch_densify(codes, probe_a, probe_c, int(attempts), PROBE_PRIME, out)
    return out


def tiebreak_priority(seed: int, rows: Any, ids: Any) -> Any:
    """rows (B, 1), ids (1, n) int64 -> (B, n) int64 in [0, 65535]: the reference's
    hash (``_np_layer.tiebreak_priority``) in uint64 array arithmetic, computed where
    rows and ids live (CuPy on a device, so a selection needs no host priorities)."""
    xp = namespace(rows, ids)
    u64 = xp.uint64

    def u(v: int) -> Any:
        return xp.asarray(v, dtype=u64)

    z = (
        u(int(seed)) * u(_M1)
        + xp.astype(xp.asarray(rows), u64) * u(_M2)
        + xp.astype(xp.asarray(ids), u64) * u(_M3)
    )
    z = z ^ (z >> u(31))
    z = z * u(_M4)
    z = z ^ (z >> u(32))
    return xp.astype(z & u(0xFFFF), xp.int64)


def _active_pairs(xp: Any, in_ids: Any, in_vals: Any, out_ok: Any) -> int:
    in_ok = (in_ids >= 0) & (in_vals != 0)
    per_in = xp.sum(xp.astype(in_ok, xp.int64), axis=1)
    per_out = xp.sum(xp.astype(out_ok, xp.int64), axis=1)
    return int(xp.sum(per_in * per_out))


def layer_forward(
    weight: Any, bias: Any, in_ids: Any, in_vals: Any, out_ids: Any
) -> tuple[Any, int]:
    """z (B, m) float32 of the active neurons out_ids (B, m) int64 for the sparse input
    (in_ids (B, w) int64 -1 padded, in_vals (B, w) float32) -> (z, multiply-adds)."""
    xp = namespace(weight)
    z = xp.zeros(out_ids.shape, dtype=xp.float32)
    ck.launch_gather_forward(weight, bias, in_ids, in_vals, out_ids, z)
    return z, _active_pairs(xp, in_ids, in_vals, out_ids >= 0)


def layer_backward(
    weight: Any,
    in_ids: Any,
    in_vals: Any,
    out_ids: Any,
    grad_out: Any,
    need_grad_in: bool,
    grad_w: Any,
    grad_b: Any,
    mark_w: Any,
    mark_b: Any,
    touched_w: Any,
    touched_b: Any,
    n_w: int,
    n_b: int,
) -> tuple[Any, int, int, int]:
    """Backward of :func:`layer_forward` (see the contract): atomic adds into the flat
    grad_w (n_out*n_in,) / grad_b (n_out,); first touches appended ascending."""
    xp = namespace(weight)
    n_in = weight.shape[1]
    grad_in = xp.zeros(in_ids.shape, dtype=xp.float32)
    ck.launch_backward_weights(in_ids, in_vals, out_ids, grad_out, n_in, grad_w, grad_b)
    if need_grad_in:
        ck.launch_backward_input(weight, in_ids, in_vals, out_ids, grad_out, grad_in)
    out_ok = (out_ids >= 0) & (grad_out != 0)
    in_ok = (in_ids >= 0) & (in_vals != 0)
    rows = xp.where(out_ok, out_ids, xp.zeros_like(out_ids))
    cols = xp.where(in_ok, in_ids, xp.zeros_like(in_ids))
    b, m = out_ids.shape
    w = in_ids.shape[1]
    pair = xp.reshape(out_ok, (b, m, 1)) & xp.reshape(in_ok, (b, 1, w))
    flat = (xp.reshape(rows, (b, m, 1)) * n_in + xp.reshape(cols, (b, 1, w)))[pair]
    n_w = _append_new(xp, flat, mark_w, touched_w, n_w)
    n_b = _append_new(xp, rows[out_ok], mark_b, touched_b, n_b)
    mults = _active_pairs(xp, in_ids, in_vals, out_ok) * (2 if need_grad_in else 1)
    return grad_in, n_w, n_b, mults


def _append_new(xp: Any, idx: Any, mark: Any, touched: Any, n: int) -> int:
    uniq = xp.sort(xp.unique_values(idx))
    new = uniq[xp.take(mark, uniq, axis=0) == 0]
    mark[new] = 1  # NumPy/CuPy integer-array assignment (not an array-API path)
    touched[n : n + new.shape[0]] = new
    return n + int(new.shape[0])


def sparse_update(
    kind: int,
    param: Any,
    grad: Any,
    mark: Any,
    touched: Any,
    n: int,
    state1: Any,
    state2: Any,
    lr: float,
    h1: float,
    h2: float,
    eps: float,
    step: int,
) -> int:
    """Optimizer step (0 SGD, 1 momentum, 2 Adagrad, 3 Adam) on the flat entries
    touched[:n] of param (float32) in place, one thread per touched entry; zeroes grad
    and mark there. Returns the multiply-adds (``OPT_MULTS[kind]`` per entry), as the
    reference does."""
    f = np.float32
    hyper = (
        f(lr),
        f(h1),
        f(h2),
        f(eps),
        f(1.0 - h1**step),
        f(1.0 - h2**step),
        f(1 - h1),
        f(1 - h2),
    )
    ck.launch_sparse_update(int(kind), param, grad, mark, touched, int(n), state1, state2, hyper)
    return int(n) * OPT_MULTS[kind]


def block_update(
    kind: int,
    param: Any,
    grad: Any,
    rows: Any,
    cols: Any,
    state1: Any,
    state2: Any,
    lr: float,
    h1: float,
    h2: float,
    eps: float,
    step: int,
) -> int:
    """One optimizer step on the block ``param[rows][:, cols]`` (a shared active set) in
    place, where the arrays live (CuPy on a device): the reference's formulas, written
    with the arrays' own indexing instead of ``np.ix_`` (which would pull CuPy arrays to
    the host). Returns the multiply-adds (``OPT_MULTS`` per entry)."""
    xp = namespace(param)
    ix = (xp.reshape(rows, (-1, 1)), xp.reshape(cols, (1, -1)))
    g = xp.astype(grad, xp.float32)
    _np_layer.optimizer_step(kind, param, g, ix, state1, state2, lr, h1, h2, eps, step, xp.sqrt)
    return int(rows.shape[0] * cols.shape[0] * OPT_MULTS[kind])


def sorted_table_candidates(
    qcodes: Any, sorted_codes: Any, sorted_ids: Any, n_out: int
) -> tuple[Any, Any, Any]:
    """Candidates of qcodes (B, L) int64 in code-sorted tables (sorted_codes/sorted_ids
    (L, n)) -> CSR (indptr (B+1,) int64, ids int64 ascending, counts int32), counted by
    atomic adds into a dense (B, n_out) int32 scratch."""
    xp = namespace(qcodes)
    batch = qcodes.shape[0]
    counts = xp.zeros((batch, n_out), dtype=xp.int32)
    ck.launch_count_candidates(qcodes, sorted_codes, sorted_ids, counts)
    rows, cols = xp.nonzero(counts)  # row-major: ids ascending within each row
    rows, cols = xp.astype(rows, xp.int64), xp.astype(cols, xp.int64)
    indptr = xp.searchsorted(rows, xp.arange(batch + 1, dtype=xp.int64), side="left")
    hits = xp.take(xp.reshape(counts, (-1,)), rows * n_out + cols, axis=0)
    return xp.astype(indptr, xp.int64), cols, xp.astype(hits, xp.int32)


def table_hit_counts(qcodes: Any, sorted_codes: Any, sorted_ids: Any, n_out: int) -> Any:
    """The dense hit counter (B, n_out) int32 of qcodes (B, L) int64 in code-sorted
    tables (sorted_codes/sorted_ids (L, n) int64): atomic adds, where the arrays live."""
    xp = namespace(qcodes)
    counts = xp.zeros((qcodes.shape[0], n_out), dtype=xp.int32)
    ck.launch_count_candidates(qcodes, sorted_codes, sorted_ids, counts)
    return counts


def select_from_tables(
    qcodes: Any,
    sorted_codes: Any,
    sorted_ids: Any,
    n_out: int,
    labels: Any,
    m: int,
    min_count: int,
    use_counts: bool,
    pad_random: bool,
    seed: int,
    tie: Any = None,
    work: Any = None,
) -> Any:
    """:func:`sorted_table_candidates` on the device, then the reference ``select_active``
    on the host -> (B, m) int64 active ids (a host array). When the caller tallies the
    selection work (``work``, (4,) int64), the whole selection runs in the NumPy reference,
    which counts it."""
    if work is not None:
        return _np_layer.select_from_tables(
            _host(qcodes),
            _host(sorted_codes),
            _host(sorted_ids),
            n_out,
            _host(labels),
            m,
            min_count,
            use_counts,
            pad_random,
            seed,
            None if tie is None else _host(tie),
            work,
        )
    indptr, ids, counts = sorted_table_candidates(qcodes, sorted_codes, sorted_ids, n_out)
    tie_h = None if tie is None else _host(tie)
    return select_active(
        _host(indptr),
        _host(ids),
        _host(counts),
        _host(labels),
        n_out,
        m,
        min_count,
        use_counts,
        pad_random,
        seed,
        tie_h,
    )


def _host(a: Any) -> np.ndarray:
    get = getattr(a, "get", None)
    return np.asarray(get() if callable(get) and not isinstance(a, np.ndarray) else a)
