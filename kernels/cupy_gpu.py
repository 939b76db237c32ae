"""The GPU backend's kernel module: numba.cuda kernels plus array-API glue.

On the device the kernels run on CuPy arrays (any ``__cuda_array_interface__`` array);
the same source runs on NumPy arrays under numba's CUDA simulator, which is how CI checks
this module against the NumPy reference (``tests/test_gpu_kernels.py``).

What runs where:

* numba.cuda kernels (``_cuda_kernels``): DWTA/WTA bins (``wta_bins_dense``) and their
  densification (``densify_bins``), the fixed-capacity tables (``fixed_insert`` with
  atomics, ``fixed_remove``, the ``fixed_query`` gather), candidate counting
  (``sorted_table_candidates``, and the dense counter ``table_hit_counts`` that the
  device selector ranks), the fused
  gather-multiply of the layer (``layer_forward``, ``layer_backward`` with atomic
  adds) and the sparse-row optimizer (``sparse_update``, Adam on touched rows);
  ``block_update`` (a shared active set's block) is array code on the device arrays.
* XMC (``_cuda_xmc``): the hidden layer from a CSR batch, the shared-set output step,
  the hidden backward, lazy row Adam and full scoring's top k, as array code where the
  arrays live (``add.at`` for the sums over repeated rows); the XMC tables and the
  per-sample set kernels are the host reference, except hashed inference's candidates
  (``xmc_infer_candidates``: the numba CPU kernel; the trainer scores them on the
  device).
* array-API glue (``_cupy_tables``, ``lshcore.core.arrayapi``): the sorted runs, bucket
  offsets, re-rank, reservoir draws, CSR building, tie-break priorities.
* the NumPy reference on host arrays: CSR WTA, MinHash, ``dense_to_sparse``,
  ``select_active`` and ``batch_select_from_tables`` (host kernels of the contract).

The names are explicit imports (no ``__all__``): registration reads them from the source
without importing the module (and so without importing cupy or numba.cuda).
"""

from lshcore.kernels._cuda_ops import (
    block_update,
    densify_bins,
    layer_backward,
    layer_forward,
    select_from_tables,
    sorted_table_candidates,
    sparse_update,
    srp_codes,
    table_hit_counts,
    tiebreak_priority,
    wta_bins_dense,
)
from lshcore.kernels._cuda_xmc import (
    xmc_adam_rows,
    xmc_batch_output_step,
    xmc_hidden_backward,
    xmc_hidden_forward,
    xmc_topk_rows,
)
from lshcore.kernels._cupy_tables import (
    METRIC_COSINE,
    METRIC_IP,
    METRIC_L2,
    bucket_offsets,
    fixed_insert,
    fixed_query,
    fixed_remove,
    rerank_topk,
    reservoir_draw,
    sorted_insert,
    sorted_query,
    sorted_query_rerank,
    sorted_remove,
)
from lshcore.kernels._np_hashing import (
    minhash_bins_csr,
    minhash_bins_dense,
    srp_probes,
    wta_bins_csr,
)
from lshcore.kernels._np_layer import (
    batch_select_from_tables,
    dense_to_sparse,
    select_active,
)

# host-only for now: the reference on host arrays (no GPU version yet)
from lshcore.kernels._np_tables import (
    sorted_query_sketch_rerank,  # host: the index calls it
    sorted_remove_at,
)

# XMC on the host: the per-sample output kernels serve active_sets="sample", which a
# device backend refuses (the NumPy reference is enough for their checks)
from lshcore.kernels._np_xmc import (
    xmc_output_backward,
    xmc_output_forward,
)

# the XMC tables, integer work the trainer keeps on the host (build, the shared active
# set of each step, hashed inference's candidates): the numba CPU kernels (numba is here
# for numba.cuda already). At 670k labels, batch 128, active 128: the reference's
# xmc_select_batch 1.26 ms a step, numba's 0.02 ms (bench_host_selection_kernels.py);
# the reference's candidates 0.3 s a batch of 128 at 200k labels, numba's 5 ms
from lshcore.kernels._numba_xmc import (
    xmc_build_tables,
    xmc_infer_candidates,
    xmc_infer_topk,
    xmc_select,
    xmc_select_batch,
)
