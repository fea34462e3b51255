#!/bin/bash
# Sampling without replacement (each look of 20 cells holds 20 distinct cells): does it keep the attention
# from spending its patches on copies of one cell, and does it classify better? The paper-table setting
# (S = 15, c = 2, P = 20, 300 epochs) with --sampling without, to compare with ../paper-table/S15-P20-seedN.
# Resumable: run it again. Usage: without.sh SEED   (one thread, so that two seeds share the two cores)
set -e
seed=$1
out=docs/results/lymphoma/tuning/without-seed$seed
export NUMBA_NUM_THREADS=1 OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
if [ -f "$out/checkpoint.npz" ] || [ -f "$out/config.json" ]; then
  exec python train.py --resume "$out" --quiet
fi
exec python train.py --data ../shared/lymphoma --patches 20 --size 15 --scale 2 --sampling without --epochs 300 \
  --seed "$seed" --out "$out" --quiet
