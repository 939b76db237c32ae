"""PyTorch adapter: LSHLinear, its autograd Functions, the hashed softmax loss, state."""

from __future__ import annotations

import io
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="PyTorch is not installed")

from lshcore.adapters._common import DeviceError, union_arrays  # noqa: E402
from lshcore.adapters.torch import (  # noqa: E402
    LSHLinear,
    LSHSoftmaxLoss,
    _GatherLinear,
    _UnionLinear,
    lsh_softmax_cross_entropy,
    train_mlp,
)
from lshcore.errors import ConfigError, InputError  # noqa: E402

# per-sample selection with SRP + simple_lsh is what these tests check (the defaults are
# the shared batch_union set over DWTA)
PER_SAMPLE = {"family": "srp", "policy": "topk", "transform": "simple_lsh"}


def _layer(**kw):
    torch.manual_seed(0)
    args = {"active": 0.1, "seed": 1, "k": 4, "l": 8, **PER_SAMPLE}
    args.update(kw)
    return LSHLinear(12, 60, **args)


def test_active_one_is_nn_linear_outputs_and_gradients():
    torch.manual_seed(0)
    ref = torch.nn.Linear(12, 9)
    for sparse in (False, True):
        layer = LSHLinear(12, 9, active=1.0, sparse_grad=sparse)
        layer.load_state_dict(ref.state_dict(), strict=False)
        x = torch.randn(5, 12, requires_grad=True)
        x_ref = x.detach().clone().requires_grad_(True)
        out, out_ref = layer(x), ref(x_ref)
        torch.testing.assert_close(out, out_ref)
        g = torch.randn_like(out)
        out.backward(g)
        ref.zero_grad()
        out_ref.backward(g)
        torch.testing.assert_close(x.grad, x_ref.grad)
        wg = layer.weight.grad.to_dense() if sparse else layer.weight.grad
        bg = layer.bias.grad.to_dense() if sparse else layer.bias.grad
        assert layer.weight.grad.is_sparse == sparse
        torch.testing.assert_close(wg, ref.weight.grad)
        torch.testing.assert_close(bg, ref.bias.grad)


def test_from_linear_copies_weights_and_hashes_them():
    torch.manual_seed(0)
    linear = torch.nn.Linear(12, 60)
    layer = LSHLinear.from_linear(linear, active=0.1, k=4, l=8, policy="exact")
    x = torch.randn(3, 12)
    ids, vals = layer(x, return_active=True)
    full = linear(x).detach()
    torch.testing.assert_close(vals.detach(), full.gather(1, ids))
    expect = torch.sort(full.topk(6, 1).indices, 1).values
    assert torch.equal(ids, expect)  # exact policy: the true top 10%


@pytest.mark.parametrize("fn", ["union", "gather"])
def test_gradcheck_float64(fn):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(4, 6, dtype=torch.float64, generator=gen, requires_grad=True)
    w = torch.randn(10, 6, dtype=torch.float64, generator=gen, requires_grad=True)
    b = torch.randn(10, dtype=torch.float64, generator=gen, requires_grad=True)
    if fn == "union":
        rows = torch.tensor([0, 3, 4, 9])
        assert torch.autograd.gradcheck(
            lambda x, w, b: _UnionLinear.apply(x, w, b, rows, False), (x, w, b)
        )
    else:
        batch = torch.tensor([0, 0, 1, 2, 3, 3])
        ids = torch.tensor([1, 5, 5, 0, 9, 2])
        assert torch.autograd.gradcheck(
            lambda x, w, b: _GatherLinear.apply(x, w, b, batch, ids, False), (x, w, b)
        )


@pytest.mark.parametrize("compute", ["union", "gather"])
def test_gradcheck_through_layer_with_fixed_active_sets(compute):
    layer = LSHLinear(6, 10, active=0.3, compute=compute, dtype=torch.float64)
    arrays = union_arrays(np.array([[1, 4, -1], [0, 4, 9], [2, 3, 7]]))
    x = torch.randn(3, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: layer._active_values(x, arrays), (x,))
    vals = layer._active_values(x, arrays).detach()
    full = (x @ layer.weight.T + layer.bias).detach()
    expect = np.where(
        arrays.ids >= 0, np.take_along_axis(full.numpy(), np.maximum(arrays.ids, 0), 1), 0
    )
    np.testing.assert_allclose(vals.numpy(), expect, rtol=1e-12)


