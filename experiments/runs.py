"""Experiments over many training runs, resumable row by row.

    python -m experiments paper-table --data ROOT --out runs/paper-table
    python -m experiments compare --out runs/compare

paper-table trains the grid of the paper, (patch size S, patches P) in (50,1) (50,5) (50,20) (20,5), at
the sizes and scale given (on images reduced from the paper's, the same field of view is a smaller patch:
--sizes 15 6 --scale 2 on the 417 x 312 lymphoma slides), with several seeds, and prints mean ± std of
the test accuracy at the epoch chosen on validation and at the last epoch, and the time per run, beside
the paper's numbers. Each finished run is appended to results.csv at once; a killed command resumes:
finished rows are skipped and an unfinished run continues from its own checkpoint (more --epochs than a
finished run had: it continues to the new count). compare does the same with compare.csv; its random-crop runs
start again.
"""
import argparse
import csv
import fcntl
import json
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import fields

import numpy as np

from attention_sampling.application.cli import add_training_flags, positive_int
from attention_sampling.application.data import DEFAULT_CACHE_BYTES, ImageFolder
from attention_sampling.application.embedded import FEW_SPOTS, ensure_default_dataset
from attention_sampling.application.megapixel_mnist import SETTINGS as MNIST_SETTINGS, ensure_dataset as ensure_megapixel_mnist
from attention_sampling.application.errors import AttentionSamplingError
from attention_sampling.application.evaluation import predict_dataset
from attention_sampling.application.memory import keep_freed_memory
from attention_sampling.application.runfolder import read_config_json
from attention_sampling.application.settings import ENTROPY_BY_ESTIMATOR, LR_DROP, TRAINING_DEFAULTS, Training, resumed, scoring_seed

# The checkout holding this package: a run's subprocess imports `experiments` from there, wherever it was started.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

PAPER_GRID = ((50, 1), (50, 5), (50, 20), (20, 5))  # (S, P) in the paper's pixels
# The paper's Table (lymphoma, 5 trials, 300 epochs, full resolution) and the reference implementation's
# logged validation accuracy (one run, mean of the last 10 of 300 epochs): ../shared data README.
PAPER_TEST_ACCURACY = {(50, 1): "0.81 ± 0.02", (50, 5): "0.89 ± 0.02", (50, 20): "0.94 ± 0.01", (20, 5): "0.87 ± 0.02"}
REFERENCE_VALIDATION = {(50, 1): "0.78", (50, 5): "0.84", (50, 20): "0.91", (20, 5): "0.81"}
RESULT_COLUMNS = ("paper_size", "size", "patches", "scale", "seed", "epochs", "best_epoch", "val_accuracy",
                  "test_accuracy_best", "test_accuracy_last", "train_accuracy", "seconds", "repeats",
                  "test_repeated_best", "test_repeated_last", "lr_drops")
# Scorings of the test split per checkpoint (consecutive sampling seeds): on 56 slides one scoring of a
# P-patch model moves by several points from seed to seed, the mean of 10 by about a third as much.
TABLE_REPEATS = 10


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
    """Append one finished run to a CSV, flushed to disk at once so a killed command loses no result.
    Locked (on PATH.lock, which is never replaced), so that parallel jobs or two commands on one folder never
    interleave a row or a header. A file written with fewer columns (an older version) is first rewritten
    atomically with the new header, its rows' new cells empty."""
    with open(path + ".lock", "a") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        if os.path.exists(path):
            with open(path, newline="") as handle:
                reader = csv.DictReader(handle)
                header, old_rows = reader.fieldnames or [], list(reader)
            if header and header != list(columns):
                unknown = [name for name in header if name not in columns]
                if unknown or any(None in old for old in old_rows):
                    raise AttentionSamplingError(
                        f"{path}: columns {unknown or 'beyond the header'} are not results of this version; "
                        "give another --out")
                temporary = path + ".tmp"
                with open(temporary, "w", newline="") as rewritten:
                    writer = csv.DictWriter(rewritten, fieldnames=columns, lineterminator="\n")
                    writer.writeheader()
                    writer.writerows(old_rows)
                    rewritten.flush()
                    os.fsync(rewritten.fileno())
                os.replace(temporary, path)
        with open(path, "a", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns, lineterminator="\n")
            if handle.tell() == 0:
                writer.writeheader()
            writer.writerow(row)
            handle.flush()
            os.fsync(handle.fileno())


