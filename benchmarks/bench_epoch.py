"""One training epoch end to end: reading and augmenting images from disk, the steps, and the evaluation.

    python -m benchmarks.bench_epoch --data /path/to/lymphoma      # its slides upscaled to 1388 x 1040
    python -m benchmarks.bench_epoch --images 32                   # generated images instead

What a user waits for is the epoch, not the step. This runs the real Trainer (train.py's loop: the next batch
decoded and augmented in a background thread, then evaluation of the validation and test images) on
1388 x 1040 TIFF files written once into a cache folder (`--data`: the class folders' images resized to the
paper's size; without it, noise images with a bright square), at the paper's settings (S = 50, P = 20, 4
replicas, batch 8, c = --scale). The first epoch pays for Numba's compilation or cache loading and is
reported apart; the table shows the second: its wall time, the share the steps spent waiting for data, the
share spent evaluating, and the projection of the paper's run (300 epochs, 261 training and 113 held-out
images) from the per-image times. Peak RSS is this process's. Nothing is asserted on time.
"""
import argparse
import os
import sys
import tempfile
import time

import numpy as np

from benchmarks.common import mb, peak_rss_bytes, print_table, python_environment

HEIGHT, WIDTH = 1040, 1388
PAPER_EPOCHS, PAPER_TRAIN, PAPER_HELD_OUT = 300, 261, 113


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
    """Two epochs of the real Trainer -> per-epoch dicts of wall, training and waiting seconds."""
    from attention_sampling.application.data import ImageFolder
    from attention_sampling.application.settings import TRAINING_DEFAULTS
    from attention_sampling.application.trainer import Trainer

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


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", help="class folders whose images are upscaled to 1388 x 1040 (default: generated)")
    parser.add_argument("--images", type=int, default=64, help="images on disk (default 64)")
    parser.add_argument("--scale", type=int, default=4, help="attention down-scaling c (default 4)")
    parser.add_argument("--cache", default=os.path.join(os.path.expanduser("~"), ".cache", "attention-sampling-numpy"),
                        help="where the images are written once")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    name = f"epoch-{'data' if args.data else 'generated'}-{args.images}"
    root = make_images(os.path.join(args.cache, name), args.data, args.images, args.seed)
    print(python_environment())
    print(f"{args.images} images {WIDTH}x{HEIGHT} TIFF in {root}; S=50, P=20, 4 replicas, batch 8, c={args.scale}")
    epochs, (n_train, n_held_out) = run_epochs(root, args.scale, args.seed)
    first, second = epochs
    evaluation = second["wall"] - second["train"]
    per_train_image = second["train"] / n_train
    per_held_out_image = evaluation / max(1, n_held_out)
    projection = PAPER_EPOCHS * (PAPER_TRAIN * per_train_image + PAPER_HELD_OUT * per_held_out_image)
    rows = [
        ["epoch (wall, s)", f"{second['wall']:.1f}"],
        ["  training: steps and loading, s", f"{second['train']:.1f}"],
        ["  evaluation (validation + test), s", f"{evaluation:.1f}"],
        ["  share waiting for data", f"{second['waiting'] / second['wall']:.1%}"],
        ["  share evaluating", f"{evaluation / second['wall']:.1%}"],
        ["per training image, ms", f"{per_train_image * 1e3:.0f}"],
        ["per evaluated image, ms", f"{per_held_out_image * 1e3:.0f}"],
        ["first epoch (compiles), s", f"{first['wall']:.1f}"],
        ["peak RSS, MB", mb(peak_rss_bytes())],
        [f"projection: {PAPER_EPOCHS} epochs x ({PAPER_TRAIN} + {PAPER_HELD_OUT}) images, h",
         f"{projection / 3600:.2f}"],
    ]
    print(f"\n{n_train} training and {n_held_out} validation + test images; the second epoch")
    print_table(["", "numpy"], rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
