"""Means of a run's metrics.csv over a window of epochs, and its validation-best epoch inside the window.

    python -m experiments.windows FIRST LAST RUN [RUN ...]
"""
import argparse
import csv
import os

import numpy as np

from attention_sampling.application.trainer import best_epoch


def window(run, first, last):
    """-> the line of run's means over epochs first..last (inclusive), or a line saying it has none."""
    with open(os.path.join(run, "metrics.csv"), newline="") as file:
        rows = [row for row in csv.DictReader(file) if first <= int(row["epoch"]) <= last]
    if not rows:
        return f"{run}: no epochs in {first}-{last}"

    def mean(key):
        return np.mean([float(row[key]) for row in rows])

    # Inside the window, by the rule best.npz is kept by (accuracy, then the lower loss, then the earlier epoch).
    history = [{"epoch": int(row["epoch"]), "val_accuracy": float(row["val_accuracy"]),
                "val_loss": float(row["val_loss"])} for row in rows]
    best = next(row for row in rows if int(row["epoch"]) == best_epoch(history))
    return (f"{run}: epochs {rows[0]['epoch']}-{rows[-1]['epoch']}  train {mean('train_accuracy'):.3f}  "
            f"validation {mean('val_accuracy'):.3f}  test {mean('test_accuracy'):.3f}  entropy {mean('entropy'):.2f}  "
            f"cells per look {mean('distinct_cells'):.1f}  validation-best {float(best['val_accuracy']):.3f} at "
            f"epoch {best['epoch']} (test {float(best['test_accuracy']):.3f})")


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m experiments.windows", description=__doc__.split("\n\n")[0])
    parser.add_argument("first", type=int)
    parser.add_argument("last", type=int)
    parser.add_argument("runs", nargs="+", metavar="RUN")
    args = parser.parse_args(argv)
    for run in args.runs:
        print(window(run, args.first, args.last))


if __name__ == "__main__":
    main()
