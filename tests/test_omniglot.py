"""The Omniglot pipeline: zip reading, bad data, and tiny end-to-end runs (synthetic and real)."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
Image = pytest.importorskip("PIL.Image")
ImageDraw = pytest.importorskip("PIL.ImageDraw")

from click.testing import CliRunner  # noqa: E402

from lshcore.cli.memory import memory as memory_cli  # noqa: E402
from lshcore.errors import ConfigError, DataError  # noqa: E402
from lshcore.memory import omniglot as og  # noqa: E402

_ROOT = Path(__file__).resolve().parents[1]
# ../shared/data beside the checkout; from a worktree (/work/wt/<name>) that folder is
# further up, so every ancestor is tried (a fixed parents[1].parent missed it and the
# real-data test skipped although the data were there)
_REAL_TRIED = [d / "shared" / "data" / "omniglot" for d in (_ROOT, *_ROOT.parents)]
REAL = next((d for d in _REAL_TRIED if (d / og.RUNS_ZIP).is_file()), _REAL_TRIED[1])


def _png(strokes: np.ndarray, jitter: np.ndarray) -> bytes:
    img = Image.new("L", (40, 40), 255)  # white paper, black ink, as in Omniglot
    draw = ImageDraw.Draw(img)
    for x0, y0, x1, y1 in strokes:
        dx, dy = jitter
        draw.line([(x0 + dx, y0 + dy), (x1 + dx, y1 + dy)], fill=0, width=3)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _make_data(root: Path, chars_per_alphabet: int = 12, drawings: int = 6, runs: int = 2) -> Path:
    rng = np.random.default_rng(0)
    shapes: dict[str, np.ndarray] = {}

    def strokes(key: str) -> np.ndarray:
        if key not in shapes:
            shapes[key] = rng.integers(4, 36, (3, 4))
        return shapes[key]

    layout = {
        "images_background_small1": ["Alpha", "Beta", "Greek"],
        "images_background_small2": ["Greek", "Gamma"],
    }
    for name, alphabets in layout.items():
        with zipfile.ZipFile(root / f"{name}.zip", "w") as zf:
            for alpha in alphabets:
                for c in range(1, chars_per_alphabet + 1):
                    for d in range(1, drawings + 1):
                        member = f"{name}/{alpha}/character{c:02d}/{c:04d}_{d:02d}.png"
                        zf.writestr(member, _png(strokes(f"{alpha}{c}"), rng.integers(-2, 3, 2)))
    with zipfile.ZipFile(root / "all_runs.zip", "w") as zf:
        for r in range(1, runs + 1):
            lines = []
            perm = rng.permutation(20) + 1
            for c in range(1, 21):
                key = f"run{r}-{c}"
                zf.writestr(f"run{r:02d}/training/class{c:02d}.png", _png(strokes(key), (0, 0)))
                zf.writestr(
                    f"run{r:02d}/test/item{perm[c - 1]:02d}.png", _png(strokes(key), (1, -1))
                )
                lines.append(
                    f"run{r:02d}/test/item{perm[c - 1]:02d}.png run{r:02d}/training/class{c:02d}.png"
                )
            zf.writestr(f"run{r:02d}/class_labels.txt", "\n".join(sorted(lines)) + "\n")
    return root


@pytest.fixture(autouse=True)
def torch_threads_only(monkeypatch):
    """Set only torch's threads (restored afterwards): switching numba's threading layer,
    as the command does in its own process, would leak into the rest of the test session."""
    import torch

    before = torch.get_num_threads()

    def configure(torch_threads: int = 1, numba_threads: int = 1) -> dict:
        torch.set_num_threads(torch_threads)
        return {"torch": torch_threads, "numba": None}

    monkeypatch.setattr(og, "configure_threads", configure)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return _make_data(tmp_path_factory.mktemp("omniglot"))


def test_load_background_dedupes_and_scales(data_dir: Path) -> None:
    bg = og.load_background(data_dir)
    assert bg.alphabets == ["Alpha", "Beta", "Gamma", "Greek"]  # Greek read once
    assert len(bg.chars) == 4 * 12
    assert bg.images.shape == (4 * 12 * 6, 28, 28) and bg.images.dtype == np.float32
    assert np.all(np.bincount(bg.char) == 6)
    # ink is 1 on a 0 background: most of each image is empty paper
    assert 0.0 < bg.images.mean() < 0.3 and bg.images.max() > 0.9
    train, held = og.split_alphabets(bg, heldout=2, seed=0)
    assert train.size == held.size == 24 and not set(train) & set(held)
    assert len({int(bg.alphabet[c]) for c in held}) == 2


def test_load_runs_reads_answers(data_dir: Path) -> None:
    runs = og.load_runs(data_dir)
    assert [r.name for r in runs] == ["run01", "run02"]
    run = runs[0]
    assert run.train.shape == run.test.shape == (20, 28, 28)
    # each test item is its class drawn one pixel off: its nearest training image
    flat_train, flat_test = run.train.reshape(20, -1), run.test.reshape(20, -1)
    dist = ((flat_test[:, None] - flat_train[None]) ** 2).sum(-1)
    assert np.mean(dist.argmin(1) == run.answer) > 0.8
    assert sorted(run.answer) == list(range(20))


def test_bad_data_dir_names_the_expected_files(tmp_path: Path, data_dir: Path) -> None:
    with pytest.raises(DataError, match="all_runs.zip"):
        og.check_data_dir(tmp_path)
    with pytest.raises(DataError, match="not a directory"):
        og.load_background(tmp_path / "absent")
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in (*og.BACKGROUND_ZIPS, og.RUNS_ZIP):
        (broken / name).write_bytes((data_dir / name).read_bytes())
    (broken / og.RUNS_ZIP).write_bytes(b"not a zip")
    with pytest.raises(DataError, match="not a readable zip"):
        og.load_runs(broken)
    with zipfile.ZipFile(broken / og.RUNS_ZIP, "w") as zf:
        zf.writestr("run01/class_labels.txt", "run01/test/item01.png\n")
    with pytest.raises(DataError, match="class_labels.txt line 1"):
        og.load_runs(broken)
    result = CliRunner().invoke(
        memory_cli, ["omniglot", "--data-dir", str(tmp_path), "--steps", "1"]
    )
    assert result.exit_code != 0 and "images_background_small1.zip" in result.output


def test_tiny_run_end_to_end(data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "res.json"
    args = ["omniglot", "--data-dir", str(data_dir), "--steps", "3", "--eval-episodes", "4",
            "--json", str(out), "--no-progress", "--index", "exact", "--heldout", "2"]  # fmt: skip
    result = CliRunner().invoke(memory_cli, args)
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert {(r["way"], r["shot"]) for r in report["records"]} == {(5, 1), (5, 5), (20, 1), (20, 5)}
    # chance is 1/way; the synthetic characters differ by whole strokes, so even a few
    # training steps must beat it by a wide margin (an evaluation that mislabels, or
    # compares the wrong slots, lands near chance)
    for rec in report["records"]:
        assert rec["accuracy"] >= 2.0 / rec["way"] + 0.2, rec
    assert report["official_20way_1shot"] >= 0.5 and report["official_runs"] == 2
    assert report["index"] == "exact" and report["steps"] == 3
    assert "official 20-way 1-shot" in result.output


def test_training_lowers_the_loss_then_lsh_and_exact_agree(data_dir: Path) -> None:
    og.configure_threads(1)  # the fixture's stand-in: torch threads only
    bg = og.load_background(data_dir)
    train, held = og.split_alphabets(bg)
    # the plateau schedule without validation alphabets: a constant rate for the 12 steps
    cfg = og.OmniglotConfig(steps=12, index="exact", episodes=2, length=3, memory_size=64, k=16,
                            lr=3e-3, progress=False, eval_episodes=10, heldout=2,
                            schedule="plateau")  # fmt: skip
    net, losses = og.train(cfg, bg, train)
    assert len(losses) == 12 and np.mean(losses[-4:]) < np.mean(losses[:4])
    emb = og._embed(net, bg.images)
    acc = og.evaluate_episodes(cfg, emb, bg.char, held, way=5, shot=1)
    assert acc > 0.3  # chance is 0.2; these synthetic characters are easy
    # the same evaluation through the LSH index (small memories: it finds the same slots)
    lsh_cfg = og.OmniglotConfig(index="lsh", memory_size=64, k=16, eval_episodes=10, episodes=2)
    assert og.evaluate_episodes(lsh_cfg, emb, bg.char, held, way=5, shot=1) == pytest.approx(
        acc, abs=0.02
    )


@pytest.mark.skipif(
    not (REAL / og.RUNS_ZIP).is_file(),
    reason=f"real Omniglot data not present ({og.RUNS_ZIP} looked for under shared/data/omniglot "
    f"beside {_ROOT} and each folder above it)",
)
def test_real_data_loads_and_runs() -> None:
    runs = og.load_runs(REAL)
    assert len(runs) == 20 and all(r.answer.shape == (20,) for r in runs)
    bg = og.load_background(REAL)
    assert len(bg.chars) == 242 and len(bg.alphabets) == 8 and bg.images.shape[0] == 242 * 20


# -- augmentation, training, official runs, options (the published-level pipeline) ------
def test_rotate_classes_makes_four_rotated_classes_per_character() -> None:
    rng = np.random.default_rng(0)
    images = rng.random((3, 5, 5)).astype(np.float32)  # asymmetric: every rotation differs
    char = np.array([0, 0, 1])
    out, labels = og.rotate_classes(images, char)
    assert out.shape == (12, 5, 5) and out.dtype == np.float32
    assert labels.tolist() == [0, 0, 4, 1, 1, 5, 2, 2, 6, 3, 3, 7]
    assert len(np.unique(labels)) == 4 * len(np.unique(char))
    img = images[2]
    # counter-clockwise quarter turns, checked pixel by pixel: (i, j) -> (n-1-j, i)
    assert out[3 + 2][4, 0] == img[0, 0] and out[3 + 2][0, 0] == img[0, 4]
    assert np.array_equal(out[6 + 2], img[::-1, ::-1])  # 180 degrees
    assert np.array_equal(out[9 + 2], img.T[:, ::-1])  # 270 degrees
    for r in range(4):
        assert np.array_equal(out[3 * r + 2], np.rot90(img, r))
    with pytest.raises(Exception, match="char"):
        og.rotate_classes(images, char[:2])


def test_affine_augment_keeps_shape_and_range_and_is_seeded() -> None:
    import torch

    rng = np.random.default_rng(1)
    x = torch.from_numpy((rng.random((16, 28, 28)) > 0.8).astype(np.float32))

    def aug(seed: int, **kw: object) -> torch.Tensor:
        return og.affine_augment(x, torch.Generator().manual_seed(seed), **kw)  # type: ignore[arg-type]

    a, b, c = aug(0), aug(0), aug(1)
    assert a.shape == x.shape and a.dtype == x.dtype
    assert float(a.min()) >= 0.0 and float(a.max()) <= 1.0 + 1e-6
    assert torch.equal(a, b) and not torch.equal(a, c)  # same seed, same draws
    assert not torch.allclose(a, x)  # it does move the images ...
    assert abs(float(a.sum() / x.sum()) - 1) < 0.2  # ... but only a little (ink is kept)
    ident = aug(0, shift=0.0, degrees=0.0, scale=(1.0, 1.0))
    assert torch.allclose(ident, x, atol=1e-5)
    assert og.affine_augment(x[:, None], torch.Generator().manual_seed(0)).shape == (16, 1, 28, 28)


def test_config_and_cli_options_are_validated(tmp_path: Path, monkeypatch) -> None:
    from lshcore.errors import ConfigError

    for bad in ({"scale": (1.2, 1.0)}, {"lr": 0.0}, {"max_minutes": -1.0}, {"length": 21},
                {"ce_weight": 0.0, "memory_weight": 0.0}, {"val_every": 0}, {"blocks": 6}):  # fmt: skip
        with pytest.raises(ConfigError):
            cfg = og.OmniglotConfig(**bad)  # type: ignore[arg-type]
            og.Embedder(blocks=cfg.blocks)
    runner = CliRunner()
    for args, message in ((["--max-minutes", "0"], "expected a number > 0"),
                          (["--lr", "-1"], "expected a number > 0"),
                          (["--patience", "0"], "--patience"),
                          (["--index", "faiss"], "--index")):  # fmt: skip
        result = runner.invoke(memory_cli, ["omniglot", "--data-dir", str(tmp_path), *args])
        assert result.exit_code == 2 and message in result.output, result.output
    monkeypatch.delenv("LSHCORE_DATA", raising=False)
    result = runner.invoke(memory_cli, ["omniglot"])
    assert result.exit_code == 2 and "--data-dir" in result.output


def test_cli_reports_lsh_and_exact_and_plots(data_dir: Path, tmp_path: Path) -> None:
    out, png = tmp_path / "res.json", tmp_path / "curve.png"
    args = ["omniglot", "--data-dir", str(data_dir), "--steps", "4", "--val-every", "2",
            "--eval-episodes", "3", "--json", str(out), "--plot", str(png), "--no-progress",
            "--heldout", "2"]  # fmt: skip
    result = CliRunner().invoke(memory_cli, args)
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    keys = {(r["index"], r["way"], r["shot"]) for r in report["records"]}
    assert keys == {(i, w, s) for i in ("lsh", "exact") for w in (5, 20) for s in (1, 5)}
    assert set(report["official"]) == {"lsh", "exact"} and report["official_items"] == 40
    assert [h["step"] for h in report["history"]] == [2, 4]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "official 20-way 1-shot (40 items)" in result.output and "exact" in result.output


def test_cli_without_heldout_plots_the_training_accuracy(data_dir: Path, tmp_path: Path) -> None:
    """Nothing held out (the default): the report and the plot carry the memory's accuracy
    on the training episodes per step, the issue's accuracy-against-steps curve."""
    out, png = tmp_path / "res.json", tmp_path / "curve.png"
    args = ["omniglot", "--data-dir", str(data_dir), "--steps", "4", "--eval-episodes", "3",
            "--json", str(out), "--plot", str(png), "--no-progress"]  # fmt: skip
    result = CliRunner().invoke(memory_cli, args)
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["history"] == [] and report["heldout_characters"] == 0
    curve = report["episode_accuracy_per_50_steps"]  # a 4-step run: one value per step
    assert len(curve) == 4 and all(0.0 <= a <= 1.0 for a in curve)
    assert report["final_episode_accuracy"] == pytest.approx(np.mean(curve), abs=1e-4)  # rounded
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_names_only_a_plot_it_wrote(data_dir: Path, tmp_path: Path) -> None:
    """No training step, no curve: a stale image at --plot is left alone and not reported."""
    png = tmp_path / "old.png"
    png.write_bytes(b"stale")
    args = ["omniglot", "--data-dir", str(data_dir), "--steps", "0", "--eval-episodes", "2",
            "--plot", str(png), "--no-progress", "--index", "exact"]  # fmt: skip
    result = CliRunner().invoke(memory_cli, args)
    assert result.exit_code == 0, result.output
    assert png.read_bytes() == b"stale" and f"wrote {png}" not in result.output


