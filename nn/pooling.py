"""Spatial pooling, channels-last.

The pools the method runs on mega-pixel images and on hundreds of patches are Numba loops: NumPy's
`reshape(n, ho, f, wo, f, c).mean(axis=(2, 4))` reduces over two strided axes (one slow pass per
axis with a temporary), and `argmax` followed by `take_along_axis` reads the input twice. Each kernel
here reads its input once, in memory order; the small ones run on one thread (memory-bound: see
nn/activations.py for why not a thread pool).
"""
import numpy as np
from numba import njit, prange

from . import threads
from .layer import Layer, check_spatial


@threads.two_builds(cache=True, nogil=True)
def _average_pool_kernel(start, stop, rows, factor, channels, out):
    """rows (N, H, W·C), out (N, H // f, (W // f)·C): each output row sums its f input rows, then f pixels.

    Summing whole rows first keeps the hot loop contiguous and vectorised (one add per input float); the
    sum over the f pixels of a block then runs on 1/f of the data. Its tasks are output rows, on both cores
    (either build, nn/threads.py): the image is the largest array of a step.
    """
    n, out_h, out_row = out.shape
    out_w = out_row // channels
    used = out_w * factor * channels  # the last W % f columns are dropped
    norm = out.dtype.type(factor * factor)
    for item in prange(start, stop):
        image, p = item // out_h, item % out_h
        row_sum = np.empty(used, dtype=out.dtype)
        first = rows[image, p * factor]
        for t in range(used):
            row_sum[t] = first[t]
        for i in range(1, factor):
            source = rows[image, p * factor + i]
            for t in range(used):
                row_sum[t] += source[t]
        target = out[image, p]
        for q in range(out_w):
            start = q * factor * channels
            for k in range(channels):
                total = row_sum[start + k]
                for j in range(1, factor):
                    total += row_sum[start + j * channels + k]
                target[q * channels + k] = total / norm
    return out


def average_pool(x, factor, here=False):
    """(N, H, W, C) -> (N, H // f, W // f, C): each cell the mean of its f x f pixels (AvgPool2d's forward; the
    last H % f rows and W % f columns dropped). A sum of f^2 values in x's dtype, rows first, then pixels.
    here: on the calling thread alone (a loader thread beside a step's kernels), the same numbers."""
    n, h, w, c = x.shape
    ho, wo = h // factor, w // factor
    rows = np.ascontiguousarray(x).reshape(n, h, w * c)
    out = np.empty((n, ho, wo * c), dtype=x.dtype)
    (_average_pool_kernel.here if here else _average_pool_kernel)(n * ho, rows, factor, c, out)
    return out.reshape(n, ho, wo, c)


@njit(cache=True, nogil=True)
def _average_pool_backward_kernel(grad_out, factor, channels, grad_rows):
    """grad_out (N, H // f, (W // f)·C) -> grad_rows (N, H, W·C): g / f^2 over each block, zeros beyond."""
    n, height, row_length = grad_rows.shape
    out_h, out_row = grad_out.shape[1], grad_out.shape[2]
    out_w = out_row // channels
    norm = grad_rows.dtype.type(factor * factor)
    for item in range(n * height):
        image, r = item // height, item % height
        target = grad_rows[image, r]
        target[:] = 0
        p = r // factor
        if p >= out_h:
            continue  # a dropped row: zero gradient
        source = grad_out[image, p]
        for q in range(out_w):
            for j in range(factor):
                start = (q * factor + j) * channels
                for k in range(channels):
                    target[start + k] = source[q * channels + k] / norm
    return grad_rows


@njit(cache=True, nogil=True)
def _global_max_pool_kernel(x, out):
    """x (N, H·W, C) -> out (N, C): the maximum, one pass per image. Values only, no argmax: a
    compare-and-select per channel vectorises across the channels, where tracking the argmax would branch."""
    n, positions, c = x.shape
    for image in range(n):
        best = out[image]
        best[:] = x[image, 0]
        for position in range(1, positions):
            row = x[image, position]
            for k in range(c):
                best[k] = row[k] if row[k] > best[k] else best[k]
    return out


