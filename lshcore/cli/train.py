"""``lshcore train`` and ``lshcore demo``: hashed sparse training of an MLP, against its dense twin."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import click
import numpy as np

from lshcore.adapters._common import ADAPTER_DEFAULTS
from lshcore.cli.train_xmc import XMC_ONLY, run_xmc
from lshcore.core.fileformat import write_text_atomic
from lshcore.data.datasets import load_dataset
from lshcore.errors import BackendUnavailableError, ConfigError, DataError, UnknownNameError
from lshcore.registry.catalog import get_backend
from lshcore.training.engine import Trainer, label_matrix
from lshcore.training.layer import HashedLayer
from lshcore.training.model import Model
from lshcore.training.optim import OPTIMIZERS
from lshcore.training.params import (
    DEFAULT_BATCH_FACTOR,
    DEFAULT_POLICY,
    POLICIES,
    SelectionParams,
)
from lshcore.training.schedule import parse_schedule

__all__ = ["train", "demo", "run_training", "selection_params"]

#: the multi-label XMC files the MLP engine reads from --data-dir (P@1 as accuracy);
#: ``xmc`` is the extreme-classification trainer (lshcore.cli.train_xmc)
MULTILABEL_DATASETS = ("delicious", "bibtex", "mediamill")
DATASETS = ("digits", "mnist", "fashion-mnist", *MULTILABEL_DATASETS, "xmc")
#: Adam's learning rate in ``lshcore train`` (both models), chosen on a validation split
#: (benchmarks/bench_engine.py; docs/training.md "Choosing the defaults")
DEFAULT_ADAM_LR = 3e-3
#: rows per optimizer step of `lshcore train` (and of `lshcore demo`, which shows the defaults)
DEFAULT_BATCH_SIZE = 128
FRAMEWORKS = ("core", "torch", "tensorflow", "mxnet")


def _parse_hidden(ctx: click.Context, param: click.Parameter, value: str) -> list[int]:
    try:
        # every piece must be a number: "64,,64" is a typo, not two layers
        sizes = [int(v) for v in str(value).split(",")]
    except ValueError:
        raise click.BadParameter(
            f"expected comma-separated positive integers like 1000,1000; got {value!r}"
        ) from None
    if not sizes or any(s < 1 for s in sizes):
        raise click.BadParameter(
            f"expected comma-separated positive integers like 1000,1000; got {value!r}"
        )
    return sizes


def _parse_active(ctx: click.Context, param: click.Parameter, value: str) -> list[float]:
    try:
        shares = [float(v) for v in str(value).split(",") if v.strip() != ""]
    except ValueError:
        raise click.BadParameter(
            f"expected shares in (0, 1] like 0.05 or 0.01,0.05,1.0; got {value!r}"
        ) from None
    if not shares or any(not (0.0 < s <= 1.0) for s in shares):
        raise click.BadParameter(f"every share must lie in (0, 1]; got {value!r}")
    return shares


def _parse_auto_int(ctx: click.Context, param: click.Parameter, value: Any) -> int | str:
    if str(value).strip().lower() == "auto":
        return "auto"
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise click.BadParameter(f"expected a positive integer or auto; got {value!r}")
    return number


def _load(dataset: str, data_dir: str | None, seed: int) -> Any:
    return load_dataset(dataset, data_dir, seed=seed)


def selection_params(
    *,
    active: float,
    family: str = "dwta",
    k: int | str = "auto",
    l: int | str = "auto",  # noqa: E741
    policy: str = DEFAULT_POLICY,
    seed: int = 0,
    rehash: str = "changed:0.1:10",
    rebuild: str = "never",
    transform: str = "auto",
    bin_size: int | None = None,
    rerank: float = 4.0,
    batch_factor: float = DEFAULT_BATCH_FACTOR,
) -> SelectionParams:
    """The validated selection settings of ``lshcore train``'s options (``transform="auto"``:
    none for the rank-based families wta/dwta, else simple_lsh)."""
    if transform == "auto":  # rank-based families hash the raw vectors
        transform = "none" if family in ("dwta", "wta") else "simple_lsh"
    extra: dict[str, Any] = {"bin_size": bin_size} if bin_size is not None else {}
    return SelectionParams.from_kwargs(
        active=active, family=family, k=k, l=l, policy=policy, seed=seed, rehash=rehash,
        rebuild=rebuild, transform=transform, rerank=rerank, batch_factor=batch_factor,
        family_params=extra,
    )  # fmt: skip


def run_training(
    data: Any,
    *,
    hidden: list[int],
    active: float,
    epochs: int = 10,
    batch_size: int = 128,
    lr: float | None = None,
    optimizer: str = "adam",
    workers: int = 1,
    seed: int = 0,
    progress: bool = False,
    save: str | None = None,
    limit: int | None = None,
    desc: str = "",
    params: SelectionParams | None = None,
    backend: str | None = None,
    **selection: Any,
) -> dict[str, Any]:
    """Train one model on ``data`` (a Dataset) and return its record (see ``lshcore train``).

    The selection settings are ``params`` or, when None, built from ``selection``
    (``family``, ``k``, ``l``, ``policy``, ``rehash``, ``rebuild``, ``transform``,
    ``bin_size``, ``rerank``) by :func:`selection_params`.
    """
    if lr is None and optimizer == "adam":
        lr = DEFAULT_ADAM_LR
    if params is None:
        params = selection_params(active=active, seed=seed, **selection)
    else:
        params = params.replace(active=active)
    x_train, y_train = _engine_arrays(data.x_train, data.y_train, data.n_classes)
    x_test, y_test = _engine_arrays(data.x_test, data.y_test, data.n_classes)
    if limit is not None:
        x_train, y_train = x_train[:limit], y_train[:limit]
    model = Model.mlp(
        x_train.shape[1], hidden, data.n_classes, seed=seed, backend=backend, params=params
    )
    trainer = Trainer(model, optimizer, lr, batch_size=batch_size, workers=workers, seed=seed)
    if progress:
        click.echo(f"training {desc or f'active={active:g}'} ...", err=True)
    stats = trainer.fit(x_train, y_train, epochs=epochs, progress=progress)
    start = time.perf_counter()
    accuracy, test_counts = trainer.evaluate(x_test, y_test)
    test_seconds = time.perf_counter() - start
    if save:
        trainer.save(save)
    counts = stats.counts
    n = max(stats.samples, 1)
    hashed = [layer for layer in model.layers if isinstance(layer, HashedLayer)]
    return {
        "dataset": data.name,
        "active": active,
        "policy": params.policy if active < 1 else "dense",
        "accuracy": accuracy,
        "mults_total": counts.total,
        "mults_dense": stats.mults_dense,
        # the paper's measure: forward + backward + hashing multiplications as a share of
        # the dense network's forward + backward (no optimizer on either side)
        "mult_fraction": counts.paper_total / stats.mults_dense,
        "mults": counts.as_dict(),
        "mults_per_sample": counts.total / n,
        "selection_ops_per_sample": counts.selection / n,
        "layers": [
            {
                "n_out": layer.n_out,
                "k": layer.selector.k,
                "l": layer.selector.l,
                "scanned_fraction": layer.selector.scanned_fraction,
                "work": layer.selector.work_dict(),
            }
            for layer in hashed
        ],
        "test_mults": test_counts.total,
        "test_mults_dense": model.dense_cost(x_test.shape[0], training=False),
        "train_seconds": stats.train_seconds,
        "test_seconds": test_seconds,
        "samples_per_second": stats.samples_per_second,
        "epochs": stats.epochs,
        "final_loss": stats.losses[-1] if stats.losses else None,
        "workers": workers,
    }


def _engine_arrays(x: Any, y: Any, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Inputs and labels as the engine takes them: a sparse input densified (the XMC
    files the MLP reads are small: at most 16,105 x 1,836), a 0/1 label matrix as
    (n, k) label sets padded with -1 (multi-label; accuracy is then P@1)."""
    if hasattr(x, "toarray"):
        x = x.toarray()
    if hasattr(y, "tocsr") or np.ndim(y) == 2:
        y = label_matrix(y, n_classes)
    return np.asarray(x, dtype=np.float32), np.asarray(y)


