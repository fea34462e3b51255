"""Time one whole training step of attention sampling at the paper's settings, piece by piece, against PyTorch.

    python -m benchmarks.bench_step                   # c = 4 and c = 8, 10 timed steps each, PyTorch if importable
    python -m benchmarks.bench_step --scales 4 --repeat 5 --no-torch
    python -m benchmarks.bench_step --impl numpy --scales 4     # one implementation here, JSON on stdout

The workload: 8 images of 1040 x 1388 x 3 float32, 3 classes, each image looked at 4 times (replicas) with
P = 20 patches of S = 50 pixels, so 640 patches per step; the attention map is the image pooled by c.

Pieces. The NumPy step is the project's own attention_sampling.train_step, timed through its `lap=`
callback (it calls lap(name) after each piece, so nothing here copies it); the PyTorch step is
benchmarks/torch_model.py's train_step, which takes the same laps. A row is the median over --repeat steps
after --warmup untimed ones; the step's own row is the median of whole steps, so it need not equal the sum
of the rows above it. The per-layer table wraps each NumPy layer's forward and backward with a clock (a few
microseconds per call).

Inference is not here: `python -m benchmarks` (benchmarks/run.py) measures it in a process that only predicts.

Memory. Each (implementation, scale) runs in its own fresh process (this module with --impl), so its peak
resident memory (VmHWM) is that implementation's alone; "RSS before" is the same process after imports,
images and model, before the first step.

First call. A fresh process's first train_step pays for Numba compiling the kernels or loading them from its
cache (PyTorch: one-off allocator and oneDNN set-up). Both are shown: one process compiles into an empty
Numba cache directory, and the timed processes then load from it.

Work. GFLOP/s is 2 x the analytic multiply-adds of the convolutions and the dense layer over the median
step: forward, plus dL/dw of every layer and dL/dx of every layer but each network's first (nothing needs
the image's gradient). Pooling, batch norm, activations, sampling and extraction are not counted.

Before timing, when PyTorch runs, one check on a small batch is printed (never asserted): the PyTorch model,
given the same weights and the same cells as attention_sampling.train_step, gives the same loss and
gradients. Times are reported, never asserted on.
"""
import argparse
import json
import sys
import tempfile
import time

import numpy as np

from benchmarks.common import import_torch, mb, measure, ms, print_table, python_environment, run_fresh

# The paper's setting (Katharopoulos & Fleuret 2019, colon-cancer histology): see docs/method.md.
N_IMAGES, HEIGHT, WIDTH, CHANNELS = 8, 1040, 1388, 3
N_CLASSES = 3
REPLICAS = 4
N_PATCHES = 20
PATCH_SIZE = 50
ENTROPY_WEIGHT = 0.01
LEARNING_RATE = 1e-3
# The attention network's padding: train.py's (application/settings.py), what a trained model predicts with.
ATTENTION_PADDING = "reflect"

# (kernel size, C_in, C_out) of each convolution, as in attention_sampling/models.py.
ATTENTION_CONVS = [(3, 3, 8), (3, 8, 8), (3, 8, 8), (1, 8, 1)]
FEATURE_CONVS = [(3, 3, 16), (3, 16, 16), (3, 16, 16), (3, 16, 16)]
FEATURE_DENSE = (16, N_CLASSES)

# The table's rows and the laps of train_step each one sums; a row with more than one lap lists those the
# step took indented below it ("REINFORCE gradient" or "expectation gradient", as the estimator).
GROUPS = [
    ("attention forward", ["attention net forward"]),
    ("sampling + extraction", ["sample cells", "gather a_i", "extract patches"]),
    ("feature forward", ["feature net forward", "eq.1 + cross-entropy"]),
    ("feature backward", ["feature backward"]),
    ("attention backward", ["rewards + advantage", "REINFORCE gradient", "expectation gradient",
                            "entropy gradient", "attention net backward"]),
    ("optimizer (Adam)", ["optimizer"]),
]


