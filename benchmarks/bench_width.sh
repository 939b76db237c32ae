#!/bin/sh
# Width benchmark: one hidden layer of 1,000 / 4,000 / 16,000 / 64,000 on MNIST, hashed at
# 5% and at 256 active (lshcore's defaults otherwise), its dense twin, and PyTorch's dense
# MLP (fused Adam, same lr and batch), all single-threaded, interleaved per width; seconds
# per 10,000 samples = 10,000 / samples_per_second. Reduced: one epoch of TRAIN samples,
# scored on the test set.
set -e
TRAIN=${TRAIN:-10000}
export OMP_NUM_THREADS=1 NUMBA_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1
for W in ${WIDTHS:-1000 4000 16000 64000}; do
  uptime
  .venv/bin/python benchmarks/bench_engine.py --test --train "$TRAIN" --epochs 1 \
    --json "benchmarks/results/width_$W.json" \
    "hashed5=hidden:$W" "hashed256=hidden:$W,m:256" "dense=hidden:$W" "torch1=hidden:$W,threads:1"
done
uptime
