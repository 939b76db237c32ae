"""Run by tests/test_gpu_training.py in a subprocess (NUMBA_ENABLE_CUDASIM must be set
before numba.cuda is imported): core training with device-resident parameters on the
GPU kernel module, against the NumPy reference. Prints one ``RESULT {json}`` line, one
verdict per check ("ok" or the traceback).

The "device" backend here is the GPU backend's code path (``host_arrays=False``:
parameters, state and workspaces in the backend's namespace, every host/device copy
through ``Backend.to_device``/``to_host``); under the simulator its arrays are NumPy
arrays, so what this proves is the data flow and the numbers, not CuPy compatibility.
On a device (``LSHCORE_GPU_REAL=1``) the real ``cupy`` backend is used instead.
"""

from __future__ import annotations

import os
import sys
import tempfile
from typing import Any

import numpy as np
from _gpu_sim import REAL, device_backend, report

from lshcore.core.backend import count_transfers
from lshcore.training.model import Model
from lshcore.training.optim import make_optimizer

DEVICE: Any = device_backend()
#: what may cross during training; never the parameters, their state or gradients
#: ("rehash_ids": the positions of the rows a "changed" rehash samples; "hash_functions":
#: a rebuilt family's own arrays; "selection_work": four int64 work counts per selection;
#: "transform_scale": a MIPS transform's largest row norm, one float per refit check)
H2D_OK = {"input", "labels", "rehash_ids", "hash_functions"}
D2H_OK = {"loss", "selection_work", "transform_scale"}
#: what crosses only for a layer whose selector works on the host (index tables, a family
#: or transform without device methods): its query codes and ids, the activations it
#: hashes, changed rows
HOST_SELECTOR_H2D = {"active_ids"}
HOST_SELECTOR_D2H = {"activations", "rehash", "query_codes", "table_codes", "active_ids"}

#: the work counts of the last train_pair: [numpy run, device run]
LAST_COUNTS: list[Any] = []


