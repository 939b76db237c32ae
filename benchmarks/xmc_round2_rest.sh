#!/usr/bin/env bash
# Second part of the 2026-12-03 round: lshcore over the wall time torch-sampled needs for 3
# epochs (6 epochs), then Delicious and Bibtex on the test split (20 epochs) with the
# new defaults, torch-dense beside them.  usage: xmc_round2_rest.sh STOREDIR OUTDIR
set -euo pipefail
d=$1
out=$2
mkdir -p "$out"
export OMP_NUM_THREADS=1 NUMBA_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1
B="python benchmarks/bench_xmc_train.py run --threads 1"
echo "[$(date -u +%T)] $(uptime)"
$B --contender lshcore --data "$d/s200k.store" --epochs 6 --out "$out/s200k_lshcore_e6.json" | tail -7
for data in delicious bibtex; do
  echo "[$(date -u +%T)] $(uptime)"
  $B --contender lshcore --data "$d/$data.store" --epochs 20 --eval-n 100000 \
    --hashed-variants 1024:1024,1024:0,64:64 --out "$out/${data}_lshcore.json" | tail -2
  echo "[$(date -u +%T)] $(uptime)"
  $B --contender torch-dense --data "$d/$data.store" --epochs 20 --eval-n 100000 \
    --out "$out/${data}_torch-dense.json" | tail -2
done
echo "[$(date -u +%T)] $(uptime)"
