"""GPU benchmark: a hashed output layer vs PyTorch's full and sampled softmax, and LSH
search vs exact search, all on one GPU (run by ``benchmarks/gpu_check.sh``).

Full size (a CUDA device): output layer 670,000 x hidden 128, batch 128; search 1M x 128.
``--simulate``: the same code on tiny sizes under numba's CUDA simulator (NumPy arrays;
set ``NUMBA_ENABLE_CUDASIM=1`` before starting Python), the torch baselines on the CPU:
a dry run that proves the script works, not a measurement.

Writes a markdown table (with the command) to ``--out``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import sys
import time
from typing import Any

import numpy as np


def _sizes(simulate: bool) -> dict[str, int]:
    if simulate:
        return dict(
            n_out=600, hidden=16, batch=8, active=24, k=4, l=3, steps=2, n=3000, q=20,
            features=500, nnz=8,
        )  # fmt: skip
    return dict(
        n_out=670_000, hidden=128, batch=128, active=1024, k=9, l=16, steps=20, n=1_000_000,
        q=1000, features=100_000, nnz=64,
    )  # fmt: skip


class _Clock:
    def __init__(self, xp: Any) -> None:
        self.sync = (lambda: xp.cuda.Device().synchronize()) if xp.__name__ == "cupy" else None

    def __call__(self) -> float:
        if self.sync is not None:
            self.sync()
        return time.perf_counter()


def hashed_layer(xp: Any, s: dict[str, int]) -> dict[str, Any]:
    """Hashed softmax output layer on the GPU kernels: SRP bits of the hidden vector, the
    tables' candidate counts, top candidates + the label as the active set, fused
    gather-multiply forward, softmax over the active set, backward with atomics, Adam on
    the touched rows only."""
    _fresh_pool(xp)
    from lshcore.core.arrayapi import namespace, pad_csr, stable_order
    from lshcore.kernels import cupy_gpu as gk

    n_out, h, batch, m, k, l = (s[n] for n in ("n_out", "hidden", "batch", "active", "k", "l"))  # noqa: E741
    rng = np.random.default_rng(0)
    weight = xp.asarray(rng.standard_normal((n_out, h), dtype=np.float32) * 0.05)
    bias = xp.zeros(n_out, dtype=xp.float32)
    proj = xp.asarray(rng.standard_normal((h, k * l), dtype=np.float32))
    ns = namespace(weight)
    clock = _Clock(xp)

    t0 = clock()
    codes = gk.srp_codes(weight @ proj, k, l)  # (n_out, l)
    order = xp.argsort(codes.T, axis=1, kind="stable")
    sorted_codes = xp.ascontiguousarray(xp.take_along_axis(codes.T, order, axis=1))
    sorted_ids = xp.ascontiguousarray(order.astype(xp.int64))
    build_s = clock() - t0

    size = n_out * h
    cap = min(size, batch * m * h)
    grad_w, grad_b = xp.zeros(size, xp.float32), xp.zeros(n_out, xp.float32)
    mark_w, mark_b = xp.zeros(size, xp.uint8), xp.zeros(n_out, xp.uint8)
    touched_w, touched_b = xp.zeros(cap, xp.int64), xp.zeros(n_out, xp.int64)
    m1w, m2w = xp.zeros(size, xp.float32), xp.zeros(size, xp.float32)
    m1b, m2b = xp.zeros(n_out, xp.float32), xp.zeros(n_out, xp.float32)
    in_ids = xp.ascontiguousarray(xp.broadcast_to(xp.arange(h, dtype=xp.int64), (batch, h)))
    x = xp.asarray(rng.standard_normal((batch, h), dtype=np.float32))
    y = xp.asarray(rng.integers(0, n_out, batch).astype(np.int64))
    times, touched_rows = [], 0
    for step in range(1, s["steps"] + 1):
        t0 = clock()
        qcodes = gk.srp_codes(x @ proj, k, l)
        indptr, ids, counts = gk.sorted_table_candidates(qcodes, sorted_codes, sorted_ids, n_out)
        rows = xp.searchsorted(indptr, xp.arange(ids.shape[0]), side="right") - 1
        best = stable_order(ns, rows, -counts.astype(xp.int64))  # by row, most hits first
        cand = pad_csr(ns, indptr, ids[best], m - 1, -1)
        cand = xp.where(cand == y[:, None], -1, cand)  # the label goes last, once
        out_ids = xp.ascontiguousarray(xp.concatenate([cand, y[:, None]], axis=1))
        z, _ = gk.layer_forward(weight, bias, in_ids, x, out_ids)
        z = xp.where(out_ids >= 0, z, -xp.inf)
        p = xp.exp(z - z.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        grad = p.astype(xp.float32)
        grad[:, -1] -= 1.0
        grad /= batch
        _, n_w, n_b, _ = gk.layer_backward(
            weight, in_ids, x, out_ids, grad, False,
            grad_w, grad_b, mark_w, mark_b, touched_w, touched_b, 0, 0,
        )  # fmt: skip
        gk.sparse_update(
            3,
            weight.reshape(-1),
            grad_w,
            mark_w,
            touched_w,
            n_w,
            m1w,
            m2w,
            1e-3,
            0.9,
            0.999,
            1e-8,
            step,
        )
        gk.sparse_update(
            3, bias, grad_b, mark_b, touched_b, n_b, m1b, m2b, 1e-3, 0.9, 0.999, 1e-8, step
        )
        times.append(clock() - t0)
        touched_rows = n_b
    return {
        "method": f"hashed layer (SRP k={k} l={l}, {m} active)",
        "step_ms": 1e3 * float(np.median(times[1:] if len(times) > 1 else times)),
        "first_step_ms": 1e3 * times[0],
        "memory_mb": _cupy_pool_mb(xp),
        "note": f"tables built in {build_s:.2f}s; {touched_rows} output rows updated per step",
    }


def library_layer(xp: Any, s: dict[str, int], backend: Any, policy: str | None) -> dict[str, Any]:
    """The same output layer through the library's public path, as a user gets it:
    ``Model.mlp(hidden, [], n_out, hashed_output=True)`` on the GPU backend (the device
    selector, the fused kernels, Adam on the touched rows), ``policy`` None = the
    defaults. The batch goes up each step (tag ``input``); the weights never come down."""
    _fresh_pool(xp)
    from lshcore.core.backend import count_transfers
    from lshcore.training.layer import Counts
    from lshcore.training.model import Model
    from lshcore.training.optim import make_optimizer

    n_out, h, batch, m = (s[n] for n in ("n_out", "hidden", "batch", "active"))
    options = {} if policy is None else {"policy": policy}
    clock = _Clock(xp)
    t0 = clock()
    model = Model.mlp(
        h, [], n_out, active=m / n_out, hashed_output=True, seed=0, backend=backend, **options
    )
    model.set_optimizer(make_optimizer("adam", lr=1e-3))
    build_s = clock() - t0
    wss, counts = model.workspaces(), Counts()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, h), dtype=np.float32)
    y = rng.integers(0, n_out, batch).astype(np.int64)
    times = []
    with count_transfers() as log:
        for _ in range(s["steps"]):
            t0 = clock()
            model.train_step(x, y, wss, counts)
            times.append(clock() - t0)
    sel = model.layers[-1].selector
    crossed = sorted(log.tags())
    return {
        "method": f"lshcore Model, hashed output ({sel.policy}, {sel.family_name} "
        f"k={sel.k} l={sel.l}, m={sel.m}{', defaults' if policy is None else ''})",
        "step_ms": 1e3 * float(np.median(times[1:] if len(times) > 1 else times)),
        "first_step_ms": 1e3 * times[0],
        "memory_mb": _cupy_pool_mb(xp),
        "note": f"built in {build_s:.2f}s; selects on device: {sel.selects_on_device}; "
        f"copies during training: {', '.join(crossed) or 'none'}",
    }


def xmc_layer(xp: Any, s: dict[str, int], backend: Any) -> dict[str, Any]:
    """The extreme-classification trainer on the GPU backend, its defaults (one SRP
    active set per batch, 128 hidden): a sparse input of ``features`` columns
    (``nnz`` per row) -> hidden -> ``n_out`` labels, one label per sample; what
    ``lshcore train --dataset xmc --backend cupy`` runs per step."""
    import scipy.sparse as sp

    from lshcore.core.backend import count_transfers
    from lshcore.training.xmc import XMCConfig, XMCModel, XMCTrainer

    _fresh_pool(xp)
    n_out, h, batch = s["n_out"], s["hidden"], s["batch"]
    clock = _Clock(xp)
    t0 = clock()
    model = XMCModel(s["features"], n_out, XMCConfig(hidden=h, batch_size=batch, backend=backend))
    trainer = XMCTrainer(model)
    build_s = clock() - t0
    rng = np.random.default_rng(0)
    times = []
    with count_transfers() as log:
        for _ in range(s["steps"]):
            cols = rng.integers(0, s["features"], (batch, s["nnz"]))
            x = sp.csr_matrix(
                (rng.random(cols.size, dtype=np.float32), cols.ravel(),
                 np.arange(0, cols.size + 1, s["nnz"])),
                shape=(batch, s["features"]),
            )  # fmt: skip
            labels = [np.array([v]) for v in rng.integers(0, n_out, batch)]
            t0 = clock()
            trainer.train_batch(x, labels)
            times.append(clock() - t0)
    cfg = model.config
    return {
        "method": f"lshcore XMC trainer ({cfg.family} k={cfg.k} l={cfg.l}, one set per batch, "
        f"{s['features']} sparse features)",
        "step_ms": 1e3 * float(np.median(times[1:] if len(times) > 1 else times)),
        "first_step_ms": 1e3 * times[0],
        "memory_mb": _cupy_pool_mb(xp),
        "note": f"built in {build_s:.2f}s; copies during training: {', '.join(sorted(log.tags()))}",
    }


def _cupy_pool_mb(xp: Any) -> float | None:
    if xp.__name__ != "cupy":
        return None
    return xp.get_default_memory_pool().total_bytes() / 2**20


def _fresh_pool(xp: Any) -> None:
    """Give the previous method's cached blocks back, so that the pool size a method
    reports is its own."""
    if xp.__name__ == "cupy":
        import gc

        gc.collect()
        xp.get_default_memory_pool().free_all_blocks()


def torch_softmax(s: dict[str, int], device: str, sampled: int | None) -> dict[str, Any]:
    """nn.Linear + full softmax (Adam), or sampled softmax: the label plus ``sampled``
    shared uniform negatives, sparse embedding rows and SparseAdam."""
    import torch
    import torch.nn.functional as F

    n_out, h, batch = s["n_out"], s["hidden"], s["batch"]
    torch.manual_seed(0)
    x = torch.randn(batch, h, device=device)
    y = torch.randint(0, n_out, (batch,), device=device)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    if sampled is None:
        lin = torch.nn.Linear(h, n_out).to(device)
        opt: Any = torch.optim.Adam(lin.parameters(), lr=1e-3)

        def step() -> None:
            loss = F.cross_entropy(lin(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    else:
        emb = torch.nn.Embedding(n_out, h + 1, sparse=True).to(device)  # weight | bias
        opt = torch.optim.SparseAdam(emb.parameters(), lr=1e-3)

        def step() -> None:
            neg = torch.randint(0, n_out, (sampled,), device=device)
            rows = emb(torch.cat([y, neg]))  # (B + S, h + 1)
            logits = x @ rows[:, :h].T + rows[:, h]
            loss = F.cross_entropy(logits, torch.arange(batch, device=device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    times = []
    for _ in range(s["steps"]):
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        step()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    name = (
        "torch nn.Linear + full softmax"
        if sampled is None
        else f"torch sampled softmax ({sampled} negatives)"
    )
    mem = torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else None
    return {
        "method": name,
        "step_ms": 1e3 * float(np.median(times[1:] if len(times) > 1 else times)),
        "first_step_ms": 1e3 * times[0],
        "memory_mb": mem,
        "note": f"Adam; {device}",
    }


def search(xp: Any, s: dict[str, int], backend: Any) -> list[dict[str, Any]]:
    """LSHIndex on the GPU backend vs exact (matmul + top-k) on the same device."""
    _fresh_pool(xp)
    from lshcore.search.index import LSHIndex

    rng = np.random.default_rng(1)
    n, q, d = s["n"], s["q"], s["hidden"]
    data = rng.standard_normal((n, d), dtype=np.float32)
    queries = data[:q] + 0.3 * rng.standard_normal((q, d), dtype=np.float32)
    clock = _Clock(xp)
    t0 = clock()
    index = LSHIndex(d, k=s["k"] + 5, l=s["l"], policy="unbounded", backend=backend, seed=0)
    index.add(data)
    build = clock() - t0
    t0 = clock()
    _, got = index.search(queries, 10)
    lsh_s = clock() - t0
    xd, qd = xp.asarray(data), xp.asarray(queries)
    t0 = clock()
    scores = qd @ xd.T
    top = xp.argpartition(-scores, 10, axis=1)[:, :10]
    exact_s = clock() - t0
    truth = np.asarray(top.get() if hasattr(top, "get") else top)
    recall = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got, truth, strict=True)]))
    return [
        {"method": f"LSHIndex search ({n} x {d}, {q} queries, top-10)", "step_ms": 1e3 * lsh_s,
         "first_step_ms": None, "memory_mb": _cupy_pool_mb(xp),
         "note": f"build {build:.1f}s; recall@10 vs exact {recall:.3f}"},
        {"method": "exact search (matmul + argpartition)", "step_ms": 1e3 * exact_s,
         "first_step_ms": None, "memory_mb": None, "note": "inner product"},
    ]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--simulate", action="store_true", help="tiny dry run under the simulator")
    parser.add_argument("--out", default="benchmarks/results/gpu.md")
    args = parser.parse_args(argv)
    s = _sizes(args.simulate)
    if args.simulate:
        from numba import config

        if not config.ENABLE_CUDASIM:
            print(
                "bench_gpu --simulate: set NUMBA_ENABLE_CUDASIM=1 before Python starts",
                file=sys.stderr,
            )
            return 2
        import array_api_compat.numpy as xp_np  # noqa: F401  (the glue's namespace)

        from lshcore.core.backend import Backend

        xp: Any = np
        backend: Any = Backend("cuda-sim", "lshcore.kernels.cupy_gpu", host_arrays=False)
        device = "cpu"
    else:
        import lshcore

        backend = lshcore.get_backend("cupy")  # BackendUnavailableError with the reason
        import cupy as xp

        device = "cuda"
    rows = [hashed_layer(xp, s)]
    rows += [library_layer(xp, s, backend, policy) for policy in (None, "topk")]
    rows.append(xmc_layer(xp, s, backend))
    if importlib.util.find_spec("torch") is not None:
        rows.append(torch_softmax(s, device, None))
        rows.append(torch_softmax(s, device, 8192 if not args.simulate else 50))
    rows += search(xp, s, backend)
    command = " ".join([os.path.basename(sys.executable), *sys.argv])
    where = (
        "numba CUDA simulator on the CPU (dry run, not a measurement)"
        if args.simulate
        else _gpu_name(xp)
    )
    lines = [
        f"# GPU benchmark{' (simulated)' if args.simulate else ''}",
        "",
        f"Command: `{command}`  ",
        f"Where: {where}; Python {platform.python_version()}  ",
        f"Sizes: {json.dumps(s)}",
        "",
        "| method | step / query batch (ms) | first step (ms) | GPU memory (MiB) | note |",
        "|---|---:|---:|---:|---|",
    ]
    for r in rows:
        fs = "" if r["first_step_ms"] is None else f"{r['first_step_ms']:.1f}"
        mem = "" if r["memory_mb"] is None else f"{r['memory_mb']:.0f}"
        lines.append(f"| {r['method']} | {r['step_ms']:.2f} | {fs} | {mem} | {r['note']} |")
    lines += [
        "",
        "Memory: torch = max_memory_allocated; hashed/LSH = the CuPy pool after the method (freed before each).",
    ]
    text = "\n".join(lines) + "\n"
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        f.write(text)
    print(text)
    return 0


def _gpu_name(xp: Any) -> str:
    try:
        return str(xp.cuda.runtime.getDeviceProperties(0)["name"].decode())
    except Exception:
        return "a CUDA device"


if __name__ == "__main__":
    raise SystemExit(main())