needs_real = pytest.mark.skipif(
    not (REAL / og.RUNS_ZIP).is_file(), reason=f"real Omniglot data not present at {REAL}"
)


@needs_real
def test_real_official_runs_parse_all_400_items() -> None:
    runs = og.load_runs(REAL)
    assert [r.name for r in runs] == [f"run{i:02d}" for i in range(1, 21)]
    assert sum(r.answer.shape[0] for r in runs) == 400
    for run in runs:  # each test item answers a different one of the 20 classes
        assert sorted(run.answer.tolist()) == list(range(20))
        assert run.train.shape == run.test.shape == (20, 28, 28)
        assert 0.01 < run.test.mean() < 0.5  # ink = 1 on empty paper
    cfg = og.OmniglotConfig(index="exact")

    class Pixels(og.Embedder):  # raw pixels as keys: the classic weak baseline
        def forward(self, x):
            return x.reshape(x.shape[0], -1)[:, : cfg.key_dim * 6 : 6] + 1e-3

    acc = og.evaluate_runs(cfg, Pixels(), runs)
    assert 400 * acc == round(400 * acc)  # a count out of exactly 400 items
    assert 0.07 < acc < 0.6  # chance is 0.05


@needs_real
def test_real_tiny_training_lowers_loss_and_beats_untrained() -> None:
    import torch

    og.configure_threads(1)
    bg = og.load_background(REAL)
    train_chars, held = og.split_alphabets(bg, heldout=2, seed=0)
    train_chars = train_chars[::3]  # a tiny subset: about 60 characters, 240 classes
    cfg = og.OmniglotConfig(steps=60, width=32, way=5, episodes=3, length=4, memory_size=256,
                            k=32, lr=3e-3, index="exact", progress=False, val_every=30,
                            val_episodes=100)  # fmt: skip
    torch.manual_seed(0)
    untrained = og._embed(og.Embedder(cfg.key_dim, cfg.width, cfg.blocks), bg.images)
    before = og.nn_accuracy(untrained, bg.char, held, 20, 150, seed=5)
    res = og.fit(cfg, bg, train_chars, held)
    assert len(res.losses) == len(res.ce_losses) == 60
    assert np.mean(res.ce_losses[-15:]) < 0.95 * np.mean(res.ce_losses[:15]), res.ce_losses
    assert all(0 <= v <= 2 + cfg.alpha for v in res.losses)  # the memory's margin loss
    acc = np.asarray(res.episode_accuracy)  # recall of rounds 2-4 of each step's episodes
    assert acc.shape == (60,) and ((acc >= 0) & (acc <= 1)).all()
    assert acc[-20:].mean() > acc[:20].mean() + 0.05, acc  # the memory recalls more
    after = og.nn_accuracy(og._embed(res.net, bg.images), bg.char, held, 20, 150, seed=5)
    assert after > before + 0.08 and after > 0.3, (before, after)  # chance: 0.05
    assert [h["step"] for h in res.history] == [30, 60] and res.best_step in (30, 60)


