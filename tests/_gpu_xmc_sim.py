"""Run by tests/test_gpu_xmc.py in a subprocess (NUMBA_ENABLE_CUDASIM must be set before
numba.cuda is imported): the XMC trainer on a device backend against the NumPy
reference. Prints one ``RESULT {json}`` line, one verdict per check ("ok" or the
traceback).

The device backend is the GPU backend's code path (``host_arrays=False``: weights, Adam
state and gradients in the backend's namespace, every host/device copy through
``Backend.to_device``/``to_host``); under the simulator its arrays are NumPy arrays, so
this proves the data flow and the numbers; ``strict_device_namespace`` repeats the
training on a CuPy stand-in that refuses NumPy on device arrays. On a device
(``LSHCORE_GPU_REAL=1``) the real ``cupy`` backend is used instead.
"""

from __future__ import annotations

import os
import sys
import tempfile
from typing import Any

import numpy as np
import scipy.sparse as sp
from _gpu_sim import REAL, device_backend, report

from lshcore.core.backend import count_transfers
from lshcore.errors import ConfigError
from lshcore.training.xmc import XMCConfig, XMCModel, XMCTrainer

DEVICE: Any = device_backend()
#: what may cross while the XMC trainer trains on a device (never a weight, a gradient or
#: Adam state): up the CSR batch, the shared active set with its label columns, the ids
#: of the rows a rehash re-codes, a rebuilt DWTA family's functions; down the query
#: codes, the changed rows' codes and the loss
H2D_OK = {"input", "active_ids", "rehash_ids", "hash_functions"}
D2H_OK = {"query_codes", "table_codes", "loss"}

N_FEATURES, N_LABELS, HIDDEN, BATCH = 48, 30, 12, 8


def problem(seed: int, n: int) -> tuple[sp.csr_matrix, list[np.ndarray]]:
    """n samples, 1-3 labels each; a label's prototype features (6 of them) mostly
    present, plus noise features: learnable, so P@1 means something."""
    rng = np.random.default_rng(seed)
    protos = np.random.default_rng(99).integers(0, N_FEATURES, (N_LABELS, 6))
    rows, labels = [], []
    for _ in range(n):
        lab = np.unique(rng.integers(0, N_LABELS, rng.integers(1, 4)))
        x = np.zeros(N_FEATURES, np.float32)
        for y in lab:
            keep = protos[y][rng.random(6) < 0.8]
            x[keep] += rng.uniform(0.5, 1.0, keep.size)
        x[rng.integers(0, N_FEATURES, 2)] += 0.3
        rows.append(x)
        labels.append(lab.astype(np.int64))
    return sp.csr_matrix(np.stack(rows)), labels


def config(backend: Any, **kw: Any) -> XMCConfig:
    base = dict(
        hidden=HIDDEN, lr=1e-2, batch_size=BATCH, active=8, family="srp", k=3, l=4,
        rehash_samples=2 * BATCH, rebuild_samples=5 * BATCH, seed=3, backend=backend,
    )  # fmt: skip
    base.update(kw)
    return XMCConfig(**base)  # type: ignore[arg-type]


def record_selection(model: XMCModel) -> list[np.ndarray]:
    """The shared active set of every step (wraps the model's tables.select_batch)."""
    seen: list[np.ndarray] = []
    select = model.tables.select_batch

    def recording(*args: Any, **kwargs: Any) -> Any:
        cand, labcols = select(*args, **kwargs)
        seen.append(cand.copy())
        return cand, labcols

    model.tables.select_batch = recording  # type: ignore[method-assign]
    return seen


def train_pair(steps: int, device: Any = None, **kw: Any) -> dict[str, Any]:
    """The same XMC model trained ``steps`` batches on numpy and on the device path."""
    device = DEVICE if device is None else device
    x, y = problem(1, steps * BATCH)
    got: dict[str, Any] = {}
    for name, backend in (("ref", "numpy"), ("dev", device)):
        model = XMCModel(N_FEATURES, N_LABELS, config(backend, **kw))
        trainer = XMCTrainer(model)
        sets = record_selection(model)
        arrays = (model.w1, model.b1, model.w2, model.b2)
        losses = []
        with count_transfers() as log:
            for s in range(steps):
                sl = slice(s * BATCH, (s + 1) * BATCH)
                losses.append(trainer.train_batch(x[sl], y[sl]))
        got[name] = dict(model=model, trainer=trainer, sets=sets, losses=losses, log=log)
        got[name]["arrays"] = arrays
    return got


