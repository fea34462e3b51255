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
    """(..., K) -> (..., K) log-probabilities over `axis`.  dL/dx = g - softmax(x) * sum(g)."""

    def __init__(self, axis=-1):
        super().__init__()
        self.axis = axis

    def forward(self, x, training=True):
        self.output = log_softmax(x, self.axis)
        return self.output

    def backward(self, grad_out):
        probabilities = np.exp(self.output)
        return grad_out - probabilities * np.sum(grad_out, axis=self.axis, keepdims=True)


class SpatialSoftmax(Softmax):
    """(N, H, W[, C]) -> same shape: a distribution over all H x W positions (per channel)."""

    def __init__(self):
        super().__init__(axis=(1, 2))


class SpatialLogSoftmax(LogSoftmax):
    """(N, H, W[, C]) -> same shape: log of a distribution over all H x W positions (per channel)."""

    def __init__(self):
        super().__init__(axis=(1, 2))