def test_forward_zero_outside_active_set_and_values_match_full_product():
    layer = _layer()
    x = torch.randn(7, 12)
    ids, vals = layer(x, return_active=True)
    assert ids.shape == (7, 6) and bool((ids >= 0).all())
    full = x @ layer.weight.detach().T + layer.bias.detach()
    torch.testing.assert_close(vals.detach(), full.gather(1, ids))
    # hashing picks better than chance: the active outputs beat the average output
    assert float(full.gather(1, ids).mean()) > float(full.mean())
    dense = layer(x).detach()  # a new call (ties may break differently): check its own set
    nonzero = dense != 0
    assert int(nonzero.sum(1).max()) <= 6 and int(nonzero.sum(1).min()) >= 1
    torch.testing.assert_close(dense[nonzero], full[nonzero])


def test_union_and_gather_give_the_same_values_and_gradients():
    results = []
    for compute in ("union", "gather"):
        layer = _layer(compute=compute, sparse_grad=True)
        x = torch.randn(5, 12, generator=torch.Generator().manual_seed(3), requires_grad=True)
        ids, vals = layer(x, return_active=True)
        (vals * torch.arange(vals.numel()).view(vals.shape)).sum().backward()
        results.append(
            (ids, vals.detach(), x.grad, layer.weight.grad.to_dense(), layer.bias.grad.to_dense())
        )
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b)


def test_sparse_grad_rows_and_sparse_adam_touches_only_them():
    layer = _layer(sparse_grad=True)
    twin = _layer(sparse_grad=False)
    x = torch.randn(4, 12)
    ids, vals = layer(x, return_active=True)
    twin_ids, twin_vals = twin(x, return_active=True)  # same seed, same call: same sets
    assert torch.equal(ids, twin_ids)
    vals.pow(2).sum().backward()
    twin_vals.pow(2).sum().backward()
    grad = layer.weight.grad.coalesce()
    assert grad.is_sparse and layer.bias.grad.is_sparse
    rows = set(grad.indices()[0].tolist())
    assert rows == set(ids[ids >= 0].tolist())
    torch.testing.assert_close(grad.to_dense(), twin.weight.grad)
    torch.testing.assert_close(layer.bias.grad.to_dense(), twin.bias.grad)
    before = layer.weight.detach().clone()
    torch.optim.SparseAdam(layer.parameters(), lr=0.1).step()
    changed = set(torch.nonzero((layer.weight.detach() != before).any(1)).view(-1).tolist())
    assert changed == rows


def test_labels_always_active_in_training_and_loss_gradient():
    layer = _layer(active=0.05)
    x = torch.randn(6, 12)
    labels = torch.tensor([0, 59, 7, 7, 30, 1])
    ids, vals = layer(x, labels=labels, return_active=True)
    assert bool((ids == labels[:, None]).any(1).all())
    vals = vals.detach().requires_grad_(True)
    loss = lsh_softmax_cross_entropy(ids, vals, labels)
    loss.backward()
    p = torch.softmax(vals.detach().masked_fill(ids < 0, float("-inf")), 1)
    target = (ids == labels[:, None]).float()
    torch.testing.assert_close(vals.grad, (p - target) / 6)


def test_loss_errors_when_label_not_active_and_full_scoring_at_eval():
    layer = _layer(active=0.05)
    x = torch.randn(3, 12)
    labels = torch.tensor([5, 6, 7])
    layer.eval()
    ids, vals = layer(x, return_active=True)  # no labels: they may be missing
    fake_ids = torch.full_like(ids, -1)
    fake_ids[:, 0] = 50
    with pytest.raises(InputError, match="labels"):
        lsh_softmax_cross_entropy(fake_ids, vals, labels)
    loss = LSHSoftmaxLoss(layer)
    full = torch.nn.functional.cross_entropy(x @ layer.weight.T + layer.bias, labels)
    torch.testing.assert_close(loss(x, labels), full)


