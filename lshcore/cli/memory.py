"""``lshcore memory``: the LSH one-shot memory's commands (``omniglot``)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import click

from lshcore.errors import LSHError

__all__ = ["memory", "omniglot"]


@click.group("memory")
def memory() -> None:
    """The LSH one-shot memory (Kaiser et al., ICLR 2017)."""


@memory.command("omniglot")
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Folder holding images_background_small1.zip, images_background_small2.zip and "
    "all_runs.zip (default: $LSHCORE_DATA/omniglot).",
)
@click.option("--index", "index", type=click.Choice(["lsh", "exact"]), default="lsh", show_default=True,
              help="Nearest-neighbour search of the memory.")  # fmt: skip
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the results (records of way, shot, accuracy; official_20way_1shot) here.")  # fmt: skip
@click.option(
    "--steps", type=click.IntRange(min=0), default=500, show_default=True, help="Training steps."
)
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True,
              help="PyTorch threads (1 is fastest on a busy 2-core machine).")  # fmt: skip
@click.option("--eval-episodes", type=click.IntRange(min=1), default=200, show_default=True,
              help="Episodes per (way, shot) evaluation.")  # fmt: skip
@click.option("--progress/--no-progress", default=True, help="Show the training progress bar.")
def omniglot(
    data_dir: Path | None,
    index: str,
    json_path: Path | None,
    steps: int,
    seed: int,
    threads: int,
    eval_episodes: int,
    progress: bool,
) -> None:
    """Train a small convolutional embedder with the memory on Omniglot, then evaluate
    5/20-way 1/5-shot on held-out alphabets and the 20 official one-shot runs."""
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
        )
        result = og.run_omniglot(data_dir, cfg)
    except LSHError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(
        f"omniglot: index={index} steps={steps} seed={seed} threads={result['threads']} "
        f"held-out alphabets={', '.join(result['heldout_alphabets'])} ({result['heldout_characters']} characters)"
    )
    click.echo(f"{'way':>4} {'shot':>4} {'accuracy':>9}")
    for rec in result["records"]:
        click.echo(f"{rec['way']:>4} {rec['shot']:>4} {rec['accuracy']:>9.3f}")
    click.echo(
        f"official 20-way 1-shot ({result['official_runs']} runs): {result['official_20way_1shot']:.3f}"
        f"   [{result['seconds']['total']:.0f} s]"
    )
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(result, indent=2) + "\n")
        click.echo(f"wrote {json_path}")