@njit(cache=True, nogil=True)
def _first_argmax_kernel(x, maxima, argmax):
    """x (N, H·W, C), maxima (N, C) -> argmax (N, C): the first position holding each maximum (0 if none
    does, as for a NaN maximum), which is where np.argmax and the gradient of max put it."""
    n, positions, c = x.shape
    for image in range(n):
        for k in range(c):
            argmax[image, k] = 0
            for position in range(positions):
                if x[image, position, k] == maxima[image, k]:
                    argmax[image, k] = position
                    break
    return argmax


def first_argmax(x, maxima):
    """(N, H·W, C), (N, C) -> (N, C) int64 first positions of the maxima (NumPy's argmax for a max pool)."""
    return _first_argmax_kernel(x, maxima, np.empty(maxima.shape, dtype=np.int64))


class AvgPool2d(Layer):
    """(N, H, W, C) -> (N, H // f, W // f, C): mean of each f x f block.

    When H or W is not a multiple of f, the last H % f rows and W % f columns are dropped
    (as PyTorch's AvgPool2d with ceil_mode=False does); they receive zero gradient.
    """

    def __init__(self, factor):
        super().__init__()
        if factor < 1:
            raise ValueError(f"pooling factor must be >= 1, got {factor}")
        self.factor = int(factor)

    def forward(self, x, training=True):
        f = self.factor
        n, h, w, c = x.shape
        self.input_shape = x.shape
        ho, wo = h // f, w // f
        check_spatial(self, x.shape, (ho, wo))
        return average_pool(x, f)

    def backward(self, grad_out):
        f = self.factor
        n, h, w, c = self.input_shape
        ho, wo = grad_out.shape[1:3]
        grad_rows = np.empty((n, h, w * c), dtype=grad_out.dtype)
        source = np.ascontiguousarray(grad_out).reshape(n, ho, wo * c)
        return _average_pool_backward_kernel(source, f, c, grad_rows).reshape(self.input_shape)

    def __repr__(self):
        return f"AvgPool2d({self.factor})"


class GlobalMaxPool2d(Layer):
    """(N, H, W, C) -> (N, C): the maximum over all positions; the gradient goes to the first argmax.

    Forward finds the maxima only and keeps a reference to its input (in a network, the previous layer's
    cached output: no extra memory); backward looks up where they are, so inference never pays for it.
    """

    def forward(self, x, training=True):
        n, h, w, c = x.shape
        check_spatial(self, x.shape, (1, 1))
        self.input_shape = x.shape
        flat = np.ascontiguousarray(x).reshape(n, h * w, c)
        out = _global_max_pool_kernel(flat, np.empty((n, c), dtype=x.dtype))
        self.input, self.maxima = flat, out.copy()
        return out

    def backward(self, grad_out):
        n, h, w, c = self.input_shape
        argmax = first_argmax(self.input, self.maxima)
        self.input = self.maxima = None
        # (In nn.Sequential a GlobalMaxPool2d after a Conv2d and its leaky ReLU is fused into the convolution and
        # this backward is not run: that one starts from the maxima's positions, with no map-sized zeros.)
        grad_in = np.zeros((n, h * w, c), dtype=grad_out.dtype)
        np.put_along_axis(grad_in, argmax[:, None, :], grad_out[:, None, :], axis=1)
        return grad_in.reshape(self.input_shape)


class GlobalAvgPool2d(Layer):
    """(N, H, W, C) -> (N, C): the mean over all positions."""

    def forward(self, x, training=True):
        check_spatial(self, x.shape, (1, 1))
        self.input_shape = x.shape
        return x.mean(axis=(1, 2), dtype=x.dtype)

    def backward(self, grad_out):
        n, h, w, c = self.input_shape
        share = grad_out / grad_out.dtype.type(h * w)
        return np.broadcast_to(share[:, None, None, :], self.input_shape).copy()
