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


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description="Train attention sampling: an attention net picks where to look in the down-scaled image, "
                    "a feature net classifies full-resolution patches from there.")
    parser.add_argument("--data", help="image folder ROOT/<class>/<images>; default: the embedded generated data set")
    parser.add_argument("--out", help="run folder for checkpoints and metrics; default runs/S<size>-P<patches>-seed<seed>")
    parser.add_argument("--patches", type=positive_int, help="patches P sampled per image (default 20)")
    parser.add_argument("--size", type=positive_int, help="patch side S in full-resolution pixels (default 50)")
    parser.add_argument("--scale", type=positive_int, help="down-scaling factor c of the attention view (default 4)")
    parser.add_argument("--epochs", type=positive_int, default=None,
                        help=f"epochs to train (default {PAPER_EPOCHS}, as the paper; {EMBEDDED_EPOCHS} on the embedded data)")
    parser.add_argument("--batch-size", type=positive_int, default=8, help="images per training step (default 8)")
    parser.add_argument("--replicas", type=positive_int, default=4, help="fresh samples of each image per step (default 4)")
    parser.add_argument("--lr", type=positive_float, default=1e-3, help="Adam learning rate (default 1e-3)")
    parser.add_argument("--entropy", type=non_negative_float, default=0.01,
                        help="weight lambda of the attention-entropy bonus (default 0.01)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the split, the model and the sampling (default 0)")
    parser.add_argument("--test-fraction", type=fraction, default=0.3, help="share of each class held out (default 0.3)")
    parser.add_argument("--resume", metavar="RUN", help="continue the run in folder RUN where it stopped")
    parser.add_argument("--no-augment", action="store_true", help="turn off flips, contrast and zoom")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    # Architecture flags keep None when not typed, so --resume can tell a request from a default.
    args.typed = {key: getattr(args, key) for key in ("patches", "size", "scale") if getattr(args, key) is not None}
    args.patches = args.patches or 20
    args.size = args.size or 50
    args.scale = args.scale or 4
    if args.size <= args.scale:
        parser.error(f"--size ({args.size}) must be larger than --scale ({args.scale}): "
                     "a patch must cover more than its attention cell")
    return args


def open_dataset(data, args):
    """The user's image folder, or the embedded one generated on first use."""
    if data is None:
        print("using the embedded data set (generated once, about a minute the first time)", file=sys.stderr)
        data = ensure_default_dataset()
        print(f"data: {data}", file=sys.stderr)
    dataset = ImageFolder.scan(data)
    height, width = dataset.image_shape()
    if min(height, width) < args.size or min(height, width) < args.scale:
        raise AttentionSamplingError(f"{dataset.paths[0]}: image of {height}x{width} is smaller than "
                                     f"--size {args.size} or --scale {args.scale}")
    return dataset


def main(argv=None):
    args = parse_args(argv)
    from attention_sampling.trainer import Trainer, saved_config

    try:
        if args.resume:
            run_dir = args.resume
            saved = saved_config(run_dir)
            dataset = open_dataset(args.data or saved["data"], args)
            # Only what was typed is compared with the saved run; the rest comes from it.
            config = {**args.typed, "classes": dataset.classes, "image_shape": list(dataset.image_shape())}
            if args.epochs:
                config["epochs"] = args.epochs
        else:
            dataset = open_dataset(args.data, args)
            epochs = args.epochs or (PAPER_EPOCHS if args.data else EMBEDDED_EPOCHS)
            run_dir = args.out or os.path.join("runs", f"S{args.size}-P{args.patches}-seed{args.seed}")
            config = dict(data=os.path.abspath(dataset.root), classes=dataset.classes,
                          image_shape=list(dataset.image_shape()), patches=args.patches, size=args.size,
                          scale=args.scale, epochs=epochs, batch_size=args.batch_size, replicas=args.replicas,
                          lr=args.lr, entropy=args.entropy, seed=args.seed, test_fraction=args.test_fraction,
                          augment=not args.no_augment)
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