def data(seed: int, n: int, n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = np.maximum(rng.standard_normal((n, n_in)), 0).astype(np.float32)
    return x, rng.integers(0, n_out, size=n).astype(np.int64)


def train_pair(
    hidden: list[int], steps: int, opt: str, device: Any = None, build: Any = None, **sel: Any
) -> tuple[list[Model], list[list[float]], Any, list[Any]]:
    """The same model trained ``steps`` batches on numpy and on the device path; the
    transfer log of the device run's training steps; its parameter arrays before.
    ``build(backend)``: the model (10 inputs, 6 classes) instead of ``Model.mlp``."""
    n_in, n_out, batch = 10, 6, 4
    x, y = data(1, steps * batch, n_in, n_out)
    models, losses = [], []
    log: Any = None
    before: list[Any] = []
    device = DEVICE if device is None else device
    LAST_COUNTS.clear()
    for backend in ("numpy", device):
        if build is not None:
            model = build(backend)
        else:
            model = Model.mlp(n_in, hidden, n_out, seed=3, backend=backend, **sel)
        model.set_optimizer(make_optimizer(opt, lr=0.05))
        wss = model.workspaces()
        from lshcore.training.layer import Counts

        counts = Counts()
        run = []
        if backend is device:
            before = [(la.weight, la.bias, *la.states_w) for la in model.layers]
            with count_transfers() as log:
                for s in range(steps):
                    sl = slice(s * batch, (s + 1) * batch)
                    run.append(model.train_step(x[sl], y[sl], wss, counts))
        else:
            for s in range(steps):
                sl = slice(s * batch, (s + 1) * batch)
                run.append(model.train_step(x[sl], y[sl], wss, counts))
        models.append(model)
        losses.append(run)
        LAST_COUNTS.append(counts)
    return models, losses, log, before


def assert_agree(models: list[Model], losses: list[list[float]]) -> None:
    ref, dev = models
    np.testing.assert_allclose(losses[1], losses[0], rtol=1e-5, atol=1e-6)
    for i, (a, b) in enumerate(zip(ref.layers, dev.layers, strict=True)):
        wa, ba = a.host_params("test")
        wb, bb = b.host_params("test")
        np.testing.assert_allclose(wb, wa, rtol=1e-5, atol=1e-6, err_msg=f"layer {i} weight")
        np.testing.assert_allclose(bb, ba, rtol=1e-5, atol=1e-6, err_msg=f"layer {i} bias")
        for j, (sa, sb) in enumerate(zip(a.states_w, b.states_w, strict=True)):
            np.testing.assert_allclose(
                b.backend.to_host(sb, "test"), sa, rtol=1e-5, atol=1e-7, err_msg=f"state {j}"
            )
    # the weights moved (else "agreement" would prove nothing)
    w0 = Model.mlp(ref.n_in, [la.n_out for la in ref.layers[:-1]], ref.n_out, seed=3)
    assert not np.allclose(w0.layers[0].weight, ref.layers[0].weight)


def assert_resident(model: Model, log: Any, before: list[Any]) -> None:
    host_selector = any(la.hashed and not la.device_selection for la in model.layers)
    bad_h2d = log.tags("h2d") - H2D_OK - (HOST_SELECTOR_H2D if host_selector else set())
    bad_d2h = log.tags("d2h") - D2H_OK - (HOST_SELECTOR_D2H if host_selector else set())
    assert not bad_h2d and not bad_d2h, (bad_h2d, bad_d2h, log.transfers[:20])
    assert log.count("loss", "d2h") > 0  # the counter saw the run at all
    for layer, arrays in zip(model.layers, before, strict=True):
        now = (layer.weight, layer.bias, *layer.states_w)
        assert all(a is b for a, b in zip(now, arrays, strict=True)), "parameters replaced"
        # no copy of a whole weight matrix (a rehash copies the changed rows only)
        whole = [t for t in log.transfers if t.shape == tuple(layer.weight.shape)]
        assert not whole, whole


def shared_set_adam() -> None:
    # batch_union (the default): one gathered block, block_update on the device arrays
    models, losses, log, before = train_pair(
        [48], 3, "adam", active=0.125, policy="batch_union", rehash="fixed:1"
    )
    assert_agree(models, losses)
    assert_resident(models[1], log, before)
    # the schedule rehashed, on the device: no row crossed
    sel = models[1].layers[0].selector
    assert sel.selects_on_device and sel.rehashes > 0 and "rehash" not in log.tags()


def per_row_sets_two_hashed_layers() -> None:
    # topk: the gather/scatter kernels on the device arrays, hashed -> hashed -> output
    models, losses, log, before = train_pair(
        [40, 32], 2, "momentum", active=0.25, policy="topk", rehash="never"
    )
    assert_agree(models, losses)
    assert_resident(models[1], log, before)
    assert "rehash" not in log.tags()
    # layer 2's selector hashes layer 1's output where it is
    assert all(la.device_selection for la in models[1].layers if la.hashed)
    assert "activations" not in log.tags("d2h")


def nothing_but_the_loss_without_hashing() -> None:
    # a dense model: the only copies are the batch, the labels up and the loss down
    models, losses, log, before = train_pair([16], 2, "sgd", active=1.0)
    assert_agree(models, losses)
    assert_resident(models[1], log, before)
    assert log.tags("d2h") == {"loss"}, log.tags("d2h")
    assert log.tags("h2d") == {"input", "labels"}, log.tags("h2d")


def the_counter_sees_a_weight_copy() -> None:
    # guards the harness: copying the parameters to the host is recorded, with its size
    model = Model.mlp(10, [48], 6, active=0.125, seed=3, backend=DEVICE)
    with count_transfers() as log:
        model.layers[0].host_params("save")
    assert log.tags() == {"save"} and log.nbytes("save") == 48 * 10 * 4 + 48 * 4


def scoring_policies_train_on_the_device() -> None:
    # rerank (the adapters' default policy), exact and random choose on the device and
    # score against the device weights: numpy's training, no weight, id or input down
    for hidden, sel in [
        ([48], dict(policy="rerank", rehash="fixed:1")),
        ([48], dict(policy="rerank", family="srp", k=4, l=50, rerank=4.0)),  # adapters'
        # hashed -> hashed (a device SparseBatch scored) -> hashed output
        ([40, 32], dict(policy="rerank", hashed_output=True, active=0.4)),
        ([48], dict(policy="exact")),
        ([48], dict(policy="random")),
    ]:
        sel = {"active": 0.125, **sel}
        models, losses, log, before = train_pair(hidden, 3, "adam", **sel)
        assert_agree(models, losses)
        assert_resident(models[1], log, before)
        hashed = [la for la in models[1].layers if la.hashed]
        assert hashed and all(la.device_selection for la in hashed), sel
        crossed = {"active_ids", "rehash", "activations", "init"} & log.tags()
        assert not crossed, (sel, crossed)
        ref_counts, dev_counts = LAST_COUNTS
        assert dev_counts.forward == ref_counts.forward, sel
        if sel.get("family") != "srp":  # SRP hashing on the device: one product, counted so
            assert dev_counts.hashing == ref_counts.hashing, sel
            assert dev_counts.selection == ref_counts.selection, sel
        if sel["policy"] != "random":  # the exact products are in the hashing count
            assert dev_counts.hashing > 0, sel


def dense_layer_feeding_a_per_row_hashed_layer() -> None:
    # a dense hidden layer's output stays on the device: the per-row hashed layer after it
    # marks its non-zeros there (no "activations" copy to the host kernel dense_to_sparse)
    from lshcore.training.layer import DenseLayer, HashedLayer

    def build(backend: Any) -> Model:
        return Model(
            [
                DenseLayer(10, 24, "relu", 3, backend),
                HashedLayer(24, 16, "relu", 4, backend, policy="topk", active=0.25,
                            rehash="fixed:1"),
                DenseLayer(16, 6, "linear", 5, backend),
            ]
        )  # fmt: skip

    models, losses, log, before = train_pair([], 3, "adam", build=build)
    assert_agree(models, losses)
    assert_resident(models[1], log, before)
    assert models[1].layers[1].device_selection
    assert "activations" not in log.tags(), log.tags()
    ref, dev = LAST_COUNTS
    assert (ref.forward, ref.hashing, ref.selection) == (dev.forward, dev.hashing, dev.selection)
    if not REAL:  # and on the strict CuPy stand-in (no NumPy-only call on the way)
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        from _strict_device import strict_backend

        models, losses, log, before = train_pair([], 2, "sgd", device=strict_backend(), build=build)
        assert_agree(models, losses)
        assert_resident(models[1], log, before)


def device_refuses_a_host_rerank() -> None:
    # rerank whose tables stay on the host (index tables) would score host weights
    from lshcore.errors import ConfigError

    try:
        Model.mlp(
            10, [48], 6, active=0.125, backend=DEVICE, policy="rerank", family="srp",
            tables="index",
        )  # fmt: skip
    except ConfigError as exc:
        assert "rerank" in str(exc) and "device" in str(exc)
    else:
        raise AssertionError("a host-selecting rerank on a device backend was accepted")
    # the same settings saved on the host and loaded onto the device: refused there too
    host = Model.mlp(10, [48], 6, active=0.125, policy="rerank", family="srp", tables="index")
    with tempfile.TemporaryDirectory() as tmp:
        path = host.save(os.path.join(tmp, "m.npz"))
        try:
            Model.load(path, backend=DEVICE)
        except ConfigError as exc:
            assert "rerank" in str(exc) and "device" in str(exc)
            return
    raise AssertionError("a saved host-selecting rerank loaded onto a device backend")


def mips_and_norm_tiebreak_train_on_the_device() -> None:
    # a MIPS transform (fitted, applied and refitted on the device) and tiebreak="norm"
    # (ranked there at each rehash): numpy's training and work counts, no host-selector
    # traffic; M comes down once per rehash check (transform_scale), nothing else
    for hidden, sel in [
        ([48], dict(policy="topk", tiebreak="norm", rehash="fixed:1")),
        ([48], dict(policy="rerank", tiebreak="norm", rehash="fixed:1")),
        ([48], dict(policy="topk", family="srp", transform="simple_lsh", rehash="fixed:1")),
        ([40, 32], dict(policy="rerank", family="srp", k=3, l=4, transform="sign_alsh",
                        rehash="fixed:1", active=0.25)),
    ]:  # fmt: skip
        sel = {"active": 0.125, **sel}
        models, losses, log, before = train_pair(hidden, 3, "adam", **sel)
        assert_agree(models, losses)
        assert_resident(models[1], log, before)
        hashed = [la for la in models[1].layers if la.hashed]
        assert hashed and all(la.device_selection for la in hashed), sel
        crossed = (HOST_SELECTOR_H2D | HOST_SELECTOR_D2H | {"init"}) & log.tags()
        assert not crossed, (sel, crossed)
        reads = log.count("transform_scale", "d2h")
        # one read per rehash of each hashed layer (two when it refits)
        assert reads >= 3 * len(hashed) if "transform" in sel else reads == 0, (sel, reads)
        ref_counts, dev_counts = LAST_COUNTS
        assert dev_counts.forward == ref_counts.forward, sel
        assert dev_counts.selection == ref_counts.selection, sel
        if sel.get("family") != "srp":  # SRP hashing on the device: one product, counted so
            assert dev_counts.hashing == ref_counts.hashing, sel
        sels = [la.selector for la in hashed]
        assert all(s.rehashes == 3 for s in sels), [s.rehashes for s in sels]


def predict_and_save_roundtrip() -> None:
    import tempfile

    models, _, _, _ = train_pair([48], 2, "adam", active=0.125, policy="batch_union")
    x, _ = data(9, 7, 10, 6)
    ref, dev = models
    np.testing.assert_array_equal(dev.predict(x), ref.predict(x))
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "m.lsh")
        dev.save(path)
        back, _ = Model.load(path, backend=DEVICE)
    np.testing.assert_array_equal(back.predict(x), ref.predict(x))
    assert back.layers[0].on_device


