"""Generated mega-pixel data where the label lives in small local structures.

Each image is a noisy grey background with a few bright square "spots". A spot's texture carries the
class: horizontal stripes, vertical stripes or a checkerboard, each of period 2 pixels. Average-pooled by
any even factor, all three textures become the same flat bright square, so the low-resolution view can
find the spots but cannot tell the class: the model must look at full-resolution patches, as in the
lymphoma slides where the cell structure decides the class. Optional distractor spots are bright but
flat, identical to real spots at low resolution and uninformative at full resolution.
"""
import numpy as np

CLASS_NAMES = ("horizontal", "vertical", "checkerboard")


def spot_texture(label, size):
    """(size, size) float in {0.6, 1.0}: the class's period-2 pattern, mean 0.8."""
    rows, cols = np.mgrid[0:size, 0:size]
    parity = {0: rows % 2, 1: cols % 2, 2: (rows + cols) % 2}[label]
    return 0.6 + 0.4 * parity


def make_image(label, height, width, n_spots, spot_size, n_distractors, rng):
    """(height, width, 3) uint8 image of class `label`, and the (n_spots, 2) top-left corners of its spots."""
    image = 0.3 + 0.08 * rng.standard_normal((height, width, 1))
    tint = rng.uniform(0.9, 1.1, size=3)
    corners = np.stack([rng.integers(0, height - spot_size + 1, n_spots + n_distractors),
                        rng.integers(0, width - spot_size + 1, n_spots + n_distractors)], axis=1)
    texture = spot_texture(label, spot_size)
    for k, (top, left) in enumerate(corners):
        # Distractors are flat at the textures' mean: the same at low resolution, no class at full.
        patch = texture if k < n_spots else np.full((spot_size, spot_size), 0.8)
        image[top:top + spot_size, left:left + spot_size, 0] = patch
    image = image * tint
    pixels = np.clip(np.rint(image * 255), 0, 255).astype(np.uint8)
    return pixels, corners[:n_spots]


def make_dataset(n_images, height, width, n_spots=3, spot_size=8, n_distractors=0, n_classes=3, seed=0):
    """-> images (N, H, W, 3) uint8, labels (N,) int64 balanced over classes, spot corners (N, n_spots, 2)."""
    if not 2 <= n_classes <= len(CLASS_NAMES):
        raise ValueError(f"n_classes must be between 2 and {len(CLASS_NAMES)}, got {n_classes}")
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n_images) % n_classes)
    images = np.empty((n_images, height, width, 3), dtype=np.uint8)
    corners = np.empty((n_images, n_spots, 2), dtype=np.int64)
    for i, label in enumerate(labels):
        images[i], corners[i] = make_image(label, height, width, n_spots, spot_size, n_distractors, rng)
    return images, labels.astype(np.int64), corners
