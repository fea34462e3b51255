"""Batch normalisation over the channels of a channels-last tensor.

Forward and backward are each two passes of Numba kernels over the (N·H·W, C) rows, with float64
per-channel accumulators: NumPy would make four or five full-size temporaries
(x - mean, its square, x_hat, x_hat·gamma, ...) and reduce over a strided axis for each statistic.
Nothing full-size is cached: backward recomputes x_hat = (x - mean) · inv_std from the input.
The kernels are memory-bound and run on one thread: waking Numba's thread pool costs more than it saves
on a shared 2-core machine (nn/activations.py). The sums are still taken in `parts`
(as many as threads) so that no single float64 accumulator sums millions of terms.
"""
import functools

import numpy as np
from numba import njit

from .activations import check_fused_slope, leaky_relu_backward_from_output
from . import threads
from .kernel_tools import _stack_zeros
from .layer import Layer
from .numba_cache import variant


@functools.lru_cache(maxsize=None)
def _kernels(c):
    """The three kernels for `c` channels, compiled for that count: with the channel loops' length a
    constant they unroll, the accumulators live in registers (`_stack_zeros`) and the lanes vectorise,
    3.5 times faster than with a run-time channel count (8 channels, 720k rows: 3.3 against 11.7 ms for
    the sums). The arithmetic and its order are the same either way."""

    @njit(cache=True, nogil=True)
    @variant(c=c)
    def paired_sums(start, stop, first, first_shift, second, second_shift, second_scale, partial):
        """partial[part] = sums over the part's rows of u and of u · v, in float64, where
        u = first - first_shift and v = (second - second_shift) · second_scale: the moments (u = v = x - centre)
        and the backward's sums (u = g, v = x_hat) alike."""
        parts = partial.shape[0]
        m = first.shape[0]
        for part in range(start, stop):
            acc = _stack_zeros(2, c, np.float64)
            for r in range(part * m // parts, (part + 1) * m // parts):
                for k in range(c):
                    u = np.float64(first[r, k]) - first_shift[k]
                    acc[0, k] += u
                    acc[1, k] += u * ((np.float64(second[r, k]) - second_shift[k]) * second_scale[k])
            for k in range(c):
                partial[part, 0, k] = acc[0, k]
                partial[part, 1, k] = acc[1, k]
        return partial

    @njit(cache=True, nogil=True)
    @variant(c=c)
    def normalise(start, stop, rows, mean, inv_std, gamma, beta, slope, out):
        """out = (rows - mean) · inv_std · gamma + beta, row by row, through a leaky ReLU of that slope (1: none)."""
        for r in range(start, stop):
            for k in range(c):
                value = (rows[r, k] - mean[k]) * inv_std[k] * gamma[k] + beta[k]
                out[r, k] = value if value > 0 else value * slope
        return out

    @njit(cache=True, nogil=True)
    @variant(c=c)
    def input_gradient(start, stop, grad_rows, rows, mean, inv_std, scale, mean_g, mean_gx, out):
        """out = scale · (g - mean_g - x_hat · mean_gx), with scale = gamma · inv_std."""
        for r in range(start, stop):
            for k in range(c):
                x_hat = (rows[r, k] - mean[k]) * inv_std[k]
                out[r, k] = scale[k] * (grad_rows[r, k] - mean_g[k] - x_hat * mean_gx[k])
        return out

    return paired_sums, normalise, input_gradient


def _channel_sums(rows, centre, partial):
    """partial[part] = sums over the part's rows of (rows - centre) and of its square."""
    ones = np.ones(rows.shape[1])
    threads.run(_kernels(rows.shape[1])[0], partial.shape[0], rows, centre, rows, centre, ones, partial, vectorise=True)
    return partial


def _normalise(rows, mean, inv_std, gamma, beta, slope, out):
    threads.run(_kernels(rows.shape[1])[1], rows.shape[0], rows, mean, inv_std, gamma, beta, slope, out, vectorise=True)
    return out


def _gradient_sums(grad_rows, rows, mean, inv_std, partial):
    """partial[part] = sums over the part's rows of g and of g · x_hat."""
    zeros = np.zeros(rows.shape[1])
    threads.run(_kernels(rows.shape[1])[0], partial.shape[0], grad_rows, zeros, rows, mean, inv_std, partial,
                vectorise=True)
    return partial


def _input_gradient(grad_rows, rows, mean, inv_std, scale, mean_g, mean_gx, out):
    threads.run(_kernels(rows.shape[1])[2], rows.shape[0], grad_rows, rows, mean, inv_std, scale, mean_g, mean_gx, out,
                vectorise=True)
    return out


def channel_moments(rows):
    """(M, C) -> float64 per-channel mean and biased variance, two passes (the second about the mean)."""
    c = rows.shape[1]
    partial = _channel_sums(rows, np.zeros(c), np.zeros((threads.parts(rows.shape[0]), 2, c)))
    mean = partial[:, 0].sum(axis=0) / rows.shape[0]
    partial = _channel_sums(rows, mean, np.zeros((threads.parts(rows.shape[0]), 2, c)))
    centred_sum, squares = partial.sum(axis=0)
    # The second pass's sum of (x - mean) is rounding error only: subtracting its square (the textbook
    # "corrected two-pass" formula) makes the variance exact to the last bits.
    var = (squares - centred_sum * centred_sum / rows.shape[0]) / rows.shape[0]
    return mean, np.maximum(var, 0.0)


class BatchNorm2d(Layer):
    """(N, H, W, C) -> (N, H, W, C): y = gamma * (x - mean) / sqrt(var + eps) + beta, per channel.

    Training uses the batch's statistics over (N, H, W) and updates running ones
    (running = (1 - momentum) * running + momentum * batch, with the unbiased variance, as PyTorch);
    evaluation uses the running statistics.

    Backward in training: every output depends on the whole batch through mean and var. With x_hat the
    normalised input, g_hat = g * gamma / sqrt(var + eps) and means over the m values of a channel,
      dL/dx = g_hat - mean(g_hat) - x_hat * mean(g_hat * x_hat)
            = gamma / sqrt(var + eps) * (g - mean(g) - x_hat * mean(g * x_hat)),
    and dL/dgamma = sum(g * x_hat), dL/dbeta = sum(g): one pass for the two sums, one for dL/dx.
    """

    def __init__(self, channels, momentum=0.1, eps=1e-5, dtype=np.float32):
        super().__init__()
        self.momentum = momentum
        self.eps = eps
        self.params["gamma"] = np.ones(channels, dtype=dtype)
        self.params["beta"] = np.zeros(channels, dtype=dtype)
        self.buffers["running_mean"] = np.zeros(channels, dtype=dtype)
        self.buffers["running_var"] = np.ones(channels, dtype=dtype)
        self.activation = None  # (slope, output) of a fused leaky ReLU, from forward to backward
        self.zero_grads()

    def forward(self, x, training=True, negative_slope=None):
        """negative_slope (>= 0): a leaky ReLU of that slope applied as each output is stored; backward then
        takes dL/d(activation) and applies the derivative first (in place, as the in-place LeakyReLU does), so
        that the output is released before the input gradient is allocated. nn.Sequential fuses a BatchNorm2d
        with the in-place LeakyReLU after it so (the attention network's pattern), as it does a Conv2d: the
        forward makes no pass of its own for the activation."""
        check_fused_slope(negative_slope)
        self.training = training
        dtype = np.result_type(x.dtype, self.params["gamma"].dtype)
        rows = np.ascontiguousarray(x, dtype=dtype).reshape(-1, x.shape[-1])
        if training:
            mean, var = channel_moments(rows)
            mean, var = mean.astype(dtype), var.astype(dtype)
            m = rows.shape[0]
            unbiased = var * (m / max(m - 1, 1))
            self.buffers["running_mean"] *= 1 - self.momentum
            self.buffers["running_mean"] += self.momentum * mean.astype(self.buffers["running_mean"].dtype)
            self.buffers["running_var"] *= 1 - self.momentum
            self.buffers["running_var"] += self.momentum * unbiased.astype(self.buffers["running_var"].dtype)
        else:
            mean = self.buffers["running_mean"].astype(dtype)
            var = self.buffers["running_var"].astype(dtype)
        self.input_rows, self.input_shape = rows, x.shape
        self.mean = mean
        self.inv_std = (1.0 / np.sqrt(var + dtype.type(self.eps))).astype(dtype)
        out = np.empty_like(rows)
        slope = dtype.type(1 if negative_slope is None else negative_slope)
        _normalise(rows, mean, self.inv_std, self.params["gamma"].astype(dtype),
                   self.params["beta"].astype(dtype), slope, out)
        # With slope >= 0 the output is > 0 exactly where the normalised value was: it tells backward the slope.
        self.activation = None if negative_slope is None else (slope, out)
        return out.reshape(x.shape)

    def evaluation_affine(self):
        """(scale, shift) with forward(x, training=False) = x * scale + shift per channel (running statistics)."""
        gamma, beta = self.params["gamma"], self.params["beta"]
        scale = gamma / np.sqrt(self.buffers["running_var"] + gamma.dtype.type(self.eps))
        return scale, beta - self.buffers["running_mean"] * scale

    def backward(self, grad_out):
        rows = self.input_rows
        if self.activation is not None:
            slope, output = self.activation
            self.activation = None
            grad_out = leaky_relu_backward_from_output(grad_out.reshape(output.shape), slope, output)
            del output  # the activation's last reference: freed before the input gradient is allocated
        grad_rows = np.ascontiguousarray(grad_out, dtype=rows.dtype).reshape(rows.shape)
        partial = _gradient_sums(grad_rows, rows, self.mean.astype(np.float64), self.inv_std.astype(np.float64),
                                 np.zeros((threads.parts(rows.shape[0]), 2, rows.shape[1])))
        sum_g, sum_gx = partial.sum(axis=0)
        gamma = self.params["gamma"]
        self.grads["gamma"] = sum_gx.astype(gamma.dtype)
        self.grads["beta"] = sum_g.astype(gamma.dtype)
        scale = (gamma * self.inv_std).astype(rows.dtype)
        m = rows.shape[0]
        if self.training:
            mean_g, mean_gx = (sum_g / m).astype(rows.dtype), (sum_gx / m).astype(rows.dtype)
        else:  # running statistics are constants: dL/dx = g_hat
            mean_g = mean_gx = np.zeros_like(scale)
        out = np.empty_like(rows)
        _input_gradient(grad_rows, rows, self.mean, self.inv_std, scale, mean_g, mean_gx, out)
        self.input_rows = None  # one backward per forward: free the cache as soon as it is spent
        return out.reshape(self.input_shape)

    def __repr__(self):
        return f"BatchNorm2d({self.params['gamma'].shape[0]})"