def _run_framework(
    framework: str, data: Any, opts: dict[str, Any], params: SelectionParams
) -> dict[str, Any]:
    import importlib

    if getattr(data, "multilabel", False):
        raise click.UsageError(
            f"--framework {framework}: the adapters' train_mlp takes single-label data; "
            f"train --dataset {data.name} with the core engine (--framework core)"
        )
    try:
        module = importlib.import_module(f"lshcore.adapters.{framework}")
        train_mlp = module.train_mlp
    except (ImportError, AttributeError) as exc:
        raise click.UsageError(f"--framework {framework}: not available here ({exc})") from exc
    result = train_mlp(
        data.x_train,
        data.y_train,
        data.x_test,
        data.y_test,
        hidden=opts["hidden"],
        params=params,
        epochs=opts["epochs"],
        batch_size=opts["batch_size"],
        lr=opts["lr"] if opts["lr"] is not None else 1e-3,
        seed=opts["seed"],
        progress=opts["progress"],
    )
    active = params.active
    return {
        "dataset": data.name,
        "active": active,
        "policy": params.policy if active < 1 else "dense",
        "accuracy": float(result["accuracy"]),
        "mults_total": result.get("mults_total"),
        "mults_dense": result.get("mults_dense"),
        "mult_fraction": result.get("mult_fraction"),
        "train_seconds": float(result["train_seconds"]),
        "samples_per_second": float(result["samples_per_second"]),
        "workers": 1,
        "framework": framework,
    }


