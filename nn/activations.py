"""Element-wise activations.

The kernels are memory-bound and most run on one thread: waking a second thread costs ~0.1 ms on an idle
machine but 5-15 ms on a loaded shared one (measured on the 2-core benchmark box with Numba's parallel
loops: 16 ms median for a parallel pass over 8M floats, 2 ms on one thread), more than a second core saves on
a small pass. The exceptions, split over nn/threads.py, are the derivative applied from the output, which a
training step runs over whole feature maps (the feature network's first layer: 25.6M values): on both cores
that layer's backward took 77-83 ms against 100-114 on one (bench_step, two runs each, the training loader
niced), and the same with the bias sums taken in its pass.
"""
import numpy as np
from numba import njit

from . import threads
from .layer import Layer


@njit(cache=True, nogil=True)
def _leaky_relu_forward(x, slope, out, positive):
    """Flat arrays: one pass writes the output and the sign mask (NumPy would need three)."""
    for k in range(x.size):
        positive[k] = x[k] > 0
        out[k] = x[k] if positive[k] else x[k] * slope
    return out


@njit(cache=True, nogil=True)
def _leaky_relu_backward(grad_out, slope, positive, grad_in):
    for k in range(grad_out.size):
        grad_in[k] = grad_out[k] if positive[k] else grad_out[k] * slope
    return grad_in


@njit(cache=True, nogil=True)
def _leaky_relu_inplace(x, slope):
    """x = leaky_relu(x), overwriting x."""
    for k in range(x.size):
        if not x[k] > 0:
            x[k] *= slope
    return x


@njit(cache=True, nogil=True)
def _leaky_relu_backward_from_output(start, stop, grad, slope, out):
    """grad *= slope where out <= 0, overwriting grad: for slope >= 0, out > 0 exactly where x > 0."""
    for k in range(start, stop):
        if not out[k] > 0:
            grad[k] *= slope
    return grad


@njit(cache=True, nogil=True)
def _leaky_relu_rows_backward(grad_rows, slope, out_rows, rows):
    """_leaky_relu_backward_from_output on the listed rows of (M, C) arrays only: the rest of grad is zero."""
    for r in rows:
        for k in range(grad_rows.shape[1]):
            if not out_rows[r, k] > 0:
                grad_rows[r, k] *= slope
    return grad_rows


