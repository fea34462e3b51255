"""Experiments over many training runs, resumable row by row.

    python -m attention_sampling.application.experiments paper-table --data ROOT --out runs/paper-table
    python -m attention_sampling.application.experiments compare --out runs/compare

paper-table trains the grid of the paper, (patch size S, patches P) in (50,1) (50,5) (50,20) (20,5),
with 5 seeds each, and prints mean ± std of train and test accuracy and of training time. Each finished
run is appended to results.csv at once; a killed command resumes: finished rows are skipped and an
unfinished run continues from its own checkpoint.
"""
import argparse
import csv
import json
import os
import shutil
import subprocess
import sys

import numpy as np

from .data import ImageFolder
from .embedded import FEW_SPOTS, ensure_default_dataset
from .errors import AttentionSamplingError
from .evaluation import predict_dataset

PAPER_GRID = ((50, 1), (50, 5), (50, 20), (20, 5))
RESULT_COLUMNS = ("size", "patches", "seed", "epochs", "train_accuracy", "test_accuracy", "seconds")


def peak_rss_mb():
    """Peak resident memory of this process in MB (Linux reports ru_maxrss in KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def read_results(path):
    if not os.path.exists(path):
        return []
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def append_row(path, row, columns=RESULT_COLUMNS):
    """Append one finished run to a CSV, flushed to disk at once so a killed command loses no result."""
    new = not os.path.exists(path)
    with open(path, "a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, lineterminator="\n")
        if new:
            writer.writeheader()
        writer.writerow(row)
        handle.flush()
        os.fsync(handle.fileno())


def train_one(dataset, run_dir, config, log):
    """Train (or resume) one run to the end -> its result row."""
    from .trainer import Trainer

    resume = os.path.exists(os.path.join(run_dir, "checkpoint.npz"))
    trainer = Trainer(dataset, run_dir, config if not resume else {"epochs": config["epochs"]},
                      resume=resume, log=log, progress=False)
    history = trainer.fit()
    shape = tuple(trainer.config["image_shape"])
    train_probabilities = predict_dataset(trainer.model, dataset, trainer.train_indices, shape,
                                          config["batch_size"], seed=config["seed"], estimator=trainer.estimator,
                                          replace=trainer.replace)
    train_accuracy = float(np.mean(train_probabilities.argmax(1) == dataset.labels[trainer.train_indices]))
    return {"size": config["size"], "patches": config["patches"], "seed": config["seed"],
            "epochs": config["epochs"], "train_accuracy": round(train_accuracy, 4),
            "test_accuracy": round(history[-1]["test_accuracy"], 4),
            "seconds": round(sum(row["seconds"] for row in history), 1)}


def mean_std(rows, key, digits):
    """'mean ± std' of one column over the runs of a setting (std over seeds, 0 for one run)."""
    values = np.array([float(r[key]) for r in rows])
    return f"{values.mean():.{digits}f} ± {values.std():.{digits}f}"


def summarise(rows, grid):
    """-> table text in the paper's layout: one line per (S, P) with mean ± std over seeds."""
    lines = [f"{'S':>4} {'P':>4} {'runs':>5}  {'train accuracy':>16}  {'test accuracy':>16}  {'time (s)':>14}"]
    for size, patches in grid:
        chosen = [r for r in rows if int(r["size"]) == size and int(r["patches"]) == patches]
        if not chosen:
            continue
        lines.append(f"{size:>4} {patches:>4} {len(chosen):>5}  {mean_std(chosen, 'train_accuracy', 3):>16}  "
                     f"{mean_std(chosen, 'test_accuracy', 3):>16}  {mean_std(chosen, 'seconds', 0):>14}")
    return "\n".join(lines)


def paper_table(args):
    data = args.data or ensure_default_dataset()
    dataset = ImageFolder.scan(data)
    os.makedirs(args.out, exist_ok=True)
    results_path = os.path.join(args.out, "results.csv")
    done = {(int(r["size"]), int(r["patches"]), int(r["seed"])) for r in read_results(results_path)}
    height, width = dataset.image_shape()
    for size, patches in PAPER_GRID:
        for seed in range(args.seeds):
            if (size, patches, seed) in done:
                continue
            config = dict(data=os.path.abspath(data), classes=dataset.classes, image_shape=[height, width],
                          patches=patches, size=size, scale=args.scale, epochs=args.epochs,
                          batch_size=args.batch_size, replicas=args.replicas, lr=args.lr, entropy=args.entropy,
                          seed=seed, test_fraction=args.test_fraction, augment=not args.no_augment)
            run_dir = os.path.join(args.out, f"S{size}-P{patches}-seed{seed}")
            print(f"training S={size} P={patches} seed={seed} -> {run_dir}", file=sys.stderr)
            row = train_one(dataset, run_dir, config, log=lambda line: print("  " + line, file=sys.stderr))
            append_row(results_path, row)
    table = summarise(read_results(results_path), PAPER_GRID)
    print(table)
    with open(os.path.join(args.out, "table.txt"), "w") as handle:
        handle.write(table + "\n")


