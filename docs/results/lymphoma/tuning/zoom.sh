#!/bin/bash
# Without the zoom augmentation (flips and contrast only): on these reduced slides a nucleus is 3 to 4 pixels,
# and a zoom of up to 1.2 (a bilinear resize of a crop) both blurs it and makes it look larger in training
# than at evaluation, where nothing is zoomed. Does training without it generalise better? The paper-table
# setting (S = 15, c = 2, P = 20) with --zoom 0, to compare with ../paper-table/S15-P20-seedN at equal epochs.
# Resumable: run it again (EPOCHS, default 60, may be raised on a resumed run).
# Usage: zoom.sh SEED [EPOCHS]   (one thread, so that two seeds share the two cores)
set -e
seed=$1
epochs=${2:-60}
out=docs/results/lymphoma/tuning/zoom0-seed$seed
export NUMBA_NUM_THREADS=1 OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
if [ -f "$out/checkpoint.npz" ] || [ -f "$out/config.json" ]; then
  exec python train.py --resume "$out" --epochs "$epochs" --quiet
fi
exec python train.py --data ../shared/lymphoma --patches 20 --size 15 --scale 2 --zoom 0 --epochs "$epochs" \
  --seed "$seed" --out "$out" --quiet
