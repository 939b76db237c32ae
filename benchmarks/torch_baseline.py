"""PyTorch dense MLP baseline (nn.Linear + ReLU) on the CPU, at its best.

The engine benchmarks compare lshcore's dense and hashed networks against this in one
run::

    from benchmarks.torch_baseline import train_torch_mlp
    result = train_torch_mlp(x_train, y_train, x_test, y_test, hidden=(1000, 1000, 1000))

Best practice for a fair CPU baseline: explicit thread count (``torch.set_num_threads``),
the data converted to tensors once, one ``randperm`` gather per epoch and slice views
per step, ``zero_grad(set_to_none=True)``, fused optimizers where this PyTorch has them
(the default CPU Adam is ~10x slower than ``fused=True`` on large layers), evaluation
under ``inference_mode`` outside the timed region.

Measure only when the machine is quiet: with ``threads=2`` on a 2-core machine loaded by
other processes (load average 6-8), one MNIST epoch took 181 s instead of 7.4 s (its
OpenMP threads wait on each other), so compare contenders interleaved in one run and
check the load average that ``main`` prints.

Run it on MNIST (``../shared/data/mnist`` by default) and print a table::

    .venv/bin/python benchmarks/torch_baseline.py --epochs 2 --repeats 2
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lshcore.core.validation import as_batch, as_ids, check_choice, check_float, check_int
from lshcore.errors import ConfigError, InputError

__all__ = ["train_torch_mlp", "dense_mults_per_sample"]

DEFAULT_LR = {"sgd": 0.1, "adam": 1e-3}


def dense_mults_per_sample(n_in: int, hidden: Sequence[int], n_out: int) -> dict[str, int]:
    """Multiply-adds of one sample through a dense MLP: forward, and backward (gradient
    of the weights for every layer, of the inputs for every layer but the first)."""
    sizes = [n_in, *hidden, n_out]
    per_layer = [a * b for a, b in zip(sizes[:-1], sizes[1:], strict=True)]
    forward = sum(per_layer)
    backward = sum(per_layer) + sum(per_layer[1:])
    return {"forward": forward, "backward": backward, "total": forward + backward}


def _make_optimizer(
    torch: Any, params: Any, name: str, lr: float, momentum: float
) -> tuple[Any, str]:
    """The fastest available implementation: fused, then foreach, then the default."""
    cls = torch.optim.Adam if name == "adam" else torch.optim.SGD
    kwargs: dict[str, Any] = {"lr": lr}
    if name == "sgd":
        kwargs["momentum"] = momentum
    params = list(params)
    for impl in ("fused", "foreach"):
        try:
            return cls(params, **kwargs, **{impl: True}), impl
        except (RuntimeError, TypeError, ValueError):
            continue
    return cls(params, **kwargs), "default"


def train_torch_mlp(
    x_train: Any,
    y_train: Any,
    x_test: Any,
    y_test: Any,
    hidden: Sequence[int] = (1000, 1000, 1000),
    epochs: int = 10,
    batch_size: int = 128,
    lr: float | None = None,
    optimizer: str = "sgd",
    momentum: float = 0.0,
    seed: int = 0,
    threads: int = 2,
    n_classes: int | None = None,
    verbose: bool = False,
) -> dict[str, Any]:
    """Train a dense ``nn.Linear`` + ReLU MLP with softmax cross-entropy; return figures.

    ``x_*`` (n, d) float arrays, ``y_*`` (n,) integer labels in [0, n_classes).
    ``lr`` defaults to 0.1 for SGD and 1e-3 for Adam. Returns a dict with ``accuracy``
    (test, in [0, 1]), ``train_seconds`` (training only, evaluation excluded),
    ``samples_per_second``, ``epoch_seconds`` (list), ``final_loss``, ``threads``,
    ``optimizer_impl`` (fused / foreach / default), ``mults_per_sample`` and the settings.
    The previous torch thread count is restored on return.
    """
    import torch
    import torch.nn.functional as F
    from torch import nn

    optimizer = check_choice(optimizer, "optimizer", ("sgd", "adam"))
    epochs = check_int(epochs, "epochs", low=1)
    batch_size = check_int(batch_size, "batch_size", low=1)
    threads = check_int(threads, "threads", low=1)
    seed = check_int(seed, "seed", low=0)
    momentum = check_float(momentum, "momentum", low=0.0, high=1.0)
    lr = check_float(DEFAULT_LR[optimizer] if lr is None else lr, "lr", low=0.0, open_low=True)
    hidden = tuple(check_int(h, "hidden", low=1) for h in hidden)
    x_tr = np.asarray(x_train)
    if x_tr.ndim != 2:
        raise InputError(f"x_train: expected shape (n, d), got {x_tr.shape}")
    dim = x_tr.shape[1]
    x_tr = as_batch(x_tr, dim, "x_train")
    x_te = as_batch(x_test, dim, "x_test")
    y_tr = as_ids(y_train, "y_train", n=x_tr.shape[0])
    y_te = as_ids(y_test, "y_test", n=x_te.shape[0])
    if n_classes is None:
        n_classes = int(max(y_tr.max(), y_te.max())) + 1
    n_classes = check_int(n_classes, "n_classes", low=2)
    if max(y_tr.max(), y_te.max()) >= n_classes:
        raise InputError(f"y_train/y_test: labels must be < n_classes={n_classes}")
    if batch_size > x_tr.shape[0]:
        raise ConfigError(f"batch_size {batch_size} exceeds the {x_tr.shape[0]} training samples")

    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        torch.manual_seed(seed)
        generator = torch.Generator().manual_seed(seed)
        sizes = [dim, *hidden]
        layers: list[nn.Module] = []
        for a, b in zip(sizes[:-1], sizes[1:], strict=True):
            layers += [nn.Linear(a, b), nn.ReLU()]
        layers.append(nn.Linear(sizes[-1], n_classes))
        model = nn.Sequential(*layers)
        opt, impl = _make_optimizer(torch, model.parameters(), optimizer, lr, momentum)

        xt = torch.from_numpy(x_tr)
        yt = torch.from_numpy(y_tr)
        n = xt.shape[0]
        epoch_seconds: list[float] = []
        loss_value = float("nan")
        model.train()
        for epoch in range(epochs):
            start = time.perf_counter()
            perm = torch.randperm(n, generator=generator)
            xs, ys = xt[perm], yt[perm]  # one gather per epoch; per step only views
            loss = None
            for lo in range(0, n, batch_size):
                opt.zero_grad(set_to_none=True)
                loss = F.cross_entropy(model(xs[lo : lo + batch_size]), ys[lo : lo + batch_size])
                loss.backward()
                opt.step()
            epoch_seconds.append(time.perf_counter() - start)
            loss_value = float(loss.item()) if loss is not None else loss_value
            if verbose:
                print(
                    f"  torch epoch {epoch + 1}/{epochs}: {epoch_seconds[-1]:.2f} s, "
                    f"last batch loss {loss_value:.4f}",
                    file=sys.stderr,
                )
        train_seconds = float(sum(epoch_seconds))

        model.eval()
        correct = 0
        with torch.inference_mode():
            xe = torch.from_numpy(x_te)
            for lo in range(0, xe.shape[0], 4096):
                pred = model(xe[lo : lo + 4096]).argmax(dim=1).numpy()
                correct += int((pred == y_te[lo : lo + 4096]).sum())
        accuracy = correct / x_te.shape[0]
        used_threads = torch.get_num_threads()
    finally:
        torch.set_num_threads(previous_threads)

    return {
        "accuracy": accuracy,
        "train_seconds": train_seconds,
        "samples_per_second": n * epochs / train_seconds if train_seconds > 0 else float("inf"),
        "epoch_seconds": epoch_seconds,
        "final_loss": loss_value,
        "threads": used_threads,
        "optimizer": optimizer,
        "optimizer_impl": impl,
        "lr": lr,
        "momentum": momentum,
        "hidden": list(hidden),
        "epochs": epochs,
        "batch_size": batch_size,
        "seed": seed,
        "n_train": int(n),
        "n_test": int(x_te.shape[0]),
        "mults_per_sample": dense_mults_per_sample(dim, hidden, n_classes),
        "torch_version": torch.__version__,
    }


def _parse_hidden(text: str) -> tuple[int, ...]:
    return tuple(int(t) for t in text.split(",") if t.strip())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="mnist", help="digits, mnist or fashion-mnist")
    parser.add_argument(
        "--data-dir",
        default=str(Path(__file__).resolve().parents[1].parent / "shared" / "data"),
        help="folder holding <dataset>/ IDX files (default ../shared/data)",
    )
    parser.add_argument("--hidden", default="1000,1000,1000", type=_parse_hidden)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--optimizer", nargs="+", default=["sgd", "adam"], choices=["sgd", "adam"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1, help="interleaved repetitions")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="write all runs to this JSON file")
    args = parser.parse_args(argv)

    from lshcore.data.datasets import load_dataset

    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    data = load_dataset(args.dataset, args.data_dir, download=False, seed=args.seed)
    print(
        f"dataset {data.name}: train {data.x_train.shape}, test {data.x_test.shape}; "
        f"hidden {args.hidden}; epochs {args.epochs}; batch {args.batch_size}; "
        f"torch threads {args.threads}; OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}; "
        f"load avg {os.getloadavg()[0]:.2f}"
    )
    runs: list[dict[str, Any]] = []
    for rep in range(args.repeats):
        for opt in args.optimizer:  # interleaved: sgd, adam, sgd, adam, ...
            result = train_torch_mlp(
                data.x_train,
                data.y_train,
                data.x_test,
                data.y_test,
                hidden=args.hidden,
                epochs=args.epochs,
                batch_size=args.batch_size,
                lr=args.lr,
                optimizer=opt,
                seed=args.seed,
                threads=args.threads,
                n_classes=data.n_classes,
                verbose=True,
            )
            result["repeat"] = rep
            runs.append(result)

    header = "| optimizer (impl) | lr | accuracy | train s | samples/s | median epoch s | threads |"
    print(header)
    print("|" + "---|" * 7)
    for opt in args.optimizer:
        rs = [r for r in runs if r["optimizer"] == opt]
        acc = np.median([r["accuracy"] for r in rs])
        secs = np.median([r["train_seconds"] for r in rs])
        sps = np.median([r["samples_per_second"] for r in rs])
        ep = np.median([s for r in rs for s in r["epoch_seconds"]])
        print(
            f"| {opt} ({rs[0]['optimizer_impl']}) | {rs[0]['lr']:g} | {100 * acc:.2f}% | "
            f"{secs:.1f} | {sps:,.0f} | {ep:.2f} | {rs[0]['threads']} |"
        )
    print(f"(medians over {args.repeats} interleaved repeat(s); torch {runs[0]['torch_version']})")
    if args.json:
        Path(args.json).write_text(json.dumps(runs, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
