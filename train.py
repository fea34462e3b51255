"""Train an attention-sampling classifier on a folder of mega-pixel images.

    python train.py --patches 20 --size 50                # the embedded generated data set
    python train.py --data ROOT --out runs/lymphoma       # ROOT/<class>/<images>
    python train.py --resume runs/lymphoma                # continue where it stopped
"""
import argparse
import os
import sys

from attention_sampling.data import ImageFolder
from attention_sampling.embedded import ensure_default_dataset
from attention_sampling.errors import AttentionSamplingError

PAPER_EPOCHS = 300
# The embedded data set is learnt long before 300 epochs; this keeps the default run near 15 minutes.
EMBEDDED_EPOCHS = 30


def positive_int(text):
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def positive_float(text):
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def non_negative_float(text):
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def fraction(text):
    value = float(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be strictly between 0 and 1, got {text}")
    return value


# Flags whose value is stored with the run. They default to None on the command line so that a resumed
# run can tell a typed value (compared with the saved one) from a default (taken from the run).
DEFAULTS = dict(patches=20, size=50, scale=4, batch_size=8, replicas=4, lr=1e-3, entropy=0.01, seed=0,
                test_fraction=0.3, estimator="reinforce", sampling="with")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description="Train attention sampling: an attention net picks where to look in the down-scaled image, "
                    "a feature net classifies full-resolution patches from there.",
        formatter_class=lambda prog: argparse.HelpFormatter(prog, max_help_position=28, width=110))
    add = parser.add_argument
    add("--data", metavar="ROOT", help="image folder ROOT/<class>/<images> (default: the embedded data set)")
    add("--out", metavar="RUN", help="run folder (default runs/S<size>-P<patches>-seed<seed>)")
    add("--patches", type=positive_int, metavar="P", help="patches P sampled per image (default 20)")
    add("--size", type=positive_int, metavar="S", help="patch side S in full-resolution pixels (default 50)")
    add("--scale", type=positive_int, metavar="C", help="down-scaling factor c of the attention view (default 4)")
    add("--epochs", type=positive_int, metavar="N",
        help=f"epochs (default {PAPER_EPOCHS} as the paper, {EMBEDDED_EPOCHS} on the embedded data)")
    add("--batch-size", type=positive_int, metavar="N", help="images per training step (default 8)")
    add("--replicas", type=positive_int, metavar="R", help="fresh samples of each image per step (default 4)")
    add("--lr", type=positive_float, metavar="LR", help="Adam learning rate (default 1e-3)")
    add("--entropy", type=non_negative_float, metavar="LAMBDA", help="weight lambda of the attention-entropy bonus (default 0.01)")
    add("--seed", type=int, metavar="N", help="seed of the split, the model and the sampling (default 0)")
    add("--test-fraction", type=fraction, metavar="F", help="share of each class held out for testing (default 0.3)")
    add("--estimator", choices=("reinforce", "expectation"),
        help="attention gradient: reinforce (the paper, default) or expectation (unbiased, no reward)")
    add("--sampling", choices=("with", "without"), help="draw patches with (default) or without replacement")
    add("--resume", metavar="RUN", help="continue the run in folder RUN where it stopped")
    add("--no-augment", action="store_true", help="turn off random flips, contrast and zoom")
    add("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    args.typed = {key: getattr(args, key) for key in DEFAULTS if getattr(args, key) is not None}
    if args.no_augment:
        args.typed["augment"] = False
    for key, value in DEFAULTS.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.size <= args.scale:
        parser.error(f"--size ({args.size}) must be larger than --scale ({args.scale}): "
                     "a patch must cover more than its attention cell")
    return args


def open_dataset(data, size, scale):
    """The user's image folder, or the embedded one generated on first use."""
    if data is None:
        print("using the embedded data set (generated once, about a minute the first time)", file=sys.stderr)
        data = ensure_default_dataset()
        print(f"data: {data}", file=sys.stderr)
    dataset = ImageFolder.scan(data)
    height, width = dataset.image_shape()
    if min(height, width) < size or min(height, width) < scale:
        raise AttentionSamplingError(f"{dataset.paths[0]}: image of {height}x{width} is smaller than "
                                     f"--size {size} or --scale {scale}")
    return dataset


def main(argv=None):
    args = parse_args(argv)
    from attention_sampling.trainer import Trainer, saved_config

    try:
        if args.resume:
            run_dir = args.resume
            saved = saved_config(run_dir)
            dataset = open_dataset(args.data or saved["data"], saved["size"], saved["scale"])
            # Only what was typed is compared with the saved run; the rest comes from it.
            config = {**args.typed, "classes": dataset.classes, "image_shape": list(dataset.image_shape())}
            if args.epochs:
                config["epochs"] = args.epochs
        else:
            dataset = open_dataset(args.data, args.size, args.scale)
            epochs = args.epochs or (PAPER_EPOCHS if args.data else EMBEDDED_EPOCHS)
            run_dir = args.out or os.path.join("runs", f"S{args.size}-P{args.patches}-seed{args.seed}")
            config = dict(data=os.path.abspath(dataset.root), classes=dataset.classes,
                          image_shape=list(dataset.image_shape()), epochs=epochs, augment=not args.no_augment,
                          **{key: getattr(args, key) for key in DEFAULTS})
        trainer = Trainer(dataset, run_dir, config, resume=bool(args.resume),
                          log=lambda line: print(line, file=sys.stderr), progress=not args.quiet)
        counts = trainer.model.parameter_counts()
        print(f"run: {run_dir}  ({len(trainer.train_indices)} train / {len(trainer.test_indices)} test images, "
              f"classes {', '.join(dataset.classes)}; parameters: attention {counts['attention']}, "
              f"features {counts['features']})", file=sys.stderr)
        try:
            history = trainer.fit()
        except KeyboardInterrupt:
            print(f"\ninterrupted: state saved in {trainer.checkpoint_path}; "
                  f"continue with: python train.py --resume {run_dir}", file=sys.stderr)
            return 130
        if history:
            last = history[-1]
            print(f"done: test accuracy {last['test_accuracy']:.3f} after {last['epoch']} epochs; "
                  f"see: python evaluate.py {run_dir}", file=sys.stderr)
        return 0
    except AttentionSamplingError as error:
        print(f"train.py: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
