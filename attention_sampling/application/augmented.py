"""Augmentation composed into the two reads the method makes, with no full-size augmented copy.

The training batch used to be made whole: every image flipped, zoomed (a bilinear resize of a crop),
contrast-changed, clipped and scaled into an (N, H, W, 3) float32 array, which the attention network then
average-pooled by c and from which P patches per look were cut. The method needs only those two reads, so
here each is computed straight from the decoded image:

- the attention view: each cell is the mean of the c x c augmented pixels it covers, every augmented pixel
  computed on the fly and summed, never stored;
- the patches: each patch pixel is the augmented pixel at its place, with the patch border rules of
  patches.py (zero, reflect, inside) applied in the augmented image's frame.

Every augmented pixel is computed by `augmented_pixel`, the very function augmentation.augment_into uses (the view
by its two halves, `between_rows` once per source row and `finish_pixel` per pixel: the same operations in
the same order), so a patch equals the one cut from the augmented image bit for bit, and a view cell equals
the average pool of that image up to the order of a float32 sum. Images that are not augmented (evaluation,
--no-augment: `AugmentedImages.plain`) have their view pooled straight from their pixels (`_plain_view`).
A batch of 8 images of 1388 x 1040 then holds 35 MB of decoded bytes instead of 138 MB of float32 pixels.
"""
import numpy as np
from numba import njit

from nn import threads

from ..patches import BORDERS, patch_offset, reflect_index
from .augmentation import augmented_pixel, between_rows, contrast_centre, finish_pixel, source_pixels, source_table


