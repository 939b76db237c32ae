"""The built-in hook implementations: lshcore's own families, transforms and backends."""

from __future__ import annotations

from lshcore.backend import Backend, CupyBackend
from lshcore.hookspecs import Register, hookimpl


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
            requires=("cupy",),
            host_arrays=False,
        ),
    )


@hookimpl
def lshcore_register_hash_families(register: Register) -> None:
    from lshcore import catalog as fam

    for cls in fam.BUILTIN_FAMILIES:
        register(cls.name, cls)


@hookimpl
def lshcore_register_transforms(register: Register) -> None:
    from lshcore import catalog as fam

    for cls in fam.BUILTIN_TRANSFORMS:
        register(cls.name, cls)
