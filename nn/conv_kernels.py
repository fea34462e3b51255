"""Numba kernels for Conv2d, channels-last, stride 1: the correlation (forward and dL/dx) and dL/dw.

Why hand-written loops rather than im2col + BLAS: the convolutions of this project have 3 to 16
output channels, and a (pixels x kh·kw·C_in) @ (kh·kw·C_in x 16) product is too thin for BLAS
(docs/performance.md: OpenBLAS reaches a fraction of these kernels' rate on it).

How they are made fast: each kernel keeps a small tile of results in registers, a tile of
`TILE_PIXELS[block]` output pixels x `block` channels (16 float32 = one AVX-512 register), and streams
the inputs past it. The tile lives in a stack array (`kernel_tools._stack_zeros`) so that LLVM knows nothing else
can write to it and promotes it to registers; its loops have compile-time lengths so that they
unroll and the LLVM SLP vectoriser packs the `block` lanes into vector FMAs. Numba switches the
SLP vectoriser off by default (numba#8705, a miscompilation of another pattern), so the kernels
are compiled with it on (`kernel_tools.vectorised_call`); tests/nn/test_conv_kernels.py checks them against plain NumPy.
`fastmath={"contract"}` only lets a*b+c become one FMA (one rounding instead of two); nothing is
reassociated, so float64 stays as exact as the NumPy reference.

Which threads: the correlation, which inference and training share, is built twice from one source
(nn/threads.py's two_builds): serial over slices of its rows on nn/threads.py's pool, which compiles in
half the time and trains as fast, and as a Numba parallel loop, whose workers stay awake between
back-to-back millisecond kernels (predict.py's choice). The kernels only a training step runs (dL/dw, the bias
sums, the sparse backward) are serial loops on the pool alone (docs/performance.md, "Cold start").
"""
import functools

import numpy as np
from numba import njit, prange

from . import threads, winograd
from .kernel_tools import _stack_zeros, vectorised_call
from .numba_cache import variant

# 3x3 "same" correlations with as many output as input channels (8, 16 or 32) go through nn/winograd.py:
# F(2x2, 3x3) needs 16 products per channel pair and 2x2 outputs where the direct kernel needs 36
# (not the fused global max pool: correlate_max stays here).
# False: always the direct kernel (tests compare the two; benchmarks can time both).
WINOGRAD = True

# In a training pass the direct correlation with the global max pool fused in and 16-channel tiles (the feature
# network's last layer, on 640 patches) runs Numba's parallel build, whatever the process runs: its serial build
# runs 2.2 times slower on one thread (LLVM makes worse code of the same loops outside a gufunc; the layer 117 ms
# against 48 in a step). Its other variants keep the process's build: the feature network's first layer gains
# 12 ms a step, less than the second a cold start would spend compiling its parallel build, and inference's
# pool builds compile in half the time. (python -m benchmarks.bench_step, bench_cold; docs/performance.md,
# "The direct correlation's build".)
PARALLEL_BLOCKS = (16,)


def correlate_build(block, maxima, training):
    """The build the direct correlation with `block`-channel tiles, and its global max pool fused in or not
    (maxima), runs in: "numba", or None (the process's)."""
    return "numba" if training and maxima and block in PARALLEL_BLOCKS else None


# Output pixels per register tile in the correlation, by channel block: 64 accumulators either way (eight
# pixels of a half-register block beat four; wider tiles spill; python -m benchmarks.bench_nn).
TILE_PIXELS = {16: 4, 8: 8}


def weight_gradient_channels(c_in):
    """Input channels per register tile in the weight gradient: all of them up to 4 (a 3-channel image: no
    wasted lane), else 8 (more FMAs per load of grad_out than 4; 16 spills). python -m benchmarks.bench_nn."""
    return c_in if c_in <= 4 else 8


def channel_block(channels):
    """Output channels handled per register tile: 16, or 8 when that wastes fewer padded lanes."""
    return 8 if channels % 16 and channels % 16 <= 8 else 16