# ----------------------------------------------------------------------------------------------------
# compare: the estimators and sampling modes against two baselines, on two generated data sets.

METHODS = {
    "reinforce, with replacement": dict(estimator="reinforce", sampling="with"),
    "reinforce, without replacement": dict(estimator="reinforce", sampling="without"),
    "expectation, with replacement": dict(estimator="expectation", sampling="with"),
    "expectation, without replacement": dict(estimator="expectation", sampling="without"),
    "uniform attention (random crops)": dict(estimator="reinforce", sampling="with", attention="uniform"),
    "CNN on the downscaled image": dict(baseline="downscaled"),
}
DATASETS = {"spots": {}, "few-spots": FEW_SPOTS}
COMPARE_COLUMNS = ("dataset", "method", "seed", "train_accuracy", "test_accuracy", "seconds", "peak_mb")


def run_one(config):
    """Train one configuration in this process -> result dict (printed as JSON by `run-one`)."""
    from .baselines import UniformAttention, train_downscaled
    from .data import stratified_split
    from .trainer import Trainer

    dataset = ImageFolder.scan(config["data"])
    if config.get("baseline") == "downscaled":
        split = stratified_split(dataset.labels, config["test_fraction"], config["seed"],
                                 config.get("val_fraction", 0.0))
        return train_downscaled(dataset, split.train, split.test, config, log=lambda line: None)
    # A comparison run is short: an unfinished one starts again rather than resuming.
    shutil.rmtree(config["run_dir"], ignore_errors=True)
    trainer = Trainer(dataset, config["run_dir"], config, log=lambda line: None, progress=False)
    if config.get("attention") == "uniform":
        trainer.model.attention = UniformAttention(config["scale"])
    history = trainer.fit()
    shape = tuple(config["image_shape"])
    probabilities = predict_dataset(trainer.model, dataset, trainer.train_indices, shape, config["batch_size"],
                                    seed=config["seed"], estimator=trainer.estimator, replace=trainer.replace)
    return {"train_accuracy": float(np.mean(probabilities.argmax(1) == dataset.labels[trainer.train_indices])),
            "test_accuracy": history[-1]["test_accuracy"],
            "seconds": sum(row["seconds"] for row in history)}


