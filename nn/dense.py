"""Fully connected layer."""
import numpy as np

from .init import default_rng, glorot_uniform
from .layer import Layer


class Dense(Layer):
    """(..., D_in) -> (..., D_out): y = x W + b, W of shape (D_in, D_out)."""

    def __init__(self, in_features, out_features, bias=True, rng=None, dtype=np.float32):
        super().__init__()
        rng = default_rng(rng)
        self.params["weight"] = glorot_uniform(rng, (in_features, out_features), in_features, out_features, dtype)
        if bias:
            self.params["bias"] = np.zeros(out_features, dtype=dtype)
        self.zero_grads()

    def forward(self, x, training=True):
        self.input = x
        y = x @ self.params["weight"]
        if "bias" in self.params:
            y += self.params["bias"]
        return y

    def backward(self, grad_out):
        w = self.params["weight"]
        x2 = self.input.reshape(-1, w.shape[0])
        g2 = grad_out.reshape(-1, w.shape[1])
        self.grads["weight"] = x2.T @ g2
        if "bias" in self.params:
            self.grads["bias"] = g2.sum(axis=0)
        return grad_out @ w.T

    def __repr__(self):
        return f"Dense({self.params['weight'].shape[0]}, {self.params['weight'].shape[1]})"
