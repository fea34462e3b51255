"""Element-wise activations."""
import numpy as np
from numba import njit, prange

from .layer import Layer


@njit(parallel=True, cache=True)
def _leaky_relu_forward(x, slope, out, positive):
    """Flat arrays: one pass writes the output and the sign mask (NumPy would need three)."""
    for k in prange(x.size):
        positive[k] = x[k] > 0
        out[k] = x[k] if positive[k] else x[k] * slope
    return out


@njit(parallel=True, cache=True)
def _leaky_relu_backward(grad_out, slope, positive, grad_in):
    for k in prange(grad_out.size):
        grad_in[k] = grad_out[k] if positive[k] else grad_out[k] * slope
    return grad_in


class LeakyReLU(Layer):
    """(...) -> (...): y = x for x > 0, slope * x otherwise."""

    def __init__(self, negative_slope=0.01):
        super().__init__()
        self.negative_slope = negative_slope

    def forward(self, x, training=True):
        x = np.ascontiguousarray(x)
        out = np.empty_like(x)
        # Cache the sign mask only (1 byte per element): the backward pass needs nothing else.
        self.positive = np.empty(x.shape, dtype=np.bool_)
        _leaky_relu_forward(x.reshape(-1), x.dtype.type(self.negative_slope), out.reshape(-1),
                            self.positive.reshape(-1))
        return out

    def backward(self, grad_out):
        grad_out = np.ascontiguousarray(grad_out)
        grad_in = np.empty_like(grad_out)
        _leaky_relu_backward(grad_out.reshape(-1), grad_out.dtype.type(self.negative_slope),
                             self.positive.reshape(-1), grad_in.reshape(-1))
        return grad_in

    def __repr__(self):
        return f"LeakyReLU({self.negative_slope})"
