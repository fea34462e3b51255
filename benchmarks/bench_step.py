"""Time one whole training step of attention sampling at the paper's settings, piece by piece, against PyTorch.

    python benchmarks/bench_step.py                   # c = 4 and c = 8, 10 timed steps each, PyTorch if importable
    python benchmarks/bench_step.py --scales 4 --repeat 5 --no-torch
    python benchmarks/bench_step.py --impl numpy --scales 4     # one implementation here, JSON on stdout

The workload: 8 images of 1040 x 1388 x 3 float32, 3 classes, each image looked at 4 times (replicas) with
P = 20 patches of S = 50 pixels, so 640 patches per step; the attention map is the image pooled by c.

Pieces. The NumPy step is training.train_step written out line by line (numpy_train_step below) with a
clock read between its pieces; the PyTorch step is benchmarks/torch_model.py's train_step, which takes the
same laps. A row is the median over --repeat steps after --warmup untimed ones; the step's own row is the
median of whole steps, so it need not equal the sum of the rows above it. The per-layer table wraps each
NumPy layer's forward and backward with a clock (a few microseconds per call).

Inference is not here: benchmarks/run.py measures it in a process that only predicts.

Memory. Each (implementation, scale) runs in its own fresh process (this script with --impl), so its peak
resident memory (VmHWM) is that implementation's alone; "RSS before" is the same process after imports,
images and model, before the first step.

First call. A fresh process's first train_step pays for Numba compiling the kernels or loading them from its
cache (PyTorch: one-off allocator and oneDNN set-up). Both are shown: one process compiles into an empty
Numba cache directory, and the timed processes then load from it.

Work. GFLOP/s is 2 x the analytic multiply-adds of the convolutions and the dense layer over the median
step: forward, plus dL/dw of every layer and dL/dx of every layer but each network's first (nothing needs
the image's gradient). Pooling, batch norm, activations, sampling and extraction are not counted.

Before timing, on a small batch, two checks are printed (never asserted): the piece-by-piece step leaves the
model exactly as training.train_step does, and the PyTorch model, given the same weights and the same cells,
gives the same loss and gradients. Times are reported, never asserted on.
"""
import argparse
import importlib.util
import json
import os
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)                   # common.py, torch_model.py
sys.path.insert(1, os.path.dirname(HERE))  # the project root: nn/ and attention_sampling/, without installing

from common import (Laps, current_rss_bytes, mb, median_of_runs, ms, peak_rss_bytes, print_table,  # noqa: E402
                    python_environment, run_fresh)

# The paper's setting (Katharopoulos & Fleuret 2019, colon-cancer histology): see docs/method.md.
N_IMAGES, HEIGHT, WIDTH, CHANNELS = 8, 1040, 1388, 3
N_CLASSES = 3
REPLICAS = 4
N_PATCHES = 20
PATCH_SIZE = 50
ENTROPY_WEIGHT = 0.01
LEARNING_RATE = 1e-3

# (kernel size, C_in, C_out) of each convolution, as in attention_sampling/models.py.
ATTENTION_CONVS = [(3, 3, 8), (3, 8, 8), (3, 8, 8), (1, 8, 1)]
FEATURE_CONVS = [(3, 3, 16), (3, 16, 16), (3, 16, 16), (3, 16, 16)]
FEATURE_DENSE = (16, N_CLASSES)

