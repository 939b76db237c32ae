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

from typing import Any

import numpy as np
from _gpu_sim import device_backend, out, report

from lshcore.core.backend import count_transfers
from lshcore.training.layer import Counts
from lshcore.training.model import Model
from lshcore.training.optim import make_optimizer
from lshcore.training.selector import LSH_POLICIES, ActiveSelector, SparseBatch

DEVICE: Any = device_backend()
#: the tags of a host selector's per-step traffic, which a device selector must not make
SELECTOR_TAGS = ("active_ids", "query_codes", "table_codes", "activations")


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


def same_sets(
    policy: str, family: str = "dwta", outgrow_at: int | None = None, **params: Any
) -> None:
    """The device selector against the NumPy one over three steps (select, update some
    rows, rehash): ids, tallies, codes, rehash costs, a transform's scale and the norm
    tie-break priorities agree; then a saved and restored device selector agrees too.
    ``outgrow_at``: the step whose update scales a row past the transform's scale M (both
    sides refit and rehash every row)."""
    hashing = policy in LSH_POLICIES
    n_in, n_out, batch = 12, 64, 5
    # few tables, small keys: the simulator runs every CUDA thread as a Python thread
    params = {"k": 2, "l": 5, **params}
    settings = dict(policy=policy, family=family, active=0.1, **{"rehash": "fixed:1", **params})
    ref, dev, (w, b, dw, db) = selector_pair(n_in, n_out, **settings)
    norm_tie = params.get("tiebreak") == "norm"
    if norm_tie:  # the same selector with seeded random tie-breaks: must choose otherwise
        coin = ActiveSelector(
            n_in, n_out, backend="numpy", seed=3, **{**settings, "tiebreak": "random"}
        ).fit(w, b)
        tie_decided = False
    rng = np.random.default_rng(7)
    distinct = set()
    for step in range(3):
        x = np.maximum(rng.standard_normal((batch, n_in)), 0).astype(np.float32)
        labels = rng.integers(0, n_out, batch)
        for training in (True, False):
            queried = (ref.query_mults, dev.query_mults)
            if norm_tie and step == 0:
                other = coin.select(x, labels, training=training).ids
            want = ref.select(x, labels, training=training)
            if norm_tie and step == 0:
                tie_decided |= not np.array_equal(other, want.ids)
            got = dev.select_device(DEVICE.to_device(x, "test"), labels, training=training)
            ids = to_host(got.ids)
            if got.shared:
                assert want.shared and ids.ndim == 1
                ids = np.broadcast_to(ids, want.ids.shape)
            np.testing.assert_array_equal(ids, want.ids, err_msg=f"{policy} step {step}")
            assert got.work == want.work
            if family != "srp":  # SRP on the device is one dense product, counted so
                assert got.hash_mults == want.hash_mults
            # what is not query hashing (rerank's and exact's products) is counted alike
            scored = (want.hash_mults - (ref.query_mults - queried[0]),
                      got.hash_mults - (dev.query_mults - queried[1]))  # fmt: skip
            assert scored[0] == scored[1], scored
            if policy in ("rerank", "exact"):
                assert scored[0] > 0
            if policy == "rerank" and not training:  # a device SparseBatch input, too
                ids_in, vals_in = ck_sparse(x)
                sparse = SparseBatch(ids_in, vals_in, n_in)
                on_dev = SparseBatch(
                    ids_in, DEVICE.to_device(vals_in, "test"), n_in, device=True,
                    dev_ids=DEVICE.to_device(ids_in, "test"),
                )  # fmt: skip
                np.testing.assert_array_equal(
                    to_host(dev.select_device(on_dev).ids), ref.select(sparse).ids
                )
            distinct.add(ids.tobytes())
            if training:  # the labels are in every row's set
                assert all(labels[r] in ids[r] for r in range(batch))
        # an optimizer step on some rows, then the (fixed:1) rehash on both sides
        rows = rng.choice(n_out, size=9, replace=False)
        delta = rng.standard_normal((9, n_in)).astype(np.float32)
        scale = ref.state()[0]["scale"]
        if step == outgrow_at:  # row rows[0] becomes three times as long as M
            grow = 3 * scale / float(np.linalg.norm(np.append(w[rows[0]], b[rows[0]])))
            delta[0] = w[rows[0]] * np.float32(grow - 1)
        w[rows] += delta
        dw[DEVICE.to_device(rows, "test")] += DEVICE.to_device(delta, "test")
        ref.after_update(w, b, rows)
        dev.after_update(dw, db, DEVICE.to_device(rows, "test"))
        if hashing:
            (ref_meta, ref_arrays), (dev_meta, dev_arrays) = ref.state(), dev.state()
            np.testing.assert_array_equal(dev_arrays["codes"], ref_arrays["codes"])
            assert dev_meta["scale"] == ref_meta["scale"], (dev_meta["scale"], ref_meta["scale"])
            if step == outgrow_at:  # refitted: M grew (to the grown row's norm)
                assert ref_meta["scale"] > 2 * scale, (ref_meta["scale"], scale)
            assert ("tie" in dev_arrays) is ("tie" in ref_arrays) is norm_tie
            if norm_tie:
                np.testing.assert_array_equal(dev_arrays["tie"], ref_arrays["tie"])
        assert dev.rehash_mults == ref.rehash_mults, (step, dev.rehash_mults, ref.rehash_mults)
    assert (ref.rehashes, ref.rebuilds) == (dev.rehashes, dev.rebuilds)
    assert ref.rehashes + ref.rebuilds == (3 if hashing else 0)  # every step changed them
    assert len(distinct) > 2, "every selection was the same: the check proves nothing"
    if norm_tie:
        assert tie_decided, "random tie-breaks chose the same ids: the check proves nothing"
    # the public select() of a host batch gives the same ActiveSet
    x = np.maximum(rng.standard_normal((batch, n_in)), 0).astype(np.float32)
    np.testing.assert_array_equal(dev.select(x).ids, ref.select(x).ids)
    if hashing:  # saved and restored (as Model.load does): the same scale, ties and sets
        back = ActiveSelector.from_state(*dev.state(), w, b, backend=DEVICE)
        back.attach(dw, db)
        assert back.selects_on_device
        assert back.state()[0]["scale"] == ref.state()[0]["scale"]
        if norm_tie:
            np.testing.assert_array_equal(back.state()[1]["tie"], ref.state()[1]["tie"])
        np.testing.assert_array_equal(back.select(x).ids, ref.select(x).ids)


