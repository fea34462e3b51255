"""Attention sampling in NumPy + Numba against PyTorch in one table: train step, inference and the
full-resolution CNN it replaces, each timed and its peak memory measured in the same run.

    python -m benchmarks                       # c = 4 and 8, 10 timed calls each, PyTorch if importable
    python -m benchmarks --repeat 20 --no-torch
    python -m benchmarks --full-batch 2 --full-repeat 3   # a lighter full-resolution CNN row
    python -m benchmarks --epoch --epoch-data /path/to/lymphoma   # and the epoch row (minutes more)
    python -m benchmarks --predict-only --predict-repeat 100      # the inference rows alone

Rows (8 images 1040 x 1388 x 3 float32, 3 classes, the paper's P = 20 patches of S = 50, 4 replicas):
  train step c=...     training.train_step on 8 images (the attention net once per image, 640 patches)
  predict 1 image c=.. training.predict on one image (evaluation mode, P = 20 patches)
  full-res CNN ...     the alternative attention sampling argues against: the feature network
                       (4 x [conv 3x3·16, leaky ReLU], global max, dense, L2) run over whole images,
                       one training step (forward, cross-entropy, backward, Adam) on --full-batch images
  epoch c=...          with --epoch: bench_epoch.py's second epoch at the first of --scales (the Trainer, and
                       the same epoch in PyTorch with a DataLoader of 2 workers: reading --epoch-images
                       1388 x 1040 TIFFs, augmentation, the steps, evaluation of the validation and test
                       images), its wall time and its process's peak RSS (not the loader workers')

Columns: the median of --repeat calls after --warmup untimed ones (the first of which is reported on its
own: Numba compiling or loading its cache); GMAC, the analytic multiply-adds of the convolutions and the
dense layer (backward: dL/dw of every layer, dL/dx of every layer but each network's first, which takes
data); GFLOP/s = 2 x GMAC / median; peak RSS (VmHWM) of a fresh process that ran only that row's
workload. Inference runs in a process that only predicts, as a deployed classifier does, with its own
--predict-repeat and --predict-warmup (a call costs milliseconds: more calls give a steadier median).
PyTorch is benchmarks/torch_model.py: the same model, channels-last, float32, --torch-threads threads,
with autograd; numpy/torch is the ratio of the two medians.

Every measurement runs in its own fresh process (`python -m benchmarks.run --child ...`), one after the
other, so a peak RSS is one implementation's alone and both implementations see the same machine within
minutes.
The machine may be shared: compare ratios within one run. Nothing here asserts on time.

Projection: a 300-epoch run on a 374-image set with batches of 8 is 300 x ceil(374 / 8) train steps;
hours = that x the median step (data loading and augmentation not included). With --epoch, also
bench_epoch.py's projection from the epoch's per-image times (loading, augmentation and evaluation
included) and the share of the epoch the steps waited for data.
"""
import argparse
import json
import math
import sys
import tempfile
import time

import numpy as np

from benchmarks.bench_step import (ATTENTION_PADDING, CHANNELS, ENTROPY_WEIGHT, FEATURE_CONVS, FEATURE_DENSE, HEIGHT,
                                   LEARNING_RATE, N_CLASSES, N_IMAGES, N_PATCHES, PATCH_SIZE, REPLICAS, WIDTH,
                                   make_batch, numpy_setup, step_macs, torch_setup)
from benchmarks.common import import_torch, mb, measure, ms, print_table, python_environment, run_fresh, time_calls

EPOCHS, DATASET_IMAGES = 300, 374  # the paper's colon-cancer run: 300 epochs over 374 training images


def full_resolution_macs(n_images):
    """Multiply-adds of one training step of the feature network over n whole images."""
    forward = sum(k * k * c_in * c_out for k, c_in, c_out in FEATURE_CONVS)
    input_grads = sum(k * k * c_in * c_out for k, c_in, c_out in FEATURE_CONVS[1:])
    dense = FEATURE_DENSE[0] * FEATURE_DENSE[1]
    return n_images * (HEIGHT * WIDTH * (2 * forward + input_grads) + 3 * dense)


