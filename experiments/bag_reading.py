"""Can the feature network learn to read digits from the canvas's label alone, when the attention is perfect?
Train it on bags of P patches per Megapixel MNIST canvas: a 50 x 50 crop around each of its five digits (at a
random offset) and P - 5 crops at random places, labelled only with the canvas's class, through one of two
classifier heads, and print the accuracy on single digit crops and on bags of held-out canvases every 250 steps and
after the last.

    python -m experiments.bag_reading DATA [--head class|paper] [--hidden 16] [--patches 10] [--steps 2000]

--head class is the project's model: f_i = L2-normalise(dense to C), o = softmax(T x mean_i f_i).
--head paper is the paper's Megapixel MNIST network (idiap/attention-sampling, scripts/mnist.py): f_i =
L2-normalise(the max-pooled channels), o = softmax(dense(mean_i f_i)), the classifier after the mean.

It removes the attention from what experiments.digit_patches measures with --run: how fast reading a digit is
learnt through the canvas's label, and whether the head is what slows it.
"""
import argparse
import json
import os

import imageio.v3 as iio
import numpy as np

import nn
from attention_sampling.application.data import stratified_split
from attention_sampling.models import FeatureNetwork
from experiments.digit_patches import digit_crop


def load(root, names, boxes):
    """-> (N, H, W) uint8 canvases and their digit boxes [(top, left, h, w, digit), ...] per canvas, from
    objects.json's `boxes`."""
    canvases = []
    for name in names:
        image = iio.imread(os.path.join(root, name))
        canvases.append(image if image.ndim == 2 else image[..., 0])
    return np.stack(canvases), [[tuple(box[:5]) for box in boxes[name]] for name in names]


def bag(canvas, boxes, patches, size, rng):
    """-> (patches, size, size) crops: one around each digit, the rest at random places."""
    crops = [digit_crop(canvas, box, size, rng) for box in boxes]
    for _ in range(patches - len(crops)):
        t, l = rng.integers(0, canvas.shape[0] - size + 1), rng.integers(0, canvas.shape[1] - size + 1)
        crops.append(canvas[t:t + size, l:l + size])
    return np.stack(crops)


def as_input(crops):
    """(..., S, S) uint8 -> (..., S, S, 3) float32 in [0, 1], the model's input."""
    return np.repeat((crops.astype(np.float32) / 255)[..., None], 3, -1)


class Head:
    """The feature network and the classifier after the P features of a bag, for one --head."""

    def __init__(self, kind, hidden, temperature, rng):
        self.kind, self.temperature = kind, temperature
        self.features = FeatureNetwork(10, hidden=hidden, rng=rng)
        self.parts = {"features": self.features}
        if kind == "paper":  # the max-pooled channels, L2-normalised; the dense layer comes after the mean
            self.features.layers = self.features.layers[:-2] + [nn.L2Normalize()]
            self.classifier = self.parts["classifier"] = nn.Dense(hidden, 10, rng=rng)

    def logits(self, bags, training):
        """(B, P, S, S, 3) -> (B, 10)."""
        b, p = bags.shape[:2]
        flat = bags.reshape(b * p, *bags.shape[2:])
        f = (self.features.forward(flat, True) if training else self.features.infer(flat)).reshape(b, p, -1)
        if self.kind == "class":
            return self.temperature * f.mean(axis=1)
        return self.classifier.forward(f.mean(axis=1), training)

    def backward(self, grad_logits, p):
        """(B, 10) dL/dlogits of the last logits(training=True), P patches a bag -> fills the gradients."""
        if self.kind == "class":
            grad_mean = self.temperature * grad_logits
        else:
            grad_mean = self.classifier.backward(grad_logits)
        grad = np.repeat(grad_mean[:, None, :] / p, p, axis=1)
        self.features.backward(grad.reshape(-1, grad.shape[-1]).astype(np.float32))

    def _merged(self, attribute):
        return {f"{name}.{key}": value for name, part in self.parts.items()
                for key, value in getattr(part, attribute).items()}

    params = property(lambda self: self._merged("params"))
    grads = property(lambda self: self._merged("grads"))

    def zero_grads(self):
        for part in self.parts.values():
            part.zero_grads()


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m experiments.bag_reading", description=__doc__.split("\n\n")[0])
    parser.add_argument("data", help="a Megapixel MNIST folder (with objects.json)")
    parser.add_argument("--head", choices=("class", "paper"), default="class")
    parser.add_argument("--hidden", type=int, default=16)
    parser.add_argument("--temperature", type=float, default=3.0, help="T of --head class")
    parser.add_argument("--patches", type=int, default=10)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--size", type=int, default=50)
    parser.add_argument("--test-fraction", type=float, default=0.1)
    parser.add_argument("--val-fraction", type=float, default=0.1)
    args = parser.parse_args(argv)
    with open(os.path.join(args.data, "objects.json")) as handle:
        boxes = json.load(handle)["objects"]
    names = sorted(boxes)
    labels = np.array([int(name.split("/")[0]) for name in names])
    split = stratified_split(labels, args.test_fraction, 0, args.val_fraction)
    train, train_boxes = load(args.data, [names[i] for i in split.train], boxes)
    test, test_boxes = load(args.data, [names[i] for i in split.test], boxes)
    train_y, test_y = labels[split.train], labels[split.test]
    rng = np.random.default_rng(0)
    test_bags = np.stack([bag(c, b, args.patches, args.size, rng) for c, b in zip(test, test_boxes)])
    test_digits = np.stack([digit_crop(c, box, args.size, rng) for c, b in zip(test, test_boxes) for box in b])
    digit_y = np.array([box[4] for b in test_boxes for box in b])
    head = Head(args.head, args.hidden, args.temperature, np.random.default_rng(0))
    optimizer, loss_fn = nn.Adam(args.lr), nn.CrossEntropyLoss()
    print(f"{len(train)} training canvases, {len(test)} test canvases, head {args.head}, {args.hidden} channels, "
          f"{args.patches} patches a bag", flush=True)
    for step in range(1, args.steps + 1):
        batch = rng.integers(0, len(train), args.batch)
        bags = as_input(np.stack([bag(train[i], train_boxes[i], args.patches, args.size, rng) for i in batch]))
        loss = loss_fn.forward(head.logits(bags, True), train_y[batch])
        head.zero_grads()
        head.backward(loss_fn.backward(), args.patches)
        optimizer.step(head.params, head.grads)
        if step % 250 == 0 or step == args.steps:
            bag_hits = np.concatenate([head.logits(as_input(test_bags[i:i + 32]), False).argmax(1) == test_y[i:i + 32]
                                       for i in range(0, len(test_bags), 32)])
            digit_hits = np.concatenate([head.logits(as_input(test_digits[i:i + 256, None]), False).argmax(1)
                                         == digit_y[i:i + 256] for i in range(0, len(test_digits), 256)])
            print(f"step {step}  loss {loss:.3f}  test bags {bag_hits.mean():.3f}  test digits {digit_hits.mean():.3f}",
                  flush=True)


if __name__ == "__main__":
    main()