def ck_sparse(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A dense batch as padded (ids, vals) with a -1 padding column (the sparse form)."""
    ids = np.where(x != 0, np.arange(x.shape[1]), -1)
    order = np.argsort(ids < 0, axis=1, kind="stable")
    ids = np.take_along_axis(ids, order, axis=1)
    vals = np.take_along_axis(x, order, axis=1)
    pad = np.full((x.shape[0], 1), -1, np.int64)
    return np.concatenate([ids, pad], axis=1), np.concatenate([vals, pad * 0.0], axis=1).astype(
        np.float32
    )


def rerank_ties_go_to_the_smaller_id() -> None:
    # rows in equal pairs: equal scores, on each side exactly; both keep the smaller id
    # (a partition alone would pick either), so the sets agree id for id
    n_in, n_out = 12, 64
    rng = np.random.default_rng(6)
    w = np.repeat(rng.standard_normal((n_out // 2, n_in)), 2, axis=0).astype(np.float32)
    b = np.repeat(0.1 * rng.standard_normal(n_out // 2), 2).astype(np.float32)
    x = np.maximum(rng.standard_normal((5, n_in)), 0).astype(np.float32)
    for policy in ("rerank", "exact"):
        params = dict(policy=policy, active=0.1, k=2, l=5, seed=3)
        ref = ActiveSelector(n_in, n_out, backend="numpy", **params).fit(w, b)
        dev = ActiveSelector(n_in, n_out, backend=DEVICE, **params)
        dev.fit_device(DEVICE.to_device(w, "test"), DEVICE.to_device(b, "test"))
        want = ref.select(x).ids
        np.testing.assert_array_equal(
            to_host(dev.select_device(DEVICE.to_device(x, "test")).ids), want
        )
        if policy == "exact":  # every pair scored: an odd id only with its even twin,
            # and an odd m (7) splits one pair per row, at the cut: the tie rule decides
            kept = [set(row[row >= 0].tolist()) for row in want]
            assert all(i - 1 in row for row in kept for i in row if i % 2), kept
            assert all(any(i + 1 not in row for i in row if i % 2 == 0) for row in kept)


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


def changed_schedule_refits_the_transform() -> None:
    # "changed" with a MIPS transform: a sampled row past M gives the share 1 on both sides
    # (no sample hashed), then both refit M and rehash every row; later checks sample
    # against the refitted tables
    ref, dev, (w, b, dw, db) = selector_pair(
        12, 64, policy="topk", family="srp", transform="sign_alsh", active=0.1,
        rehash="changed:0.05:1", k=3, l=6,
    )  # fmt: skip
    rng = np.random.default_rng(12)
    shares = []
    for step in range(3):
        rows = rng.choice(64, size=40, replace=False)
        # the changed rows shrink (none past M; their codes move: the extra coordinate
        # grows), except at step 1, where they double: the sample holds rows past M
        delta = (1.0 if step == 1 else -0.2) * w[rows]
        w[rows] += delta
        dw[DEVICE.to_device(rows, "test")] += DEVICE.to_device(delta, "test")
        scale = ref.state()[0]["scale"]
        ref.after_update(w, b, rows)
        dev.after_update(dw, db, DEVICE.to_device(rows, "test"))
        assert dev.changed_share == ref.changed_share and dev.rehashes == ref.rehashes
        assert dev.rehash_mults == ref.rehash_mults, (dev.rehash_mults, ref.rehash_mults)
        (ref_meta, ref_arrays), (dev_meta, dev_arrays) = ref.state(), dev.state()
        assert dev_meta["scale"] == ref_meta["scale"]
        np.testing.assert_array_equal(dev_arrays["codes"], ref_arrays["codes"])
        shares.append((ref.changed_share, ref_meta["scale"] > scale))
    assert shares[1] == (1.0, True), shares  # the refit happened, and only at step 1
    assert not shares[0][1] and not shares[2][1], shares


def a_transform_without_device_methods_stays_on_the_host() -> None:
    # a transform plugin that offers no device_* methods: the selector keeps the host path
    import lshcore
    from lshcore.hashing.base import Transform
    from lshcore.hashing.mips import SimpleLSH

    class HostOnly(Transform):
        name = "host_only_simple_lsh"

        def __init__(self, dim: int):
            super().__init__(dim)
            self._inner = SimpleLSH(dim)
            self.out_dim = self._inner.out_dim

        def fit(self, x: Any) -> HostOnly:
            self.scale = self._inner.fit(x).scale
            return self

        def data(self, x: Any) -> Any:
            return self._inner.data(x)

        def query(self, q: Any) -> Any:
            return self._inner.query(q)

    class Plugin:
        @lshcore.hookimpl
        def lshcore_register_transforms(self, register: Any) -> None:
            register(HostOnly.name, HostOnly)

    name = lshcore.register_plugin(Plugin(), name="host-only-transform")
    try:
        for transform, on_device in ((HostOnly.name, False), ("simple_lsh", True)):
            sel = ActiveSelector(
                12, 64, backend=DEVICE, policy="topk", family="srp", transform=transform
            )
            assert sel.can_select_on_device is on_device, transform
    finally:
        lshcore.unregister_plugin(name)


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
        dict(policy="topk", family="srp", k=3, l=6, transform="simple_lsh"),
        dict(policy="rerank", family="srp", k=3, l=6, transform="sign_alsh"),
        dict(policy="topk", family="dwta", tiebreak="norm"),
    ):
        params = {"k": 2, "l": 5, "active": 0.1, "seed": 3, **params}
        ref = ActiveSelector(12, 64, backend="numpy", **params).fit(w, b)
        dev = ActiveSelector(12, 64, backend=DEVICE, **params)
        dw, db = DEVICE.to_device(w, "test"), DEVICE.to_device(b, "test")
        with count_transfers() as log:
            assert dev.fit_device(dw, db) is dev
        # a transform's scale M (the largest row norm) is the one value that comes down
        scale_reads = 1 if "transform" in params else 0
        assert dev.selects_on_device and log.tags("d2h") <= {"transform_scale"}, log.transfers
        assert log.count("transform_scale", "d2h") == scale_reads, log.transfers
        (ref_meta, ref_arrays), (dev_meta, dev_arrays) = ref.state(), dev.state()
        np.testing.assert_array_equal(dev_arrays["codes"], ref_arrays["codes"])
        assert dev_meta["scale"] == ref_meta["scale"]
        if "tiebreak" in params:
            np.testing.assert_array_equal(dev_arrays["tie"], ref_arrays["tie"])
        assert dev.rehash_mults == ref.rehash_mults  # (SRP: n_out * (n_in + 1) * k * l)
        np.testing.assert_array_equal(dev.select(x).ids, ref.select(x).ids)
    # a configuration that selects on the host: one host copy (tag "init"), fit, attach
    # (cross-polytope does not hash on the device)
    params = dict(policy="topk", family="crosspolytope", transform="simple_lsh", k=1, l=6, seed=3)
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


def chunked_selection_is_the_same() -> None:
    # a budget of two rows' (rows, n_out) temporaries: the batch of 5 is counted and
    # ranked in three chunks (seen by the hit counter's calls), rerank's (rows, c, w)
    # gather in one-row chunks (seen by the chunker), with the unchunked ids and tallies
    from lshcore.training import device_select

    kernels = DEVICE.kernels
    count_hits, row_chunks = kernels.table_hit_counts, device_select._row_chunks
    shapes: list[tuple[int, ...]] = []
    chunked: list[tuple[int, int, int]] = []  # (rows, elements per row, chunks)

    def counting(qcodes: Any, *args: Any) -> Any:
        out = count_hits(qcodes, *args)
        shapes.append(tuple(out.shape))
        return out

    def chunks(batch: int, per_row: int) -> list[slice]:
        out = row_chunks(batch, per_row)
        chunked.append((batch, per_row, len(out)))
        return out

    rng = np.random.default_rng(8)
    x = np.maximum(rng.standard_normal((5, 12)), 0).astype(np.float32)
    labels = rng.integers(0, 64, 5)
    budget = 2 * 64
    for policy, extra in (
        ("topk", {}), ("threshold", {"threshold": 2}), ("batch_union", {}),
        ("rerank", {}), ("exact", {}), ("random", {}),
    ):  # fmt: skip
        results = []
        for small in (False, True):
            _, dev, _ = selector_pair(12, 64, policy=policy, active=0.1, k=2, l=5, **extra)
            shapes.clear()
            chunked.clear()
            saved = device_select.DENSE_BUDGET
            if small:
                device_select.DENSE_BUDGET = budget
            kernels.table_hit_counts = counting
            device_select._row_chunks = chunks
            try:
                got = dev.select_device(DEVICE.to_device(x, "test"), labels, training=True)
            finally:
                device_select.DENSE_BUDGET = saved
                kernels.table_hit_counts = count_hits
                device_select._row_chunks = row_chunks
            results.append(
                (to_host(got.ids), got.work, got.hash_mults, list(shapes), list(chunked))
            )
        (whole, *tally_whole, one, calls_whole), (parts, *tally_parts, three, calls) = results
        np.testing.assert_array_equal(parts, whole, err_msg=policy)
        assert tally_parts == tally_whole, (policy, tally_parts, tally_whole)
        assert all(n == 1 for _, _, n in calls_whole), calls_whole
        # every dense temporary within the budget (or one row), in several chunks
        assert calls and all(n > 1 for _, _, n in calls), (policy, calls)
        assert all(per_row * -(-rows // n) <= max(budget, per_row) for rows, per_row, n in calls)
        if policy not in ("exact", "random"):
            assert one == [(5, 64)] and three == [(2, 64), (2, 64), (1, 64)], (one, three)
        if policy == "rerank":  # the gather: 28 candidates x 12 inputs a row, one row a chunk
            assert (5, 28 * 12, 5) in calls, calls


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


report(
    [
        ("same_sets_batch_rerank", lambda: same_sets("batch_rerank")),
        ("same_sets_batch_union_wta", lambda: same_sets("batch_union", "wta", bin_size=4)),
        ("same_sets_topk", lambda: same_sets("topk")),
        ("same_sets_topk_srp", lambda: same_sets("topk", "srp", k=3, l=6)),
        ("same_sets_union", lambda: same_sets("union")),
        # new functions drawn at step 2 (a rebuild), hashed on the device
        ("same_sets_after_a_rebuild", lambda: same_sets("batch_rerank", rebuild="fixed:2")),
        ("same_sets_threshold", lambda: same_sets("threshold", threshold=2)),
        ("same_sets_rerank", lambda: same_sets("rerank")),
        # the framework adapters' defaults (ADAPTER_DEFAULTS): SRP, k=4, l=50, rerank=4
        (
            "same_sets_rerank_adapter_defaults",
            lambda: same_sets("rerank", "srp", k=4, l=50, rerank=4.0),
        ),
        # MIPS transforms (SRP's cosine made an inner product): a row outgrows M at step 1
        (
            "same_sets_topk_simple_lsh",
            lambda: same_sets("topk", "srp", k=3, l=6, transform="simple_lsh", outgrow_at=1),
        ),
        (
            "same_sets_topk_sign_alsh",
            lambda: same_sets("topk", "srp", k=3, l=6, transform="sign_alsh", outgrow_at=1),
        ),
        (
            "same_sets_rerank_simple_lsh",
            lambda: same_sets("rerank", "srp", k=3, l=6, transform="simple_lsh", outgrow_at=0),
        ),
        (
            "same_sets_batch_rerank_sign_alsh",
            lambda: same_sets("batch_rerank", "srp", k=3, l=6, transform="sign_alsh", outgrow_at=1),
        ),
        # a rank family through a transform: hashed by the query's non-zeros, tallied so
        (
            "same_sets_threshold_dwta_simple_lsh",
            lambda: same_sets("threshold", transform="simple_lsh", threshold=2, outgrow_at=2),
        ),
        # new functions and a new transform drawn at step 2 (a rebuild), fitted on the device
        (
            "same_sets_sign_alsh_after_a_rebuild",
            lambda: same_sets("topk", "srp", k=3, l=6, transform="sign_alsh", rebuild="fixed:2"),
        ),
        # tiebreak="norm": the rows' norm ranks break equal hit counts (and pad)
        ("same_sets_topk_norm", lambda: same_sets("topk", tiebreak="norm")),
        ("same_sets_rerank_norm", lambda: same_sets("rerank", tiebreak="norm")),
        ("same_sets_threshold_norm", lambda: same_sets("threshold", threshold=2, tiebreak="norm")),
        (
            "same_sets_topk_norm_simple_lsh",
            lambda: same_sets(
                "topk", "srp", k=3, l=6, transform="simple_lsh", tiebreak="norm", outgrow_at=1
            ),
        ),
        ("same_sets_exact", lambda: same_sets("exact")),
        ("same_sets_random", lambda: same_sets("random")),
        ("rerank_ties_go_to_the_smaller_id", rerank_ties_go_to_the_smaller_id),
        ("changed_schedule_samples_the_same_rows", changed_schedule_samples_the_same_rows),
        ("changed_schedule_refits_the_transform", changed_schedule_refits_the_transform),
        (
            "a_transform_without_device_methods_stays_on_the_host",
            a_transform_without_device_methods_stays_on_the_host,
        ),
        ("refit_leaves_the_device_until_attached", refit_leaves_the_device_until_attached),
        ("fit_device_hashes_where_the_weights_are", fit_device_hashes_where_the_weights_are),
        ("chunked_selection_is_the_same", chunked_selection_is_the_same),
        ("no_selector_traffic_per_step", no_selector_traffic_per_step),
    ]
)
