"""Benchmarks of the framework adapters.

``mnist``: each adapter's ``train_mlp`` on MNIST (hashed hidden layer vs the framework's
own dense layer, same architecture, same epochs), each framework in its own process.
``steps``: per-step time (forward, loss, backward, optimizer) of a hashed output layer
(``LSHLinear`` + ``LSHSoftmaxLoss`` + SparseAdam; ``LSHDense`` + active-set softmax +
Adam) against the dense layer with full softmax (``nn.Linear`` + cross-entropy + fused
Adam; ``keras.layers.Dense``), hidden 128, batch 128, contenders interleaved, medians.

    python benchmarks/bench_adapters.py mnist --train 20000 --epochs 2
    python benchmarks/bench_adapters.py steps --sizes 10000,100000,500000
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

THREADS = 2  # replaced by --threads
RESULTS = Path(__file__).resolve().parent / "results"


def _env() -> dict[str, str]:
    return {
        **os.environ,
        "OMP_NUM_THREADS": str(THREADS),
        "MKL_NUM_THREADS": str(THREADS),
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }


def _set_threads(framework: str) -> str:
    if framework == "torch":
        import torch

        torch.set_num_threads(THREADS)
        return f"torch.get_num_threads()={torch.get_num_threads()}"
    if framework == "tensorflow":
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(THREADS)
        tf.config.threading.set_inter_op_parallelism_threads(THREADS)
        return f"tf intra/inter op threads={THREADS}"
    return f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}"


def _load_mnist(n_train: int):
    from lshcore.data.datasets import load_mnist

    data_dir = os.environ.get(
        "LSHCORE_DATA", str(Path(__file__).resolve().parents[1] / ".." / "shared" / "data")
    )
    d = load_mnist(data_dir, download=False)
    return d.x_train[:n_train], d.y_train[:n_train], d.x_test, d.y_test


# -- mnist ------------------------------------------------------------------------------
def _selector_params(args: argparse.Namespace) -> dict:
    """``--rerank`` and ``--param key=value`` (numbers parsed) for ``ActiveSelector``."""
    params: dict = {"rerank": args.rerank}
    for item in args.param:
        key, _, value = item.partition("=")
        try:
            params[key] = json.loads(value)
        except json.JSONDecodeError:
            params[key] = value
    return params


def mnist_worker(args: argparse.Namespace) -> None:
    import importlib

    threads = _set_threads(args.framework)
    mod = importlib.import_module(f"lshcore.adapters.{args.framework}")
    threads = _set_threads(args.framework)  # again: importing mxnet resets torch's threads
    xtr, ytr, xte, yte = _load_mnist(args.train)
    rows = []
    for policy, active in [(p, args.active) for p in args.policies.split(",")] + [("dense", 1.0)]:
        out = mod.train_mlp(
            xtr, ytr, xte, yte, hidden=args.hidden, active=active, family=args.family, k=args.k, l=args.l,
            policy=policy if policy != "dense" else "topk", epochs=args.epochs, batch_size=128,
            lr=1e-3, seed=0, progress=False, transform=None if args.transform == "none" else args.transform,
            selector_params=_selector_params(args) if policy != "dense" else None,
        )  # fmt: skip
        rows.append(
            {
                "framework": args.framework,
                "policy": policy,
                "active": active,
                **out,
                "threads": threads,
            }
        )
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    print("RESULT " + json.dumps(rows), flush=True)


def mnist(args: argparse.Namespace) -> None:
    rows = []
    for fw in args.frameworks.split(","):
        cmd = [sys.executable, __file__, "_mnist_worker", "--framework", fw, "--train", str(args.train),
               "--epochs", str(args.epochs), "--hidden", str(args.hidden), "--active", str(args.active),
               "--k", str(args.k), "--l", str(args.l), "--policies", args.policies,
               "--transform", args.transform, "--threads", str(args.threads),
               "--rerank", str(args.rerank), "--family", args.family] + [a for p in args.param for a in ("--param", p)]  # fmt: skip
        proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, check=False)
        line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
        if proc.returncode or not line:
            print(proc.stderr[-3000:], file=sys.stderr)
            raise SystemExit(f"{fw} failed")
        rows += json.loads(line[-1][7:])
        print(f"{fw} done", flush=True)
    command = "python benchmarks/bench_adapters.py " + " ".join(sys.argv[1:])
    extra = ", ".join(f"{k}={v}" for k, v in _selector_params(args).items())
    lines = [
        "## MNIST: hashed hidden layer vs the framework's dense layer",
        "",
        f"`{command}` — {args.train} training images, full 10,000 test set, one hidden layer of "
        f"{args.hidden} ReLU, dense 10-way output, Adam lr 1e-3, batch 128, {args.epochs} epochs, "
        f"{args.family} k={args.k} l={args.l}, transform {args.transform}, selector {extra}, {THREADS} thread(s), date {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
        "",
        "| framework | layer | policy | active | test accuracy | gap to dense (points) "
        "| training mults / dense (selection) | samples/s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        dense = next(d for d in rows if d["framework"] == r["framework"] and d["policy"] == "dense")
        gap = 100 * (r["accuracy"] - dense["accuracy"])
        layer = "dense" if r["policy"] == "dense" else "hashed"
        share = "100%"
        if "train_share" in r:
            share = f"{100 * r['train_share']:.1f}% ({100 * r['selection_share']:.1f}%)"
        lines.append(
            f"| {r['framework']} | {layer} | {r['policy']} | {r['active']} | {100 * r['accuracy']:.2f}% | "
            f"{gap:+.2f} | {share} | {r['samples_per_second']:.0f} |"
        )
    lines += [
        "",
        "Training mults / dense: the hidden layer's multiplications in training (selection: "
        "hashing the batch plus rerank's exact candidate products; rehashing the rows; the "
        "active outputs' forward and weight-gradient products) over the dense layer's "
        "(forward and weight gradient), "
        "both counted over the input's non-zeros, as the core layer counts them. The "
        "frameworks compute one GEMM over the union of a batch's active rows, so their "
        "actual work is larger than this count.",
    ]
    _write(f"adapters_mnist{args.tag}", rows, lines)


# -- steps ------------------------------------------------------------------------------
def _torch_steps(sizes: list[int], reps: int, m: int) -> list[dict]:
    threads = _set_threads("torch")
    return [_torch_size(n, reps, m, threads) for n in sizes]


def _torch_size(n: int, reps: int, m: int, threads: str) -> dict:
    import torch
    from torch.nn import functional as F

    from lshcore.adapters.torch import LSHLinear, LSHSoftmaxLoss

    torch.manual_seed(0)
    x = torch.randn(128, 128)
    y = torch.randint(0, n, (128,))
    dense = torch.nn.Linear(128, n)
    dense_opt = torch.optim.Adam(dense.parameters(), lr=1e-3, fused=True)
    k = max(6, math.ceil(math.log2(n / 128)))
    hashed = LSHLinear(128, n, active=m / n, k=k, l=20, sparse_grad=True, seed=0)
    loss_fn = LSHSoftmaxLoss(hashed)
    hashed_opt = torch.optim.SparseAdam(hashed.parameters(), lr=1e-3)

    def dense_step() -> None:
        dense_opt.zero_grad(set_to_none=True)
        F.cross_entropy(dense(x), y).backward()
        dense_opt.step()

    def hashed_step() -> None:
        hashed_opt.zero_grad(set_to_none=True)
        loss_fn(x, y).backward()
        hashed_opt.step()

    steps = {"nn.Linear + full softmax": dense_step, "LSHLinear + LSHSoftmaxLoss": hashed_step}
    return _interleave("torch", n, m, k, reps, steps, threads)


def _keras_steps(sizes: list[int], reps: int, m: int) -> list[dict]:
    threads = _set_threads("tensorflow")
    return [_keras_size(n, reps, m, threads) for n in sizes]


def _keras_size(n: int, reps: int, m: int, threads: str) -> dict:
    import keras
    import tensorflow as tf

    from lshcore.adapters.tensorflow import LSHDense, lsh_softmax_cross_entropy

    keras.utils.set_random_seed(0)
    x = tf.random.normal((128, 128))
    y = tf.random.uniform((128,), 0, n, dtype=tf.int64)
    dense = keras.layers.Dense(n)
    dense_opt = keras.optimizers.Adam(1e-3)
    k = max(6, math.ceil(math.log2(n / 128)))
    hashed = LSHDense(n, active=m / n, k=k, l=20, seed=0)
    hashed_opt = keras.optimizers.Adam(1e-3)

    @tf.function(jit_compile=False)
    def dense_step() -> None:
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(y, dense(x)))
        variables = dense.trainable_variables
        dense_opt.apply_gradients(zip(tape.gradient(loss, variables), variables, strict=True))

    @tf.function(jit_compile=False)
    def hashed_step() -> None:
        with tf.GradientTape() as tape:
            ids, values = hashed(x, training=True, labels=y, return_active=True)
            loss = lsh_softmax_cross_entropy(ids, values, y)
        variables = hashed.trainable_variables
        hashed_opt.apply_gradients(zip(tape.gradient(loss, variables), variables, strict=True))

    steps = {"keras Dense + full softmax": dense_step, "LSHDense + active softmax": hashed_step}
    return _interleave("tensorflow", n, m, k, reps, steps, threads)


def _interleave(
    framework: str, n: int, m: int, k: int, reps: int, steps: dict, threads: str
) -> dict:
    names = list(steps)
    for fn in steps.values():  # warm-up: builds, index fit, tracing, numba compile
        fn()
        fn()
    times: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(reps):
        for name in names:
            t = time.perf_counter()
            steps[name]()
            times[name].append(time.perf_counter() - t)
    med = {name: statistics.median(v) for name, v in times.items()}
    row = {
        "framework": framework,
        "outputs": n,
        "active_per_input": m,
        "k": k,
        "l": 20,
        "reps": reps,
        "threads": threads,
        "load_avg": os.getloadavg()[0],
    }
    row.update({f"{name} ms": 1000 * v for name, v in med.items()})
    row["speedup"] = med[names[0]] / med[names[1]]
    print(json.dumps(row), flush=True)
    return row


def steps(args: argparse.Namespace) -> None:
    sizes = [int(s) for s in args.sizes.split(",")]
    rows = []
    if "torch" in args.frameworks:
        rows += _torch_steps(sizes, args.reps, args.active_outputs)
    if "tensorflow" in args.frameworks:
        rows += _keras_steps(
            [s for s in sizes if s <= args.keras_max], args.reps, args.active_outputs
        )
    command = "python benchmarks/bench_adapters.py " + " ".join(sys.argv[1:])
    lines = [
        "## Per-step time: hashed output layer vs dense layer with full softmax",
        "",
        f"`{command}` — hidden 128, batch 128, {args.active_outputs} active outputs per input "
        f"(labels forced in), SRP l=20 with k = max(6, ceil(log2(outputs/128))), {args.reps} interleaved "
        f"repetitions after 2 warm-ups, medians; one process, date {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
        "",
        "| framework | outputs | dense step (ms) | hashed step (ms) | dense / hashed | threads | load avg |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ms = [v for key, v in r.items() if key.endswith(" ms")]
        lines.append(
            f"| {r['framework']} | {r['outputs']:,} | {ms[0]:.1f} | {ms[1]:.1f} | {r['speedup']:.2f}x | {r['threads']} | {r['load_avg']:.1f} |"
        )
    _write("adapters", rows, lines)


def _write(stem: str, rows: list[dict], lines: list[str]) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{stem}.json").write_text(json.dumps(rows, indent=1) + "\n")
    (RESULTS / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    global THREADS
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    for name in ("mnist", "_mnist_worker"):
        p = sub.add_parser(name)
        p.add_argument("--frameworks", default="torch,tensorflow,mxnet")
        p.add_argument("--framework", default="torch")
        p.add_argument("--train", type=int, default=20000)
        p.add_argument("--epochs", type=int, default=2)
        p.add_argument("--hidden", type=int, default=1000)
        p.add_argument("--active", type=float, default=0.05)
        p.add_argument("--k", type=int, default=6)
        p.add_argument("--l", type=int, default=50)
        p.add_argument("--policies", default="topk,exact")
        p.add_argument("--transform", default="simple_lsh", help="MIPS transform, or none")
        p.add_argument("--threads", type=int, default=THREADS)
        p.add_argument("--tag", default="", help="suffix of the result files")
        p.add_argument("--family", default="srp", help="hash family (srp, sparse_srp, ...)")
        p.add_argument("--rerank", type=float, default=4.0, help="candidates of rerank, in m")
        p.add_argument(
            "--param", action="append", default=[], help="key=value for ActiveSelector (repeat)"
        )
    p = sub.add_parser("steps")
    p.add_argument("--frameworks", default="torch,tensorflow")
    p.add_argument("--sizes", default="10000,100000,500000")
    p.add_argument("--keras-max", type=int, default=500000)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--active-outputs", type=int, default=256)
    p.add_argument("--threads", type=int, default=THREADS)
    args = parser.parse_args()
    THREADS = args.threads
    os.environ.update(_env())
    {"mnist": mnist, "_mnist_worker": mnist_worker, "steps": steps}[args.cmd](args)


if __name__ == "__main__":
    main()
