"""Inference of a chain of 3x3 "same" convolutions ending in a global max pool, one image per task.

Why: at inference the feature network sees only the P patches of one image, a few milliseconds of work, and
layer by layer it is four parallel regions, each waking the other core and writing a map it reads back. Here
every task takes whole images through all the layers in two buffers of one map each (they stay in cache) and
the cores meet once (python -m benchmarks --predict-only --fused-chain; docs/performance.md, "Inference in one
pass").
The kernels are the layer path's own, compiled serial: the same arithmetic in the same order per output.
"""
import functools

import numba
import numpy as np
from numba import njit, prange

from . import conv_kernels, winograd
from .kernel_tools import vectorised_call
from .numba_cache import variant



# A task's two maps must stay in a core's cache, and each thread needs an image: larger maps (the feature
# network over whole images) or fewer images go layer by layer, whose every layer fills both cores. On one
# thread there is no meeting of cores to save, and the layer path's parallel builds are the faster code.
MAP_BYTES = 2**20


def applies(x_shape, weights):
    """Whether chain_max computes this chain: (N, H, W, C_in) input, weights [(3, 3, C_in, C), (3, 3, C, C), ...]
    of at least two layers, C a Winograd channel count that is one whole register block; and whether it is
    the faster path: two threads or more, N at least their number, an H x W x C float64 map within MAP_BYTES."""
    channels = weights[0].shape[-1]
    threads = numba.get_num_threads()
    return (len(weights) >= 2 and threads > 1 and channels in winograd.CHANNELS
            and x_shape[0] >= threads and x_shape[1] * x_shape[2] * channels * 8 <= MAP_BYTES
            and conv_kernels.channel_block(channels) == channels
            and weights[0].shape == (3, 3, x_shape[3], channels)
            and all(weight.shape == (3, 3, channels, channels) for weight in weights[1:]))


@functools.lru_cache(maxsize=None)
def _chain_kernel(channels, middle):
    """The kernel for `channels` hidden channels and `middle` Winograd layers between the first and the last (the
    direct kernel, as the layer path). The last map's maxima are read from the map, in cache, rather than kept
    by the direct kernel as it computes: compiled serial, that variant runs at half its parallel build's speed
    on one thread (docs/performance.md, "Inference in one pass")."""
    pixels = conv_kernels.TILE_PIXELS[channels]
    first = conv_kernels._correlate_kernel(channels, pixels, False, parallel=False)
    inner = winograd._kernel(channels, winograd.TILES, parallel=False)
    last = first  # the direct kernel, as correlate_max's: the same values, the same maxima

    @njit(parallel=True, cache=True, fastmath={"contract"}, nogil=True)
    @variant(channels=channels, middle=middle)
    def chain_kernel(x, w_first, b_first, u, b_inner, w_last, b_last, slopes, maxima, tasks):
        n_images, height, width, c_in = x.shape
        per_task = (n_images + tasks - 1) // tasks
        for task in prange(tasks):
            # A task's buffers, reused for each of its images.
            a = np.empty((1, height, width, channels), x.dtype)
            b = np.empty((1, height, width, channels), x.dtype)
            row_max = np.empty((1, channels), x.dtype)  # what the direct kernel takes and leaves unread
            row_arg = np.empty((1, channels), np.int64)
            for m in range(task * per_task, min(n_images, (task + 1) * per_task)):
                image = x[m].reshape((1, height, width, c_in))
                first(image, w_first, b_first, a, row_max, row_arg, 1, 1, height, width, channels, slopes[0])
                for layer in range(middle):
                    if layer % 2 == 0:
                        inner(a, u[layer], b_inner[layer], b, slopes[1 + layer])
                    else:
                        inner(b, u[layer], b_inner[layer], a, slopes[1 + layer])
                if middle % 2 == 0:
                    last(a, w_last, b_last, b, row_max, row_arg, 1, 1, height, width, channels, slopes[middle + 1])
                else:
                    last(b, w_last, b_last, a, row_max, row_arg, 1, 1, height, width, channels, slopes[middle + 1])
                top = b if middle % 2 == 0 else a
                for o in range(channels):
                    maxima[m, o] = -np.inf
                for p in range(height):
                    for q in range(width):
                        for o in range(channels):
                            value = top[0, p, q, o]
                            maxima[m, o] = value if value > maxima[m, o] else maxima[m, o]
        return maxima

    return chain_kernel


def chain_max(x, weights, biases, slopes):
    """(N, H, W, C_in) -> (N, C): the global max pool of the chain of 3x3 "same" convolutions `weights`
    (applies(...)), each followed by a leaky ReLU of its slope (None: none), bit for bit what the layers one
    by one give: conv_kernels.correlate, winograd.correlate for the middle layers, conv_kernels.correlate_max."""
    dtype = np.result_type(x.dtype, *(weight.dtype for weight in weights), np.float32)
    channels = weights[0].shape[-1]
    x = np.ascontiguousarray(x, dtype=dtype)
    biases = [np.zeros(channels, dtype) if bias is None else np.ascontiguousarray(bias, dtype=dtype)
              for bias in biases]
    middle = len(weights) - 2
    u = np.stack([winograd.transform_weight(np.asarray(weight, dtype)) for weight in weights[1:-1]]) if middle else \
        np.zeros((0, 16, channels, channels), dtype)
    b_inner = np.stack(biases[1:-1]) if middle else np.zeros((0, channels), dtype)
    slopes = np.array([1.0 if slope is None else slope for slope in slopes], dtype=dtype)
    maxima = np.empty((x.shape[0], channels), dtype)
    tasks = max(1, min(numba.get_num_threads(), x.shape[0]))
    return vectorised_call(_chain_kernel(channels, middle), x, np.ascontiguousarray(weights[0], dtype), biases[0],
                           u, b_inner, np.ascontiguousarray(weights[-1], dtype), biases[-1], slopes, maxima, tasks)
