"""Cut full-resolution patches around sampled cells (Numba): (N, H, W, C) + (N, P, 2) -> (N, P, S, S, C).

How a cell maps to pixels. The attention map is the image average-pooled by `scale` = c, so cell (r, q)
summarises full-resolution rows [r c, r c + c) and columns [q c, q c + c); its centre is at r c + c / 2.
The patch of size S starts at
    top = r c + floor((c - S) / 2),   left = q c + floor((c - S) / 2)
and spans S rows and columns. When S and c are both even or both odd the patch is centred exactly on
the cell's centre; otherwise it sits half a pixel up and left of it. When H or W is not a multiple of c the leftover
rows/columns at the bottom/right are never a cell (pooling drops them) but patches may still cover them.

Where a patch leaves the image, `border` decides what it sees:
- "zero": zeros outside the image (the original behaviour). A border patch is then recognisable by its
  black band alone, an easy feature that REINFORCE can lock onto (the attention collapses on a corner).
- "reflect": the image mirrored at its edges, without repeating the edge pixel (numpy's mode="reflect":
  pixel -1 is pixel 1, pixel H is pixel H - 2), folded again for patches larger than the image.
- "inside": the patch is shifted, as little as possible, to lie inside the image: top is clamped to
  [0, H - S] (and left to [0, W - S]); where the image is smaller than S the rest is zeros.
"""
import numpy as np
from numba import njit, prange

from nn import threads
from nn.kernel_tools import reflect_index

BORDERS = ("zero", "reflect", "inside")


def patch_offset(patch_size, scale):
    """Offset of a patch's top-left pixel from its cell's top-left pixel: floor((c - S) / 2)."""
    return (scale - patch_size) // 2


@njit(cache=True, nogil=True)
def _reflect_each(indices, length, out):
    """indices (K,) int64 -> out (K,): reflect_index of each, so the rule is written once."""
    for k in range(indices.shape[0]):
        out[k] = reflect_index(indices[k], length)
    return out


def reflect_indices(indices, length):
    """(...) integer pixel indices -> (...) int64 indices mirrored into [0, length), as reflect_index."""
    indices = np.asarray(indices, dtype=np.int64)
    flat = np.ascontiguousarray(indices).reshape(-1)
    return _reflect_each(flat, length, np.empty_like(flat)).reshape(indices.shape)


@threads.two_builds(cache=True, nogil=True)
def _extract(start, stop, rows, cells, patch_size, scale, offset, channels, border, out):
    """rows (N, H, W * C), out (N, P, S, S * C): images and patches seen as rows of W * C values, so each
    patch row is one contiguous loop (a 2-D slice copy compiles to a slower nested loop; a 1-D slice
    assignment compiles Numba's shape-error formatting, seconds of cold start: benchmarks/bench_cold.py).
    border: 0 zero, 1 reflect, 2 inside (see the module docstring)."""
    n, h, row_length = rows.shape
    w = row_length // channels
    p = cells.shape[1]
    for item in prange(start, stop):
        image, draw = item // p, item % p
        top = cells[image, draw, 0] * scale + offset
        left = cells[image, draw, 1] * scale + offset
        if border == 2:
            top = max(0, min(top, h - patch_size))
            left = max(0, min(left, w - patch_size))
        # The part of the patch inside the image is a contiguous copy per row; out was zeroed when made.
        row0, row1 = max(0, -top), min(patch_size, h - top)
        col0, col1 = max(0, -left), min(patch_size, w - left)
        if border == 1:
            for i in range(patch_size):
                target, source = out[image, draw, i], rows[image, reflect_index(top + i, h)]
                inside, outside = target[col0 * channels:col1 * channels], source[(left + col0) * channels:]
                for k in range(inside.shape[0]):
                    inside[k] = outside[k]
                for j in range(patch_size):
                    if col0 <= j < col1:
                        continue
                    column = reflect_index(left + j, w)
                    for channel in range(channels):
                        target[j * channels + channel] = source[column * channels + channel]
            continue
        if row0 >= row1 or col0 >= col1:
            continue
        for i in range(row0, row1):
            for k in range(col0 * channels, col1 * channels):
                out[image, draw, i, k] = rows[image, top + i, left * channels + k]
    return out


def extract_patches(images, cells, patch_size, scale, border="zero"):
    """(N, H, W, C) images, (N, P, 2) cells in the grid pooled by `scale` -> (N, P, S, S, C) patches.

    `border` ("zero", "reflect" or "inside") decides what a patch sees where it leaves the image."""
    n, h, w, c = images.shape
    p = cells.shape[1]
    out = np.zeros((n, p, patch_size, patch_size * c), dtype=images.dtype)
    rows = np.ascontiguousarray(images).reshape(n, h, w * c)
    _extract(n * p, rows, np.ascontiguousarray(cells, dtype=np.int64), patch_size, scale,
             patch_offset(patch_size, scale), c, BORDERS.index(border), out)
    return out.reshape(n, p, patch_size, patch_size, c)


def patch_boxes(cells, patch_size, scale, image_shape=None, border="zero"):
    """(…, 2) cells -> (…, 4) boxes (top, left, bottom, right) in full-resolution pixels, for drawing.

    With border="inside" and image_shape (H, W) the boxes are shifted inside the image as the patches are."""
    offset = patch_offset(patch_size, scale)
    top_left = cells * scale + offset
    if border == "inside" and image_shape is not None:
        limit = np.array(image_shape) - patch_size
        top_left = np.maximum(0, np.minimum(top_left, limit))
    return np.concatenate([top_left, top_left + patch_size], axis=-1)


def outside_image(cells, patch_size, scale, image_shape):
    """(…, 2) cells -> (…,) bool: the cell's patch, placed as the docstring says before any shift,
    reaches past the image border (the cells whose patch "zero" would pad)."""
    top_left = cells * scale + patch_offset(patch_size, scale)
    bottom_right = top_left + patch_size
    return (top_left < 0).any(axis=-1) | (bottom_right > np.array(image_shape)).any(axis=-1)
