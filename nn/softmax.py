"""Softmax and log-softmax over the class axis or over the spatial axes together."""
import numpy as np

from .layer import Layer


def log_softmax(x, axis=-1):
    """log(exp(x) / sum exp(x)) over `axis` (an int or a tuple), stable for logits of any size."""
    shifted = x - np.max(x, axis=axis, keepdims=True)
    return shifted - np.log(np.sum(np.exp(shifted), axis=axis, keepdims=True))


def softmax(x, axis=-1):
    """exp(x) / sum exp(x) over `axis`; subtracting the max keeps exp() from overflowing."""
    shifted = np.exp(x - np.max(x, axis=axis, keepdims=True))
    return shifted / np.sum(shifted, axis=axis, keepdims=True)


class Softmax(Layer):
    """(..., K) -> (..., K) probabilities over `axis`.  dL/dx = y * (g - sum(g * y))."""

    def __init__(self, axis=-1):
        super().__init__()
        self.axis = axis

    def forward(self, x, training=True):
        self.output = softmax(x, self.axis)
        return self.output

    def backward(self, grad_out):
        y = self.output
        return y * (grad_out - np.sum(grad_out * y, axis=self.axis, keepdims=True))


class LogSoftmax(Layer):
    """(..., K) -> (..., K) log-probabilities over `axis`.  dL/dx = g - softmax(x) * sum(g).

    forward's optional `mask` (bool, x's shape) restricts the distribution to its True positions: the others
    get logit -inf, so probability 0 and log-probability -inf, and gradient 0 (their output is a constant);
    each distribution needs one True position at least."""

    def __init__(self, axis=-1):
        super().__init__()
        self.axis = axis
        self.mask = None

    def forward(self, x, training=True, mask=None):
        self.mask = mask
        if mask is not None:
            x = np.where(mask, x, np.array(-np.inf, dtype=x.dtype))
        self.output = log_softmax(x, self.axis)
        return self.output

    def backward(self, grad_out):
        if self.mask is not None:
            # A masked output is constant: whatever gradient reaches it (even NaN from -inf) is no signal.
            grad_out = np.where(self.mask, grad_out, 0)
        probabilities = np.exp(self.output)
        grad = grad_out - probabilities * np.sum(grad_out, axis=self.axis, keepdims=True)
        return grad if self.mask is None else np.where(self.mask, grad, 0)


class SpatialSoftmax(Softmax):
    """(N, H, W[, C]) -> same shape: a distribution over all H x W positions (per channel)."""

    def __init__(self):
        super().__init__(axis=(1, 2))


class SpatialLogSoftmax(LogSoftmax):
    """(N, H, W[, C]) -> same shape: log of a distribution over all H x W positions (per channel)."""

    def __init__(self):
        super().__init__(axis=(1, 2))