@pytest.mark.parametrize(
    ("cores", "load", "expected"),
    [(2, 0.1, 2), (2, 0.9, 1), (2, 1.6, 1), (2, 8.0, 1), (1, 0.0, 1), (16, 0.0, 4), (16, 13.0, 3)],
)
def test_auto_threads_takes_the_idle_cores_capped(monkeypatch, cores, load, expected) -> None:
    monkeypatch.setattr(og.os, "sched_getaffinity", lambda pid: set(range(cores)), raising=False)
    monkeypatch.setattr(og.os, "getloadavg", lambda: (load, load, load))
    assert og.auto_threads() == expected


def test_threads_default_is_auto_and_resolved_by_the_run(
    data_dir: Path, tmp_path: Path, monkeypatch
) -> None:
    """The command's default (0) reaches the run, which asks auto_threads: an idle
    2-core machine gets 2 PyTorch threads."""
    assert og.OmniglotConfig().threads == 0
    with pytest.raises(ConfigError):
        og.OmniglotConfig(threads=-1)
    monkeypatch.setattr(og, "auto_threads", lambda cap=4: 2)
    out = tmp_path / "t.json"
    args = ["omniglot", "--data-dir", str(data_dir), "--steps", "1", "--eval-episodes", "2",
            "--json", str(out), "--no-progress", "--index", "exact"]  # fmt: skip
    result = CliRunner().invoke(memory_cli, args)
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["threads_option"] == 0 and report["threads"]["torch"] == 2
    args[-1:] = ["exact", "--threads", "1"]
    result = CliRunner().invoke(memory_cli, args)
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["threads"]["torch"] == 1


