#!/bin/bash
# Does a learning-rate drop at the end help, and how late? A run of seed N (S = 15, c = 2, P = 20) trained to
# DROP epochs at lr 1e-3, continued for 50 epochs at a tenth of it: the numbers are those of a run made with
# --lr-drops DROP --epochs DROP+50 from the start (its first 300 epochs are the source run's).
# SOURCE: paper-table (default: ../paper-table/S15-P20-seedN, sampling with replacement) or without
# (without-seedN, sampling without replacement) or mean (mean-seedN, the features' mean, --aggregate mean).
# DROP: 300 (default) or later; the source runs end at 300, so a later drop first trains on at 1e-3.
# Resumable: run it again. Usage: drop.sh SEED [SOURCE [DROP]]   (one thread: two seeds share the two cores)
set -e
seed=$1
drop=${3:-300}
case ${2:-paper-table} in
  paper-table) from=docs/results/lymphoma/paper-table/S15-P20-seed$seed
               out=docs/results/lymphoma/tuning/drop$drop-seed$seed ;;
  without) from=docs/results/lymphoma/tuning/without-seed$seed
           out=docs/results/lymphoma/tuning/without-drop$drop-seed$seed ;;
  mean) from=docs/results/lymphoma/tuning/mean-seed$seed
        out=docs/results/lymphoma/tuning/mean-drop$drop-seed$seed ;;
  *) echo "drop.sh: SOURCE must be paper-table, without or mean, got $2" >&2; exit 2 ;;
esac
if [ ! -f "$out/checkpoint.npz" ]; then
  mkdir -p "$out"
  cp "$from"/{checkpoint.npz,best.npz,config.json,metrics.csv} "$out/"
fi
export NUMBA_NUM_THREADS=1 OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
exec python train.py --resume "$out" --epochs $((drop + 50)) --lr-drops "$drop" --quiet
