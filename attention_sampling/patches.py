"""Cut full-resolution patches around sampled cells (Numba): (N, H, W, C) + (N, P, 2) -> (N, P, S, S, C).

How a cell maps to pixels. The attention map is the image average-pooled by `scale` = c, so cell (r, q)
summarises full-resolution rows [r c, r c + c) and columns [q c, q c + c); its centre is at r c + c / 2.
The patch of size S starts at
    top = r c + floor((c - S) / 2),   left = q c + floor((c - S) / 2)
and spans S rows and columns. When S and c are both even or both odd the patch is centred exactly on
the cell's centre; otherwise it sits half a pixel up and left of it. When H or W is not a multiple of c the leftover
rows/columns at the bottom/right are never a cell (pooling drops them) but patches may still cover them.
Pixels outside the image are zeros.
"""
import numpy as np
from numba import njit, prange


def patch_offset(patch_size, scale):
    """Offset of a patch's top-left pixel from its cell's top-left pixel: floor((c - S) / 2)."""
    return (scale - patch_size) // 2


@njit(cache=True, parallel=True)
def _extract(rows, cells, patch_size, scale, offset, channels, out):
    """rows (N, H, W * C), out (N, P, S, S * C): images and patches seen as rows of W * C values, so each
    patch row is one contiguous copy (a 2-D slice copy compiles to a slower nested loop)."""
    n, h, row_length = rows.shape
    w = row_length // channels
    p = cells.shape[1]
    for item in prange(n * p):
        image, draw = item // p, item % p
        top = cells[image, draw, 0] * scale + offset
        left = cells[image, draw, 1] * scale + offset
        # Copy only the part of the patch inside the image; the rest was zeroed when out was made.
        row0, row1 = max(0, -top), min(patch_size, h - top)
        col0, col1 = max(0, -left), min(patch_size, w - left)
        if row0 >= row1 or col0 >= col1:
            continue
        for i in range(row0, row1):
            out[image, draw, i, col0 * channels:col1 * channels] = \
                rows[image, top + i, (left + col0) * channels:(left + col1) * channels]
    return out


def extract_patches(images, cells, patch_size, scale):
    """(N, H, W, C) images, (N, P, 2) cells in the grid pooled by `scale` -> (N, P, S, S, C) patches."""
    n, h, w, c = images.shape
    p = cells.shape[1]
    out = np.zeros((n, p, patch_size, patch_size * c), dtype=images.dtype)
    rows = np.ascontiguousarray(images).reshape(n, h, w * c)
    _extract(rows, np.ascontiguousarray(cells, dtype=np.int64), patch_size, scale,
             patch_offset(patch_size, scale), c, out)
    return out.reshape(n, p, patch_size, patch_size, c)


def patch_boxes(cells, patch_size, scale):
    """(…, 2) cells -> (…, 4) boxes (top, left, bottom, right) in full-resolution pixels, for drawing."""
    offset = patch_offset(patch_size, scale)
    top_left = cells * scale + offset
    return np.concatenate([top_left, top_left + patch_size], axis=-1)