@njit(cache=True, nogil=True)  # runs in the loader thread beside the training step
def _augmented_view(image, flip_rows, flip_columns, factor, mean, top, left, crop_h, crop_w, scale, out):
    """out (H // c, W // c, C) float32 = AvgPool_c(augmented image), summed cell by cell in float32: each
    cell's pixels row by row, left to right, as a float32 average pool adds them.

    Each output row first interpolates its two source rows once for every source column (between_rows),
    then each pixel interpolates two of those: the same operations as augmented_pixel, in the same order,
    so the same numbers, with half the reads and none of the per-pixel index arithmetic."""
    h, w, c = image.shape
    rows, columns = out.shape[0], out.shape[1]
    t0s, t1s, fcs = source_table(np.arange(columns * scale), w, left, crop_w, flip_columns)
    # between_rows's values are float64 (Numba promotes 1 - a float32 weight to float64): kept so. Laid out
    # as the image row is, so that the loop filling them runs over contiguous values.
    between = np.empty((w, c), dtype=np.float64)
    out[:] = 0
    for i in range(rows * scale):
        s0, s1, fr = source_pixels(i, h, top, crop_h, flip_rows)
        for t in range(w):
            for k in range(c):
                between[t, k] = between_rows(image, s0, s1, fr, t, k)
        cells = out[i // scale]
        for column in range(columns):
            for j in range(column * scale, (column + 1) * scale):
                t0, t1, fc = t0s[j], t1s[j], fcs[j]
                for k in range(c):
                    # The float32 sum of float64 values, as `+=` on a float32 array does it.
                    cells[column, k] += finish_pixel(between[t0, k], between[t1, k], fc, factor, mean[k])
    out *= np.float32(1 / (scale * scale))
    return out


@njit(cache=True, nogil=True)
def _plain_view(image, scale, out):
    """out (H // c, W // c, C) float32 = AvgPool_c(clip(image, 0, 255) / 255): the attention view of an image
    that is not augmented (evaluation), straight from its decoded pixels. Each row of cells first sums its c
    image rows value by value (a contiguous loop the compiler vectorises), then each cell its c columns;
    float32 sums, equal to the pool of the float32 image up to their order."""
    h, w, c = image.shape
    rows, columns = out.shape[0], out.shape[1]
    width = columns * scale * c
    flat = image.reshape(h, w * c)
    sums = np.empty(width, np.float32)
    for row in range(rows):
        sums[:] = 0
        for i in range(row * scale, (row + 1) * scale):
            for t in range(width):
                sums[t] += min(max(np.float32(flat[i, t]), np.float32(0)), np.float32(255))
        for column in range(columns):
            for k in range(c):
                total = np.float32(0)
                for j in range(column * scale, (column + 1) * scale):
                    total += sums[j * c + k]
                out[row, column, k] = total * np.float32(1 / (255 * scale * scale))
    return out


@njit(cache=True, nogil=True)
def _inside(index, length, border):
    """A patch pixel's row (or column) in the augmented image: mirrored back inside with border 1 (reflect),
    -1 where it falls outside and stays zero (zero; inside, whose patch is already shifted)."""
    if border == 1:
        return reflect_index(index, length)
    return index if 0 <= index < length else -1


@njit(cache=True, nogil=True)
def _augmented_patches(start, stop, image, flip_rows, flip_columns, factor, mean, top, left, crop_h, crop_w,
                       cells, patch_size, scale, offset, border, out):
    """cells (K, 2) -> out (K, S, S, C) float32: extract_patches of the augmented image, pixel by pixel.
    border: 0 zero, 1 reflect, 2 inside (patches.py); out is zeroed by the caller."""
    h, w, c = image.shape
    for draw in range(start, stop):
        row0 = cells[draw, 0] * scale + offset
        col0 = cells[draw, 1] * scale + offset
        if border == 2:
            row0 = max(0, min(row0, h - patch_size))
            col0 = max(0, min(col0, w - patch_size))
        for i in range(patch_size):
            row = _inside(row0 + i, h, border)
            if row < 0:
                continue
            s0, s1, fr = source_pixels(row, h, top, crop_h, flip_rows)
            for j in range(patch_size):
                column = _inside(col0 + j, w, border)
                if column < 0:
                    continue
                t0, t1, fc = source_pixels(column, w, left, crop_w, flip_columns)
                for k in range(c):
                    out[draw, i, j, k] = augmented_pixel(image, s0, s1, fr, t0, t1, fc, k, factor, mean[k])
    return out


class AugmentedImages:
    """A batch of decoded (H, W, 3) images in [0, 255] and one augmentation draw each, read as the
    attention_sampling.images.LazyImages interface: the attention view and the patches of the augmented
    images, computed from the decoded pixels (module docstring).

    draws: per image, Augmentation.draw's (flip rows, flip columns, contrast factor, crop); contrast says
    whether the contrast is on (its centre, the image's channel means, is computed only then).
    The view for `view_scale` is computed when the batch is made (in the loader thread) and kept.
    plain_images: the draws change nothing (made by `plain`), so the view is pooled straight from the pixels.
    """

    def __init__(self, images, draws, contrast=True, view_scale=None, plain_images=False):
        self.images = [np.ascontiguousarray(image) for image in images]
        height, width, channels = self.images[0].shape
        self.shape = (len(self.images), height, width, channels)
        self.draws = [(bool(fr), bool(fc), np.float32(factor), tuple(int(v) for v in crop))
                      for fr, fc, factor, crop in draws]
        self.means = [contrast_centre(image, contrast) for image in self.images]
        self.plain_images = plain_images
        self._views = {}
        if view_scale is not None:
            self.view(view_scale)

    @classmethod
    def plain(cls, images, view_scale=None):
        """The images as they are (evaluation, --no-augment): no flip, a factor of 1, the whole image as the
        crop. Their patches are the plain pixels / 255 exactly; their view is pooled straight from them."""
        draws = [(False, False, 1.0, (0, 0) + tuple(image.shape[:2])) for image in images]
        return cls(images, draws, contrast=False, view_scale=view_scale, plain_images=True)

    def _arguments(self, index):
        flip_rows, flip_columns, factor, (top, left, crop_h, crop_w) = self.draws[index]
        return (self.images[index], flip_rows, flip_columns, factor, self.means[index], top, left, crop_h, crop_w)

    def view(self, scale):
        """-> (N, H // c, W // c, C) float32: each augmented image average-pooled by c."""
        if scale not in self._views:
            n, h, w, c = self.shape
            out = np.empty((n, h // scale, w // scale, c), dtype=np.float32)
            for index in range(n):
                if self.plain_images:
                    _plain_view(self.images[index], scale, out[index])
                else:
                    _augmented_view(*self._arguments(index), scale, out[index])
            self._views[scale] = out
        return self._views[scale]

    def patches(self, cells, patch_size, scale, border):
        """(N, K, 2) cells -> (N, K, S, S, C) float32: extract_patches of the augmented images."""
        n, k = cells.shape[:2]
        out = np.zeros((n, k, patch_size, patch_size, self.shape[3]), dtype=np.float32)
        cells = np.ascontiguousarray(cells, dtype=np.int64)
        for index in range(n):
            threads.run(_augmented_patches, k, *self._arguments(index), cells[index], patch_size, scale,
                        patch_offset(patch_size, scale), BORDERS.index(border), out[index])
        return out
