"""Evaluate a trained run: accuracy, per-class precision and recall, the confusion matrix, and pictures.

    python evaluate.py runs/S50-P20-seed0                   # the held-out test images, best checkpoint
    python evaluate.py RUN --json                           # the same numbers as one JSON object
    python evaluate.py RUN --data ROOT --split all          # every image of another folder, same classes
    python evaluate.py RUN --checkpoint last --examples 4   # the last epoch; 4 pictures per class
    python evaluate.py RUN --repeats 10                     # accuracy of 10 scorings: mean, std, range

Pictures go into the run folder: curves.png (loss and accuracy per epoch) and attention/<class>_<i>.png
(where the model looked in a few images, and the patches it saw there).
"""
import csv
import json
import os
import sys

import numpy as np

from attention_sampling.application.cli import non_negative_int, OneLineParser, positive_int
from attention_sampling.application.errors import AttentionSamplingError
from attention_sampling.application.prediction import CHECKPOINT_FILES
from attention_sampling.application.settings import Training, scoring_seed



def parse_args(argv=None):
    parser = OneLineParser(
        prog="evaluate.py",
        description="Evaluate a run of train.py: accuracy, per-class precision and recall, confusion matrix; "
                    "draws curves.png and attention/<class>_<i>.png into the run folder.")
    parser.add_argument("run", metavar="RUN", help="run folder written by train.py")
    parser.add_argument("--data", metavar="ROOT", help="images in ROOT/<class>/ (default: the run's folder)")
    parser.add_argument("--split", choices=("test", "val", "train", "all"), default="test",
                        help="test: held out in training and never used to choose (default); val: the "
                             "validation images best.npz was chosen on; train; all")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    parser.add_argument("--checkpoint", choices=tuple(CHECKPOINT_FILES), default="best",
                        help="best: best.npz, the epoch chosen on validation (default); last: checkpoint.npz; "
                             "average: average.npz, the weight average of a run trained with --average-from")
    parser.add_argument("--examples", type=non_negative_int, default=2, metavar="K",
                        help="attention pictures per class (default 2; 0: none)")
    parser.add_argument("--seed", type=int, default=None, metavar="N",
                        help="seed of the patch sampling (default: as in training)")
    parser.add_argument("--repeats", type=positive_int, default=1, metavar="K",
                        help="score the split K times, with the sampling seeds N, N + 1, ..., each image classified "
                             "from one look of P patches every time, and print the accuracy's mean, std and range "
                             "over the K repeats (default 1): the accuracy of a few dozen images moves by several "
                             "points from seed to seed. The tables and pictures are those of the first repeat")
    parser.add_argument("--tissue", choices=("auto", "none"), default=None,
                        help="auto: sample each image on its tissue only, found on the attention view; none: "
                             "everywhere (default: as the run was trained; none for a run made before --tissue)")
    return parser.parse_args(argv)


def open_data(data, config):
    """The run's image folder (or --data), checked to hold the classes the run was trained on."""
    from attention_sampling.application.data import DEFAULT_MAX_PIXELS, ImageFolder

    where = f"--data {data}"
    if data is None:
        data = config["data"]
        where = f"{data} (the run's data)"
        if not os.path.isdir(data):
            raise AttentionSamplingError(f"{data}: the run's image folder is gone; point --data at its images")
    # The run's own pixel limit: an image it trained on is not refused here.
    dataset = ImageFolder.scan(data, config.get("max_pixels", DEFAULT_MAX_PIXELS))
    if dataset.classes != list(config["classes"]):
        raise AttentionSamplingError(f"{where}: classes {dataset.classes} differ from the run's "
                                     f"{list(config['classes'])}")
    if config.get("bad_images") == "skip":
        # Leave out what training left out, or the held-out split would not be the run's.
        print("checking images (the run skipped bad ones) ...", file=sys.stderr)
        run = Training.from_dict(config)
        auto = run.tissue == "auto"
        minimum = run.patches if run.sampling == "without" else 1
        dataset, _ = dataset.validate(config["size"], config["scale"], "skip", tissue_minimum=minimum if auto else 0)
    return dataset


def example_positions(labels, n_classes, per_class):
    """The first `per_class` positions of each class in `labels` -> {position: (class, i)}."""
    chosen = {}
    for label in range(n_classes):
        for i, position in enumerate(np.flatnonzero(labels == label)[:per_class]):
            chosen[int(position)] = (label, i)
    return chosen


