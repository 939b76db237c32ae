"""Omniglot one-shot learning with the LSH memory (Kaiser et al., 2017), in PyTorch.

Data (read straight from the zips, no extraction): ``images_background_small1.zip`` and
``images_background_small2.zip`` (``<root>/<Alphabet>/characterNN/*.png``; Greek and
Latin appear in both and are read once) and ``all_runs.zip`` (the 20 official 20-way
1-shot runs). Images are downscaled to 28x28, ink = 1.

Training is episodic: each step clears the memory and plays ``episodes`` episodes in
parallel (distinct labels, one shared memory), each over ``way`` characters of the
training alphabets shown ``length`` times in random order; the embedder learns only
through the memory's margin loss. Evaluation writes the support drawings into a fresh
memory with the update rule and predicts each query by its nearest slot: N-way K-shot
on held-out background alphabets, and the official runs (score = fraction of the test
items matched to their class).
"""

from __future__ import annotations

import io
import os
import re
import time
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from lshcore.core.validation import check_choice, check_int
from lshcore.errors import ConfigError, DataError
from lshcore.memory.core import LSHMemory
from lshcore.memory.torch import MemoryModule

__all__ = [
    "BACKGROUND_ZIPS",
    "RUNS_ZIP",
    "Background",
    "OfficialRun",
    "OmniglotConfig",
    "Embedder",
    "check_data_dir",
    "load_background",
    "load_runs",
    "split_alphabets",
    "train",
    "evaluate_episodes",
    "evaluate_runs",
    "run_omniglot",
    "configure_threads",
]

BACKGROUND_ZIPS = ("images_background_small1.zip", "images_background_small2.zip")
RUNS_ZIP = "all_runs.zip"
IMAGE_SIZE = 28
_BG_PNG = re.compile(r"^[^/]+/([^/]+)/([^/]+)/([^/]+\.png)$")
_LABEL_LINE = re.compile(r"^(run\d+)/test/(item\d+\.png)\s+(run\d+)/training/(class\d+\.png)$")


# -- data -------------------------------------------------------------------------------
@dataclass
class Background:
    """Background images: ``images`` (n, 28, 28) float32 (ink 1), ``char`` (n,) character
    index, ``alphabet`` (n_chars,) alphabet index of each character, ``alphabets`` names,
    ``chars`` names ``Alphabet/characterNN``."""

    images: np.ndarray
    char: np.ndarray
    alphabet: np.ndarray
    alphabets: list[str]
    chars: list[str]


@dataclass
class OfficialRun:
    """One official run: ``train`` (20, 28, 28) one drawing per class, ``test`` (20, 28, 28),
    ``answer`` (20,) the class (row of ``train``) of each test item."""

    name: str
    train: np.ndarray
    test: np.ndarray
    answer: np.ndarray


def check_data_dir(data_dir: str | os.PathLike[str]) -> Path:
    """The data directory, or DataError naming the files it must hold."""
    path = Path(data_dir)
    expected = (*BACKGROUND_ZIPS, RUNS_ZIP)
    if not path.is_dir():
        raise DataError(f"{path}: not a directory; expected one holding {', '.join(expected)}")
    missing = [name for name in expected if not (path / name).is_file()]
    if missing:
        raise DataError(
            f"{path}: missing {', '.join(missing)} (an Omniglot data directory holds {', '.join(expected)})"
        )
    return path


def _open_zip(path: Path) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise DataError(f"{path}: not a readable zip file ({exc})") from exc