# -- evaluation-time levers: test-time augmentation and episode centering ------------------
def test_tta_variants_are_the_image_and_its_fixed_shifts_and_rotations() -> None:
    assert og.tta_variants() == [(0.0, 0.0, 0.0)]  # off: the image alone
    grid = og.tta_variants(2.0)  # the image, then its 8 neighbours 2 pixels away
    assert grid[0] == (0.0, 0.0, 0.0) and len(grid) == len(set(grid)) == 9
    assert {(dx, dy) for dx, dy, _ in grid} == {(x, y) for x in (-2, 0, 2) for y in (-2, 0, 2)}
    assert all(deg == 0 for *_, deg in grid)
    assert og.tta_variants(0.0, 5.0) == [(0.0, 0.0, 0.0), (0.0, 0.0, 5.0), (0.0, 0.0, -5.0)]
    assert len(og.tta_variants(2.0, 5.0)) == 11


def test_transform_images_shifts_by_whole_pixels_and_rotates_counter_clockwise() -> None:
    import torch

    x = torch.from_numpy(np.random.default_rng(0).random((3, 28, 28)).astype(np.float32))
    assert og.transform_images(x, 0, 0, 0) is x
    moved = og.transform_images(x, 2.0, -1.0, 0.0).numpy()  # 2 right, 1 up
    assert np.allclose(moved[:, :-1, 2:], x.numpy()[:, 1:, :-2], atol=1e-5)
    assert np.allclose(moved[:, -1, :], 0, atol=1e-5) and np.allclose(moved[:, :, :2], 0, atol=1e-5)
    turned = og.transform_images(x, 0.0, 0.0, 90.0).numpy()
    assert np.allclose(turned, np.rot90(x.numpy(), 1, axes=(1, 2)), atol=1e-5)