def test_index_follows_optimizer_steps_without_user_calls():
    layer = _layer(sparse_grad=True, rehash="fixed:1")
    x = torch.randn(16, 12)
    labels = torch.randint(0, 60, (16,))
    loss_fn = LSHSoftmaxLoss(layer)
    opt = torch.optim.SparseAdam(layer.parameters(), lr=0.05)
    layer(x)
    codes_before = layer.selector.state()[1]["codes"].copy()
    for _ in range(3):
        opt.zero_grad()
        loss_fn(x, labels).backward()
        opt.step()
    layer(x)  # the forward after the last step syncs it
    sel = layer.selector
    assert sel.step == 3 and sel.rehashes >= 1
    assert not np.array_equal(codes_before, sel.state()[1]["codes"])


def test_manual_weight_change_rebuilds_on_next_forward():
    layer = _layer(rehash="fixed:1")
    layer(torch.randn(2, 12))
    with torch.no_grad():
        layer.weight.mul_(-1.0)
    layer(torch.randn(2, 12))
    assert layer.selector.step == 1


def test_state_dict_round_trip_gives_same_active_sets():
    layer = _layer(sparse_grad=True, rehash="fixed:2")
    opt = torch.optim.SparseAdam(layer.parameters(), lr=0.05)
    x = torch.randn(10, 12)
    labels = torch.randint(0, 60, (10,))
    for _ in range(3):
        opt.zero_grad()
        LSHSoftmaxLoss(layer)(x, labels).backward()
        opt.step()
    buf = io.BytesIO()
    torch.save(layer.state_dict(), buf)
    buf.seek(0)
    other = LSHLinear(12, 60, active=0.1, seed=1, k=4, l=8, sparse_grad=True, rehash="fixed:2")
    other.load_state_dict(torch.load(buf, weights_only=True))
    torch.testing.assert_close(other.weight, layer.weight)
    for _ in range(2):  # equal now and after the pending sync and another batch
        a, va = layer(x, return_active=True)
        b, vb = other(x, return_active=True)
        assert torch.equal(a, b)
        torch.testing.assert_close(va, vb)


def test_fresh_seed_gives_same_index_and_a_different_seed_does_not():
    x = torch.randn(8, 12)
    a = _layer()(x, return_active=True)[0]
    b = _layer()(x, return_active=True)[0]
    c = _layer(seed=2)(x, return_active=True)[0]
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_extra_repr_names_the_parameters():
    text = repr(_layer(sparse_grad=True))
    for part in (
        "in_features=12",
        "out_features=60",
        "active=0.1",
        "family='srp'",
        "sparse_grad=True",
        "seed=1",
    ):
        assert part in text


def test_bad_inputs_raise_clear_errors_and_leave_state():
    layer = _layer()
    layer(torch.randn(2, 12))
    step = layer.selector.calls
    with pytest.raises(InputError, match=r"\(batch, 12\)"):
        layer(torch.randn(2, 11))
    with pytest.raises(InputError, match="dtype"):
        layer(torch.randn(2, 12, dtype=torch.float64))
    with pytest.raises(InputError, match="out of range"):
        layer(torch.randn(2, 12), labels=torch.tensor([1, 60]))
    with pytest.raises(InputError, match="labels"):
        layer(torch.randn(2, 12), labels=torch.tensor([1.5, 2.0]))
    with pytest.raises(TypeError, match="torch.Tensor"):
        layer(np.zeros((2, 12), np.float32))
    with pytest.raises(DeviceError, match="meta"):
        layer(torch.empty(2, 12, device="meta"))
    assert layer.selector.calls == step
    with pytest.raises(ConfigError, match="active"):
        LSHLinear(4, 4, active=0.0)
    with pytest.raises(ConfigError, match="compute"):
        LSHLinear(4, 4, compute="fast")
    with pytest.raises(LookupError, match="policy"):
        LSHLinear(4, 8, active=0.5, policy="best")(torch.randn(1, 4))


