"""GPU kernels on CuPy. Importing this module imports cupy.

Array-generic code (written against an ``xp`` namespace) is shared with NumPy; only
kernels that need CUDA-specific code live here.
"""

from lshcore.kernels._cupy_tables import *  # noqa: F403