def evaluate(args):
    """-> (result dict, what the pictures need)."""
    from attention_sampling.application.data import run_split
    from attention_sampling.application.evaluation import (attention_summary, classification_report, cross_entropy,
                                                           predict_dataset, repeated_accuracy)

    from attention_sampling.application.prediction import load_run

    config, model, epoch, checkpoint = load_run(args.run, args.checkpoint)
    tissue = args.tissue or Training.from_dict(config).tissue
    dataset = open_data(args.data, config)
    classes = list(config["classes"])
    split = run_split(dataset.labels, config)
    indices = {"test": split.test, "val": split.val, "train": split.train, "all": np.arange(len(dataset))}[args.split]
    if len(indices) == 0:
        raise AttentionSamplingError(f"--split {args.split}: no images in it")
    # The trainer scored epoch e (1-based) with seed + e - 1: the same draws reproduce metrics.csv (for a run
    # trained with this version; the view's float32 sums were ordered otherwise before, up to 1e-7).
    seed = args.seed if args.seed is not None else scoring_seed(config["seed"], max(epoch, 1))
    labels = dataset.labels[indices]
    examples = example_positions(labels, len(classes), args.examples)
    shape = tuple(config["image_shape"])
    print(f"predicting {len(indices)} images ...", file=sys.stderr)
    summaries, uniform, on_tissue = [], [], []

    def summarise(start, prediction):
        summaries.append(attention_summary(prediction.attention, prediction.cells))

    probabilities, kept = predict_dataset(model, dataset, indices, shape, config["batch_size"], seed=seed,
                                          keep=set(examples), on_batch=summarise, tissue=tissue,
                                          on_tissue=on_tissue, uniform=uniform)
    looks = {name: np.concatenate([summary[name] for summary in summaries]) for name in summaries[0]}
    predictions = probabilities.argmax(axis=1)
    # The first repeat is the scoring above; the others measure the model rather than one draw's luck.
    if args.repeats > 1:
        print(f"scoring {args.repeats - 1} more times ...", file=sys.stderr)
    accuracies = [float(np.mean(predictions == labels))] + repeated_accuracy(
        model, dataset, indices, shape, config["batch_size"], range(seed + 1, seed + args.repeats), tissue=tissue)
    report = classification_report(labels, predictions, len(classes))
    confusion = report["confusion"]
    result = {
        "run": args.run, "checkpoint": checkpoint, "epoch": epoch, "data": dataset.root, "split": args.split,
        "seed": seed, "images": int(len(indices)), "classes": classes,
        "accuracy": report["accuracy"], "loss": cross_entropy(probabilities, labels),
        "per_class": {name: {"precision": float(report["precision"][c]), "recall": float(report["recall"][c]),
                             "images": int(confusion[c].sum()), "predicted": int(confusion[:, c].sum())}
                      for c, name in enumerate(classes)},
        "confusion": confusion.tolist(),
        "repeats": {"seeds": [seed + repeat for repeat in range(args.repeats)], "accuracies": accuracies,
                    "mean": float(np.mean(accuracies)), "std": float(np.std(accuracies)),
                    "min": min(accuracies), "max": max(accuracies)},
        # How concentrated the attention is (what a single accuracy hides: a collapsed attention looks at one
        # patch P times): per image entropy, largest cell and distinct cells in a look, summarised. The uniform
        # one is per image too: under --tissue auto the attention spreads over that image's tissue cells only.
        "attention": {"entropy_median": float(np.median(looks["entropy"])),
                      "uniform_entropy": float(np.median(np.concatenate(uniform))),
                      "largest_median": float(np.median(looks["largest"])),
                      "largest_above_half": float(np.mean(looks["largest"] > 0.5)),
                      "distinct_cells_mean": float(np.mean(looks["distinct_cells"])), "patches": model.n_patches},
        "tissue": tissue,
    }
    if on_tissue:  # --tissue auto: the share of the patches on tissue (1 unless the mask fails)
        result["on_tissue"] = float(sum(share * count for share, count in on_tissue) / len(indices))
    pictures = {"dataset": dataset, "indices": indices, "examples": examples, "kept": kept, "config": config}
    return result, pictures


def attention_line(attention):
    return (f"attention per image: entropy median {attention['entropy_median']:.2f} nats (uniform "
            f"{attention['uniform_entropy']:.2f}), largest cell median {attention['largest_median']:.3f} (above 0.5 "
            f"on {attention['largest_above_half']:.0%} of images), {attention['distinct_cells_mean']:.1f} distinct "
            f"cells per look of {attention['patches']}")


