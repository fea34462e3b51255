"""Element-wise activations."""
import numpy as np

from .layer import Layer


class LeakyReLU(Layer):
    """(...) -> (...): y = x for x > 0, slope * x otherwise."""

    def __init__(self, negative_slope=0.01):
        super().__init__()
        self.negative_slope = negative_slope

    def forward(self, x, training=True):
        # Cache the sign mask only (1 byte per element): the backward pass needs nothing else.
        self.positive = x > 0
        return np.where(self.positive, x, x * x.dtype.type(self.negative_slope))

    def backward(self, grad_out):
        return np.where(self.positive, grad_out, grad_out * grad_out.dtype.type(self.negative_slope))

    def __repr__(self):
        return f"LeakyReLU({self.negative_slope})"
