"""The 3x3 "same" correlation by Winograd's minimal filtering F(2x2, 3x3), channels-last, stride 1.

Why: the feature network's 16 -> 16 convolutions are most of a training step, and the direct kernel
(nn/conv_kernels.py) spends 9 x 16 multiply-adds per output value. Winograd's F(2x2, 3x3) computes a
2 x 2 block of outputs from a 4 x 4 block of inputs with 16 products per (input, output) channel pair
instead of 36 (Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks", 2016):

    Y = A^T [ (G w G^T) o (B^T d B) ] A        per 2 x 2 output tile, summed over input channels,

with d the 4 x 4 input tile, w the 3 x 3 kernel, o the elementwise product, and
the constant matrices below. The products for a tile are 16 small matrix products (1 x C_in) @ (C_in x C_out),
one per position of the 4 x 4 transformed tile; a task takes `TILES[C]` tiles of a row of tiles at once, so each
row of the transformed weight is loaded once for all of them and the accumulators stay in registers.

Outside the image a tile reads zeros ("same" padding) or, for nn.Conv2d's "reflect" and "edge" paddings, the
image mirrored or repeated by one pixel, as numpy's np.pad fills it: the attention network pads so
(models.py), where a padded copy of each map and the direct "valid" kernel were slower (python -m
benchmarks.bench_nn --workloads attention-reflect [--infer --batch 1] [--padded-copy]; docs/performance.md).

Mathematically the same correlation; numerically not a reordering of the same products: the inputs and
the weights are transformed (and rounded) before they are multiplied, so the rounding differs from the
direct kernel's and is somewhat larger. float64 agrees with the padded sum to ~3e-14; float32, on the
feature network's maps, within 2e-5 of values up to 10 (tests/nn/test_winograd.py: against the padded sum
and the direct kernel, within the direct kernel's own tolerance).
"""
import functools

import numpy as np
from numba import njit, prange

from . import threads
from .kernel_tools import _stack_zeros, reflect_index
from .numba_cache import variant

# Kernel transform G (4 x 3): U = G w G^T. B^T and A^T are written out in the kernel as additions.
G = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]])
# Channel counts with a compiled kernel: the feature network's 16 (32 with --feature-width 32) and the attention
# network's 8.
CHANNELS = (8, 16, 32)
# What a tile reads outside the image, by the kernel's `border` argument (0, 1, 2).
BORDERS = ("zero", "reflect", "edge")
# Tiles per task, by channels: 4 tiles x 16 channels keep 8 AVX2 accumulators (2 to 6 measured alike, within 10%;
# 8 spills); with 32 channels 4 tiles spill (23 times slower) and 2 do not (docs/performance.md, "32 channels").
TILES = {8: 4, 16: 4, 32: 2}


def applies(x_shape, weight_shape, top, left, out_h, out_w):
    """Whether correlate(...) with these arguments is a 3x3 "same" correlation this module computes."""
    kh, kw, c_in, c_out = weight_shape
    return ((kh, kw, top, left) == (3, 3, 1, 1) and (out_h, out_w) == tuple(x_shape[1:3])
            and x_shape[3] == c_in == c_out and c_in in CHANNELS)


@njit(cache=True, inline="always")
def border_index(index, length, border):
    """The row or column an index outside [0, length) reads: mirrored without repeating the edge (border 1,
    np.pad's "reflect", kernel_tools.reflect_index) or clamped to it (border 2, "edge")."""
    if border == 2:
        return min(max(index, 0), length - 1)
    return reflect_index(index, length)


def transform_weight(weight):
    """(3, 3, C_in, C_out) -> (16, C_in, C_out): U = G w G^T for every channel pair, row-major over the 4 x 4."""
    u = np.einsum("ai,ijco,bj->abco", G, weight.astype(np.float64), G)
    return np.ascontiguousarray(u.reshape(16, weight.shape[2], weight.shape[3]).astype(weight.dtype))