def repeats_line(repeats):
    return (f"accuracy over {len(repeats['accuracies'])} repeats (seeds {repeats['seeds'][0]}-{repeats['seeds'][-1]}): "
            f"mean {repeats['mean']:.4f}, std {repeats['std']:.4f}, from {repeats['min']:.4f} to {repeats['max']:.4f}")


def format_report(result):
    """The result as the tables a person reads."""
    classes = result["classes"]
    name_width = max(len("class"), *(len(name) for name in classes))
    lines = [f"run {result['run']}: {os.path.basename(result['checkpoint'])} (epoch {result['epoch']}), "
             f"{result['split']} split, {result['images']} images, sampling seed {result['seed']}",
             f"accuracy {result['accuracy']:.4f}   loss {result['loss']:.4f}",
             *([repeats_line(result["repeats"])] if len(result["repeats"]["accuracies"]) > 1 else []),
             attention_line(result["attention"]),
             *([f"patches on tissue (--tissue auto): {result['on_tissue']:.1%}"] if "on_tissue" in result else []),
             "",
             f"{'class':<{name_width}}  precision  recall  images  predicted"]
    for name in classes:
        row = result["per_class"][name]
        lines.append(f"{name:<{name_width}}  {row['precision']:9.3f}  {row['recall']:6.3f}  "
                     f"{row['images']:6d}  {row['predicted']:9d}")
    lines += ["", "confusion matrix (rows: true class, columns: predicted class)"]
    widths = [max(len(name), 5) for name in classes]
    lines.append(" " * name_width + "".join(f"  {name:>{w}}" for name, w in zip(classes, widths)))
    for name, counts in zip(classes, result["confusion"]):
        lines.append(f"{name:<{name_width}}" + "".join(f"  {count:>{w}d}" for count, w in zip(counts, widths)))
    return "\n".join(lines)


def read_metrics(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def draw_pictures(run_dir, pictures):
    """curves.png and attention/<class>_<i>.png in the run folder -> paths written ([] without matplotlib)."""
    try:
        from attention_sampling.application import figures
    except ImportError:
        print("evaluate.py: note: matplotlib is not installed (pip install matplotlib): no pictures drawn",
              file=sys.stderr)
        return []
    from attention_sampling import is_lazy
    from attention_sampling.application.data import load_batch

    written = []
    metrics = os.path.join(run_dir, "metrics.csv")
    curves = os.path.join(run_dir, "curves.png")
    try:
        if not os.path.isfile(metrics):
            print(f"evaluate.py: note: {metrics} not found (no epoch finished): no curves drawn", file=sys.stderr)
        else:
            try:
                rows = read_metrics(metrics)
                figures.plot_curves(rows, curves)
                written.append(curves)
            except (KeyError, ValueError) as error:
                print(f"evaluate.py: note: {metrics}: unreadable ({error!r}): no curves drawn", file=sys.stderr)
        config, dataset, classes = pictures["config"], pictures["dataset"], pictures["config"]["classes"]
        if pictures["examples"]:
            os.makedirs(os.path.join(run_dir, "attention"), exist_ok=True)
        for position, (label, i) in sorted(pictures["examples"].items()):
            index = pictures["indices"][position]
            # The image exactly as the model saw it: brought to the run's size, not augmented.
            batch = load_batch(dataset, [index], tuple(config["image_shape"]))
            # A slide is drawn from its attention view, over the slide's full-resolution extent.
            image, shape = (batch.view(config["scale"])[0], batch.shape[1:3]) if is_lazy(batch) else (batch[0], None)
            path = os.path.join(run_dir, "attention", f"{classes[label]}_{i}.png")
            figures.plot_explanation(image, pictures["kept"][position], classes, label, config["scale"],
                                     config["size"], path, title=os.path.relpath(dataset.paths[index], dataset.root),
                                     border=Training.from_dict(config).border, image_shape=shape)
            written.append(path)
    except OSError as error:
        raise AttentionSamplingError(
            f"{error.filename or run_dir}: cannot write picture ({error.strerror or error})") from None
    return written


def main(argv=None):
    args = parse_args(argv)
    try:
        result, pictures = evaluate(args)
        result["pictures"] = draw_pictures(args.run, pictures)
    except AttentionSamplingError as error:
        print(f"evaluate.py: error: {error}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(format_report(result))
        if result["pictures"]:
            print(f"pictures: {', '.join(result['pictures'])}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
