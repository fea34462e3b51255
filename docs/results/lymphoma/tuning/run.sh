#!/bin/bash
# Short validation runs on the lymphoma slides at the paper's field of view (S = 15, c = 2, P = 20),
# seed 0, 30 epochs, one setting changed at a time; read val_accuracy and train_accuracy in metrics.csv.
# Resumable: a run folder with a checkpoint continues where it stopped. Usage: run.sh NAME [train.py flags]
set -e
name=$1; shift
out=docs/results/lymphoma/tuning/$name
if [ -f "$out/checkpoint.npz" ]; then
  exec python train.py --resume "$out" --quiet
fi
exec python train.py --data ../shared/lymphoma --patches 20 --size 15 --scale 2 --epochs 30 --seed 0 \
  --out "$out" --quiet "$@"
