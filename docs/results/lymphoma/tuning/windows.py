"""Means of a run's metrics.csv over a window of epochs, and its validation-best epoch inside the window.
Usage (from the project root): python docs/results/lymphoma/tuning/windows.py FIRST LAST RUN [RUN ...]"""
import csv
import os
import sys

import numpy as np

sys.path.insert(0, os.getcwd())
from attention_sampling.application.trainer import best_epoch  # noqa: E402

first, last = int(sys.argv[1]), int(sys.argv[2])
for run in sys.argv[3:]:
    with open(f"{run}/metrics.csv", newline="") as file:
        rows = [row for row in csv.DictReader(file) if first <= int(row["epoch"]) <= last]
    if not rows:
        print(f"{run}: no epochs in {first}-{last}")
        continue

    def mean(key):
        return np.mean([float(row[key]) for row in rows])

    # Inside the window, by the rule best.npz is kept by (accuracy, then the lower loss, then the earlier epoch).
    history = [{"epoch": int(row["epoch"]), "val_accuracy": float(row["val_accuracy"]),
                "val_loss": float(row["val_loss"])} for row in rows]
    best = next(row for row in rows if int(row["epoch"]) == best_epoch(history))
    print(f"{run}: epochs {rows[0]['epoch']}-{rows[-1]['epoch']}  train {mean('train_accuracy'):.3f}  "
          f"validation {mean('val_accuracy'):.3f}  test {mean('test_accuracy'):.3f}  entropy {mean('entropy'):.2f}  "
          f"cells per look {mean('distinct_cells'):.1f}  validation-best {float(best['val_accuracy']):.3f} at "
          f"epoch {best['epoch']} (test {float(best['test_accuracy']):.3f})")