def train_one(config, log):
    """Train (or resume) one run of the table to config['epochs'] -> its result row (without grid names).
    Besides the one scoring per epoch training logs, the test split is scored config['repeats'] times at the
    validation-best and at the last checkpoint, from the sampling seed training used for that epoch on."""
    from attention_sampling.application.evaluation import repeated_accuracy
    from attention_sampling.application.prediction import load_run
    from attention_sampling.application.trainer import Trainer, best_epoch

    config = dict(config)
    repeats = config.pop("repeats", TABLE_REPEATS)
    dataset = ImageFolder.scan(config["data"])
    dataset.keep_decoded(DEFAULT_CACHE_BYTES)
    run_dir = config["run_dir"]
    resume = os.path.exists(os.path.join(run_dir, "checkpoint.npz"))
    # lr_drops None: a run continued keeps its own schedule, a new one has none.
    drops = config.get("lr_drops")
    if resume:
        config = {"epochs": config["epochs"], **({"lr_drops": drops} if drops is not None else {})}
    else:
        config["lr_drops"] = list(drops or ())
    trainer = Trainer(dataset, run_dir, config, resume=resume, log=log, progress=False)
    config = trainer.config
    history = trainer.fit()
    shape = tuple(trainer.config["image_shape"])
    train_probabilities = predict_dataset(trainer.model, dataset, trainer.train_indices, shape,
                                          config["batch_size"], seed=config["seed"])
    train_accuracy = float(np.mean(train_probabilities.argmax(1) == dataset.labels[trainer.train_indices]))
    best = history[best_epoch(history) - 1]
    repeated, by_epoch = {}, {}
    for which in ("best", "last"):
        stored, model, epoch, _ = load_run(run_dir, which)
        if epoch not in by_epoch:  # the best epoch may be the last: scored once
            start = scoring_seed(stored["seed"], epoch)
            by_epoch[epoch] = np.mean(repeated_accuracy(model, dataset, trainer.test_indices, shape,
                                                        config["batch_size"], range(start, start + repeats)))
        repeated[which] = by_epoch[epoch]
    return {"epochs": len(history), "best_epoch": best["epoch"], "val_accuracy": round(best["val_accuracy"], 4),
            "test_accuracy_best": round(best["test_accuracy"], 4),
            "test_accuracy_last": round(history[-1]["test_accuracy"], 4),
            "train_accuracy": round(train_accuracy, 4), "seconds": round(sum(row["seconds"] for row in history), 1),
            "repeats": repeats, "test_repeated_best": round(float(repeated["best"]), 4),
            "test_repeated_last": round(float(repeated["last"]), 4)}


def mean_std(rows, key, digits, scale=1.0):
    """'mean ± std' of one column over the runs of a setting (std over seeds, 0 for one run)."""
    values = np.array([float(r[key]) for r in rows]) * scale
    return f"{values.mean():.{digits}f} ± {values.std():.{digits}f}"