def assert_agree(got: dict[str, Any]) -> None:
    ref, dev = got["ref"], got["dev"]
    assert len(ref["sets"]) == len(dev["sets"]) > 0
    for step, (a, b) in enumerate(zip(ref["sets"], dev["sets"], strict=True)):
        np.testing.assert_array_equal(b, a, err_msg=f"active set of step {step + 1}")
    np.testing.assert_allclose(dev["losses"], ref["losses"], rtol=1e-5, atol=1e-6)
    wa, wb = ref["model"].host_weights("test"), dev["model"].host_weights("test")
    for name in ("w1", "b1", "w2", "b2"):
        np.testing.assert_allclose(wb[name], wa[name], rtol=1e-5, atol=1e-6, err_msg=name)
    host = dev["model"].backend.to_host
    for name in ("s_w1", "s_b1", "s_w2", "s_b2"):
        sa, sb = getattr(ref["trainer"], name), getattr(dev["trainer"], name)
        np.testing.assert_allclose(host(sb.m, "test"), sa.m, rtol=1e-5, atol=1e-7, err_msg=name)
        np.testing.assert_allclose(host(sb.v, "test"), sa.v, rtol=1e-5, atol=1e-9, err_msg=name)
        np.testing.assert_array_equal(host(sb.last, "test"), sa.last, err_msg=name)
    # the weights moved (else agreement would prove nothing), and the tables were redone
    w0 = XMCModel(N_FEATURES, N_LABELS, config("numpy")).w2
    assert not np.allclose(w0, wa["w2"])
    tables = dev["model"].tables
    assert tables.rehashes > 0 and tables.rebuilds > 0, (tables.rehashes, tables.rebuilds)
    assert ref["model"].tables.rehashes == tables.rehashes
    np.testing.assert_array_equal(dev["model"].label_counts, ref["model"].label_counts)


def assert_resident(dev: dict[str, Any], steps: int) -> None:
    log, model = dev["log"], dev["model"]
    bad_h2d, bad_d2h = log.tags("h2d") - H2D_OK, log.tags("d2h") - D2H_OK
    assert not bad_h2d and not bad_d2h, (bad_h2d, bad_d2h, log.transfers[:20])
    assert log.count("loss", "d2h") == steps  # one per step: the counter saw the run
    assert log.count("query_codes", "d2h") == steps
    assert {"input", "active_ids"} <= log.tags("h2d") and "table_codes" in log.tags("d2h")
    now = (model.w1, model.b1, model.w2, model.b2)
    assert all(a is b for a, b in zip(now, dev["arrays"], strict=True)), "weights replaced"
    # no copy of a whole weight matrix or Adam state: the rows' codes only
    shapes = {tuple(a.shape) for a in now} | {(N_LABELS, 1)}
    whole = [t for t in log.transfers if t.shape in shapes]
    assert not whole, whole


def srp_train_agrees() -> None:
    steps = 12
    got = train_pair(steps)
    assert_agree(got)
    assert_resident(got["dev"], steps)
    # the reference path copied nothing (host arrays: the counter records device copies)
    assert got["ref"]["log"].count() == 0


def dwta_train_agrees() -> None:
    # DWTA hashes on the device with its kernels (wta_bins_dense, densify_bins)
    steps = 6
    got = train_pair(steps, family="dwta", k=2, l=3, bin_size=4, rebuild_samples=4 * BATCH)
    assert_agree(got)
    assert_resident(got["dev"], steps)


def catch_up_adam_agrees() -> None:
    got = train_pair(6, adam_catch_up=True, random_negatives=3, rebuild_samples=3 * BATCH)
    assert_agree(got)


