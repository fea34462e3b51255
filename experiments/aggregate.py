"""A trained run's validation and test accuracy when its classifier weights the sampled features as the model
does (its estimator's weights), by eq. 1 (a_i / sum a) or by their plain mean (1 / P), or counts the patches'
own votes (argmax of each f_i, the most frequent class), over the same draws (4 looks of P patches per image,
drawn as the model samples, seed 123); and the accuracy of each patch alone.

    python -m experiments.aggregate RUN [best|last]

Why the votes: on Megapixel MNIST the label is the class three of the five digits share, a majority, and a
classifier whose weights follow a peaked attention reads its one heaviest digit.
"""
import argparse

import numpy as np

import nn
from attention_sampling import training
from attention_sampling.application.data import ImageFolder, load_batch, run_split
from attention_sampling.application.prediction import load_run
from attention_sampling.objective import estimator_weights, expectation_logits, expected_logits

LOOKS = 4
KEYS = ("model", "eq1", "mean", "votes", "single")


def accuracies(model, images, labels, rng):
    """(N, H, W, C) images, (N,) labels -> {"model", "eq1", "mean", "votes": (N, LOOKS) bool hits, "single":
    (N, LOOKS) share of patches whose own argmax is the label}, all from the same draws."""
    sampled = training.look(model, images, rng, LOOKS, training=False, replace=model.replace)
    n, p = len(labels), model.n_patches
    patches = sampled.patches.reshape((n * LOOKS, p) + sampled.patches.shape[2:])
    weights = sampled.weights.reshape(n * LOOKS, p)
    features = training.patch_features(model, patches, training=False)
    votes = np.zeros((n * LOOKS, features.shape[-1]))
    np.add.at(votes, (np.repeat(np.arange(n * LOOKS), p), features.argmax(-1).ravel()), 1)
    hits = {}
    for key, logits in (("model", training.look_logits(model, features, weights, model.estimator, model.replace)),
                        ("eq1", expected_logits(features, weights, model.temperature)),
                        ("mean", expectation_logits(features, estimator_weights(weights, True), model.temperature)),
                        ("votes", votes)):  # a tie goes to the lowest class
        hits[key] = logits.reshape(n, LOOKS, -1).argmax(-1) == labels[:, None]
    hits["single"] = (features.argmax(-1).reshape(n, LOOKS, p) == labels[:, None, None]).mean(-1)
    return hits


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m experiments.aggregate", description=__doc__.split("\n\n")[0])
    parser.add_argument("run")
    parser.add_argument("which", nargs="?", choices=("best", "last"), default="best")
    args = parser.parse_args(argv)
    config, model, epoch, _ = load_run(args.run, args.which)
    dataset = ImageFolder.scan(config["data"])
    split = run_split(dataset.labels, config)
    for name in ("val", "test"):
        indices, rng = getattr(split, name), np.random.default_rng(123)
        found = {key: [] for key in KEYS}
        for start in range(0, len(indices), 8):
            batch = indices[start:start + 8]
            images = load_batch(dataset, batch, tuple(config["image_shape"]), scale=model.scale)
            for key, hits in accuracies(model, images, np.asarray(dataset.labels)[batch], rng).items():
                found[key].append(hits)
        print(f"{args.run} {args.which} epoch {epoch} {name}: " + ", ".join(
            f"{key} {np.concatenate(hits).mean():.3f}" for key, hits in found.items()))


if __name__ == "__main__":
    main()
