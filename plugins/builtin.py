"""The built-in hook implementations: lshcore's own families, transforms and backends.

They register through the same hooks as third-party plugins.
"""

from __future__ import annotations

from lshcore.core.backend import Backend, CupyBackend
from lshcore.hashing.base import HashFamily, Transform
from lshcore.hashing.minhash import MinHash
from lshcore.hashing.mips import SignALSH, SimpleLSH
from lshcore.hashing.projection import SRP, CrossPolytope, PStable, SparseSRP
from lshcore.hashing.wta import DWTA, WTA
from lshcore.registry.hookspecs import Register, hookimpl

__all__ = ["BUILTIN_FAMILIES", "BUILTIN_TRANSFORMS"]

#: lshcore's own hash families, in the order ``lshcore plugins`` lists them
BUILTIN_FAMILIES: list[type[HashFamily]] = [
    SRP,
    SparseSRP,
    CrossPolytope,
    PStable,
    WTA,
    DWTA,
    MinHash,
]
#: lshcore's own MIPS transforms
BUILTIN_TRANSFORMS: list[type[Transform]] = [SimpleLSH, SignALSH]


@hookimpl
def lshcore_register_backends(register: Register) -> None:
    register("numpy", Backend("numpy", "lshcore.kernels.numpy_ref"))
    register("numba", Backend("numba", "lshcore.kernels.numba_cpu", requires=("numba",)))
    register(
        "cupy",
        CupyBackend(
            "cupy",
            "lshcore.kernels.cupy_gpu",
            array_module="cupy",
            requires=("cupy", "array_api_compat"),
            host_arrays=False,
        ),
    )


@hookimpl
def lshcore_register_hash_families(register: Register) -> None:
    for cls in BUILTIN_FAMILIES:
        register(cls.name, cls)


@hookimpl
def lshcore_register_transforms(register: Register) -> None:
    for cls in BUILTIN_TRANSFORMS:
        register(cls.name, cls)
