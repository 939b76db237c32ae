#!/bin/sh
# Hogwild vs PyTorch, the policies side by side, and the defaults on Fashion-MNIST.
set -e
export OMP_NUM_THREADS=1 NUMBA_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1
R=benchmarks/results
uptime
# 1 worker / 2 Hogwild workers / PyTorch 2 threads / PyTorch 1 thread (defaults, 20,000 images, test set)
.venv/bin/python benchmarks/bench_engine.py --test --train 20000 --epochs 1 --json $R/hogwild_torch.json \
  "one=" "hog2=workers:2" "torch2=threads:2" "torch1=threads:1"
uptime
# the policies at 5% (validation split, one epoch of 10,000): defaults vs the paper, rerank, batch_rerank
.venv/bin/python benchmarks/bench_engine.py --train 10000 --epochs 1 --json $R/policies_val.json \
  "batch_union=" "batch_rerank=policy:batch_rerank" "rerank8=policy:rerank,rerank:8" \
  "paper_topk=policy:topk,k:1,l:100,bin_size:16" "topk_auto=policy:topk" "dense="
uptime
# the defaults on a second dataset (Fashion-MNIST, 3 epochs of 60,000, test set)
.venv/bin/python benchmarks/bench_engine.py --test --dataset fashion-mnist --data-dir /usr/share/datasets/fashion-mnist \
  --train 60000 --epochs 3 --json $R/fashion_defaults.json "default=" "dense="
uptime