def run_in_subprocess(config):
    """Run `run_one` in a fresh process, so that its peak memory is its own -> result with peak_mb."""
    command = [sys.executable, "-m", "attention_sampling.application.experiments", "run-one", json.dumps(config)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stdout, stderr = process.communicate()
    if process.returncode != 0:
        last_line = (stderr.strip().splitlines() or [f"exit code {process.returncode}"])[-1]
        raise AttentionSamplingError(f"run {config.get('run_dir')} failed: {last_line}")
    result = json.loads(stdout.strip().splitlines()[-1])
    return result


def compare(args):
    os.makedirs(args.out, exist_ok=True)
    results_path = os.path.join(args.out, "compare.csv")
    rows = read_results(results_path)
    done = {(r["dataset"], r["method"], int(r["seed"])) for r in rows}
    for dataset_name in args.datasets:
        data = ensure_default_dataset(**DATASETS[dataset_name])
        dataset = ImageFolder.scan(data)
        height, width = dataset.image_shape()
        for method, settings in METHODS.items():
            for seed in range(args.seeds):
                if (dataset_name, method, seed) in done:
                    continue
                config = dict(data=os.path.abspath(data), classes=dataset.classes, image_shape=[height, width],
                              patches=args.patches, size=args.size, scale=args.scale, epochs=args.epochs,
                              batch_size=args.batch_size, replicas=args.replicas, lr=args.lr,
                              entropy=args.entropy, seed=seed, test_fraction=0.3, augment=True,
                              downscale=args.downscale, **settings,
                              run_dir=os.path.join(args.out, dataset_name, method.split(" (")[0].replace(", ", "-")
                                                   .replace(" ", "-") + f"-seed{seed}"))
                print(f"{dataset_name}: {method}, seed {seed}", file=sys.stderr)
                result = run_in_subprocess(config)
                row = {"dataset": dataset_name, "method": method, "seed": seed,
                       "train_accuracy": round(result["train_accuracy"], 4),
                       "test_accuracy": round(result["test_accuracy"], 4),
                       "seconds": round(result["seconds"], 1), "peak_mb": round(result["peak_mb"])}
                append_row(results_path, row, COMPARE_COLUMNS)
    table = summarise_compare(read_results(results_path))
    print(table)
    with open(os.path.join(args.out, "compare.md"), "w") as handle:
        handle.write(table + "\n")


def summarise_compare(rows):
    """-> a Markdown table: mean ± std over seeds of test accuracy, training time and peak memory."""
    lines = ["| data set | method | runs | test accuracy | train accuracy | time (s) | peak memory (MB) |",
             "|---|---|---|---|---|---|---|"]
    for dataset_name in DATASETS:
        for method in METHODS:
            chosen = [r for r in rows if r["dataset"] == dataset_name and r["method"] == method]
            if not chosen:
                continue
            lines.append(f"| {dataset_name} | {method} | {len(chosen)} | {mean_std(chosen, 'test_accuracy', 3)} | "
                         f"{mean_std(chosen, 'train_accuracy', 3)} | {mean_std(chosen, 'seconds', 0)} | "
                         f"{mean_std(chosen, 'peak_mb', 0)} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m attention_sampling.application.experiments",
                                     description="Experiments over many resumable training runs.")
    commands = parser.add_subparsers(dest="command", required=True)
    table = commands.add_parser("paper-table", help="the paper's grid of patch size x patches, several seeds")
    table.add_argument("--data", help="image folder ROOT/<class>/<images> (default: the embedded data set)")
    table.add_argument("--out", default="runs/paper-table", help="folder for the runs and results.csv")
    table.add_argument("--seeds", type=int, default=5, help="random trials per setting (default 5)")
    table.add_argument("--epochs", type=int, default=300, help="epochs per run (default 300, as the paper)")
    table.add_argument("--scale", type=int, default=4, help="down-scaling factor c (default 4)")
    table.add_argument("--batch-size", type=int, default=8, help="images per step (default 8)")
    table.add_argument("--replicas", type=int, default=4, help="samples of each image per step (default 4)")
    table.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default 1e-3)")
    table.add_argument("--entropy", type=float, default=0.01, help="entropy bonus weight (default 0.01)")
    table.add_argument("--test-fraction", type=float, default=0.3, help="held-out share (default 0.3)")
    table.add_argument("--no-augment", action="store_true", help="turn off flips, contrast and zoom")
    comparison = commands.add_parser("compare", help="estimators x sampling modes against two baselines")
    comparison.add_argument("--out", default="runs/compare", help="folder for the runs and compare.csv")
    comparison.add_argument("--datasets", nargs="+", choices=tuple(DATASETS), default=list(DATASETS),
                            help="generated data sets to compare on (default: both)")
    comparison.add_argument("--seeds", type=int, default=3, help="random trials per setting (default 3)")
    comparison.add_argument("--epochs", type=int, default=15, help="epochs per run (default 15)")
    comparison.add_argument("--patches", type=int, default=10, help="patches P (default 10)")
    comparison.add_argument("--size", type=int, default=50, help="patch size S (default 50)")
    comparison.add_argument("--scale", type=int, default=4, help="down-scaling factor c (default 4)")
    comparison.add_argument("--downscale", type=int, default=8,
                            help="pooling factor of the downscaled-CNN baseline (default 8)")
    comparison.add_argument("--batch-size", type=int, default=8, help="images per step (default 8)")
    comparison.add_argument("--replicas", type=int, default=2, help="samples of each image per step (default 2)")
    comparison.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default 1e-3)")
    comparison.add_argument("--entropy", type=float, default=0.01, help="entropy bonus weight (default 0.01)")
    one = commands.add_parser("run-one", help="one run of compare, its settings as JSON (used internally)")
    one.add_argument("config", help="JSON of one run's settings")
    args = parser.parse_args(argv)
    try:
        if args.command == "paper-table":
            paper_table(args)
        elif args.command == "compare":
            compare(args)
        elif args.command == "run-one":
            result = run_one(json.loads(args.config))
            result["peak_mb"] = peak_rss_mb()
            print(json.dumps(result))
    except AttentionSamplingError as error:
        print(f"experiments: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
