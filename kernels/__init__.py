"""Sparse and hashing kernels: ``numpy_ref`` (reference), ``numba_cpu`` (fast CPU), ``cupy_gpu`` (GPU)."""
