"""``lshcore data``: convert XMC/libsvm text files into on-disk stores, synthesise XMC
problems, inspect and split stores."""

from __future__ import annotations

import json
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from lshcore.data.store import convert, open_store
from lshcore.data.synth import synth_xmc
from lshcore.errors import LSHError

__all__ = ["data", "convert_cmd", "synth_xmc_cmd", "info_cmd", "split_cmd"]


def _peak_rss_mb() -> float:
    # ru_maxrss is in KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _summary(store: Any, seconds: float) -> str:
    rate = store.n / seconds if seconds > 0 else float("inf")
    return (
        f"wrote {store.path}: {store.n:,} points, {store.dim:,} features, "
        f"{store.n_labels:,} labels, nnz {store.nnz:,}, label nnz {store.label_nnz:,} "
        f"in {seconds:.2f} s ({rate:,.0f} points/s, peak RSS {_peak_rss_mb():.0f} MB)"
    )


def _write(writer: Callable[..., Any], *args: Any, progress: bool | None, **kwargs: Any) -> None:
    """Run a store writer (progress bar by default when stderr is a terminal), timed; print
    its summary. An LSHError becomes a ClickException."""
    start = time.perf_counter()
    try:
        store = writer(
            *args, progress=sys.stderr.isatty() if progress is None else progress, **kwargs
        )
    except LSHError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(_summary(store, time.perf_counter() - start))


@click.group("data")
def data() -> None:
    """Datasets on disk: text -> memory-mapped CSR store, synthetic XMC problems."""


@data.command("convert")
@click.argument(
    "input_path", metavar="INPUT", type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@click.argument("out", metavar="OUT_STORE", type=click.Path(path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["xmc", "libsvm"]), default="xmc", show_default=True,
              help="xmc: first line 'N D L'; libsvm: no header.")  # fmt: skip
@click.option("--n-features", type=click.IntRange(min=0), default=None,
              help="libsvm: number of features (default: largest id + 1).")  # fmt: skip
@click.option("--n-labels", type=click.IntRange(min=0), default=None,
              help="libsvm: number of labels (default: largest id + 1).")  # fmt: skip
@click.option("--feature-base", type=click.Choice(["0", "1"]), default="0", show_default=True,
              help="First feature id in the file (classic libsvm files use 1).")  # fmt: skip
@click.option("--chunk-rows", type=click.IntRange(min=1), default=4096, show_default=True,
              help="Lines parsed at a time (bounds memory).")  # fmt: skip
@click.option("--force", is_flag=True, help="Replace OUT_STORE if it is an existing store.")
@click.option("--progress/--no-progress", default=None,
              help="Progress bar (default: when stderr is a terminal).")  # fmt: skip
def convert_cmd(
    input_path: Path,
    out: Path,
    fmt: str,
    n_features: int | None,
    n_labels: int | None,
    feature_base: str,
    chunk_rows: int,
    force: bool,
    progress: bool | None,
) -> None:
    """Convert a text file INPUT into a memory-mapped CSR store OUT_STORE (one pass)."""
    if fmt == "xmc" and (n_features is not None or n_labels is not None):
        raise click.UsageError("--n-features/--n-labels apply to --format libsvm only")
    _write(
        convert,
        input_path,
        out,
        fmt,
        n_features=n_features,
        n_labels=n_labels,
        feature_base=int(feature_base),
        chunk_rows=chunk_rows,
        overwrite=force,
        progress=progress,
    )


@data.command("synth-xmc")
@click.argument("out", metavar="OUT_STORE", type=click.Path(path_type=Path))
@click.option("--points", type=click.IntRange(min=0), required=True, help="Number of points N.")
@click.option("--labels", type=click.IntRange(min=1), required=True, help="Number of labels L.")
@click.option("--features", type=click.IntRange(min=1), required=True, help="Number of features D.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--labels-per-point", type=click.FloatRange(min=1.0), default=5.0, show_default=True)
@click.option("--zipf", type=click.FloatRange(min=0.0), default=1.0, show_default=True,
              help="Exponent of the label popularity power law.")  # fmt: skip
@click.option("--prototype-size", type=click.IntRange(min=1), default=8, show_default=True,
              help="Prototype features per label.")  # fmt: skip
@click.option("--noise-features", type=click.FloatRange(min=0.0), default=4.0, show_default=True,
              help="Mean number of label-independent features per point.")  # fmt: skip
@click.option("--chunk-rows", type=click.IntRange(min=1), default=4096, show_default=True)
@click.option("--force", is_flag=True, help="Replace OUT_STORE if it is an existing store.")
@click.option("--progress/--no-progress", default=None,
              help="Progress bar (default: when stderr is a terminal).")  # fmt: skip
def synth_xmc_cmd(
    out: Path,
    points: int,
    labels: int,
    features: int,
    seed: int,
    labels_per_point: float,
    zipf: float,
    prototype_size: int,
    noise_features: float,
    chunk_rows: int,
    force: bool,
    progress: bool | None,
) -> None:
    """Write a synthetic XMC problem (power-law labels, label-dependent sparse features)
    straight into the store OUT_STORE, chunk by chunk."""
    _write(
        synth_xmc,
        out,
        points,
        labels,
        features,
        seed=seed,
        labels_per_point=labels_per_point,
        zipf=zipf,
        prototype_size=prototype_size,
        noise_features=noise_features,
        chunk_rows=chunk_rows,
        overwrite=force,
        progress=progress,
    )


@data.command("info")
@click.argument("store_path", metavar="STORE", type=click.Path(path_type=Path))
@click.option("--verify", is_flag=True, help="Re-hash every array against the manifest.")
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON.")
def info_cmd(store_path: Path, verify: bool, as_json: bool) -> None:
    """Describe a store (and check it)."""
    try:
        store = open_store(store_path, verify=verify)
    except LSHError as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        click.echo(json.dumps(store.manifest, indent=1, sort_keys=True))
        return
    click.echo(repr(store) + (" (checksums verified)" if verify else ""))
    for key, entry in sorted(store.splits().items()):
        click.echo(f"split {key}: train {entry['n_train']:,}, test {entry['n_test']:,}")


@data.command("split")
@click.argument("store_path", metavar="STORE", type=click.Path(path_type=Path))
@click.option("--test-fraction", type=click.FloatRange(min=0.0, max=1.0, min_open=True, max_open=True),
              default=0.2, show_default=True)  # fmt: skip
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
def split_cmd(store_path: Path, test_fraction: float, seed: int) -> None:
    """Make (or read back) a seeded train/test split and record it in the store."""
    try:
        train, test = open_store(store_path).split(test_fraction, seed)
    except LSHError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(
        f"split seed={seed} test_fraction={test_fraction}: train {train.n:,}, test {test.n:,}"
    )
