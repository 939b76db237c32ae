"""``lshcore train --dataset xmc --data PATH [--test-data PATH]``: extreme classification.

Reached through ``lshcore train`` (its options, with XMC defaults for those not given);
the network and trainer are :mod:`lshcore.training.xmc`.
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path
from typing import Any

import click
import numpy as np

from lshcore.core.fileformat import write_text_atomic
from lshcore.data.store import convert, open_store
from lshcore.errors import ConfigError, DataError, LSHError
from lshcore.training.xmc import XMCConfig, XMCModel, XMCTrainer, peak_rss_mb

__all__ = ["run_xmc", "XMC_DEFAULTS", "XMC_ONLY", "open_data"]

#: the XMC defaults of ``lshcore train`` options left at their MLP defaults
XMC_DEFAULTS: dict[str, Any] = {
    "epochs": 5,
    "family": "srp",
    "k": 10,
    "l_": 16,
    "lr": 1e-3,
}


#: options of ``lshcore train`` that only ``--dataset xmc`` reads (None = not given);
#: each is the XMCConfig field of the same name
XMC_ONLY: tuple[str, ...] = (
    "active_sets",
    "shared_labels",
    "random_negatives",
    "bucket_size",
    "pad",
    "adam_catch_up",
    "infer_candidates",
    "infer_frequent",
    "infer_probes",
)


def open_data(path: str, workdir: str, role: str = "train") -> Any:
    """An XMC store (a directory) as it is, or a text file converted into a store in
    ``workdir`` (memory bounded by a chunk either way)."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"{path}: no such file or store")
    if p.is_dir():
        return open_store(p)
    return convert(p, Path(workdir) / f"{role}-{p.name}.store")


def _schedule_samples(spec: str, batch: int, name: str) -> int:
    """``fixed:P`` (steps) -> P * batch samples; ``never`` -> 0; a bare integer = samples."""
    spec = str(spec).strip()
    if spec == "never":
        return 0
    if spec.isdigit():
        return int(spec)
    if spec.startswith("fixed:") and spec[6:].isdigit() and int(spec[6:]) > 0:
        return int(spec[6:]) * batch
    raise click.BadParameter(
        f"--dataset xmc takes fixed:P (steps), a number of samples, or never; got {spec!r}",
        param_hint=f"--{name}",
    )


def _given(name: str) -> bool:
    ctx = click.get_current_context(silent=True)
    if ctx is None:
        return True
    src = ctx.get_parameter_source(name)
    return src is not None and src.name not in ("DEFAULT", "DEFAULT_MAP")


def _config(opts: dict[str, Any], n_labels: int) -> Any:
    def opt(name: str) -> Any:
        if name in XMC_DEFAULTS and not _given(name):
            return XMC_DEFAULTS[name]
        return opts[name]

    batch = opts["batch_size"]
    kw: dict[str, Any] = {
        "hidden": opts["hidden"][0],
        "lr": opt("lr"),
        "batch_size": batch,
        "family": opt("family"),
        "k": opt("k"),
        "l": opt("l_"),
        "workers": opts["workers"],
        "seed": opts["seed"],
        "backend": opts.get("backend"),
    }
    if opts.get("bin_size") is not None:
        kw["bin_size"] = opts["bin_size"]
    for name in XMC_ONLY:
        if opts.get(name) is not None:
            kw[name] = opts[name]
    if _given("active"):
        kw["active"] = max(1, math.ceil(opts["active"][0] * n_labels))
    if _given("rehash"):
        kw["rehash_samples"] = _schedule_samples(opts["rehash"], batch, "rehash")
    if _given("rebuild"):
        kw["rebuild_samples"] = _schedule_samples(opts["rebuild"], batch, "rebuild")
    if _given("hidden") and len(opts["hidden"]) != 1:
        raise click.BadParameter(
            "--dataset xmc has one hidden layer: give one size, e.g. --hidden 128",
            param_hint="--hidden",
        )
    if not _given("hidden"):
        kw["hidden"] = 128
    return XMCConfig(**kw)


