"""One behaviour in every framework: for the same weights, seed and input, the core
hashed layer, PyTorch, Keras and Gluon give the same active sets, outputs and gradients.

Each framework runs one training forward (labels forced active) of a linear hashed
layer and backpropagates ``loss = sum(G * out)`` for a fixed ``G``; everything is
compared with the core ``lshcore.training.layer.HashedLayer``.
"""

from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path

import numpy as np
import pytest

N_IN, N_OUT, BATCH = 10, 40, 6
HASHING = {
    "active": 0.1,
    "k": 4,
    "l": 8,
    "policy": "topk",
    "seed": 3,
    "family": "srp",
    "transform": "simple_lsh",
}


@pytest.fixture(scope="module")
def problem():
    rng = np.random.default_rng(7)
    return {
        "w": rng.standard_normal((N_OUT, N_IN)).astype(np.float32),
        "b": (0.1 * rng.standard_normal(N_OUT)).astype(np.float32),
        "x": rng.standard_normal((BATCH, N_IN)).astype(np.float32),
        "labels": rng.integers(0, N_OUT, BATCH),
        "g": rng.standard_normal((BATCH, N_OUT)).astype(np.float32),
    }


def _core(p, hashing=HASHING):
    from lshcore.training.layer import Counts, HashedLayer

    layer = HashedLayer(N_IN, N_OUT, activation="linear", **hashing)
    layer.weight[...] = p["w"]
    layer.bias[...] = p["b"]
    layer.selector.fit(layer.weight, layer.bias)
    ws, counts = layer.new_workspace(), Counts()
    out = layer.forward(p["x"], ws, counts, labels=p["labels"], training=True)
    ids = out.ids
    dense = np.zeros((BATCH, N_OUT), np.float32)
    rows = np.broadcast_to(np.arange(BATCH)[:, None], ids.shape)
    ok = ids >= 0
    dense[rows[ok], ids[ok]] = out.vals[ok]
    grad_vals = np.where(ok, p["g"][rows, np.maximum(ids, 0)], 0).astype(np.float32)
    grad_x = layer.backward(ws, grad_vals, True, counts)
    if "block_grad" in ws.cache:  # a shared set: the gradient of the (rows x cols) block
        rows_b, _, cols_b, gw_b, gb_b = ws.cache["block_grad"]
        gw, gb = np.zeros((N_OUT, N_IN), np.float32), np.zeros(N_OUT, np.float32)
        cols_b = np.arange(N_IN) if cols_b is None else cols_b  # None: every input column
        gw[np.ix_(rows_b, cols_b)] = gw_b
        gb[rows_b] = gb_b
        return ids, dense, grad_x, gw, gb
    return ids, dense, grad_x, ws.grad_w.reshape(N_OUT, N_IN), ws.grad_b


def _torch(p, hashing=HASHING):
    torch = pytest.importorskip("torch", reason="PyTorch is not installed")
    from lshcore.adapters.torch import LSHLinear

    layer = LSHLinear(N_IN, N_OUT, **hashing)
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(p["w"]))
        layer.bias.copy_(torch.from_numpy(p["b"]))
    x = torch.from_numpy(p["x"]).requires_grad_(True)
    out = layer(x, labels=torch.from_numpy(p["labels"]))
    (out * torch.from_numpy(p["g"])).sum().backward()
    return out.detach().numpy(), x.grad.numpy(), layer.weight.grad.numpy(), layer.bias.grad.numpy()


def _tensorflow(p, hashing=HASHING):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    tf = pytest.importorskip("tensorflow", reason="TensorFlow is not installed")
    from lshcore.adapters.tensorflow import LSHDense

    layer = LSHDense(N_OUT, **hashing)
    layer.build((None, N_IN))
    layer.kernel.assign(p["w"])
    layer.bias.assign(p["b"])
    x = tf.constant(p["x"])
    with tf.GradientTape() as tape:
        tape.watch(x)
        out = layer(x, training=True, labels=tf.constant(p["labels"]))
        loss = tf.reduce_sum(out * p["g"])
    gx, gw, gb = tape.gradient(loss, [x, layer.kernel, layer.bias])
    return (
        layer.last_active_ids,
        out.numpy(),
        gx.numpy(),
        tf.convert_to_tensor(gw).numpy(),
        tf.convert_to_tensor(gb).numpy(),
    )


