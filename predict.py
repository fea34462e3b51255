"""Classify new, unlabelled images with a trained run, and show why.

    python predict.py runs/lymphoma slide.tif                     # one image: class, probabilities, entropy
    python predict.py runs/lymphoma archive/ --csv > results.csv  # every image under a folder, recursively
    python predict.py RUN IMAGES... --json --looks 16             # JSON lines; average of 16 looks
    python predict.py RUN IMAGES... --pictures explained/         # the attention picture of each image

Each image is read, brought to the run's image size (as train.py does with images of another size),
looked at by the attention network once and classified from P sampled patches. The sampling is random:
--looks K averages the class probabilities of K independent looks and reports their spread, and every
image's draws come from its own generator, seeded by --seed and the image's path, so a prediction is the
same whatever else is predicted with it. Images are read one at a time: memory does not grow with their
number. An image that cannot be read is an error row (the rest go on); if no image could be read, the
program ends with one line and exit code 2.
"""
import argparse
import csv
import hashlib
import json
import os
import sys

import numpy as np

from attention_sampling.application.cli import OneLineParser, positive_int
from attention_sampling.application.errors import AttentionSamplingError

CHECKPOINT_FILES = {"best": "best.npz", "last": "checkpoint.npz"}


def parse_args(argv=None):
    parser = OneLineParser(prog="predict.py", description=__doc__.split("\n\n")[0].strip(),
                           formatter_class=lambda prog: argparse.HelpFormatter(prog, max_help_position=28,
                                                                                width=110))
    parser.add_argument("run", metavar="RUN", help="run folder written by train.py")
    parser.add_argument("inputs", metavar="IMAGE_OR_FOLDER", nargs="+",
                        help="image files, or folders searched recursively for images")
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="one JSON object per image (JSON lines)")
    output.add_argument("--csv", action="store_true", help="CSV with a header line")
    parser.add_argument("--pictures", metavar="DIR", help="write each image's attention picture into DIR")
    parser.add_argument("--looks", type=positive_int, default=1, metavar="K",
                        help="average the class probabilities of K independent looks (default 1)")
    parser.add_argument("--checkpoint", choices=tuple(CHECKPOINT_FILES), default="best",
                        help="best: best.npz, chosen on validation (default); last: checkpoint.npz")
    parser.add_argument("--seed", type=int, default=0, metavar="N", help="seed of the patch sampling (default 0)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser.parse_args(argv)


def find_images(inputs):
    """Files as given, folders searched recursively (sorted) -> list of paths; a missing input is an error."""
    from attention_sampling.application.data import IMAGE_EXTENSIONS

    paths = []
    for item in inputs:
        if os.path.isdir(item):
            found = sorted(os.path.join(folder, name) for folder, _, names in os.walk(item) for name in names
                           if name.lower().endswith(IMAGE_EXTENSIONS))
            if not found:
                raise AttentionSamplingError(f"{item}: no images in this folder ({', '.join(IMAGE_EXTENSIONS)})")
            paths += found
        elif os.path.isfile(item):
            paths.append(item)
        else:
            raise AttentionSamplingError(f"{item}: no such file or folder")
    return paths


def image_rng(seed, path):
    """The generator of one image's draws: from --seed and the image's path alone."""
    digest = hashlib.sha256(os.path.abspath(path).encode()).digest()
    return np.random.default_rng([seed, int.from_bytes(digest[:8], "little")])


def read(path, config):
    """-> (1, H, W, 3) float32 in [0, 1] at the run's image size."""
    from attention_sampling.application.data import DEFAULT_MAX_PIXELS, read_image, resize_bilinear

    image = read_image(path, config.get("max_pixels", DEFAULT_MAX_PIXELS)).astype(np.float32)
    height, width = config["image_shape"]
    if image.shape[:2] != (height, width):
        image = resize_bilinear(image, height, width)
    return (np.clip(image, 0, 255) * np.float32(1 / 255))[None]


def entropy_of(attention):
    attention = attention[attention > 0]
    return float(-np.sum(attention * np.log(attention)))


def predict_one(model, config, path, args):
    """-> the output row of one image (an error row if it cannot be read) and what its picture needs."""
    from attention_sampling.training import predict

    try:
        images = read(path, config)
    except AttentionSamplingError as error:
        return {"path": path, "error": str(error)}, None
    prediction = predict(model, images, image_rng(args.seed, path), estimator=config.get("estimator", "reinforce"),
                         replace=config.get("sampling", "with") == "with", looks=args.looks)
    classes = config["classes"]
    probabilities = prediction.probabilities[0]
    predicted = int(np.argmax(probabilities))
    per_look = prediction.look_probabilities[0]
    row = {"path": path, "prediction": classes[predicted],
           "probabilities": {name: round(float(p), 6) for name, p in zip(classes, probabilities)},
           "attention_entropy": round(entropy_of(prediction.attention[0]), 4), "looks": args.looks,
           # How much the looks disagree: the spread of the chosen class's probability, and how many
           # looks would on their own have chosen it.
           "spread": round(float(per_look[:, predicted].std()), 6),
           "agreement": round(float(np.mean(per_look.argmax(axis=1) == predicted)), 4)}
    explanation = {name: getattr(prediction, name)[0] for name in
                   ("probabilities", "attention", "cells", "weights", "patches")}
    return row, (images[0], explanation)


def draw(picture, row, config, directory):
    from attention_sampling.application import figures

    image, explanation = picture
    name = os.path.splitext(os.path.basename(row["path"]))[0]
    digest = hashlib.sha256(os.path.abspath(row["path"]).encode()).hexdigest()[:8]
    path = os.path.join(directory, f"{name}-{digest}.png")  # the digest keeps equal names apart
    figures.plot_explanation(image, explanation, config["classes"], None, config["scale"], config["size"], path,
                             title=row["path"], border=config.get("border", "zero"))
    return path


class Writer:
    """Rows to stdout as they come: a table, JSON lines, or CSV."""

    def __init__(self, kind, classes):
        self.kind, self.classes = kind, classes
        if kind == "csv":
            self.csv = csv.writer(sys.stdout, lineterminator="\n")
            self.csv.writerow(["path", "prediction", *[f"p_{name}" for name in classes], "attention_entropy",
                               "looks", "spread", "agreement", "error"])

    def write(self, row):
        if self.kind == "json":
            print(json.dumps(row))
        elif self.kind == "csv":
            probabilities = row.get("probabilities", {})
            self.csv.writerow([row["path"], row.get("prediction", ""),
                               *[probabilities.get(name, "") for name in self.classes],
                               row.get("attention_entropy", ""), row.get("looks", ""), row.get("spread", ""),
                               row.get("agreement", ""), row.get("error", "")])
        elif "error" in row:
            print(f"{row['path']}  ERROR  {row['error']}")
        else:
            chances = "  ".join(f"{name} {p:.3f}" for name, p in row["probabilities"].items())
            looks = f"  (spread {row['spread']:.3f} over {row['looks']} looks)" if row["looks"] > 1 else ""
            print(f"{row['path']}  {row['prediction']}  [{chances}]  attention entropy "
                  f"{row['attention_entropy']:.2f}{looks}")
        sys.stdout.flush()


def run(args):
    from tqdm import tqdm

    from evaluate import load_run

    config, model, _, _ = load_run(args.run, args.checkpoint)
    paths = find_images(args.inputs)
    if args.pictures:
        try:
            os.makedirs(args.pictures, exist_ok=True)
        except OSError as error:
            raise AttentionSamplingError(f"--pictures {args.pictures}: {error.strerror or error}") from None
    writer = Writer("json" if args.json else "csv" if args.csv else "table", config["classes"])
    failed = []
    for path in tqdm(paths, unit="img", disable=args.quiet or len(paths) == 1, file=sys.stderr):
        row, picture = predict_one(model, config, path, args)
        if "error" in row:
            failed.append(row["error"])
            if len(paths) == 1:
                raise AttentionSamplingError(row["error"])
        elif args.pictures:
            draw(picture, row, config, args.pictures)
        writer.write(row)
    if failed and len(failed) == len(paths):
        raise AttentionSamplingError(f"none of the {len(paths)} images could be read (first: {failed[0]})")
    if failed:
        print(f"predict.py: warning: {len(failed)} of {len(paths)} images could not be read (error rows)",
              file=sys.stderr)
    return 0


def main(argv=None):
    args = parse_args(argv)
    try:
        return run(args)
    except AttentionSamplingError as error:
        print(f"predict.py: error: {error}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader went away (predict.py ... | head): stop quietly
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
