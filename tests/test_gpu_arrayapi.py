"""The GPU path's array-API glue runs on NumPy and on array-api-strict and agrees with the
NumPy reference: nothing NumPy-only (``repeat`` with array repeats, ``add.at``,
``lexsort``, integer-array assignment) is left on the device path."""

from __future__ import annotations

import copy
import importlib
import importlib.util
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lshcore.kernels import numpy_ref as ref

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("array_api_compat") is None,
    reason="array-api-compat not installed (the GPU glue needs it: pip install 'lshcore[gpu]')",
)

# the table kernels written purely against the array API (the fixed_* ones launch CUDA
# kernels and are checked under the simulator in test_gpu_kernels.py)
GLUE_KERNELS = [
    "reservoir_draw",
    "sorted_insert",
    "sorted_remove",
    "sorted_query",
    "bucket_offsets",
    "rerank_topk",
    "sorted_query_rerank",
]


def _namespace(name: str) -> Any:
    if name == "numpy":
        return importlib.import_module("array_api_compat.numpy")
    if importlib.util.find_spec("array_api_strict") is None:
        pytest.skip("array-api-strict not installed (pin: array-api-strict==2.6.1)")
    return importlib.import_module("array_api_strict")


def _contract_inputs() -> Any:
    path = Path(__file__).with_name("test_kernel_contract.py")
    spec = importlib.util.spec_from_file_location("_lshcore_contract_inputs", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_TKC = _contract_inputs()


def _to(xp: Any, a: Any) -> Any:
    return xp.asarray(a) if isinstance(a, np.ndarray) else a


def _back(a: Any) -> Any:
    if isinstance(a, tuple):
        return tuple(_back(x) for x in a)
    if isinstance(a, int | float) or a is None:
        return a
    return np.from_dlpack(a) if not isinstance(a, np.ndarray) else a


@pytest.mark.parametrize("kernel", GLUE_KERNELS)
@pytest.mark.parametrize("space", ["numpy", "array_api_strict"])
def test_glue_kernel_agrees_with_the_reference(space: str, kernel: str) -> None:
    from lshcore.kernels import _cupy_tables as glue

    xp = _namespace(space)
    args = _TKC._args(kernel, np.random.default_rng(_TKC.RNG_SEED))
    ref_args = copy.deepcopy(args)
    mine = [_to(xp, a) for a in args]
    want = getattr(ref, kernel)(*ref_args)
    raw = getattr(glue, kernel)(*mine)
    first = raw[0] if isinstance(raw, tuple) else raw
    if not isinstance(first, int):  # results stay in the namespace of the inputs
        assert type(first) is type(mine[-1] if kernel == "reservoir_draw" else mine[0])
    got = _back(raw)
    _TKC._assert_same(got, want, f"{space}.{kernel}")
    for i, (g, w) in enumerate(zip(mine, ref_args, strict=True)):  # in-place effects
        if isinstance(w, np.ndarray):
            _TKC._assert_same(_back(g), w, f"{space}.{kernel} argument {i} after the call")


@pytest.mark.parametrize("space", ["numpy", "array_api_strict"])
def test_helpers_on_edge_cases(space: str) -> None:
    from lshcore.core import arrayapi as aa

    xp = _namespace(space)
    counts = xp.asarray(np.array([2, 0, 3, 1], np.int64))
    np.testing.assert_array_equal(_back(aa.owners(xp, counts)), [0, 0, 2, 2, 2, 3])
    assert _back(aa.owners(xp, xp.asarray(np.zeros(0, np.int64)))).shape == (0,)
    pos, owner = aa.ranges(xp, xp.asarray(np.array([5, 1, 9])), xp.asarray(np.array([7, 1, 10])))
    np.testing.assert_array_equal(_back(pos), [5, 6, 9])
    np.testing.assert_array_equal(_back(owner), [0, 0, 2])
    a = np.array([3, 1, 3, 1, 2], np.int64)
    b = np.array([0, 1, 1, 0, 5], np.int64)
    order = _back(aa.stable_order(xp, xp.asarray(a), xp.asarray(b)))
    np.testing.assert_array_equal(order, np.lexsort((b, a)))
    _, sk, rank, size = aa.group_ranks(xp, xp.asarray(a))
    np.testing.assert_array_equal(_back(rank), [0, 1, 0, 0, 1])
    np.testing.assert_array_equal(_back(size), [2, 2, 1, 2, 2])