def run_xmc(opts: dict[str, Any]) -> dict[str, Any]:
    """Train and score; print the table; write --json/--plot. Returns the record."""
    if not opts.get("data"):
        raise click.UsageError("--dataset xmc needs --data PATH (an XMC text file or a store)")
    if opts.get("framework", "core") != "core":
        raise click.BadParameter(
            "--dataset xmc runs on the core engine only", param_hint="--framework"
        )
    epochs = opts["epochs"] if _given("epochs") else XMC_DEFAULTS["epochs"]
    with tempfile.TemporaryDirectory(prefix="lshcore-xmc-") as work:
        try:
            train = open_data(opts["data"], work)
            if opts.get("test_data"):
                test = open_data(opts["test_data"], work, "test")
                split = "separate test file"
            else:
                train, test = train.split(test_fraction=0.2, seed=0, save=False)
                split = "split seed 0, test fraction 0.2"
        except (DataError, ConfigError) as exc:
            raise click.ClickException(str(exc)) from exc
        if test.dim != train.dim or test.n_labels != train.n_labels:
            raise click.ClickException(
                f"--test-data has {test.dim} features and {test.n_labels} labels, the "
                f"training data {train.dim} and {train.n_labels}"
            )
        try:
            cfg = _config(opts, train.n_labels)
            # a device backend refuses options it does not run (workers, active_sets, ...)
            model = XMCModel(train.dim, train.n_labels, cfg)
        except (ConfigError, LSHError) as exc:
            raise click.UsageError(str(exc)) from exc
        limit = opts.get("limit")
        trainer = XMCTrainer(model)

        def batches(epoch: int) -> Any:
            done = 0
            for x, y in train.batches(cfg.batch_size, seed=cfg.seed, epoch=epoch, labels="lists"):
                if limit is not None and done >= limit:
                    return
                yield x, y
                done += x.shape[0]

        def test_batches() -> Any:
            return test.batches(512, shuffle=False, labels="lists")

        total = epochs * (min(len(train), limit) if limit else len(train))
        progress = opts.get("progress", False)
        bar = click.progressbar(length=total, label="xmc", file=None) if progress else None
        try:
            if bar is not None:
                bar.__enter__()
            res = trainer.fit(
                batches,
                epochs,
                evaluate=lambda: trainer.evaluate(test_batches(), limit=2048)["p_at_1"],
                progress=(lambda n, loss: bar.update(n)) if bar is not None else None,
            )
        finally:
            if bar is not None:
                bar.__exit__(None, None, None)
        full = trainer.evaluate(test_batches())
        hashed = trainer.evaluate(test_batches(), hashed=True)
        record: dict[str, Any] = {
            "dataset": "xmc",
            "data": str(opts["data"]),
            "test_data": opts.get("test_data"),
            "split": split,
            "n_train": len(train),
            "n_test": len(test),
            "n_features": train.dim,
            "n_labels": train.n_labels,
            "config": cfg.to_dict(),
            "epochs": res.epochs,
            "p_at_1": full["p_at_1"],
            "p_at_3": full["p_at_3"],
            "p_at_5": full["p_at_5"],
            "eval_seconds": full["seconds"],
            "hashed_p_at_1": hashed["p_at_1"],
            "hashed_p_at_3": hashed["p_at_3"],
            "hashed_p_at_5": hashed["p_at_5"],
            "hashed_eval_seconds": hashed["seconds"],
            "hashed_bucket_reads_per_sample": hashed["bucket_reads_per_sample"],
            "hashed_output_macs_per_sample": hashed["output_macs_per_sample"],
            "output_macs_per_sample": full["output_macs_per_sample"],
            "epoch_seconds": float(np.median(res.epoch_seconds)),
            "epoch_seconds_all": res.epoch_seconds,
            "train_seconds": res.train_seconds,
            "samples_per_second": res.samples_per_second,
            "samples": res.samples,
            "final_loss": float(np.mean(res.losses[-20:])) if res.losses else float("nan"),
            "rehashes": model.tables.rehashes,
            "rebuilds": model.tables.rebuilds,
            "rehash_seconds": model.tables.rehash_seconds,
            "curve": res.curve,
            "peak_rss_mb": peak_rss_mb(),
        }
    click.echo(_table(record))
    if opts.get("json_path"):
        Path(opts["json_path"]).parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(opts["json_path"], json.dumps(record, indent=2, default=str))
        click.echo(f"wrote {opts['json_path']}")
    if opts.get("plot"):
        _plot(opts["plot"], record)
        click.echo(f"wrote {opts['plot']}")
    return record


def _table(r: dict[str, Any]) -> str:
    c = r["config"]
    head = (
        f"xmc: {r['n_train']:,} train / {r['n_test']:,} test ({r['split']}), "
        f"{r['n_features']:,} features, {r['n_labels']:,} labels; hidden {c['hidden']}, "
        f"{c['family']} K={c['k']} L={c['l']}, active {c['active']} ({c['active_sets']} sets), "
        f"Adam {c['lr']:g}, "
        f"batch {c['batch_size']}, {c['workers']} worker(s)"
    )
    rows = [
        ("scoring", "P@1 %", "P@3 %", "P@5 %", "eval s"),
        (
            "full output",
            *(f"{100 * r[f'p_at_{k}']:.2f}" for k in (1, 3, 5)),
            f"{r['eval_seconds']:.2f}",
        ),
        (
            "hashed",
            *(f"{100 * r[f'hashed_p_at_{k}']:.2f}" for k in (1, 3, 5)),
            f"{r['hashed_eval_seconds']:.2f}",
        ),
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    lines = [head] + [
        "  ".join(v.rjust(w) for v, w in zip(row, widths, strict=True)) for row in rows
    ]
    lines.append(
        f"epochs {r['epochs']}, epoch {r['epoch_seconds']:.2f} s (median), "
        f"{r['samples_per_second']:,.0f} samples/s, peak RSS {r['peak_rss_mb']:.0f} MB"
    )
    return "\n".join(lines)


def _plot(path: str, r: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    xs = [p["seconds"] for p in r["curve"]]
    ys = [100 * p["p_at_1"] for p in r["curve"]]
    ax.plot(xs, ys, marker="o", label="lshcore hashed output (P@1, full scoring)")
    ax.set_xlabel("training seconds")
    ax.set_ylabel("P@1 % (test subset)")
    ax.set_title(f"xmc: {r['n_labels']:,} labels")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