def _read_png(zf: zipfile.ZipFile, member: str, size: int) -> np.ndarray:
    """A PNG member as (size, size) float32 with ink = 1, background = 0."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(zf.read(member))) as img:
            gray = img.convert("L").resize((size, size), Image.Resampling.BOX)
    except (UnidentifiedImageError, OSError, ValueError, zipfile.BadZipFile) as exc:
        raise DataError(f"{zf.filename}: {member}: not a readable image ({exc})") from exc
    return 1.0 - np.asarray(gray, dtype=np.float32) / 255.0


def load_background(data_dir: str | os.PathLike[str], size: int = IMAGE_SIZE) -> Background:
    """Every background drawing, each character once (Greek and Latin are in both zips)."""
    path = check_data_dir(data_dir)
    members: dict[tuple[str, str], list[tuple[zipfile.ZipFile, str]]] = {}
    zips = [_open_zip(path / name) for name in BACKGROUND_ZIPS]
    try:
        for zf in zips:
            seen_here: dict[tuple[str, str], list[tuple[zipfile.ZipFile, str]]] = {}
            for member in sorted(zf.namelist()):
                m = _BG_PNG.match(member)
                if m:
                    seen_here.setdefault((m.group(1), m.group(2)), []).append((zf, member))
            for key, files in seen_here.items():
                members.setdefault(key, files)  # first zip wins: drop the duplicates
        if not members:
            raise DataError(
                f"{path}: no <Alphabet>/characterNN/*.png images in {', '.join(BACKGROUND_ZIPS)}"
            )
        keys = sorted(members)
        alphabets = sorted({a for a, _ in keys})
        images, chars = [], []
        for c, key in enumerate(keys):
            for zf, member in members[key]:
                images.append(_read_png(zf, member, size))
                chars.append(c)
    finally:
        for zf in zips:
            zf.close()
    return Background(
        images=np.stack(images),
        char=np.asarray(chars, dtype=np.int64),
        alphabet=np.asarray([alphabets.index(a) for a, _ in keys], dtype=np.int64),
        alphabets=alphabets,
        chars=[f"{a}/{c}" for a, c in keys],
    )


def load_runs(data_dir: str | os.PathLike[str], size: int = IMAGE_SIZE) -> list[OfficialRun]:
    """The official runs in ``all_runs.zip`` (``runNN/class_labels.txt`` gives the answers)."""
    path = check_data_dir(data_dir) / RUNS_ZIP
    runs = []
    with _open_zip(path) as zf:
        names = set(zf.namelist())
        label_files = sorted(n for n in names if re.fullmatch(r"run\d+/class_labels\.txt", n))
        if not label_files:
            raise DataError(f"{path}: no runNN/class_labels.txt inside")
        for label_file in label_files:
            run = label_file.split("/")[0]
            lines = zf.read(label_file).decode("utf-8", errors="replace").splitlines()
            tests, answers = [], []
            for lineno, line in enumerate(lines, 1):
                if not line.strip():
                    continue
                m = _LABEL_LINE.match(line.strip())
                if not m or m.group(1) != run or m.group(3) != run:
                    raise DataError(f"{path}: {label_file} line {lineno}: expected "
                                    f"'{run}/test/itemXX.png {run}/training/classYY.png', got {line!r}")  # fmt: skip
                tests.append(f"{run}/test/{m.group(2)}")
                answers.append(f"{run}/training/{m.group(4)}")
            classes = sorted(n for n in names if re.fullmatch(rf"{run}/training/class\d+\.png", n))
            absent = [n for n in tests + answers if n not in names]
            if absent or not classes:
                raise DataError(
                    f"{path}: {label_file} names {absent[0] if absent else 'no classes'}, not in the zip"
                )
            runs.append(
                OfficialRun(
                    name=run,
                    train=np.stack([_read_png(zf, n, size) for n in classes]),
                    test=np.stack([_read_png(zf, n, size) for n in tests]),
                    answer=np.asarray([classes.index(a) for a in answers], dtype=np.int64),
                )
            )
    return runs


def split_alphabets(
    bg: Background, heldout: int = 2, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Character indices of the training and held-out alphabets (``heldout`` alphabets
    picked by ``seed``)."""
    n_alpha = len(bg.alphabets)
    heldout = check_int(heldout, "heldout", low=1, high=n_alpha - 1)
    picked = np.random.default_rng(seed).permutation(n_alpha)[:heldout]
    is_held = np.isin(bg.alphabet, picked)
    return np.flatnonzero(~is_held), np.flatnonzero(is_held)