def padded_channels(channels):
    """`channels` rounded up to whole tiles of `channel_block(channels)`."""
    block = channel_block(channels)
    return -(-channels // block) * block


@functools.lru_cache(maxsize=None)
def _correlate_kernel(block, pixels, maxima):
    """The correlation kernel for tiles of `pixels` output pixels x `block` output channels (literals,
    so the loops unroll). maxima: instead of storing the output, keep each output row's maximum per
    channel in row_max and its first column in row_arg (a global max pool fused in: the map is never written).
    Its tasks are output rows start..stop-1, in either build (module docstring)."""

    @threads.two_builds(cache=True, fastmath={"contract"}, nogil=True)
    @variant(block=block, pixels=pixels, maxima=maxima)
    def correlate_kernel(start, stop, x, weight, bias, out, row_max, row_arg, top, left, out_h, out_w, c_out, slope):
        n_images, height, width, c_in = x.shape
        kh, kw, _, c_padded = weight.shape
        # Columns q whose kw taps all land inside the image take the tiled path with no bounds checks.
        fast_lo = left
        fast_hi = min(out_w, width + left - kw + 1)
        # One output row per task, not one image: a single image (inference) still fills every thread.
        for row in prange(start, stop):
            n, p = row // out_h, row % out_h
            i_lo = max(0, top - p)
            i_hi = min(kh, height + top - p)
            for ob in range(0, c_padded, block):
                # The row's running maxima and their columns, in registers (maxima only).
                best = _stack_zeros(1, block, x.dtype)
                best_q = _stack_zeros(1, block, np.int64)
                if maxima:
                    for o in range(block):
                        best[0, o] = -np.inf
                q = 0
                while q < out_w:
                    acc = _stack_zeros(pixels, block, x.dtype)
                    if q >= fast_lo and q + pixels <= fast_hi:
                        count = pixels
                        for i in range(i_lo, i_hi):
                            for j in range(kw):
                                for c in range(c_in):
                                    for k in range(pixels):
                                        value = x[n, p + i - top, q + k + j - left, c]
                                        for o in range(block):
                                            acc[k, o] += value * weight[i, j, c, ob + o]
                    else:  # one pixel near the left or right border: clip the taps instead
                        count = 1
                        j_lo = max(0, left - q)
                        j_hi = min(kw, width + left - q)
                        for i in range(i_lo, i_hi):
                            for j in range(j_lo, j_hi):
                                for c in range(c_in):
                                    value = x[n, p + i - top, q + j - left, c]
                                    for o in range(block):
                                        acc[0, o] += value * weight[i, j, c, ob + o]
                    for k in range(count):
                        for o in range(min(block, c_out - ob)):
                            value = acc[k, o] + bias[ob + o]
                            # A leaky ReLU applied as the value is stored (slope 1: none).
                            value = value if value > 0 else value * slope
                            if maxima:
                                # Strictly greater, columns in order: a tie keeps its first position.
                                greater = value > best[0, o]
                                best[0, o] = value if greater else best[0, o]
                                best_q[0, o] = q + k if greater else best_q[0, o]
                            else:
                                out[n, p, q + k, ob + o] = value
                    q += count
                if maxima:
                    for o in range(min(block, c_out - ob)):
                        row_max[row, ob + o] = best[0, o]
                        row_arg[row, ob + o] = best_q[0, o]
        return out

    return correlate_kernel


def border_applies(x_shape, weight_shape):
    """Whether correlate(..., border="reflect" or "edge") takes these shapes: the 3x3 "same" correlations that
    go through nn/winograd.py, whose tiles read the mirrored or repeated border themselves."""
    return WINOGRAD and winograd.applies(x_shape, weight_shape, 1, 1, x_shape[1], x_shape[2])


def _correlate_call(x, weight, bias, top, left, out_h, out_w, negative_slope, maxima, border="zero", training=False):
    """The correlation kernel's call for correlate (maxima False: fills and returns the map) and correlate_max
    (True: returns the per-row maxima and their columns, (N·out_h, C_out) each)."""
    # One compiled kernel per float type: bring x, weight and bias to their common type first.
    dtype = np.result_type(x.dtype, weight.dtype, bias.dtype, np.float32)
    x, weight, bias = (np.ascontiguousarray(a, dtype=dtype) for a in (x, weight, bias))
    if WINOGRAD and not maxima and winograd.applies(x.shape, weight.shape, top, left, out_h, out_w):
        return winograd.correlate(x, weight, bias, negative_slope, border)
    if border != "zero":
        raise ValueError(f"border {border!r} is read by the Winograd kernel only (border_applies); pad the input")
    kh, kw, c_in, c_out = weight.shape
    block = channel_block(c_out)
    padded = padded_channels(c_out)
    if padded != c_out:  # zero lanes: the kernel computes them and never stores them
        weight = np.concatenate([weight, np.zeros((kh, kw, c_in, padded - c_out), weight.dtype)], axis=-1)
        bias = np.concatenate([bias, np.zeros(padded - c_out, bias.dtype)])
    rows = x.shape[0] * out_h if maxima else 1
    row_max, row_arg = np.empty((rows, c_out), dtype), np.empty((rows, c_out), np.int64)
    out = np.empty((1, 1, 1, 1) if maxima else (x.shape[0], out_h, out_w, c_out), dtype=dtype)
    slope = dtype.type(1.0 if negative_slope is None else negative_slope)
    _correlate_kernel(block, TILE_PIXELS[block], maxima)(x.shape[0] * out_h, x, weight, bias, out, row_max, row_arg,
                                                        top, left, out_h, out_w, c_out, slope, vectorise=True,
                                                        build=correlate_build(block, maxima, training))
    return (row_max, row_arg) if maxima else out


def correlate(x, weight, bias, top, left, out_h, out_w, negative_slope=None, border="zero"):
    """(N, H, W, C_in) * (kh, kw, C_in, C_out) + (C_out,) -> (N, out_h, out_w, C_out).

    out[n, p, q] = bias + sum over i, j of x[n, p + i - top, q + j - left] @ weight[i, j], with x
    read as zero outside the image: zero padding without a padded copy. negative_slope: the output
    goes through a leaky ReLU with that slope as it is stored (one pass fewer over it). border "reflect" or
    "edge" (where border_applies): x read mirrored or repeated outside the image instead, as np.pad fills it.
    """
    return _correlate_call(x, weight, bias, top, left, out_h, out_w, negative_slope, False, border)


def correlate_max(x, weight, bias, top, left, out_h, out_w, negative_slope=None, training=False):
    """The global max pool of correlate(...) (leaky ReLU included), without making the map:
    (N, H, W, C_in) ... -> maxima (N, C_out) and the flat position p * out_w + q of each maximum's first
    occurrence in row-major order (N, C_out), which is where GlobalMaxPool2d sends the gradient.
    A NaN never wins a comparison here: a channel that is NaN everywhere gives -inf at position 0, where
    GlobalMaxPool2d would give NaN (a diverged network is still caught: -inf is not finite either).
    training: a training pass, which runs Numba's build of the kernel (correlate_build); the same numbers."""
    row_max, row_arg = _correlate_call(x, weight, bias, top, left, out_h, out_w, negative_slope, True,
                                       training=training)
    n, c_out = x.shape[0], row_max.shape[1]
    row_max, row_arg = row_max.reshape(n, out_h, c_out), row_arg.reshape(n, out_h, c_out)
    maxima = row_max.max(axis=1)
    first_row = np.argmax(row_max == maxima[:, None], axis=1)  # the first row holding the maximum
    column = np.take_along_axis(row_arg, first_row[:, None], axis=1)[:, 0]
    return maxima, first_row * out_w + column


@functools.lru_cache(maxsize=None)
def _weight_gradient_kernel(block, channels):
    """The dL/dw kernel for tiles of `channels` input x `block` output channels (literals: the loops unroll)."""

    @njit(cache=True, fastmath={"contract"}, nogil=True)
    @variant(block=block, channels=channels)
    def weight_gradient_kernel(start, stop, x, grad_out, partial, top, left):
        n_images, height, width, c_in = x.shape
        _, out_h, out_w, c_out = grad_out.shape
        parts, kh, kw, _, _ = partial.shape
        for part in range(start, stop):
            # Each part sums its own images into its own slice: no two threads write the same memory.
            for n in range(part * n_images // parts, (part + 1) * n_images // parts):
                for i in range(kh):
                    p_lo = max(0, top - i)
                    p_hi = min(out_h, height + top - i)
                    for j in range(kw):
                        q_lo = max(0, left - j)
                        q_hi = min(out_w, width + left - j)
                        for cb in range(0, c_in, channels):
                            for ob in range(0, c_out, block):
                                acc = _stack_zeros(channels, block, x.dtype)
                                for p in range(p_lo, p_hi):
                                    for q in range(q_lo, q_hi):
                                        for k in range(channels):
                                            # Past the last channel, repeat it: branch-free, never stored.
                                            value = x[n, p + i - top, q + j - left, min(cb + k, c_in - 1)]
                                            for o in range(block):
                                                acc[k, o] += value * grad_out[n, p, q, ob + o]
                                for k in range(min(channels, c_in - cb)):
                                    for o in range(block):
                                        partial[part, i, j, cb + k, ob + o] += acc[k, o]
        return partial

    return weight_gradient_kernel


def weight_gradient(x, grad_out, kh, kw, top, left):
    """(N, H, W, C_in), (N, H', W', C_out) -> (kh, kw, C_in, C_out): sum over n, p, q of x[p + i, q + j]^T g[p, q]."""
    dtype = np.result_type(x.dtype, grad_out.dtype, np.float32)
    x, grad_out = (np.ascontiguousarray(a, dtype=dtype) for a in (x, grad_out))
    c_in, c_out = x.shape[-1], grad_out.shape[-1]
    block = channel_block(c_out)
    padded = padded_channels(c_out)
    if padded != c_out:  # the kernel reads whole tiles of channels: give it zero lanes to read
        grad_out = np.concatenate([grad_out, np.zeros(grad_out.shape[:-1] + (padded - c_out,), grad_out.dtype)],
                                  axis=-1)
    parts = threads.parts(x.shape[0])
    partial = np.zeros((parts, kh, kw, c_in, padded), dtype=dtype)
    threads.run(_weight_gradient_kernel(block, weight_gradient_channels(c_in)), parts, x, grad_out, partial, top, left,
                vectorise=True)
    return partial.sum(axis=0)[..., :c_out]


@njit(cache=True, nogil=True)
def _outer_kernel(start, stop, column, vector, out):
    for r in range(start, stop):
        for c in range(vector.shape[0]):
            out[r, c] = column[r] * vector[c]
    return out


def outer(column, vector):
    """(M,), (C,) -> (M, C) column[r] * vector[c]: dL/dx of a 1x1 convolution to one output channel (the
    attention's last layer, 722k x 8 values). NumPy's broadcast multiply loops over rows of 8: 16 to 41 ms
    against 1.8 (README, Performance); the products are the same single roundings."""
    dtype = np.result_type(column.dtype, vector.dtype)
    out = np.empty((column.shape[0], vector.shape[0]), dtype=dtype)
    threads.run(_outer_kernel, column.shape[0], np.ascontiguousarray(column, dtype=dtype),
                np.ascontiguousarray(vector, dtype=dtype), out)
    return out


@njit(cache=True, nogil=True)  # per part, as many as threads: the same sums either way
def _channel_sum_kernel(start, stop, rows, partial):
    parts = partial.shape[0]
    for part in range(start, stop):
        # A local accumulator: adding into partial[part] itself stores at every row (measured 2x slower).
        acc = np.zeros(rows.shape[1], partial.dtype)
        for r in range(part * rows.shape[0] // parts, (part + 1) * rows.shape[0] // parts):
            for c in range(rows.shape[1]):
                acc[c] += rows[r, c]
        # Element by element: a row assignment compiles Numba's shape-error formatting (benchmarks/bench_cold.py).
        for c in range(rows.shape[1]):
            partial[part, c] = acc[c]
    return partial


def channel_sum(grad_out):
    """(N, H, W, C) -> (C,): the bias gradient, in one pass over the rows (NumPy's reduction over axis 0 is slower)."""
    rows = np.ascontiguousarray(grad_out).reshape(-1, grad_out.shape[-1])
    parts = threads.parts(rows.shape[0])
    partial = np.zeros((parts, rows.shape[1]), dtype=grad_out.dtype)
    threads.run(_channel_sum_kernel, parts, rows, partial)
    return partial.sum(axis=0)


# ---------------------------------------------------------------------------------------------------------
# Sparse gradients. Behind a global max pool, dL/dy of the last convolution is zero except at the argmax
# positions (at most C of H·W per image), and each convolution below widens that support by its kernel.
# Where few positions are nonzero, the backward pass loops over those positions instead of all of them.
# ---------------------------------------------------------------------------------------------------------

@njit(cache=True, nogil=True)  # a dense gradient stops it after max_fraction of its rows (0.4 ms for 100 MB): one thread
def _active_rows_kernel(rows, found):
    """rows (M, C) -> how many rows hold a nonzero, their indices in `found` (in order) while they fit;
    stops counting at len(found) + 1."""
    count = 0
    for r in range(rows.shape[0]):
        nonzero = False
        for c in range(rows.shape[1]):  # no early break: the whole row's compare vectorises
            nonzero |= rows[r, c] != 0
        if nonzero:
            if count == found.size:
                return count + 1
            found[count] = r
            count += 1
    return count


def active_rows(grad_out, max_fraction):
    """(N, H, W, C) -> sorted flat indices of the positions where some channel is nonzero, or None when
    there are more than max_fraction of all positions (then the dense kernels are faster)."""
    rows = np.ascontiguousarray(grad_out).reshape(-1, grad_out.shape[-1])
    found = np.empty(int(max_fraction * rows.shape[0]), dtype=np.int64)
    count = _active_rows_kernel(rows, found)
    return found[:count] if count <= found.size else None


@functools.lru_cache(maxsize=None)
def _sparse_backward_kernel(block, channels, in_blocks):
    """The sparse backward for tiles of `channels` input x `block` output channels in dL/dw, and of 16 input
    channels in dL/dx, `in_blocks` of them (literals, so the loops unroll and the tiles stay in registers, as
    in the dense kernels). Each part takes its images one at a time, so the image's active positions and
    pixels stay in cache across the kh x kw taps."""

    @njit(cache=True, fastmath={"contract"}, nogil=True)
    @variant(block=block, channels=channels, in_blocks=in_blocks)
    def sparse_backward_kernel(start, stop, x, grad_rows, row_of, rows, columns, image_bounds, weight_t, partial, grad_in, slot,
                               top, left, input_gradient):
        n_images, height, width, c_in = x.shape
        parts, kh, kw, _, c_padded = partial.shape
        for part in range(start, stop):
            # Each part owns whole images: its own slice of `partial`, and no two threads add to one row
            # of grad_in.
            for n in range(part * n_images // parts, (part + 1) * n_images // parts):
                first, last = image_bounds[n], image_bounds[n + 1]
                if first == last:
                    continue
                for i in range(kh):
                    for j in range(kw):
                        # dL/dw[i, j] += x[p + i - top, q + j - left]^T g[p, q] over the active (p, q)
                        for cb in range(0, c_in, channels):
                            for ob in range(0, c_padded, block):
                                acc = _stack_zeros(channels, block, x.dtype)
                                for t in range(first, last):
                                    r = row_of[t]
                                    a = rows[t] + i - top
                                    b = columns[t] + j - left
                                    if 0 <= a < height and 0 <= b < width:
                                        for k in range(channels):
                                            # Past the last channel, repeat it: branch-free, never stored.
                                            value = x[n, a, b, min(cb + k, c_in - 1)]
                                            for o in range(block):
                                                acc[k, o] += value * grad_rows[r, ob + o]
                                for k in range(min(channels, c_in - cb)):
                                    for o in range(block):
                                        partial[part, i, j, cb + k, ob + o] += acc[k, o]
                if not input_gradient:
                    continue
                # dL/dx[p + i - top, q + j - left] += weight[i, j] @ g[p, q]. Position by position, all taps at
                # once: g[p, q] is read once, and the taps' independent sums overlap in the pipeline (tap by
                # tap over the positions measured 1.4-1.6x slower). Two partial sums (even and odd output
                # channels) halve the chain of dependent FMAs.
                for t in range(first, last):
                    r = row_of[t]
                    for i in range(kh):
                        a = rows[t] + i - top
                        if a < 0 or a >= height:
                            continue
                        for j in range(kw):
                            b = columns[t] + j - left
                            if b < 0 or b >= width:
                                continue
                            # A literal count of blocks: with the runtime range(0, c_in, 16), 3x slower.
                            for cb in range(0, 16 * in_blocks, 16):
                                acc = _stack_zeros(2, 16, x.dtype)
                                for ob in range(0, c_padded, block):
                                    for o in range(ob, ob + block, 2):  # literal length: it unrolls
                                        even = grad_rows[r, o]
                                        odd = grad_rows[r, o + 1]
                                        for c in range(16):
                                            acc[0, c] += even * weight_t[i, j, o, cb + c]
                                            acc[1, c] += odd * weight_t[i, j, o + 1, cb + c]
                                row = slot[(n * height + a) * width + b]
                                for c in range(min(16, c_in - cb)):
                                    grad_in[row, cb + c] += acc[0, c] + acc[1, c]
        return partial

    return sparse_backward_kernel


@njit(cache=True, nogil=True)  # 9 stores per active position: one thread
def _mark_support(active, out_h, out_w, height, width, kh, kw, top, left, mark):
    for t in range(active.size):
        n = active[t] // (out_h * out_w)
        p = active[t] // out_w % out_h
        q = active[t] % out_w
        for i in range(kh):
            a = p + i - top
            if 0 <= a < height:
                for j in range(kw):
                    b = q + j - left
                    if 0 <= b < width:
                        mark[(n * height + a) * width + b] = True
    return mark


def spread_rows(rows, positions, shape):
    """rows (K, C) at the sorted flat positions (K,) of an (N, H, W) map -> the (N, H, W, C) array, zero elsewhere."""
    out = np.zeros(tuple(shape[:3]) + (rows.shape[1],), dtype=rows.dtype)
    out.reshape(-1, rows.shape[1])[positions] = rows
    return out


def input_support(active, out_hw, input_shape, kh, kw, top, left):
    """Where dL/dx can be nonzero: the flat positions of the (N, H, W) input that a dL/dy nonzero only at the
    `active` flat positions of the (N, out_h, out_w) output reaches through a kh x kw kernel.

    (K,), (out_h, out_w), (N, H, W), ... -> positions (K',) sorted; slot (N·H·W,) int64 with
    slot[positions[t]] = t (elsewhere undefined: never read)."""
    n, height, width = input_shape
    mark = _mark_support(np.asarray(active, np.int64), out_hw[0], out_hw[1], height, width, kh, kw, top, left,
                         np.zeros(n * height * width, np.bool_))
    positions = np.flatnonzero(mark)
    # np.empty, not zeros: only the positions' entries are written and read.
    slot = np.empty(mark.size, np.int64)
    slot[positions] = np.arange(positions.size)
    return positions, slot


def sparse_backward(x, grad_rows, row_of, active, out_hw, weight, top, left, input_gradient=True, compact=False):
    """dL/dw and dL/dx (None unless input_gradient) of y = x (*) weight from a dL/dy that is zero outside
    the `active` flat positions of the (N, out_h, out_w) output: the sums of weight_gradient and of the
    transposed correlation, taken over those positions only. dL/dy at active[t] is grad_rows[row_of[t]]:
    the rows of the whole (N·out_h·out_w, C_out) gradient with row_of = active, or compact rows.

    dL/dx is nonzero only on input_support(active): with compact=True it comes as (positions (K',), rows
    (K', C_in)), its rows at those flat positions of the (N, H, W) input, and no input-sized array is made
    (its pages, touched for the first time, cost more than the arithmetic); else as the dense map.

    (N, H, W, C_in), (R, C_out), (K,), (K,) sorted, (out_h, out_w), (kh, kw, C_in, C_out)
        -> (kh, kw, C_in, C_out), (N, H, W, C_in) or ((K',), (K', C_in))
    """
    dtype = np.result_type(x.dtype, grad_rows.dtype, weight.dtype, np.float32)
    x = np.ascontiguousarray(x, dtype=dtype)
    n = x.shape[0]
    out_h, out_w = out_hw
    kh, kw, c_in, c_out = weight.shape
    block, padded = channel_block(c_out), padded_channels(c_out)
    in_padded = -(-c_in // 16) * 16
    if padded != c_out:  # zero lanes for whole tiles of output channels: only the rows read are copied
        gathered = np.zeros((len(row_of), padded), dtype)
        gathered[:, :c_out] = grad_rows[row_of]
        grad_rows, row_of = gathered, np.arange(len(row_of))
    else:
        grad_rows = np.ascontiguousarray(grad_rows, dtype=dtype)
    weight_t = np.zeros((kh, kw, padded, in_padded), dtype=dtype)  # (kh, kw, C_out, C_in), zero lanes past both
    weight_t[:, :, :c_out, :c_in] = weight.transpose(0, 1, 3, 2)
    image_bounds = np.searchsorted(active, np.arange(n + 1) * (out_h * out_w))
    # Each active position's row and column, once: integer divisions in the kernel's inner loops cost more than
    # its multiply-adds.
    rows, columns = np.divmod(active % (out_h * out_w), out_w)
    parts = threads.parts(n)
    partial = np.zeros((parts, kh, kw, c_in, padded), dtype=dtype)
    if input_gradient:
        positions, slot = input_support(active, out_hw, x.shape[:3], kh, kw, top, left)
        grad_in = np.zeros((positions.size, c_in), dtype=dtype)
    else:
        slot, grad_in = np.zeros(1, np.int64), np.zeros((1, c_in), dtype=dtype)
    # Few tile shapes, so few compiled kernels: the dense kernels' exact 1 to 4 input channels are rounded up
    # to 4 here (a spare lane repeats the last channel and is never stored) and dL/dx takes 16 at a time.
    kernel = _sparse_backward_kernel(block, 4 if c_in <= 4 else 8, in_padded // 16)
    threads.run(kernel, parts, x, grad_rows, np.asarray(row_of, np.int64), rows, columns, image_bounds, weight_t,
                partial, grad_in, slot, top, left, input_gradient, vectorise=True)
    grad_weight = partial.sum(axis=0)[..., :c_out]
    if not input_gradient:
        return grad_weight, None
    if compact:
        return grad_weight, (positions, grad_in)
    return grad_weight, spread_rows(grad_in, positions, x.shape)
