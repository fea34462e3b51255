"""What look() needs from a batch of images, and the two ways to give it.

Attention sampling reads an image twice: the attention network sees it average-pooled by the scale c
(the attention view), and the feature network sees S x S full-resolution patches around the sampled
cells. A batch is either
- an (N, H, W, C) array: the view is its average pool (inside the attention network, AvgPool2d) and the
  patches are cut by patches.extract_patches, or
- any object with the `LazyImages` interface below, which makes both itself: an image source that never
  holds the full-resolution pixels (a pyramidal slide read region by region lives in the application).
The method is the same either way; only where the two reads come from differs.
"""
from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class LazyImages(Protocol):
    """A batch of N images of H x W pixels and C channels that supplies its own view and patches."""

    shape: tuple  # (N, H, W, C): the full-resolution size, never allocated

    def view(self, scale):
        """-> (N, H // c, W // c, C) float32: the images average-pooled by c (leftover rows/columns dropped)."""

    def patches(self, cells, patch_size, scale, border):
        """(N, K, 2) cells -> (N, K, S, S, C) float32: what extract_patches would cut from the full images."""


def is_lazy(images):
    """True for a LazyImages batch, False for an array (the reference path)."""
    return not isinstance(images, np.ndarray) and isinstance(images, LazyImages)