# -- model ------------------------------------------------------------------------------
class Embedder(nn.Module):
    """Small convolutional embedder: 3 x (conv 3x3, ReLU, max-pool 2) on 28x28, then a
    linear map to ``key_dim``."""

    def __init__(self, key_dim: int = 128, width: int = 32):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(width, width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(width, width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.head = nn.Linear(width * 3 * 3, key_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(n, 28, 28) or (n, 1, 28, 28) images -> (n, key_dim) embeddings."""
        if x.ndim == 3:
            x = x[:, None]
        return self.head(self.features(x).flatten(1))


@dataclass
class OmniglotConfig:
    """Settings of a run (the defaults train in a few CPU minutes)."""

    steps: int = 500
    seed: int = 0
    index: str = "lsh"
    key_dim: int = 128
    memory_size: int = 8192
    k: int = 256
    alpha: float = 0.1
    way: int = 5
    length: int = 4  # times each class is shown in a training episode
    episodes: int = 8  # episodes played in parallel per step
    lr: float = 1e-3
    rotations: bool = True  # 90-degree rotations of a character count as new classes
    heldout: int = 2
    ways: Sequence[int] = (5, 20)
    shots: Sequence[int] = (1, 5)
    eval_episodes: int = 200
    threads: int = 1  # PyTorch threads: 1 beats 2 on a busy 2-core machine
    progress: bool = True

    def __post_init__(self) -> None:
        check_int(self.steps, "steps", low=0)
        check_int(self.seed, "seed", low=0)
        check_choice(self.index, "index", ("lsh", "exact"))
        for name in (
            "key_dim",
            "memory_size",
            "k",
            "way",
            "length",
            "episodes",
            "eval_episodes",
            "threads",
        ):
            check_int(getattr(self, name), name, low=1)
        if self.way * self.length * self.episodes > self.memory_size:
            raise ConfigError("memory_size must hold way * length * episodes keys")


def make_memory(cfg: OmniglotConfig, seed: int = 0) -> LSHMemory:
    """An empty memory with the run's settings (LSH or exact search)."""
    return LSHMemory(
        cfg.key_dim,
        cfg.memory_size,
        k=cfg.k,
        alpha=cfg.alpha,
        exact=cfg.index == "exact",
        seed=seed,
    )


def _embed(net: Embedder, images: np.ndarray, batch: int = 512) -> np.ndarray:
    net.eval()
    out = []
    with torch.no_grad():
        for i in range(0, images.shape[0], batch):
            out.append(net(torch.from_numpy(images[i : i + batch])).numpy())
    return np.concatenate(out).astype(np.float32)


def train(
    cfg: OmniglotConfig, bg: Background, train_chars: np.ndarray, log: Any = None
) -> tuple[Embedder, list[float]]:
    """Episodic training through the memory; returns the embedder and the loss per step."""
    from tqdm import tqdm

    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    net = Embedder(cfg.key_dim)
    memory = MemoryModule(make_memory(cfg, seed=cfg.seed)).train()
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    by_char = [np.flatnonzero(bg.char == c) for c in range(len(bg.chars))]
    n_rot = 4 if cfg.rotations else 1
    n_classes = cfg.way * cfg.episodes
    labels = np.arange(n_classes)
    losses = []
    bar = tqdm(
        range(cfg.steps), desc=f"omniglot train ({cfg.index})", disable=not cfg.progress, file=log
    )
    for _ in bar:
        net.train()
        memory.memory.clear()
        picked = rng.choice(train_chars.size * n_rot, n_classes, replace=False)
        chars, rots = train_chars[picked // n_rot], picked % n_rot
        total = torch.zeros(())
        for _ in range(cfg.length):
            drawing = np.array([rng.choice(by_char[c]) for c in chars])
            order = rng.permutation(n_classes)
            imgs = np.stack([np.rot90(bg.images[drawing[i]], rots[i]) for i in order])
            out = memory(
                net(torch.from_numpy(np.ascontiguousarray(imgs))), torch.from_numpy(labels[order])
            )
            total = total + out.loss
        opt.zero_grad()
        total.backward()
        opt.step()
        losses.append(float(total.detach()) / cfg.length)
        bar.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}")
    return net, losses


def evaluate_episodes(
    cfg: OmniglotConfig,
    embeddings: np.ndarray,
    char: np.ndarray,
    chars: np.ndarray,
    way: int,
    shot: int,
    seed: int = 0,
) -> float:
    """Accuracy of ``way``-way ``shot``-shot episodes over the characters ``chars``:
    ``shot`` drawings per class written into a fresh memory (update rule, one batch per
    shot), then one more drawing per class predicted by its nearest slot."""
    if chars.size < way:
        raise ConfigError(f"way={way}: only {chars.size} held-out characters")
    rng = np.random.default_rng(seed)
    memory = make_memory(cfg, seed=seed)
    by_char = {int(c): np.flatnonzero(char == c) for c in chars}
    hits = 0
    for _ in range(cfg.eval_episodes):
        memory.clear()
        classes = rng.choice(chars, way, replace=False)
        draws = np.stack([rng.choice(by_char[int(c)], shot + 1, replace=False) for c in classes])
        for s in range(shot):
            order = rng.permutation(way)
            memory.update(embeddings[draws[order, s]], order)
        pred = memory.query(embeddings[draws[:, shot]]).values
        hits += int(np.sum(pred == np.arange(way)))
    return hits / (cfg.eval_episodes * way)


def evaluate_runs(cfg: OmniglotConfig, net: Embedder, runs: list[OfficialRun]) -> float:
    """Fraction of the official runs' test items matched to their class (1-shot)."""
    memory = make_memory(cfg, seed=cfg.seed)
    hits = total = 0
    for run in runs:
        memory.clear()
        memory.update(_embed(net, run.train), np.arange(run.train.shape[0]))
        pred = memory.query(_embed(net, run.test)).values
        hits += int(np.sum(pred == run.answer))
        total += run.answer.shape[0]
    return hits / total


def run_omniglot(
    data_dir: str | os.PathLike[str], cfg: OmniglotConfig, log: Any = None
) -> dict[str, Any]:
    """Load, train, evaluate; returns a JSON-able report with ``records`` (``way``,
    ``shot``, ``accuracy``) and ``official_20way_1shot``."""
    check_data_dir(data_dir)
    threads = configure_threads(cfg.threads)
    t0 = time.perf_counter()
    bg = load_background(data_dir)
    runs = load_runs(data_dir)
    train_chars, held_chars = split_alphabets(bg, cfg.heldout, seed=0)
    t_load = time.perf_counter() - t0
    net, losses = train(cfg, bg, train_chars, log=log)
    t_train = time.perf_counter() - t0 - t_load
    held_images = np.flatnonzero(np.isin(bg.char, held_chars))
    emb = np.zeros((bg.images.shape[0], cfg.key_dim), np.float32)
    emb[held_images] = _embed(net, bg.images[held_images])
    records = []
    for way in cfg.ways:
        for shot in cfg.shots:
            acc = evaluate_episodes(cfg, emb, bg.char, held_chars, way, shot, seed=cfg.seed + 1)
            records.append(
                {"way": int(way), "shot": int(shot), "accuracy": acc, "episodes": cfg.eval_episodes}
            )
    official = evaluate_runs(cfg, net, runs)
    heldout_names = sorted({bg.alphabets[bg.alphabet[c]] for c in held_chars})
    return {
        "index": cfg.index,
        "steps": cfg.steps,
        "seed": cfg.seed,
        "records": records,
        "official_20way_1shot": official,
        "official_runs": len(runs),
        "heldout_alphabets": heldout_names,
        "train_characters": int(train_chars.size),
        "heldout_characters": int(held_chars.size),
        "final_loss": float(np.mean(losses[-50:])) if losses else None,
        "seconds": {
            "load": round(t_load, 1),
            "train": round(t_train, 1),
            "total": round(time.perf_counter() - t0, 1),
        },  # fmt: skip
        "threads": threads,
        "settings": {
            "key_dim": cfg.key_dim,
            "memory_size": cfg.memory_size,
            "k": cfg.k,
            "alpha": cfg.alpha,
            "way": cfg.way,
            "length": cfg.length,
            "episodes": cfg.episodes,
            "lr": cfg.lr,
            "rotations": cfg.rotations,
        },  # fmt: skip
    }


def configure_threads(torch_threads: int = 1, numba_threads: int = 1) -> dict[str, int | None]:
    """Set PyTorch's threads and the numba threads of the index kernels; returns both.

    numba's pool is left to the numba backend's shared setup (``lshcore.kernels._numba_setup``,
    see docs/index.md, "Threads"): numba shares PyTorch's OpenMP runtime, and torch is
    already imported here, so what keeps numba off PyTorch's threads is one numba thread:
    the kernels then run serially, with no OpenMP regions. The memory's searches are
    small, so one thread is enough.
    """
    torch.set_num_threads(check_int(torch_threads, "threads", low=1))
    out: dict[str, int | None] = {"torch": torch.get_num_threads(), "numba": None}
    try:
        import numba

        from lshcore.kernels import _numba_setup  # noqa: F401  (before numba's pool starts)
    except ImportError:
        return out
    numba.set_num_threads(
        min(check_int(numba_threads, "numba_threads", low=1), numba.config.NUMBA_NUM_THREADS)  # type: ignore[attr-defined]
    )
    out["numba"] = int(numba.get_num_threads())
    return out