def make_batch(seed, n=N_IMAGES, height=HEIGHT, width=WIDTH):
    """Uniform random images in [0, 1) and labels: the step's cost does not depend on what the pixels show."""
    rng = np.random.default_rng(seed)
    images = rng.random((n, height, width, CHANNELS), dtype=np.float32)
    return images, rng.integers(0, N_CLASSES, size=n)


def numpy_setup(scale, seed, n=N_IMAGES):
    """The NumPy model at the paper's settings, its Adam, a batch of n images with labels, a generator."""
    import nn
    from attention_sampling.models import AttentionSamplingModel

    images, labels = make_batch(seed, n=n)
    model = AttentionSamplingModel(N_CLASSES, scale=scale, patch_size=PATCH_SIZE, n_patches=N_PATCHES, seed=seed,
                                   attention_padding=ATTENTION_PADDING)
    return model, nn.Adam(LEARNING_RATE), images, labels, np.random.default_rng(seed)


def torch_setup(scale, seed, threads, n=N_IMAGES):
    """The same for PyTorch (benchmarks/torch_model.py), on `threads` threads; the batch as tensors."""
    import torch

    from benchmarks import torch_model

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    images, labels = make_batch(seed, n=n)
    model = torch_model.AttentionSampling(N_CLASSES, scale=scale, patch_size=PATCH_SIZE, n_patches=N_PATCHES,
                                          attention_padding=ATTENTION_PADDING)
    optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
    return (model, optimizer, torch.from_numpy(images), torch.from_numpy(labels),
            torch.Generator().manual_seed(seed))


