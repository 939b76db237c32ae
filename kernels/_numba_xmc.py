"""numba kernels of the XMC network (nogil, cached); same API as ``_np_xmc``.

One call handles one batch on one thread without the GIL, so Hogwild workers calling
them run in parallel. Results agree with the NumPy reference up to float32 rounding.
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = [
    "xmc_hidden_forward",
    "xmc_output_forward",
    "xmc_output_backward",
    "xmc_hidden_backward",
    "xmc_adam_rows",
]

_jit = numba.njit(nogil=True, cache=True, fastmath=True)


@_jit
def xmc_hidden_forward(indptr, indices, data, w1, b1):  # type: ignore[no-untyped-def]
    batch = indptr.shape[0] - 1
    hid = w1.shape[1]
    out = np.empty((batch, hid), np.float32)
    for b in range(batch):
        acc = b1.copy()
        for t in range(indptr[b], indptr[b + 1]):
            f = indices[t]
            v = data[t]
            for k in range(hid):
                acc[k] += v * w1[f, k]
        for k in range(hid):
            out[b, k] = acc[k] if acc[k] > 0 else np.float32(0)
    return out


@_jit
def xmc_output_forward(h, w2, b2, act):  # type: ignore[no-untyped-def]
    batch, m = act.shape
    hid = h.shape[1]
    out = np.zeros((batch, m), np.float32)
    for b in range(batch):
        for j in range(m):
            r = act[b, j]
            if r < 0:
                continue
            acc = np.float32(0)
            for k in range(hid):
                acc += w2[r, k] * h[b, k]
            out[b, j] = acc + b2[r]
    return out


@_jit
def xmc_output_backward(h, w2, act, logits, labels, slot):  # type: ignore[no-untyped-def]
    batch, m = act.shape
    hid = h.shape[1]
    # rows in order of first touch
    rows_buf = np.empty(batch * m, np.int64)
    n_rows = 0
    for b in range(batch):
        for j in range(m):
            r = act[b, j]
            if r >= 0 and slot[r] < 0:
                slot[r] = n_rows
                rows_buf[n_rows] = r
                n_rows += 1
    grad_w = np.zeros((n_rows, hid), np.float32)
    grad_b = np.zeros(n_rows, np.float32)
    grad_h = np.zeros((batch, hid), np.float32)
    g = np.zeros(m, np.float64)
    is_lab = np.zeros(m, np.bool_)
    loss = 0.0
    inv_b = 1.0 / batch
    for b in range(batch):
        zmax = -np.inf
        for j in range(m):
            is_lab[j] = False
            if act[b, j] >= 0 and logits[b, j] > zmax:
                zmax = np.float64(logits[b, j])
        n_lab = 0
        for j in range(m):
            r = act[b, j]
            if r < 0:
                continue
            for q in range(labels.shape[1]):
                if labels[b, q] == r:
                    is_lab[j] = True
            if is_lab[j]:
                n_lab += 1
        if n_lab == 0:
            continue
        s = 0.0
        for j in range(m):
            if act[b, j] >= 0:
                g[j] = np.exp(np.float64(logits[b, j]) - zmax)
                s += g[j]
        log_s = np.log(s)
        t = 1.0 / n_lab
        for j in range(m):
            r = act[b, j]
            if r < 0:
                continue
            p = g[j] / s
            if is_lab[j]:
                loss -= t * (np.float64(logits[b, j]) - zmax - log_s)
                gj = np.float32((p - t) * inv_b)
            else:
                gj = np.float32(p * inv_b)
            sl = slot[r]
            grad_b[sl] += gj
            for k in range(hid):
                grad_h[b, k] += gj * w2[r, k]
                grad_w[sl, k] += gj * h[b, k]
    rows = rows_buf[:n_rows].copy()
    for i in range(n_rows):
        slot[rows[i]] = -1
    return loss * inv_b, grad_h, rows, grad_w, grad_b


@_jit
def xmc_hidden_backward(indptr, indices, data, h, grad_h, slot):  # type: ignore[no-untyped-def]
    batch = indptr.shape[0] - 1
    hid = h.shape[1]
    nnz = indptr[batch]
    rows_buf = np.empty(nnz, np.int64)
    n_rows = 0
    for t in range(nnz):
        f = indices[t]
        if slot[f] < 0:
            slot[f] = n_rows
            rows_buf[n_rows] = f
            n_rows += 1
    grad_w = np.zeros((n_rows, hid), np.float32)
    grad_b = np.zeros(hid, np.float32)
    dz = np.empty(hid, np.float32)
    for b in range(batch):
        for k in range(hid):
            dz[k] = grad_h[b, k] if h[b, k] > 0 else np.float32(0)
            grad_b[k] += dz[k]
        for t in range(indptr[b], indptr[b + 1]):
            sl = slot[indices[t]]
            v = data[t]
            for k in range(hid):
                grad_w[sl, k] += v * dz[k]
    rows = rows_buf[:n_rows].copy()
    for i in range(n_rows):
        slot[rows[i]] = -1
    return rows, grad_w, grad_b


@_jit
def xmc_adam_rows(param, m, v, last, rows, grad, step, lr, beta1, beta2, eps):  # type: ignore[no-untyped-def]
    cols = param.shape[1]
    c1 = np.float32(1.0 - beta1**step)
    c2 = np.float32(1.0 - beta2**step)
    a1 = np.float32(beta1)
    a2 = np.float32(beta2)
    o1 = np.float32(1.0 - beta1)
    o2 = np.float32(1.0 - beta2)
    lr32 = np.float32(lr)
    eps32 = np.float32(eps)
    for i in range(rows.shape[0]):
        r = rows[i]
        d1 = np.float32(1.0)
        d2 = np.float32(1.0)
        if last[r] > 0:
            skipped = step - 1 - last[r]
            if skipped > 0:
                d1 = np.float32(beta1**skipped)
                d2 = np.float32(beta2**skipped)
        for k in range(cols):
            gk = grad[i, k]
            mk = a1 * (m[r, k] * d1) + o1 * gk
            vk = a2 * (v[r, k] * d2) + o2 * gk * gk
            m[r, k] = mk
            v[r, k] = vk
            param[r, k] -= lr32 * (mk / c1) / (np.sqrt(vk / c2) + eps32)
        last[r] = step
