"""The NumPy reference kernels (always available; the other backends are tested against these).

Kernels are grouped by topic in private modules and gathered here so that a backend is
one module of functions with the same names and signatures.
"""

from lshcore.kernels._np_hashing import *  # noqa: F403
from lshcore.kernels._np_layer import *  # noqa: F403
from lshcore.kernels._np_tables import *  # noqa: F403
