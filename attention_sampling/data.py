"""Image-folder data sets, read through imageio, and the paper's augmentations.

ROOT/<class name>/<image files>: classes are the sub-folders sorted by name. Images are decoded lazily,
one batch at a time, so memory does not grow with the data set; every image becomes 8-bit RGB.
"""
import os
from dataclasses import dataclass, field

import imageio.v3 as iio
import numpy as np

from .errors import AttentionSamplingError

IMAGE_EXTENSIONS = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp")


def to_rgb8(pixels, path="image"):
    """(H, W[, C]) any integer or float dtype -> (H, W, 3) uint8: grey is repeated, alpha dropped,
    16-bit scaled down by 257 (65535 -> 255), wider integers within 0..65535 taken as 16-bit,
    floats taken as [0, 1]."""
    pixels = np.asarray(pixels)
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    if pixels.ndim != 3 or pixels.shape[2] not in (1, 2, 3, 4):
        raise AttentionSamplingError(f"{path}: unsupported image shape {pixels.shape}")
    if pixels.shape[2] in (1, 2):  # grey, or grey + alpha
        pixels = np.repeat(pixels[:, :, :1], 3, axis=2)
    pixels = pixels[:, :, :3]
    if pixels.dtype == np.uint8:
        return np.ascontiguousarray(pixels)
    if (np.issubdtype(pixels.dtype, np.integer) and pixels.dtype.itemsize > 2 and pixels.size
            and pixels.min() >= 0 and pixels.max() <= 65535):
        # Pillow's "I" mode widens 16-bit files to int32 (older Pillow opens every 16-bit grey PNG
        # that way); scaled by the int32 maximum they would come out black.
        pixels = pixels.astype(np.uint16)
    if pixels.dtype == np.uint16:
        return (pixels // 257).astype(np.uint8)
    if np.issubdtype(pixels.dtype, np.floating):
        return np.clip(np.rint(pixels * 255), 0, 255).astype(np.uint8)
    if np.issubdtype(pixels.dtype, np.integer) or pixels.dtype == bool:
        top = 1 if pixels.dtype == bool else np.iinfo(pixels.dtype).max
        return (pixels.astype(np.float64) * (255 / top)).round().astype(np.uint8)
    raise AttentionSamplingError(f"{path}: unsupported pixel type {pixels.dtype}")


def read_image(path):
    """Decode one image file -> (H, W, 3) uint8, or AttentionSamplingError naming the file."""
    try:
        pixels = iio.imread(path)
    except Exception as error:  # imageio raises many types for a bad file; the user needs only which one
        raise AttentionSamplingError(f"{path}: cannot read image ({type(error).__name__}: {error})") from None
    if pixels.ndim == 4:  # a multi-page TIFF or an animation: the first frame
        pixels = pixels[0]
    return to_rgb8(pixels, path)


@dataclass
class ImageFolder:
    """The files of ROOT/<class>/<image> with their integer labels; images are read on demand."""

    root: str
    classes: list = field(default_factory=list)
    paths: list = field(default_factory=list)
    labels: np.ndarray = None

    @classmethod
    def scan(cls, root):
        if not os.path.isdir(root):
            raise AttentionSamplingError(f"--data {root}: no such folder")
        classes = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)) and not d.startswith("."))
        if len(classes) < 2:
            raise AttentionSamplingError(f"--data {root}: needs at least two class folders, found {len(classes)}")
        paths, labels = [], []
        for label, name in enumerate(classes):
            folder = os.path.join(root, name)
            files = sorted(f for f in os.listdir(folder) if f.lower().endswith(IMAGE_EXTENSIONS))
            if not files:
                raise AttentionSamplingError(f"{folder}: class folder holds no images ({', '.join(IMAGE_EXTENSIONS)})")
            paths += [os.path.join(folder, f) for f in files]
            labels += [label] * len(files)
        return cls(root, classes, paths, np.array(labels, dtype=np.int64))

    def __len__(self):
        return len(self.paths)

    def read(self, index):
        return read_image(self.paths[index])

    def image_shape(self):
        """(H, W) of the first image: the size every batch is brought to."""
        return self.read(0).shape[:2]


def stratified_split(labels, test_fraction, seed):
    """(N,) labels -> (train indices, test indices): the same fraction of every class goes to test."""
    if not 0 < test_fraction < 1:
        raise AttentionSamplingError(f"--test-fraction must be between 0 and 1, got {test_fraction}")
    rng = np.random.default_rng(seed)
    train, test = [], []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        n_test = int(round(len(members) * test_fraction))
        n_test = min(max(n_test, 1), len(members) - 1) if len(members) > 1 else 0
        test += list(members[:n_test])
        train += list(members[n_test:])
    return np.sort(np.array(train, dtype=np.int64)), np.sort(np.array(test, dtype=np.int64))


def resize_bilinear(image, height, width):
    """(H, W, C) float -> (height, width, C), sampling pixel centres with bilinear interpolation."""
    h, w = image.shape[:2]
    rows = np.clip((np.arange(height) + 0.5) * (h / height) - 0.5, 0, h - 1)
    cols = np.clip((np.arange(width) + 0.5) * (w / width) - 0.5, 0, w - 1)
    r0 = np.floor(rows).astype(np.int64)
    c0 = np.floor(cols).astype(np.int64)
    r1, c1 = np.minimum(r0 + 1, h - 1), np.minimum(c0 + 1, w - 1)
    fr = (rows - r0).astype(image.dtype)[:, None, None]
    fc = (cols - c0).astype(image.dtype)[None, :, None]
    # Separable: interpolate along rows, then along columns.
    vertical = image[r0] * (1 - fr) + image[r1] * fr
    return vertical[:, c0] * (1 - fc) + vertical[:, c1] * fc


@dataclass
class Augmentation:
    """The paper's augmentations, each switchable; applied to (H, W, 3) float pixels in [0, 255]."""

    flip: bool = True
    contrast: float = 0.3  # factor drawn from [1 - contrast, 1 + contrast]
    zoom: float = 0.2      # crop 1 / z of each side, z drawn from [1, 1 + zoom], resized back

    def __call__(self, image, rng):
        if self.flip:
            if rng.random() < 0.5:
                image = image[::-1]
            if rng.random() < 0.5:
                image = image[:, ::-1]
        if self.contrast > 0:
            factor = rng.uniform(1 - self.contrast, 1 + self.contrast)
            mean = image.mean(axis=(0, 1), keepdims=True)
            image = (image - mean) * np.float32(factor) + mean
        if self.zoom > 0:
            z = rng.uniform(1, 1 + self.zoom)
            h, w = image.shape[:2]
            ch, cw = max(1, int(round(h / z))), max(1, int(round(w / z)))
            top, left = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
            image = resize_bilinear(image[top:top + ch, left:left + cw], h, w)
        return image


def load_batch(dataset, indices, shape, augment=None, rng=None):
    """Indices into the data set -> (N, H, W, 3) float32 in [0, 1], every image brought to `shape`.

    Pixels are augmented in [0, 255], clipped to that range, then scaled to [0, 1] as in the paper.
    """
    height, width = shape
    batch = np.empty((len(indices), height, width, 3), dtype=np.float32)
    for slot, index in enumerate(indices):
        image = dataset.read(index).astype(np.float32)
        if image.shape[:2] != (height, width):
            image = resize_bilinear(image, height, width)
        if augment is not None:
            image = augment(image, rng)
        np.clip(image, 0, 255, out=batch[slot])
    batch *= np.float32(1 / 255)
    return batch
