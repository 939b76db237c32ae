"""numba.cuda kernels of the GPU backend: one source for the device and for CI.

On a CUDA device they run on CuPy arrays or torch CUDA tensors (anything with
``__cuda_array_interface__``; NumPy arguments are copied to the device and back by
numba). Under numba's simulator (``NUMBA_ENABLE_CUDASIM=1``, set before numba.cuda is
first imported) the same source runs on the CPU on NumPy arrays: that is how CI tests it
(``tests/test_gpu_kernels.py``). Importing this module imports numba.cuda.

Each ``launch_*`` function takes arrays of one place (all device, or all host) and
allocates nothing; the callers (``_cuda_ops``, ``_cupy_tables``) own the glue.
"""

from __future__ import annotations

import math
from typing import Any

from numba import config, cuda

__all__ = [
    "SIMULATED",
    "launch_srp_pack",
    "launch_wta_bins",
    "launch_densify",
    "launch_insert_winner",
    "launch_insert_write",
    "launch_remove_mark",
    "launch_remove_pack",
    "launch_probe_gather",
    "launch_count_candidates",
    "launch_gather_forward",
    "launch_backward_weights",
    "launch_backward_input",
    "launch_sparse_update",
]

#: True under numba's CUDA simulator (smaller blocks: every simulated thread is a thread)
SIMULATED = bool(getattr(config, "ENABLE_CUDASIM", False))
_TPB = 32 if SIMULATED else 256


def _grid(n: int) -> tuple[int, int]:
    return max(1, math.ceil(n / _TPB)), _TPB


# -- hashing ---------------------------------------------------------------------------


@cuda.jit
def _srp_pack(proj, k, out):  # type: ignore[no-untyped-def]
    i = cuda.grid(1)
    n, n_tables = out.shape
    if i < n * n_tables:
        r = i // n_tables
        t = i % n_tables
        code = 0
        for j in range(k):
            if proj[r, t * k + j] >= 0:
                code |= 1 << j
        out[r, t] = code


def launch_srp_pack(proj: Any, k: int, out: Any) -> None:
    """proj (n, l*k) float32 projections -> out (n, l) int64: bit j of table t = proj >= 0."""
    if out.size:
        _srp_pack[_grid(out.size)](proj, k, out)


@cuda.jit
def _wta_bins(x, bin_coords, densify, out):  # type: ignore[no-untyped-def]
    i = cuda.grid(1)
    n, n_bins = out.shape
    if i < n * n_bins:
        r = i // n_bins
        j = i % n_bins
        best = -math.inf
        pos = -1
        for q in range(bin_coords.shape[1]):
            v = float(x[r, bin_coords[j, q]])
            if v > best and (not densify or v != 0.0):
                best = v
                pos = q
        out[r, j] = pos


def launch_wta_bins(x: Any, bin_coords: Any, densify: bool, out: Any) -> None:
    """x (n, dim) float32, bin_coords (n_bins, b) int64 -> out (n, n_bins) int64 codes
    (largest entry per bin, ties low; densify: zeros do not compete, -1 = empty)."""
    if out.size:
        _wta_bins[_grid(out.size)](x, bin_coords, densify, out)


@cuda.jit
def _densify(codes, probe_a, probe_c, attempts, prime, out):  # type: ignore[no-untyped-def]
    # one thread per (row, group), looping over its bins: a bin's work is a few reads,
    # and n_bins is small (k * l), so per-bin threads would mostly pay for scheduling
    i = cuda.grid(1)
    n, groups, n_bins = codes.shape
    if i < n * groups:
        r = i // groups
        g = i % groups
        any_full = False
        for j in range(n_bins):
            if codes[r, g, j] >= 0:
                any_full = True
        for j in range(n_bins):
            code = codes[r, g, j]
            if code < 0 and not any_full:
                code = 0  # no non-empty bin: 0 everywhere
            elif code < 0:
                # the reference's order: the seeded probes, then the next non-empty bin
                # circularly (reading only ``codes``, never a bin filled in this pass)
                for t in range(attempts):
                    target = ((probe_a[g] * (j * attempts + t) + probe_c[g]) % prime) % n_bins
                    if codes[r, g, target] >= 0:
                        code = codes[r, g, target]
                        break
                if code < 0:
                    for s in range(1, n_bins):
                        c = codes[r, g, (j + s) % n_bins]
                        if c >= 0:
                            code = c
                            break
            out[r, g, j] = code


