"""``lshcore memory``: the LSH one-shot memory's commands (``omniglot``)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import click

from lshcore.errors import LSHError

__all__ = ["memory", "omniglot"]

# OmniglotConfig's evaluation defaults (repeated here: the module imports torch)
HELDOUT = 0
SCHEDULE = "step"
TTA_SHIFT = 2.0
TTA_DEGREES = 0.0
CENTER = False


@click.group("memory")
def memory() -> None:
    """The LSH one-shot memory (Kaiser et al., ICLR 2017)."""


def _positive(ctx: click.Context, param: click.Parameter, value: float) -> float:
    if not value > 0:
        raise click.BadParameter(f"expected a number > 0, got {value}")
    return value


@memory.command("omniglot")
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Folder holding images_background_small1.zip, images_background_small2.zip and "
    "all_runs.zip (default: $LSHCORE_DATA/omniglot).",
)
@click.option("--index", "index", type=click.Choice(["lsh", "exact"]), default="lsh", show_default=True,
              help="Search of the memory during training (evaluation reports both).")  # fmt: skip
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the results (records of index, way, shot, accuracy; official; history) here.")  # fmt: skip
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Save validation accuracy (with --heldout 0: the memory's accuracy on the "
              "training episodes, and the losses) against training steps (PNG) here.")  # fmt: skip
@click.option("--steps", type=click.IntRange(min=0), default=6000, show_default=True,
              help="Most training steps (--max-minutes or early stopping usually ends sooner).")  # fmt: skip
@click.option("--max-minutes", type=float, default=12.0, show_default=True, callback=_positive,
              help="Stop training after this many minutes.")  # fmt: skip
@click.option("--val-every", type=click.IntRange(min=1), default=200, show_default=True,
              help="Steps between validation evaluations (with --heldout > 0).")  # fmt: skip
@click.option("--patience", type=click.IntRange(min=1), default=6, show_default=True,
              help="Stop after this many validation evaluations without a gain.")  # fmt: skip
@click.option("--lr", type=float, default=1e-3, show_default=True, callback=_positive,
              help="Adam learning rate (halved as --schedule says).")  # fmt: skip
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--threads", type=click.IntRange(min=0), default=0, show_default=True,
              help="PyTorch threads; 0: the idle cores at the start (cores minus the load "
              "average), at least 1, at most 4.")  # fmt: skip
@click.option("--eval-episodes", type=click.IntRange(min=1), default=400, show_default=True,
              help="Episodes per (index, way, shot) evaluation.")  # fmt: skip
@click.option("--heldout", type=click.IntRange(min=0, max=7), default=HELDOUT, show_default=True,
              help="Background alphabets held out for validation (early stopping, held-out "
              "episodes); 0: train on all 8 (the final model, no held-out scores; needs "
              "--schedule step or cosine).")  # fmt: skip
@click.option("--schedule", type=click.Choice(["plateau", "step", "cosine"]), default=SCHEDULE,
              show_default=True,
              help="plateau: halve the learning rate on validation stalls and keep the best "
              "embedder; step: halve it at 75% of --steps or --max-minutes (whichever comes "
              "first), keep the last; cosine: decay it to 0 by then, keep the last.")  # fmt: skip
@click.option("--tta-shift", type=click.FloatRange(min=0), default=TTA_SHIFT, show_default=True,
              help="Test-time augmentation: also embed each image shifted by this many pixels "
              "to its 8 neighbours on a grid (right, left, down, up and the diagonals) and "
              "average the unit embeddings (0: off).")  # fmt: skip
@click.option("--tta-degrees", type=click.FloatRange(min=0), default=TTA_DEGREES, show_default=True,
              help="Test-time augmentation: also embed each image rotated by +- this many "
              "degrees (0: off).")  # fmt: skip
@click.option("--center/--no-center", default=CENTER, show_default=True,
              help="Evaluation: subtract the mean of each episode's support embeddings "
              "(the written drawings) from its keys and queries.")  # fmt: skip
@click.option("--progress/--no-progress", default=True, help="Show the training progress bar.")
def omniglot(
    data_dir: Path | None,
    index: str,
    json_path: Path | None,
    plot_path: Path | None,
    steps: int,
    max_minutes: float,
    val_every: int,
    patience: int,
    lr: float,
    seed: int,
    threads: int,
    eval_episodes: int,
    heldout: int,
    schedule: str,
    tta_shift: float,
    tta_degrees: float,
    center: bool,
    progress: bool,
) -> None:
    """Train a convolutional embedder with the memory on Omniglot (rotations as new
    classes, affine augmentation) and evaluate it on the 20 official one-shot runs, with
    the LSH memory and the exact memory. By default the final model: all 8 background
    alphabets train, for --max-minutes, the learning rate halved at 75% of it. With
    --heldout N, N alphabets are held out for validation (the curve, and 5/20-way
    1/5-shot episodes on them); --schedule plateau then early-stops on them."""
    if data_dir is None:
        root = os.environ.get("LSHCORE_DATA")
        if not root:
            raise click.UsageError(
                "give --data-dir (or set LSHCORE_DATA to the folder above omniglot/)"
            )
        data_dir = Path(root) / "omniglot"
    from lshcore.memory import omniglot as og  # imports torch: only when the command runs

    try:
        og.check_data_dir(data_dir)
        cfg = og.OmniglotConfig(
            steps=steps,
            seed=seed,
            index=index,
            threads=threads,
            eval_episodes=eval_episodes,
            progress=progress,
            max_minutes=max_minutes,
            val_every=val_every,
            patience=patience,
            lr=lr,
            heldout=heldout,
            schedule=schedule,
            tta_shift=tta_shift,
            tta_degrees=tta_degrees,
            center=center,
        )
        result = og.run_omniglot(data_dir, cfg, plot=plot_path)
    except LSHError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(
        f"omniglot: train index={index} seed={seed} threads={result['threads']} "
        f"steps={result['steps_run']} (best {result['best_step']}; stopped: {result['stopped']}) "
        + (f"held-out alphabets={', '.join(result['heldout_alphabets'])} "
           f"({result['heldout_characters']} characters)" if result["heldout_alphabets"]
           else f"trained on all {result['train_characters']} characters (nothing held out)")
    )  # fmt: skip
    acc = {(r["index"], r["way"], r["shot"]): r["accuracy"] for r in result["records"]}
    click.echo(f"{'task':<36} {'LSH':>7} {'exact':>7}")
    for way, shot in sorted({(w, s) for _, w, s in acc}):
        name = f"held-out {way}-way {shot}-shot"
        click.echo(f"{name:<36} {acc['lsh', way, shot]:>7.3f} {acc['exact', way, shot]:>7.3f}")
    name = f"official 20-way 1-shot ({result['official_items']} items)"
    click.echo(f"{name:<36} {result['official']['lsh']:>7.3f} {result['official']['exact']:>7.3f}")
    click.echo(f"[{result['seconds']['total']:.0f} s, training {result['seconds']['train']:.0f} s]")
    if json_path is not None:
        from lshcore.core.fileformat import write_text_atomic

        write_text_atomic(json_path, json.dumps(result, indent=2) + "\n")
        click.echo(f"wrote {json_path}")
    if plot_path is not None and result.get("plotted"):
        click.echo(f"wrote {plot_path}")
