"""Fast CPU kernels compiled with numba (nogil, cached). Importing this module imports numba.

A kernel missing here falls back to the NumPy reference (see ``Backend.kernel``).
"""

from lshcore.kernels import _numba_setup  # noqa: F401  (first: starts numba's pool passive)
from lshcore.kernels._numba_hashing import *  # noqa: F403
from lshcore.kernels._numba_layer import *  # noqa: F403
from lshcore.kernels._numba_tables import *  # noqa: F403