def trainer_end_to_end() -> None:
    # what `lshcore train --backend cupy` runs: Trainer.fit (shuffled batches, default
    # policy and rehash schedule) and evaluate, against the same run on numpy
    from lshcore.training.engine import Trainer

    x, y = data(5, 48, 10, 6)
    results = []
    for backend in ("numpy", DEVICE):
        model = Model.mlp(10, [48], 6, active=0.125, seed=2, backend=backend)
        trainer = Trainer(model, "adam", lr=0.01, batch_size=8, seed=1)
        if backend is DEVICE:
            with count_transfers() as log:
                stats = trainer.fit(x, y, epochs=2)
            assert not (log.tags("d2h") - D2H_OK - {"metrics"}), log.tags("d2h")
            assert model.layers[0].device_selection
        else:
            stats = trainer.fit(x, y, epochs=2)
        acc, _ = trainer.evaluate(x, y)
        results.append((stats.losses, acc, model.layers[0].host_params("test")[0]))
    (la, aa, wa), (lb, ab, wb) = results
    np.testing.assert_allclose(lb, la, rtol=1e-5)
    assert aa == ab
    np.testing.assert_allclose(wb, wa, rtol=1e-5, atol=1e-6)


def cli_run_training_on_digits() -> None:
    # the function behind `lshcore train --backend cupy` (CLI defaults: DWTA, auto k/l,
    # batch_union, "changed" rehash) on a slice of scikit-learn's digits, both backends
    from lshcore.cli.train import _load, run_training

    data = _load("digits", None, 0)
    recs = []
    for backend in ("numpy", DEVICE):
        with count_transfers() as log:
            recs.append(
                run_training(
                    data, hidden=[64], active=0.25, epochs=1, batch_size=32, limit=256,
                    seed=0, backend=backend,
                )
            )  # fmt: skip
        if backend is DEVICE:
            allowed = D2H_OK | {"metrics"}
            assert not (log.tags("d2h") - allowed), log.tags("d2h")
            assert log.count("loss", "d2h") == 8  # one per batch
            # the hashed layer's tables are hashed on the device at construction
            # (fit_device): no weight or code comes down, then or at any step
            assert log.count("init", "d2h") == 0, log.count("init", "d2h")
            assert log.count("table_codes", "d2h") == 0, log.count("table_codes", "d2h")
            assert log.count("init", "h2d") > 0  # the counter saw the construction
    a, b = recs
    assert a["accuracy"] == b["accuracy"], (a["accuracy"], b["accuracy"])
    assert a["mults"] == b["mults"], (a["mults"], b["mults"])


