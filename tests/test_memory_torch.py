"""The PyTorch memory module: a loss differentiable in the query, and an embedder that learns."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from lshcore.errors import InputError  # noqa: E402
from lshcore.memory.core import LSHMemory  # noqa: E402
from lshcore.memory.torch import MemoryModule  # noqa: E402


def _filled_memory(dim: int = 6, seed: int = 0) -> LSHMemory:
    rng = np.random.default_rng(seed)
    mem = LSHMemory(dim, 32, k=8, exact=True)
    for _ in range(8):
        mem.update(rng.standard_normal((3, dim)), rng.integers(0, 5, 3))
    return mem


def test_loss_matches_memory_and_gradcheck() -> None:
    mem = _filled_memory()
    module = MemoryModule(mem).eval()
    rng = np.random.default_rng(1)
    emb = torch.tensor(rng.standard_normal((7, 6)), dtype=torch.float64, requires_grad=True)
    labels = torch.tensor(rng.integers(0, 5, 7))
    out = module(emb, labels)
    want = mem.select(emb.detach().numpy(), labels.numpy()).loss.mean()
    assert out.loss.item() == pytest.approx(float(want), abs=1e-5)
    assert out.loss.item() > 0
    assert torch.autograd.gradcheck(lambda e: module(e, labels).loss, (emb,), eps=1e-6, atol=1e-5)
    out.loss.backward()
    assert emb.grad is not None and emb.grad.abs().sum() > 0
    assert mem.step == 8  # eval mode: nothing written


def test_training_mode_writes_and_query_without_labels() -> None:
    mem = LSHMemory(4, 16, exact=True)
    module = MemoryModule(mem).train()
    emb = torch.eye(4)
    module(emb, torch.arange(4))
    assert len(mem) == 4 and mem.step == 1
    out = module(emb * 2.0)
    assert out.loss is None and out.predicted.tolist() == [0, 1, 2, 3]
    module(emb, torch.arange(4), update=False)
    assert mem.step == 1


def test_bad_input_leaves_memory_unchanged() -> None:
    mem = _filled_memory()
    module = MemoryModule(mem).train()
    keys, step = mem.keys.copy(), mem.step
    with pytest.raises(InputError, match="labels"):
        module(torch.ones(2, 6), torch.tensor([0.5, 1.0]))
    with pytest.raises(InputError, match="embeddings"):
        module(torch.ones(6), torch.tensor([1]))
    with pytest.raises(InputError, match="expected shape"):
        module(torch.ones(2, 5), torch.tensor([1, 2]))
    np.testing.assert_array_equal(keys, mem.keys)
    assert mem.step == step
    with pytest.raises(InputError, match="memory"):
        MemoryModule("not a memory")  # type: ignore[arg-type]


@pytest.fixture
def one_thread():
    """One torch thread (fastest on the shared 2-core machine), restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_embedder_learns_through_the_memory(one_thread) -> None:
    """Inputs: 4 informative coordinates buried under 28 noisy ones. A linear embedder
    trained only through the memory loss learns to read the informative ones, so
    one-shot recall of new classes rises well above its untrained value."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    dim_in, dim_key, n_classes = 32, 8, 200
    centers = np.zeros((n_classes, dim_in), np.float32)
    centers[:, :4] = rng.standard_normal((n_classes, 4)) * 2.0

    def draw(labels: np.ndarray) -> torch.Tensor:
        x = centers[labels] + 0.2 * rng.standard_normal((labels.size, dim_in))
        x[:, 4:] += 1.5 * rng.standard_normal((labels.size, dim_in - 4))
        return torch.tensor(x, dtype=torch.float32)

    embed = torch.nn.Linear(dim_in, dim_key)
    memory = MemoryModule(LSHMemory(dim_key, 64, k=16, exact=True, seed=0))

    def one_shot_accuracy(classes: np.ndarray) -> float:
        mem = LSHMemory(dim_key, 64, k=16, exact=True)
        hits = []
        for i in range(0, classes.size, 5):
            mem.clear()
            ways = classes[i : i + 5]
            with torch.no_grad():
                mem.update(embed(draw(ways)).numpy(), np.arange(5))
                pred = mem.query(embed(draw(ways)).numpy()).values
            hits.append(pred == np.arange(5))
        return float(np.mean(hits))

    test_classes = np.arange(150, 200)
    before = one_shot_accuracy(test_classes)
    opt = torch.optim.Adam(embed.parameters(), lr=0.02)
    for _ in range(60):
        memory.memory.clear()
        ways = rng.choice(150, 5, replace=False)
        loss = 0.0
        for _ in range(3):  # each class shown three times per episode
            order = rng.permutation(5)
            out = memory(embed(draw(ways[order])), torch.tensor(order))
            loss = loss + out.loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = one_shot_accuracy(test_classes)
    assert after > before + 0.15, (before, after)
    assert after > 0.7
