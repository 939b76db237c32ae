#!/usr/bin/env bash
# The 200k comparison of benchmarks/results/xmc_train.md (2026-12-03, second round):
# contenders interleaved A, B, C, A, B, C on the test split, 1 thread each, load logged.
# usage: benchmarks/xmc_200k_rounds.sh STORE OUTDIR
set -euo pipefail
store=$1
out=$2
mkdir -p "$out"
export OMP_NUM_THREADS=1 NUMBA_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1
B="python benchmarks/bench_xmc_train.py run --threads 1 --data $store --epochs 3"
V="--hashed-variants 1024:1024,1:1024,1024:0,4096:0"
for rep in 1 2; do
  echo "[$(date -u +%T)] $(uptime)"
  $B --contender lshcore $V --out "$out/s200k_lshcore_r$rep.json" | tail -4
  echo "[$(date -u +%T)] $(uptime)"
  $B --contender torch-sampled --active 128 --out "$out/s200k_ts128_r$rep.json" | tail -4
  echo "[$(date -u +%T)] $(uptime)"
  $B --contender torch-sampled --active 2048 --out "$out/s200k_ts2048_r$rep.json" | tail -4
done
echo "[$(date -u +%T)] $(uptime)"
# the previous defaults (SLIDE's per-sample sets, shared labels, L=50, exact moment catch-up)
$B --contender lshcore --active-sets sample --l 50 --adam-catch-up --infer-frequent 0 \
  --out "$out/s200k_lshcore_before.json" | tail -4
echo "[$(date -u +%T)] $(uptime)"
# torch-dense: 25 steps only (its epoch is ~4 minutes), for the step time in this window
python benchmarks/bench_xmc_train.py run --threads 1 --data "$store" --epochs 1 --limit 3200 \
  --contender torch-dense --no-final --eval-n 512 --out "$out/s200k_dense_25steps.json" | tail -2
echo "[$(date -u +%T)] $(uptime)"
