"""Time the two convolution stacks of attention sampling, forward and backward, against PyTorch if present.

    python -m benchmarks.bench_nn                 # both workloads, 10 timed runs each
    python -m benchmarks.bench_nn --repeat 20 --workloads feature
    python -m benchmarks.bench_nn --sparse        # where Conv2d's sparse backward starts to pay

Workloads (the shapes the method runs at every training step):
  feature    640 patches 50x50x3 -> 4 x [Conv2d 3x3·16 'same' + LeakyReLU]
  attention  8 images 260x347x3  -> 3 x [Conv2d 3x3·8 'same' + BatchNorm2d + LeakyReLU]
  attention-reflect  the same with 'reflect' padding, as train.py builds the attention network

--infer: the fused inference pass alone (nn.Sequential.infer: batch norm folded in; PyTorch in eval mode
under no_grad), e.g. `--infer --batch 1` for one image as predict.py runs it.

--padded-copy: 'reflect' layers materialise the padded map and run the direct "valid" kernel, as they all
did before nn/winograd.py read the border itself (conv_kernels.border_applies forced False).

Each row is the median wall time over --repeat runs after --warmup untimed ones; "first" is the first of
those, the very first forward+backward (Numba compilation or cache loading, BLAS start-up). GFLOP/s counts
only the convolutions' multiply-adds (2 FLOP each): forward N·H'·W'·kh·kw·C_in·C_out per layer,
backward twice that (dL/dw and dL/dx). PyTorch, when importable, runs the same layers with the same
weights in this process: float32, torch.channels_last, input with requires_grad so it also computes
dL/dx, and `--torch-threads` threads. The script reports; it never asserts on time.

--sparse: a Conv2d 3x3 16->16 and the first layer's 3->16 on 640 patches of 50x50, its
backward from a dL/dy that is nonzero at a random fraction of the positions, once by the dense kernels
and once by the sparse path (nn.conv.SPARSE_FRACTION and SPARSE_FRACTION_WEIGHTS_ONLY forced to 0 and to
1): the crossovers set them. Behind the global max pool the real fraction is at most 16 / 2500 = 0.6% for the last
layer and about 5% for the one below it.
"""
import argparse
import statistics
import sys

import numpy as np

import nn
import nn.conv
from benchmarks.common import import_torch, print_table, python_environment, time_calls

NEGATIVE_SLOPE = 0.01


def feature_net(rng, dtype):
    layers, c_in = [], 3
    for _ in range(4):
        layers += [nn.Conv2d(c_in, 16, 3, "same", rng=rng, negative_slope=NEGATIVE_SLOPE, dtype=dtype),
                   nn.LeakyReLU(NEGATIVE_SLOPE, inplace=True)]  # as the models: fused in training
        c_in = 16
    return nn.Sequential(*layers)


def attention_net(rng, dtype, padding="same"):
    layers, c_in = [], 3
    for _ in range(3):
        layers += [nn.Conv2d(c_in, 8, 3, padding, rng=rng, negative_slope=NEGATIVE_SLOPE, dtype=dtype),
                   nn.BatchNorm2d(8, dtype=dtype), nn.LeakyReLU(NEGATIVE_SLOPE, inplace=True)]
        c_in = 8
    return nn.Sequential(*layers)


WORKLOADS = {
    # name: (builder, input shape (N, H, W, C), description)
    "feature": (feature_net, (640, 50, 50, 3), "{n} x 50x50x3, 4 x [conv3x3·16 + LeakyReLU]"),
    "attention": (attention_net, (8, 260, 347, 3), "{n} x 260x347x3, 3 x [conv3x3·8 + BN + LeakyReLU]"),
    "attention-reflect": (lambda rng, dtype: attention_net(rng, dtype, "reflect"), (8, 260, 347, 3),
                          "{n} x 260x347x3, 3 x [conv3x3·8 reflect + BN + LeakyReLU]"),
}


def conv_macs(model, input_shape):
    """Forward multiply-adds of every Conv2d in `model` for an input of `input_shape`, and the output's shape
    (the other layers keep the shape)."""
    n, h, w, c = input_shape
    total = 0
    for layer in model.layers:
        if isinstance(layer, nn.Conv2d):
            kh, kw, c_in, c = layer.params["weight"].shape
            if layer.padding == "valid":
                h, w = h - kh + 1, w - kw + 1
            total += n * h * w * kh * kw * c_in * c
    return total, (n, h, w, c)