def full_scoring_inference() -> None:
    got = train_pair(24, lr=3e-2)
    x, y = problem(7, 40)
    ref, dev = got["ref"]["model"], got["dev"]["model"]
    with count_transfers() as log:
        top_dev = dev.predict_topk(x, 5)
    np.testing.assert_array_equal(top_dev, ref.predict_topk(x, 5))
    assert log.tags("h2d") == {"input"} and log.tags("d2h") == {"predictions"}, log.tags()
    batches = [(x[i : i + 16], y[i : i + 16]) for i in range(0, 40, 16)]
    pa = got["ref"]["trainer"].evaluate(batches)
    pb = got["dev"]["trainer"].evaluate(batches)
    assert pa["p_at_1"] == pb["p_at_1"] and pa["p_at_5"] == pb["p_at_5"], (pa, pb)
    assert pa["output_macs_per_sample"] == pb["output_macs_per_sample"]
    # it learned (an untrained model scores 0.075 here): the comparison is not vacuous
    untrained = XMCTrainer(XMCModel(N_FEATURES, N_LABELS, config("numpy"))).evaluate(batches)
    assert pb["p_at_1"] >= 2 * untrained["p_at_1"] > 0, (pb, untrained)


#: what may cross in a hashed inference on the device: up the batch and the candidates,
#: down the query codes (or, multiprobe, the SRP projections) and the top k ids
HASHED_H2D = {"input", "active_ids"}
HASHED_D2H = {"query_codes", "predictions"}


def hashed_pair(got: dict[str, Any], x: Any, k: int = 5) -> tuple[np.ndarray, Any]:
    """Hashed top k of both trained models (asserted equal, with the same work), and the
    transfer log of the device's inference."""
    ref, dev = got["ref"]["model"], got["dev"]["model"]
    want = ref.predict_topk(x, k, hashed=True)
    with count_transfers() as log:
        top = dev.predict_topk(x, k, hashed=True)
    np.testing.assert_array_equal(top, want)
    assert dev.last_hashed_work == ref.last_hashed_work, (
        dev.last_hashed_work,
        ref.last_hashed_work,
    )
    assert ref.last_hashed_work[0] > 0 and ref.last_hashed_work[1] > 0
    return top, log


def candidates_of(model: XMCModel, x: Any) -> np.ndarray:
    """A host model's candidates of hashed inference for the batch x (B, C)."""
    cfg = model.config
    _, offsets, ids, qcodes = model.tables.query(model.hidden(x))
    extra = model.frequent_labels(cfg.infer_frequent)
    return model.kernels.xmc_infer_candidates(
        qcodes, offsets, ids, extra, min(cfg.infer_candidates, N_LABELS), 1
    )[0]


def hashed_inference_agrees() -> None:
    # few candidates (hit counts tie at the cut-off) plus the frequent labels
    got = train_pair(24, lr=3e-2, infer_candidates=5, infer_frequent=4)
    x, y = problem(7, 40)
    ref, dev = got["ref"]["model"], got["dev"]["model"]
    top, log = hashed_pair(got, x)
    assert log.tags("h2d") == HASHED_H2D and log.tags("d2h") == HASHED_D2H, log.tags()
    assert log.count("query_codes", "d2h") == 1 and log.count("predictions", "d2h") >= 1
    cand = candidates_of(ref, x)
    assert ref.frequent_labels(4).size == 4 and (cand[:, :4] == ref.frequent_labels(4)).all()
    assert (cand >= 0).sum() == ref.last_hashed_work[1] // HIDDEN
    assert (top >= 0).all() and (cand >= 0).sum(axis=1).min() >= 5
    # P@k and the work per sample through the trainer, as the host path reports them
    batches = [(x[i : i + 16], y[i : i + 16]) for i in range(0, 40, 16)]
    pa = got["ref"]["trainer"].evaluate(batches, hashed=True)
    dev.score_chunk_floats = 3 * cand.shape[1] * HIDDEN  # a few rows per chunk
    with count_transfers() as log:
        pb = got["dev"]["trainer"].evaluate(batches, hashed=True)
    chunks = log.count("active_ids", "h2d")
    assert chunks == log.count("predictions", "d2h") >= 2 * len(batches), log.transfers
    for key in ("p_at_1", "p_at_3", "p_at_5"):
        assert pa[key] == pb[key], (key, pa, pb)
    for key in ("bucket_reads_per_sample", "output_macs_per_sample"):
        assert pa[key] == pb[key] > 0, (key, pa, pb)
    assert pb["p_at_1"] > 0.2, pb  # it learned: the comparison is not vacuous
    # exact score ties: three labels with the same (top) score in both models; each row
    # ranks the ones it has as candidates first, in candidate order (stable top k)
    tied = np.array([cand[0, 0], cand[0, 4], cand[1, -1]], np.int64)
    assert np.unique(tied).size == 3
    for model in (ref, dev):
        at = model.backend.to_device(tied, "test") if model.on_device else tied
        model.w2[at] = 0.0
        model.b2[at] = 50.0
    top, _ = hashed_pair(got, x)
    rows_with_a_tie = 0
    for b in range(x.shape[0]):
        mine = [r for r in cand[b] if r in tied]
        np.testing.assert_array_equal(top[b, : len(mine)], mine, err_msg=f"row {b}")
        rows_with_a_tie += len(mine) >= 2
    assert rows_with_a_tie > 0


