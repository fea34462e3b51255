"""One training epoch end to end: reading and augmenting images from disk, the steps, and the evaluation,
in NumPy + Numba and in PyTorch side by side.

    python -m benchmarks.bench_epoch --data /path/to/lymphoma      # its slides upscaled to 1388 x 1040
    python -m benchmarks.bench_epoch --images 32                   # generated images instead
    python -m benchmarks.bench_epoch --no-torch                    # the numpy column alone

What a user waits for is the epoch, not the step. The numpy column runs the real Trainer (train.py's loop:
the next batch decoded and augmented in a background thread, then evaluation of the validation and test
images); the torch column runs the same epoch in PyTorch (benchmarks/torch_epoch.py: a DataLoader with 2
worker processes applying the same augmentations with torch ops, torch_model.train_step, torch_model.predict
over the same validation and test images; its docstring lists where it differs), its main process on
--torch-threads threads. Both read 1388 x 1040 TIFF files written once into a cache folder (`--data`: the
class folders' images resized to the paper's size; without it, noise images with a bright square), split
70 / 15 / 15 by the Trainer's stratified_split, at the paper's settings (S = 50, P = 20, 4 replicas, batch
8, c = --scale, the Trainer's learning rate and entropy weight).

Each implementation runs two epochs in its own fresh process, one after the other; numpy's starts with an
empty Numba cache, so its first epoch compiles every kernel (torch's first starts the loader workers). The
table shows the second epoch: its wall time, the training loop (steps, with the time they waited for their
batch) and the evaluation after it (with the checkpoint written), the share of the wall time the steps spent
waiting for data and the share spent evaluating, per-image times, and the projection of the paper's run
(300 epochs, 261 training and 113 held-out images) from the per-image times. Peak RSS is each main
process's (VmHWM); PyTorch's loader workers are separate processes (2 for training, 2 for evaluation), the
largest of their peaks is shown on its own row (it counts the pages they share with the main process).
numpy/torch is the ratio of the two columns. Nothing is asserted on time.
"""
import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np

from benchmarks.common import import_torch, mb, peak_rss_bytes, print_table, python_environment, run_fresh

HEIGHT, WIDTH = 1040, 1388
PAPER_EPOCHS, PAPER_TRAIN, PAPER_HELD_OUT = 300, 261, 113
WORKERS = 2  # torch_epoch.py's DataLoader workers
CACHE = os.path.join(os.path.expanduser("~"), ".cache", "attention-sampling-numpy")


def image_root(data, n_images, cache, seed):
    """The folder of the n_images TIFFs made from `data` (None: generated) in `cache`, made if missing."""
    name = f"epoch-{'data' if data else 'generated'}-{n_images}"
    return make_images(os.path.join(cache, name), data, n_images, seed)


def make_images(root, data, n_images, seed):
    """n_images 1388 x 1040 TIFFs in root/<class>/ (made once; reused when they are there)."""
    import tifffile

    from attention_sampling.application.data import ImageFolder, resize_bilinear

    marker = os.path.join(root, ".complete")
    if os.path.exists(marker):
        return root
    rng = np.random.default_rng(seed)
    if data:
        source = ImageFolder.scan(data)
        chosen = rng.permutation(len(source))[:n_images]
        for count, index in enumerate(chosen):
            folder = os.path.join(root, source.classes[source.labels[index]])
            os.makedirs(folder, exist_ok=True)
            image = resize_bilinear(source.read(index).astype(np.float32), HEIGHT, WIDTH)
            tifffile.imwrite(os.path.join(folder, f"{count:04d}.tif"), np.clip(image + 0.5, 0, 255).astype(np.uint8))
    else:
        for count in range(n_images):
            label = count % 3
            folder = os.path.join(root, f"class{label}")
            os.makedirs(folder, exist_ok=True)
            image = rng.integers(0, 200, (HEIGHT, WIDTH, 3), dtype=np.uint8)
            top, left = rng.integers(0, HEIGHT - 64), rng.integers(0, WIDTH - 64)
            image[top:top + 64, left:left + 64] = 80 * (label + 1)
            tifffile.imwrite(os.path.join(folder, f"{count:04d}.tif"), image)
    open(marker, "w").close()
    return root


