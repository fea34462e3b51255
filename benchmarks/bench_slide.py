"""A 2.5-gigapixel slide through the real training step and predict.py's code: memory and time.

    python -m benchmarks.bench_slide                 # writes the slide once (a few minutes), then measures
    python -m benchmarks.bench_slide --scale 64 --size 96 --batch-size 2

The slide is a 50,000 x 50,000 RGB pyramidal TIFF (levels 1, 2, 4, ..., 64; 256 x 256 tiles, zlib),
written tile by tile by tifffile into the cache folder (~/.cache/attention-sampling-numpy/, or
$ATTENTION_SAMPLING_CACHE), never a level whole in memory; as bytes it would be 7.5 GB, as float32 30 GB.
Each measurement runs in a fresh process, so its peak RSS (VmHWM) is that of one thing alone:
- "train step": data.load_batch on a lazy data set of the slide (augmented, as the trainer loads it),
  then one training.train_step; the first step pays Numba's cache loading, so two steps run and the
  second is timed;
- "predict": prediction.predict_path on the slide with a model saved as a run's checkpoint, twice, the
  second timed;
with the tiles decoded and the seconds spent reading them (slides.TOTAL). The model's attention starts
uniform (--attention-init uniform), so that the patches land in as many places as they can. Nothing is asserted
on time.
"""
import argparse
import json
import os
import subprocess
import sys
import time

from benchmarks.common import PROJECT_ROOT, mb, peak_rss_bytes, print_table, python_environment

SIDE = 50_000
DOWNSAMPLES = (1, 2, 4, 8, 16, 32, 64)


def slide_path():
    from attention_sampling.application.embedded import cache_root

    return os.path.join(cache_root(), f"bench-slide-{SIDE}.tif")


def ensure_slide(path):
    """Write the benchmark slide unless it is there (written to .partial first: a kill leaves no half slide)."""
    if os.path.isfile(path):
        return path
    from attention_sampling.application.slidewriter import Tissue, write_pyramid

    os.makedirs(os.path.dirname(path), exist_ok=True)
    partial = path + ".partial"
    started = time.perf_counter()
    print(f"writing {path} ({SIDE} x {SIDE}, levels {DOWNSAMPLES}) ...", file=sys.stderr)
    write_pyramid(partial, SIDE, SIDE, Tissue(SIDE, SIDE, seed=0, spots="horizontal"), DOWNSAMPLES, tile=256)
    os.replace(partial, path)
    print(f"written in {time.perf_counter() - started:.0f} s, {os.path.getsize(path) / 2**20:.0f} MB",
          file=sys.stderr)
    return path


def config_for(args):
    from attention_sampling.application.settings import TRAINING_DEFAULTS

    # A uniform start, so that the patches land in as many places as they can, the most reading a step can
    # cost (a randomly drawn attention can put nearly all its mass on one border cell of so large a map).
    return dict(TRAINING_DEFAULTS, classes=["a", "b"], image_shape=[SIDE, SIDE], scale=args.scale, size=args.size,
                patches=args.patches, replicas=args.replicas, batch_size=args.batch_size, seed=0,
                attention_init="uniform")


def measure(args):
    """In this (fresh) process: one kind of work on the slide -> a JSON line."""
    import numpy as np

    from attention_sampling.application import slides
    from attention_sampling.application.trainer import build_model

    config = config_for(args)
    model = build_model(config)
    result = {"what": args.measure}
    if args.measure == "train":
        import nn
        from attention_sampling.application.data import Augmentation, ImageFolder, load_batch
        from attention_sampling.training import train_step

        dataset = ImageFolder("slides", ["a", "b"], [args.slide] * args.batch_size,
                              np.zeros(args.batch_size, dtype=np.int64), lazy=True)
        optimizer = nn.Adam(1e-3)
        rng = np.random.default_rng(0)
        for step in range(2):
            before = (slides.TOTAL.tiles, slides.TOTAL.seconds)
            started = time.perf_counter()
            batch = load_batch(dataset, np.arange(args.batch_size), (SIDE, SIDE), Augmentation(),
                               np.random.default_rng(step), scale=args.scale)
            loaded = time.perf_counter()
            train_step(model, optimizer, batch, dataset.labels, rng, replicas=args.replicas,
                       entropy_weight=config["entropy"])
            finished = time.perf_counter()
        result.update(seconds=finished - started, load_seconds=loaded - started, images=args.batch_size)
    else:
        from attention_sampling.application.prediction import predict_path

        for _ in range(2):
            before = (slides.TOTAL.tiles, slides.TOTAL.seconds)
            started = time.perf_counter()
            row = predict_path(model, config, args.slide, seed=0)
            finished = time.perf_counter()
        assert "error" not in row, row["error"]
        result.update(seconds=finished - started, images=1)
    result.update(tiles=int(slides.TOTAL.tiles - before[0]), read_seconds=slides.TOTAL.seconds - before[1],
                  peak_rss=peak_rss_bytes())
    print(json.dumps(result))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=int, default=64, help="c (default 64: a 781 x 781 attention view)")
    parser.add_argument("--size", type=int, default=96, help="patch side S (default 96)")
    parser.add_argument("--patches", type=int, default=20, help="P (default 20)")
    parser.add_argument("--replicas", type=int, default=2, help="looks per image in a training step (default 2)")
    parser.add_argument("--batch-size", type=int, default=2, help="slides per training step (default 2)")
    parser.add_argument("--write-only", action="store_true", help="write the slide and stop")
    parser.add_argument("--measure", choices=("train", "predict"), help=argparse.SUPPRESS)
    parser.add_argument("--slide", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.measure:
        return measure(args)
    path = ensure_slide(slide_path())
    if args.write_only:
        return
    print(python_environment())
    print(f"slide {path}: {SIDE} x {SIDE} ({SIDE * SIDE / 1e9:.1f} gigapixels), {os.path.getsize(path) / 2**20:.0f} MB; "
          f"c = {args.scale} (view {SIDE // args.scale} x {SIDE // args.scale}), S = {args.size}, P = {args.patches}, "
          f"replicas {args.replicas}, batch {args.batch_size}")
    rows = []
    for what in ("train", "predict"):
        command = [sys.executable, "-m", "benchmarks.bench_slide", "--measure", what, "--slide", path,
                   "--scale", str(args.scale), "--size", str(args.size), "--patches", str(args.patches),
                   "--replicas", str(args.replicas), "--batch-size", str(args.batch_size)]
        output = subprocess.run(command, cwd=PROJECT_ROOT, capture_output=True, text=True)
        if output.returncode:
            print(output.stderr, file=sys.stderr)
            raise SystemExit(f"{what}: failed")
        result = json.loads(output.stdout.strip().splitlines()[-1])
        label = f"train step ({result['images']} slides)" if what == "train" else "predict (1 slide)"
        rows.append([label, f"{result['seconds']:.2f}", f"{result['tiles']}", f"{result['read_seconds']:.2f}",
                     mb(result["peak_rss"])])
    print_table(["", "seconds", "tiles decoded", "seconds reading tiles", "peak RSS (MB)"], rows)


if __name__ == "__main__":
    main()
