"""Where a run's attention lies on the test slides: near the border or inside, spread or on one cell.
Usage (from the project root): python -m experiments.border RUN [RUN ...] (best.npz of each run;
the test split of its data, one look per slide with the sampling seed evaluate.py uses)."""
import sys

import numpy as np

from attention_sampling.application.data import run_split
from attention_sampling.application.evaluation import attention_summary, predict_dataset
from attention_sampling.application.prediction import load_run
from attention_sampling.application.settings import scoring_seed
from evaluate import open_data  # the run's images, as evaluate.py reads them

print("| run | epoch | heaviest cell in the outer ring | ... within 5 cells of the border | attention in the outer ring "
      "| ... within 5 cells | one cell above 0.5 | entropy median (nats) |")
print("|---|---|---|---|---|---|---|---|")
for run in sys.argv[1:]:
    config, model, epoch, _ = load_run(run, "best")
    dataset = open_data(None, config)
    split = run_split(dataset.labels, config)
    maps, summaries = [], []  # one (H, W) attention map per test slide; evaluate.py's numbers per batch

    def keep(start, prediction):
        maps.extend(prediction.attention)
        summaries.append(attention_summary(prediction.attention, prediction.cells))

    predict_dataset(model, dataset, split.test, tuple(config["image_shape"]), config["batch_size"],
                    seed=scoring_seed(config["seed"], epoch),
                    on_batch=keep)
    height, width = maps[0].shape
    rows, cols = np.unravel_index([a.argmax() for a in maps], (height, width))
    # Distance in cells from the heaviest cell to the nearest edge of the map (0: the outer ring).
    edge = np.minimum.reduce([rows, cols, height - 1 - rows, width - 1 - cols])

    def ring(k):
        """Share of the attention within k cells of the border, mean over slides, and that share of a uniform map."""
        inside = np.mean([a[k:height - k, k:width - k].sum() for a in maps])
        return 1 - inside, 1 - (height - 2 * k) * (width - 2 * k) / (height * width)

    (outer, outer_area), (band, band_area) = ring(1), ring(5)
    entropy = np.median(np.concatenate([summary["entropy"] for summary in summaries]))
    heavy = np.mean(np.concatenate([summary["largest"] for summary in summaries]) > 0.5)
    print(f"| {run} | {epoch} | {np.mean(edge < 1):.2f} | {np.mean(edge < 5):.2f} | {outer:.3f} (uniform {outer_area:.3f}) "
          f"| {band:.3f} (uniform {band_area:.3f}) | {heavy:.2f} | {entropy:.2f} |", flush=True)