# ---------------------------------------------------------------------------------------------------------
# Children: one workload, one implementation, in this process -> JSON
# ---------------------------------------------------------------------------------------------------------

def train_step_call(impl, scale, args):
    """One train_step on N_IMAGES images, as a function of no arguments."""
    if impl == "numpy":
        from attention_sampling import train_step

        model, optimizer, images, labels, rng = numpy_setup(scale, args.seed)
        return lambda: train_step(model, optimizer, images, labels, rng, replicas=REPLICAS,
                                  entropy_weight=ENTROPY_WEIGHT)
    from benchmarks import torch_model

    model, optimizer, images, labels, generator = torch_setup(scale, args.seed, args.torch_threads)
    return lambda: torch_model.train_step(model, optimizer, images, labels, generator, REPLICAS, ENTROPY_WEIGHT)


def predict_call(impl, scale, args):
    """predict on one image, in a process that does nothing else, as a deployed classifier would."""
    if impl == "numpy":
        from attention_sampling import predict
        from nn import threads

        from attention_sampling.application.memory import keep_freed_memory

        threads.use("numba")  # as predict.py (nn/threads.py)
        keep_freed_memory()  # as predict.py (memory.py)
        model, _, images, _, rng = numpy_setup(scale, args.seed, n=1)
        return lambda: predict(model, images, rng)
    from benchmarks import torch_model

    model, _, images, _, generator = torch_setup(scale, args.seed, args.torch_threads, n=1)
    return lambda: torch_model.predict(model, images, generator)


def full_resolution_call(impl, args):
    """The feature network over --full-batch whole images: one training step, as the patches' would be."""
    images, labels = make_batch(args.seed, n=args.full_batch)
    if impl == "numpy":
        import nn
        from attention_sampling.models import FeatureNetwork

        network = FeatureNetwork(N_CLASSES, CHANNELS, rng=args.seed)
        optimizer = nn.Adam(LEARNING_RATE)
        loss_fn = nn.CrossEntropyLoss()

        def step():
            logits = network.forward(images, True)
            loss_fn.forward(logits, labels)
            network.backward(loss_fn.backward())
            optimizer.step(network.params, network.grads)
        return step

    import torch
    import torch.nn.functional as F

    from benchmarks import torch_model

    torch.set_num_threads(args.torch_threads)
    torch.manual_seed(args.seed)
    pixels = torch.from_numpy(images).permute(0, 3, 1, 2)  # a channels-last NCHW view, no copy
    labels = torch.from_numpy(labels)
    network = torch_model.feature_network(N_CLASSES, CHANNELS).to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(network.parameters(), lr=LEARNING_RATE)

    def step():
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(network(pixels), labels).backward()
        optimizer.step()
    return step


def run_child_here(args):
    """One measurement, "<impl>:<workload>", in this process -> {"rss_before", "first", "median", "peak_rss"}."""
    impl, workload = args.child.split(":")
    if workload == "full":
        return measure(full_resolution_call(impl, args), args.full_warmup, args.full_repeat)
    if workload.startswith("predict"):
        return measure(predict_call(impl, int(workload[len("predict"):]), args), args.predict_warmup,
                       args.predict_repeat)
    return measure(train_step_call(impl, int(workload), args), args.warmup, args.repeat)


def numba_first_call(args):
    """A fresh process, empty Numba cache: import, then the first train_step (compiling every kernel)."""
    start = time.perf_counter()
    import nn
    from attention_sampling import AttentionSamplingModel, train_step
    imported = time.perf_counter() - start
    images, labels = make_batch(args.seed, n=2, height=260, width=348)
    model = AttentionSamplingModel(N_CLASSES, scale=4, patch_size=PATCH_SIZE, n_patches=N_PATCHES, seed=args.seed,
                                   attention_padding=ATTENTION_PADDING)
    rng = np.random.default_rng(args.seed)
    # The second call shows what a small step costs once compiled.
    first, (second,) = time_calls(lambda: train_step(model, nn.Adam(LEARNING_RATE), images, labels, rng,
                                                     replicas=REPLICAS), 1, 1)
    return {"import": imported, "first": first, "second": second}


# ---------------------------------------------------------------------------------------------------------
# The driver
# ---------------------------------------------------------------------------------------------------------

