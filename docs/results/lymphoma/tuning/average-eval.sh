#!/bin/bash
# Scores the runs of average.sh: validation and test splits, 10 scorings each (the sampling seeds training
# uses for that epoch, and the next nine), at the validation-best epoch, the last (400) and the weight average
# of epochs 351-400 (scored with the seeds of epoch 400: the same looks as the last epoch).
# Writes average.csv (seed, checkpoint, epoch, split, mean, std of the 10 accuracies).  Usage: average-eval.sh
set -e
out=docs/results/lymphoma/tuning/average.csv
echo "seed,checkpoint,epoch,split,mean,std" > "$out.tmp"
for seed in 0 1 2 3 4; do
  for checkpoint in best last average; do
    for split in val test; do
      python evaluate.py docs/results/lymphoma/tuning/average-seed$seed --checkpoint $checkpoint --split $split \
          --repeats 10 --examples 0 --json 2>/dev/null | python -c "
import json, sys
r = json.load(sys.stdin)
print(f\"$seed,$checkpoint,{r['epoch']},$split,{r['repeats']['mean']:.4f},{r['repeats']['std']:.4f}\")" >> "$out.tmp"
    done
  done
done
mv "$out.tmp" "$out"
cat "$out"
