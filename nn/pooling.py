"""Spatial pooling, channels-last."""
import numpy as np

from .layer import Layer


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
        blocks = x[:, : ho * f, : wo * f, :].reshape(n, ho, f, wo, f, c)
        return blocks.mean(axis=(2, 4), dtype=x.dtype)

    def backward(self, grad_out):
        f = self.factor
        n, h, w, c = self.input_shape
        ho, wo = grad_out.shape[1:3]
        grad_in = np.zeros(self.input_shape, dtype=grad_out.dtype)
        share = grad_out / grad_out.dtype.type(f * f)
        grad_in[:, : ho * f, : wo * f, :] = np.broadcast_to(
            share[:, :, None, :, None, :], (n, ho, f, wo, f, c)
        ).reshape(n, ho * f, wo * f, c)
        return grad_in

    def __repr__(self):
        return f"AvgPool2d({self.factor})"


class GlobalMaxPool2d(Layer):
    """(N, H, W, C) -> (N, C): the maximum over all positions; the gradient goes to the first argmax."""

    def forward(self, x, training=True):
        n, h, w, c = x.shape
        self.input_shape = x.shape
        flat = x.reshape(n, h * w, c)
        self.argmax = flat.argmax(axis=1)  # (N, C)
        return np.take_along_axis(flat, self.argmax[:, None, :], axis=1)[:, 0, :]

    def backward(self, grad_out):
        n, h, w, c = self.input_shape
        grad_in = np.zeros((n, h * w, c), dtype=grad_out.dtype)
        np.put_along_axis(grad_in, self.argmax[:, None, :], grad_out[:, None, :], axis=1)
        return grad_in.reshape(self.input_shape)


class GlobalAvgPool2d(Layer):
    """(N, H, W, C) -> (N, C): the mean over all positions."""

    def forward(self, x, training=True):
        self.input_shape = x.shape
        return x.mean(axis=(1, 2), dtype=x.dtype)

    def backward(self, grad_out):
        n, h, w, c = self.input_shape
        share = grad_out / grad_out.dtype.type(h * w)
        return np.broadcast_to(share[:, None, None, :], self.input_shape).copy()
