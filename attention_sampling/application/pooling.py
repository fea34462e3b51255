"""The attention view of an image in NumPy: average pooling by c, as nn.AvgPool2d computes it."""
import numpy as np


def average_pool(pixels, k):
    """(H, W, C) float32 -> (H // k, W // k, C): nn.AvgPool2d's numbers to the last bit (the k rows summed in
    order, then the k columns, then divided by k^2, all in float32), in NumPy: the view is read in the
    loader's thread, beside the training step's parallel kernels, and a Numba parallel kernel called from
    two threads at once is only safe with some threading layers."""
    h, w = pixels.shape[0] // k, pixels.shape[1] // k
    blocks = pixels[:h * k, :w * k].reshape(h, k, w, k, pixels.shape[2])
    return blocks.sum(axis=1).sum(axis=2) / np.float32(k * k)
