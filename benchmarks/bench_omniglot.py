"""Omniglot one-shot benchmark: ``lshcore memory omniglot`` with its defaults, recorded.

Runs the command's pipeline (train with early stopping on the held-out background
alphabets, then LSH and exact memories on held-out 5/20-way 1/5-shot episodes and the 20
official runs) and writes ``<out>.json`` (the command's report plus the command line,
wall time, load averages, machine), ``<out>.md`` (the table) and ``<out>.png`` (the
validation curve).

    .venv/bin/python benchmarks/bench_omniglot.py --data-dir ../shared/data/omniglot
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
from pathlib import Path


def _loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--data-dir",
        default=os.path.join(os.environ.get("LSHCORE_DATA", "../shared/data"), "omniglot"),
    )
    ap.add_argument(
        "--out", default="benchmarks/results/omniglot", help="path prefix of .json/.md/.png"
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0, help="0: the command's auto default")
    ap.add_argument(
        "--max-minutes", type=float, default=None, help="training time cap (default: the command's)"
    )
    ap.add_argument("--progress", action="store_true")
    args = ap.parse_args(argv)

    from lshcore.memory import omniglot as og

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    extra = {} if args.max_minutes is None else {"max_minutes": args.max_minutes}
    cfg = og.OmniglotConfig(seed=args.seed, threads=args.threads, progress=args.progress, **extra)
    load_before, started = _loadavg(), datetime.datetime.now(datetime.UTC)
    t0 = time.perf_counter()
    report = og.run_omniglot(args.data_dir, cfg, plot=out.with_suffix(".png"))
    wall = time.perf_counter() - t0
    report["bench"] = {
        "command": " ".join([".venv/bin/python", *sys.argv]),
        "equivalent": f"lshcore memory omniglot --data-dir {args.data_dir} --seed {args.seed} "
        f"--threads {args.threads} --max-minutes {cfg.max_minutes:g} --json {out}.json --plot {out}.png",
        "wall_seconds": round(wall, 1),
        "started_utc": started.strftime("%Y-%m-%d %H:%M"),
        "loadavg_before": load_before,
        "loadavg_after": _loadavg(),
        "cpus": os.cpu_count(),
        "machine": platform.platform(),
    }
    out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    acc = {(r["index"], r["way"], r["shot"]): r["accuracy"] for r in report["records"]}
    b = report["bench"]
    lines = [
        "# Omniglot one-shot with the LSH memory (`lshcore memory omniglot` defaults)",
        "",
        f"Command: `{b['command']}` (same as `{b['equivalent']}`).",
        f"Started {b['started_utc']} UTC; wall time {wall / 60:.1f} min (training "
        f"{report['seconds']['train'] / 60:.1f} min, {report['steps_run']} steps, best at step "
        f"{report['best_step']}; stopped: {report['stopped']}); load average (1/5/15 min) "
        f"{b['loadavg_before']} before, {b['loadavg_after']} after, {b['cpus']} CPUs; "
        f"PyTorch threads {report['threads']['torch']}.",
        "",
        f"Training: {report['train_characters']} characters x 4 rotations = "
        f"{report['train_classes']} classes; held out (validation, early stopping): "
        f"{', '.join(report['heldout_alphabets'])} ({report['heldout_characters']} characters). "
        f"{cfg.eval_episodes} episodes per held-out setting; official: "
        f"{report['official_runs']} runs, {report['official_items']} items.",
        "",
        "| task | LSH memory | exact memory | target |",
        "|---|---:|---:|---|",
    ]
    targets = {(5, 1): ">= 0.98", (20, 1): ""}
    for way, shot in sorted({(w, s) for _, w, s in acc}):
        lines.append(f"| held-out {way}-way {shot}-shot | {acc['lsh', way, shot]:.3f} | "
                     f"{acc['exact', way, shot]:.3f} | {targets.get((way, shot), '')} |")  # fmt: skip
    lines.append(f"| **official 20-way 1-shot** | **{report['official']['lsh']:.3f}** | "
                 f"**{report['official']['exact']:.3f}** | >= 0.90 |")  # fmt: skip
    lines += ["", "Validation curve (20-way and 5-way 1-shot on the held-out alphabets): "
              f"`{out.with_suffix('.png').name}`.", ""]  # fmt: skip
    out.with_suffix(".md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