@njit(cache=True, nogil=True)
def _leaky_relu_backward_sums(start, stop, grad, slope, out, partial):
    """_leaky_relu_backward_from_output on (M, C) rows, and partial[part] = the part's sums of the result per
    channel, in the same pass."""
    parts, rows, channels = partial.shape[0], grad.shape[0], grad.shape[1]
    for part in range(start, stop):
        # A local accumulator: adding into partial[part] itself stores at every row (measured 2x slower).
        acc = np.zeros(channels, grad.dtype)
        for r in range(part * rows // parts, (part + 1) * rows // parts):
            for c in range(channels):
                value = grad[r, c]
                if not out[r, c] > 0:
                    value *= slope
                grad[r, c] = value
                acc[c] += value
        partial[part] = acc
    return partial


def leaky_relu_backward_and_sum(grad_out, negative_slope, output):
    """leaky_relu_backward_from_output on a dense gradient, with its sum over every position per channel (a
    convolution's bias gradient) taken in the same pass over memory: (N, ..., C) -> (N, ..., C), (C,)."""
    grad = grad_out if grad_out.flags.c_contiguous and grad_out.flags.writeable else grad_out.copy()
    channels = grad.shape[-1]
    rows = grad.reshape(-1, channels)
    partial = np.zeros((threads.parts(rows.shape[0]), channels), dtype=grad.dtype)
    threads.run(_leaky_relu_backward_sums, partial.shape[0], rows, grad.dtype.type(negative_slope),
                output.reshape(-1, channels), partial)
    return grad, partial.sum(axis=0)


@njit(cache=True, nogil=True)
def _leaky_relu_backward_at(grad_rows, slope, out_rows, positions):
    for t in range(positions.size):
        for k in range(grad_rows.shape[1]):
            if not out_rows[positions[t], k] > 0:
                grad_rows[t, k] *= slope
    return grad_rows


def leaky_relu_backward_at(grad_rows, negative_slope, output, positions):
    """leaky_relu_backward_from_output for a gradient given as rows (K, C) at the flat positions (K,) of the
    (N, ..., C) output (nn.conv.SparseGradient), in place."""
    channels = output.shape[-1]
    return _leaky_relu_backward_at(grad_rows, grad_rows.dtype.type(negative_slope), output.reshape(-1, channels),
                                   np.asarray(positions, np.int64))


def check_fused_slope(negative_slope):
    """A layer's fused leaky ReLU (its forward's negative_slope; None: none) needs a slope >= 0: then its output
    is > 0 exactly where its input was, so the output alone tells leaky_relu_backward_from_output the slope."""
    if negative_slope is not None and negative_slope < 0:
        raise ValueError(f"a fused leaky ReLU needs negative_slope >= 0, got {negative_slope}")


def leaky_relu_backward_from_output(grad_out, negative_slope, output, rows=None):
    """dL/dy -> dL/dx of a leaky ReLU with slope >= 0 whose output was `output`, overwriting grad_out (a fresh
    array from the layer above) unless it is not contiguous or not writeable. rows: the flat positions of
    the (M, C) views where grad_out is nonzero (a sparse gradient); only those need the derivative."""
    grad = grad_out if grad_out.flags.c_contiguous and grad_out.flags.writeable else grad_out.copy()
    slope = grad.dtype.type(negative_slope)
    if rows is None:
        threads.run(_leaky_relu_backward_from_output, grad.size, grad.reshape(-1), slope, output.reshape(-1))
    else:
        channels = grad.shape[-1]
        _leaky_relu_rows_backward(grad.reshape(-1, channels), slope, output.reshape(-1, channels), rows)
    return grad


class LeakyReLU(Layer):
    """(...) -> (...): y = x for x > 0, slope * x otherwise.

    inplace=True (for slope >= 0) saves a full-size output and mask per call: forward overwrites its
    input with the output and caches only that, backward overwrites its incoming gradient. Use it where
    both belong to nobody else, e.g. right after a Conv2d or BatchNorm2d (their outputs and input
    gradients are fresh arrays they do not keep) and before a layer that does not modify its input.
    With slope >= 0, y > 0 exactly where x > 0, so the output tells backward which slope applied.
    After a Conv2d or a BatchNorm2d, nn.Sequential applies an in-place one inside that layer instead (their
    forward's negative_slope) and skips this layer.
    """

    def __init__(self, negative_slope=0.01, inplace=False):
        super().__init__()
        if inplace and negative_slope < 0:
            raise ValueError(f"inplace LeakyReLU needs negative_slope >= 0, got {negative_slope}")
        self.negative_slope = negative_slope
        self.inplace = inplace

    def forward(self, x, training=True):
        slope = x.dtype.type(self.negative_slope)
        if self.inplace and x.flags.c_contiguous and x.flags.writeable:
            self.output, self.positive = x, None
            _leaky_relu_inplace(x.reshape(-1), slope)
            return x
        x = np.ascontiguousarray(x)
        out = np.empty_like(x)
        # Cache the sign mask only (1 byte per element): the backward pass needs nothing else.
        self.output, self.positive = None, np.empty(x.shape, dtype=np.bool_)
        _leaky_relu_forward(x.reshape(-1), slope, out.reshape(-1), self.positive.reshape(-1))
        return out

    def backward(self, grad_out):
        if self.output is not None:
            grad = leaky_relu_backward_from_output(grad_out, self.negative_slope, self.output)
            self.output = None  # one backward per forward: free the cache as soon as it is spent
            return grad
        slope = grad_out.dtype.type(self.negative_slope)
        grad_out = np.ascontiguousarray(grad_out)
        grad_in = np.empty_like(grad_out)
        _leaky_relu_backward(grad_out.reshape(-1), slope, self.positive.reshape(-1), grad_in.reshape(-1))
        self.positive = None
        return grad_in

    def __repr__(self):
        return f"LeakyReLU({self.negative_slope}{', inplace=True' if self.inplace else ''})"
