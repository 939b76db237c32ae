"""XMC training: lshcore's hashed output layer against PyTorch dense and sampled softmax.

Same network for every contender: sparse input -> 128 ReLU -> one output per label,
batch 128, Adam; target 1/|Y| on each label. Contenders (each in its own subprocess, so
that its peak RSS is its own; interleaved when repeated):

- ``lshcore``: :mod:`lshcore.training.xmc` (LSH active sets, lazy row Adam, Hogwild
  workers = --threads).
- ``torch-dense``: ``nn.EmbeddingBag`` (sum, per-sample weights, sparse gradients,
  ``SparseAdam``) for the sparse input, ``nn.Linear`` + full softmax with ``Adam(fused=True)``.
- ``torch-sampled``: the same input layer; output weights as sparse embeddings, softmax
  over the batch's labels plus ``--sampled`` uniform negatives shared by the batch (as many
  as lshcore's active set per sample), ``SparseAdam``.

Every contender is scored on the same test subset with the full output layer every
``--eval-every`` steps (evaluation time excluded from the wall-time axis).

    python benchmarks/bench_xmc_train.py run --contender lshcore --data STORE --epochs 2 --out r.json
    python benchmarks/bench_xmc_train.py compare --data STORE --epochs 2 --out-prefix results/x
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class _AnonPeak:
    """Samples ``RssAnon`` (anonymous memory: not the store's memory-mapped file pages,
    which the kernel can drop) every 0.1 s in a daemon thread; ``peak_mb``."""

    def __init__(self) -> None:
        import threading

        self.peak_mb = 0.0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    @staticmethod
    def now_mb() -> float:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1]) / 1024.0
        return 0.0

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            self.peak_mb = max(self.peak_mb, self.now_mb())

    def stop(self) -> float:
        self._stop.set()
        self._t.join()
        self.peak_mb = max(self.peak_mb, self.now_mb())
        return self.peak_mb


def _load() -> float:
    return os.getloadavg()[0]


def _data(path: str, eval_n: int, validation: bool = False) -> tuple[Any, Any, list[Any]]:
    """(train, test, eval subset); with ``validation`` the test set is a seeded 20% of the
    training split (seed 1) and the test split is not read at all (for choosing settings)."""
    from lshcore.data.store import StoreView, open_store

    store = open_store(path)
    train, test = store.split(test_fraction=0.2, seed=0, save=False)
    if validation:
        rows = np.asarray(train.row_ids)
        perm = np.random.default_rng(1).permutation(rows.size)
        n_val = int(round(rows.size * 0.2))
        test = StoreView(store, np.sort(rows[perm[:n_val]]), "validation")
        train = StoreView(store, np.sort(rows[perm[n_val:]]), "train-minus-validation")
    ev = []
    n = 0
    for x, y in test.batches(512, shuffle=False, labels="lists"):
        ev.append((x, y))
        n += x.shape[0]
        if n >= eval_n:
            break
    return train, test, ev


def _p_at(top: np.ndarray, ys: list[np.ndarray]) -> dict[int, float]:
    from lshcore.training.xmc import precision_at_k

    return precision_at_k(top, ys, (1, 3, 5))


def _score(topk_fn: Any, batches: list[Any]) -> dict[str, float]:
    sums = {1: 0.0, 3: 0.0, 5: 0.0}
    n = 0
    for x, y in batches:
        for k, v in _p_at(topk_fn(x), y).items():
            sums[k] += v
        n += x.shape[0]
    return {f"p_at_{k}": sums[k] / n for k in (1, 3, 5)}


# -- contenders: each returns (step(x, y) -> None, topk(x) -> (B, 5)) -----------------------


def _lshcore(train: Any, args: argparse.Namespace) -> tuple[Any, Any, Any]:
    from lshcore.training.xmc import XMCConfig, XMCModel, XMCTrainer

    cfg = XMCConfig(
        hidden=args.hidden,
        lr=args.lr,
        batch_size=args.batch,
        active=args.active,
        family=args.family,
        k=args.k,
        l=args.l,
        bin_size=args.bin_size,
        rehash_samples=args.rehash,
        rebuild_samples=args.rebuild,
        workers=args.threads,
        seed=args.seed,
        pad=not args.no_pad,
        shared_labels=args.shared_labels,
        active_sets=args.active_sets,
        adam_catch_up=args.adam_catch_up,
        random_negatives=args.random_negatives,
        infer_candidates=args.infer_candidates,
        infer_frequent=args.infer_frequent,
    )
    model = XMCModel(train.dim, train.n_labels, cfg)
    trainer = XMCTrainer(model)
    return trainer, (lambda x: model.predict_topk(x, 5)), model


def _torch(train: Any, args: argparse.Namespace, sampled: bool) -> tuple[Any, Any, Any]:
    import torch
    from torch import nn

    torch.manual_seed(args.seed)
    d, n_labels, hid = train.dim, train.n_labels, args.hidden
    emb = nn.EmbeddingBag(d, hid, mode="sum", sparse=True)
    b1 = nn.Parameter(torch.zeros(hid))
    a1 = 1.0 / np.sqrt(d)
    with torch.no_grad():
        emb.weight.uniform_(-a1, a1)
        b1.uniform_(-a1, a1)
    if sampled:
        out_w = nn.Embedding(n_labels, hid, sparse=True)
        out_b = nn.Embedding(n_labels, 1, sparse=True)
        a2 = 1.0 / np.sqrt(hid)
        with torch.no_grad():
            out_w.weight.uniform_(-a2, a2)
            out_b.weight.uniform_(-a2, a2)
        sparse_opt = torch.optim.SparseAdam(
            [*emb.parameters(), *out_w.parameters(), *out_b.parameters()], lr=args.lr
        )
        dense_opt = torch.optim.Adam([b1], lr=args.lr)
        weight = lambda: out_w.weight  # noqa: E731
        bias = lambda: out_b.weight[:, 0]  # noqa: E731
    else:
        lin = nn.Linear(hid, n_labels)
        sparse_opt = torch.optim.SparseAdam(list(emb.parameters()), lr=args.lr)
        dense_opt = torch.optim.Adam([b1, *lin.parameters()], lr=args.lr, fused=True)
        weight = lambda: lin.weight  # noqa: E731
        bias = lambda: lin.bias  # noqa: E731
    gen = torch.Generator().manual_seed(args.seed)

    def hidden(x: Any) -> Any:
        idx = torch.from_numpy(x.indices.astype(np.int64))
        off = torch.from_numpy(x.indptr[:-1].astype(np.int64))
        w = torch.from_numpy(x.data.astype(np.float32))
        return torch.relu(emb(idx, off, per_sample_weights=w) + b1)

    def step(x: Any, ys: list[np.ndarray]) -> None:
        h = hidden(x)
        b = len(ys)
        rows = np.repeat(np.arange(b), [len(v) for v in ys])
        cols = np.concatenate(ys).astype(np.int64) if rows.size else np.zeros(0, np.int64)
        counts = np.maximum([len(v) for v in ys], 1)
        vals = torch.from_numpy((1.0 / counts[rows]).astype(np.float32))
        if sampled:
            neg = torch.randint(0, n_labels, (args.sampled,), generator=gen).numpy()
            cand, inv = np.unique(np.concatenate([cols, neg]), return_inverse=True)
            cand_t = torch.from_numpy(cand)
            logits = h @ out_w(cand_t).T + out_b(cand_t)[:, 0]
            tcols = torch.from_numpy(inv[: cols.size])
        else:
            logits = lin(h)
            tcols = torch.from_numpy(cols)
        target = torch.zeros_like(logits)
        target[torch.from_numpy(rows), tcols] = vals
        loss = -(target * torch.log_softmax(logits, dim=1)).sum() / b
        sparse_opt.zero_grad(set_to_none=True)
        dense_opt.zero_grad(set_to_none=True)
        loss.backward()
        sparse_opt.step()
        dense_opt.step()

    def topk(x: Any) -> np.ndarray:
        with torch.no_grad():
            h = hidden(x)
            s = h @ weight().T + bias()
            return torch.topk(s, 5, dim=1).indices.numpy()

    return step, topk, None


def run(args: argparse.Namespace) -> dict[str, Any]:
    """One contender: train, scoring the eval subset every --eval-every steps."""
    import numba

    numba.set_num_threads(max(1, args.threads))
    if args.contender != "lshcore":
        import torch

        torch.set_num_threads(args.threads)
    anon = _AnonPeak()
    train, test, ev = _data(args.data, args.eval_n, args.validation)
    rss_data = _peak_mb()
    t_init = time.perf_counter()
    if args.contender == "lshcore":
        trainer, topk, model = _lshcore(train, args)
    else:
        step_fn, topk, model = _torch(train, args, sampled=args.contender == "torch-sampled")
    init_s = time.perf_counter() - t_init
    curve: list[dict[str, float]] = []
    epoch_s: list[float] = []
    clock = 0.0
    steps = 0
    samples = 0
    loads = [_load()]

    def point() -> None:
        e0 = time.perf_counter()
        sc = _score(topk, ev)
        curve.append(
            {
                "seconds": clock,
                "steps": steps,
                "samples": samples,
                **sc,
                "eval_seconds": time.perf_counter() - e0,
            }
        )
        print(
            f"  {args.contender} t={clock:7.1f}s steps={steps} P@1={sc['p_at_1']:.4f}", flush=True
        )

    point()
    for epoch in range(args.epochs):
        it = train.batches(args.batch, seed=args.seed, epoch=epoch, labels="lists")
        if args.limit:
            it = (b for _, b in zip(range(args.limit // args.batch), it, strict=False))
        if args.contender == "lshcore":
            # the trainer's own loop (Hogwild workers), a curve point every eval_every steps
            res = trainer.fit(lambda e, it=it: it, 1, evaluate=None)
            epoch_s.append(res.epoch_seconds[0])
            clock += res.epoch_seconds[0]
            steps += res.steps
            samples += res.samples
        else:
            t0 = time.perf_counter()
            for x, y in it:
                step_fn(x, y)
                steps += 1
                samples += x.shape[0]
            epoch_s.append(time.perf_counter() - t0)
            clock += epoch_s[-1]
        loads.append(_load())
        point()
    anon_train = anon.stop()
    final = (
        _score(topk, [(x, y) for x, y in test.batches(512, shuffle=False, labels="lists")])
        if not args.no_final
        else curve[-1]
    )
    rec: dict[str, Any] = {
        "contender": args.contender,
        "data": args.data,
        "n_train": len(train),
        "n_test": len(test),
        "n_labels": train.n_labels,
        "threads": args.threads,
        "settings": {k: v for k, v in vars(args).items() if k not in ("func",)},
        "init_seconds": init_s,
        "epoch_seconds": epoch_s,
        "epoch_seconds_median": float(np.median(epoch_s)),
        "samples_per_second": samples / clock if clock else 0.0,
        "train_seconds": clock,
        "curve": curve,
        "final": final,
        "peak_rss_mb": _peak_mb(),
        "peak_anon_rss_mb_training": anon_train,
        "rss_after_data_mb": rss_data,
        "load": loads,
    }
    if args.contender == "lshcore" and model is not None:
        rec["rehash_seconds"] = model.tables.rehash_seconds
        rec["rehashes"] = model.tables.rehashes
        import time as _t

        t0 = _t.perf_counter()
        hashed = _score(lambda x: model.predict_topk(x, 5, hashed=True), ev)
        rec["hashed_eval"] = {**hashed, "seconds": _t.perf_counter() - t0}
        t0 = _t.perf_counter()
        _score(topk, ev)
        rec["full_eval_seconds_subset"] = _t.perf_counter() - t0
        import dataclasses

        base = model.config
        rec["hashed_variants"] = []
        for spec in filter(None, args.hashed_variants.split(",")):
            cand, freq, *more = (int(v) for v in spec.split(":"))
            probes = more[0] if more else 1
            model.config = dataclasses.replace(
                base, infer_candidates=cand, infer_frequent=freq, infer_probes=probes
            )
            t0 = _t.perf_counter()
            sc = _score(lambda x: model.predict_topk(x, 5, hashed=True), ev)
            rec["hashed_variants"].append(
                {
                    "infer_candidates": cand,
                    "infer_frequent": freq,
                    "infer_probes": probes,
                    **sc,
                    "seconds": _t.perf_counter() - t0,
                    "bucket_reads_per_sample": model.last_hashed_work[0] / ev[-1][0].shape[0],
                    "output_macs_per_sample": model.last_hashed_work[1] / ev[-1][0].shape[0],
                }
            )
        model.config = base
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(rec, indent=2, default=str))
    return rec


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--active", type=int, default=128)
    p.add_argument("--sampled", type=int, default=None, help="negatives (default --active)")
    p.add_argument("--family", default="srp")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--l", type=int, default=16)
    p.add_argument("--bin-size", type=int, default=8)
    p.add_argument("--rehash", type=int, default=6400)
    p.add_argument("--rebuild", type=int, default=128000)
    p.add_argument("--no-pad", action="store_true")
    p.add_argument(
        "--shared-labels", type=int, default=1024, help="lshcore: batch labels as shared negatives"
    )
    p.add_argument(
        "--active-sets", default="batch", help="lshcore: batch (shared) or sample (SLIDE)"
    )
    p.add_argument(
        "--adam-catch-up", action="store_true", help="lshcore: decay skipped rows' moments"
    )
    p.add_argument("--random-negatives", type=int, default=0, help="lshcore, batch sets")
    p.add_argument("--infer-candidates", type=int, default=1024, help="lshcore hashed inference")
    p.add_argument("--infer-frequent", type=int, default=1024, help="lshcore hashed inference")
    p.add_argument(
        "--hashed-variants",
        default="",
        help="lshcore: extra hashed-inference settings to score, e.g. 1024:1024,1:1024 "
        "(candidates:frequent[:probes])",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-n", type=int, default=2048)
    p.add_argument("--limit", type=int, default=0, help="samples per epoch (0 = all)")
    p.add_argument("--validation", action="store_true", help="score on a validation split")
    p.add_argument("--no-final", action="store_true", help="skip scoring the whole test set")


def plot(files: list[str], out: str, title: str) -> None:
    """P@1 (eval subset, full scoring) against training seconds, one line per result file."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for f in files:
        r = json.loads(Path(f).read_text())
        xs = [p["seconds"] for p in r["curve"]]
        ys = [100 * p["p_at_1"] for p in r["curve"]]
        label = r["contender"]
        if r["contender"] == "torch-sampled":
            label += f" ({r['settings']['sampled']} negatives)"
        if r["contender"] == "lshcore":
            st = r["settings"]
            label += f" ({st.get('active_sets', 'sample')} sets, L={st['l']})"
        if r["settings"].get("limit"):
            label += f" ({r['settings']['limit'] // r['settings']['batch']} steps)"
        ax.plot(xs, ys, marker="o", label=label)
    ax.set_xscale("symlog", linthresh=10)
    ax.set_xlabel("training seconds (evaluation excluded)")
    ax.set_ylabel("P@1 % (2,048 test points)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def curves(a_file: str, b_file: str) -> list[dict[str, float]]:
    """P@1 of two runs at every curve time of either (linear between points, from (0, 0);
    a run that has stopped keeps its last P@1), up to the shorter run's last time:
    ``[{seconds, a, b}]``. ``a`` is better at every equal wall time if ``a > b`` in all."""
    ca, cb = (json.loads(Path(f).read_text())["curve"] for f in (a_file, b_file))

    def at(c: list[dict[str, float]], t: float) -> float:
        xs = [p["seconds"] for p in c]
        ys = [p["p_at_1"] for p in c]
        return float(np.interp(t, xs, ys))

    end = min(ca[-1]["seconds"], cb[-1]["seconds"])
    times = sorted({p["seconds"] for p in ca + cb if 0 < p["seconds"] <= end})
    return [{"seconds": t, "a": at(ca, t), "b": at(cb, t)} for t in times]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("run")
    _common(p)
    p.add_argument(
        "--contender", choices=["lshcore", "torch-dense", "torch-sampled"], required=True
    )
    p.add_argument("--out", default=None)
    c = sub.add_parser("compare")
    _common(c)
    c.add_argument("--contenders", default="lshcore,torch-sampled,torch-dense")
    c.add_argument("--epochs-for", default="", help="per contender, e.g. torch-dense=2")
    c.add_argument("--out-prefix", required=True)
    pl = sub.add_parser("plot")
    pl.add_argument("files", nargs="+")
    pl.add_argument("--out", required=True)
    pl.add_argument("--title", default="")
    cv = sub.add_parser("curves", help="P@1 of run A and run B at equal wall times")
    cv.add_argument("a")
    cv.add_argument("b")
    args = ap.parse_args()
    if args.cmd == "curves":
        rows = curves(args.a, args.b)
        for r in rows:
            print(f"{r['seconds']:7.1f} s  A {100 * r['a']:6.2f}  B {100 * r['b']:6.2f}")
        print("A better at every time:", all(r["a"] > r["b"] for r in rows))
        return
    if args.cmd == "plot":
        plot(args.files, args.out, args.title)
        return
    if args.sampled is None:
        args.sampled = args.active
    if args.cmd == "run":
        run(args)
        return
    per = dict(kv.split("=") for kv in args.epochs_for.split(",") if kv)
    results = []
    for name in args.contenders.split(","):
        out = f"{args.out_prefix}_{name}.json"
        cmd = [sys.executable, __file__, "run", "--contender", name, "--out", out]
        for k, v in vars(args).items():
            if k in ("cmd", "contenders", "out_prefix", "epochs_for"):
                continue
            if isinstance(v, bool):
                if v:
                    cmd.append(f"--{k.replace('_', '-')}")
                continue
            if k == "epochs" and name in per:
                v = per[name]
            cmd += [f"--{k.replace('_', '-')}", str(v)]
        print(f"[{time.strftime('%H:%M:%S')}] load {_load():.2f}: {' '.join(cmd[2:])}", flush=True)
        subprocess.run(cmd, check=True, cwd=ROOT)
        results.append(json.loads(Path(out).read_text()))
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    )
    for r in results:
        print(
            f"{r['contender']:14s} epoch {r['epoch_seconds_median']:8.2f} s  "
            f"P@1 {100 * r['final']['p_at_1']:6.2f}  P@3 {100 * r['final']['p_at_3']:6.2f}  "
            f"P@5 {100 * r['final']['p_at_5']:6.2f}  peak {r['peak_rss_mb']:7.0f} MB  "
            f"load {np.median(r['load']):.1f}"
        )


if __name__ == "__main__":
    main()
