#!/bin/bash
# One 300-epoch run of the paper-table setting (S = 15, c = 2, P = 20) with train.py flags changed, into
# tuning/NAME-seedSEED, to compare with ../paper-table/S15-P20-seedSEED (made with eq. 1's classifier, the
# default then: pass --aggregate attention to change only the flags given). Resumable: run it again.
# Usage: setting300.sh NAME SEED [train.py flags]   (one thread, so that two seeds share the two cores)
set -e
name=$1; seed=$2; shift 2
out=docs/results/lymphoma/tuning/$name-seed$seed
export NUMBA_NUM_THREADS=1 OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
if [ -f "$out/checkpoint.npz" ] || [ -f "$out/config.json" ]; then
  exec python train.py --resume "$out" --quiet
fi
exec python train.py --data ../shared/lymphoma --patches 20 --size 15 --scale 2 --epochs 300 \
  --seed "$seed" --out "$out" --quiet "$@"