def summarise(rows, grid=PAPER_GRID):
    """-> a Markdown table in the paper's layout: one line per (S, P), number of epochs and learning-rate
    schedule, with mean ± std over seeds, beside the paper's test accuracy and the reference implementation's
    logged validation accuracy. A run continued to more epochs appends a second row to results.csv: its two
    budgets are two lines, never one mean over both."""
    lines = ["| S (paper -> used) | P | runs | epochs | test acc., validation-best epoch | test acc., last epoch "
             f"| test acc., mean of {TABLE_REPEATS} scorings: validation-best epoch | ...: last epoch "
             "| validation acc. | minutes per run | paper (test) | reference (validation) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]

    def repeated(chosen, key):
        # Runs made before the repeated scorings have none: a mean over some of the seeds would mislead.
        if any(r.get(key) in ("", None) for r in chosen) or len({str(r.get("repeats")) for r in chosen}) > 1:
            return "–"
        text = mean_std(chosen, key, 3)
        return text if str(chosen[0]["repeats"]) == str(TABLE_REPEATS) else f"{text} ({chosen[0]['repeats']} scorings)"

    for paper_size, patches in grid:
        setting = [r for r in rows if int(r["paper_size"]) == paper_size and int(r["patches"]) == patches]
        for epochs, drops in sorted({(int(r["epochs"]), r.get("lr_drops") or "") for r in setting}):
            chosen = [r for r in setting if int(r["epochs"]) == epochs and (r.get("lr_drops") or "") == drops]
            sizes = sorted({int(r["size"]) for r in chosen})
            budget = f"{epochs}, lr x {LR_DROP} after {drops.replace(' ', ', ')}" if drops else f"{epochs}"
            # Runs trained with --val-fraction 0 have no validation split: their "best" is the last epoch by
            # construction, and a column of copies (or of nan) would read as a second measurement.
            validated = all(np.isfinite(float(r["val_accuracy"])) for r in chosen)
            best = mean_std(chosen, "test_accuracy_best", 3) if validated else "–"
            repeated_best = repeated(chosen, "test_repeated_best") if validated else "–"
            validation = mean_std(chosen, "val_accuracy", 3) if validated else "none (--val-fraction 0)"
            lines.append(f"| {paper_size} -> {'/'.join(map(str, sizes))} | {patches} | {len(chosen)} | "
                         f"{budget} | {best} | "
                         f"{mean_std(chosen, 'test_accuracy_last', 3)} | {repeated_best} | "
                         f"{repeated(chosen, 'test_repeated_last')} | {validation} | "
                         f"{mean_std(chosen, 'seconds', 0, 1 / 60)} | {PAPER_TEST_ACCURACY[(paper_size, patches)]} | "
                         f"{REFERENCE_VALIDATION[(paper_size, patches)]} |")
    return "\n".join(lines)


def run_in_subprocess(command, config, threads=None, verbose=False):
    """`python -m experiments <command> CONFIG_JSON` in a fresh process -> the JSON of its last line.
    A fresh process per run: its peak memory is its own, and parallel runs do not share an interpreter."""
    environment = dict(os.environ)
    if threads:
        environment.update(NUMBA_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads),
                           OPENBLAS_NUM_THREADS=str(threads))
    process = subprocess.Popen([sys.executable, "-m", "experiments", command,
                                json.dumps(config)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=environment, cwd=ROOT)
    # The run's own lines (one per epoch) are passed on as they come; the last one names a failure.
    last_line = f"exit code {process.returncode}"
    for line in process.stderr:
        if line.strip():
            last_line = line.strip()
            if verbose:
                print(line, end="", file=sys.stderr, flush=True)
    stdout = process.stdout.read()
    process.wait()
    if process.returncode != 0:
        last_line = last_line if last_line else f"exit code {process.returncode}"
        raise AttentionSamplingError(f"run {config.get('run_dir')} failed: {last_line}")
    return json.loads(stdout.strip().splitlines()[-1])


def check_resumed_settings(config, settings):
    """A run folder that exists already is continued with its own settings: refuse, naming the folder, before
    anything trains, settings the run may not take on resuming (settings.resumed; the trainer refuses them
    too, but only once the command reaches that run). A table line must not mix, say, eq. 1 runs with the
    features' mean."""
    if not os.path.exists(os.path.join(config["run_dir"], "config.json")):
        return
    if config.get("patches") == 1:
        # One patch: eq. 1 and the features' mean are both softmax(T f_1), in value and gradient.
        settings = {key: value for key, value in settings.items() if key != "aggregate"}
    metrics = os.path.join(config["run_dir"], "metrics.csv")
    trained = len(read_results(metrics)) if os.path.exists(metrics) else 0
    try:
        resumed(read_config_json(config["run_dir"]), settings, trained)
    except AttentionSamplingError as error:
        raise AttentionSamplingError(f"{config['run_dir']}: {error}; give the run's own flags to continue it, "
                                     "or another --out") from None


def drops_text(drops):
    """A learning-rate schedule as results.csv holds it: '300' or '200 300', '' for none."""
    return " ".join(str(int(drop)) for drop in drops)


def paper_table(args):
    data = args.data or ensure_default_dataset()
    dataset = ImageFolder.scan(data)
    os.makedirs(args.out, exist_ok=True)
    results_path = os.path.join(args.out, "results.csv")
    sizes = dict(zip((50, 20), args.sizes))
    if args.lr_drops is not None:
        args.lr_drops = sorted(set(args.lr_drops))
    grid = [(size, patches) for size, patches in PAPER_GRID if f"{size},{patches}" in args.grid]
    # A run is done at this budget when results.csv has it, with the drops asked for if any were.
    done = {(int(r["paper_size"]), int(r["patches"]), int(r["seed"]), int(r["epochs"])) for r in
            read_results(results_path) if args.lr_drops is None or r.get("lr_drops") == drops_text(args.lr_drops)}
    height, width = dataset.image_shape()
    print(f"paper-table: {len(dataset)} images {height}x{width} in {data}; scale {args.scale}; sizes used for the "
          f"paper's " + ", ".join(f"S={paper} -> {used} px" for paper, used in sizes.items())
          + f"; {args.seeds} seeds x {args.epochs} epochs; {args.jobs} parallel job(s)", file=sys.stderr)
    todo = []
    for paper_size, patches in grid:
        size = sizes[paper_size]
        for seed in range(args.seeds):
            if (paper_size, patches, seed, args.epochs) in done:
                continue
            settings = {key: getattr(args, key) for key in ("batch_size", "replicas", "lr", "lr_drops", "entropy",
                                                            "temperature", "border", "floor", "attention_init",
                                                            "test_fraction", "val_fraction", "val_repeats", "contrast",
                                                            "zoom", "aggregate")}
            config = dict(TRAINING_DEFAULTS, **settings, data=os.path.abspath(data), classes=dataset.classes,
                          image_shape=[height, width], patches=patches, size=size, scale=args.scale,
                          epochs=args.epochs, seed=seed, augment=not args.no_augment,
                          repeats=args.repeats, run_dir=os.path.join(args.out, f"S{size}-P{patches}-seed{seed}"))
            # lr_drops None: a run continued keeps its own schedule.
            check_resumed_settings(config, {k: v for k, v in settings.items() if k != "lr_drops" or v is not None})
            todo.append((paper_size, config))

    def run(item):
        paper_size, config = item
        print(f"training S={config['size']} (paper {paper_size}) P={config['patches']} seed={config['seed']} "
              f"-> {config['run_dir']}", file=sys.stderr, flush=True)
        row = run_in_subprocess("table-run", config, threads=max(1, (os.cpu_count() or 1) // args.jobs),
                                verbose=True)
        row = {"paper_size": paper_size, "size": config["size"], "patches": config["patches"],
               "scale": config["scale"], "seed": config["seed"], **row,
               "lr_drops": drops_text(read_config_json(config["run_dir"]).get("lr_drops", ()))}
        append_row(results_path, row)
        print(f"  done: {json.dumps(row)}", file=sys.stderr, flush=True)

    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        for _ in pool.map(run, todo):
            pass
    # Every setting the folder holds, not only this call's --grid: a call for the other settings must not
    # drop the first ones from table.md.
    table = summarise(read_results(results_path), PAPER_GRID)
    print(table)
    with open(os.path.join(args.out, "table.md"), "w") as handle:
        handle.write(table + "\n")


# ----------------------------------------------------------------------------------------------------
# compare: the estimators and sampling modes against two baselines, on two generated data sets.

METHODS = {
    "reinforce, with replacement": dict(estimator="reinforce", sampling="with"),
    "reinforce, without replacement": dict(estimator="reinforce", sampling="without"),
    "expectation, with replacement": dict(estimator="expectation", sampling="with"),
    "expectation, without replacement": dict(estimator="expectation", sampling="without"),
    "expectation, without replacement, symmetric attention": dict(estimator="expectation", sampling="without",
                                                                   attention_symmetry="flips"),
    # The paper's Megapixel MNIST feature network has 32 channels (Training.feature_width).
    "expectation, without replacement, symmetric attention, 32 channels": dict(
        estimator="expectation", sampling="without", attention_symmetry="flips", feature_width=32),
    "uniform attention (random crops)": dict(estimator="reinforce", sampling="with", attention="uniform"),
    "CNN on the downscaled image": dict(baseline="downscaled"),
}
DATASETS = {"spots": {}, "few-spots": FEW_SPOTS}
# Data sets written for one run split (their test canvases hold no digit of the others): one per seed, the
# split's fractions fixed by the data set. -> (folder, test_fraction, val_fraction)
PER_SEED = {"megapixel-mnist": lambda seed, per_class: (
    ensure_megapixel_mnist(seed=seed, n_per_class=per_class), MNIST_SETTINGS["test_fraction"],
    MNIST_SETTINGS["val_fraction"])}
COMPARE_COLUMNS = ("dataset", "method", "estimator", "sampling", "seed", "epochs", "entropy", "train_accuracy",
                   "test_accuracy", "seconds", "peak_mb", "best_epoch")


def compare_data(name, seed, args):
    """A --datasets entry and a seed -> (name, folder, test_fraction, val_fraction): a generated set by its
    name (a PER_SEED one written for this seed's split), or an image folder by its path (named by its last
    component), split with --test-fraction and --val-fraction."""
    if name in PER_SEED:
        return (name,) + PER_SEED[name](seed, args.mnist_per_class)
    if name in DATASETS:
        return name, ensure_default_dataset(**DATASETS[name]), args.test_fraction, args.val_fraction
    if not os.path.isdir(name):
        raise SystemExit(f"compare: --datasets {name!r} is neither {' nor '.join([*DATASETS, *PER_SEED])} "
                         "nor an image folder")
    return os.path.basename(os.path.normpath(name)), name, args.test_fraction, args.val_fraction


def resumed_settings(config):
    """A compare run's config -> what a killed run of it is continued with: its training settings, which must
    be those it was started with (settings.resumed), and its length, which may grow."""
    return {field.name: config[field.name] for field in fields(Training) if field.name in config} | \
        {"epochs": config["epochs"]}


def run_one(config):
    """Train one configuration in this process -> result dict (printed as JSON by `run-one`)."""
    from experiments.baselines import UniformAttention, train_downscaled
    from attention_sampling.application.data import stratified_split
    from attention_sampling.application.trainer import Trainer, best_epoch

    dataset = ImageFolder.scan(config["data"])
    dataset.keep_decoded(DEFAULT_CACHE_BYTES)
    if config.get("baseline") == "downscaled":
        split = stratified_split(dataset.labels, config["test_fraction"], config["seed"],
                                 config.get("val_fraction", 0.0))
        return train_downscaled(dataset, split.train, split.test, config, log=lambda line: None, val_indices=split.val)
    uniform = config.get("attention") == "uniform"
    # A killed run continues from its checkpoint (compare checked its settings); random crops start again: their
    # checkpoint holds no attention network for the model to load.
    resume = not uniform and os.path.exists(os.path.join(config["run_dir"], "checkpoint.npz"))
    if not resume:
        shutil.rmtree(config["run_dir"], ignore_errors=True)
    trainer = Trainer(dataset, config["run_dir"], resumed_settings(config) if resume else config, resume=resume,
                      log=lambda line: None, progress=False)
    if uniform:
        trainer.model.attention = UniformAttention(config["scale"])
    history = trainer.fit()
    shape = tuple(config["image_shape"])
    probabilities = predict_dataset(trainer.model, dataset, trainer.train_indices, shape, config["batch_size"],
                                    seed=config["seed"])
    # With validation: the test accuracy of the epoch best.npz keeps (as train.py reports); else the last's.
    best = best_epoch(history)
    return {"train_accuracy": float(np.mean(probabilities.argmax(1) == dataset.labels[trainer.train_indices])),
            "test_accuracy": next(row for row in history if row["epoch"] == best)["test_accuracy"],
            "best_epoch": best, "seconds": sum(row["seconds"] for row in history)}


def compare(args):
    os.makedirs(args.out, exist_ok=True)
    results_path = os.path.join(args.out, "compare.csv")
    rows = read_results(results_path)
    done = {(r["dataset"], r["method"], int(r["seed"])) for r in rows}
    methods = {method: METHODS[method] for method in args.methods}
    for name in ([] if args.table_only else args.datasets):
        for method, settings in methods.items():
            # Each estimator's own entropy default (settings.ENTROPY_BY_ESTIMATOR) unless one is given.
            entropy = args.entropy if args.entropy is not None else \
                ENTROPY_BY_ESTIMATOR[settings.get("estimator", "reinforce")]
            for seed in range(args.first_seed, args.first_seed + args.seeds):
                dataset_name, data, test_fraction, val_fraction = compare_data(name, seed, args)
                if (dataset_name, method, seed) in done:
                    continue
                dataset = ImageFolder.scan(data)
                height, width = dataset.image_shape()
                # train.py's defaults for every setting not given here (a setting missing from a config is
                # rebuilt as runs made before it existed were, settings.LEGACY: zero-padded attention).
                config = dict(TRAINING_DEFAULTS, data=os.path.abspath(data), classes=dataset.classes, image_shape=[height, width],
                              patches=args.patches, size=args.size, scale=args.scale, epochs=args.epochs,
                              batch_size=args.batch_size, replicas=args.replicas, lr=args.lr,
                              entropy=entropy, seed=seed, test_fraction=test_fraction, val_fraction=val_fraction,
                              augment=not args.no_augment,
                              aggregate=args.aggregate,
                              attention_init=args.attention_init,
                              downscale=args.downscale)
                config.update(settings,
                              run_dir=os.path.join(args.out, dataset_name, method.split(" (")[0].replace(", ", "-")
                                                   .replace(" ", "-") + f"-seed{seed}"))
                if "baseline" not in settings and "attention" not in settings:
                    check_resumed_settings(config, resumed_settings(config))
                print(f"{dataset_name}: {method}, seed {seed}", file=sys.stderr)
                result = run_in_subprocess("run-one", config)
                row = {"dataset": dataset_name, "method": method, "estimator": settings.get("estimator", ""),
                       "sampling": settings.get("sampling", ""), "seed": seed, "epochs": args.epochs,
                       "entropy": entropy if "estimator" in settings else "", "train_accuracy": round(result["train_accuracy"], 4),
                       "test_accuracy": round(result["test_accuracy"], 4),
                       "seconds": round(result["seconds"], 1), "peak_mb": round(result["peak_mb"]),
                       "best_epoch": result.get("best_epoch", "")}
                append_row(results_path, row, COMPARE_COLUMNS)
    table = summarise_compare(read_results(results_path))
    print(table)
    with open(os.path.join(args.out, "compare.md"), "w") as handle:
        handle.write(table + "\n")


def summarise_compare(rows):
    """-> a Markdown table: mean ± std over seeds of test accuracy, training time and peak memory."""
    lines = ["| data set | method | runs | test accuracy | train accuracy | time (s) | peak memory (MB) |",
             "|---|---|---|---|---|---|---|"]
    for dataset_name in dict.fromkeys(r["dataset"] for r in rows):
        for method in METHODS:
            chosen = [r for r in rows if r["dataset"] == dataset_name and r["method"] == method]
            if not chosen:
                continue
            lines.append(f"| {dataset_name} | {method} | {len(chosen)} | {mean_std(chosen, 'test_accuracy', 3)} | "
                         f"{mean_std(chosen, 'train_accuracy', 3)} | {mean_std(chosen, 'seconds', 0)} | "
                         f"{mean_std(chosen, 'peak_mb', 0)} |")
    return "\n".join(lines)


def looks_table(args):
    """Accuracy, run-to-run agreement and time of predictions averaged over K looks, on a run's test split."""
    import time

    from attention_sampling.application.data import load_batch, run_split
    from attention_sampling.application.prediction import image_rng, load_run
    from attention_sampling.training import predict

    config, model, epoch, checkpoint = load_run(args.run, "best")
    dataset = ImageFolder.scan(args.data or config["data"])
    split = run_split(dataset.labels, config)
    images = load_batch(dataset, split.test, tuple(config["image_shape"]))
    labels = dataset.labels[split.test]
    predict(model, images[:1], np.random.default_rng(0))  # compiles or loads the kernels before timing
    lines = [f"| K looks | test accuracy (mean ± std over {args.repeats} repeats) | same class in every repeat | "
             "ms per image |", "|---|---|---|---|"]
    for looks in args.looks:
        choices, seconds = [], 0.0
        for repeat in range(args.repeats):
            start = time.perf_counter()
            predicted = [int(predict(model, images[i:i + 1], image_rng(repeat, dataset.paths[index]), looks=looks).probabilities.argmax())
                         for i, index in enumerate(split.test)]
            seconds += time.perf_counter() - start
            choices.append(predicted)
        choices = np.array(choices)
        accuracy = (choices == labels).mean(axis=1)
        agreement = float(np.mean(np.all(choices == choices[0], axis=0)))
        lines.append(f"| {looks} | {accuracy.mean():.3f} ± {accuracy.std():.3f} | {agreement:.3f} | "
                     f"{1e3 * seconds / (args.repeats * len(split.test)):.1f} |")
    table = "\n".join(lines)
    print(f"{checkpoint} (epoch {epoch}), {len(split.test)} test images", file=sys.stderr)
    print(table)
    if args.out:
        os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
        with open(args.out, "w") as handle:
            handle.write(f"{checkpoint} (epoch {epoch}), {len(split.test)} test images\n\n{table}\n")


# The training flags of paper-table and compare; each takes train.py's default unless given here.
TABLE_FLAGS = ("epochs", "scale", "batch_size", "replicas", "lr", "lr_drops", "entropy", "temperature", "border",
               "floor", "attention_init", "aggregate", "test_fraction", "val_fraction", "val_repeats", "contrast",
               "zoom", "no_augment")
TABLE_NOTES = {
    **{name: f"default {TRAINING_DEFAULTS[name]}, as train.py" for name in TABLE_FLAGS if name in TRAINING_DEFAULTS},
    "epochs": "default 300, as the paper",
    "lr": "default 1e-3, as train.py",
    "scale": f"default {TRAINING_DEFAULTS['scale']}; reduced lymphoma: 2",
    "lr_drops": "default: none for a new run, as train.py; a run continued keeps its own; runs continued to more "
                "--epochs may take a drop still ahead of them",
}
COMPARE_FLAGS = ("epochs", "patches", "size", "scale", "batch_size", "replicas", "lr", "aggregate", "attention_init",
                 "test_fraction", "val_fraction", "no_augment", "entropy")
# Smaller runs than train.py's, so that every method trains on both data sets in an afternoon; entropy None:
# each estimator's own (settings.ENTROPY_BY_ESTIMATOR).
COMPARE_DEFAULTS = dict(epochs=20, patches=10, size=50, scale=4, batch_size=8, replicas=2, lr=1e-3,
                        test_fraction=0.3, val_fraction=0.0, entropy=None)
COMPARE_NOTES = {
    "lr": "default 1e-3",
    "aggregate": f"default {TRAINING_DEFAULTS['aggregate']}, as train.py; the README's table: attention",
    "attention_init": f"default {TRAINING_DEFAULTS['attention_init']}, as train.py",
    "test_fraction": "default 0.3, for an image folder or a spots set",
    "val_fraction": "default 0",
    "entropy": "default: each estimator's, as train.py: " + ", ".join(f"{k} {v}" for k, v in ENTROPY_BY_ESTIMATOR.items()),
}


def build_parser():
    """-> the parser of `python -m experiments` and its subcommands."""
    parser = argparse.ArgumentParser(prog="python -m experiments",
                                     description="Experiments over many resumable training runs.")
    commands = parser.add_subparsers(dest="command", required=True)
    table = commands.add_parser(
        "paper-table", help="the paper's grid of patch size x patches, several seeds",
        description="Train the paper's grid (S, P) in (50,1) (50,5) (50,20) (20,5) and tabulate the test accuracy "
                    "at the validation-best and at the last epoch, mean ± std over seeds, beside the paper's.")
    table.add_argument("--data", help="image folder ROOT/<class>/<images> (default: the embedded data set)")
    table.add_argument("--out", default="runs/paper-table", help="folder for the runs, results.csv and table.md")
    table.add_argument("--seeds", type=int, default=5, help="random trials per setting: seeds 0..N-1 (default 5)")
    table.add_argument("--sizes", type=int, nargs=2, default=[50, 20], metavar=("S50", "S20"),
                       help="patch sizes used for the paper's S = 50 and S = 20 (default 50 20; the lymphoma "
                            "slides reduced to 417 x 312: 15 6)")
    table.add_argument("--grid", nargs="+", default=[f"{s},{p}" for s, p in PAPER_GRID],
                       choices=[f"{s},{p}" for s, p in PAPER_GRID], metavar="S,P",
                       help="which of the paper's settings to run, in the paper's sizes (default: all four)")
    table.add_argument("--jobs", type=int, default=1,
                       help="runs trained at once, each in its own process with cores / jobs threads (default 1)")
    table.add_argument("--repeats", type=positive_int, default=TABLE_REPEATS, metavar="K",
                       help=f"scorings of the test split at the validation-best and the last checkpoint, whose "
                            f"mean the table reports beside the one scoring of training's log (default "
                            f"{TABLE_REPEATS})")
    add_training_flags(table, TABLE_FLAGS, dict(epochs=300, lr_drops=None), TABLE_NOTES)
    comparison = commands.add_parser("compare", help="estimators x sampling modes against two baselines")
    comparison.add_argument("--out", default="runs/compare", help="folder for the runs and compare.csv")
    comparison.add_argument("--datasets", nargs="+", default=list(DATASETS), metavar="NAME_OR_FOLDER",
                            help=f"data sets to compare on: {', '.join([*DATASETS, *PER_SEED])} (generated) or an image folder "
                                 "ROOT/<class>/<images> (default: both generated ones)")
    comparison.add_argument("--table-only", action="store_true",
                            help="train nothing: write compare.md from the runs already in compare.csv")
    comparison.add_argument("--methods", nargs="+", choices=tuple(METHODS), default=list(METHODS), metavar="METHOD",
                            help="methods to train (default: all): " + "; ".join(METHODS))
    comparison.add_argument("--seeds", type=int, default=3, help="random trials per setting (default 3)")
    comparison.add_argument("--first-seed", type=int, default=0,
                            help="the trials' seeds are FIRST, FIRST + 1, ... (default 0): two commands on one --out "
                                 "can share the seeds out")
    comparison.add_argument("--downscale", type=int, default=8,
                            help="pooling factor of the downscaled-CNN baseline (default 8)")
    comparison.add_argument("--mnist-per-class", type=positive_int, default=MNIST_SETTINGS["n_per_class"], metavar="N",
                            help="canvases per class of the megapixel-mnist data set, split "
                                 f"{MNIST_SETTINGS['test_fraction']} test and {MNIST_SETTINGS['val_fraction']} "
                                 f"validation (default {MNIST_SETTINGS['n_per_class']})")
    add_training_flags(comparison, COMPARE_FLAGS, COMPARE_DEFAULTS, COMPARE_NOTES)
    gradients = commands.add_parser(
        "gradients", help="bias, variance, cosine and signal-to-noise of each estimator's gradient",
        description="Each estimator x sampling mode x P, on a fixed problem, against the exact gradient of its "
                    "objective (experiments/gradients.py).")
    gradients.add_argument("--out", default="runs/gradients", help="folder for gradients.csv, .md and .png")
    gradients.add_argument("--trials", type=int, default=20000, help="independent estimates per setting (default 20000)")
    gradients.add_argument("--patches", type=int, nargs="+", default=[1, 5, 20], help="P per look (default 1 5 20)")
    gradients.add_argument("--replicas", type=int, default=4, help="looks per image, as train_step (default 4)")
    gradients.add_argument("--temperature", type=float, default=TRAINING_DEFAULTS["temperature"],
                           help=f"classifier temperature T (default {TRAINING_DEFAULTS['temperature']})")
    gradients.add_argument("--seed", type=int, default=0, help="seed of the problem and of the draws (default 0)")
    gradients.add_argument("--alike", type=float, default=0.0,
                           help="weight of one direction shared by every feature vector before normalising: the "
                                "patches look alike, as to an untrained feature network (default 0)")
    looks = commands.add_parser("looks", help="predictions averaged over K looks: accuracy, agreement, time",
                                description="On a run's test split: test accuracy and the share of images whose "
                                            "predicted class is the same in every repeat, for each K.")
    looks.add_argument("run", help="run folder of train.py (its best.npz)")
    looks.add_argument("--data", help="the run's image folder (default: as in its config)")
    looks.add_argument("--looks", type=int, nargs="+", default=[1, 4, 16], help="K values (default 1 4 16)")
    looks.add_argument("--repeats", type=int, default=5, help="predictions of the split with other seeds (default 5)")
    looks.add_argument("--out", help="also write the table to this file")
    one = commands.add_parser("run-one", help="one run of compare, its settings as JSON (used internally)")
    one.add_argument("config", help="JSON of one run's settings")
    table_run = commands.add_parser("table-run", help="one run of paper-table, its settings as JSON (used internally)")
    table_run.add_argument("config", help="JSON of one run's settings")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        if args.command == "paper-table":
            paper_table(args)
        elif args.command == "compare":
            compare(args)
        elif args.command == "looks":
            looks_table(args)
        elif args.command == "gradients":
            from experiments.gradients import gradient_table, make_problem, write_results
            rows = gradient_table(make_problem(args.seed, temperature=args.temperature, alike=args.alike), args.patches, args.replicas,
                                  args.trials, args.seed)
            written = write_results(rows, args.out)
            with open(written[1]) as handle:
                print(handle.read(), end="")
            print(f"written: {', '.join(written)}", file=sys.stderr)
        elif args.command == "table-run":
            keep_freed_memory()  # a training process of its own, as train.py's (memory.py)
            config = json.loads(args.config)
            print(json.dumps(train_one(config, log=lambda line: print(f"  {os.path.basename(config['run_dir'])}: "
                                                                         f"{line}", file=sys.stderr, flush=True))))
        elif args.command == "run-one":
            keep_freed_memory()
            result = run_one(json.loads(args.config))
            result["peak_mb"] = peak_rss_mb()
            print(json.dumps(result))
    except AttentionSamplingError as error:
        print(f"experiments: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
