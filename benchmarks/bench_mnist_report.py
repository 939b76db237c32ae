"""Write benchmarks/results/mnist.md from the JSON files of bench_mnist*.py.

Run: .venv/bin/python benchmarks/bench_mnist_report.py
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def _load(name: str) -> Any:
    path = RESULTS / f"mnist_{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def _pct(v: float) -> str:
    return f"{100 * v:.2f}%"


def _mults(rec: dict[str, Any]) -> str:
    m, d = rec["mults"], rec["mults_dense"]
    return (
        f"{_pct(rec['mult_fraction'])} (fwd {_pct(m['forward'] / d)}, bwd {_pct(m['backward'] / d)}, "
        f"hash {_pct(m['hashing'] / d)}, rehash {_pct(m['rehashing'] / d)})"
    )


def _when(rec: dict[str, Any]) -> str:
    """When a run was taken and the host's load (earlier files have no date)."""
    date = rec.get("date_utc", "2026-11-25, before 16:30 UTC")
    load = rec.get("threads", {}).get("loadavg_start")
    after = rec.get("loadavg_1min_after_each_rep")
    text = f"{date}, 1-min load at start {load[0]:.1f}" if load else date
    if after:
        text += f", after each repetition {', '.join(f'{v:.1f}' for v in after)}"
    return text


CURVES = (
    ("curve10_dense", "dense twin (Adam 1e-3)"),
    ("curve10_topk", "topk 5% (Adam 3e-3)"),
    ("curve10_topk_lr1e-3", "topk 5% (Adam 1e-3)"),
    ("curve10_topk_norm", "topk 5%, norm ties (Adam 3e-3)"),
    ("curve10_topk_norm_lr1e-3", "topk 5%, norm ties (Adam 1e-3)"),
    ("curve10_rerank8", "rerank x8 5% (Adam 3e-3)"),
)


def _curves() -> list[str]:
    """Test accuracy after every epoch of the `curve` runs (one process per model)."""
    runs = [(name, label, _load(name)) for name, label in CURVES]
    runs = [r for r in runs if r[2]]
    if not runs:
        return []
    cols: list[tuple[str, str, str]] = []  # (name, key, header)
    for name, label, rec in runs:
        cols.append((name, "test_accuracy", label))
        for key in rec["curve"][0]:
            if key.startswith("test_accuracy_infer_"):
                cols.append((name, key, f"{label}, inference {key.rsplit('_', 1)[1]}"))
    data = {name: rec for name, _, rec in runs}
    n = max(len(rec["curve"]) for _, _, rec in runs)
    out = [
        "## Test accuracy after every epoch (60,000 images per epoch, seed 0)",
        "",
        "Commands (one process per model, up to four at the same time, 1 BLAS/numba thread "
        "each): " + "; ".join(f"`{rec['command']}`" for _, _, rec in runs),
        ". Runs of 2026-11-25, 16:31-16:55 UTC (1-min load 3.4-6.7 from these runs and other sessions). `inference P`: the same trained "
        "weights evaluated with policy P instead of the training policy (test only).",
        "",
        "| epoch | " + " | ".join(h for _, _, h in cols) + " |",
        "|---|" + "---|" * len(cols),
    ]
    for e in range(n):
        cells = []
        for name, key, _ in cols:
            curve = data[name]["curve"]
            cells.append(_pct(curve[e][key]) if e < len(curve) else "-")
        out.append(f"| {e + 1} | " + " | ".join(cells) + " |")
    last = {}
    for name, key, _ in cols:
        tail = [r[key] for r in data[name]["curve"][-3:]]
        last[(name, key)] = sum(tail) / len(tail)
    dense_last = last.get(("curve10_dense", "test_accuracy"))
    out.append("| mean of last 3 | " + " | ".join(_pct(v) for v in last.values()) + " |")
    if dense_last is not None:
        out.append(
            "| gap to dense (last 3) | "
            + " | ".join(f"{100 * (dense_last - v):.2f}" for v in last.values())
            + " |"
        )
    out.append("")
    fr = [
        f"{label} {_pct(rec['curve'][-1]['mult_fraction'])}"
        for _, label, rec in runs
        if rec.get("active", 1.0) < 1
    ]
    out += [f"Training multiplications / dense (whole run): {', '.join(fr)}.", ""]
    return out


