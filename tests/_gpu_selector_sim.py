"""Run by tests/test_gpu_selector.py in a subprocess (NUMBA_ENABLE_CUDASIM must be set
before numba.cuda is imported): the device selector (tables, query codes, hit counting
and the choice of ids on the GPU backend's code path) against the NumPy reference
selector, and what crosses per hashed training step. Prints one ``RESULT {json}`` line:
one verdict per check ("ok" or the traceback) and the measured transfer counts.

The "device" backend is the GPU kernel module with ``host_arrays=False`` (under the
simulator its arrays are NumPy arrays); with ``LSHCORE_GPU_REAL=1`` the real ``cupy``
backend is used instead.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from typing import Any

import numpy as np

from lshcore.core.backend import Backend, count_transfers
from lshcore.kernels import _cuda_kernels as ck
from lshcore.registry.catalog import get_backend
from lshcore.training.layer import Counts
from lshcore.training.model import Model
from lshcore.training.optim import make_optimizer
from lshcore.training.selector import ActiveSelector

REAL = os.environ.get("LSHCORE_GPU_REAL") == "1"
DEVICE: Any = (
    get_backend("cupy")
    if REAL
    else Backend("cuda-sim", "lshcore.kernels.cupy_gpu", host_arrays=False)
)
#: the tags of a host selector's per-step traffic, which a device selector must not make
SELECTOR_TAGS = ("active_ids", "query_codes", "table_codes", "activations")

out: dict[str, Any] = {"simulated": ck.SIMULATED, "cupy_imported": False}


def check(name: str, fn: Any) -> None:
    try:
        fn()
        out[name] = "ok"
    except Exception:
        out[name] = traceback.format_exc()[-2500:]


def to_host(a: Any) -> np.ndarray:
    return DEVICE.to_host(a, "test")


def selector_pair(
    n_in: int, n_out: int, **params: Any
) -> tuple[ActiveSelector, ActiveSelector, Any]:
    """A NumPy selector and a device one over the same rows; the device weight array."""
    rng = np.random.default_rng(4)
    w = rng.standard_normal((n_out, n_in)).astype(np.float32)
    b = (0.1 * rng.standard_normal(n_out)).astype(np.float32)
    ref = ActiveSelector(n_in, n_out, backend="numpy", seed=3, **params).fit(w, b)
    dev = ActiveSelector(n_in, n_out, backend=DEVICE, seed=3, **params).fit(w, b)
    dw, db = DEVICE.to_device(w, "test"), DEVICE.to_device(b, "test")
    dev.attach(dw, db)
    assert dev.selects_on_device, "the device selector stayed on the host"
    return ref, dev, (w, b, dw, db)


def same_sets(policy: str, family: str = "dwta", **params: Any) -> None:
    n_in, n_out, batch = 12, 64, 5
    # few tables, small keys: the simulator runs every CUDA thread as a Python thread
    params = {"k": 2, "l": 5, **params}
    ref, dev, (w, b, dw, db) = selector_pair(
        n_in, n_out, policy=policy, family=family, active=0.1, **{"rehash": "fixed:1", **params}
    )
    rng = np.random.default_rng(7)
    distinct = set()
    for step in range(3):
        x = np.maximum(rng.standard_normal((batch, n_in)), 0).astype(np.float32)
        labels = rng.integers(0, n_out, batch)
        for training in (True, False):
            want = ref.select(x, labels, training=training)
            got = dev.select_device(DEVICE.to_device(x, "test"), labels, training=training)
            ids = to_host(got.ids)
            if got.shared:
                assert want.shared and ids.ndim == 1
                ids = np.broadcast_to(ids, want.ids.shape)
            np.testing.assert_array_equal(ids, want.ids, err_msg=f"{policy} step {step}")
            assert got.work == want.work
            if family != "srp":  # SRP on the device is one dense product, counted so
                assert got.hash_mults == want.hash_mults
            distinct.add(ids.tobytes())
            if training:  # the labels are in every row's set
                assert all(labels[r] in ids[r] for r in range(batch))
        # an optimizer step on some rows, then the (fixed:1) rehash on both sides
        rows = rng.choice(n_out, size=9, replace=False)
        delta = rng.standard_normal((9, n_in)).astype(np.float32)
        w[rows] += delta
        dw[DEVICE.to_device(rows, "test")] += DEVICE.to_device(delta, "test")
        ref.after_update(w, b, rows)
        dev.after_update(dw, db, DEVICE.to_device(rows, "test"))
        np.testing.assert_array_equal(dev.state()[1]["codes"], ref.state()[1]["codes"])
    assert (ref.rehashes, ref.rebuilds) == (dev.rehashes, dev.rebuilds)
    assert ref.rehashes + ref.rebuilds == 3  # every step changed the tables
    assert len(distinct) > 2, "every selection was the same: the check proves nothing"
    # the public select() of a host batch gives the same ActiveSet
    x = np.maximum(rng.standard_normal((batch, n_in)), 0).astype(np.float32)
    np.testing.assert_array_equal(dev.select(x).ids, ref.select(x).ids)


def changed_schedule_samples_the_same_rows() -> None:
    # "changed": the sampled rows' share of changed codes decides; both sides agree on
    # the sample (drawn on the host from positions only), the share and the outcome
    ref, dev, (w, b, dw, db) = selector_pair(
        12, 64, policy="batch_union", active=0.1, rehash="changed:0.05:1", k=2, l=5
    )
    rng = np.random.default_rng(11)
    for _ in range(3):
        rows = rng.choice(64, size=40, replace=False)
        delta = rng.standard_normal((40, 12)).astype(np.float32)
        w[rows] += delta
        dw[DEVICE.to_device(rows, "test")] += DEVICE.to_device(delta, "test")
        ref.after_update(w, b, rows)
        dev.after_update(dw, db, DEVICE.to_device(rows, "test"))
        assert dev.changed_share == ref.changed_share and dev.rehashes == ref.rehashes
        np.testing.assert_array_equal(dev.state()[1]["codes"], ref.state()[1]["codes"])
    assert ref.rehashes > 0


def refit_leaves_the_device_until_attached() -> None:
    # fit() builds new host tables: the device ones are stale until attach() moves them
    ref, dev, (w, b, dw, db) = selector_pair(12, 64, policy="topk", active=0.1, k=2, l=5)
    w2 = np.ascontiguousarray(w[::-1])
    ref.fit(w2, b)
    dev.fit(w2, b)
    assert not dev.selects_on_device
    x = np.maximum(np.random.default_rng(2).standard_normal((4, 12)), 0).astype(np.float32)
    np.testing.assert_array_equal(dev.select(x).ids, ref.select(x).ids)  # on the host
    dev.attach(DEVICE.to_device(w2, "test"), db)
    assert dev.selects_on_device
    np.testing.assert_array_equal(dev.select(x).ids, ref.select(x).ids)  # on the device


def fit_device_hashes_where_the_weights_are() -> None:
    # the first build from device arrays: a host fit's codes on the same values, the same
    # sets after it, and nothing comes down (no weights, no codes)
    rng = np.random.default_rng(5)
    w = rng.standard_normal((64, 12)).astype(np.float32)
    b = (0.1 * rng.standard_normal(64)).astype(np.float32)
    x = np.maximum(rng.standard_normal((4, 12)), 0).astype(np.float32)
    for params in (
        dict(policy="topk", family="dwta"),
        dict(policy="batch_union", family="wta", bin_size=4),
        dict(policy="threshold", family="srp", k=3, l=6, threshold=2),
    ):
        params = {"k": 2, "l": 5, "active": 0.1, "seed": 3, **params}
        ref = ActiveSelector(12, 64, backend="numpy", **params).fit(w, b)
        dev = ActiveSelector(12, 64, backend=DEVICE, **params)
        dw, db = DEVICE.to_device(w, "test"), DEVICE.to_device(b, "test")
        with count_transfers() as log:
            assert dev.fit_device(dw, db) is dev
        assert dev.selects_on_device and not log.tags("d2h"), log.transfers
        np.testing.assert_array_equal(dev.state()[1]["codes"], ref.state()[1]["codes"])
        assert dev.rehash_mults == ref.rehash_mults  # (SRP: n_out * (n_in + 1) * k * l)
        np.testing.assert_array_equal(dev.select(x).ids, ref.select(x).ids)
    # a configuration that selects on the host: one host copy (tag "init"), fit, attach
    params = dict(policy="topk", family="srp", transform="simple_lsh", k=3, l=6, seed=3)
    ref = ActiveSelector(12, 64, backend="numpy", **params).fit(w, b)
    dev = ActiveSelector(12, 64, backend=DEVICE, **params)
    with count_transfers() as log:
        dev.fit_device(dw, db)
    assert not dev.selects_on_device and log.count("init", "d2h") == 2, log.transfers
    assert dev._device_weight is dw  # attached: rehashes read the device rows
    np.testing.assert_array_equal(dev.state()[1]["codes"], ref.state()[1]["codes"])
    # invalid arrays: InputError, the selector as it was (unfitted, or its old tables)
    from lshcore.errors import InputError

    nan_b = DEVICE.to_device(np.where(np.arange(64) == 5, np.nan, b).astype(np.float32), "test")
    fitted = ActiveSelector(12, 64, backend=DEVICE, policy="topk", k=2, l=5).fit_device(dw, db)
    codes = fitted.state()[1]["codes"]
    for sel in (ActiveSelector(12, 64, backend=DEVICE, policy="topk", k=2, l=5), fitted):
        was_fitted = sel.fitted
        for bad_w, bad_b, words in (
            (dw[:10], db, "expected weight (64, 12)"),
            (dw, db[:10], "bias (64,)"),
            (dw, nan_b, "bias: contains NaN"),
        ):
            try:
                sel.fit_device(bad_w, bad_b)
            except InputError as exc:
                assert words in str(exc), str(exc)
            else:
                raise AssertionError(f"fit_device accepted {words}")
            assert sel.fitted is was_fitted and sel.selects_on_device is was_fitted
    np.testing.assert_array_equal(fitted.state()[1]["codes"], codes)
    assert fitted._device_weight is dw


def train_steps(policy_hidden: tuple[str, list[int]], host_selector: bool = False) -> Any:
    """Three training steps of a tiny model on the device; the transfer log."""
    policy, hidden = policy_hidden
    rng = np.random.default_rng(1)
    x = np.maximum(rng.standard_normal((12, 10)), 0).astype(np.float32)
    y = rng.integers(0, 6, 12)
    capable = ActiveSelector._device_capable
    if host_selector:  # the selector as it was: tables and choice on the host
        ActiveSelector._device_capable = lambda self: False  # type: ignore[method-assign]
    try:
        model = Model.mlp(
            10, hidden, 6, seed=3, backend=DEVICE, active=0.25, policy=policy, k=2, l=6
        )
    finally:
        ActiveSelector._device_capable = capable  # type: ignore[method-assign]
    model.set_optimizer(make_optimizer("adam", lr=0.05))
    wss, counts = model.workspaces(), Counts()
    with count_transfers() as log:
        for s in range(3):
            model.train_step(x[4 * s : 4 * s + 4], y[4 * s : 4 * s + 4], wss, counts)
    assert all(la.device_selection is not host_selector for la in model.layers if la.hashed)
    return log


CASES = {
    "batch_rerank": ("batch_rerank", [48]),
    "batch_union": ("batch_union", [48]),
    "topk_two_hashed_layers": ("topk", [40, 32]),
}


def no_selector_traffic_per_step() -> None:
    measured: dict[str, Any] = {}
    for name, case in CASES.items():
        per_step = {}
        for side, host in (("host_selector", True), ("device_selector", False)):
            log = train_steps(case, host_selector=host)
            per_step[side] = {tag: log.count(tag) / 3 for tag in sorted(log.tags())}
        measured[name] = per_step
        dev, host = per_step["device_selector"], per_step["host_selector"]
        crossed = {tag: dev[tag] for tag in SELECTOR_TAGS if tag in dev}
        assert not crossed, (name, crossed)
        # guard: the counter does see the host selector's traffic on the same model
        assert host.get("active_ids", 0) > 0 and host.get("query_codes", 0) > 0, host
    assert measured["topk_two_hashed_layers"]["host_selector"].get("activations", 0) > 0
    out["transfers_per_step"] = measured


for name, fn in [
    ("same_sets_batch_rerank", lambda: same_sets("batch_rerank")),
    ("same_sets_batch_union_wta", lambda: same_sets("batch_union", "wta", bin_size=4)),
    ("same_sets_topk", lambda: same_sets("topk")),
    ("same_sets_topk_srp", lambda: same_sets("topk", "srp", k=3, l=6)),
    ("same_sets_union", lambda: same_sets("union")),
    # new functions drawn at step 2 (a rebuild), hashed on the device
    ("same_sets_after_a_rebuild", lambda: same_sets("batch_rerank", rebuild="fixed:2")),
    ("same_sets_threshold", lambda: same_sets("threshold", threshold=2)),
    ("changed_schedule_samples_the_same_rows", changed_schedule_samples_the_same_rows),
    ("refit_leaves_the_device_until_attached", refit_leaves_the_device_until_attached),
    ("fit_device_hashes_where_the_weights_are", fit_device_hashes_where_the_weights_are),
    ("no_selector_traffic_per_step", no_selector_traffic_per_step),
]:
    check(name, fn)
out["cupy_imported"] = "cupy" in sys.modules
print("RESULT " + json.dumps(out))
