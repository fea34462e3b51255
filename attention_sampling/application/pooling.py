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


class PooledImages:
    """An (N, H, W, C) float32 array as an images.LazyImages batch that keeps its views: the tissue mask
    (tissue.batch_views) and the attention network read one pooled array, as they do for a loader's batch.
    The numbers are the array's own: average_pool is nn.AvgPool2d's to the bit, the patches extract_patches'."""

    def __init__(self, images):
        self.images = images
        self.shape = images.shape
        self._views = {}

    def view(self, scale):
        if scale not in self._views:
            self._views[scale] = np.stack([average_pool(image, scale) for image in self.images])
        return self._views[scale]

    def patches(self, cells, patch_size, scale, border):
        from ..patches import extract_patches

        return extract_patches(self.images, cells, patch_size, scale, border)