class _Recorder(og.Embedder):
    """An embedder that returns a fixed, distinct embedding per exact input image and
    records what it was shown."""

    def __init__(self, table: dict[bytes, np.ndarray]):
        super().__init__(key_dim=4, width=4, blocks=1)
        self.table, self.seen = table, []

    def forward(self, x):
        import torch

        rows = [np.asarray(img, np.float32).reshape(28, 28).round(4).tobytes() for img in x]
        self.seen.extend(rows)
        return torch.from_numpy(np.stack([self.table.get(r, np.ones(4, np.float32)) for r in rows]))


def test_embed_images_averages_the_unit_embeddings_of_exactly_the_tta_variants() -> None:
    import torch

    rng = np.random.default_rng(1)
    img = (rng.random((1, 28, 28)) > 0.7).astype(np.float32)
    variants = og.tta_variants(1.0, 10.0)
    copies = [og.transform_images(torch.from_numpy(img), *v).numpy()[0] for v in variants]
    keys = [c.round(4).tobytes() for c in copies]
    assert len(set(keys)) == len(variants)  # every copy differs
    vecs = rng.normal(size=(len(variants), 4)).astype(np.float32) * rng.uniform(0.5, 5, (len(variants), 1)).astype(np.float32)  # fmt: skip
    net = _Recorder(dict(zip(keys, vecs, strict=True)))
    plain = og.embed_images(net, img, og.OmniglotConfig(tta_shift=0.0))
    assert net.seen == keys[:1]  # TTA off: the image alone, embedded once
    assert np.allclose(plain[0], vecs[0] / np.linalg.norm(vecs[0]), atol=1e-6)
    net.seen.clear()
    cfg = og.OmniglotConfig(tta_shift=1.0, tta_degrees=10.0)
    got = og.embed_images(net, img, cfg)
    assert sorted(net.seen) == sorted(keys)  # each variant embedded once, nothing else
    unit = vecs / np.linalg.norm(vecs, axis=1, keepdims=True)  # unit first: norms do not weigh
    want = unit.mean(0) / np.linalg.norm(unit.mean(0))
    assert np.allclose(got[0], want, atol=1e-5)
    assert not np.allclose(got[0], vecs.mean(0) / np.linalg.norm(vecs.mean(0)), atol=1e-3)


