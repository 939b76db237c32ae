"""Sanity benchmark of the XMC loaders and dense baselines for multi-label data.

For each file (Delicious, Bibtex by default): load time (median of repeats), sizes, and
on a fixed-seed split (``split_xmc``, test_fraction 0.2, seed 0):

- ``popularity``: always predict the labels most frequent in the training set;
- ``ovr-logreg``: scikit-learn one-vs-rest logistic regression (liblinear, C=1) on the
  sparse features, ranked by decision function;
- ``torch-mlp``: a dense PyTorch network d -> hidden (ReLU) -> L with a full softmax and
  target 1/|Y| on each label (the SLIDE-style network a hashed output layer replaces),
  fused Adam.

Precision@k counts every test point (a point without labels scores 0). Results go to
``benchmarks/results/xmc.md`` with the command; the hashed-output-layer work can compare
against them on the same split::

    .venv/bin/python benchmarks/bench_xmc.py --out benchmarks/results/xmc.md
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lshcore.data.datasets import Dataset, load_xmc, split_xmc

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "xmc"
KS = (1, 3, 5)


def precision_at_k(scores: np.ndarray, y_true: Any, ks: Sequence[int] = KS) -> dict[int, float]:
    """Mean precision@k of ``scores`` (n, L) against the CSR 0/1 matrix ``y_true`` (n, L)."""
    y = y_true.tocsr()
    kmax = max(ks)
    top = np.argpartition(-scores, kth=min(kmax, scores.shape[1] - 1), axis=1)[:, :kmax]
    order = np.take_along_axis(scores, top, axis=1).argsort(axis=1)[:, ::-1]
    top = np.take_along_axis(top, order, axis=1)
    truth = y.toarray() > 0
    hits = np.take_along_axis(truth, top, axis=1)
    return {k: float(hits[:, :k].sum(axis=1).mean() / k) for k in ks}


def popularity_scores(data: Dataset) -> np.ndarray:
    freq = np.asarray(data.y_train.sum(axis=0)).ravel()
    return np.tile(freq.astype(np.float32), (data.n_test, 1))


def ovr_logreg_scores(data: Dataset, n_jobs: int) -> np.ndarray:
    import warnings

    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier

    # int64, not int8: scikit-learn's LabelBinarizer corrupts an int8 indicator matrix with
    # many columns (seen with scikit-learn 1.9.1: 28,122 flipped entries on Bibtex).
    y = data.y_train.toarray().astype(np.int64)
    clf = OneVsRestClassifier(LogisticRegression(solver="liblinear", C=1.0), n_jobs=n_jobs)
    with warnings.catch_warnings():  # labels absent from the training split
        warnings.simplefilter("ignore", UserWarning)
        clf.fit(data.x_train, y)
    return np.asarray(clf.decision_function(data.x_test), dtype=np.float64)


def torch_mlp_scores(
    data: Dataset, hidden: int, epochs: int, batch_size: int, lr: float, threads: int, seed: int
) -> np.ndarray:
    import torch
    import torch.nn.functional as F
    from torch import nn

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        torch.manual_seed(seed)
        gen = torch.Generator().manual_seed(seed)
        model = nn.Sequential(
            nn.Linear(data.n_features, hidden), nn.ReLU(), nn.Linear(hidden, data.n_classes)
        )
        try:
            opt = torch.optim.Adam(model.parameters(), lr=lr, fused=True)
        except (RuntimeError, TypeError):
            opt = torch.optim.Adam(model.parameters(), lr=lr)
        x = torch.from_numpy(data.x_train.toarray())
        y = data.y_train.toarray().astype(np.float32)
        counts = y.sum(axis=1, keepdims=True)
        target = torch.from_numpy(np.divide(y, counts, out=np.zeros_like(y), where=counts > 0))
        n = x.shape[0]
        for _ in range(epochs):
            perm = torch.randperm(n, generator=gen)
            xs, ts = x[perm], target[perm]
            for lo in range(0, n, batch_size):
                opt.zero_grad(set_to_none=True)
                logits = model(xs[lo : lo + batch_size])
                loss = -(ts[lo : lo + batch_size] * F.log_softmax(logits, dim=1)).sum(dim=1).mean()
                loss.backward()
                opt.step()
        with torch.inference_mode():
            return model(torch.from_numpy(data.x_test.toarray())).numpy().astype(np.float64)
    finally:
        torch.set_num_threads(previous)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=str(DEFAULT_DATA))
    parser.add_argument("--files", nargs="+", default=["delicious_data.txt", "bibtex_data.txt"])
    parser.add_argument("--test-fraction", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--load-repeats", type=int, default=3)
    parser.add_argument("--n-jobs", type=int, default=1, help="joblib workers for one-vs-rest")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--skip", nargs="*", default=[], choices=["ovr-logreg", "torch-mlp"])
    parser.add_argument("--out", default=None, help="write the markdown tables here")
    args = parser.parse_args(argv)

    command = "OMP_NUM_THREADS={} .venv/bin/python benchmarks/bench_xmc.py {}".format(
        os.environ.get("OMP_NUM_THREADS", "unset"),
        " ".join(argv if argv is not None else sys.argv[1:]),
    )
    load_rows, model_rows = [], []
    for filename in args.files:
        path = Path(args.data_dir) / filename
        times = []
        for _ in range(args.load_repeats):
            start = time.perf_counter()
            raw = load_xmc(path)
            times.append(time.perf_counter() - start)
        load_s = float(np.median(times))
        name = filename.removesuffix(".txt").removesuffix("_data")
        empty = int((np.diff(raw.y.indptr) == 0).sum())
        load_rows.append(
            f"| {name} | {raw.n_points:,} | {raw.n_features:,} | {raw.n_labels:,} | "
            f"{raw.x.nnz / raw.n_points:.1f} | {raw.y.nnz / raw.n_points:.2f} | {empty} | "
            f"{load_s:.3f} | {raw.n_points / load_s:,.0f} |"
        )
        print(load_rows[-1], flush=True)
        data = split_xmc(raw, test_fraction=args.test_fraction, seed=args.seed)
        contenders: list[tuple[str, Any]] = [("popularity", lambda d=data: popularity_scores(d))]
        if "ovr-logreg" not in args.skip:
            contenders.append(
                ("ovr-logreg (liblinear, C=1)", lambda d=data: ovr_logreg_scores(d, args.n_jobs))
            )
        if "torch-mlp" not in args.skip:
            contenders.append(
                (
                    f"torch-mlp (h={args.hidden}, {args.epochs} ep, Adam {args.lr:g})",
                    lambda d=data: torch_mlp_scores(
                        d,
                        args.hidden,
                        args.epochs,
                        args.batch_size,
                        args.lr,
                        args.threads,
                        args.seed,
                    ),
                )
            )
        for label, fn in contenders:
            start = time.perf_counter()
            scores = fn()
            secs = time.perf_counter() - start
            p = precision_at_k(scores, data.y_test)
            model_rows.append(
                f"| {name} | {label} | {100 * p[1]:.2f} | {100 * p[3]:.2f} | {100 * p[5]:.2f} | {secs:.1f} |"
            )
            print(model_rows[-1], flush=True)

    lines = [
        "# XMC loaders and dense multi-label baselines",
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores (shared), Python "
        f"{platform.python_version()}; torch threads {args.threads}; one-vs-rest n_jobs {args.n_jobs}; "
        f"load average at start of write-up {os.getloadavg()[0]:.2f}.",
        "",
        f"## Loading (`lshcore.data.datasets.load_xmc`, median of {args.load_repeats})",
        "",
        "| data | points | features | labels | features/point | labels/point | points without labels | load s | points/s |",
        "|---|---|---|---|---|---|---|---|---|",
        *load_rows,
        "",
        f"## Precision@k on the test split (`split_xmc(test_fraction={args.test_fraction}, seed={args.seed})`)",
        "",
        "Every test point counts (a point without labels scores 0). Fit/train seconds include prediction.",
        "",
        "| data | model | P@1 % | P@3 % | P@5 % | seconds |",
        "|---|---|---|---|---|---|",
        *model_rows,
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