def strict_device_namespace() -> None:
    # the same training with a CuPy stand-in that refuses NumPy on device arrays and host
    # arrays in device kernels (tests/_strict_device.py): a NumPy call that would fail on
    # a real device fails here too
    if REAL:
        return  # the real cupy backend is stricter still
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from _strict_device import StrictArray, strict_backend

    strict = strict_backend()
    for hidden, steps, opt, sel in [
        ([48], 3, "adam", dict(active=0.125, policy="batch_union", rehash="fixed:1")),
        ([40, 32], 2, "momentum", dict(active=0.25, policy="topk", rehash="fixed:1")),
        ([24], 2, "adagrad", dict(active=0.25, policy="batch_rerank", hashed_output=True)),
        ([40, 32], 2, "adam", dict(active=0.25, policy="rerank", hashed_output=True)),
        ([24], 2, "sgd", dict(active=0.25, policy="exact")),
        ([24], 2, "sgd", dict(active=0.25, policy="random")),
        ([16], 2, "sgd", dict(active=1.0)),
        ([32], 2, "adam", dict(active=0.25, policy="topk", family="srp", k=3, l=4)),
        # a MIPS transform and the norm tie-break select on the device too (refit checks
        # and norm ranks on the strict arrays at every rehash)
        ([32], 2, "sgd", dict(active=0.25, policy="topk", family="srp", transform="simple_lsh",
                              rehash="fixed:1")),
        ([24], 2, "adam", dict(active=0.25, policy="rerank", family="srp", k=3, l=4,
                               transform="sign_alsh", tiebreak="norm", rehash="fixed:1")),
        ([32], 2, "adam", dict(active=0.25, policy="topk", tiebreak="norm", rehash="fixed:1")),
    ]:  # fmt: skip
        models, losses, log, before = train_pair(hidden, steps, opt, device=strict, **sel)
        assert_agree(models, losses)
        assert_resident(models[1], log, before)
        # every hashed layer chose on the device: no host selector's ids, codes or rows
        assert all(la.device_selection for la in models[1].layers if la.hashed), sel
        assert not (HOST_SELECTOR_H2D | HOST_SELECTOR_D2H) & log.tags(), (sel, log.tags())
        for layer in models[1].layers:
            assert isinstance(layer.weight, StrictArray) and isinstance(layer.bias, StrictArray)
    x, _ = data(9, 7, 10, 6)
    np.testing.assert_array_equal(models[1].predict(x), models[0].predict(x))
    # the stand-in offers CuPy's functions only (where CuPy is installed to read them)
    from _strict_device import cupy_surface

    if cupy_surface():
        try:
            strict.xp.put_along_axis  # noqa: B018  (NumPy has it, CuPy 13 does not)
        except AttributeError:
            pass
        else:
            raise AssertionError("the strict namespace offered a NumPy-only function")
    # the stand-in is strict: NumPy on a device array is an error, as on CuPy
    try:
        np.asarray(models[1].layers[0].weight)
    except TypeError:
        return
    raise AssertionError("np.asarray accepted a strict device array")


report(
    [
        ("strict_device_namespace", strict_device_namespace),
        ("trainer_end_to_end", trainer_end_to_end),
        ("cli_run_training_on_digits", cli_run_training_on_digits),
        ("shared_set_adam", shared_set_adam),
        ("per_row_sets_two_hashed_layers", per_row_sets_two_hashed_layers),
        ("nothing_but_the_loss_without_hashing", nothing_but_the_loss_without_hashing),
        ("the_counter_sees_a_weight_copy", the_counter_sees_a_weight_copy),
        ("scoring_policies_train_on_the_device", scoring_policies_train_on_the_device),
        ("device_refuses_a_host_rerank", device_refuses_a_host_rerank),
        ("mips_and_norm_tiebreak_train_on_the_device", mips_and_norm_tiebreak_train_on_the_device),
        ("predict_and_save_roundtrip", predict_and_save_roundtrip),
        ("dense_layer_feeding_a_per_row_hashed_layer", dense_layer_feeding_a_per_row_hashed_layer),
    ]
)
