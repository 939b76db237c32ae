"""Static proof, for mypy only, that each kernel module satisfies the kernel contract.

mypy checks a module assigned to a Protocol-typed name member by member (names,
parameters, return types), so a kernel whose signature drifts from
:class:`lshcore.core.contract.Kernels` fails ``make typecheck``. Nothing here runs:
the imports sit under TYPE_CHECKING so numba and cupy are never imported by it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lshcore.core.contract import Kernels
    from lshcore.kernels import cupy_gpu, numba_cpu, numpy_ref

    _numpy: Kernels = numpy_ref
    _numba: Kernels = numba_cpu
    _cupy: Kernels = cupy_gpu