def _pct(part: Any, whole: Any) -> str:
    if part is None or not whole:
        return "-"
    return f"{100.0 * part / whole:.2f}%"


def _num(v: Any) -> str:
    return "-" if v is None else f"{v:,.0f}"


def _table(records: list[dict[str, Any]], dense: dict[str, Any] | None) -> str:
    """Accuracy, work per training sample in both currencies (multiply-adds, optimizer
    included; selection operations that are not multiplications), the paper's measure,
    the share of each hashed layer a query examines, and wall time."""
    head = (
        f"{'model':<26}{'accuracy':>9}{'mults/sample':>14}{'select ops/sample':>19}"
        f"{'paper share':>13}{'scanned':>18}{'samples/s':>11}{'wall s':>9}"
    )
    lines = [head, "-" * len(head)]
    rows = list(records) + ([dense] if dense is not None else [])
    for r in rows:
        name = "dense twin" if r is dense else f"{r['policy']} active={r['active']:g}"
        scanned = "/".join(f"{100 * lay['scanned_fraction']:.0f}%" for lay in r.get("layers", []))
        lines.append(
            f"{name:<26}{100 * r['accuracy']:>8.2f}%"
            f"{_num(r.get('mults_per_sample')):>14}{_num(r.get('selection_ops_per_sample')):>19}"
            f"{_pct(r.get('mult_fraction'), 1.0):>13}{scanned or '-':>18}"
            f"{r['samples_per_second']:>11.0f}{r['train_seconds']:>9.2f}"
        )
    lines.append(
        "mults/sample: every multiply-add per training sample (forward, backward, hashing, "
        "table upkeep, optimizer); select ops: bucket entries read, candidates counted, "
        "keys ranked, search steps, WTA/DWTA comparisons; paper share: the paper's measure "
        "(forward+backward+hashing multiplications / the dense network's); scanned: bucket "
        "entries read per query / layer width, per hashed layer."
    )
    return "\n".join(lines)


