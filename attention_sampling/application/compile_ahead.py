"""The feature network's kernels compiled in a second process while the first step compiles the attention's.

On an empty Numba cache the first training step (or prediction) waits for every kernel it calls to compile,
one after the other: Numba compiles on one thread per process. The feature network's kernels need nothing
the attention network computes, only the patches' size, channels and float type, so `start` compiles them
in a child process, into the shared on-disk cache (nn/numba_cache.py keeps two writers apart), while this
process compiles the attention network's; the step then finds them there when it reaches its patches. On a
warm cache it starts nothing. python -m benchmarks.bench_cold measures both (docs/performance.md, "Cold start").

Prediction runs the kernels' Numba-parallel builds, faster on one image but twice as slow to compile as the
pool's (nn/threads.py). On a cache without them, `start_inference` lets the first predictions run the pool's
builds, which this process compiles, while a child compiles the parallel ones whole; `switch_when_ready` moves
the process over once the child is done (both builds give the same numbers, tests/nn/test_threads.py).

    python -m attention_sampling.application.compile_ahead '{"n_classes": 3, ...}'   # what start() runs
"""
import json
import os
import subprocess
import sys

import numpy as np

from nn import threads


# The largest side of the random image start_inference's child predicts.
MAX_SIDE = 1024


def _spec(model, training):
    dtype = next(iter(model.features.params.values())).dtype
    return {"n_classes": model.n_classes, "in_channels": model.config["in_channels"],
            "patch_size": model.patch_size, "n_patches": model.n_patches, "dtype": dtype.name,
            "feature_width": model.config["feature_width"], "training": bool(training), "build": threads.current()}


def _cached(kernel, dtype):
    """Whether the on-disk cache holds the Numba dispatcher `kernel` compiled for arrays of `dtype`."""
    try:
        index = kernel._cache._cache_file._index_path
        overloads = kernel._cache._cache_file._load_index()
    except (AttributeError, OSError, EOFError):  # another Numba, or no index yet
        return False
    return os.path.exists(index) and any(str(dtype) in str(key[0]) for key in overloads)


def feature_kernels_cached(dtype, width=16, build=None, training=False):
    """Whether the on-disk cache already holds, for `dtype`, the kernel every feature network of `width`
    channels ends in (its last convolution with the global max pool fused in, in the build
    conv_kernels.correlate_build gives a training pass or inference) and its Winograd kernel (the layers before
    it, where it has one) in `build` (default: the one in use, nn/threads.py): on a warm cache there is nothing
    to compile ahead."""
    from nn import conv_kernels, winograd

    block = conv_kernels.channel_block(width)
    last = conv_kernels._correlate_kernel(block, conv_kernels.TILE_PIXELS[block], True)
    return _cached(last.build(conv_kernels.correlate_build(block, True, training) or build), dtype) and (
        width not in winograd.CHANNELS or _cached(_winograd(width, build), dtype))


def inference_kernels_cached(dtype, width=16, build=None):
    """Whether the cache holds, in `build`, the attention network's 8 -> 8 convolutions (Winograd) and the feature
    network's kernels (feature_kernels_cached): the first and last kernels of a prediction that follow the build."""
    first = _winograd(8, build)
    return _cached(first, dtype) and feature_kernels_cached(dtype, width, build)


def _winograd(channels, build):
    """The dispatcher of nn/winograd.py's kernel for `channels` in `build` (the process's, unlike a training pass's
    fused max pool, conv_kernels.correlate_build)."""
    from nn import winograd

    return winograd._kernel(channels, winograd.TILES[channels]).build(build)


def _spawn(spec):
    """This module in a child process on `spec` -> the subprocess.Popen, or None if no process can start."""
    # The child imports this project as this process does, installed or from its checkout.
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    environment = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))
    try:
        return subprocess.Popen([sys.executable, "-m", __name__, json.dumps(spec)], stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=environment)
    except OSError:  # no second process: this one compiles everything itself, as without this module
        return None


def start(model, training=True):
    """Compile `model`'s feature network kernels (its training forward and backward, or its inference) in a
    child process, unless they are cached already -> the subprocess.Popen, or None. Nothing waits for it:
    a kernel this process reaches first it compiles itself, and the child's copy only fills the cache."""
    spec = _spec(model, training)
    if feature_kernels_cached(spec["dtype"], spec["feature_width"], spec["build"], training):
        return None
    return _spawn(spec)


def start_inference(model, image_shape):
    """Before the first prediction of a process that runs Numba's builds: if the cache lacks them, run the pool's
    builds for now and compile Numba's whole prediction of `model` on (H, W) images in a child -> the child
    (hand it to switch_when_ready), or None (they are cached, or this process runs the pool's anyway).
    Why: on an empty cache the pool's builds compile in half the time (docs/performance.md, "Cold start")."""
    dtype = next(iter(model.features.params.values())).dtype
    if threads.current() != "numba" or inference_kernels_cached(dtype, model.config["feature_width"], "numba"):
        return None
    threads.use("pool")
    # First the pool's feature kernels, which this process reaches after compiling the attention's, then Numba's.
    # The kernels' types do not depend on the image's size: a slide's is capped, so the child's image stays small.
    shape = [min(int(n), MAX_SIDE) for n in image_shape]
    spec = {"inference": {"config": model.config, "dtype": dtype.name, "image_shape": shape}}
    if not feature_kernels_cached(dtype, model.config["feature_width"], "pool"):
        spec["features"] = _spec(model, training=False)
    child = _spawn(spec)
    if child is None:
        threads.use("numba")
    return child


def switch_when_ready(child):
    """Between two predictions: once start_inference's child has compiled Numba's builds, run them from now on
    -> the child while it still runs, else None. A child that failed leaves the pool's builds in use."""
    if child is None or child.poll() is None:
        return child
    if child.returncode == 0:
        threads.use("numba")
    return None


def compile_features(n_classes, in_channels, patch_size, n_patches, dtype, feature_width, training, build):
    """Run a feature network of this shape once, as a step would: forward and backward on n_patches random
    patches (the sparse backward's choice of kernels depends on the patch size), or inference, with the
    kernels' build the parent process runs (nn/threads.py)."""
    from attention_sampling.models import FeatureNetwork

    threads.use(build)
    network = FeatureNetwork(n_classes, in_channels, hidden=feature_width, rng=np.random.default_rng(0),
                             dtype=np.dtype(dtype))
    patches = np.random.default_rng(0).random((n_patches, patch_size, patch_size, in_channels)).astype(dtype)
    if training:
        out = network.forward(patches, True)
        network.backward(np.ones_like(out))
    else:
        network.infer(patches)


def compile_inference(config, dtype, image_shape):
    """Predict one random image of `image_shape` with a model of `config` (AttentionSamplingModel's), as
    predict.py does, in Numba's builds."""
    from attention_sampling import predict
    from attention_sampling.application.pooling import PooledImages
    from attention_sampling.models import AttentionSamplingModel

    threads.use("numba")
    model = AttentionSamplingModel(**config, dtype=np.dtype(dtype))
    images = np.random.default_rng(0).random((1, *image_shape, config["in_channels"])).astype(dtype)
    predict(model, PooledImages(images), np.random.default_rng(0))


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    spec = json.loads(argv[0])
    if "inference" in spec:  # start_inference's child
        if "features" in spec:
            compile_features(**spec["features"])
        compile_inference(**spec["inference"])
    else:
        compile_features(**spec)
    return 0


if __name__ == "__main__":
    sys.exit(main())