def _mxnet(p, hashing=HASHING):
    if importlib.util.find_spec("mxnet") is None:  # importorskip would import it unshimmed
        pytest.skip("MXNet is not installed")
    # the adapter imports mxnet after shimming numpy; take mxnet's modules from it
    from lshcore.adapters.mxnet import LSHDense, autograd, nd

    layer = LSHDense(N_OUT, in_units=N_IN, **hashing)
    layer.initialize()
    layer.weight.set_data(nd.array(p["w"]))
    layer.bias.set_data(nd.array(p["b"]))
    x = nd.array(p["x"])
    x.attach_grad()
    with autograd.record():
        out = layer(x, nd.array(p["labels"]))
        loss = (out * nd.array(p["g"])).sum()
    loss.backward()
    gw = layer.weight.grad().tostype("default").asnumpy()
    return layer.last_active_ids, out.asnumpy(), x.grad.asnumpy(), gw, layer.bias.grad().asnumpy()


def _run(framework, p, hashing=HASHING):
    if framework == "core":
        return _core(p, hashing)  # the core layer, checked against the NumPy reference below
    if framework == "torch":
        torch = pytest.importorskip("torch", reason="PyTorch is not installed")
        from lshcore.adapters.torch import LSHLinear

        # the active ids through return_active, from a twin layer at the same call
        twin = LSHLinear(N_IN, N_OUT, **hashing)
        with torch.no_grad():
            twin.weight.copy_(torch.from_numpy(p["w"]))
            twin.bias.copy_(torch.from_numpy(p["b"]))
        ids = twin(
            torch.from_numpy(p["x"]), labels=torch.from_numpy(p["labels"]), return_active=True
        )[0]
        return (ids.numpy(), *_torch(p, hashing))
    return {"tensorflow": _tensorflow, "mxnet": _mxnet}[framework](p, hashing)


@pytest.fixture(scope="module")
def reference(problem):
    """Computed by no layer: the selector's active sets (labels forced, first training
    call), and NumPy's dense products and gradients masked to them."""
    from lshcore.training.selector import ActiveSelector

    p = problem
    ids = (
        ActiveSelector(N_IN, N_OUT, **HASHING)
        .fit(p["w"], p["b"])
        .select(p["x"], labels=p["labels"], training=True)
        .ids
    )
    mask = np.zeros((BATCH, N_OUT), bool)
    rows = np.broadcast_to(np.arange(BATCH)[:, None], ids.shape)
    mask[rows[ids >= 0], ids[ids >= 0]] = True
    out = np.where(mask, p["x"] @ p["w"].T + p["b"], 0).astype(np.float32)
    gz = np.where(mask, p["g"], 0).astype(np.float32)
    return ids, out, gz @ p["w"], gz.T @ p["x"], gz.sum(0)


