"""Train an attention-sampling classifier on a folder of mega-pixel images.

    python train.py --patches 20 --size 50                # the embedded generated data set
    python train.py --data ROOT --out runs/lymphoma       # ROOT/<class>/<images>
    python train.py --resume runs/lymphoma                # continue where it stopped

A mistake in the input (a flag, a folder, an image, a checkpoint) is one line on stderr and exit code 2,
before anything is written; Ctrl-C saves the epoch in progress and exits 130. See docs/robustness.md.
"""
import argparse
import os
import sys

from attention_sampling.application.cli import OneLineParser, add_training_flags, non_negative_int
from attention_sampling.application.data import DEFAULT_CACHE_BYTES, DEFAULT_MAX_PIXELS, ImageFolder
from attention_sampling.application.embedded import ensure_default_dataset
from attention_sampling.application.errors import AttentionSamplingError
from attention_sampling.application.settings import (ENTROPY_BY_ESTIMATOR, RECIPES, TRAINING_DEFAULTS, Training,
                                                    default_tissue)

PAPER_EPOCHS = 300
# The embedded data set is learnt long before 300 epochs; this keeps the default run near 15 minutes.
EMBEDDED_EPOCHS = 20


# Flags whose value is stored with the run. They default to None on the command line so that a resumed
# run can tell a typed value (compared with the saved one) from a default (taken from the run).
DEFAULTS = dict(TRAINING_DEFAULTS, bad_images="stop", max_pixels=DEFAULT_MAX_PIXELS)
# The training flags train.py offers, in the order of --help; all default to None (above).
TRAIN_FLAGS = ("patches", "size", "scale", "epochs", "batch_size", "replicas", "lr", "lr_drops", "entropy",
               "temperature", "border", "floor", "attention_init", "attention_padding", "attention_symmetry", "feature_width", "seed",
               "test_fraction", "val_fraction", "val_repeats", "average_from", "estimator", "sampling", "aggregate", "reward",
               "contrast", "zoom", "no_augment", "tissue")
TRAIN_NOTES = {
    **{name: f"default {value}" for name, value in TRAINING_DEFAULTS.items()},
    "lr": "default 1e-3",
    "epochs": f"default {PAPER_EPOCHS} as the paper, {EMBEDDED_EPOCHS} on the embedded data",
    "lr_drops": "default: none, constant as the paper; a resumed run may add or move drops that are still ahead of it",
    "entropy": f"default {ENTROPY_BY_ESTIMATOR['reinforce']} with reinforce, {ENTROPY_BY_ESTIMATOR['expectation']} "
               "with expectation, whose signal is smaller",
    "average_from": "default 0; a resumed run may set or move it while the average has not begun",
    "tissue": "default: auto on whole-slide images, none on plain images, whose background may hold the evidence",
}