@functools.lru_cache(maxsize=None)
def _kernel(channels, tiles):
    """The kernel for `channels` in and out and `tiles` tiles per task (literals: the loops unroll and the
    lanes vectorise). No fused global max pool: on the feature network's last layer (16 channels) the running
    maxima took the registers the products need, and it measured no faster than the direct kernel."""
    C = channels
    rows_per_task = 2
    tile_values = tiles * 16  # a literal for _stack_zeros (an expression in the kernel would not be)

    @threads.two_builds(cache=True, fastmath={"contract"}, nogil=True)
    @variant(channels=channels, tiles=tiles)
    def winograd_kernel(start, stop, x, u, bias, out, slope, border):
        n_images, height, width, _ = x.shape
        tile_rows = (height + 1) // 2
        tile_columns = (width + 1) // 2
        # One row of tiles (two output rows) per task.
        for task in prange(start, stop):
            n, tile_row = task // tile_rows, task % tile_rows
            p = 2 * tile_row
            # Stack arrays: nothing else can write to them, so LLVM keeps their loops vectorised.
            v = _stack_zeros(tile_values, C, x.dtype)  # B^T d B of each tile
            m = _stack_zeros(tile_values, C, x.dtype)  # its products with U, summed over input channels
            d = _stack_zeros(16, C, x.dtype)
            y = _stack_zeros(4, C, x.dtype)           # one tile's 2 x 2 outputs
            b = _stack_zeros(1, C, x.dtype)
            for o in range(C):
                b[0, o] = bias[o]
            for first in range(0, tile_columns, tiles):
                count = min(tiles, tile_columns - first)
                for t in range(count):
                    q = 2 * (first + t)
                    inside = p >= 1 and p + 3 <= height and q >= 1 and q + 3 <= width
                    for i in range(4):
                        for j in range(4):
                            a, c0 = p - 1 + i, q - 1 + j
                            if inside or (0 <= a < height and 0 <= c0 < width):
                                for c in range(C):
                                    d[i * 4 + j, c] = x[n, a, c0, c]
                            elif border == 0:  # zero padding
                                for c in range(C):
                                    d[i * 4 + j, c] = 0
                            else:  # reflect or edge: a pixel of the image stands in
                                a, c0 = border_index(a, height, border), border_index(c0, width, border)
                                for c in range(C):
                                    d[i * 4 + j, c] = x[n, a, c0, c]
                    # B^T d B with B^T = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]]: columns ...
                    for j in range(4):
                        for c in range(C):
                            d0, d1, d2, d3 = d[j, c], d[4 + j, c], d[8 + j, c], d[12 + j, c]
                            d[j, c] = d0 - d2
                            d[4 + j, c] = d1 + d2
                            d[8 + j, c] = d2 - d1
                            d[12 + j, c] = d1 - d3
                    # ... then rows.
                    for i in range(4):
                        for c in range(C):
                            e0, e1, e2, e3 = d[i * 4, c], d[i * 4 + 1, c], d[i * 4 + 2, c], d[i * 4 + 3, c]
                            v[t * 16 + i * 4, c] = e0 - e2
                            v[t * 16 + i * 4 + 1, c] = e1 + e2
                            v[t * 16 + i * 4 + 2, c] = e2 - e1
                            v[t * 16 + i * 4 + 3, c] = e1 - e3
                # M[t, k] = V[t, k] @ U[k] for the 16 positions k of the transformed tile. Tiles past `count`
                # hold stale values: computed, never stored.
                for k in range(16):
                    acc = _stack_zeros(tiles, C, x.dtype)
                    for c in range(C):
                        for t in range(tiles):
                            value = v[t * 16 + k, c]
                            for o in range(C):
                                acc[t, o] += value * u[k, c, o]
                    for t in range(tiles):
                        for o in range(C):
                            m[t * 16 + k, o] = acc[t, o]
                # Y = A^T M A with A^T = [[1, 1, 1, 0], [0, 1, -1, -1]], plus bias and leaky ReLU.
                for t in range(count):
                    q = 2 * (first + t)
                    base = t * 16
                    for i in range(4):
                        for o in range(C):
                            m0, m1, m2, m3 = m[base + i * 4, o], m[base + i * 4 + 1, o], m[base + i * 4 + 2, o], \
                                m[base + i * 4 + 3, o]
                            m[base + i * 4, o] = m0 + m1 + m2
                            m[base + i * 4 + 1, o] = m1 - m2 - m3
                    for s in range(2):
                        for o in range(C):
                            value = m[base + s, o] + m[base + 4 + s, o] + m[base + 8 + s, o] + b[0, o]
                            y[s, o] = value if value > 0 else value * slope
                            value = m[base + 4 + s, o] - m[base + 8 + s, o] - m[base + 12 + s, o] + b[0, o]
                            y[2 + s, o] = value if value > 0 else value * slope
                    for r in range(rows_per_task):
                        if p + r < height:
                            for s in range(2):
                                if q + s < width:
                                    for o in range(C):
                                        out[n, p + r, q + s, o] = y[2 * r + s, o]
        return out

    return winograd_kernel


def correlate(x, weight, bias, negative_slope=None, border="zero"):
    """conv_kernels.correlate(x, weight, bias, 1, 1, H, W, negative_slope) for a 3x3 weight with C_in = C_out
    in CHANNELS, all arrays of one float type: (N, H, W, C) -> (N, H, W, C). border (BORDERS): what the
    taps read outside the image."""
    out = np.empty(x.shape, dtype=x.dtype)
    slope = x.dtype.type(1.0 if negative_slope is None else negative_slope)
    _kernel(x.shape[3], TILES[x.shape[3]])(x.shape[0] * ((x.shape[1] + 1) // 2), x, transform_weight(weight), bias, out, slope,
                               BORDERS.index(border), vectorise=True)
    return out