def test_import_brings_torch_and_no_other_framework():
    code = (
        "import sys, lshcore.adapters.torch; "
        "bad = [m for m in ('tensorflow', 'keras', 'mxnet', 'cupy') if m in sys.modules]; "
        "assert 'torch' in sys.modules and not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


@pytest.mark.parametrize("sparse_grad", [False, True])
def test_train_mlp_learns_digits(sparse_grad):
    from lshcore.data.datasets import load_digits

    d = load_digits(seed=0)
    xtr, ytr, xte, yte = d.x_train, d.y_train, d.x_test, d.y_test
    out = train_mlp(
        xtr, ytr, xte, yte, hidden=32, active=0.25, family="srp", k=4, l=10, policy="topk",
        epochs=2, batch_size=32, lr=3e-3, seed=0, progress=False, sparse_grad=sparse_grad,
    )  # fmt: skip
    assert set(out) >= {"accuracy", "train_seconds", "samples_per_second"}
    assert out["accuracy"] > 0.4  # chance is 0.1; 8 active units of 32 learn slowly


def test_train_mlp_passes_selector_params_and_counts_mults():
    from lshcore.data.datasets import load_digits

    d = load_digits(seed=0)
    xtr, ytr, xte, yte = d.x_train, d.y_train, d.x_test, d.y_test
    out = train_mlp(
        xtr, ytr, xte, yte, hidden=32, active=0.25, family="srp", k=4, l=10, policy="rerank", epochs=1,
        batch_size=32, lr=3e-3, seed=0, progress=False, selector_params={"rerank": 2.0},
    )  # fmt: skip
    nnz, n = int(np.count_nonzero(xtr)), len(xtr)
    m = out["mults"]
    # hashing [x, 1] with k*l = 40 projections, then 2 * 8 exact candidate products
    assert m["selection"] == 40 * (nnz + n) + 16 * nnz
    assert m["active"] == 8 * nnz and m["dense"] == 32 * nnz and m["dense_full"] == n * 64 * 32
    assert out["train_share"] == pytest.approx(
        (m["selection"] + m["rehash"] + 16 * nnz) / (64 * nnz)
    )


def test_layer_takes_params_with_keywords_over_them():
    from lshcore.errors import ConfigError
    from lshcore.training.params import SelectionParams

    p = SelectionParams(active=0.25, k=4, l=10, policy="rerank", rerank=2.0, seed=5)
    layer = LSHLinear(8, 16, params=p)
    assert layer.spec.params == p and layer.selection_params == p
    assert LSHLinear(8, 16, params=p, active=0.5).spec.params == p.replace(active=0.5)
    with pytest.raises(ConfigError, match="params must be a SelectionParams"):
        LSHLinear(8, 16, params="rerank")
    with pytest.raises(ConfigError, match="k"):
        LSHLinear(8, 16, params=p, k=0)


def test_train_mlp_with_params_equals_the_keywords_and_rejects_unknown_ones():
    from lshcore.data.datasets import load_digits
    from lshcore.errors import ConfigError, InputError
    from lshcore.training.params import SelectionParams

    d = load_digits(seed=0)
    args = (d.x_train[:256], d.y_train[:256], d.x_test, d.y_test)
    run = {"hidden": 16, "epochs": 1, "batch_size": 64, "seed": 3, "progress": False}
    by_keywords = train_mlp(*args, active=0.25, k=4, l=10, **run)
    # keywords alone start from the adapters' defaults; a params= object is taken as is
    params = SelectionParams(active=0.25, k=4, l=10, seed=3, policy="rerank", family="srp",
                             transform=None)  # fmt: skip
    by_params = train_mlp(*args, params=params, **run)
    assert by_params["accuracy"] == by_keywords["accuracy"]
    assert by_params["mults"] == by_keywords["mults"]
    with pytest.raises(ConfigError, match="activ"):
        train_mlp(*args, activ=0.25, **run)
    with pytest.raises(InputError, match="x_test"):
        train_mlp(d.x_train, d.y_train, d.x_test[:, :10], d.y_test, active=0.25, **run)


# the adapters' documented defaults (docs/adapters.md "Defaults",
# benchmarks/results/adapters_defaults.md): spelled out here so that a silent change fails
DOCUMENTED_DEFAULTS = {
    "active": 0.05, "policy": "rerank", "family": "srp", "k": 4, "l": 50, "rerank": 4.0,
    "transform": None,
}  # fmt: skip


def test_layer_without_selection_flags_uses_the_documented_adapter_defaults():
    from pathlib import Path

    from lshcore.adapters._common import ADAPTER_DEFAULTS, LayerSpec
    from lshcore.training.params import SelectionParams

    p = LSHLinear(784, 1000).selection_params
    assert {name: getattr(p, name) for name in DOCUMENTED_DEFAULTS} == DOCUMENTED_DEFAULTS
    # every other setting is the global default; the core engine's defaults are its own
    assert p == SelectionParams().replace(**ADAPTER_DEFAULTS)
    assert LayerSpec(784, 1000).params == p == LayerSpec.build(784, 1000).params
    # the docs state the same values
    text = (Path(__file__).resolve().parents[1] / "docs" / "adapters.md").read_text()
    section = text.split("## Defaults", 1)[1].split("\n## ", 1)[0]
    for name, value in DOCUMENTED_DEFAULTS.items():
        assert f"{name}={value!r}" in section, name
    # a keyword changes that one setting; another family without k/l gets "auto"
    assert LSHLinear(8, 16, active=0.2).selection_params == p.replace(active=0.2)
    dwta = LSHLinear(8, 16, family="dwta").selection_params
    assert (dwta.family, dwta.k, dwta.l, dwta.policy) == ("dwta", "auto", "auto", "rerank")


def test_train_mlp_without_selection_flags_uses_the_adapter_defaults(monkeypatch):
    import lshcore.adapters._driver as driver

    seen = {}

    def fake_run_mlp(framework, *args, params, **kwargs):
        seen["params"] = params
        return {}

    monkeypatch.setattr(driver, "run_mlp", fake_run_mlp)
    x, y = np.zeros((4, 3), np.float32), np.zeros(4, np.int64)
    train_mlp(x, y, x, y, seed=2, progress=False)
    expected = LSHLinear(8, 16).selection_params.replace(seed=2)
    assert seen["params"] == expected


def test_cli_hands_the_selection_params_to_the_adapter(monkeypatch):
    from click.testing import CliRunner

    import lshcore.adapters.torch as adapter
    from lshcore.cli import main
    from lshcore.cli.train import selection_params

    seen = {}

    def fake_train_mlp(*args, **kwargs):
        seen.update(kwargs)
        return {"accuracy": 0.5, "train_seconds": 1.0, "samples_per_second": 1.0}

    monkeypatch.setattr(adapter, "train_mlp", fake_train_mlp)
    res = CliRunner().invoke(
        main,
        ["train", "--framework", "torch", "--hidden", "16", "--active", "0.2", "--family", "srp",
         "--k", "3", "--l", "4", "--policy", "rerank", "--rerank", "2", "--seed", "1",
         "--epochs", "1", "--no-progress"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    # --transform not given: the adapters' default (none), not the core's auto
    expected = selection_params(active=0.2, family="srp", k=3, l=4, policy="rerank", rerank=2.0,
                                seed=1, transform="none")  # fmt: skip
    assert seen["params"] == expected
    assert not {"active", "family", "selector_params"} & set(seen)


def test_cli_framework_takes_adapter_defaults_for_options_not_given(monkeypatch) -> None:
    """The core default policy (batch_rerank) exists in the core layer only: a framework
    run without selection flags gets ADAPTER_DEFAULTS, and a flag given still wins."""
    from click.testing import CliRunner

    import lshcore.adapters.torch as adapter
    from lshcore.adapters._common import ADAPTER_DEFAULTS
    from lshcore.cli import main

    seen: list = []

    def fake_train_mlp(*args, **kwargs):
        seen.append(kwargs["params"])
        return {"accuracy": 0.5, "train_seconds": 1.0, "samples_per_second": 1.0}

    monkeypatch.setattr(adapter, "train_mlp", fake_train_mlp)
    base = ["train", "--framework", "torch", "--hidden", "16", "--epochs", "1", "--no-progress"]
    res = CliRunner().invoke(main, base)
    assert res.exit_code == 0, res.output
    got = seen[-1]
    assert (got.policy, got.family, got.k, got.l, got.transform) == (
        ADAPTER_DEFAULTS["policy"], ADAPTER_DEFAULTS["family"], ADAPTER_DEFAULTS["k"],
        ADAPTER_DEFAULTS["l"], ADAPTER_DEFAULTS["transform"],
    )  # fmt: skip
    res = CliRunner().invoke(main, [*base, "--policy", "batch_union", "--l", "7"])
    assert res.exit_code == 0, res.output
    assert (seen[-1].policy, seen[-1].l, seen[-1].family) == ("batch_union", 7, "srp")
