#!/bin/bash
# Does a learning-rate drop at the end help? A 300-epoch run of seed N (S = 15, c = 2, P = 20) continued for
# 50 epochs at a tenth of the learning rate: the numbers are those of a run made with --lr-drops 300
# --epochs 350 from the start (its first 300 epochs are the source run's).
# SOURCE: paper-table (default: ../paper-table/S15-P20-seedN, sampling with replacement) or without
# (without-seedN, sampling without replacement) or mean (mean-seedN, the features' mean, --aggregate mean).
# Resumable: run it again. Usage: drop.sh SEED [SOURCE]   (one thread, so that two seeds share the two cores)
set -e
seed=$1
case ${2:-paper-table} in
  paper-table) from=docs/results/lymphoma/paper-table/S15-P20-seed$seed
               out=docs/results/lymphoma/tuning/drop300-seed$seed ;;
  without) from=docs/results/lymphoma/tuning/without-seed$seed
           out=docs/results/lymphoma/tuning/without-drop300-seed$seed ;;
  mean) from=docs/results/lymphoma/tuning/mean-seed$seed
        out=docs/results/lymphoma/tuning/mean-drop300-seed$seed ;;
  *) echo "drop.sh: SOURCE must be paper-table, without or mean, got $2" >&2; exit 2 ;;
esac
if [ ! -f "$out/checkpoint.npz" ]; then
  mkdir -p "$out"
  cp "$from"/{checkpoint.npz,best.npz,config.json,metrics.csv} "$out/"
fi
export NUMBA_NUM_THREADS=1 OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
exec python train.py --resume "$out" --epochs 350 --lr-drops 300 --quiet
