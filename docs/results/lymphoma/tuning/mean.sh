#!/bin/bash
# The features' mean instead of eq. 1's attention weights (--aggregate mean): with replacement, eq. 1 counts a
# cell drawn k times as k a_i, so a peaked attention classifies by its one heaviest patch; the mean counts each
# draw once. The paper-table setting (S = 15, c = 2, P = 20, 300 epochs) otherwise, to compare with
# ../paper-table/S15-P20-seedN. Resumable: run it again. Usage: mean.sh SEED   (one thread)
set -e
seed=$1
out=docs/results/lymphoma/tuning/mean-seed$seed
export NUMBA_NUM_THREADS=1 OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
if [ -f "$out/checkpoint.npz" ] || [ -f "$out/config.json" ]; then
  exec python train.py --resume "$out" --quiet
fi
exec python train.py --data ../shared/lymphoma --patches 20 --size 15 --scale 2 --aggregate mean --epochs 300 \
  --seed "$seed" --out "$out" --quiet