def to_torch(model):
    """The same layers and weights as a torch.nn.Sequential in channels-last memory format."""
    import torch

    from benchmarks import torch_model

    modules = []
    for layer in model.layers:
        if isinstance(layer, nn.Conv2d):
            weight = layer.params["weight"]
            kh, kw, c_in, c_out = weight.shape
            if layer.padding != "valid" and (kh % 2 == 0 or kw % 2 == 0):
                raise ValueError("the torch mirror handles odd kernels only")
            padding = 0 if layer.padding == "valid" else (kh // 2, kw // 2)
            mode = torch_model.PADDING_MODES.get(layer.padding, "zeros")  # "same", "valid": zeros
            conv = torch.nn.Conv2d(c_in, c_out, (kh, kw), padding=padding, padding_mode=mode,
                                   bias="bias" in layer.params)
            with torch.no_grad():
                # ours (kh, kw, C_in, C_out) -> torch (C_out, C_in, kh, kw); both are cross-correlations.
                conv.weight.copy_(torch.from_numpy(np.ascontiguousarray(weight.transpose(3, 2, 0, 1))))
                if conv.bias is not None:
                    conv.bias.copy_(torch.from_numpy(layer.params["bias"]))
            modules.append(conv)
        elif isinstance(layer, nn.BatchNorm2d):
            modules.append(torch.nn.BatchNorm2d(layer.params["gamma"].shape[0], eps=layer.eps,
                                                momentum=layer.momentum))
        elif isinstance(layer, nn.LeakyReLU):
            modules.append(torch.nn.LeakyReLU(layer.negative_slope))
        else:
            raise TypeError(f"no torch mirror for {layer!r}")
    return torch.nn.Sequential(*modules).float().to(memory_format=torch.channels_last).train()


def forward_backward_times(step, warmup, repeat):
    """time_calls of a step that laps "fwd" and "bwd" -> seconds of the first call's forward+backward, and the
    medians of forward, backward and their sum."""
    first, runs = time_calls(step, warmup, repeat, laps=True)
    return {"first": first["fwd"] + first["bwd"], "fwd": statistics.median(run["fwd"] for run in runs),
            "bwd": statistics.median(run["bwd"] for run in runs),
            "fwd+bwd": statistics.median(run["fwd"] + run["bwd"] for run in runs)}


def sparse_crossover(args):
    """Dense and sparse backward against the density of dL/dy, for the feature network's two kinds of
    convolution: 16->16 with dL/dx, and its first, 3->16 without (nothing needs the image's gradient)."""
    rng = np.random.default_rng(args.seed)
    original = nn.conv.SPARSE_FRACTION, nn.conv.SPARSE_FRACTION_WEIGHTS_ONLY
    rows = []
    try:
        for c_in, input_gradient in ((16, True), (3, False)):
            x = rng.standard_normal((640, 50, 50, c_in), dtype=np.float32)
            layer = nn.Conv2d(c_in, 16, 3, rng=args.seed, input_gradient=input_gradient)
            y = layer.forward(x)
            name = f"{c_in}->16" + ("" if input_gradient else ", no dL/dx")
            for density in (0.0064, 0.03, 0.06, 0.1, 0.15, 0.25):
                grad_out = rng.standard_normal(y.shape, dtype=np.float32) * (rng.random(y.shape[:3] + (1,)) < density)
                times = {}
                for path, fraction in (("dense", 0.0), ("sparse", 1.0)):
                    nn.conv.SPARSE_FRACTION = nn.conv.SPARSE_FRACTION_WEIGHTS_ONLY = fraction

                    def backward():
                        layer.input = x  # backward releases its cache: give it the input again
                        layer.backward(grad_out)

                    times[path] = statistics.median(time_calls(backward, args.warmup, args.repeat)[1])
                rows.append([name, f"{density:.2%}", f"{times['dense'] * 1e3:.1f}", f"{times['sparse'] * 1e3:.1f}",
                             f"{times['sparse'] / times['dense']:.2f}"])
    finally:
        nn.conv.SPARSE_FRACTION, nn.conv.SPARSE_FRACTION_WEIGHTS_ONLY = original
    print_table(["Conv2d 3x3", "nonzero positions", "dense ms", "sparse ms", "sparse/dense"], rows, align="lrrrr")
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=10, help="timed runs per measurement (default 10)")
    parser.add_argument("--warmup", type=int, default=2,
                        help="untimed runs first, including the first call (default 2)")
    parser.add_argument("--workloads", default="feature,attention",
                        help=f"comma-separated, from {sorted(WORKLOADS)} (default feature,attention)")
    parser.add_argument("--batch", type=int, default=None, help="override the batch size N of every workload")
    parser.add_argument("--torch-threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch comparison")
    parser.add_argument("--sparse", action="store_true",
                        help="only the sparse backward's crossover table (see above)")
    parser.add_argument("--infer", action="store_true", help="time the fused inference pass instead (above)")
    parser.add_argument("--padded-copy", action="store_true",
                        help="'reflect' layers: a padded copy and the direct kernel, not Winograd's border (above)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.padded_copy:
        from nn import conv_kernels

        conv_kernels.border_applies = lambda x_shape, weight_shape: False
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    if args.sparse:
        print(python_environment())
        print(f"Conv2d backward on 640 patches of 50x50, median of {args.repeat} after {args.warmup} warm-up")
        return sparse_crossover(args)
    names = [name.strip() for name in args.workloads.split(",") if name.strip()]
    unknown = [name for name in names if name not in WORKLOADS]
    if unknown:
        parser.error(f"--workloads: unknown {unknown}, choose from {sorted(WORKLOADS)}")
    torch = import_torch(args.no_torch, args.torch_threads)

    print(python_environment(torch))
    if torch is None:
        print("PyTorch not importable or --no-torch: PyTorch columns skipped")
    print(f"median of {args.repeat} runs after {args.warmup} warm-up; ms, and GFLOP/s of the convolutions")
    rows, notes = [], []
    for name in names:
        builder, shape, description = WORKLOADS[name]
        if args.batch is not None:
            shape = (args.batch,) + shape[1:]
        rng = np.random.default_rng(args.seed)
        model = builder(rng, np.float32)
        x = rng.standard_normal(shape, dtype=np.float32)
        macs, output_shape = conv_macs(model, shape)
        grad_out = rng.standard_normal(output_shape, dtype=np.float32)
        flops = {"fwd": 2 * macs, "bwd": 4 * macs, "fwd+bwd": 6 * macs}

        def ours(laps):
            if args.infer:
                model.infer(x)
                laps.lap("fwd")
                laps.lap("bwd")
                return
            model.forward(x, training=True)
            laps.lap("fwd")
            model.backward(grad_out)
            laps.lap("bwd")

        # The very first call pays for Numba compilation (or loading its cache): time_calls reports it apart.
        results = {"numpy": forward_backward_times(ours, args.warmup, args.repeat)}
        notes.append(f"{name}: {description.format(n=shape[0])}, {2 * macs / 1e9:.2f} GFLOP forward")
        if torch is not None:
            torch_model = to_torch(model)
            x_torch = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)
            x_torch.requires_grad_(True)
            grad_torch = torch.from_numpy(grad_out).permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)

            def theirs(laps):
                if args.infer:
                    with torch.no_grad():
                        torch_model.eval()(x_torch)
                    laps.lap("fwd")
                    laps.lap("bwd")
                    return
                x_torch.grad = None
                torch_model.zero_grad(set_to_none=True)
                laps.lap("zero grad")
                y = torch_model(x_torch)
                laps.lap("fwd")
                y.backward(grad_torch)
                laps.lap("bwd")

            results["torch"] = forward_backward_times(theirs, args.warmup, args.repeat)
            # Same weights, same input: the outputs agree up to float32 summation order (a sanity check only).
            with torch.no_grad():
                reference = torch_model(x_torch).permute(0, 2, 3, 1).numpy()
            difference = float(np.max(np.abs((model.infer(x) if args.infer else model.forward(x)) - reference)))
            notes.append(f"{name}: max |numpy - torch| forward output: {difference:.2e}")

        for impl, timing in results.items():
            for index, step in enumerate(("fwd",) if args.infer else ("fwd", "bwd", "fwd+bwd")):
                seconds = timing[step]
                ratio = f"{seconds / results['torch'][step]:.2f}" if impl == "numpy" and "torch" in results else ""
                rows.append([name if index == 0 and impl == "numpy" else "", impl, step,
                             f"{timing['first'] * 1e3:.1f}" if step == "fwd+bwd" or args.infer else "",
                             f"{seconds * 1e3:.1f}", f"{flops[step] / seconds / 1e9:.1f}", ratio])
    print_table(["workload", "impl", "pass", "first ms", "median ms", "GFLOP/s", "numpy/torch"], rows, align="lllrrrr")
    print("\n".join(notes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