# The table's rows and the laps each one sums; a row with more than one lap lists them indented below it.
GROUPS = [
    ("attention forward", ["attention net forward"]),
    ("sampling + extraction", ["sample cells", "gather a_i", "extract patches"]),
    ("feature forward", ["feature net forward", "eq.1 + cross-entropy"]),
    ("feature backward", ["feature backward"]),
    ("attention backward", ["rewards + advantage", "REINFORCE gradient", "entropy gradient",
                            "attention net backward"]),
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
    model = AttentionSamplingModel(N_CLASSES, scale=scale, patch_size=PATCH_SIZE, n_patches=N_PATCHES, seed=seed)
    return model, nn.Adam(LEARNING_RATE), images, labels, np.random.default_rng(seed)


def torch_setup(scale, seed, threads, n=N_IMAGES):
    """The same for PyTorch (benchmarks/torch_model.py), on `threads` threads; the batch as tensors."""
    import torch
    import torch_model

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    images, labels = make_batch(seed, n=n)
    model = torch_model.AttentionSampling(N_CLASSES, scale=scale, patch_size=PATCH_SIZE, n_patches=N_PATCHES)
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
# NumPy + Numba: the project's own step
# ---------------------------------------------------------------------------------------------------------

def numpy_train_step(model, optimizer, images, labels, rng, replicas, entropy_weight, lap):
    """attention_sampling.training.train_step, piece by piece, calling lap(name) after each piece.

    Keep it in step with training.py: check_numpy_replica() verifies that both leave the model identical.
    Returns (metrics, cells).
    """
    import nn
    from attention_sampling.objective import (attention_entropy, entropy_gradient, patch_rewards,
                                              reinforce_gradient, standardised_advantage)
    from attention_sampling.patches import extract_patches
    from attention_sampling.sampling import sample_cells
    from attention_sampling.training import classify_patches, feature_loss_backward

    n = images.shape[0]
    p = model.n_patches
    labels = np.asarray(labels, dtype=np.int64)

    # look(): the attention net once per image, then K cells and their patches.
    log_attention = model.attention.forward(images, True)
    lap("attention net forward")
    attention = np.exp(log_attention)
    cells = sample_cells(attention, replicas * p, rng)
    lap("sample cells")
    sampled_weights = attention[np.arange(n)[:, None], cells[..., 0], cells[..., 1]]
    lap("gather a_i")
    sampled_patches = extract_patches(images, cells, model.patch_size, model.scale)
    lap("extract patches")

    replica_labels = np.repeat(labels, replicas)
    weights = sampled_weights.reshape(n * replicas, p)
    patches = sampled_patches.reshape((n * replicas, p) + sampled_patches.shape[2:])
    features, logits = classify_patches(model, patches, weights, training=True)
    lap("feature net forward")
    loss_fn = nn.CrossEntropyLoss()
    loss = loss_fn.forward(logits, replica_labels)
    lap("eq.1 + cross-entropy")

    rewards = patch_rewards(features, replica_labels).reshape(n, replicas * p)
    advantage = standardised_advantage(rewards)
    lap("rewards + advantage")
    map_shape = log_attention.shape[1:]
    grad_log_attention = reinforce_gradient(advantage, cells, map_shape)
    lap("REINFORCE gradient")
    entropy = attention_entropy(log_attention)
    grad_log_attention -= entropy_weight * entropy_gradient(log_attention)
    lap("entropy gradient")
    model.attention.backward((grad_log_attention / n).astype(log_attention.dtype))
    lap("attention net backward")
    # After the attention net's backward, as in training.py: its activations are freed first (peak memory).
    feature_loss_backward(model, features, weights, replica_labels, loss_fn)
    lap("feature backward")

    optimizer.step(model.params, model.grads)
    lap("optimizer")

    metrics = {"loss": loss, "accuracy": float(np.mean(logits.argmax(axis=1) == replica_labels)),
               "reward": float(rewards.mean()), "entropy": float(entropy.mean())}
    return metrics, cells


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
    import time

    named = [("attention pool", model.attention.pool)]
    named += [(f"attention {i} {layer_label(layer)}", layer) for i, layer in enumerate(model.attention.layers)]
    named += [(f"features {i} {layer_label(layer)}", layer) for i, layer in enumerate(model.features.layers)]
    for label, layer in named:
        for method in ("forward", "backward"):
            def timed(*args, _inner=getattr(layer, method), _key=f"{label}|{method}"):
                start = time.perf_counter()
                result = _inner(*args)
                record[_key] = record.get(_key, 0.0) + time.perf_counter() - start
                return result
            setattr(layer, method, timed)


def run_numpy(scale, args):
    """Measure the NumPy step in this process -> a JSON-able dict."""
    model, optimizer, images, labels, rng = numpy_setup(scale, args.seed)
    result = {"rss_before": current_rss_bytes()}

    def step():
        laps = Laps()
        numpy_train_step(model, optimizer, images, labels, rng, REPLICAS, ENTROPY_WEIGHT, laps.lap)
        return laps

    result["first_step"] = step().total
    if args.first_call_only:
        return result

    for _ in range(max(0, args.warmup - 1)):
        step()
    record = {}
    time_each_layer(model, record)
    runs, layer_runs = [], []
    for _ in range(args.repeat):
        record.clear()
        runs.append(step())
        layer_runs.append(dict(record))
    result["pieces"] = median_of_runs([laps.times for laps in runs])
    result["step"] = float(np.median([laps.total for laps in runs]))
    result["layers"] = median_of_runs(layer_runs)
    result["peak_rss"] = peak_rss_bytes()
    return result


# ---------------------------------------------------------------------------------------------------------
# PyTorch: the yardstick (benchmarks/torch_model.py)
# ---------------------------------------------------------------------------------------------------------

def run_torch(scale, args):
    """Measure the PyTorch step in this process -> a JSON-able dict."""
    import torch
    import torch_model

    model, optimizer, images, labels, generator = torch_setup(scale, args.seed, args.torch_threads)
    result = {"rss_before": current_rss_bytes(), "threads": torch.get_num_threads(), "version": torch.__version__}

    def step():
        laps = Laps()
        torch_model.train_step(model, optimizer, images, labels, generator, REPLICAS, ENTROPY_WEIGHT, laps.lap)
        return laps

    result["first_step"] = step().total
    if args.first_call_only:
        return result
    for _ in range(max(0, args.warmup - 1)):
        step()
    runs = [step() for _ in range(args.repeat)]
    result["pieces"] = median_of_runs([laps.times for laps in runs])
    result["step"] = float(np.median([laps.total for laps in runs]))
    result["peak_rss"] = peak_rss_bytes()
    return result


# ---------------------------------------------------------------------------------------------------------
# The driver: checks, one fresh process per measurement, tables
# ---------------------------------------------------------------------------------------------------------

def check_numpy_replica(seed):
    """Small batch: numpy_train_step and training.train_step from the same state -> (identical?, cells, models)."""
    import nn
    from attention_sampling.models import AttentionSamplingModel
    from attention_sampling.training import train_step

    images, labels = make_batch(seed, n=2, height=96, width=120)
    settings = dict(scale=4, patch_size=PATCH_SIZE, n_patches=5, seed=seed)
    reference, replica = AttentionSamplingModel(N_CLASSES, **settings), AttentionSamplingModel(N_CLASSES, **settings)
    initial = {key: value.copy() for key, value in replica.params.items()}
    initial_buffers = {key: value.copy() for key, value in replica.buffers.items()}
    expected = train_step(reference, nn.Adam(LEARNING_RATE), images, labels, np.random.default_rng(seed),
                          replicas=2, entropy_weight=ENTROPY_WEIGHT)
    metrics, cells = numpy_train_step(replica, nn.Adam(LEARNING_RATE), images, labels, np.random.default_rng(seed),
                                      2, ENTROPY_WEIGHT, lap=lambda name: None)
    identical = metrics == expected and all(np.array_equal(reference.params[key], value)
                                            for key, value in replica.params.items())
    return identical, (images, labels, cells, initial, initial_buffers, replica, metrics)


def check_torch_matches(seed, case):
    """The same weights and cells through torch_model.train_step -> (largest gradient difference, loss difference)."""
    import torch
    import torch_model

    images, labels, cells, params, buffers, numpy_model, numpy_metrics = case
    model = torch_model.AttentionSampling(N_CLASSES, scale=4, patch_size=PATCH_SIZE, n_patches=5)
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
    """This script in a fresh process for one (implementation, scale) -> its JSON result."""
    arguments = ["--impl", impl, "--scales", scale, "--repeat", args.repeat, "--warmup", args.warmup,
                 "--seed", args.seed, "--torch-threads", args.torch_threads]
    if first_call_only:
        arguments.append("--first-call-only")
    what = "first call only" if first_call_only else f"{args.warmup} warm-up + {args.repeat} timed steps"
    return run_fresh(__file__, arguments, numba_cache, f"{impl} c={scale} ({what})")


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
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    if any(scale < 1 for scale in args.scales):
        parser.error("--scales must be positive integers")

    if args.impl:
        if len(args.scales) != 1:
            parser.error("--impl measures one scale: give exactly one --scales value")
        measure = run_numpy if args.impl == "numpy" else run_torch
        print(json.dumps(measure(args.scales[0], args)))
        return 0

    use_torch = not args.no_torch and importlib.util.find_spec("torch") is not None
    print(python_environment())
    print(f"{N_IMAGES} images {HEIGHT}x{WIDTH}x{CHANNELS} float32, {REPLICAS} replicas x P={N_PATCHES} patches of "
          f"S={PATCH_SIZE}, {N_CLASSES} classes; median of {args.repeat} steps after {args.warmup} warm-up")

    identical, case = check_numpy_replica(args.seed)
    print(f"check: the piece-by-piece step leaves the model as training.train_step does: "
          f"{'identical' if identical else 'DIFFERENT - update numpy_train_step to match training.py'}")
    if use_torch:
        import torch
        torch.set_num_threads(args.torch_threads)
        worst, loss_difference = check_torch_matches(args.seed, case)
        print(f"check: PyTorch on the same weights and cells: |loss difference| {loss_difference:.1e}, "
              f"largest gradient difference {worst:.1e} "
              f"of the network's largest gradient entry")
        print(f"torch {torch.__version__}, {args.torch_threads} threads, channels_last")
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
