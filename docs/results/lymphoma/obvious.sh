#!/bin/bash
# The obvious command, the paper's flags unchanged (--patches 20 --size 50, c = 4 by default, the current
# defaults otherwise: the features' mean), to the paper table's budget: 350 epochs, lr x 0.1 after 300.
# Into obvious-mean-S50-P20-seedSEED. Resumable: run it again. Usage: obvious.sh SEED
set -e
seed=$1
out=docs/results/lymphoma/obvious-mean-S50-P20-seed$seed
export NUMBA_NUM_THREADS=1 OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
if [ -f "$out/checkpoint.npz" ] || [ -f "$out/config.json" ]; then
  exec python train.py --resume "$out" --quiet
fi
exec python train.py --data ../shared/lymphoma --patches 20 --size 50 --epochs 350 --lr-drops 300 \
  --seed "$seed" --out "$out" --quiet