def main() -> None:
    out = ["# MNIST benchmarks of the hashed sparse MLP", ""]
    out += [
        "Machine: the shared 2-core development host. Runs before 2026-11-25 16:30 UTC had a 1-minute",
        "load average of 3-9 from other work; the `_quiet` runs (16:54-16:59) had 0.5-1.2 with no other",
        "Python process (see `loadavg*`/`date_utc` in the JSON files). Network",
        "784-1000-1000-1000-10, ReLU, all three hidden layers hashed, dense output layer,",
        "Adam, batch 128, seed 0. Hashed configuration: see `config` in each JSON file.",
        "Accuracy is on the 10,000 test images with the layers' active sets (sparse inference).",
        "",
    ]
    first = True
    for name in ("accuracy", "accuracy_rerank8", "accuracy_topk_l200"):
        acc = _load(name)
        if not acc:
            continue
        d = acc["dense"]
        if first:
            out += [
                "## Accuracy and multiplications, 3 epochs (target: within 1.0 point of dense; <= 10% mults, aim 5%)",
                "",
                "Earlier runs (2026-11-25, before 16:30 UTC, load 3-9); the 10-epoch curves follow.",
                "",
                "| model | test accuracy | gap to dense | training multiplications / dense | samples/s | command |",
                "|---|---|---|---|---|---|",
                f"| dense twin (Adam {d['lr']:g}, {d['epochs']} epochs x {d['train_samples']}) | {_pct(d['accuracy'])} | - "
                f"| 100% | {d['samples_per_second']:.0f} | `{_load('accuracy')['command']}` |",
            ]
            first = False
        for policy, r in acc["hashed"].items():
            label = f"{policy} 5%, L={acc['config']['l']}"
            if r.get("rerank"):
                label += f", rerank {r['rerank']:g}"
            out.append(
                f"| {label} (Adam {r['lr']:g}) | {_pct(r['accuracy'])} | {r['accuracy_gap_points']:.2f} points | "
                f"{_mults(r)} | {r['samples_per_second']:.0f} | `{acc['command']}` |"
            )
    if not first:
        out.append("")
    out += _curves()
    sweep = _load("sweep")
    if sweep:
        recs = sweep["records"]
        out += [
            "## Sweep: accuracy vs share of multiplications (paper's main figure)",
            "",
            f"Command: `{sweep['command']}` ({recs[0]['epochs']} epoch(s) over {recs[0]['train_samples']} images); plot `mnist_sweep.png`.",
            "",
            "| policy | active | test accuracy | training multiplications / dense |",
            "|---|---|---|---|",
        ]
        for r in recs:
            out.append(f"| {r['policy']} | {r['active']:g} | {_pct(r['accuracy'])} | {_mults(r)} |")
        out.append("")
    for name in ("walltime_quiet2", "walltime_quiet", "walltime"):
        wall = _load(name)
        if not wall:
            continue
        med = wall["median_seconds"]
        out += [
            f"## Wall time per epoch (interleaved hashed, dense, PyTorch; medians) - {_when(wall)}",
            "",
            f"Command: `{wall['command']}` (epochs of {wall['samples_per_epoch']} images, {len(wall['seconds']['dense'])} repetitions)",
            "",
            "| contender | median s/epoch | all repetitions |",
            "|---|---|---|",
        ]
        for k in med:
            out.append(
                f"| {k} | {med[k]:.2f} | {', '.join(f'{v:.2f}' for v in wall['seconds'][k])} |"
            )
        out += [
            "",
            f"- dense twin / hashed 5% (same engine): **{wall['ratio_dense_over_hashed']:.2f}x** (target > 1)",
            f"- dense twin (our engine) / PyTorch nn.Linear MLP, fused Adam, 2 threads: **{wall['ratio_dense_over_torch']:.2f}x**",
            f"- dense twin / hashed rerank-8 5%: **{wall.get('ratio_dense_over_hashed_rerank8', float('nan')):.2f}x**",
            *(
                [
                    f"- dense twin / hashed 5% with 2 Hogwild workers (both on 2 cores): "
                    f"**{wall['ratio_dense_over_hashed_2workers']:.2f}x**"
                ]
                if wall.get("ratio_dense_over_hashed_2workers")
                else []
            ),
            f"- 1-minute load average after each repetition: {', '.join(f'{v:.1f}' for v in wall.get('loadavg_1min_after_each_rep', []))}",
            "",
        ]
    titled = False
    for name in ("hogwild_quiet_60k", "hogwild_quiet", "hogwild", "hogwild_omp2"):
        hog = _load(name)
        if not hog:
            continue
        if not titled:
            out += [
                "## Hogwild: 2 worker threads vs 1 (target >= 1.7x samples/s, accuracy within 0.5 point)",
                "",
            ]
            titled = True
        sps = hog["median_samples_per_second"]
        acc_ = hog["median_accuracy"]
        if name == "hogwild_omp2":
            out += ["Before the engine fixes (lazy buffer pages, BLAS threads per worker):", ""]
        out += [f"Run: {_when(hog)}", ""]
        out += [
            f"Command: `{hog['command']}` (interleaved 1, 2, 1, 2; medians; BLAS threads "
            f"{hog['threads'].get('OMP_NUM_THREADS')} in the environment)",
            "",
            "| workers | samples/s (runs) | test accuracy (runs) |",
            "|---|---|---|",
        ]
        for w in ("1", "2"):
            runs = hog["runs"][w]
            speeds = ", ".join(f"{r['samples_per_second']:.0f}" for r in runs)
            accs = ", ".join(_pct(r["accuracy"]) for r in runs)
            out.append(f"| {w} | {sps[w]:.0f} ({speeds}) | {_pct(acc_[w])} ({accs}) |")
        out += [
            "",
            f"- speed-up 2/1: **{hog['speedup_2_over_1']:.2f}x**; accuracy change "
            f"{-hog['accuracy_drop_points']:+.2f} points",
            "",
        ]
    sched = _load("schedules")
    if sched:
        out += [
            "## Rehash schedule experiment",
            "",
            f"Command: `{sched['command']}`",
            "",
            "| family | rehash | accuracy | mults / dense | rehash mults / dense |",
            "|---|---|---|---|---|",
        ]
        for r in sched["records"]:
            out.append(
                f"| {r['family']} | {r['rehash']} | {_pct(r['accuracy'])} | {_pct(r['mult_fraction'])} | {_pct(r['rehash_fraction'])} |"
            )
        out.append("")
    notes = RESULTS / "mnist_notes.md"
    if notes.exists():
        out += [notes.read_text()]
    (RESULTS / "mnist.md").write_text("\n".join(out) + "\n")
    print(f"wrote {RESULTS / 'mnist.md'}")


if __name__ == "__main__":
    main()
