"""Where a trained run's patches sit on the digits of a Megapixel MNIST data set, and what that does to its
accuracy: on the validation canvases, one look each (seed 0), how many of the label's three digits lie whole
inside some patch, the accuracy of the looks by that count, how each patch that holds a whole digit is read,
and how far the patches and the attention's mass near a digit sit from the digit's centre.

    python -m experiments.patch_placement RUN [best|last]

The data set is the run's (config.json's "data"), with the objects.json its generator wrote.
"""
import argparse
import json
import os

import numpy as np

from attention_sampling.application.data import ImageFolder, load_batch, run_split
from attention_sampling.application.prediction import load_run
from attention_sampling.patches import patch_boxes
from attention_sampling.training import patch_features, predict

# Cells each side of a digit's centre cell over which the attention's centre of mass is taken.
WINDOW = 3


def digit_boxes(root, paths):
    """-> per image (K, 6) int64 rows (top, left, height, width, digit, counts) from ROOT/objects.json."""
    with open(os.path.join(root, "objects.json")) as handle:
        table = json.load(handle)
    fields = [table["columns"].index(name) for name in ("top", "left", "height", "width", "digit", "counts")]
    return [np.array([[row[f] for f in fields] for row in
                      table["objects"].get(os.path.relpath(path, root).replace(os.sep, "/"), [])],
                     dtype=np.int64).reshape(-1, 6) for path in paths]


def placement(model, images, labels, boxes, rng):
    """One look per image -> per image (label digits whole in a patch, others whole, hit), the reads of the
    patches holding a whole digit {True: label digits, False: others}, patch-centre and attention-centre
    offsets from the digits' centres (rows, columns)."""
    prediction = predict(model, images, rng)
    features = patch_features(model, prediction.patches, training=False)
    size, scale = model.patch_size, model.scale
    rows, reads, patch_offsets, mass_offsets = [], {True: [], False: []}, [], []
    for n, image_boxes in enumerate(boxes):
        # Where the patches were cut, shifted as extraction shifts them (border "inside").
        top_left = patch_boxes(prediction.cells[n], size, scale, images.shape[1:3], model.border)[:, :2]
        centres = top_left + size / 2
        whole = {True: 0, False: 0}
        attention = prediction.attention[n]
        for top, left, height, width, digit, counts in image_boxes:
            inside = ((top_left[:, 0] <= top) & (top + height <= top_left[:, 0] + size) &
                      (top_left[:, 1] <= left) & (left + width <= top_left[:, 1] + size))
            whole[bool(counts)] += bool(inside.any())
            reads[bool(counts)] += list(features[n, inside].argmax(-1) == digit)
            centre = np.array([top + height / 2, left + width / 2])
            near = np.all(np.abs(centres - centre) < size / 2, axis=1)
            patch_offsets += list(centres[near] - centre)
            r, c = (centre // scale).astype(int)
            r0, c0 = max(0, r - WINDOW), max(0, c - WINDOW)
            window = attention[r0:r + WINDOW + 1, c0:c + WINDOW + 1]
            if window.sum() > 0:
                grid = np.mgrid[r0:r0 + window.shape[0], c0:c0 + window.shape[1]]
                mass_offsets.append((grid * window).sum((1, 2)) / window.sum() * scale + scale / 2 - centre)
        rows.append((whole[True], whole[False], prediction.probabilities[n].argmax() == labels[n]))
    return rows, reads, patch_offsets, mass_offsets


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m experiments.patch_placement", description=__doc__.split("\n\n")[0])
    parser.add_argument("run")
    parser.add_argument("which", nargs="?", choices=("best", "last"), default="best")
    args = parser.parse_args(argv)
    config, model, epoch, _ = load_run(args.run, args.which)
    dataset = ImageFolder.scan(config["data"])
    indices = run_split(dataset.labels, config).val
    labels = np.asarray(dataset.labels)
    rng = np.random.default_rng(0)
    boxes = digit_boxes(config["data"], [dataset.paths[i] for i in indices])
    rows, reads, patch_offsets, mass_offsets = [], {True: [], False: []}, [], []
    for start in range(0, len(indices), 8):
        batch = indices[start:start + 8]
        images = load_batch(dataset, batch, tuple(config["image_shape"]), scale=model.scale)
        found = placement(model, images, labels[batch], boxes[start:start + 8], rng)
        rows += found[0]
        for key in reads:
            reads[key] += found[1][key]
        patch_offsets += found[2]
        mass_offsets += found[3]
    rows = np.array(rows, dtype=float)
    print(f"{args.run} {args.which} epoch {epoch}: {len(rows)} validation canvases, one look each, "
          f"accuracy {rows[:, 2].mean():.3f}")
    for count in range(4):
        chosen = rows[:, 0] == count
        accuracy = f"{rows[chosen, 2].mean():.3f}" if chosen.any() else "-"
        print(f"  label digits whole in a patch: {count}  {chosen.mean():.2f} of the looks, their accuracy {accuracy}")
    print(f"  other digits whole in a patch: {rows[:, 1].mean():.2f} of 2 per look")
    for key, name in ((True, "label"), (False, "other")):
        print(f"  patches holding a whole {name} digit: {len(reads[key]) / len(rows):.2f} per look, "
              f"read as it {np.mean(reads[key]) if reads[key] else float('nan'):.3f}")
    for name, offsets in (("patch centres", patch_offsets), ("attention's mass", mass_offsets)):
        offsets = np.array(offsets).reshape(-1, 2)
        print(f"  {name} near a digit, from its centre (rows, columns): median {np.median(offsets, 0).round(1)}, "
              f"median distance {np.median(np.hypot(*offsets.T)):.1f} px")


if __name__ == "__main__":
    main()
