"""The update path keeps the index consistent with a model: after many moves, removals
and re-adds (enough to merge the pending run and drop tombstones), every live id is
found from its current vector and a removed id is never returned."""

from __future__ import annotations

import numpy as np
import pytest

from lshcore.search.index import LSHIndex

DIM = 16


def _unit(rng: np.random.Generator, n: int) -> np.ndarray:
    x = rng.standard_normal((n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize("policy", ["unbounded", "fifo"])
def test_many_updates_keep_every_id_findable_and_removed_ids_gone(policy: str) -> None:
    rng = np.random.default_rng(3)
    n = 5000  # 5000 * 4 entries: the first add already merges the pending run
    index = LSHIndex(DIM, k=6, l=4, policy=policy, bucket_size=4096, n_probes=2)
    model = dict(enumerate(_unit(rng, n)))  # id -> current vector
    index.add(np.stack([model[i] for i in range(n)]), ids=np.arange(n))
    removed: set[int] = set()
    for _ in range(6):
        live = np.array(sorted(model), dtype=np.int64)
        moved = rng.choice(live, 900, replace=False)  # tombstones pile up: compactions
        x = _unit(rng, moved.size)
        index.update(moved, x)
        model.update(zip(moved.tolist(), x, strict=True))
        gone = rng.choice(np.setdiff1d(live, moved), 50, replace=False)
        index.remove(gone)
        for i in gone.tolist():
            del model[i]
        removed |= set(gone.tolist())
        back = np.array(sorted(removed)[:20], dtype=np.int64)  # some come back
        xb = _unit(rng, back.size)
        index.add(xb, ids=back)
        model.update(zip(back.tolist(), xb, strict=True))
        removed -= set(back.tolist())
        assert len(index) == len(model)
        assert index.tables.n_entries() == len(model) * index.l
        ids = np.array(sorted(model), dtype=np.int64)
        vecs = np.stack([model[i] for i in ids.tolist()])
        scores, found = index.search(vecs, 1)
        # every id is in its own buckets: its own vector finds it at cosine 1
        np.testing.assert_allclose(scores[:, 0], 1.0, atol=1e-5)
        assert np.isin(found[:, 0], ids).all()
        cand = index.candidates(vecs[::7])
        assert not np.isin(cand.ids, np.array(sorted(removed) or [-5])).any()
        for row, i in enumerate(ids[::7].tolist()):
            assert i in set(cand.row(row)[0].tolist())
        np.testing.assert_allclose(index.vectors(ids[:50]), vecs[:50])
    if policy == "unbounded":
        assert index.tables.keys.shape[0] > 0  # the main run is in use