def test_center_episode_subtracts_the_support_mean_only() -> None:
    rng = np.random.default_rng(2)
    sup, qry = rng.normal(size=(5, 8)) + 3.0, rng.normal(size=(3, 8)) + 3.0  # a shared offset
    csup, cqry = og.center_episode(sup, qry)
    unit = lambda e: e / np.linalg.norm(e, axis=1, keepdims=True)  # noqa: E731
    mean = unit(sup).mean(0)
    assert np.allclose(csup, unit(unit(sup) - mean)) and np.allclose(cqry, unit(unit(qry) - mean))
    assert np.allclose(np.linalg.norm(csup, axis=1), 1) and abs(unit(csup).sum(0)).max() < 2.0
    # the queries do not enter the mean: other queries, same support -> same support keys
    assert np.allclose(og.center_episode(sup, qry * 5 + 1)[0], csup)


def test_center_and_tta_are_config_flags_that_reach_the_evaluation(data_dir: Path) -> None:
    cfg = og.OmniglotConfig()  # the defaults: TTA on (shifts of 2 pixels), no centering
    assert cfg.center is False and cfg.tta_shift == 2.0 and cfg.tta_degrees == 0
    assert (cfg.heldout, cfg.schedule) == (0, "step")  # the final model: all alphabets
    with pytest.raises(ConfigError):
        og.OmniglotConfig(tta_shift=-1.0)
    # a huge offset shared by every embedding: in float32 the cosines of all pairs round
    # to about 1 and nearest neighbour is near chance until the episode's mean is removed
    rng = np.random.default_rng(3)
    n_chars, per = 30, 4
    char = np.repeat(np.arange(n_chars), per)
    proto = rng.normal(size=(n_chars, 16))
    emb = (1e4 + proto[char] + 0.3 * rng.normal(size=(char.size, 16))).astype(np.float32)
    base = dict(index="exact", key_dim=16, memory_size=64, k=16, eval_episodes=60, episodes=2)
    chars = np.arange(n_chars)
    off = og.evaluate_episodes(og.OmniglotConfig(**base), emb, char, chars, 20, 1)
    on = og.evaluate_episodes(og.OmniglotConfig(center=True, **base), emb, char, chars, 20, 1)
    assert on > 0.9 and on > off + 0.2, (off, on)