def launch_densify(
    codes: Any, probe_a: Any, probe_c: Any, attempts: int, prime: int, out: Any
) -> None:
    """codes (n, groups, n_bins) int64 (-1 = empty bin), probe_a/probe_c (groups,) int64
    -> out (same shape) int64: each empty bin borrows as ``_np_hashing.densify_bins``."""
    n_rows = codes.shape[0] * codes.shape[1]
    if n_rows:
        _densify[_grid(n_rows)](codes, probe_a, probe_c, attempts, prime, out)


# -- fixed-capacity tables -------------------------------------------------------------


@cuda.jit
def _insert_winner(flat, rank, winner):  # type: ignore[no-untyped-def]
    i = cuda.grid(1)
    if i < flat.shape[0] and flat[i] >= 0:
        cuda.atomic.max(winner, flat[i], rank[i])


def launch_insert_winner(flat: Any, rank: Any, winner: Any) -> None:
    """flat (a,) int64 slot per arrival (-1 = dropped), rank (a,) int64 -> winner
    (L*T*C,) int64 (init -1) = highest rank landing in each slot (atomic max)."""
    if flat.shape[0]:
        _insert_winner[_grid(flat.shape[0])](flat, rank, winner)


@cuda.jit
def _insert_write(flat, rank, ids, winner, slots, gs, cnt, fill, head, seen, cap, reservoir):  # type: ignore[no-untyped-def]
    i = cuda.grid(1)
    if i < flat.shape[0]:
        f = flat[i]
        if f >= 0 and winner[f] == rank[i]:
            slots[f] = ids[i]
        if rank[i] == cnt[i] - 1:  # the last arrival of its bucket writes the bucket state
            g = gs[i]
            total = fill[g] + cnt[i]
            if not reservoir:
                over = total - cap
                if over > 0:
                    head[g] = (head[g] + over) % cap
            fill[g] = min(total, cap)
            seen[g] += cnt[i]


def launch_insert_write(
    flat: Any,
    rank: Any,
    ids: Any,
    winner: Any,
    slots: Any,
    gs: Any,
    cnt: Any,
    fill: Any,
    head: Any,
    seen: Any,
    cap: int,
    reservoir: bool,
) -> None:
    """Write each slot's winning id into slots (L*T*C,) int32 and each touched bucket's
    fill/head (L*T,) int32 and seen (L*T,) int64 (gs/cnt: bucket and bucket arrivals)."""
    if flat.shape[0]:
        _insert_write[_grid(flat.shape[0])](
            flat, rank, ids, winner, slots, gs, cnt, fill, head, seen, cap, reservoir
        )


@cuda.jit
def _remove_mark(slots, fill, head, g, ids, cap, kill, touched):  # type: ignore[no-untyped-def]
    i = cuda.grid(1)
    if i < g.shape[0]:
        b = g[i]
        touched[b] = 1
        for c in range(fill[b]):
            s = (head[b] + c) % cap
            if slots[b * cap + s] == ids[i]:
                kill[b * cap + s] = 1


def launch_remove_mark(
    slots: Any, fill: Any, head: Any, g: Any, ids: Any, cap: int, kill: Any, touched: Any
) -> None:
    """Mark (kill (L*T*C,) uint8) the live slots holding ids (a,) int32 in buckets g (a,)."""
    if g.shape[0]:
        _remove_mark[_grid(g.shape[0])](slots, fill, head, g, ids, cap, kill, touched)