def parse_args(argv=None):
    parser = OneLineParser(
        prog="train.py",
        description="Train attention sampling: an attention net picks where to look in the down-scaled image, "
                    "a feature net classifies full-resolution patches from there.",
        formatter_class=lambda prog: argparse.HelpFormatter(prog, max_help_position=28, width=110))
    add = parser.add_argument
    add("--data", metavar="ROOT", help="image folder ROOT/<class>/<images> (default: the embedded data set)")
    add("--out", metavar="RUN", help="run folder (default runs/S<size>-P<patches>-seed<seed>)")
    add_training_flags(parser, TRAIN_FLAGS, dict.fromkeys(TRAIN_FLAGS), TRAIN_NOTES)
    add("--bad-images", choices=("stop", "skip"),
        help="an image that cannot be used (unreadable, empty, too small, too large, NaN pixels): stop before "
             "training, naming the files (default), or skip: leave them out with a warning")
    add("--max-pixels", type=non_negative_int, metavar="N",
        help=f"refuse images above N = width x height pixels before decoding them (decompression bombs; "
             f"for a whole-slide image: the pixels its attention view decodes, not its size; "
             f"default {DEFAULT_MAX_PIXELS:,}; 0: no limit)")
    add("--cache-mb", type=non_negative_int, metavar="MB", default=DEFAULT_CACHE_BYTES // 2**20,
        help=f"keep the decoded images in memory when all of them fit in MB, instead of decoding each one again "
             f"every epoch (default {DEFAULT_CACHE_BYTES // 2**20}; 0: never); the numbers do not change")
    add("--resume", metavar="RUN", help="continue the run in folder RUN where it stopped")
    add("--recipe", choices=tuple(RECIPES), default="default",
        help="a named set of defaults: localized (--estimator expectation --entropy 0.001 --sampling without "
             "--no-augment --attention-symmetry flips), for evidence "
             "in a few small objects on a flat background (docs/experiments/megapixel-mnist.md); the flags typed "
             "override it (default: default)")
    add("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.lr_drops is not None:
        args.lr_drops = sorted(set(args.lr_drops))
    args.typed = {key: getattr(args, key) for key in DEFAULTS if getattr(args, key) is not None}
    if args.no_augment:
        args.typed["augment"] = False
    if args.tissue is not None:
        args.typed["tissue"] = args.tissue
    # A recipe's values stand where no flag was typed, and are stored with the run like typed ones.
    for key, value in RECIPES[args.recipe].items():
        if key == "augment":
            if not args.no_augment and not value:
                args.no_augment = True
                args.typed["augment"] = False
        elif key not in args.typed:
            setattr(args, key, value)
            args.typed[key] = value
    for key, value in DEFAULTS.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.lr_drops = list(args.lr_drops)
    if "entropy" not in args.typed:
        args.entropy = ENTROPY_BY_ESTIMATOR[args.estimator]
    if args.estimator == "expectation" and args.typed.get("aggregate") == "attention":
        parser.error("--aggregate attention is REINFORCE's eq. 1; the expectation estimator's classifier is always "
                     "its unbiased mean of the features")
    if args.estimator == "expectation" and args.typed.get("reward") == "look":
        parser.error("--reward is REINFORCE's; the expectation estimator has no reward")
    if args.val_fraction + args.test_fraction >= 1:
        parser.error(f"--val-fraction ({args.val_fraction}) and --test-fraction ({args.test_fraction}) leave no "
                     "images to train on: together they must stay below 1")
    if args.average_from and args.epochs and args.average_from > args.epochs:
        parser.error(f"--average-from ({args.average_from}) comes after the last epoch (--epochs {args.epochs}): "
                     "no weight average would be kept")
    if args.size <= args.scale:
        parser.error(f"--size ({args.size}) must be larger than --scale ({args.scale}): "
                     "a patch must cover more than its attention cell")
    return args


def warn(message):
    print(f"train.py: warning: {message}", file=sys.stderr)


def open_dataset(data, size, scale, max_pixels=DEFAULT_MAX_PIXELS, bad_images="stop", progress=False, tissue=None,
                 tissue_minimum=1):
    """The user's image folder (or the embedded one, generated on first use), every image decoded once:
    bad images stop the run here, before anything is written, or are left out with a warning each. With
    --tissue auto (tissue None: the default for the data, settings.default_tissue) an image with fewer than
    tissue_minimum cells of tissue is a bad one."""
    if data is None:
        print("using the embedded data set (generated once, about a minute the first time)", file=sys.stderr)
        data = ensure_default_dataset()
        print(f"data: {data}", file=sys.stderr)
    dataset = ImageFolder.scan(data, max_pixels)
    if dataset.ignored:
        shown = ", ".join(dataset.ignored[:5]) + (f" and {len(dataset.ignored) - 5} more" if len(dataset.ignored) > 5
                                                  else "")
        warn(f"ignored {len(dataset.ignored)} file(s) without an image extension: {shown}")
    tissue = tissue or default_tissue(dataset.lazy)
    dataset, report = dataset.validate(size, scale, bad_images, progress=progress,
                                       tissue_minimum=tissue_minimum if tissue == "auto" else 0)
    for _, message in report.bad:
        warn(f"skipped bad image {message}")
    if report.resized:
        height, width = report.shape
        warn(f"{len(report.resized)} image(s) not of the common size {height}x{width}, resized to it: "
             f"{report.resized_line()}")
    return dataset


def tissue_minimum(patches, sampling):
    """The cells of tissue an image needs: P distinct ones when drawn without replacement, else one."""
    return patches if sampling == "without" else 1


def check_settings(config):
    """Flags that are each fine but impossible together with the data."""
    height, width = config["image_shape"]
    cells = (height // config["scale"]) * (width // config["scale"])
    if Training.from_dict(config).sampling == "without" and config["patches"] > cells:
        raise AttentionSamplingError(
            f"--patches {config['patches']}: sampling without replacement draws distinct cells, and a "
            f"{height}x{width} image at --scale {config['scale']} has only {cells}")


def image_list(dataset):
    """What a resumed run checks it sees again: the number of images and a digest of their names."""
    return {"count": len(dataset), "sha256": dataset.digest()}


def run_summary(history):
    """The two honest numbers of a run: test accuracy at the epoch chosen on validation, and at the last."""
    from attention_sampling.application.trainer import best_epoch

    last, best = history[-1], history[best_epoch(history) - 1]
    return (f"test accuracy {best['test_accuracy']:.3f} at epoch {best['epoch']} (best on validation), "
            f"{last['test_accuracy']:.3f} at the last epoch ({last['epoch']})")


def main(argv=None):
    args = parse_args(argv)
    try:
        return train(args)
    except AttentionSamplingError as error:
        print(f"train.py: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # before training started (the trainer handles Ctrl-C during training)
        print("\ninterrupted before training started: nothing to resume; run the same command again",
              file=sys.stderr)
        return 130


def train(args):
    from attention_sampling.application.memory import keep_freed_memory
    from attention_sampling.application.trainer import Trainer, saved_config

    keep_freed_memory()  # a training process: each step's arrays reuse the last step's pages (memory.py)

    if args.resume:
        run_dir = args.resume
        saved = saved_config(run_dir)
        # The data checks as the run made them, unless typed again.
        run = Training.from_dict(saved)
        dataset = open_dataset(args.data or saved["data"], saved["size"], saved["scale"],
                               args.typed.get("max_pixels", saved.get("max_pixels", DEFAULT_MAX_PIXELS)),
                               args.typed.get("bad_images", saved.get("bad_images", "stop")), not args.quiet,
                               run.tissue, tissue_minimum(run.patches, run.sampling))
        # Only what was typed is compared with the saved run; the rest comes from it.
        config = {**args.typed, "classes": dataset.classes, "image_shape": list(dataset.image_shape()),
                  "image_list": image_list(dataset)}
        if args.epochs:
            config["epochs"] = args.epochs
    else:
        dataset = open_dataset(args.data, args.size, args.scale, args.max_pixels, args.bad_images, not args.quiet,
                               args.tissue, tissue_minimum(args.patches, args.sampling))
        epochs = args.epochs or (PAPER_EPOCHS if args.data else EMBEDDED_EPOCHS)
        run_dir = args.out or os.path.join("runs", f"S{args.size}-P{args.patches}-seed{args.seed}")
        config = dict(data=os.path.abspath(dataset.root), classes=dataset.classes,
                      image_shape=list(dataset.image_shape()), image_list=image_list(dataset), epochs=epochs,
                      augment=not args.no_augment, **{key: getattr(args, key) for key in DEFAULTS},
                      tissue=args.tissue or default_tissue(dataset.lazy))
        check_settings(config)
    if dataset.keep_decoded(args.cache_mb * 2**20):
        print(f"keeping the {len(dataset)} decoded images in memory ({dataset.cache_bytes / 2**20:.0f} MB)",
              file=sys.stderr)
    trainer = Trainer(dataset, run_dir, config, resume=bool(args.resume),
                      log=lambda line: print(line, file=sys.stderr), progress=not args.quiet)
    check_settings(trainer.config)
    counts = trainer.model.parameter_counts()
    print(f"run: {run_dir}  ({len(trainer.train_indices)} train / {len(trainer.val_indices)} validation / "
          f"{len(trainer.test_indices)} test images, "
          f"classes {', '.join(dataset.classes)}; parameters: attention {counts['attention']}, "
          f"features {counts['features']})", file=sys.stderr)
    try:
        history = trainer.fit()
    except KeyboardInterrupt:
        if os.path.exists(trainer.checkpoint_path):
            print(f"\ninterrupted: state saved in {trainer.checkpoint_path}; "
                  f"continue with: python train.py --resume {run_dir}", file=sys.stderr)
        else:
            print(f"\ninterrupted before the first batch: nothing to save; continue with: "
                  f"python train.py --resume {run_dir}", file=sys.stderr)
        return 130
    if history:
        print(f"done: {run_summary(history)}; see: python evaluate.py {run_dir}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
