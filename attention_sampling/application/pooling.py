"""The attention view of an image read from disk: average pooling by c, as nn.AvgPool2d computes it."""
import numpy as np

from nn.pooling import average_pool as _average_pool


def average_pool(pixels, k):
    """(H, W, C) float32 -> (H // k, W // k, C): nn.AvgPool2d's kernel, on the calling thread alone (the view is
    read in the loader's thread, beside the training step's kernels; serial, so safe from any thread). The
    NumPy reduction it replaces took 15 ms for a 1388 x 1040 image, a third of a prediction
    (docs/performance.md, "An archive")."""
    return _average_pool(np.asarray(pixels, dtype=np.float32)[None], k, here=True)[0]


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
