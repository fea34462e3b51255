#!/bin/bash
# Pilot for the expectation estimator (with its baseline) and its entropy weight: few-spots, seed 0, 20 epochs,
# P = 10, S = 50, c = 4, 2 replicas, a 15% validation split (the weight is chosen on it). Resumable.
# Usage (from the project root): run.sh ESTIMATOR ENTROPY
data=$(python -c "from attention_sampling.application.embedded import ensure_default_dataset, FEW_SPOTS; print(ensure_default_dataset(**FEW_SPOTS))")
out=docs/results/estimators/pilot/few-spots-$1-entropy$2
if [ -f "$out/checkpoint.npz" ]; then
  exec python train.py --resume "$out" --quiet >> "$out.log" 2>&1
fi
exec python train.py --data "$data" --patches 10 --size 50 --scale 4 --replicas 2 --epochs 20 --seed 0 \
  --val-fraction 0.15 --test-fraction 0.15 --estimator $1 --entropy $2 --out "$out" --quiet > "$out.log" 2>&1
