"""The key-value memory of "Learning to Remember Rare Events" (Kaiser et al., ICLR 2017).

Keys are unit vectors of size ``key_dim``, values integer labels (-1 = empty slot),
ages count the update steps since a slot was last written. One update step
(:meth:`LSHMemory.update`) for a batch of queries ``q`` with labels ``y``:

1. ``q`` is normalized; its candidates are the ``k`` slots most similar by cosine
   (exactly, or among the LSH index's candidates) plus the label's most recent slot.
2. Loss ``relu(s_neg - s_pos + alpha)``: ``s_pos`` is the best similarity among the
   candidates holding ``y`` (0 when none does, as published), ``s_neg`` the best among
   the others (no loss when there are none).
3. If the nearest slot holds ``y``, its key becomes ``normalize(q + key)`` and its age
   resets; otherwise ``(q, y)`` overwrites the oldest slot: empty slots first, then the
   largest ``age + uniform(-age_noise, age_noise)`` (seeded).
4. Every age grows by one.

With an LSH index, every write updates only the written slots in the index (remove the
old codes, insert the new), never a full rebuild.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, NamedTuple

import numpy as np

from lshcore.core.fileformat import load_arrays, save_arrays
from lshcore.core.validation import as_batch, check_float, check_int
from lshcore.errors import ConfigError, FileFormatError, InputError
from lshcore.search.index import IndexParams, LSHIndex
from lshcore.search.tables import OFFSETS_LIMIT

__all__ = [
    "LSHMemory",
    "QueryResult",
    "Selection",
    "default_index_params",
    "selected_keys",
    "FILE_KIND",
]

FILE_KIND = "lsh-memory"
FILE_VERSION = 1
_MAX_LABEL = 2**62
# float32 elements held at once by a search chunk (queries x keys, or candidates x key_dim)
_CHUNK_ELEMENTS = 1 << 23
# oldest-slot choice: windows of more candidates than this draw only the noise that can
# win (order statistics per age group) instead of one draw per candidate
_SAMPLE_ABOVE = 4096
# a run of at least this many log entries of one stamp is not scanned: its live members
# are counted (and drawn by rank) through the sorted positions of its dead entries
_BIG_GROUP = 8192
# memories of at least this many slots get the settings measured at a million keys
_LARGE_MEMORY = 1 << 19
#: default per-candidate miss probability of the index's sign-sketch re-rank (a slot that
#: belongs in a query's top-k among the LSH candidates is skipped with at most this chance)
SKETCH_DELTA = 1e-6


class QueryResult(NamedTuple):
    """Nearest slot of each query: ``values`` (B,) int64 (-1 when the memory found
    nothing), ``similarities`` (B,) float32 cosine (-inf when nothing), ``slots`` (B,)
    int64 (-1 when nothing)."""

    values: np.ndarray
    similarities: np.ndarray
    slots: np.ndarray


@dataclasses.dataclass(frozen=True)
class Selection:
    """What one batch of labelled queries found in memory, before any write.

    All arrays have B rows. ``candidates`` (B, k + 1) slot ids (best first, -1 padding;
    the last column is the label's most recent slot), ``candidate_sims`` their cosines
    (-inf padding), ``nearest`` (B,) the most similar of the top-k (-1 if none),
    ``predicted`` its value, ``pos_slot``/``neg_slot`` (B,) the best slot with the right
    / a wrong label (-1 if none), ``pos_sim``/``neg_sim`` their cosines (0 / nan when
    absent), ``loss`` (B,) float32 ``relu(neg_sim - pos_sim + alpha)`` (0 without a
    negative). ``version`` ties the selection to the memory state it was made from.
    """

    queries: np.ndarray
    labels: np.ndarray
    candidates: np.ndarray
    candidate_sims: np.ndarray
    nearest: np.ndarray
    predicted: np.ndarray
    similarity: np.ndarray
    pos_slot: np.ndarray
    neg_slot: np.ndarray
    pos_sim: np.ndarray
    neg_sim: np.ndarray
    loss: np.ndarray
    version: int

    @property
    def has_pos(self) -> np.ndarray:
        """(B,) bool: some candidate holds the right label."""
        return self.pos_slot >= 0

    @property
    def has_neg(self) -> np.ndarray:
        """(B,) bool: some candidate holds a wrong label."""
        return self.neg_slot >= 0

    @property
    def correct(self) -> np.ndarray:
        """(B,) bool: the nearest slot holds the right label."""
        return self.predicted == self.labels


def default_index_params(size: int, key_dim: int, seed: int = 0) -> dict[str, Any]:
    """LSH index settings for a memory of ``size`` unit keys of size ``key_dim``.

    From ``2**19`` keys: SRP with ``round(log2(size)) - 1`` bits per table, 24 tables, 40
    probes, chosen at 1,000,000 x 128 with the sign-sketch re-rank (planted neighbours at
    cosine 0.8; seed 1 to choose, 2,000 queries: recall@1 0.9875 at 21x exact NumPy,
    against 0.9675 for the earlier 19 bits / 20 tables / 36 probes; seed 0 to report, see
    ``benchmarks/results/memory.md``). Bits are capped so that the tables keep their
    bucket offsets (``l * 2**k <= 2**24``: 19 bits for 24 tables; above that every probe
    is a binary search, 3x slower at 20 bits / 24 tables). Below ``2**19`` keys,
    :meth:`lshcore.IndexParams.default` (about ``log2(size) - 4`` bits, 16 tables, 16
    probes). Buckets are unbounded, so every written slot stays findable; the sign-sketch
    re-rank is on (``sketch_delta`` = :data:`SKETCH_DELTA`).
    """
    size = check_int(size, "size", low=1)
    params = IndexParams.default(size, check_int(key_dim, "key_dim", low=1))
    out = params.to_dict()
    if size >= _LARGE_MEMORY:
        tables = 24
        fits = int(np.log2(OFFSETS_LIMIT // tables))  # bucket offsets kept (no binary search)
        out.update(k=int(min(fits, round(np.log2(size)) - 1)), l=tables, n_probes=40)
    out.update(policy="unbounded", seed=int(seed), sketch_delta=SKETCH_DELTA)
    return out


def selected_keys(
    memory: LSHMemory, selection: Selection
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """What a framework wrapper needs to compute the loss with its own ops.

    Positive keys (B, key_dim) float32 (zeros where no candidate holds the label, which
    gives s_pos = 0 as published), negative keys (B, key_dim) (zeros where none) and a
    (B,) float32 mask of the rows that have a negative; then
    ``loss = relu(q . neg - q . pos + alpha) * mask`` for normalized queries q.
    """
    keys = memory._keys
    pos = np.where(selection.has_pos[:, None], keys[np.maximum(selection.pos_slot, 0)], 0.0)
    neg = np.where(selection.has_neg[:, None], keys[np.maximum(selection.neg_slot, 0)], 0.0)
    return pos.astype(np.float32), neg.astype(np.float32), selection.has_neg.astype(np.float32)


def _normalize(x: np.ndarray, name: str) -> np.ndarray:
    """Rows of x (n, d) scaled to unit norm, float32; InputError naming a zero row.

    Norms are taken in float64: squaring finite float32 values near 1e20 overflows
    float32 to inf, and x / inf stored an all-zero key that no query could find.
    """
    x64 = np.asarray(x, dtype=np.float64)
    norms = np.linalg.norm(x64, axis=1)
    zero = np.flatnonzero(norms == 0)
    if zero.size:
        raise InputError(f"{name}: row {int(zero[0])} has zero norm and cannot be normalized")
    return (x64 / norms[:, None]).astype(np.float32)


def _strengthened(keys: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """``normalize(query + key)`` per row of ``keys``/``queries`` (m, d), float32, summed in
    float64. A key that exactly cancels its query (sum zero) becomes the query: normalizing
    the zero sum would store a NaN key."""
    total = keys.astype(np.float64) + queries
    norms = np.linalg.norm(total, axis=1, keepdims=True)
    cancelled = norms[:, 0] == 0
    total[cancelled] = queries[cancelled]
    norms[cancelled] = np.linalg.norm(total[cancelled], axis=1, keepdims=True)
    return (total / norms).astype(np.float32)


def _check_labels(labels: Any, n: int, name: str = "labels") -> np.ndarray:
    """(n,) non-negative integer labels as int64; InputError otherwise."""
    arr = np.asarray(labels)
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.dtype == np.bool_ or arr.dtype.kind not in "iu":
        raise InputError(f"{name}: expected integer labels, got dtype {arr.dtype}")
    if arr.ndim != 1 or arr.shape[0] != n:
        raise InputError(f"{name}: expected shape ({n},) to match the queries, got {arr.shape}")
    if arr.size and (arr.min() < 0 or arr.max() >= _MAX_LABEL):
        raise InputError(
            f"{name}: labels must lie in [0, 2**62), got {int(arr.min())}..{int(arr.max())}"
        )
    return arr.astype(np.int64, copy=True)


def _index_kwargs(index: Any) -> dict[str, Any]:
    """LSHIndex keyword arguments from a dict or a parameter object."""
    if isinstance(index, dict):
        return dict(index)
    if dataclasses.is_dataclass(index) and not isinstance(index, type):
        return dataclasses.asdict(index)
    for attr in ("to_dict", "config", "asdict"):
        method = getattr(index, attr, None)
        if callable(method):
            out = method()
            if isinstance(out, dict):
                return dict(out)
    raise ConfigError(
        f"index must be None, a dict of LSHIndex arguments or an IndexParams object; got {type(index).__name__}"
    )


class _ExactSearch:
    """Brute-force cosine search over the filled slots (NumPy matmul)."""

    name = "exact"

    def __init__(self, memory: LSHMemory):
        self.memory = memory

    def topk(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(B, k) slot ids best first (-1 padding) and cosines (-inf padding).

        Walks the keys in blocks (each read once for the whole batch), keeping each
        query's best ``k`` so far: the search is one pass of matrix multiplies.
        """
        mem = self.memory
        n = mem._filled
        b = q.shape[0]
        kk = min(k, n)
        best_s = np.full((b, 0), -np.inf, dtype=np.float32)
        best_r = np.zeros((b, 0), dtype=np.int64)
        block = max(kk, _CHUNK_ELEMENTS // max(b, 1))
        for lo in range(0, n, block):
            scores = q @ mem._keys[lo : min(lo + block, n)].T  # (b, <= block)
            if kk == 1:
                top = np.argmax(scores, axis=1)[:, None]
            elif kk < scores.shape[1]:
                top = np.argpartition(-scores, kk - 1, axis=1)[:, :kk]
            else:
                top = np.broadcast_to(np.arange(scores.shape[1]), scores.shape)
            best_s = np.concatenate([best_s, np.take_along_axis(scores, top, axis=1)], axis=1)
            best_r = np.concatenate([best_r, top + lo], axis=1)
            if best_s.shape[1] > kk:
                keep = np.argpartition(-best_s, kk - 1, axis=1)[:, :kk]
                best_s = np.take_along_axis(best_s, keep, axis=1)
                best_r = np.take_along_axis(best_r, keep, axis=1)
        # best first; ties by smaller slot (as the LSH re-rank orders them)
        order = (
            np.lexsort((best_r, -best_s), axis=1) if kk > 1 else np.zeros((b, kk), dtype=np.int64)
        )
        slots = np.full((b, k), -1, dtype=np.int64)
        sims = np.full((b, k), -np.inf, dtype=np.float32)
        slots[:, :kk] = np.take_along_axis(best_r, order, axis=1)
        sims[:, :kk] = np.take_along_axis(best_s, order, axis=1)
        return slots, sims

    def write(self, slots: np.ndarray, keys: np.ndarray, new: np.ndarray) -> None:
        """Nothing to keep in step: the search reads the key array directly."""

    def clear(self) -> None:
        pass

    def config(self) -> dict[str, Any] | None:
        return None


class _IndexSearch:
    """Cosine search through an LSHIndex over the slot keys (store=False: the memory
    owns the keys; the index only returns candidate slots, rescored exactly here)."""

    name = "lsh"

    def __init__(self, memory: LSHMemory, params: dict[str, Any]):
        self.memory = memory
        self.params = dict(params)
        kwargs = dict(self.params)
        kwargs.setdefault("family", "srp")
        # unbounded buckets: a written slot is never dropped from its buckets
        kwargs.setdefault("policy", "unbounded")
        self.params.setdefault("policy", kwargs["policy"])
        kwargs["store"] = False
        self._factory = lambda: LSHIndex(memory.key_dim, **kwargs)
        self.index = self._factory()
        self._ones = np.ones(memory.size, dtype=np.float32)  # key norms (ignored for ip)
        self._ones.flags.writeable = False  # read-only: the index validates it only once

    def clear(self) -> None:
        self.index = self._factory()

    def config(self) -> dict[str, Any]:
        return dict(self.params)

    def write(self, slots: np.ndarray, keys: np.ndarray, new: np.ndarray) -> None:
        """Keep the index in step with written slots: rehash the re-written ones,
        insert the slots filled for the first time."""
        if np.any(~new):
            self.index.update(slots[~new], keys[~new])
        if np.any(new):
            self.index.add(keys[new], ids=slots[new])

    def topk(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(B, k) best candidate slots by exact cosine (-1 padding) and cosines (-inf)."""
        mem = self.memory
        b = q.shape[0]
        if mem._filled == 0:
            return np.full((b, k), -1, dtype=np.int64), np.full((b, k), -np.inf, dtype=np.float32)
        # the memory's own unit keys (norms all one) are passed, so the index keeps no
        # copy of them and recomputes no norms
        sims, slots = self.index.search(q, k, vectors=mem._keys, norms=self._ones)
        return np.asarray(slots, dtype=np.int64), np.asarray(sims, dtype=np.float32)


class LSHMemory:
    """Key-value memory with LSH (or exact) nearest-neighbour search.

    ``key_dim``: size of a key; ``size``: number of slots; ``k``: candidates per query
    (256 in the paper); ``alpha``: loss margin; ``index``: ``None`` (settings from
    :func:`default_index_params`), a dict of :class:`lshcore.LSHIndex` arguments or an
    ``IndexParams``; ``exact=True`` searches by matmul instead; ``age_noise``: width of the
    uniform noise added to ages when choosing the slot to overwrite; ``seed`` seeds it.
    """

    def __init__(
        self,
        key_dim: int,
        size: int,
        k: int = 256,
        alpha: float = 0.1,
        index: Any = None,
        exact: bool = False,
        seed: int = 0,
        age_noise: float = 8.0,
    ):
        self.key_dim = check_int(key_dim, "key_dim", low=1)
        self.size = check_int(size, "size", low=1, high=2**31 - 1)
        self.k = check_int(k, "k", low=1)
        self.alpha = check_float(alpha, "alpha", low=0.0)
        self.age_noise = check_float(age_noise, "age_noise", low=0.0)
        self.seed = check_int(seed, "seed", low=0)
        if not isinstance(exact, (bool, np.bool_)):
            raise ConfigError(f"exact must be True or False, got {exact!r}")
        self.exact = bool(exact)
        if self.exact and index is not None:
            raise ConfigError("pass either exact=True or index=..., not both")
        self._keys = np.zeros((self.size, self.key_dim), dtype=np.float32)
        self._values = np.full(self.size, -1, dtype=np.int64)
        self._stamps = np.zeros(self.size, dtype=np.int64)  # step of the last write
        self._recent: dict[int, int] = {}  # label -> slot last written with it
        self._step = 0
        self._filled = 0  # slots [0, _filled) hold keys; the rest are empty
        self._version = 0
        self._rng = np.random.default_rng(self.seed)
        # write log in stamp order, for finding the oldest slots without an O(size) scan:
        # an entry (slot, stamp) is live while stamps[slot] == stamp
        self._log_slots = np.zeros(max(64, 2 * self.size), dtype=np.int64)
        self._log_stamps = np.zeros_like(self._log_slots)
        self._log_head = 0
        self._log_end = 0
        # position of each slot's live log entry (-1: none) and the sorted positions of
        # dead entries in [head, end); within one stamp the log is in slot order
        self._log_pos = np.full(self.size, -1, dtype=np.int64)
        self._dead = np.zeros(0, dtype=np.int64)
        self._search: _ExactSearch | _IndexSearch
        if self.exact:
            self._search = _ExactSearch(self)
        else:
            params = (
                default_index_params(self.size, self.key_dim, self.seed)
                if index is None
                else _index_kwargs(index)
            )
            self._search = _IndexSearch(self, params)

    # -- state ---------------------------------------------------------------------
    @property
    def keys(self) -> np.ndarray:
        """(size, key_dim) float32 unit keys (zeros in empty slots); a read-only view."""
        view = self._keys.view()
        view.flags.writeable = False
        return view

    @property
    def values(self) -> np.ndarray:
        """(size,) int64 labels, -1 in empty slots; a read-only view."""
        view = self._values.view()
        view.flags.writeable = False
        return view

    @property
    def ages(self) -> np.ndarray:
        """(size,) int64 update steps since each slot was written (since the start if empty)."""
        return self._step - self._stamps

    @property
    def step(self) -> int:
        """Number of update steps applied."""
        return self._step

    @property
    def search(self) -> str:
        """ "exact" or "lsh"."""
        return self._search.name

    @property
    def index(self) -> Any:
        """The LSHIndex behind the search (None for exact search)."""
        return getattr(self._search, "index", None)

    def __len__(self) -> int:
        """Number of filled slots."""
        return self._filled

    def __repr__(self) -> str:
        return (
            f"LSHMemory(key_dim={self.key_dim}, size={self.size}, k={self.k}, alpha={self.alpha}, "
            f"search={self.search!r}, filled={self._filled})"
        )

    def clear(self) -> None:
        """Empty every slot (keys zero, values -1, ages 0) and the index."""
        self._keys[:] = 0
        self._values[:] = -1
        self._stamps[:] = 0
        self._recent.clear()
        self._step = 0
        self._filled = 0
        self._log_head = self._log_end = 0
        self._log_pos[:] = -1
        self._dead = np.zeros(0, dtype=np.int64)
        self._version += 1
        self._search.clear()

    # -- search ----------------------------------------------------------------------
    def _prepare(self, q: Any) -> np.ndarray:
        return _normalize(as_batch(q, self.key_dim, "q"), "q")

    def query(self, q: Any) -> QueryResult:
        """Nearest slot of each query of shape (B, key_dim) (normalized here)."""
        qn = self._prepare(q)
        slots, sims = self._search.topk(qn, 1)
        slots, sims = slots[:, 0], sims[:, 0]
        values = np.where(slots >= 0, self._values[np.maximum(slots, 0)], -1)
        return QueryResult(values.astype(np.int64), sims, slots)

    def select(self, q: Any, labels: Any) -> Selection:
        """Candidates, nearest slot, positive/negative slots and loss for labelled queries.

        ``q`` (B, key_dim) real, finite, non-zero rows; ``labels`` (B,) non-negative ints.
        Changes nothing.
        """
        qn = self._prepare(q)
        y = _check_labels(labels, qn.shape[0])
        return self._select(qn, y)

    def _select(self, qn: np.ndarray, y: np.ndarray) -> Selection:
        b = qn.shape[0]
        top_slots, top_sims = self._search.topk(qn, self.k)
        recent = np.array([self._recent.get(int(lab), -1) for lab in y], dtype=np.int64)
        recent_sims = np.full(b, -np.inf, dtype=np.float32)
        has_recent = recent >= 0
        if has_recent.any():
            recent_sims[has_recent] = np.einsum(
                "ij,ij->i", self._keys[recent[has_recent]], qn[has_recent]
            )
        cand = np.concatenate([top_slots, recent[:, None]], axis=1)
        cand_sims = np.concatenate([top_sims, recent_sims[:, None]], axis=1)
        valid = cand >= 0
        cand_vals = np.where(valid, self._values[np.maximum(cand, 0)], -1)
        pos = valid & (cand_vals == y[:, None])
        neg = valid & ~pos
        rows = np.arange(b)
        pos_col = np.argmax(np.where(pos, cand_sims, -np.inf), axis=1)
        neg_col = np.argmax(np.where(neg, cand_sims, -np.inf), axis=1)
        has_pos, has_neg = pos.any(axis=1), neg.any(axis=1)
        pos_slot = np.where(has_pos, cand[rows, pos_col], -1)
        neg_slot = np.where(has_neg, cand[rows, neg_col], -1)
        pos_sim = np.where(has_pos, cand_sims[rows, pos_col], 0.0).astype(np.float32)
        neg_sim = np.where(has_neg, cand_sims[rows, neg_col], np.nan).astype(np.float32)
        loss = np.where(has_neg, np.maximum(neg_sim - pos_sim + self.alpha, 0.0), 0.0)
        nearest = top_slots[:, 0]
        predicted = np.where(nearest >= 0, self._values[np.maximum(nearest, 0)], -1)
        return Selection(
            queries=qn,
            labels=y,
            candidates=cand,
            candidate_sims=cand_sims,
            nearest=nearest,
            predicted=predicted.astype(np.int64),
            similarity=top_sims[:, 0],
            pos_slot=pos_slot.astype(np.int64),
            neg_slot=neg_slot.astype(np.int64),
            pos_sim=pos_sim,
            neg_sim=neg_sim,
            loss=loss.astype(np.float32),
            version=self._version,
        )

    def loss(self, q: Any, labels: Any) -> np.ndarray:
        """(B,) margin losses ``relu(s_neg - s_pos + alpha)``; changes nothing."""
        return self.select(q, labels).loss

    # -- update ----------------------------------------------------------------------
    def update(self, q: Any, labels: Any) -> Selection:
        """One update step with queries (B, key_dim) and labels (B,); returns the
        selection (loss, predictions) made before the write."""
        qn = self._prepare(q)
        y = _check_labels(labels, qn.shape[0])
        if qn.shape[0] > self.size:
            raise InputError(
                f"q: a batch of {qn.shape[0]} queries exceeds the memory size {self.size}"
            )
        selection = self._select(qn, y)
        self._apply(selection)
        return selection

    def write(self, keys: Any, labels: Any) -> np.ndarray:
        """Store ``(normalize(keys), labels)`` without a lookup, as the rule's overwrite
        branch does: into the oldest slots (empty ones first), ages reset, one step.

        ``keys`` (n, key_dim) with ``n <= size``, ``labels`` (n,); returns the slots written.
        For preloading a memory (e.g. a benchmark's million keys) in one call.
        """
        qn = self._prepare(keys)
        y = _check_labels(labels, qn.shape[0])
        if qn.shape[0] > self.size:
            raise InputError(f"keys: {qn.shape[0]} keys exceed the memory size {self.size}")
        slots = self._oldest(qn.shape[0], exclude=np.zeros(0, dtype=np.int64))
        was_empty = slots >= self._filled
        self._step += 1
        self._keys[slots] = qn
        self._values[slots] = y
        self._stamps[slots] = self._step
        if was_empty.any():
            self._filled = int(max(self._filled, slots[was_empty].max() + 1))
        self._recent.update(zip(y.tolist(), slots.tolist(), strict=True))
        self._log_append(slots, self._step)
        self._version += 1
        self._search.write(slots, self._keys[slots], was_empty)
        return slots

    def apply(self, selection: Selection) -> None:
        """Write a selection made by :meth:`select` (same memory state) into memory."""
        if not isinstance(selection, Selection):
            raise InputError(f"selection: expected a Selection, got {type(selection).__name__}")
        if selection.version != self._version:
            raise InputError(
                "selection: the memory changed since this selection was made; select again"
            )
        if selection.queries.shape[0] > self.size:
            raise InputError(
                f"selection: a batch of {selection.queries.shape[0]} exceeds the memory size {self.size}"
            )
        self._apply(selection)

    def _apply(self, sel: Selection) -> None:
        qn, y = sel.queries, sel.labels
        correct = (sel.nearest >= 0) & (sel.predicted == y)
        fix_rows = np.flatnonzero(correct)
        new_rows = np.flatnonzero(~correct)
        fix_slots = sel.nearest[fix_rows]
        # strengthen: key <- normalize(q + key), applied in batch order for repeated slots
        uniq, first, counts = np.unique(fix_slots, return_index=True, return_counts=True)
        fixed_keys: dict[int, np.ndarray] = {}
        single = counts == 1
        if single.any():
            rows1 = fix_rows[first[single]]
            new_keys = _strengthened(self._keys[uniq[single]], qn[rows1])
            for slot, key in zip(uniq[single], new_keys, strict=True):
                fixed_keys[int(slot)] = key
        for slot in uniq[~single]:
            key = self._keys[slot : slot + 1]
            for row in fix_rows[fix_slots == slot]:
                key = _strengthened(key, qn[row : row + 1])
            fixed_keys[int(slot)] = key[0]
        # overwrite: the oldest slots not being strengthened in this step
        new_slots = self._oldest(new_rows.shape[0], exclude=uniq)
        was_empty = new_slots >= self._filled
        # --- mutate (everything below cannot fail on bad input) ---
        self._step += 1
        written = np.concatenate([uniq.astype(np.int64), new_slots])
        if uniq.size:
            self._keys[uniq] = np.stack([fixed_keys[int(s)] for s in uniq])
        if new_slots.size:
            self._keys[new_slots] = qn[new_rows]
            self._values[new_slots] = y[new_rows]
        self._stamps[written] = self._step
        if was_empty.any():
            self._filled = int(max(self._filled, new_slots[was_empty].max() + 1))
        for row, slot in zip(fix_rows, fix_slots, strict=True):
            self._recent[int(y[row])] = int(slot)
        for row, slot in zip(new_rows, new_slots, strict=True):
            self._recent[int(y[row])] = int(slot)
        self._log_append(written, self._step)
        self._version += 1
        is_new = np.concatenate([np.zeros(uniq.shape[0], bool), was_empty])
        self._search.write(written, self._keys[written], is_new)

    # -- oldest-slot bookkeeping -------------------------------------------------------
    def _oldest(self, m: int, exclude: np.ndarray) -> np.ndarray:
        """``m`` distinct slots to overwrite: empty ones first (in order), then the largest
        ``age + uniform(-age_noise, age_noise)`` among live slots not in ``exclude``.

        Only live log entries whose stamp is within ``2 * age_noise`` of the m-th oldest
        can win, so only those draw noise; no O(size) scan per step.
        """
        empty = min(m, self.size - self._filled)
        out = np.arange(self._filled, self._filled + empty, dtype=np.int64)
        rest = m - empty
        if rest == 0:
            return out
        chunk = max(256, 4 * rest)
        big_min = _BIG_GROUP if self.age_noise > 0 else 1 << 62
        stamps_log = self._log_stamps
        ex_pos = self._log_pos[exclude] if exclude.size else np.zeros(0, dtype=np.int64)
        # excluded slots look dead during the scan (their stamps are restored below)
        saved = self._stamps[exclude].copy()
        self._stamps[exclude] = -1
        try:
            # each log entry is scanned once: segments of doubling size are appended
            # until the live candidates run past the noise window of the rest-th oldest;
            # a long run of one stamp (e.g. a one-call preload) is counted, not scanned
            parts: list[tuple] = []  # ("s", slots, stamps) or ("b", lo, hi, dead, stamp)
            found = 0
            pos = self._log_head
            limit = 0.0
            while True:
                end = min(self._log_end, pos + chunk)
                big = None
                if end - pos >= 1 and big_min < (1 << 62):
                    s_last = stamps_log[end - 1]
                    lo_g = int(np.searchsorted(stamps_log[pos:end], s_last, "left")) + pos
                    hi_g = (
                        int(np.searchsorted(stamps_log[end : self._log_end], s_last, "right")) + end
                    )
                    if hi_g - lo_g >= big_min:
                        big = (lo_g, hi_g, s_last)
                        end = lo_g
                if end > pos:
                    seg_slots = self._log_slots[pos:end]
                    seg_stamps = stamps_log[pos:end]
                    live = self._stamps[seg_slots] == seg_stamps
                    parts.append(("s", seg_slots[live], seg_stamps[live]))
                    found += int(parts[-1][1].shape[0])
                    pos = end
                if big is not None:
                    lo_g, hi_g, s_g = big
                    d = self._dead
                    dead = d[np.searchsorted(d, lo_g) : np.searchsorted(d, hi_g)]
                    ex = ex_pos[(ex_pos >= lo_g) & (ex_pos < hi_g)]
                    if ex.size:
                        dead = np.union1d(dead, ex)
                    parts.append(("b", lo_g, hi_g, dead - lo_g, int(s_g)))
                    found += hi_g - lo_g - int(dead.shape[0])
                    pos = end = hi_g
                if found >= rest:
                    if limit == 0.0:
                        limit = self._nth_stamp(parts, rest - 1) + 2.0 * self.age_noise
                    last = parts[-1]
                    last_stamp = (
                        last[4] if last[0] == "b" else (last[2][-1] if last[2].size else None)
                    )
                    if (last_stamp is not None and last_stamp > limit) or end == self._log_end:
                        break
                elif end == self._log_end:
                    raise InputError(
                        f"q: not enough slots to write {m} new keys"
                    )  # unreachable: B <= size
                chunk *= 2
        finally:
            self._stamps[exclude] = saved
        parts = [p for p in parts if (p[0] == "s" or p[4] <= limit)]
        total = sum(
            int(np.count_nonzero(p[2] <= limit)) if p[0] == "s" else p[2] - p[1] - p[3].shape[0]
            for p in parts
        )
        if self.age_noise > 0 and total > _SAMPLE_ABOVE:
            return np.concatenate([out, self._sample_oldest(self._groups(parts, limit), rest)])
        cand_slots = np.concatenate([self._part_slots(p) for p in parts])
        cand_stamps = np.concatenate([self._part_stamps(p) for p in parts])
        window = cand_stamps <= limit
        cand_slots, cand_stamps = cand_slots[window], cand_stamps[window]
        # canonical order (stamp, slot), so the noise draw does not depend on log order
        canon = np.lexsort((cand_slots, cand_stamps))
        cand_slots, cand_stamps = cand_slots[canon], cand_stamps[canon]
        noisy = (self._step - cand_stamps) + self._rng.uniform(
            -self.age_noise, self.age_noise, cand_slots.shape[0]
        )
        pick = np.argsort(-noisy, kind="stable")[:rest]
        return np.concatenate([out, cand_slots[pick]])

    @staticmethod
    def _nth_stamp(parts: list[tuple], i: int) -> float:
        """Stamp of the ``i``-th live candidate (0-based) over the scanned parts."""
        for p in parts:
            n = p[1].shape[0] if p[0] == "s" else p[2] - p[1] - p[3].shape[0]
            if i < n:
                return float(p[2][i] if p[0] == "s" else p[4])
            i -= n
        raise AssertionError("unreachable: fewer candidates than counted")

    def _part_slots(self, p: tuple) -> np.ndarray:
        if p[0] == "s":
            return p[1]
        keep = np.ones(p[2] - p[1], dtype=bool)
        keep[p[3]] = False
        return self._log_slots[p[1] : p[2]][keep]

    @staticmethod
    def _part_stamps(p: tuple) -> np.ndarray:
        if p[0] == "s":
            return p[2]
        return np.full(p[2] - p[1] - p[3].shape[0], p[4], dtype=np.int64)

    def _groups(self, parts: list[tuple], limit: float) -> list[tuple]:
        """The window's stamp groups in stamp order: ``(stamp, n, slots)`` for scanned
        ones, ``(stamp, n, (lo, dead))`` for counted runs (members found by rank)."""
        groups: list[tuple] = []
        buf: list[tuple] = []

        def flush() -> None:
            if not buf:
                return
            slots = np.concatenate([b[1] for b in buf])
            stamps = np.concatenate([b[2] for b in buf])
            keep = stamps <= limit
            slots, stamps = slots[keep], stamps[keep]
            cut = np.flatnonzero(stamps[1:] != stamps[:-1]) + 1
            bounds = [0, *cut.tolist(), int(stamps.shape[0])]
            for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
                if hi > lo:
                    groups.append((int(stamps[lo]), hi - lo, slots[lo:hi]))
            buf.clear()

        for p in parts:
            if p[0] == "s":
                buf.append(p)
            else:
                flush()
                groups.append((p[4], p[2] - p[1] - p[3].shape[0], (p[1], p[3])))
        flush()
        return groups

    def _sample_oldest(self, groups: list[tuple], rest: int) -> np.ndarray:
        """The ``rest`` largest ``age + uniform(-age_noise, age_noise)`` among the
        ``groups`` (stamp order) without a draw per slot.

        Within a group of ``n`` slots of one age only the ``min(rest, n)`` largest noise
        draws can win: they are drawn as the top order statistics of ``n`` uniforms
        (``u_1 = w_1^(1/n)``, ``u_(j+1) = u_j * w_(j+1)^(1/(n-j))``) and given to distinct
        members chosen uniformly (by rank of slot id, so the draw does not depend on log
        order). Same distribution as drawing every slot's noise; O(groups * rest) plus the
        scanned groups' sizes (a counted run is in slot order in the log: rank -> position
        skips its sorted dead positions).
        """
        a = self.age_noise
        noisy_parts, slot_parts = [], []
        for stamp, n_g, members_of in groups:
            r = min(rest, n_g)
            w = self._rng.random(r)
            u = np.exp(np.cumsum(np.log(w) / (n_g - np.arange(r))))  # descending
            ranks = self._rng.choice(n_g, r, replace=False)
            if isinstance(members_of, tuple):
                lo, dead = members_of
                shifted = dead - np.arange(dead.shape[0])
                at = ranks + np.searchsorted(shifted, ranks, side="right")
                members = self._log_slots[lo + at]
            elif 8 * r > n_g:  # many ranks: one sort beats a partition on each
                members = np.sort(members_of)[ranks]
            else:
                members = np.partition(members_of, ranks)[ranks]
            noisy_parts.append((self._step - stamp) + (2.0 * u - 1.0) * a)
            slot_parts.append(members)
        noisy = np.concatenate(noisy_parts)
        pick = np.argsort(-noisy, kind="stable")[:rest]
        return np.concatenate(slot_parts)[pick].astype(np.int64)

    def _log_append(self, slots: np.ndarray, stamp: int) -> None:
        n = slots.shape[0]
        slots = np.sort(slots)  # slot order within a stamp (ranks -> positions)
        old = self._log_pos[slots]
        killed = np.sort(old[old >= 0])
        if killed.size:
            self._dead = np.insert(self._dead, np.searchsorted(self._dead, killed), killed)
        live_entries = self._log_end - self._log_head - self._dead.shape[0]
        if self._log_end + n > self._log_slots.shape[0] or self._dead.shape[0] > max(
            1 << 16, live_entries // 4
        ):
            self._log_compact(extra=n)
        self._log_slots[self._log_end : self._log_end + n] = slots
        self._log_stamps[self._log_end : self._log_end + n] = stamp
        self._log_pos[slots] = np.arange(self._log_end, self._log_end + n)
        self._log_end += n
        # drop dead entries at the head (a bounded look-ahead keeps this O(batch))
        end = min(self._log_end, self._log_head + 4 * max(n, 64))
        head = self._log_slots[self._log_head : end]
        live = self._stamps[head] == self._log_stamps[self._log_head : end]
        first_live = int(np.argmax(live)) if live.any() else end - self._log_head
        self._log_head += first_live
        if self._dead.size and self._dead[0] < self._log_head:
            self._dead = self._dead[np.searchsorted(self._dead, self._log_head) :]

    def _log_compact(self, extra: int = 0) -> None:
        """Keep only the live entries (in order), growing the buffer if needed."""
        slots = self._log_slots[self._log_head : self._log_end]
        stamps = self._log_stamps[self._log_head : self._log_end]
        live = self._stamps[slots] == stamps
        slots, stamps = slots[live], stamps[live]
        cap = max(self._log_slots.shape[0], 2 * (slots.shape[0] + extra))
        self._log_slots = np.zeros(cap, dtype=np.int64)
        self._log_stamps = np.zeros(cap, dtype=np.int64)
        self._log_slots[: slots.shape[0]] = slots
        self._log_stamps[: slots.shape[0]] = stamps
        self._log_head, self._log_end = 0, slots.shape[0]
        self._log_pos[:] = -1
        self._log_pos[slots] = np.arange(slots.shape[0])
        self._dead = np.zeros(0, dtype=np.int64)

    def _log_rebuild(self) -> None:
        """Log of the filled slots in stamp order (after load)."""
        filled = np.arange(self._filled, dtype=np.int64)
        order = filled[np.argsort(self._stamps[: self._filled], kind="stable")]
        cap = max(64, 2 * self.size)
        self._log_slots = np.zeros(cap, dtype=np.int64)
        self._log_stamps = np.zeros(cap, dtype=np.int64)
        self._log_slots[: order.shape[0]] = order
        self._log_stamps[: order.shape[0]] = self._stamps[order]
        self._log_head, self._log_end = 0, order.shape[0]
        self._log_pos = np.full(self.size, -1, dtype=np.int64)
        self._log_pos[order] = np.arange(order.shape[0])
        self._dead = np.zeros(0, dtype=np.int64)

    # -- files -----------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the memory (keys, values, ages, settings, noise state) atomically."""
        labels = np.array(sorted(self._recent), dtype=np.int64)
        meta = {
            "key_dim": self.key_dim,
            "size": self.size,
            "k": self.k,
            "alpha": self.alpha,
            "age_noise": self.age_noise,
            "seed": self.seed,
            "exact": self.exact,
            "index": self._search.config(),
            "step": self._step,
            "filled": self._filled,
            "rng": self._rng.bit_generator.state,
        }
        arrays: dict[str, np.ndarray] = {
            "keys": self._keys[: self._filled],
            "values": self._values[: self._filled],
            "stamps": self._stamps,
            "recent_labels": labels,
            "recent_slots": np.array([self._recent[int(lab)] for lab in labels], dtype=np.int64),
        }
        save_arrays(path, FILE_KIND, FILE_VERSION, meta, arrays)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> LSHMemory:
        """Read a memory written by :meth:`save`; the LSH index is rebuilt from the keys."""
        meta, arrays, _ = load_arrays(path, FILE_KIND, FILE_VERSION)
        try:
            mem = cls(
                key_dim=meta["key_dim"],
                size=meta["size"],
                k=meta["k"],
                alpha=meta["alpha"],
                index=meta["index"] if not meta["exact"] else None,
                exact=meta["exact"],
                seed=meta["seed"],
                age_noise=meta["age_noise"],
            )
            filled, step = int(meta["filled"]), int(meta["step"])
            keys, values, stamps = arrays["keys"], arrays["values"], arrays["stamps"]
            rec_labels, rec_slots = arrays["recent_labels"], arrays["recent_slots"]
        except (KeyError, TypeError, ConfigError) as exc:
            raise FileFormatError(f"{path}: incomplete or invalid lsh-memory file ({exc})") from exc
        problems = []
        if not 0 <= filled <= mem.size or step < 0:
            problems.append("filled/step out of range")
        if keys.shape != (filled, mem.key_dim) or keys.dtype != np.float32:
            problems.append(f"keys have shape {keys.shape} dtype {keys.dtype}")
        elif not np.all(np.isfinite(keys)):
            problems.append("keys hold non-finite values")
        if values.shape != (filled,) or values.dtype != np.int64:
            problems.append(f"values have shape {values.shape} dtype {values.dtype}")
        if stamps.shape != (mem.size,) or stamps.dtype != np.int64:
            problems.append(f"stamps have shape {stamps.shape} dtype {stamps.dtype}")
        if rec_labels.shape != rec_slots.shape or rec_slots.dtype != np.int64:
            problems.append("recent-slot arrays disagree")
        elif rec_slots.size and (rec_slots.min() < 0 or rec_slots.max() >= max(filled, 1)):
            problems.append("recent slots out of range")
        if problems:
            raise FileFormatError(f"{path}: corrupt lsh-memory file: {'; '.join(problems)}")
        mem._keys[:filled] = keys
        mem._values[:filled] = values
        mem._stamps[:] = stamps
        mem._step, mem._filled = step, filled
        mem._recent = {int(a): int(b) for a, b in zip(rec_labels, rec_slots, strict=True)}
        try:
            mem._rng.bit_generator.state = meta["rng"]
        except (KeyError, TypeError, ValueError) as exc:
            raise FileFormatError(f"{path}: bad random-generator state ({exc})") from exc
        mem._log_rebuild()
        if filled and isinstance(mem._search, _IndexSearch):
            mem._search.write(
                np.arange(filled, dtype=np.int64), mem._keys[:filled], np.ones(filled, bool)
            )
        return mem
