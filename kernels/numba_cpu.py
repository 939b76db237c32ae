"""Fast CPU kernels compiled with numba (nogil, cached). Importing this module imports numba.

Every kernel of the contract (:class:`lshcore.core.contract.Kernels`) is defined here;
there is no fallback. The names are explicit imports (no ``__all__``): registration reads
them from the source without importing the module (and so without importing numba).
"""

from lshcore.kernels import _numba_setup  # noqa: F401  (first: starts numba's pool passive)

# the dense hit counter feeds the device selector only (the CPU selector fuses counting
# and ranking in select_from_tables): the NumPy reference serves the contract here
from lshcore.kernels._np_layer import table_hit_counts
from lshcore.kernels._numba_hashing import (
    densify_bins,
    minhash_bins_csr,
    minhash_bins_dense,
    srp_probes,
    wta_bins_csr,
    wta_bins_dense,
)
from lshcore.kernels._numba_layer import (
    batch_select_from_tables,
    block_update,
    dense_to_sparse,
    layer_backward,
    layer_forward,
    select_active,
    select_from_tables,
    sorted_table_candidates,
    sparse_update,
    tiebreak_priority,
)
from lshcore.kernels._numba_tables import (
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
    sorted_query_sketch_rerank,
    sorted_remove,
    sorted_remove_at,
)
from lshcore.kernels._numba_xmc import (
    xmc_adam_rows,
    xmc_batch_output_step,
    xmc_build_tables,
    xmc_hidden_backward,
    xmc_hidden_forward,
    xmc_infer_candidates,
    xmc_infer_topk,
    xmc_output_backward,
    xmc_output_forward,
    xmc_select,
    xmc_select_batch,
    xmc_topk_rows,
)