def run_epochs(root, scale, seed):
    """Two epochs of the real Trainer -> (per-epoch dicts of wall, training and waiting seconds, image counts)."""
    from attention_sampling.application.data import ImageFolder
    from attention_sampling.application.settings import TRAINING_DEFAULTS
    from attention_sampling.application.memory import keep_freed_memory
    from attention_sampling.application.trainer import Trainer

    keep_freed_memory()  # as train.py does (its own process: the numpy child)
    dataset = ImageFolder.scan(root)
    marks = []
    config = dict(TRAINING_DEFAULTS, data=root, classes=dataset.classes, image_shape=[HEIGHT, WIDTH], epochs=2,
                  scale=scale, seed=seed, augment=True)
    with tempfile.TemporaryDirectory(prefix="bench_epoch_") as run_dir:
        trainer = Trainer(dataset, os.path.join(run_dir, "run"), config, log=lambda line: marks.append(
            time.perf_counter()), progress=False)
        started = time.perf_counter()
        history = trainer.fit()
        counts = (len(trainer.train_indices), len(trainer.val_indices) + len(trainer.test_indices))
    walls = np.diff([started] + marks)
    return [{"wall": float(wall), "train": row["seconds"], "waiting": row["waiting"]}
            for wall, row in zip(walls, history)], counts


def run_torch_epochs(root, scale, seed, threads):
    """Two epochs of torch_epoch.py on the Trainer's split of the same files -> as run_epochs, and the
    loader workers' peak RSS."""
    from attention_sampling.application.data import ImageFolder, stratified_split
    from attention_sampling.application.settings import TRAINING_DEFAULTS

    import_torch(False, threads)  # the main process's threads; DataLoader workers run on one each
    from benchmarks import torch_epoch

    dataset = ImageFolder.scan(root)
    split = stratified_split(dataset.labels, TRAINING_DEFAULTS["test_fraction"], seed,
                             TRAINING_DEFAULTS["val_fraction"])
    epochs, workers = torch_epoch.run_epochs(dataset.paths, dataset.labels, len(dataset.classes), split, scale, seed,
                                             TRAINING_DEFAULTS["lr"], TRAINING_DEFAULTS["entropy"],
                                             TRAINING_DEFAULTS["batch_size"], WORKERS)
    return epochs, (len(split.train), len(split.val) + len(split.test)), workers


def run_child_here(args, root):
    """One implementation's two epochs in this process -> a JSON-able dict of them, the counts and the peaks."""
    workers = []
    if args.child == "numpy":
        epochs, counts = run_epochs(root, args.scale, args.seed)
    else:
        epochs, counts, workers = run_torch_epochs(root, args.scale, args.seed, args.torch_threads)
    return {"epochs": epochs, "n_train": counts[0], "n_held_out": counts[1], "peak_rss": peak_rss_bytes(),
            "worker_peak_rss": workers}


def child(impl, numba_cache, data, images, scale, cache, seed, torch_threads):
    """This module in a fresh process for one implementation's epochs ("numpy" or "torch") -> its JSON result."""
    arguments = ["--child", impl, "--images", images, "--scale", scale, "--cache", cache, "--seed", seed,
                 "--torch-threads", torch_threads] + (["--data", data] if data else [])
    return run_fresh("benchmarks.bench_epoch", arguments, numba_cache, f"{impl} epochs")


def summary(result):
    """A child's result -> the second epoch's numbers (seconds, shares, bytes) and the paper-run projection."""
    first, second = result["epochs"]
    evaluation = second["wall"] - second["train"]
    per_train_image = second["train"] / result["n_train"]
    per_held_out_image = evaluation / max(1, result["n_held_out"])
    workers = result["worker_peak_rss"]
    return {"wall": second["wall"], "train": second["train"], "evaluation": evaluation,
            "waiting_share": second["waiting"] / second["wall"], "evaluating_share": evaluation / second["wall"],
            "per_train_image": per_train_image, "per_held_out_image": per_held_out_image, "first": first["wall"],
            "peak_rss": result["peak_rss"], "worker_peak_rss": max(workers) if workers else None,
            "workers": len(workers), "n_train": result["n_train"], "n_held_out": result["n_held_out"],
            "projection": PAPER_EPOCHS * (PAPER_TRAIN * per_train_image + PAPER_HELD_OUT * per_held_out_image)}