def test_cli_evaluation_defaults_are_the_config_defaults(data_dir: Path, tmp_path: Path) -> None:
    from lshcore.cli import memory as cli_mod

    cfg = og.OmniglotConfig()
    assert (cli_mod.TTA_SHIFT, cli_mod.TTA_DEGREES, cli_mod.CENTER) == (
        cfg.tta_shift, cfg.tta_degrees, cfg.center)  # fmt: skip
    assert (cli_mod.HELDOUT, cli_mod.SCHEDULE) == (cfg.heldout, cfg.schedule)
    out = tmp_path / "r.json"
    args = ["omniglot", "--data-dir", str(data_dir), "--steps", "1", "--eval-episodes", "2",
            "--json", str(out), "--no-progress", "--index", "exact", "--tta-shift", "1.5",
            "--tta-degrees", "4", "--no-center"]  # fmt: skip
    result = CliRunner().invoke(memory_cli, args)
    assert result.exit_code == 0, result.output
    settings = json.loads(out.read_text())["settings"]
    assert (settings["tta_shift"], settings["tta_degrees"], settings["center"]) == (1.5, 4.0, False)
    result = CliRunner().invoke(memory_cli, [*args[:-1], "--center"])
    assert json.loads(out.read_text())["settings"]["center"] is True


def test_validation_free_schedules_follow_steps_or_time_whichever_first() -> None:
    step = og.OmniglotConfig(schedule="step", steps=100, max_minutes=1.0, decay_at=0.75)
    assert [og.scheduled_lr(step, s, 0.0) for s in (0, 74, 75, 99)] == [1e-3, 1e-3, 5e-4, 5e-4]
    assert og.scheduled_lr(step, 10, 44.0) == 1e-3  # 44 s of 60: before the decay
    assert og.scheduled_lr(step, 10, 45.0) == 5e-4  # the time limit's 75 % comes first
    cos = og.OmniglotConfig(schedule="cosine", steps=100, max_minutes=1.0)
    assert og.scheduled_lr(cos, 0, 0.0) == pytest.approx(1e-3)
    assert og.scheduled_lr(cos, 50, 0.0) == pytest.approx(5e-4)
    assert og.scheduled_lr(cos, 100, 0.0) == pytest.approx(0.0, abs=1e-12)
    assert og.scheduled_lr(cos, 10, 30.0) == pytest.approx(5e-4)  # half the time
    assert og.scheduled_lr(cos, 10, 90.0) == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ConfigError):
        og.scheduled_lr(og.OmniglotConfig(heldout=2, schedule="plateau"), 0, 0.0)  # by validation
    for bad in (0.0, 1.5):
        with pytest.raises(ConfigError, match="decay_at"):
            og.OmniglotConfig(decay_at=bad)


def test_final_model_trains_on_every_alphabet_without_validation(
    data_dir: Path, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match="step"):
        og.OmniglotConfig(heldout=0, schedule="plateau")  # plateau needs validation alphabets
    out = tmp_path / "final.json"
    png = tmp_path / "losses.png"
    args = ["omniglot", "--data-dir", str(data_dir), "--steps", "3", "--eval-episodes", "2",
            "--json", str(out), "--plot", str(png), "--no-progress", "--index", "exact", "--heldout", "0",
            "--schedule", "step"]  # fmt: skip
    result = CliRunner().invoke(memory_cli, args)
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["settings"]["heldout"] == 0 and report["settings"]["schedule"] == "step"
    assert report["records"] == [] and report["heldout_alphabets"] == []
    assert report["train_characters"] == 4 * 12 and report["history"] == []
    assert set(report["official"]) == {"lsh", "exact"} and report["steps_run"] == 3
    assert "nothing held out" in result.output and "held-out 5-way" not in result.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"  # the loss curve stands in