def child(spec, args, numba_cache):
    """This module in a fresh process for one measurement -> its JSON result."""
    arguments = ["--child", spec, "--repeat", args.repeat, "--warmup", args.warmup, "--seed", args.seed,
                 "--torch-threads", args.torch_threads, "--full-batch", args.full_batch,
                 "--full-repeat", args.full_repeat, "--full-warmup", args.full_warmup,
                 "--predict-repeat", args.predict_repeat, "--predict-warmup", args.predict_warmup]
    return run_fresh("benchmarks.run", arguments, numba_cache, spec)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=10, help="timed calls per row (default 10)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls first, the first included (default 2)")
    parser.add_argument("--scales", type=int, nargs="+", default=[4, 8], help="attention down-scaling c (default 4 8)")
    parser.add_argument("--full-batch", type=int, default=8,
                        help="images per full-resolution CNN step (default 8; 0 skips the row)")
    parser.add_argument("--full-repeat", type=int, default=3, help="timed full-resolution steps (default 3)")
    parser.add_argument("--full-warmup", type=int, default=1, help="untimed full-resolution steps (default 1)")
    parser.add_argument("--predict-repeat", type=int, default=50, help="timed inference calls (default 50)")
    parser.add_argument("--predict-warmup", type=int, default=5, help="untimed inference calls (default 5)")
    parser.add_argument("--predict-only", action="store_true", help="the inference rows alone")
    parser.add_argument("--no-torch", action="store_true", help="skip PyTorch even when it is importable")
    parser.add_argument("--torch-threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    parser.add_argument("--epoch", action="store_true",
                        help="add the epoch row (bench_epoch.py: two epochs per implementation, minutes)")
    parser.add_argument("--epoch-data", help="class folders for the epoch row, upscaled to 1388 x 1040 once "
                        "(default: generated images)")
    parser.add_argument("--epoch-images", type=int, default=64, help="images on disk for the epoch row (default 64)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--child", help=argparse.SUPPRESS)  # "numpy:4", "torch:predict8", "numpy:full", "numpy:first"
    args = parser.parse_args(argv)
    if min(args.repeat, args.full_repeat, args.predict_repeat) < 1:
        parser.error("--repeat, --full-repeat and --predict-repeat must be at least 1")

    if args.child:
        result = numba_first_call(args) if args.child == "numpy:first" else run_child_here(args)
        print(json.dumps(result))
        return 0

    torch = import_torch(args.no_torch, args.torch_threads)
    use_torch = torch is not None
    impls = ["numpy"] + (["torch"] if use_torch else [])
    print(python_environment(torch))
    print("torch: channels_last, float32, autograd" if use_torch else
          "PyTorch not importable or --no-torch: numpy only")
    print(f"{N_IMAGES} images {HEIGHT}x{WIDTH}x{CHANNELS} float32, {REPLICAS} replicas x P={N_PATCHES} patches "
          f"of S={PATCH_SIZE}; median of {args.repeat} calls after {args.warmup} warm-up "
          f"(inference: {args.predict_repeat} after {args.predict_warmup}; "
          f"full-resolution CNN: {args.full_repeat} after {args.full_warmup}, batch {args.full_batch})")

    results, epochs = {}, {}
    if args.epoch:
        from benchmarks import bench_epoch

        epoch_scale = args.scales[0]
        bench_epoch.image_root(args.epoch_data, args.epoch_images, bench_epoch.CACHE, args.seed)  # made once
    with tempfile.TemporaryDirectory(prefix="benchmarks_numba_") as numba_cache:
        first_call = None if args.predict_only else child("numpy:first", args, numba_cache)  # compiles the cache
        for scale in [] if args.predict_only else args.scales:
            for impl in impls:
                results[(impl, scale)] = child(f"{impl}:{scale}", args, numba_cache)
        for scale in args.scales:
            for impl in impls:
                results[(impl, f"predict{scale}")] = child(f"{impl}:predict{scale}", args, numba_cache)
        if args.full_batch and not args.predict_only:
            for impl in impls:
                results[(impl, "full")] = child(f"{impl}:full", args, numba_cache)
        if args.epoch:
            for impl in impls:
                epochs[impl] = bench_epoch.summary(bench_epoch.child(
                    impl, numba_cache, args.epoch_data, args.epoch_images, epoch_scale, bench_epoch.CACHE,
                    args.seed, args.torch_threads))

    rows = []

    def add_row(label, key, macs):
        cells = [label]
        values = {impl: results[(impl, key)]["median"] for impl in impls}
        cells.append(ms(values["numpy"]))
        if use_torch:
            cells += [ms(values["torch"]), f"{values['numpy'] / values['torch']:.2f}"]
        cells.append(f"{macs / 1e9:.2f}")
        cells += [f"{2 * macs / values[impl] / 1e9:.1f}" for impl in impls]
        cells += [mb(results[(impl, key)]["peak_rss"]) for impl in impls]
        rows.append(cells)

    for scale in [] if args.predict_only else args.scales:
        macs = step_macs(scale)
        add_row(f"train step c={scale}", scale, macs["step"])
    for scale in args.scales:
        macs = step_macs(scale)
        add_row(f"predict 1 image c={scale}", f"predict{scale}", macs["predict"])
    if args.full_batch and not args.predict_only:
        add_row(f"full-res CNN step, {args.full_batch} images", "full", full_resolution_macs(args.full_batch))
    if args.epoch:
        walls = {impl: epochs[impl]["wall"] for impl in impls}
        cells = [f"epoch c={epoch_scale}, {args.epoch_images} images on disk", ms(walls["numpy"])]
        if use_torch:
            cells += [ms(walls["torch"]), f"{walls['numpy'] / walls['torch']:.2f}"]
        cells += [None] * (1 + len(impls))  # no GMAC nor GFLOP/s: an epoch is more than its convolutions
        cells += [mb(epochs[impl]["peak_rss"]) for impl in impls]
        rows.append(cells)

    headers = ["ms (median)", "numpy"] + (["torch", "numpy/torch"] if use_torch else []) + ["GMAC"]
    headers += [f"GFLOP/s {impl}" for impl in impls] + [f"peak MB {impl}" for impl in impls]
    print()
    print_table(headers, rows)
    if args.predict_only:
        return 0

    steps_per_run = EPOCHS * math.ceil(DATASET_IMAGES / N_IMAGES)
    print(f"\nProjection: {EPOCHS} epochs x ceil({DATASET_IMAGES}/{N_IMAGES}) = {steps_per_run} train steps "
          f"(data loading and augmentation not included)")
    for scale in args.scales:
        print("  " + ", ".join(f"c={scale} {impl}: {steps_per_run * results[(impl, scale)]['median'] / 3600:.2f} h"
                               for impl in impls))
    if args.full_batch:
        per_image = {impl: results[(impl, "full")]["median"] / args.full_batch for impl in impls}
        print("  full-res CNN: " + ", ".join(f"{impl} {EPOCHS * DATASET_IMAGES * per_image[impl] / 3600:.1f} h"
                                            for impl in impls)
              + f" ({', '.join(f'{impl} {per_image[impl] * 1e3:.0f} ms' for impl in impls)} per image)")

    if args.epoch:
        print(f"  epoch c={epoch_scale}, {bench_epoch.PAPER_EPOCHS} x ({bench_epoch.PAPER_TRAIN} + "
              f"{bench_epoch.PAPER_HELD_OUT}) images, loading and evaluation included (bench_epoch.py): " + ", ".join(
                  f"{impl} {epochs[impl]['projection'] / 3600:.2f} h ({epochs[impl]['waiting_share']:.0%} waiting)"
                  for impl in impls))

    print("\nFirst calls, seconds")
    print(f"  numpy, empty Numba cache: import {first_call['import']:.2f}, first train_step (compiles every "
          f"kernel; 2 images 260x348) {first_call['first']:.2f}, the same step again {first_call['second']:.2f}")
    for scale in args.scales:
        print(f"  c={scale}, cache loaded: " + ", ".join(
            f"{impl} first train_step {results[(impl, scale)]['first']:.2f} "
            f"(median {results[(impl, scale)]['median']:.2f})" for impl in impls))
    return 0


if __name__ == "__main__":
    sys.exit(main())
