"""Omniglot experiments on the validation alphabets (issue 12): train once, save the
embedder, then try evaluation-time levers on the held-out (validation) alphabets only.

    # train with the command's defaults (or key=value overrides), save the best embedder
    .venv/bin/python benchmarks/omniglot_levers.py train --out /tmp/omni3/base threads=1
    # evaluate saved embedders on the validation alphabets (never the official runs)
    .venv/bin/python benchmarks/omniglot_levers.py eval /tmp/omni3/base

The state dict is saved with ``torch.save`` (an experiment file, not a library format).
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import sys
import time
from pathlib import Path

import numpy as np


def _overrides(pairs: list[str]) -> dict:
    out = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        try:
            out[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[key] = value
    return out


def cmd_train(args: argparse.Namespace) -> None:
    import torch

    from lshcore.memory import omniglot as og

    cfg = og.OmniglotConfig(**{"progress": False, **_overrides(args.set)})
    og.configure_threads(cfg.threads or 1)
    bg = og.load_background(args.data_dir)
    if args.all_alphabets:
        train_chars, held_chars = np.arange(len(bg.chars)), None
    else:  # the validation protocol: Greek and Korean held out unless heldout= says otherwise
        train_chars, held_chars = og.split_alphabets(bg, cfg.heldout or 2, seed=0)
    load = [round(x, 2) for x in os.getloadavg()]
    t0 = time.perf_counter()
    res = og.fit(cfg, bg, train_chars, held_chars, log=sys.stderr)
    wall = time.perf_counter() - t0
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(res.net.state_dict(), str(out) + ".pt")
    meta = {"settings": {k: v for k, v in vars(cfg).items() if k != "ways" and k != "shots"},
            "history": res.history, "best_step": res.best_step, "steps": res.steps,
            "stopped": res.stopped, "train_seconds": round(wall, 1), "load_before": load,
            "load_after": [round(x, 2) for x in os.getloadavg()],
            "all_alphabets": args.all_alphabets}  # fmt: skip
    Path(str(out) + ".json").write_text(json.dumps(meta, indent=1, default=str) + "\n")
    print(json.dumps({k: meta[k] for k in ("best_step", "steps", "stopped", "train_seconds")}))


def within_alphabet_20way(emb, bg, chars, episodes, seed):
    """20-way 1-shot with all 20 classes from one alphabet (as the official runs),
    exact cosine nearest neighbour; alphabets with fewer than 20 characters skipped."""
    rng = np.random.default_rng(seed)
    e = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    by_alpha = {}
    for c in chars:
        by_alpha.setdefault(int(bg.alphabet[c]), []).append(int(c))
    alphas = [a for a, cs in by_alpha.items() if len(cs) >= 20]
    by_char = {int(c): np.flatnonzero(bg.char == c) for c in chars}
    hits = 0
    for _ in range(episodes):
        cs = rng.choice(by_alpha[alphas[rng.integers(len(alphas))]], 20, replace=False)
        draws = np.stack([rng.choice(by_char[int(c)], 2, replace=False) for c in cs])
        sim = e[draws[:, 1]] @ e[draws[:, 0]].T
        hits += int(np.sum(sim.argmax(1) == np.arange(20)))
    return hits / (episodes * 20)


def cmd_eval(args: argparse.Namespace) -> None:
    import torch

    from lshcore.memory import omniglot as og

    og.configure_threads(1)
    bg = og.load_background(args.data_dir)
    _, held = og.split_alphabets(bg, 2, seed=0)
    rows = np.flatnonzero(np.isin(bg.char, held))
    results = []
    for prefix in args.models:
        meta = json.loads(Path(prefix + ".json").read_text())
        s = meta["settings"]
        net = og.Embedder(s["key_dim"], s["width"], s["blocks"])
        net.load_state_dict(torch.load(prefix + ".pt"))
        net.eval()
        for variant in args.variants:
            # "plain": no test-time augmentation (the library's default is on)
            kw = {
                "tta_shift": 0.0,
                **(_overrides(variant.split(",")) if variant != "plain" else {}),
            }
            cfg = og.OmniglotConfig(progress=False, eval_episodes=args.episodes, **kw)
            t0 = time.perf_counter()
            emb = np.zeros((bg.images.shape[0], cfg.key_dim), np.float32)
            emb[rows] = og.embed_images(net, bg.images[rows], cfg)
            t_emb = time.perf_counter() - t0
            rec = {"model": prefix, "variant": variant, "index": args.index,
                   "embed_s": round(t_emb, 2)}  # fmt: skip
            for way in (5, 20):
                for shot in (1, 5):
                    rec[f"{way}w{shot}s"] = og.evaluate_episodes(
                        cfg, emb, bg.char, held, way, shot, seed=101, index=args.index
                    )
            rec["nn20"] = og.nn_accuracy(emb, bg.char, held, 20, args.episodes, seed=202)
            rec["within20"] = within_alphabet_20way(emb, bg, held, args.episodes, seed=303)
            results.append(rec)
            print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v)
                              for k, v in rec.items()}), flush=True)  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--data-dir",
        default=os.path.join(os.environ.get("LSHCORE_DATA", "../shared/data"), "omniglot"),
    )
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train")
    t.add_argument("--out", required=True, help="path prefix of .pt/.json")
    t.add_argument("--all-alphabets", action="store_true", help="train on all 8, no validation")
    t.add_argument("set", nargs="*", help="OmniglotConfig key=value overrides")
    e = sub.add_parser("eval")
    e.add_argument("models", nargs="+", help="path prefixes written by train")
    e.add_argument("--variant", dest="variants", action="append", default=None,
                   help="OmniglotConfig overrides 'k=v,k=v' for evaluation ('plain': none)")  # fmt: skip
    e.add_argument("--episodes", type=int, default=1000)
    e.add_argument("--index", choices=("exact", "lsh"), default="exact")
    e.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    if args.cmd == "eval" and not args.variants:
        args.variants = ["plain"]
    {"train": cmd_train, "eval": cmd_eval}[args.cmd](args)


if __name__ == "__main__":
    main()
