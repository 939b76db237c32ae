"""The GPU backend's kernels (numba.cuda) agree with the NumPy reference, run in CI on the
CPU under numba's CUDA simulator.

``NUMBA_ENABLE_CUDASIM`` must be set before numba.cuda is first imported, so the
kernels run in one subprocess (small sizes) that reports a JSON verdict per check; each
test below reads its own. The same kernel source runs on a real device in
``benchmarks/gpu_check.sh``, which sets ``LSHCORE_GPU_REAL=1``: then this module runs
the kernels on the device instead of the simulator.
"""

from __future__ import annotations

import importlib.util
import os
import textwrap
from pathlib import Path
from typing import Any

import pytest

from lshcore.core.contract import KERNEL_NAMES

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("array_api_compat") is None,
    reason="array-api-compat not installed (the GPU glue needs it: pip install 'lshcore[gpu]')",
)

ROOT = Path(__file__).resolve().parent.parent
#: run the kernels on a real device (benchmarks/gpu_check.sh), not under the simulator
REAL = os.environ.get("LSHCORE_GPU_REAL") == "1"

_SCRIPT = textwrap.dedent(
    """
    import copy, importlib.util, json, sys, traceback
    import numpy as np

    spec = importlib.util.spec_from_file_location("tkc", sys.argv[1])
    tkc = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tkc)
    from lshcore.core.contract import KERNEL_NAMES
    from lshcore.hashing.projection import _pack_bits
    from lshcore.kernels import _cuda_kernels as ck
    from lshcore.kernels import cupy_gpu as gpu
    from lshcore.kernels import numpy_ref as ref

    out = {"simulated": ck.SIMULATED, "cupy_imported": False}

    def agree(kernel, args):
        ra, ma = copy.deepcopy(args), copy.deepcopy(args)
        want = getattr(ref, kernel)(*ra)
        got = getattr(gpu, kernel)(*ma)
        if kernel == "layer_backward":  # the order of first touches is free
            for arrays, n in ((ra, want[1]), (ma, got[1])):
                arrays[10][:n].sort()
            for arrays, n in ((ra, want[2]), (ma, got[2])):
                arrays[11][:n].sort()
        tkc._assert_same(got, want, kernel)
        for i, (g, w) in enumerate(zip(ma, ra)):
            if isinstance(w, np.ndarray):
                tkc._assert_same(g, w, f"{kernel} argument {i} after the call")

    def check(name, fn):
        try:
            fn()
            out[name] = "ok"
        except Exception:
            out[name] = traceback.format_exc()[-2000:]

    for kernel in KERNEL_NAMES:
        check(kernel, lambda: agree(kernel, tkc._args(kernel, np.random.default_rng(tkc.RNG_SEED))))

    def crowded_fifo():
        # many arrivals per bucket into a half-full table: eviction order and head/fill
        rng = np.random.default_rng(3)
        slots, fill, head, seen, buckets, ids = tkc._fixed_state(rng, l=2, t=3, c=4, n=40)
        ref.fixed_insert(slots, fill, head, seen, buckets[:5], ids[:5], False, 1)
        agree("fixed_insert", [slots, fill, head, seen, buckets[5:].copy(), ids[5:].copy(), False, 1])
        for reservoir in (True, False):
            s2 = [a.copy() for a in (slots, fill, head, seen)]
            agree("fixed_insert", [*s2, buckets[5:].copy(), ids[5:].copy(), reservoir, 9])

    def layer_without_grad_in():
        w, _, in_ids, in_vals, out_ids, grad = tkc._layer(np.random.default_rng(5), batch=7, m=6)
        agree("layer_backward", [w, in_ids, in_vals, out_ids, grad, False, *tkc._backward_buffers(*w.shape)])

    def every_optimizer():
        for kind in (0, 1, 2, 3):
            args = tkc._args("sparse_update", np.random.default_rng(kind))
            args[0] = kind
            agree("sparse_update", args)

    def srp_codes():
        rng = np.random.default_rng(2)
        for k, l in ((5, 3), (16, 2)):
            proj = rng.standard_normal((9, k * l)).astype(np.float32)
            proj[0, 0] = 0.0  # >= 0: bit set
            want = _pack_bits(proj >= 0, k, l, np)
            np.testing.assert_array_equal(gpu.srp_codes(proj, k, l), want)

    def a_broken_kernel_is_caught():
        # guards this harness: with the gather kernel a no-op, agreement must fail
        saved = ck.launch_gather_forward
        ck.launch_gather_forward = lambda *a: None
        try:
            agree("layer_forward", tkc._args("layer_forward", np.random.default_rng(tkc.RNG_SEED)))
        except AssertionError:
            return
        finally:
            ck.launch_gather_forward = saved
        raise AssertionError("a no-op layer_forward kernel passed the agreement check")

    def index_end_to_end():
        # LSHIndex on the GPU kernel module (device-style path: host_arrays=False), NumPy
        # arrays under the simulator, against the numpy backend: add, remove, search
        from lshcore.core.backend import Backend
        from lshcore.search.index import LSHIndex

        sim = Backend("cuda-sim", "lshcore.kernels.cupy_gpu", host_arrays=False)
        rng = np.random.default_rng(4)
        x = rng.standard_normal((120, 12)).astype(np.float32)
        q = x[:4] + 0.05 * rng.standard_normal((4, 12)).astype(np.float32)
        for policy in ("fifo", "reservoir", "unbounded"):
            got = []
            for backend in ("numpy", sim):
                index = LSHIndex(12, k=4, l=3, bucket_size=6, policy=policy, backend=backend, seed=1)
                index.add(x)
                index.remove(np.arange(0, 120, 7))
                got.append((index.candidates(q), index.search(q, 5)))
            (ca, sa), (cb, sb) = got
            np.testing.assert_array_equal(cb.indptr, ca.indptr, err_msg=policy)
            np.testing.assert_array_equal(cb.ids, ca.ids, err_msg=policy)
            np.testing.assert_array_equal(sb[1], sa[1], err_msg=policy)
            np.testing.assert_allclose(sb[0], sa[0], rtol=1e-5, err_msg=policy)
            assert (sa[1] >= 0).sum() > 0

    for name, fn in [
        ("index_end_to_end", index_end_to_end),
        ("crowded_fifo", crowded_fifo),
        ("layer_without_grad_in", layer_without_grad_in),
        ("every_optimizer", every_optimizer),
        ("srp_codes", srp_codes),
        ("a_broken_kernel_is_caught", a_broken_kernel_is_caught),
    ]:
        check(name, fn)
    out["cupy_imported"] = "cupy" in sys.modules
    print("RESULT " + json.dumps(out))
    """
)

EXTRA = [
    "index_end_to_end",
    "crowded_fifo",
    "layer_without_grad_in",
    "every_optimizer",
    "srp_codes",
    "a_broken_kernel_is_caught",
]


@pytest.fixture(scope="module")
def simulated(run_gpu_script: Any) -> dict[str, object]:
    return run_gpu_script(["-c", _SCRIPT, str(ROOT / "tests" / "test_kernel_contract.py")])


def test_the_kernels_ran_where_asked_without_cupy(simulated: dict[str, object]) -> None:
    assert simulated["simulated"] is (not REAL)
    assert simulated["cupy_imported"] is False


@pytest.mark.parametrize("kernel", KERNEL_NAMES)
def test_gpu_kernel_agrees_with_the_numpy_reference(
    simulated: dict[str, object], kernel: str
) -> None:
    assert simulated[kernel] == "ok", simulated[kernel]


@pytest.mark.parametrize("check", EXTRA)
def test_gpu_kernel_extra_case(simulated: dict[str, object], check: str) -> None:
    assert simulated[check] == "ok", simulated[check]
