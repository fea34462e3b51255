"""Can the feature network read one digit? Train it alone on 50 x 50 crops around the digits of a
Megapixel MNIST data set (one digit each, at a random offset), labelled with that digit, and print the
accuracy on crops from held-out canvases every 250 steps.

    python -m experiments.digit_patches DATA [--hidden 16] [--depth 4] [--temperature 3] [--steps 1000]
    python -m experiments.digit_patches DATA --run RUN [--checkpoint best]

With --run it trains nothing: it scores the feature network of a run trained on DATA through attention
sampling on the same test crops, the label's digits apart from the two others, to tell whether what such a run
lacks is reading digits or finding them.

It separates the two things attention sampling must learn on this data: reading a digit (this script) and
finding the digits (the attention). The crops come from canvases of the run split's training part and are
tested on its test part (data.run_split with seed 0 and the data set's fractions, given as flags).
"""
import argparse
import json
import os

import imageio.v3 as iio
import numpy as np

import nn
from attention_sampling.application.data import stratified_split
from attention_sampling.application.prediction import load_run
from attention_sampling.models import FeatureNetwork


def digit_crop(canvas, box, size, rng):
    """(H, W, ...) canvas, a digit's box (top, left, h, w, ...) -> (size, size, ...) crop holding the whole digit
    at a random offset."""
    top, left, h, w = box[:4]
    t = int(np.clip(top - rng.integers(0, size - h + 1), 0, canvas.shape[0] - size))
    l = int(np.clip(left - rng.integers(0, size - w + 1), 0, canvas.shape[1] - size))
    return canvas[t:t + size, l:l + size]


def crops(root, names, boxes, size, rng, label_digits=None):
    """-> (M, size, size, 3) float32 crops, one per digit box of the named canvases, and (M,) digits;
    label_digits True / False: only the digits of the canvas's class / only the others."""
    patches, digits = [], []
    for name in names:
        image = iio.imread(os.path.join(root, name))
        image = np.repeat(image[..., None], 3, -1) if image.ndim == 2 else image[..., :3]
        image = image.astype(np.float32) / 255
        for box in boxes[name]:
            digit = box[4]
            if label_digits is not None and (digit == int(name.split("/")[0])) != label_digits:
                continue
            patches.append(digit_crop(image, box, size, rng))
            digits.append(digit)
    return np.stack(patches), np.array(digits)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m experiments.digit_patches", description=__doc__.split("\n\n")[0])
    parser.add_argument("data", help="a Megapixel MNIST folder (with objects.json)")
    parser.add_argument("--hidden", type=int, default=16)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--temperature", type=float, default=3.0)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--size", type=int, default=50)
    parser.add_argument("--test-fraction", type=float, default=0.15)
    parser.add_argument("--val-fraction", type=float, default=0.15)
    parser.add_argument("--run", help="score this run's feature network instead of training one")
    parser.add_argument("--checkpoint", choices=("best", "last"), default="best")
    args = parser.parse_args(argv)
    with open(os.path.join(args.data, "objects.json")) as handle:
        boxes = json.load(handle)["objects"]
    names = sorted(boxes)
    labels = np.array([int(name.split("/")[0]) for name in names])
    split = stratified_split(labels, args.test_fraction, 0, args.val_fraction)
    rng = np.random.default_rng(0)
    if args.run:
        return score_run(args, boxes, [names[i] for i in split.test], rng)
    train_x, train_y = crops(args.data, [names[i] for i in split.train], boxes, args.size, rng)
    test_x, test_y = crops(args.data, [names[i] for i in split.test], boxes, args.size, rng)
    network = FeatureNetwork(10, hidden=args.hidden, depth=args.depth, rng=np.random.default_rng(0))
    optimizer, loss_fn = nn.Adam(1e-3), nn.CrossEntropyLoss()
    print(f"{len(train_x)} training crops, {len(test_x)} test crops")
    for step in range(1, args.steps + 1):
        batch = rng.integers(0, len(train_x), 32)
        loss = loss_fn.forward(args.temperature * network.forward(train_x[batch], True), train_y[batch])
        network.zero_grads()
        network.backward(args.temperature * loss_fn.backward())
        optimizer.step(network.params, network.grads)
        if step % 250 == 0:
            predicted = np.concatenate([network.infer(test_x[i:i + 256]).argmax(1) for i in range(0, len(test_x), 256)])
            print(f"step {step}  loss {loss:.3f}  test accuracy {np.mean(predicted == test_y):.3f}", flush=True)


def score_run(args, boxes, names, rng):
    """Print the accuracy of RUN's feature network on one crop per test digit, label digits and others apart."""
    _, model, epoch, _ = load_run(args.run, args.checkpoint)
    for label_digits, kind in ((True, "the label's digits"), (False, "the other digits")):
        x, y = crops(args.data, names, boxes, args.size, rng, label_digits)
        predicted = np.concatenate([model.features.infer(x[i:i + 256]).argmax(1) for i in range(0, len(x), 256)])
        print(f"{args.run} epoch {epoch}: {kind}, {len(x)} crops: accuracy {np.mean(predicted == y):.3f}")


if __name__ == "__main__":
    main()
