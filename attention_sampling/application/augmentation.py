"""The paper's augmentations of one decoded image: random flips, a zoom (a crop resized back) and a
contrast change, as per-pixel arithmetic that Numba runs in one pass, and the bilinear resize that brings an
image to the run's size. augmented.py composes the same arithmetic into the attention view and the patches,
without a full-size copy."""
from dataclasses import dataclass

import numpy as np
from numba import njit

from .settings import TRAINING_DEFAULTS


def resize_bilinear(image, height, width):
    """(H, W, C) float -> (height, width, C), sampling pixel centres with bilinear interpolation."""
    h, w = image.shape[:2]
    r0, r1, fr = _bilinear_table(height, h)
    c0, c1, fc = _bilinear_table(width, w)
    fr = fr.astype(image.dtype)[:, None, None]
    fc = fc.astype(image.dtype)[None, :, None]
    # Separable: interpolate along rows, then along columns.
    vertical = image[r0] * (1 - fr) + image[r1] * fr
    return vertical[:, c0] * (1 - fc) + vertical[:, c1] * fc


@njit(cache=True, nogil=True)
def bilinear_source(index, size, source_size):
    """Output pixel `index` of `size` resized from `source_size` pixels -> (first, second, fraction): the two
    source pixels around the output pixel's centre and the weight of the second (float64), clamped at the
    edges. The one place a bilinear resize decides where it samples."""
    position = min(max((index + 0.5) * (source_size / size) - 0.5, 0.0), source_size - 1.0)
    first = int(np.floor(position))
    return first, min(first + 1, source_size - 1), position - np.floor(position)


@njit(cache=True, nogil=True)
def _bilinear_table(size, source_size):
    """bilinear_source of output pixels 0 .. size - 1 -> (size,) firsts, seconds and float64 fractions."""
    firsts = np.empty(size, np.int64)
    seconds = np.empty(size, np.int64)
    fractions = np.empty(size, np.float64)
    for index in range(size):
        firsts[index], seconds[index], fractions[index] = bilinear_source(index, size, source_size)
    return firsts, seconds, fractions


@dataclass
class Augmentation:
    """The paper's augmentations, each switchable; applied to (H, W, 3) float pixels in [0, 255].

    `draw` takes the random numbers, in a fixed order; `__call__` applies them one after the other with
    NumPy (the plain reference); load_batch applies them all in one pass (`augment_into`), reading each
    source pixel once and writing the batch slot directly, with no full-size intermediate copy.
    """

    flip: bool = True
    contrast: float = TRAINING_DEFAULTS["contrast"]  # factor drawn from [1 - contrast, 1 + contrast]
    zoom: float = TRAINING_DEFAULTS["zoom"]          # crop 1 / z of each side, z drawn from [1, 1 + zoom], resized back

    def draw(self, rng, height, width):
        """-> (flip rows, flip columns, contrast factor, crop (top, left, crop height, crop width))."""
        flip_rows = flip_columns = False
        if self.flip:
            flip_rows = bool(rng.random() < 0.5)
            flip_columns = bool(rng.random() < 0.5)
        factor = float(rng.uniform(1 - self.contrast, 1 + self.contrast)) if self.contrast > 0 else 1.0
        crop = (0, 0, height, width)
        if self.zoom > 0:
            z = rng.uniform(1, 1 + self.zoom)
            ch, cw = max(1, int(round(height / z))), max(1, int(round(width / z)))
            crop = (int(rng.integers(0, height - ch + 1)), int(rng.integers(0, width - cw + 1)), ch, cw)
        return flip_rows, flip_columns, factor, crop

    def __call__(self, image, rng):
        flip_rows, flip_columns, factor, (top, left, ch, cw) = self.draw(rng, *image.shape[:2])
        if flip_rows:
            image = image[::-1]
        if flip_columns:
            image = image[:, ::-1]
        if self.contrast > 0:
            mean = image.mean(axis=(0, 1), keepdims=True)
            image = (image - mean) * np.float32(factor) + mean
        if self.zoom > 0:
            h, w = image.shape[:2]
            image = resize_bilinear(image[top:top + ch, left:left + cw], h, w)
        return image


@njit(cache=True, nogil=True)
def _channel_means(image):
    """(H, W, C) -> (C,) float64 means, one pass: each column-and-channel summed down the rows (a contiguous
    loop the compiler vectorises), then those sums per channel."""
    h, w, c = image.shape
    flat = np.ascontiguousarray(image).reshape(h, w * c)
    columns = np.zeros(w * c)
    for i in range(h):
        for t in range(w * c):
            columns[t] += flat[i, t]
    sums = np.zeros(c)
    for t in range(w * c):
        sums[t % c] += columns[t]
    return sums / (h * w)