@cuda.jit
def _remove_pack(src, slots, fill, head, cap, kill, touched):  # type: ignore[no-untyped-def]
    b = cuda.grid(1)
    if b < fill.shape[0] and touched[b]:
        kept = 0
        for c in range(fill[b]):
            s = (head[b] + c) % cap
            if kill[b * cap + s] == 0:
                slots[b * cap + kept] = src[b * cap + s]
                kept += 1
        for c in range(kept, cap):
            slots[b * cap + c] = -1
        fill[b] = kept
        head[b] = 0


def launch_remove_pack(
    src: Any, slots: Any, fill: Any, head: Any, cap: int, kill: Any, touched: Any
) -> None:
    """Re-pack every touched bucket oldest first from slot 0 (head 0), dropping killed
    slots; src is a copy of slots (L*T*C,) int32 taken before."""
    if fill.shape[0]:
        _remove_pack[_grid(fill.shape[0])](src, slots, fill, head, cap, kill, touched)


@cuda.jit
def _probe_gather(slots, qb, table_size, cap, out):  # type: ignore[no-untyped-def]
    i = cuda.grid(1)
    m, n_tables, n_probes = qb.shape
    if i < m * n_tables * n_probes:
        q = i // (n_tables * n_probes)
        t = (i // n_probes) % n_tables
        p = i % n_probes
        b = qb[q, t, p]
        base = (t * n_probes + p) * cap
        for c in range(cap):
            out[q, base + c] = slots[(t * table_size + b) * cap + c] if b >= 0 else -1


def launch_probe_gather(slots: Any, qb: Any, table_size: int, cap: int, out: Any) -> None:
    """slots (L*T*C,) int32, qb (m, L, P) int64 (-1 = skip) -> out (m, L*P*C) int32 ids
    (-1 = empty or skipped)."""
    if qb.size:
        _probe_gather[_grid(qb.size)](slots, qb, table_size, cap, out)


@cuda.jit
def _count_candidates(qcodes, sorted_codes, sorted_ids, counts):  # type: ignore[no-untyped-def]
    i = cuda.grid(1)
    batch, n_tables = qcodes.shape
    if i < batch * n_tables:
        r = i // n_tables
        t = i % n_tables
        code = qcodes[r, t]
        n = sorted_codes.shape[1]
        lo, hi = 0, n  # first position with sorted_codes[t] >= code
        while lo < hi:
            mid = (lo + hi) // 2
            if sorted_codes[t, mid] < code:
                lo = mid + 1
            else:
                hi = mid
        p = lo
        while p < n and sorted_codes[t, p] == code:
            cuda.atomic.add(counts, (r, sorted_ids[t, p]), 1)
            p += 1


def launch_count_candidates(qcodes: Any, sorted_codes: Any, sorted_ids: Any, counts: Any) -> None:
    """qcodes (B, L) int64, sorted_codes/sorted_ids (L, n) int64 -> counts (B, n_out)
    int32 += number of tables whose bucket holds the id (atomic add)."""
    if qcodes.size:
        _count_candidates[_grid(qcodes.size)](qcodes, sorted_codes, sorted_ids, counts)


# -- hashed sparse layer ---------------------------------------------------------------


@cuda.jit
def _gather_forward(weight, bias, in_ids, in_vals, out_ids, z):  # type: ignore[no-untyped-def]
    i = cuda.grid(1)
    batch, m = out_ids.shape
    if i < batch * m:
        r = i // m
        j = i % m
        o = out_ids[r, j]
        acc = 0.0
        if o >= 0:
            acc = bias[o]
            for t in range(in_ids.shape[1]):
                c = in_ids[r, t]
                if c >= 0 and in_vals[r, t] != 0:
                    acc += weight[o, c] * in_vals[r, t]
        z[r, j] = acc


def launch_gather_forward(
    weight: Any, bias: Any, in_ids: Any, in_vals: Any, out_ids: Any, z: Any
) -> None:
    """z (B, m) float32 = bias[o] + sum_t weight[o, in_ids] * in_vals over the active ids
    o = out_ids (B, m) int64 (-1 -> 0): the fused gather-multiply of the layer."""
    if z.size:
        _gather_forward[_grid(z.size)](weight, bias, in_ids, in_vals, out_ids, z)


@cuda.jit
def _backward_weights(in_ids, in_vals, out_ids, grad_out, n_in, grad_w, grad_b):  # type: ignore[no-untyped-def]
    i = cuda.grid(1)
    batch, m = out_ids.shape
    if i < batch * m:
        r = i // m
        j = i % m
        o = out_ids[r, j]
        g = grad_out[r, j]
        if o >= 0 and g != 0:
            cuda.atomic.add(grad_b, o, g)
            for t in range(in_ids.shape[1]):
                c = in_ids[r, t]
                v = in_vals[r, t]
                if c >= 0 and v != 0:
                    cuda.atomic.add(grad_w, o * n_in + c, g * v)


def launch_backward_weights(
    in_ids: Any, in_vals: Any, out_ids: Any, grad_out: Any, n_in: int, grad_w: Any, grad_b: Any
) -> None:
    """grad_w (n_out*n_in,) += outer(grad_out, in_vals) on the active pairs, grad_b
    (n_out,) += grad_out (float32 atomic adds)."""
    if out_ids.size:
        _backward_weights[_grid(out_ids.size)](
            in_ids, in_vals, out_ids, grad_out, n_in, grad_w, grad_b
        )


@cuda.jit
def _backward_input(weight, in_ids, in_vals, out_ids, grad_out, grad_in):  # type: ignore[no-untyped-def]
    i = cuda.grid(1)
    batch, w = in_ids.shape
    if i < batch * w:
        r = i // w
        t = i % w
        c = in_ids[r, t]
        acc = 0.0
        if c >= 0 and in_vals[r, t] != 0:
            for j in range(out_ids.shape[1]):
                o = out_ids[r, j]
                g = grad_out[r, j]
                if o >= 0 and g != 0:
                    acc += weight[o, c] * g
        grad_in[r, t] = acc


def launch_backward_input(
    weight: Any, in_ids: Any, in_vals: Any, out_ids: Any, grad_out: Any, grad_in: Any
) -> None:
    """grad_in (B, w) float32 = sum_j weight[out_ids[:, j], in_ids] * grad_out[:, j]."""
    if grad_in.size:
        _backward_input[_grid(grad_in.size)](weight, in_ids, in_vals, out_ids, grad_out, grad_in)


@cuda.jit
def _sparse_update(
    kind, param, grad, mark, touched, n, state1, state2, lr, h1, h2, eps, c1, c2, d1, d2
):  # type: ignore[no-untyped-def]
    i = cuda.grid(1)
    if i < n:
        idx = touched[i]
        g = grad[idx]
        if kind == 0:
            param[idx] -= lr * g
        elif kind == 1:
            state1[idx] = h1 * state1[idx] + g
            param[idx] -= lr * state1[idx]
        elif kind == 2:
            state1[idx] += g * g
            param[idx] -= lr * g / (math.sqrt(state1[idx]) + eps)
        else:
            m1 = h1 * state1[idx] + d1 * g
            m2 = h2 * state2[idx] + d2 * g * g
            state1[idx] = m1
            state2[idx] = m2
            param[idx] -= lr * (m1 / c1) / (math.sqrt(m2 / c2) + eps)
        grad[idx] = 0
        mark[idx] = 0


def launch_sparse_update(
    kind: int,
    param: Any,
    grad: Any,
    mark: Any,
    touched: Any,
    n: int,
    state1: Any,
    state2: Any,
    hyper: tuple[Any, ...],
) -> None:
    """One optimizer step on the flat rows touched[:n] of param (float32), in place;
    hyper = (lr, h1, h2, eps, c1, c2, 1 - h1, 1 - h2) float32 (c1, c2: Adam's bias
    corrections)."""
    if n:
        _sparse_update[_grid(n)](kind, param, grad, mark, touched, n, state1, state2, *hyper)