def hashed_multiprobe_agrees() -> None:
    # infer_probes > 1 with SRP: the projections come down, the probes are ranked on the
    # host; the same ids and work as the host path
    got = train_pair(12, lr=3e-2, infer_probes=3, infer_candidates=6, infer_frequent=2)
    x, _ = problem(7, 24)
    _, log = hashed_pair(got, x)
    want_d2h = {"query_projections", "predictions"}
    assert log.tags("h2d") == HASHED_H2D and log.tags("d2h") == want_d2h, log.tags()
    # the probes widened the search: more bucket entries read than one probe per table
    model = got["ref"]["model"]
    _, offsets, ids, single = model.tables.query(model.hidden(x))
    extra = model.frequent_labels(2)
    _, single_reads = model.kernels.xmc_infer_candidates(single, offsets, ids, extra, 6, 1)
    assert model.last_hashed_work[0] > single_reads, (model.last_hashed_work, single_reads)


def device_refuses_what_it_does_not_run() -> None:
    cases = [
        (dict(workers=2), "workers"),
        (dict(active_sets="sample"), "active_sets"),
        (dict(family="pstable"), "family"),
        (dict(family="dwta", bin_size=4, infer_probes=2), "infer_probes"),
    ]
    for kw, option in cases:
        try:
            XMCModel(N_FEATURES, N_LABELS, config(DEVICE, **kw))
        except ConfigError as exc:
            assert option in str(exc) and DEVICE.name in str(exc), str(exc)
            continue
        raise AssertionError(f"{kw} accepted on a device backend")
    # multiprobe asked of a DWTA model's tables directly: refused, the model unchanged
    model = XMCModel(N_FEATURES, N_LABELS, config(DEVICE, family="dwta", bin_size=4))
    before = model.host_weights("test")
    x, _ = problem(2, 8)
    try:
        model.tables.query(model.hidden(x), probes=2)
    except ConfigError as exc:
        assert "infer_probes" in str(exc) and "dwta" in str(exc), str(exc)
    else:
        raise AssertionError("DWTA multiprobe accepted on a device backend")
    after = model.host_weights("test")
    assert all(np.array_equal(before[n], after[n]) for n in before)


def the_counter_sees_a_weight_copy() -> None:
    # guards the harness: copying the weights down is recorded, with its size
    model = XMCModel(N_FEATURES, N_LABELS, config(DEVICE))
    with count_transfers() as log:
        weights = model.host_weights("save")
    assert log.tags() == {"save"}, log.tags()
    assert log.nbytes("save") == 4 * (N_FEATURES * HIDDEN + HIDDEN + N_LABELS * HIDDEN + N_LABELS)
    assert all(isinstance(a, np.ndarray) for a in weights.values())


