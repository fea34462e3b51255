#!/bin/bash
# Stochastic weight averaging after the drop. The table's run of seed N (S = 15, c = 2, P = 20, the features'
# mean, 350 epochs, drop at 300) continued for 50 more epochs at 1e-4, averaging the weights of epochs 351-400
# (--average-from 351): checkpoint.npz is the run without averaging (epoch 400), average.npz the average.
# Resumable: run it again. Usage: average.sh SEED   (one thread: two seeds share the two cores)
set -e
seed=$1
from=docs/results/lymphoma/paper-table-mean/S15-P20-seed$seed
out=docs/results/lymphoma/tuning/average-seed$seed
if [ ! -f "$out/checkpoint.npz" ]; then
  mkdir -p "$out"
  cp -L "$from"/{checkpoint.npz,best.npz,config.json,metrics.csv} "$out/"
fi
export NUMBA_NUM_THREADS=1 OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
exec python train.py --resume "$out" --epochs 400 --average-from 351 --quiet