@pytest.mark.parametrize("framework", ["core", "torch", "tensorflow", "mxnet"])
def test_same_active_sets_outputs_and_gradients(framework, problem, reference):
    ids, out, gx, gw, gb = _run(framework, problem)
    ref_ids, ref_out, ref_gx, ref_gw, ref_gb = reference
    np.testing.assert_array_equal(ids, ref_ids)
    assert bool((ref_ids == problem["labels"][:, None]).any(1).all())  # labels are active
    assert (ref_ids >= 0).sum(1).min() >= 4  # ceil(0.1 * 40) active per row
    np.testing.assert_allclose(out, ref_out, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(gx, ref_gx, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(gw, ref_gw, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(gb, ref_gb, rtol=1e-5, atol=1e-5)
    # the gradient touches exactly the active rows
    touched = np.flatnonzero(np.abs(gw).sum(1) > 0)
    assert set(touched) <= set(ref_ids[ref_ids >= 0].tolist())


DOC = Path(__file__).resolve().parents[1] / "docs" / "adapters.md"
DOC_BLOCKS = re.findall(r"^```python\n(.*?)^```$", DOC.read_text(), re.S | re.M)


@pytest.mark.parametrize(("index", "module"), [(0, "torch"), (1, "tensorflow"), (2, "mxnet")])
def test_docs_blocks_run_as_pasted(index, module, tmp_path, monkeypatch):
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not installed")
    assert f"lshcore.adapters.{module}" in DOC_BLOCKS[index]
    monkeypatch.chdir(tmp_path)
    exec(compile(DOC_BLOCKS[index], f"docs/adapters.md block {index + 1}", "exec"), {})


def _construct(framework, **kwargs):
    """A hashed layer of ``framework`` built with ``kwargs`` (skips a missing framework)."""
    if framework == "core":
        from lshcore.training.layer import HashedLayer

        return HashedLayer(N_IN, N_OUT, **kwargs)
    if importlib.util.find_spec(framework) is None:
        pytest.skip(f"{framework} is not installed")
    if framework == "torch":
        from lshcore.adapters.torch import LSHLinear

        return LSHLinear(N_IN, N_OUT, **kwargs)
    if framework == "tensorflow":
        from lshcore.adapters.tensorflow import LSHDense

        return LSHDense(N_OUT, **kwargs)
    from lshcore.adapters.mxnet import LSHDense as GluonDense

    return GluonDense(N_OUT, in_units=N_IN, **kwargs)


@pytest.mark.parametrize("framework", ["core", "torch", "tensorflow", "mxnet"])
@pytest.mark.parametrize("name", ["family", "policy", "transform"])
def test_unknown_names_fail_at_construction(framework, name):
    from lshcore.errors import UnknownNameError

    with pytest.raises(UnknownNameError, match="nope"):
        _construct(framework, **{**HASHING, name: "nope"})


def test_inference_active_sets_are_a_pure_function_of_the_input(problem):
    torch = pytest.importorskip("torch", reason="PyTorch is not installed")
    from lshcore.adapters.torch import LSHLinear
    from lshcore.training.layer import Counts, HashedLayer

    x = problem["x"]
    layer = LSHLinear(N_IN, N_OUT, **HASHING).eval()
    with torch.no_grad():
        first = layer(torch.from_numpy(x), return_active=True)[0].numpy()
        for _ in range(3):
            again = layer(torch.from_numpy(x), return_active=True)[0].numpy()
            np.testing.assert_array_equal(again, first)
    core = HashedLayer(N_IN, N_OUT, **HASHING)
    ws = core.new_workspace()
    ids = [core.forward(x, ws, Counts()).ids for _ in range(3)]
    np.testing.assert_array_equal(ids[0], ids[1])
    np.testing.assert_array_equal(ids[0], ids[2])


BATCH_RERANK = {**HASHING, "policy": "batch_rerank"}


@pytest.mark.parametrize("framework", ["core", "torch", "tensorflow", "mxnet"])
def test_batch_rerank_keeps_each_rows_best_in_every_framework(framework, problem):
    """batch_rerank: the batch's shared block, then each row keeps its m largest
    pre-activations (its label kept too); outputs and gradients only there. The reference
    is computed by no layer: the selector's shared set, NumPy products, an argsort."""
    from lshcore.training.selector import ActiveSelector

    p = problem
    selector = ActiveSelector(N_IN, N_OUT, **BATCH_RERANK).fit(p["w"], p["b"])
    ref_ids = selector.select(p["x"], labels=p["labels"], training=True).ids
    shared = ref_ids[0]
    m = selector.m
    assert (ref_ids == shared).all() and shared.size > m  # one block, wider than m
    z = p["x"] @ p["w"].T + p["b"]
    keep = np.zeros((BATCH, N_OUT), bool)
    for row in range(BATCH):
        best = shared[np.argsort(-z[row, shared], kind="stable")[:m]]
        keep[row, best] = True
        keep[row, p["labels"][row]] = True
    ref_out = np.where(keep, z, 0).astype(np.float32)
    gz = np.where(keep, p["g"], 0).astype(np.float32)

    ids, out, gx, gw, gb = _run(framework, p, BATCH_RERANK)
    np.testing.assert_array_equal(ids, ref_ids)
    np.testing.assert_allclose(out, ref_out, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(gx, gz @ p["w"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(gw, gz.T @ p["x"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(gb, gz.sum(0), rtol=1e-5, atol=1e-5)
