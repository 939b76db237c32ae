"""The kernel contract: every kernel a backend's kernel module must define.

:class:`Kernels` lists each kernel with its signature, shapes and dtypes (the NumPy
reference, ``lshcore.kernels.numpy_ref``, is the specification; the numba and CuPy
modules must return the same arrays). ``Backend.kernels`` is typed by it, so mypy
checks every ``backend.kernels.<name>(...)`` call. A kernel module is any module whose
functions carry these names; a backend whose module lacks one is refused when it is
registered (see :func:`declared_kernels` and ``Backend.missing_kernels``).

Conventions: "host" kernels take NumPy arrays; table kernels (``fixed_*``,
``sorted_*``, ``bucket_offsets``, ``rerank_*``) take arrays of the backend's own
module (NumPy or CuPy), hence ``Any``. ``-1`` pads ids and marks empty bins/slots.

Imports nothing above :mod:`lshcore.core` (and nothing heavy): ``import lshcore``
reads it.
"""

from __future__ import annotations

import ast
import importlib.util
import sys
from typing import Any, Protocol

import numpy as np

from lshcore.errors import PluginError

__all__ = ["Kernels", "KERNEL_NAMES", "declared_kernels"]


class Kernels(Protocol):
    """Every kernel of a backend. Arrays are C-contiguous; shapes as documented."""

    # -- hashing (WTA, DWTA, MinHash; host arrays) -------------------------------------
    def wta_bins_dense(self, x: np.ndarray, bin_coords: np.ndarray, densify: bool) -> np.ndarray:
        """x (n, dim) float32, bin_coords (n_bins, b) int64 -> (n, n_bins) int64 codes in
        [0, b) (position of each bin's largest entry, ties low); -1 = empty bin (densify)."""
        ...

    def wta_bins_csr(
        self,
        indptr: np.ndarray,
        indices: np.ndarray,
        data: np.ndarray,
        coord_ptr: np.ndarray,
        coord_slots: np.ndarray,
        n_bins: int,
        bin_size: int,
        densify: bool,
    ) -> np.ndarray:
        """``wta_bins_dense`` of a CSR batch: indptr (n+1,) int64, indices (nnz,) int64,
        data (nnz,) float32; coord_ptr (dim+1,) / coord_slots int64 -> (n, n_bins) int64."""
        ...

    def densify_bins(
        self, codes: np.ndarray, probe_a: np.ndarray, probe_c: np.ndarray, attempts: int
    ) -> np.ndarray:
        """codes (n, groups, n_bins) int64 with -1 = empty; probe_a, probe_c (groups,) int64
        -> new (n, groups, n_bins) int64, every entry >= 0 (empty bins borrow)."""
        ...

    def minhash_bins_dense(self, x: np.ndarray, coord_rank: np.ndarray, n_bins: int) -> np.ndarray:
        """x (n, dim) float32, coord_rank (groups, dim) int64 -> (n, groups, n_bins) int64:
        smallest permuted position of a non-zero per bin, -1 = empty bin."""
        ...

    def minhash_bins_csr(
        self, indptr: np.ndarray, indices: np.ndarray, coord_rank: np.ndarray, n_bins: int
    ) -> np.ndarray:
        """``minhash_bins_dense`` of a CSR batch's structure (indptr, indices int64)."""
        ...

    # -- hashed sparse layer (host arrays) ---------------------------------------------
    def srp_probes(self, proj: np.ndarray, n_probes: int) -> np.ndarray:
        """proj (n, l, k) float32 SRP projections -> (n, l, n_probes) int64 codes: the
        code, then its cheapest one- and two-bit flips by summed margin (see
        ``lshcore.kernels._np_hashing``)."""
        ...

    def tiebreak_priority(self, seed: int, rows: np.ndarray, ids: np.ndarray) -> np.ndarray:
        """rows (B, 1), ids (1, n) int64 -> (B, n) int64 priorities in [0, 65535], a pure
        function of (seed, row, id). Only this broadcast form is supported by every backend."""
        ...

    def dense_to_sparse(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """x (B, d) float32 -> (ids (B, w) int64 -1 padded, vals (B, w) float32), w = max nnz."""
        ...

    def layer_forward(
        self,
        weight: np.ndarray,
        bias: np.ndarray,
        in_ids: np.ndarray,
        in_vals: np.ndarray,
        out_ids: np.ndarray,
    ) -> tuple[np.ndarray, int]:
        """weight (n_out, n_in), bias (n_out,) float32; in_ids/in_vals (B, w); out_ids (B, m)
        int64 -> (z (B, m) float32, multiply-adds done)."""
        ...

    def layer_backward(
        self,
        weight: np.ndarray,
        in_ids: np.ndarray,
        in_vals: np.ndarray,
        out_ids: np.ndarray,
        grad_out: np.ndarray,
        need_grad_in: bool,
        grad_w: np.ndarray,
        grad_b: np.ndarray,
        mark_w: np.ndarray,
        mark_b: np.ndarray,
        touched_w: np.ndarray,
        touched_b: np.ndarray,
        n_w: int,
        n_b: int,
    ) -> tuple[np.ndarray, int, int, int]:
        """Backward of ``layer_forward`` for grad_out (B, m) float32; accumulates into the
        flat grad_w (n_out*n_in,) / grad_b -> (grad_in (B, w), n_w, n_b, multiply-adds)."""
        ...

    def sparse_update(
        self,
        kind: int,
        param: np.ndarray,
        grad: np.ndarray,
        mark: np.ndarray,
        touched: np.ndarray,
        n: int,
        state1: np.ndarray,
        state2: np.ndarray,
        lr: float,
        h1: float,
        h2: float,
        eps: float,
        step: int,
    ) -> int:
        """One optimizer step (kind 0 SGD, 1 momentum, 2 Adagrad, 3 Adam) on the flat entries
        touched[:n] of param (float32), in place; zeroes grad and mark there. Returns the
        multiply-adds (``OPT_MULTS[kind]`` = 1, 2, 4, 8 per entry)."""
        ...

    def select_active(
        self,
        indptr: np.ndarray,
        cand_ids: np.ndarray,
        cand_counts: np.ndarray,
        labels: np.ndarray,
        n_out: int,
        m: int,
        min_count: int,
        use_counts: bool,
        pad_random: bool,
        seed: int,
        tie: np.ndarray | None = None,
    ) -> np.ndarray:
        """CSR candidates (indptr (B+1,), ids int64, counts int32), labels (B, n_labels) -1
        padded -> active ids (B, m) int64, ascending per row, -1 padding last."""
        ...

    def sorted_table_candidates(
        self, qcodes: np.ndarray, sorted_codes: np.ndarray, sorted_ids: np.ndarray, n_out: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """qcodes (B, L) int64; sorted_codes/sorted_ids (L, n) -> CSR (indptr (B+1,) int64,
        ids int64 ascending per row, counts int32 = tables hit)."""
        ...

    def table_hit_counts(self, qcodes: Any, sorted_codes: Any, sorted_ids: Any, n_out: int) -> Any:
        """qcodes (B, L) int64; sorted_codes/sorted_ids (L, n) int64 -> (B, n_out) int32,
        the tables whose bucket holds each neuron (the dense counter of
        ``sorted_table_candidates``). Arrays of the backend's module (CuPy on a device)."""
        ...

    def select_from_tables(
        self,
        qcodes: np.ndarray,
        sorted_codes: np.ndarray,
        sorted_ids: np.ndarray,
        n_out: int,
        labels: np.ndarray,
        m: int,
        min_count: int,
        use_counts: bool,
        pad_random: bool,
        seed: int,
        tie: np.ndarray | None = None,
        work: np.ndarray | None = None,
    ) -> np.ndarray:
        """``sorted_table_candidates`` then ``select_active``: (B, m) int64 ids. ``work``
        ((4,) int64) accumulates bucket entries read, distinct candidates counted, keys
        ranked, binary-search steps."""
        ...

    def batch_select_from_tables(
        self,
        qcodes: np.ndarray,
        sorted_codes: np.ndarray,
        sorted_ids: np.ndarray,
        n_out: int,
        labels: np.ndarray,
        m: int,
        seed: int,
        work: np.ndarray,
        offsets: np.ndarray,
    ) -> np.ndarray:
        """One set for the batch: the m neurons with most hits summed over qcodes (B, L);
        labels (n,) int64 kept -> ids (min(m, n_out),) int64 ascending; ``work`` as in
        ``select_from_tables``; ``offsets`` (L, n_buckets + 1) int64 bucket starts (direct
        addressing) or (0, 0) (binary search)."""
        ...

    def block_update(
        self,
        kind: int,
        param: np.ndarray,
        grad: np.ndarray,
        rows: np.ndarray,
        cols: np.ndarray,
        state1: np.ndarray,
        state2: np.ndarray,
        lr: float,
        h1: float,
        h2: float,
        eps: float,
        step: int,
    ) -> int:
        """One optimizer step on the block param[rows][:, cols] (param 2-D float32) from
        grad (len(rows), len(cols)); states 2-D like param. Returns the multiply-adds."""
        ...

    # -- hash tables and re-rank (arrays of the backend's module) ----------------------
    def reservoir_draw(self, seed: Any, bucket: Any, n: Any) -> Any:
        """Uniform int64 in [0, n) for the n-th (1-based) arrival at global ``bucket``."""
        ...

    def fixed_insert(
        self,
        slots: Any,
        fill: Any,
        head: Any,
        seen: Any,
        buckets: Any,
        ids: Any,
        reservoir: Any,
        seed: Any,
    ) -> Any:
        """slots (L, T, C) int32, fill/head (L, T) int32, seen (L, T) int64; ids (n,) at
        buckets (n, L) int64, in place (FIFO or, with ``reservoir``, Algorithm R)."""
        ...

    def fixed_remove(self, slots: Any, fill: Any, head: Any, buckets: Any, ids: Any) -> Any:
        """Remove ids (n,) from their buckets (n, L), in place; evicted ids are ignored."""
        ...

    def fixed_query(self, slots: Any, fill: Any, head: Any, qbuckets: Any, id_bound: Any) -> Any:
        """qbuckets (m, L, P) int64 (-1 = skip) -> CSR (indptr (m+1,) int64, ids int64
        ascending per query, counts int32)."""
        ...

    def sorted_insert(self, keys: Any, ids: Any, new_keys: Any, new_ids: Any) -> Any:
        """Merge (new_keys (n,) int64, new_ids (n,) int32) into the sorted run (keys, ids)
        -> new (keys, ids); tombstones (id -1) dropped."""
        ...

    def sorted_remove(self, keys: Any, ids: Any, del_keys: Any, del_ids: Any) -> Any:
        """Mark the entries (del_keys, del_ids) removed (id -1) in place -> how many (int)."""
        ...

    def sorted_remove_at(
        self, keys: Any, ids: Any, offsets: Any, del_keys: Any, del_ids: Any
    ) -> Any:
        """``sorted_remove`` with the run's bucket starts (offsets (n_keys + 1,) int64 from
        ``bucket_offsets``, or empty) -> number removed (int)."""
        ...

    def sorted_query(
        self,
        keys: Any,
        ids: Any,
        offsets: Any,
        pkeys: Any,
        pids: Any,
        qkeys: Any,
        id_bound: Any,
    ) -> Any:
        """qkeys (m, L*P) int64 global bucket keys (-1 = skip), main run (keys, ids, offsets
        (L*T+1,) or empty) and pending run (pkeys, pids) -> CSR (indptr, ids, counts)."""
        ...

    def bucket_offsets(self, keys: Any, n_keys: Any) -> Any:
        """Start of every key 0..n_keys-1 in the sorted keys (N,) -> (n_keys + 1,) int64."""
        ...

    def rerank_topk(
        self,
        vectors: Any,
        xnorm: Any,
        indptr: Any,
        rows: Any,
        queries: Any,
        qnorm: Any,
        k: Any,
        metric: Any,
    ) -> Any:
        """Exact top-k of CSR candidate rows: vectors (N, d) float32, queries (m, d) ->
        (scores (m, k) float32 best first, -inf padded; rows (m, k) int64, -1 padded)."""
        ...

    def sorted_query_rerank(
        self,
        keys: Any,
        ids: Any,
        offsets: Any,
        pkeys: Any,
        pids: Any,
        qkeys: Any,
        id_bound: Any,
        vectors: Any,
        xnorm: Any,
        queries: Any,
        qnorm: Any,
        k: Any,
        metric: Any,
    ) -> Any:
        """``sorted_query`` then ``rerank_topk`` -> (scores, rows, n_candidates int)."""
        ...

    def sorted_query_sketch_rerank(
        self,
        keys: Any,
        ids: Any,
        offsets: Any,
        pkeys: Any,
        pids: Any,
        qkeys: Any,
        id_bound: Any,
        vectors: Any,
        xnorm: Any,
        queries: Any,
        qnorm: Any,
        k: Any,
        metric: Any,
        pdir: Any,
        pshift: Any,
        sketches: Any,
        qsketches: Any,
        n_bits: Any,
        delta: Any,
    ) -> Any:
        """``sorted_query_rerank`` scoring only the candidates a sign sketch does not rule
        out: ``pdir``/``pshift`` the pending run's directory (``_np_tables.pending_directory``;
        an accelerator, results do not depend on it), sketches (N, W) / qsketches (m, W)
        uint64 hold ``n_bits`` sign bits (zero above), delta in (0, 1) -> (scores, rows,
        n_candidates int, n_scored int). Host arrays (the index calls it on host backends
        only)."""
        ...

    # -- XMC network: sparse input -> dense hidden -> hashed output (host arrays) -------
    def xmc_hidden_forward(
        self,
        indptr: np.ndarray,
        indices: np.ndarray,
        data: np.ndarray,
        w1: np.ndarray,
        b1: np.ndarray,
    ) -> np.ndarray:
        """CSR batch (indptr (B+1,) int64, indices (nnz,) int, data (nnz,) float32), w1 (D, H),
        b1 (H,) float32 -> h (B, H) float32 = relu(x W1 + b1); the input is never densified."""
        ...

    def xmc_output_forward(
        self, h: np.ndarray, w2: np.ndarray, b2: np.ndarray, act: np.ndarray
    ) -> np.ndarray:
        """h (B, H), w2 (L, H), b2 (L,) float32, act (B, m) int64 -1 padded -> logits (B, m)
        float32 (0 at padding)."""
        ...

    def xmc_output_backward(
        self,
        h: np.ndarray,
        w2: np.ndarray,
        act: np.ndarray,
        logits: np.ndarray,
        labels: np.ndarray,
        slot: np.ndarray,
    ) -> tuple[float, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Softmax over each row's active set, target 1/|Y| on labels (B, n) int64 -1 padded;
        slot (L,) int64 scratch of -1s -> (mean loss, grad_h (B, H), rows (T,) int64 in order
        of first touch, grad_w (T, H), grad_b (T,))."""
        ...

    def xmc_hidden_backward(
        self,
        indptr: np.ndarray,
        indices: np.ndarray,
        data: np.ndarray,
        h: np.ndarray,
        grad_h: np.ndarray,
        slot: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Through the ReLU and the sparse product; slot (D,) int64 scratch of -1s ->
        (rows (T,) int64 features touched in order of first touch, grad_w1 (T, H), grad_b1 (H,))."""
        ...

    def xmc_adam_rows(
        self,
        param: np.ndarray,
        m: np.ndarray,
        v: np.ndarray,
        last: np.ndarray,
        rows: np.ndarray,
        grad: np.ndarray,
        step: int,
        lr: float,
        beta1: float,
        beta2: float,
        eps: float,
        catch_up: bool = True,
    ) -> None:
        """Lazy Adam, in place, on rows (T,) of param (R, C) with grad (T, C); moments m, v
        (R, C) caught up for skipped steps via last (R,) int64 (step of the last update), or
        with catch_up=False left as they were (SparseAdam)."""
        ...

    def xmc_build_tables(self, codes: np.ndarray, n_buckets: int) -> tuple[np.ndarray, np.ndarray]:
        """codes (n, L) int64 in [0, n_buckets) -> (offsets (L, n_buckets + 1) int64, ids (L, n)
        int64): bucket c of table t is ids[t, offsets[t, c]:offsets[t, c + 1]], ascending."""
        ...

    def xmc_select(
        self,
        qcodes: np.ndarray,
        offsets: np.ndarray,
        ids: np.ndarray,
        labels: np.ndarray,
        n_out: int,
        m: int,
        bucket_size: int,
        pad: bool,
        seed: int,
        shared: int = 0,
    ) -> np.ndarray:
        """Active sets: qcodes (B, L) int64, tables of ``xmc_build_tables``, labels (B, n) int64
        -1 padded (first, always kept) -> (B, max(m, n) + |U|) int64 -1 padded: labels, then
        the batch's labels U (distinct, in order of appearance, at most ``shared``; 0 = none)
        that the row lacks (s_b), then at most bucket_size ids per hit bucket (tables in a
        seeded rotation, seeded window), then, with pad, seeded random ids up to m + s_b."""
        ...

    def xmc_select_batch(
        self,
        qcodes: np.ndarray,
        offsets: np.ndarray,
        ids: np.ndarray,
        labels: np.ndarray,
        n_out: int,
        m: int,
        n_random: int,
        bucket_size: int,
        pad: bool,
        seed: int,
        slot: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray]:
        """One active set shared by the batch: the batch's labels (B, n) int64 (distinct, in
        order of appearance), then up to m LSH ids round-robin over the rows (each row's
        tables in a seeded rotation, a seeded window of at most bucket_size per bucket), then
        n_random seeded uniform ids (with pad, also as many as the buckets fell short of m);
        slot (n_out,) int64 scratch of -1s ->
        (cand (C,) int64, labcols (B, n) int64: each label's column in cand, -1 padded)."""
        ...

    def xmc_batch_output_step(
        self,
        h: np.ndarray,
        w2: np.ndarray,
        b2: np.ndarray,
        cand: np.ndarray,
        labcols: np.ndarray,
    ) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
        """Softmax over the shared set cand (C,) int64 for every row of h (B, H) float32,
        target 1/|Y| on labcols (B, n) -> (mean loss, grad_h (B, H), grad_w (C, H) for the
        rows cand, grad_b (C,)); B*C*H multiply-adds in each of three products."""
        ...

    def xmc_infer_candidates(
        self,
        qcodes: np.ndarray,
        offsets: np.ndarray,
        ids: np.ndarray,
        extra: np.ndarray,
        n_cand: int,
        n_probes: int = 1,
    ) -> tuple[np.ndarray, int]:
        """Hashed inference's candidates (host arrays): per row, extra (F,) int64 (distinct,
        in order), then the n_cand ids hit most often in its buckets (qcodes (B, L *
        n_probes): column j probes table j // n_probes; ties at the cut-off by first
        touch), in order of first touch -> (cand (B, C) int64 -1 padded, C the longest
        row's count; bucket entries read)."""
        ...

    def xmc_infer_topk(
        self,
        qcodes: np.ndarray,
        offsets: np.ndarray,
        ids: np.ndarray,
        h: np.ndarray,
        w2: np.ndarray,
        b2: np.ndarray,
        extra: np.ndarray,
        n_cand: int,
        k: int,
        n_probes: int = 1,
    ) -> tuple[np.ndarray, int, int]:
        """Hashed inference: each row's ``xmc_infer_candidates`` (same arguments) scored
        exactly, ``w2[r] . h[b] + b2[r]``, the k best, ties to the earlier candidate ->
        (top (B, k) int64 -1 padded, bucket entries read, multiply-adds)."""
        ...

    def xmc_topk_rows(self, scores: np.ndarray, k: int) -> np.ndarray:
        """Each row's min(k, C) largest of scores (B, C) float32, best first, ties to the lower
        column -> column ids (B, min(k, C)) int64."""
        ...


#: every kernel name of the contract, in declaration order
KERNEL_NAMES: tuple[str, ...] = tuple(
    name for name, value in vars(Kernels).items() if not name.startswith("_") and callable(value)
)


def declared_kernels(module_name: str) -> frozenset[str]:
    """The names a kernel module defines, read without executing it (no numba, no cupy).

    An already imported module is asked directly. Otherwise its source is parsed: a
    literal ``__all__`` if it has one, else its top-level ``def``s, assignments and
    explicitly imported names. PluginError when the module cannot be found or read.
    """
    module = sys.modules.get(module_name)
    if module is not None:
        return frozenset(n for n in dir(module) if callable(getattr(module, n, None)))
    try:
        spec = importlib.util.find_spec(module_name)
    except (ImportError, ValueError) as exc:
        raise PluginError(f"kernel module {module_name!r} cannot be found: {exc}") from exc
    if spec is None or spec.origin is None or not spec.origin.endswith(".py"):
        where = "not found" if spec is None else f"has no Python source ({spec.origin})"
        raise PluginError(f"kernel module {module_name!r} {where}")
    with open(spec.origin, encoding="utf-8") as f:
        tree = ast.parse(f.read(), filename=spec.origin)
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets
        ):
            try:
                return frozenset(str(n) for n in ast.literal_eval(node.value))
            except ValueError as exc:
                raise PluginError(
                    f"kernel module {module_name!r}: __all__ must be a literal list of names"
                ) from exc
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.ImportFrom):
            names.update(a.asname or a.name for a in node.names if a.name != "*")
    return frozenset(names)