def table_rows(summaries):
    """{impl: summary} ("numpy", and "torch" if measured) -> rows: a name, numpy, then torch and numpy/torch."""
    use_torch = "torch" in summaries
    workers = summaries["torch"]["workers"] if use_torch else 0
    specs = [  # (row name, key, format of a value, whether numpy/torch is a meaningful ratio)
        ("epoch (wall, s)", "wall", "{:.1f}", True),
        ("  training: steps and loading, s", "train", "{:.1f}", True),
        ("  evaluation (validation + test), s", "evaluation", "{:.1f}", True),
        ("  share waiting for data", "waiting_share", "{:.1%}", False),
        ("  share evaluating", "evaluating_share", "{:.1%}", False),
        ("per training image, ms", "per_train_image", "ms", True),
        ("per evaluated image, ms", "per_held_out_image", "ms", True),
        ("first epoch (compiles, starts workers), s", "first", "{:.1f}", True),
        ("peak RSS, main process, MB", "peak_rss", "mb", True),
        (f"peak RSS, largest of {workers} loader workers, MB", "worker_peak_rss", "mb", False),
        (f"projection: {PAPER_EPOCHS} epochs x ({PAPER_TRAIN} + {PAPER_HELD_OUT}) images, h", "projection", "h", True),
    ]

    def show(value, form):
        if value is None:
            return None
        if form == "ms":
            return f"{value * 1e3:.0f}"
        if form == "mb":
            return mb(value)
        if form == "h":
            return f"{value / 3600:.2f}"
        return form.format(value)

    rows = []
    for name, key, form, ratio in specs:
        if key == "worker_peak_rss" and not workers:
            continue
        row = [name, show(summaries["numpy"][key], form)]
        if use_torch:
            numpy_value, torch_value = summaries["numpy"][key], summaries["torch"][key]
            row += [show(torch_value, form),
                    f"{numpy_value / torch_value:.2f}" if ratio and numpy_value and torch_value else None]
        rows.append(row)
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", help="class folders whose images are upscaled to 1388 x 1040 (default: generated)")
    parser.add_argument("--images", type=int, default=64, help="images on disk (default 64)")
    parser.add_argument("--scale", type=int, default=4, help="attention down-scaling c (default 4)")
    parser.add_argument("--cache", default=CACHE, help="where the images are written once")
    parser.add_argument("--no-torch", action="store_true", help="skip PyTorch even when it is importable")
    parser.add_argument("--torch-threads", type=int, default=2,
                        help="torch.set_num_threads of PyTorch's main process (default 2)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--child", choices=["numpy", "torch"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    root = image_root(args.data, args.images, args.cache, args.seed)
    if args.child:
        print(json.dumps(run_child_here(args, root)))
        return 0

    torch = import_torch(args.no_torch, args.torch_threads)
    impls = ["numpy"] + (["torch"] if torch is not None else [])
    print(python_environment(torch))
    print(f"{args.images} images {WIDTH}x{HEIGHT} TIFF in {root}; S=50, P=20, 4 replicas, batch 8, c={args.scale}")
    print(f"torch: DataLoaders of {WORKERS} workers each for training and evaluation (1 thread per worker), "
          f"main process on {args.torch_threads} threads"
          if torch is not None else "PyTorch not importable or --no-torch: numpy only")
    with tempfile.TemporaryDirectory(prefix="bench_epoch_numba_") as numba_cache:
        summaries = {impl: summary(child(impl, numba_cache, args.data, args.images, args.scale, args.cache,
                                         args.seed, args.torch_threads)) for impl in impls}
    print(f"\n{summaries['numpy']['n_train']} training and {summaries['numpy']['n_held_out']} validation + test "
          "images; the second epoch")
    print_table(["", "numpy"] + (["torch", "numpy/torch"] if torch is not None else []), table_rows(summaries))
    return 0


if __name__ == "__main__":
    sys.exit(main())
