"""The NumPy reference kernels (always available; the other backends are tested against these).

Kernels are grouped by topic in private modules and gathered here so that a backend is
one module of functions with the names and signatures of the contract
(:class:`lshcore.core.contract.Kernels`). The names are explicit imports (no ``__all__``):
registration reads them from the source without importing the module.
"""

from lshcore.kernels._np_hashing import (
    PROBE_PRIME,
    densify_bins,
    minhash_bins_csr,
    minhash_bins_dense,
    srp_probes,
    wta_bins_csr,
    wta_bins_dense,
)
from lshcore.kernels._np_layer import (
    batch_select_from_tables,
    block_update,
    dense_to_sparse,
    layer_backward,
    layer_forward,
    select_active,
    select_from_tables,
    sorted_table_candidates,
    sparse_update,
    table_hit_counts,
    tiebreak_priority,
)
from lshcore.kernels._np_tables import (
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
from lshcore.kernels._np_xmc import (
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
