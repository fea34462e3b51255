"""Normalisation of vectors."""
import numpy as np

from .layer import Layer


class L2Normalize(Layer):
    """(..., D) -> (..., D): y = x / sqrt(|x|^2 + eps), so y is a unit vector and finite at x = 0.

    With n = sqrt(|x|^2 + eps), dn/dx = x / n, so dy/dx = I / n - x x^T / n^3 and
    dL/dx = (g - y (y . g)) / n: the gradient with its component along y removed.
    """

    def __init__(self, eps=1e-12):
        super().__init__()
        self.eps = eps

    def forward(self, x, training=True):
        self.norm = np.sqrt(np.sum(x * x, axis=-1, keepdims=True) + x.dtype.type(self.eps))
        self.output = x / self.norm
        return self.output

    def backward(self, grad_out):
        y = self.output
        return (grad_out - y * np.sum(y * grad_out, axis=-1, keepdims=True)) / self.norm