def strict_device_namespace() -> None:
    # the same training on a CuPy stand-in that refuses NumPy on device arrays and host
    # arrays in device kernels (tests/_strict_device.py)
    if REAL:
        return  # the real cupy backend is stricter still
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from _strict_device import StrictArray, strict_backend

    strict = strict_backend()
    got = train_pair(8, device=strict)
    assert_agree(got)
    assert_resident(got["dev"], 8)
    model = got["dev"]["model"]
    assert isinstance(model.w1, StrictArray) and isinstance(
        got["dev"]["trainer"].s_w2.m, StrictArray
    )
    x, _ = problem(7, 20)
    np.testing.assert_array_equal(model.predict_topk(x, 3), got["ref"]["model"].predict_topk(x, 3))
    _, log = hashed_pair(got, x)
    assert log.tags("h2d") == HASHED_H2D and log.tags("d2h") == HASHED_D2H, log.tags()
    # multiprobe on the stand-in: the projections' product and the copy down
    probing = train_pair(4, device=strict, infer_probes=2, infer_candidates=6)
    hashed_pair(probing, x)


def cli_run_xmc_on_device() -> None:
    # the function behind `lshcore train --dataset xmc --backend cupy`, both backends
    from lshcore.cli.train_xmc import XMC_ONLY, run_xmc
    from lshcore.data.synth import synth_xmc

    with tempfile.TemporaryDirectory() as tmp:
        synth_xmc(os.path.join(tmp, "s.store"), 160, 24, 64, seed=1, labels_per_point=2.0)
        recs = []
        for backend in ("numpy", DEVICE):
            opts: dict[str, Any] = dict.fromkeys(XMC_ONLY)
            opts.update(
                data=os.path.join(tmp, "s.store"), test_data=None, framework="core",
                epochs=1, hidden=[16], lr=1e-2, batch_size=16, family="srp", k=3, l_=4,
                workers=1, seed=0, bin_size=None, active=[0.25], rehash="fixed:2",
                rebuild="fixed:5", limit=None, progress=False, json_path=None, plot=None,
                backend=backend,
            )  # fmt: skip
            with count_transfers() as log:
                recs.append(run_xmc(opts))
            if backend is DEVICE:
                assert not (log.tags("h2d") - H2D_OK - {"init"}), log.tags("h2d")
                assert not (log.tags("d2h") - D2H_OK - {"predictions"}), log.tags("d2h")
                assert log.count("predictions", "d2h") > 0
        # what the device refuses is a usage error naming the option, before any training
        import click

        for option, value in (("workers", 2), ("active_sets", "sample")):
            try:
                run_xmc({**opts, option: value})
            except click.UsageError as exc:
                assert option in exc.message and DEVICE.name in exc.message, exc.message
            else:
                raise AssertionError(f"run_xmc accepted {option}={value!r} on a device")
    a, b = recs
    assert b["config"]["backend"] == DEVICE.name and a["config"]["backend"] == "numpy"
    assert a["p_at_1"] == b["p_at_1"] and a["p_at_5"] == b["p_at_5"], (a["p_at_1"], b["p_at_1"])
    # hashed inference is reported on the device too, with the host path's numbers
    for key in ("p_at_1", "p_at_3", "p_at_5", "bucket_reads_per_sample", "output_macs_per_sample"):
        assert a[f"hashed_{key}"] is not None and a[f"hashed_{key}"] == b[f"hashed_{key}"], key
    assert a["rehashes"] == b["rehashes"] > 0


report(
    [
        ("srp_train_agrees", srp_train_agrees),
        ("dwta_train_agrees", dwta_train_agrees),
        ("catch_up_adam_agrees", catch_up_adam_agrees),
        ("full_scoring_inference", full_scoring_inference),
        ("hashed_inference_agrees", hashed_inference_agrees),
        ("hashed_multiprobe_agrees", hashed_multiprobe_agrees),
        ("device_refuses_what_it_does_not_run", device_refuses_what_it_does_not_run),
        ("the_counter_sees_a_weight_copy", the_counter_sees_a_weight_copy),
        ("strict_device_namespace", strict_device_namespace),
        ("cli_run_xmc_on_device", cli_run_xmc_on_device),
    ]
)