def _plot(
    path: str, records: list[dict[str, Any]], dense: dict[str, Any] | None, title: str
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    pts = [r for r in records if r.get("mult_fraction") is not None]
    ax.plot(
        [r["mult_fraction"] for r in pts],
        [100 * r["accuracy"] for r in pts],
        "o-",
        label=pts[0]["policy"] if pts else "",
    )
    for r in pts:
        ax.annotate(
            f"{r['active']:g}",
            (r["mult_fraction"], 100 * r["accuracy"]),
            textcoords="offset points",
            xytext=(4, 4),
        )
    if dense is not None:
        ax.axhline(100 * dense["accuracy"], color="gray", ls="--", label="dense twin")
    ax.set_xscale("log")
    ax.set_xlabel("multiplications (share of the dense network, hashing counted)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


SELECTION_KEYS: tuple[str, ...] = ("family", "k", "l", "policy", "seed", "rehash", "rebuild")
SELECTION_KEYS += ("transform", "bin_size", "rerank", "batch_factor")
TRAINING_KEYS: tuple[str, ...] = ("hidden", "epochs", "batch_size", "lr", "optimizer")
TRAINING_KEYS += ("workers", "seed", "progress", "limit")
#: datasets read from --data-dir (the others ship with a library)
DIR_DATASETS = ("mnist", "fashion-mnist", *MULTILABEL_DATASETS)


def _train_impl(opts: dict[str, Any]) -> list[dict[str, Any]]:
    """``lshcore train``: validate, load the data, train each model, report."""
    params = _check_options(opts)
    data = _load_data(opts)
    records, dense = _train_models(opts, data, params)
    _attach_dense(opts, records, dense)
    _report(opts, records, dense)
    return records


def _check_options(opts: dict[str, Any]) -> SelectionParams:
    """The selection settings of the first --active share, validated before any data is
    loaded (a usage error names the option)."""
    _check_backend(opts.get("backend"))
    if opts["data_dir"] is not None and opts["dataset"] not in DIR_DATASETS:
        raise click.BadParameter(
            f"--dataset {opts['dataset']} is bundled and reads no folder; --data-dir applies "
            f"to {', '.join(DIR_DATASETS)} only",
            param_hint="--data-dir",
        )
    try:
        return selection_params(active=opts["active"][0], **{k: opts[k] for k in SELECTION_KEYS})
    except UnknownNameError as exc:
        option = next((o for o in ("family", "policy", "transform") if o in exc.kind), "family")
        raise click.BadParameter(str(exc), param_hint=f"--{option}") from None
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from exc


def _check_backend(name: str | None) -> None:
    """--backend: known and usable here, else a usage error with the reason (no traceback)."""
    if name is None:
        return
    try:
        get_backend(name)
    except UnknownNameError as exc:
        raise click.BadParameter(str(exc), param_hint="--backend") from None
    except BackendUnavailableError as exc:
        raise click.ClickException(f"--backend {name}: {exc}") from None


def _load_data(opts: dict[str, Any]) -> Any:
    try:
        return _load(opts["dataset"], opts["data_dir"], opts["seed"])
    except DataError as exc:
        raise click.ClickException(f"--dataset {opts['dataset']}: {exc}") from exc


def _save_path(opts: dict[str, Any], active: float) -> str | None:
    """Where the model of share ``active`` goes (a sweep adds ``-active<share>``)."""
    save = opts["save"]
    if save and len(opts["active"]) > 1:
        path = Path(save)
        return str(path.with_suffix("")) + f"-active{active:g}" + (path.suffix or ".npz")
    return save


def _train_one(
    opts: dict[str, Any], data: Any, params: SelectionParams, **kw: Any
) -> dict[str, Any]:
    """One model (core engine or a framework adapter) with selection ``params``."""
    if opts["framework"] != "core":
        return _run_framework(opts["framework"], data, opts, params)
    train_opts = {k: opts[k] for k in TRAINING_KEYS}
    backend = opts.get("backend")
    return run_training(
        data, active=params.active, params=params, backend=backend, **train_opts, **kw
    )


def _train_models(
    opts: dict[str, Any], data: Any, params: SelectionParams
) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """A record per --active share, and the dense twin's with --compare-dense."""
    records: list[dict[str, Any]] = []
    dense: dict[str, Any] | None = None
    try:
        for active in opts["active"]:
            share = params.replace(active=active)
            records.append(_train_one(opts, data, share, save=_save_path(opts, active)))
        if opts["compare_dense"]:
            dense = _train_one(opts, data, params.replace(active=1.0), desc="dense twin")
    except (ConfigError, UnknownNameError) as exc:
        raise click.UsageError(str(exc)) from exc
    return records, dense


def _attach_dense(
    opts: dict[str, Any], records: list[dict[str, Any]], dense: dict[str, Any] | None
) -> None:
    """Each record gets the options and, with a dense twin, its figures."""
    args = {k: v for k, v in opts.items() if k != "progress"}
    for rec in records:
        rec["args"] = args
        if dense is not None:
            rec["dense_accuracy"] = dense["accuracy"]
            rec["dense_train_seconds"] = dense["train_seconds"]
            rec["dense_samples_per_second"] = dense["samples_per_second"]


def _report(
    opts: dict[str, Any], records: list[dict[str, Any]], dense: dict[str, Any] | None
) -> None:
    """The table on stdout; the JSON and the plot when asked for."""
    click.echo(_table(records, dense))
    if opts["json_path"]:
        payload: Any = records if len(opts["active"]) > 1 else records[0]
        Path(opts["json_path"]).parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(opts["json_path"], json.dumps(payload, indent=2, default=_jsonable))
        click.echo(f"wrote {opts['json_path']}")
    if opts["plot"]:
        title = f"{opts['dataset']}: {','.join(map(str, opts['hidden']))} hidden, {opts['policy']}"
        _plot(opts["plot"], records, dense, title)
        click.echo(f"wrote {opts['plot']}")


def _jsonable(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    return str(v)


def _framework_defaults(opts: dict[str, Any]) -> None:
    """A framework adapter's own defaults (``ADAPTER_DEFAULTS``: per-sample ``rerank``
    over SRP, chosen on validation for the adapters) for the selection options the user
    did not give: the core engine's (``batch_rerank`` over DWTA) exist in the core
    layer only."""
    ctx = click.get_current_context()
    names = {"policy": "policy", "family": "family", "k": "k", "l": "l_", "rerank": "rerank"}
    for key, param in names.items():
        source = ctx.get_parameter_source(param)
        if source is None or source.name in ("DEFAULT", "DEFAULT_MAP"):
            opts[key] = ADAPTER_DEFAULTS[key]
    source = ctx.get_parameter_source("transform")
    if source is None or source.name in ("DEFAULT", "DEFAULT_MAP"):
        opts["transform"] = ADAPTER_DEFAULTS["transform"] or "none"


@click.command("train")
@click.option(
    "--dataset",
    type=click.Choice(DATASETS),
    default="digits",
    show_default=True,
    help="Training data.",
)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Folder with the IDX .gz files (else $LSHCORE_DATA, else download).",
)
@click.option(
    "--data",
    type=click.Path(),
    default=None,
    help="--dataset xmc: an XMC text file or store (lshcore data convert).",
)
@click.option(
    "--test-data",
    type=click.Path(),
    default=None,
    help="--dataset xmc: a separate test file or store (else a seeded 80/20 split).",
)
@click.option(
    "--hidden",
    default="1000,1000,1000",
    show_default=True,
    callback=_parse_hidden,
    help="Hidden layer sizes, comma-separated.",
)
@click.option(
    "--active",
    default="0.05",
    show_default=True,
    callback=_parse_active,
    help="Share of active neurons per hidden layer (1.0 = dense); a comma list runs a sweep.",
)
@click.option(
    "--family",
    default="dwta",
    show_default=True,
    help="LSH family (dwta, wta, srp, sparse_srp, ...).",
)
@click.option(
    "--k",
    default="auto",
    show_default=True,
    callback=_parse_auto_int,
    help="Codes per table key, or auto (chosen per layer from its width and a work budget).",
)
@click.option(
    "--l",
    "l_",
    default="auto",
    show_default=True,
    callback=_parse_auto_int,
    help="Number of tables, or auto.",
)
@click.option(
    "--bin-size",
    type=click.IntRange(min=2),
    default=16,
    show_default=True,
    help="Bin size of wta/dwta (ignored by other families).",
)
@click.option(
    "--transform",
    default="auto",
    show_default=True,
    help="MIPS transform: simple_lsh, sign_alsh, none, or auto (none for wta/dwta, else simple_lsh).",
)
@click.option(
    "--policy",
    type=click.Choice(POLICIES),
    default=DEFAULT_POLICY,
    show_default=True,
    help="Active-set policy (the paper's: topk).",
)
@click.option("--epochs", type=click.IntRange(min=1), default=10, show_default=True)
@click.option(
    "--batch-size", type=click.IntRange(min=1), default=DEFAULT_BATCH_SIZE, show_default=True
)
@click.option(
    "--lr",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Learning rate (default 3e-3 for adam, 0.01 otherwise).",
)
@click.option("--optimizer", type=click.Choice(OPTIMIZERS), default="adam", show_default=True)
@click.option(
    "--workers",
    type=click.IntRange(min=1, max=64),
    default=1,
    show_default=True,
    help="Hogwild worker threads.",
)
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option(
    "--rehash",
    default="changed:0.1:10",
    show_default=True,
    help="Rehash schedule: fixed:P, exp:P0:G, changed:T:C or never (in steps).",
)
@click.option(
    "--rebuild",
    default="never",
    show_default=True,
    help="Rebuild (new hash functions) schedule, same forms.",
)
@click.option(
    "--rerank",
    type=click.FloatRange(min=1.0),
    default=4.0,
    show_default=True,
    help="Candidates scored exactly by the rerank policy, in units of the active count.",
)
@click.option(
    "--batch-factor",
    type=click.FloatRange(min=1.0),
    default=DEFAULT_BATCH_FACTOR,
    show_default=True,
    help="Shared block of batch_union/batch_rerank, in units of the active count (for "
    "batch_rerank at least the layer's work budget). 8 was more accurate on average in "
    "every setting measured, at about 2/3 of the speed at 1,000 wide.",
)
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=None,
    help="Use only the first N training samples.",
)
@click.option("--compare-dense", is_flag=True, help="Also train the dense twin in the same run.")
@click.option(
    "--save", type=click.Path(dir_okay=False), default=None, help="Save the trained model here."
)
@click.option(
    "--json",
    "json_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="Write the results as JSON.",
)
@click.option(
    "--plot",
    type=click.Path(dir_okay=False),
    default=None,
    help="Plot accuracy against the share of multiplications (PNG).",
)
@click.option(
    "--framework",
    type=click.Choice(FRAMEWORKS),
    default="core",
    show_default=True,
    help="Engine: core, or a framework adapter.",
)
@click.option(
    "--backend",
    default=None,
    help="Kernel backend of the core engine: numpy, numba (default), cupy (a CUDA GPU).",
)
@click.option(
    "--progress/--no-progress", default=True, show_default=True, help="Show a progress bar."
)
@click.option(
    "--active-sets",
    type=click.Choice(["batch", "sample"]),
    default=None,
    help="--dataset xmc: one active set shared by the batch (default) or SLIDE's per sample.",
)
@click.option(
    "--shared-labels",
    type=click.IntRange(min=0),
    default=None,
    help="--dataset xmc, --active-sets sample: the batch's labels (at most N) join every "
    "sample's set as negatives (default 1024; 0 = off).",
)
@click.option(
    "--random-negatives",
    type=click.IntRange(min=0),
    default=None,
    help="--dataset xmc, --active-sets batch: uniform random negatives added to the batch's "
    "set beside the LSH ones (default 0).",
)
@click.option(
    "--bucket-size",
    type=click.IntRange(min=1),
    default=None,
    help="--dataset xmc: ids read from one bucket at most (default 128).",
)
@click.option(
    "--pad/--no-pad",
    default=None,
    help="--dataset xmc: fill active sets the buckets leave short with random neurons "
    "(default on).",
)
@click.option(
    "--adam-catch-up/--no-adam-catch-up",
    default=None,
    help="--dataset xmc: decay a row's Adam moments for the steps it skipped (dense Adam's "
    "moments) or leave them (SparseAdam; the default).",
)
@click.option(
    "--infer-candidates",
    type=click.IntRange(min=1),
    default=None,
    help="--dataset xmc: hashed inference scores exactly the N ids a query's buckets hit "
    "most (default 1024).",
)
@click.option(
    "--infer-frequent",
    type=click.IntRange(min=0),
    default=None,
    help="--dataset xmc: hashed inference also scores the N most frequent training labels "
    "(default 1024).",
)
@click.option(
    "--infer-probes",
    type=click.IntRange(min=1),
    default=None,
    help="--dataset xmc: buckets probed per table by hashed inference (multiprobe; default 1).",
)
def train(**kwargs: Any) -> None:
    """Train an MLP whose hidden layers compute only LSH-selected neurons."""
    if kwargs["dataset"] == "xmc":  # extreme classification: lshcore.cli.train_xmc
        _check_backend(kwargs.get("backend"))
        run_xmc(kwargs)
        return
    if (kwargs.pop("data"), kwargs.pop("test_data")) != (None, None):
        raise click.UsageError("--data/--test-data apply to --dataset xmc only")
    given = [k for k in XMC_ONLY if kwargs.pop(k) is not None]
    if given:
        names = ", ".join("--" + k.replace("_", "-") for k in given)
        raise click.UsageError(f"{names}: apply to --dataset xmc only")
    kwargs["l"] = kwargs.pop("l_")
    if kwargs["framework"] != "core":
        _framework_defaults(kwargs)
    if kwargs["family"] not in ("dwta", "wta"):
        kwargs["bin_size"] = None
    for name, value in (("--rehash", kwargs["rehash"]), ("--rebuild", kwargs["rebuild"])):
        try:
            parse_schedule(value, name)
        except ConfigError as exc:
            raise click.BadParameter(str(exc), param_hint=name) from None
    _train_impl(kwargs)


@click.command("demo")
@click.option("--epochs", type=click.IntRange(min=1), default=10, show_default=True)
@click.option(
    "--width",
    type=click.IntRange(min=100),
    default=32000,
    show_default=True,
    help="Neurons of the one hidden layer.",
)
@click.option(
    "--active-count",
    type=click.IntRange(min=1),
    default=256,
    show_default=True,
    help="Active neurons per input in the hashed layer.",
)
@click.option("--policy", type=click.Choice(POLICIES), default=DEFAULT_POLICY, show_default=True)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="A folder with MNIST's IDX files: train on 10,000 MNIST images instead of digits.",
)
@click.option("--progress/--no-progress", default=True, show_default=True)
def demo(
    epochs: int, width: int, active_count: int, policy: str, data_dir: str | None, progress: bool
) -> None:
    """What hashing buys: one wide hidden layer, hashed, beside its dense twin (offline,
    about a minute on the bundled digits)."""
    mnist = data_dir is not None
    active = min(1.0, active_count / width)
    opts = {
        "dataset": "mnist" if mnist else "digits",
        "data_dir": data_dir,
        "hidden": [width],
        "active": [active],
        "family": "dwta",
        "k": "auto",
        "l": "auto",
        "policy": policy,
        "epochs": 2 if mnist and epochs == 10 else epochs,
        "batch_size": DEFAULT_BATCH_SIZE,
        "lr": None,
        "optimizer": "adam",
        "workers": 1,
        "seed": 0,
        "rehash": "changed:0.1:10",
        "rebuild": "never",
        "transform": "auto",
        "bin_size": 16,
        "rerank": 4.0,
        "batch_factor": DEFAULT_BATCH_FACTOR,
        "limit": 10000 if mnist else None,
        "compare_dense": True,
        "save": None,
        "json_path": None,
        "plot": None,
        "framework": "core",
        "progress": progress,
    }
    n_in = 784 if mnist else 64
    click.echo(
        f"lshcore demo: {opts['dataset']}, {n_in}-{width}-10, the hidden layer hashed "
        f"({active_count} of {width} neurons per input, {policy}, DWTA with auto K and L), "
        f"Adam {DEFAULT_ADAM_LR:g}, {opts['epochs']} epochs, against its dense twin. The dense "
        f"layer's work grows with its width; the hashed layer's with the active count."
    )
    _train_impl(opts)