def step_macs(scale):
    """Analytic multiply-adds of one train_step and of predicting one image -> dict of counts."""
    def per_position(convs):
        forward = sum(k * k * c_in * c_out for k, c_in, c_out in convs)
        input_grads = sum(k * k * c_in * c_out for k, c_in, c_out in convs[1:])
        return forward, forward + input_grads  # backward: dL/dw, plus dL/dx below the first layer

    cells = (HEIGHT // scale) * (WIDTH // scale)
    patches = REPLICAS * N_PATCHES * N_IMAGES
    attention_forward, attention_backward = per_position(ATTENTION_CONVS)
    feature_forward, feature_backward = per_position(FEATURE_CONVS)
    dense = FEATURE_DENSE[0] * FEATURE_DENSE[1]
    counts = {
        "attention forward": N_IMAGES * cells * attention_forward,
        "attention backward": N_IMAGES * cells * attention_backward,
        "feature forward": patches * (PATCH_SIZE**2 * feature_forward + dense),
        "feature backward": patches * (PATCH_SIZE**2 * feature_backward + 2 * dense),
    }
    counts["step"] = sum(counts.values())
    counts["predict"] = cells * attention_forward + N_PATCHES * (PATCH_SIZE**2 * feature_forward + dense)
    return counts


# ---------------------------------------------------------------------------------------------------------
# One implementation in this process: attention_sampling.train_step itself through its `lap` callback, or
# benchmarks/torch_model.py's train_step, the yardstick
# ---------------------------------------------------------------------------------------------------------

def layer_label(layer):
    kind = type(layer).__name__
    if kind == "Conv2d":
        kh, kw, c_in, c_out = layer.params["weight"].shape
        return f"Conv2d {kh}x{kw} {c_in}->{c_out}"
    if kind == "AvgPool2d":
        return f"AvgPool2d {layer.factor}"
    return kind


def time_each_layer(model, record):
    """Wrap every layer's forward and backward so their seconds add into record['<network> <i> <layer>|<pass>'].

    Instance attributes shadow the class's methods, so Sequential and train_step call the wrappers unchanged.
    """
    named = [("attention pool", model.attention.pool)]
    named += [(f"attention {i} {layer_label(layer)}", layer) for i, layer in enumerate(model.attention.layers)]
    named += [(f"features {i} {layer_label(layer)}", layer) for i, layer in enumerate(model.features.layers)]
    for label, layer in named:
        for method in ("forward", "backward"):
            def timed(*args, _inner=getattr(layer, method), _key=f"{label}|{method}", **kwargs):
                start = time.perf_counter()
                result = _inner(*args, **kwargs)
                record[_key] = record.get(_key, 0.0) + time.perf_counter() - start
                return result
            setattr(layer, method, timed)


def run_here(impl, scale, args):
    """Measure one implementation's step in this process -> a JSON-able dict."""
    if impl == "numpy":
        from attention_sampling import train_step
        from attention_sampling.application.memory import keep_freed_memory

        keep_freed_memory()  # as train.py does: the step's arrays reuse the last step's pages
        model, optimizer, images, labels, rng = numpy_setup(scale, args.seed)
        layer_seconds = {}
        time_each_layer(model, layer_seconds)

        def step(laps):
            layer_seconds.clear()
            train_step(model, optimizer, images, labels, rng, replicas=REPLICAS, entropy_weight=ENTROPY_WEIGHT,
                       lap=laps.lap)
            laps.times.update(layer_seconds)  # "<layer>|forward" keys beside the laps, medians alike
    else:
        from benchmarks import torch_model

        model, optimizer, images, labels, generator = torch_setup(scale, args.seed, args.torch_threads)

        def step(laps):
            torch_model.train_step(model, optimizer, images, labels, generator, REPLICAS, ENTROPY_WEIGHT, laps.lap)

    # --first-call-only: the first train_step alone, no warm-up.
    repeat = 0 if args.first_call_only else args.repeat
    measured = measure(step, 1 if args.first_call_only else args.warmup, repeat, laps=True)
    medians = measured["median"]
    return {"rss_before": measured["rss_before"], "peak_rss": measured["peak_rss"],
            "first_step": measured["first"]["total"], "step": medians.get("total"),
            "pieces": {name: seconds for name, seconds in medians.items() if "|" not in name and name != "total"},
            "layers": {name: seconds for name, seconds in medians.items() if "|" in name}}


# ---------------------------------------------------------------------------------------------------------
# The driver: checks, one fresh process per measurement, tables
# ---------------------------------------------------------------------------------------------------------

def torch_check_case(seed):
    """Small batch: one training.train_step, and the cells it drew (the same model and generator looked at
    the same images again) -> (images, labels, cells, initial params, initial buffers, model, metrics)."""
    import nn
    from attention_sampling import AttentionSamplingModel, look, train_step

    images, labels = make_batch(seed, n=2, height=96, width=120)
    settings = dict(scale=4, patch_size=PATCH_SIZE, n_patches=5, seed=seed, attention_padding=ATTENTION_PADDING)
    model, twin = AttentionSamplingModel(N_CLASSES, **settings), AttentionSamplingModel(N_CLASSES, **settings)
    initial = {key: value.copy() for key, value in model.params.items()}
    initial_buffers = {key: value.copy() for key, value in model.buffers.items()}
    cells = look(twin, images, np.random.default_rng(seed), 2, training=True).cells
    metrics = train_step(model, nn.Adam(LEARNING_RATE), images, labels, np.random.default_rng(seed),
                         replicas=2, entropy_weight=ENTROPY_WEIGHT)
    return images, labels, cells, initial, initial_buffers, model, metrics


def check_torch_matches(seed, case):
    """The same weights and cells through torch_model.train_step -> (largest gradient difference, loss difference)."""
    import torch

    from benchmarks import torch_model

    images, labels, cells, params, buffers, numpy_model, numpy_metrics = case
    model = torch_model.AttentionSampling(N_CLASSES, scale=4, patch_size=PATCH_SIZE, n_patches=5,
                                          attention_padding=ATTENTION_PADDING)
    torch_model.load_numpy_params(model, params, buffers)
    optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
    metrics = torch_model.train_step(model, optimizer, torch.from_numpy(images), torch.from_numpy(labels),
                                     replicas=2, entropy_weight=ENTROPY_WEIGHT, cells=torch.from_numpy(cells))
    torch_grads = torch_model.numpy_grads(model)
    # Relative to the largest gradient entry of the same network: the biases before a batch norm or the
    # spatial softmax have a gradient of exactly zero, which both sides compute as float32 noise.
    scale = {network: max(float(np.max(np.abs(value))) for key, value in numpy_model.grads.items()
                          if key.startswith(network)) for network in ("attention", "features")}
    worst = max(float(np.max(np.abs(value - torch_grads[key]))) / scale[key.split(".")[0]]
                for key, value in numpy_model.grads.items())
    return worst, abs(metrics["loss"] - numpy_metrics["loss"])


def run_child(impl, scale, args, numba_cache, first_call_only=False):
    """This module in a fresh process for one (implementation, scale) -> its JSON result."""
    arguments = ["--impl", impl, "--scales", scale, "--repeat", args.repeat, "--warmup", args.warmup,
                 "--seed", args.seed, "--torch-threads", args.torch_threads, "--build", args.build] + \
        (["--direct"] if args.direct else [])
    if first_call_only:
        arguments.append("--first-call-only")
    what = "first call only" if first_call_only else f"{args.warmup} warm-up + {args.repeat} timed steps"
    return run_fresh("benchmarks.bench_step", arguments, numba_cache, f"{impl} c={scale} ({what})")


def ratio(numerator, denominator):
    return None if numerator is None or not denominator else f"{numerator / denominator:.2f}"


def group_seconds(pieces, names):
    present = [pieces[name] for name in names if name in pieces]
    return sum(present) if present else None


def print_step_table(scale, results):
    macs = step_macs(scale)
    numpy_result, torch_result = results["numpy"], results.get("torch")
    impls = ["numpy"] + (["torch"] if torch_result else [])
    h, w = HEIGHT // scale, WIDTH // scale
    patches = N_IMAGES * REPLICAS * N_PATCHES
    print(f"\nc = {scale}: attention map {h}x{w}; {patches} patches of {PATCH_SIZE}x{PATCH_SIZE}; "
          f"{macs['step'] / 1e9:.1f} GMAC per step (attention {macs['attention forward'] / 1e9:.2f} forward + "
          f"{macs['attention backward'] / 1e9:.2f} backward, features {macs['feature forward'] / 1e9:.2f} + "
          f"{macs['feature backward'] / 1e9:.2f})")

    def row(label, numpy_value, torch_value, show=ms):
        cells = [label, show(numpy_value)]
        if torch_result:
            cells += [show(torch_value), ratio(numpy_value, torch_value)]
        return cells

    rows = []
    for group, names in GROUPS:
        rows.append(row(group, group_seconds(numpy_result["pieces"], names),
                        torch_result and group_seconds(torch_result["pieces"], names)))
        if len(names) > 1:
            for name in names:
                if name in numpy_result["pieces"] or (torch_result and name in torch_result["pieces"]):
                    rows.append(row("  " + name, numpy_result["pieces"].get(name),
                                    torch_result and torch_result["pieces"].get(name)))
    rows.append(row("whole step (median of steps)", numpy_result["step"], torch_result and torch_result["step"]))

    def gflops(result):
        return f"{2 * macs['step'] / result['step'] / 1e9:.1f}" if result else None

    rows.append([" GFLOP/s of the step", gflops(numpy_result)] + ([gflops(torch_result), None] if torch_result else []))
    rows.append(row("RSS before the first step, MB", numpy_result["rss_before"],
                    torch_result and torch_result["rss_before"], show=mb))
    rows.append(row("peak RSS, MB", numpy_result["peak_rss"], torch_result and torch_result["peak_rss"], show=mb))
    headers = ["piece (ms)"] + [f"{impl}" for impl in impls] + (["numpy/torch"] if torch_result else [])
    print_table(headers, rows)


def print_first_call_table(results, compile_result, first_scale):
    rows = []
    for scale, by_impl in results.items():
        compiled = compile_result["first_step"] if scale == first_scale else None
        torch_result = by_impl.get("torch")
        rows.append([f"c = {scale}", f"{compiled:.2f}" if compiled is not None else None,
                     f"{by_impl['numpy']['first_step']:.2f}", f"{by_impl['numpy']['step']:.2f}",
                     torch_result and f"{torch_result['first_step']:.2f}",
                     torch_result and f"{torch_result['step']:.2f}"])
    print("\nFirst train_step in a fresh process, seconds (the median step beside it for scale)")
    print_table(["", "numpy, compiling", "numpy, cache loaded", "numpy median", "torch first", "torch median"], rows)


def print_layer_table(results):
    scales = list(results)
    labels = list(dict.fromkeys(key.split("|")[0] for scale in scales for key in results[scale]["numpy"]["layers"]))
    rows = []
    for label in labels:
        cells = [label]
        for scale in scales:
            layers = results[scale]["numpy"]["layers"]
            cells += [ms(layers.get(f"{label}|forward")), ms(layers.get(f"{label}|backward"))]
        rows.append(cells)
    headers = ["numpy layer (ms)"] + [f"c={scale} {p}" for scale in scales for p in ("forward", "backward")]
    print("\nNumPy per layer inside the step (median ms; the feature layers see the same 640 patches at every c)")
    print_table(headers, rows)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=10, help="timed steps per measurement (default 10)")
    parser.add_argument("--warmup", type=int, default=2,
                        help="untimed steps first, the first call included (default 2)")
    parser.add_argument("--scales", type=int, nargs="+", default=[4, 8], help="attention down-scaling c (default 4 8)")
    parser.add_argument("--no-torch", action="store_true", help="skip PyTorch even when it is importable")
    parser.add_argument("--torch-threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--impl", choices=["numpy", "torch"],
                        help="measure one implementation at one scale in this process and print JSON")
    parser.add_argument("--first-call-only", action="store_true", help="with --impl: time only the first train_step")
    parser.add_argument("--direct", action="store_true",
                        help="NumPy: every convolution by the direct kernel, none by Winograd's (nn/winograd.py), to "
                             "compare the two")
    parser.add_argument("--build", choices=["pool", "numba"], default="pool",
                        help="NumPy: the build of the kernels inference shares (nn/threads.py; default pool, as train.py)")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    if any(scale < 1 for scale in args.scales):
        parser.error("--scales must be positive integers")

    from nn import conv_kernels, threads

    # Here, so that the child processes (--impl) and this one's check against PyTorch time the same kernels.
    conv_kernels.WINOGRAD = not args.direct
    threads.use(args.build)
    if args.impl:
        if len(args.scales) != 1:
            parser.error("--impl measures one scale: give exactly one --scales value")
        print(json.dumps(run_here(args.impl, args.scales[0], args)))
        return 0

    torch = import_torch(args.no_torch, args.torch_threads)
    use_torch = torch is not None
    print(python_environment(torch))
    print("convolutions: " + ("the direct kernel only (--direct)" if args.direct else
                              "Winograd F(2x2, 3x3) where it applies (3x3, 8, 16 or 32 channels), else the direct kernel")
          + f"; kernels' build: {args.build}")
    print(f"{N_IMAGES} images {HEIGHT}x{WIDTH}x{CHANNELS} float32, {REPLICAS} replicas x P={N_PATCHES} patches of "
          f"S={PATCH_SIZE}, {N_CLASSES} classes; median of {args.repeat} steps after {args.warmup} warm-up")

    if use_torch:
        worst, loss_difference = check_torch_matches(args.seed, torch_check_case(args.seed))
        print(f"check: PyTorch on the same weights and cells: |loss difference| {loss_difference:.1e}, "
              f"largest gradient difference {worst:.1e} "
              f"of the network's largest gradient entry")
        print("torch: channels_last, float32, autograd")
    else:
        print("PyTorch not importable or --no-torch: numpy only")

    results = {}
    with tempfile.TemporaryDirectory(prefix="bench_step_numba_") as numba_cache:
        compile_result = run_child("numpy", args.scales[0], args, numba_cache, first_call_only=True)
        for scale in args.scales:
            results[scale] = {"numpy": run_child("numpy", scale, args, numba_cache)}
            if use_torch:
                results[scale]["torch"] = run_child("torch", scale, args, numba_cache)

    for scale in args.scales:
        print_step_table(scale, results[scale])
    if use_torch:
        print("(torch: the REINFORCE and entropy rows only build those loss terms; autograd computes their "
              "gradients inside 'attention net backward')")
    print_first_call_table(results, compile_result, args.scales[0])
    print_layer_table(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