@njit(cache=True, nogil=True)
def source_pixels(index, size, crop_start, crop_size, flip):
    """Output row (or column) `index` of `size` -> (source index, next source index, weight of the next):
    bilinear_source's sample of the crop's pixel centres, as resize_bilinear takes it, mapped back through the
    flip (the flipped image's pixel p is the source's size - 1 - p)."""
    first, second, fraction = bilinear_source(index, size, crop_size)
    first, second = crop_start + first, crop_start + second
    if flip:
        first, second = size - 1 - first, size - 1 - second
    return first, second, np.float32(fraction)


@njit(cache=True, nogil=True)
def source_table(indices, size, crop_start, crop_size, flip):
    """(K,) output indices -> (K,) firsts, (K,) seconds, (K,) float32 weights: source_pixels of each, computed
    once per axis instead of once per pixel (its float division and floor cost more than the pixel's arithmetic)."""
    firsts = np.empty(indices.shape[0], np.int64)
    seconds = np.empty(indices.shape[0], np.int64)
    weights = np.empty(indices.shape[0], np.float32)
    for k in range(indices.shape[0]):
        firsts[k], seconds[k], weights[k] = source_pixels(indices[k], size, crop_start, crop_size, flip)
    return firsts, seconds, weights


@njit(cache=True, nogil=True)
def between_rows(image, s0, s1, fr, t, k):
    """Channel k of column t, interpolated between source rows s0 and s1 (weight fr of s1)."""
    return np.float32(image[s0, t, k]) * (1 - fr) + np.float32(image[s1, t, k]) * fr


@njit(cache=True, nogil=True)
def finish_pixel(left, right, fc, factor, mean):
    """Two between_rows values -> the augmented value in [0, 1]: interpolated between them (weight fc of the
    right), its contrast (v - mean) * factor + mean, clipped to [0, 255] and scaled."""
    value = left * (1 - fc) + right * fc
    value = (value - mean) * factor + mean
    return min(max(value, np.float32(0)), np.float32(255)) * np.float32(1 / 255)


@njit(cache=True, nogil=True)
def augmented_pixel(image, s0, s1, fr, t0, t1, fc, k, factor, mean):
    """One augmented value in [0, 1]: the bilinear sample between source rows s0, s1 (weight fr of s1) and
    columns t0, t1 (weight fc of t1) of channel k, its contrast, clipped and scaled. The one place this
    arithmetic lives, with its two halves (augmented.py cuts views and patches with it; its view kernel
    takes the halves apart to interpolate each source row once)."""
    return finish_pixel(between_rows(image, s0, s1, fr, t0, k), between_rows(image, s0, s1, fr, t1, k), fc,
                         factor, mean)


@njit(cache=True, nogil=True)  # runs in the loader thread beside the training step
def _augment_into(image, flip_rows, flip_columns, factor, mean, top, left, crop_h, crop_w, out):
    """out (H, W, C) float32 in [0, 1] = clip(contrast(zoom(flip(image))), 0, 255) / 255 in one pass.

    Flips are index changes; the zoom samples the crop's pixel centres bilinearly as resize_bilinear does;
    the contrast (v - mean) * factor + mean commutes with that interpolation (its weights sum to one), so it
    is applied to each interpolated value, with the whole flipped image's mean, as the reference does."""
    h, w, c = image.shape
    for i in range(h):
        s0, s1, fr = source_pixels(i, h, top, crop_h, flip_rows)
        for j in range(w):
            t0, t1, fc = source_pixels(j, w, left, crop_w, flip_columns)
            for k in range(c):
                out[i, j, k] = augmented_pixel(image, s0, s1, fr, t0, t1, fc, k, factor, mean[k])
    return out


def contrast_centre(image, contrast):
    """(H, W, C) image -> (C,) float32 centre of the contrast change: the channel means when the contrast
    is on, zeros (never used) when it is off, so that the mean pass is skipped."""
    return _channel_means(image).astype(np.float32) if contrast else np.zeros(image.shape[2], np.float32)


def augment_into(image, augment, rng, out):
    """(H, W, 3) pixels in [0, 255] (any dtype) -> out (H, W, 3) float32 in [0, 1]: the augmentations
    `augment` draws from `rng`, clipped and scaled, in one pass (Augmentation's docstring)."""
    h, w = image.shape[:2]
    flip_rows, flip_columns, factor, (top, left, crop_h, crop_w) = augment.draw(rng, h, w)
    mean = contrast_centre(image, augment.contrast > 0)
    return _augment_into(np.ascontiguousarray(image), flip_rows, flip_columns, np.float32(factor), mean,
                         top, left, crop_h, crop_w, out)
