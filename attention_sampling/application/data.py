"""Image-folder data sets, read through imageio, and the paper's augmentations.

ROOT/<class name>/<image files>: classes are the sub-folders sorted by name. Images are decoded lazily,
one batch at a time, so memory does not grow with the data set; every image becomes 8-bit RGB.

Whole-slide images (tiled or pyramidal TIFF, SVS, ...; slides.py) are never decoded whole: a data set
holding one is "lazy", and its batches are slides.SlideBatch objects that read the attention view and the
patches themselves (plain images in such a data set are decoded whole and read the same way).

Folders nobody cleaned: `ImageFolder.validate` decodes every image once before training and sorts out
the files that cannot be trained on (unreadable, empty, too small, too large, NaN pixels), so that a
bad file stops the run before it starts, or is left out with a warning, instead of failing mid-epoch.
"""
import hashlib
import os
import sys
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import NamedTuple

import imageio.v3 as iio
import numpy as np
from numba import njit
from PIL import Image
from tqdm import tqdm

from .errors import AttentionSamplingError
from .errors import one_line as _one_line
from .settings import TRAINING_DEFAULTS, setting
from .slides import SLIDE_EXTENSIONS, check_source, is_slide, load_slides, slide_shape

IMAGE_EXTENSIONS = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp") + SLIDE_EXTENSIONS
# Width x height above which an image is refused unread: a 100-megapixel RGB image already takes 1.2 GB
# as float32 in a batch. A few bytes of PNG or TIFF can declare billions of pixels (a decompression bomb).
DEFAULT_MAX_PIXELS = 100_000_000
# Decoded images are kept in memory when all of them fit in this (ImageFolder.keep_decoded; train.py --cache-mb).
DEFAULT_CACHE_BYTES = 256 * 2**20
# How many bad files a stop message names before it says "and N more".
LISTED = 10

# Image.MAX_IMAGE_PIXELS is one global of Pillow's; the header probe lifts it for a moment (our own
# limit is checked right after), so probes in several threads take turns.
_PROBE_LOCK = threading.Lock()


# How much nicer than the step the trainer's loader thread runs. The step's kernels
# run one thread per core and a parallel region waits for its slowest thread, so a loader that takes a core
# from one of them for a time slice stalls them all; at a lower priority it runs in the step's serial gaps.
# But not so low that it starves: once the step got faster, 10 left the steps waiting 9-10% of the epoch for
# their batch (bench_epoch --no-torch: 117-118 ms per training image) where 4 left them waiting 0% (102-114 ms;
# 0, no nicing at all: 99-102 ms, level within the noise).
LOADER_NICENESS = 4


def lower_thread_priority(niceness=LOADER_NICENESS):
    """Make the calling thread `niceness` nicer than it is (Linux, where each thread has its own nice value;
    elsewhere, or where it is refused, nothing changes: only speed depends on it)."""
    if not sys.platform.startswith("linux") or niceness <= 0:
        return
    try:
        thread = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, thread, min(19, os.getpriority(os.PRIO_PROCESS, thread) + niceness))
    except OSError:
        pass


def check_pixels(path, height, width, max_pixels):
    """AttentionSamplingError if height x width exceeds max_pixels (0 or None: no limit)."""
    if max_pixels and height * width > max_pixels:
        raise AttentionSamplingError(
            f"{path}: image of {height}x{width} = {height * width:,} pixels is above --max-pixels {max_pixels:,} "
            "(a decompression bomb, or raise the limit)")


def image_size(path):
    """(H, W) from the file's header, pixels not decoded; None if Pillow does not know the format."""
    with _PROBE_LOCK:
        limit = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None  # the caller compares the size with its own limit
        try:
            with Image.open(path) as image:
                return image.height, image.width
        except Exception:  # not a format Pillow knows (or a broken one): imageio will have its say
            return None
        finally:
            Image.MAX_IMAGE_PIXELS = limit


def to_rgb8(pixels, path="image"):
    """(H, W[, C]) any integer or float dtype -> (H, W, 3) uint8: grey is repeated, alpha dropped,
    16-bit scaled down by 257 (65535 -> 255), wider integers within 0..65535 taken as 16-bit,
    floats taken as [0, 1] (NaN or infinite values are refused: no number to train on)."""
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
        if not np.isfinite(pixels).all():
            raise AttentionSamplingError(f"{path}: image holds NaN or infinite pixel values")
        return np.clip(np.rint(pixels * 255), 0, 255).astype(np.uint8)
    if np.issubdtype(pixels.dtype, np.integer) or pixels.dtype == bool:
        top = 1 if pixels.dtype == bool else np.iinfo(pixels.dtype).max
        # Signed types: negative values are below black, clipped rather than wrapped round to white.
        return np.clip((pixels.astype(np.float64) * (255 / top)).round(), 0, 255).astype(np.uint8)
    raise AttentionSamplingError(f"{path}: unsupported pixel type {pixels.dtype}")


def read_image(path, max_pixels=DEFAULT_MAX_PIXELS):
    """Decode one image file -> (H, W, 3) uint8, or AttentionSamplingError naming the file.

    Never any other exception for a bad file. The header's width x height is compared with max_pixels
    before a pixel is decoded (PNG, JPEG, BMP, TIFF: every format Pillow reads the header of; any other
    is checked once decoded), and Pillow's own decompression-bomb limit is set to max_pixels as well.
    """
    try:
        if os.path.getsize(path) == 0:
            raise AttentionSamplingError(f"{path}: empty file (0 bytes)")
    except OSError as error:
        raise AttentionSamplingError(f"{path}: cannot read image ({_one_line(error)})") from None
    size = image_size(path)
    if size is not None:
        check_pixels(path, *size, max_pixels)
    with _PROBE_LOCK:
        Image.MAX_IMAGE_PIXELS = max_pixels or None
    try:
        pixels = np.asarray(iio.imread(path))
    except Exception as error:  # imageio raises many types for a bad file; the user needs only which one
        if size is None and "backend" in str(error):  # imageio's "no plugin for this": its pip hints mislead
            raise AttentionSamplingError(f"{path}: not an image file (or of a format none of imageio's "
                                         "installed plugins reads)") from None
        raise AttentionSamplingError(f"{path}: cannot read image ({_one_line(error)})") from None
    if pixels.size == 0:  # a header declaring a zero side, or no page at all
        raise AttentionSamplingError(f"{path}: image of shape {pixels.shape} has no pixels")
    if pixels.ndim == 4:  # a multi-page TIFF or an animation: the first frame
        pixels = pixels[0]
    if pixels.ndim >= 2:
        check_pixels(path, pixels.shape[0], pixels.shape[1], max_pixels)
    return to_rgb8(pixels, path)


@dataclass
class Validation:
    """What ImageFolder.validate found: the size every image is brought to, and the files set aside."""

    shape: tuple                                 # (H, W): the most common size among the good images
    bad: list = field(default_factory=list)      # (path, message naming the path): left out, or fatal
    resized: list = field(default_factory=list)  # (path, (h, w)): good, but resized to `shape` in batches

    def bad_lines(self, limit=None):
        """The bad files' messages joined on one line, at most `limit` of them, then 'and N more'."""
        shown = [message for _, message in self.bad[:limit]]
        more = len(self.bad) - len(shown)
        return "; ".join(shown) + (f"; and {more} more" if more else "")

    def resized_line(self, limit=LISTED):
        shown = [f"{path} ({h}x{w})" for path, (h, w) in self.resized[:limit]]
        more = len(self.resized) - len(shown)
        return ", ".join(shown) + (f" and {more} more" if more else "")


@dataclass
class ImageFolder:
    """The files of ROOT/<class>/<image> with their integer labels; images are read on demand."""

    root: str
    classes: list = field(default_factory=list)
    paths: list = field(default_factory=list)
    labels: np.ndarray = None
    ignored: list = field(default_factory=list)  # files in class folders without an image extension
    max_pixels: int = DEFAULT_MAX_PIXELS
    shape: tuple = None  # (H, W) every batch is brought to, once validated
    lazy: bool = False   # holds whole-slide images: batches are SlideBatch objects, nothing decoded whole
    cache_bytes: int = 0  # decoded images kept in memory, up to this many bytes in all (read)
    # Not arguments: a copy made with dataclasses.replace (other paths) starts with an empty cache of its own.
    _cache: dict = field(default_factory=dict, init=False, repr=False, compare=False)
    _cache_used: int = field(default=0, init=False, repr=False, compare=False)
    _cache_lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False, compare=False)

    @classmethod
    def scan(cls, root, max_pixels=DEFAULT_MAX_PIXELS):
        """List ROOT/<class>/<image>; hidden files and folders (.DS_Store, ._x.png) are not data."""
        if not os.path.exists(root):
            raise AttentionSamplingError(f"--data {root}: no such folder")
        if not os.path.isdir(root):
            raise AttentionSamplingError(f"--data {root}: not a folder (ROOT/<class>/<images> expected)")
        try:
            classes = sorted(d for d in os.listdir(root)
                             if os.path.isdir(os.path.join(root, d)) and not d.startswith("."))
        except OSError as error:
            raise AttentionSamplingError(f"--data {root}: cannot list the folder ({error.strerror})") from None
        if len(classes) < 2:
            raise AttentionSamplingError(f"--data {root}: needs at least two class folders, found {len(classes)}"
                                         + (f" ({classes[0]})" if classes else ""))
        paths, labels, ignored = [], [], []
        for label, name in enumerate(classes):
            folder = os.path.join(root, name)
            try:
                entries = sorted(f for f in os.listdir(folder) if not f.startswith("."))
            except OSError as error:
                raise AttentionSamplingError(f"{folder}: cannot list the class folder ({error.strerror})") from None
            files = [f for f in entries if f.lower().endswith(IMAGE_EXTENSIONS)]
            ignored += [os.path.join(folder, f) for f in entries
                        if f not in files and not os.path.isdir(os.path.join(folder, f))]
            if not files:
                raise AttentionSamplingError(f"{folder}: class folder holds no images ({', '.join(IMAGE_EXTENSIONS)})")
            paths += [os.path.join(folder, f) for f in files]
            labels += [label] * len(files)
        lazy = any(is_slide(path) for path in paths)
        return cls(root, classes, paths, np.array(labels, dtype=np.int64), ignored, max_pixels, lazy=lazy)

    def __len__(self):
        return len(self.paths)

    def read(self, index):
        """Image `index` decoded, (H, W, 3) uint8. With cache_bytes > 0 the decoded images are kept, read-only,
        in the order first read until the budget is spent: training reads every image every epoch, so the
        first ones kept serve as well as any (a least-recently-used cache smaller than the data set would
        have evicted each image before its next use). Decoding took 15% of a training profile on the reduced
        lymphoma slides (README, Performance)."""
        image = self._cache.get(index)
        if image is not None:
            return image
        image = read_image(self.paths[index], self.max_pixels)
        if self.cache_bytes:
            with self._cache_lock:  # the loader thread and the evaluation may read at once
                if index not in self._cache and self._cache_used + image.nbytes <= self.cache_bytes:
                    if image.base is not None:  # a view (the first page of a stack): keep only what is counted
                        image = image.copy()
                    image.flags.writeable = False
                    self._cache[index] = image
                    self._cache_used += image.nbytes
        return image

    def keep_decoded(self, limit_bytes):
        """Keep every decoded image in memory (read) if all of them fit in limit_bytes, else none -> whether
        they are kept. All or nothing: the memory a run needs stays what it was unless the whole data set
        is small (the reduced lymphoma slides: 139 MB; at the paper's 1388 x 1040 they would take 1.6 GB)."""
        if self.lazy or not len(self):
            return False
        height, width = self.image_shape()
        needed = len(self) * height * width * 3
        self.cache_bytes = needed if needed <= limit_bytes else 0
        return bool(self.cache_bytes)

    def image_shape(self):
        """(H, W) every batch is brought to: the validated common size, else the first image's."""
        if self.shape is not None:
            return tuple(self.shape)
        return slide_shape(self.paths[0]) if self.lazy else self.read(0).shape[:2]

    def digest(self):
        """SHA-256 of the class/file names in order: a resumed run must see the very same images."""
        names = "\n".join(os.path.relpath(path, self.root) for path in self.paths)
        return hashlib.sha256(names.encode("utf-8", "surrogateescape")).hexdigest()

    def validate(self, size=1, scale=1, on_bad="stop", progress=False, workers=None):
        """Decode every image once -> (the data set to train on, Validation).

        A file is bad if it cannot be decoded (truncated, corrupt, not an image, empty), has more than
        max_pixels pixels, NaN pixels, or is smaller than the patch `size` or the `scale` factor.
        on_bad 'stop': AttentionSamplingError naming the bad files (the first LISTED of them); 'skip': they
        are left out (a class left with none is an error). Good images of another size than the most common
        one are kept and listed: load_batch resizes them.
        """
        if on_bad not in ("stop", "skip"):
            raise AttentionSamplingError(f"--bad-images must be stop or skip, got {on_bad!r}")

        def check(path):
            if self.lazy:  # a slide: its header, its tiles' offsets and the view's level, never level 0 whole
                try:
                    return check_source(path, size, scale, self.max_pixels), None
                except AttentionSamplingError as error:
                    return None, str(error)
            try:
                height, width = read_image(path, self.max_pixels).shape[:2]
            except AttentionSamplingError as error:
                return None, str(error)
            side = min(height, width)
            if side < size or side < scale:
                limits = [f"--size {size}"] * (side < size) + [f"--scale {scale}"] * (side < scale)
                return None, f"{path}: image of {height}x{width} is smaller than {' and '.join(limits)}"
            return (height, width), None

        shapes, bad = [], []
        # Decoding releases the GIL (zlib, libjpeg): a few threads check a folder of big images faster.
        pool = ThreadPoolExecutor(workers or min(4, os.cpu_count() or 1))
        try:
            with tqdm(total=len(self.paths), desc="checking images", unit="img", leave=False,
                      disable=not progress) as bar:
                for path, (shape, message) in zip(self.paths, pool.map(check, self.paths)):
                    shapes.append(shape)
                    if message is not None:
                        bad.append((path, message))
                    bar.update(1)
        finally:
            # Not `with pool`: on Ctrl-C that would wait for every image still queued.
            pool.shutdown(wait=False, cancel_futures=True)
        if self.lazy:
            # Slides are read where they are, never resized: one of another size is unusable in a batch.
            counts = Counter(shape for shape in shapes if shape is not None)
            if counts:
                common = max(counts, key=lambda s: (counts[s], -shapes.index(s)))
                for i, shape in enumerate(shapes):
                    if shape is not None and shape != common:
                        bad.append((self.paths[i], f"{self.paths[i]}: image of {shape[0]}x{shape[1]}, not the "
                                    f"common {common[0]}x{common[1]} (a folder of slides is not resized)"))
                        shapes[i] = None
        if bad and on_bad == "stop":
            s = "s" if len(bad) > 1 else ""
            raise AttentionSamplingError(
                f"{len(bad)} bad image{s} (--bad-images stop): {Validation(None, bad).bad_lines(LISTED)}; "
                f"fix or remove {'them' if s else 'it'}, or train without {'them' if s else 'it'}: --bad-images skip")
        keep = [i for i, shape in enumerate(shapes) if shape is not None]
        labels = self.labels[keep]
        for label, name in enumerate(self.classes):
            if not np.any(labels == label):
                raise AttentionSamplingError(f"{os.path.join(self.root, name)}: no good image left in this class "
                                             f"folder once the bad ones are skipped")
        # The most common size (the first one seen among equals): one odd image does not resize the rest.
        counts = Counter(shapes[i] for i in keep)
        common = max(counts, key=lambda s: (counts[s], -shapes.index(s)))
        resized = [(self.paths[i], shapes[i]) for i in keep if shapes[i] != common]
        dataset = replace(self, paths=[self.paths[i] for i in keep], labels=labels, shape=common)
        return dataset, Validation(common, bad, resized)


class Split(NamedTuple):
    """Indices into a data set: trained on, chosen on (validation), reported (test)."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray


def run_split(labels, config):
    """(N,) labels and a run's config -> the Split the run was trained with. Runs made before validation existed
    have no val_fraction: the same split as then (no validation)."""
    return stratified_split(labels, config["test_fraction"], config["seed"], setting(config, "val_fraction"))


def stratified_split(labels, test_fraction, seed, val_fraction=0.0):
    """(N,) labels -> Split(train, val, test): the same fractions of every class go to test and validation.

    Each class is shuffled by a generator seeded by `seed`; its first round(n * test_fraction) images are
    test, the next round(n * val_fraction) validation, the rest training. Test is drawn first, so a run
    without validation (val_fraction 0, as runs made before validation existed) has the same test images
    (but in a class too small to give each part an image). Every class keeps at least one training image,
    one test image when it has two or more, and one validation image too when it has three or more.
    """
    if not 0 < test_fraction < 1:
        raise AttentionSamplingError(f"--test-fraction must be between 0 and 1, got {test_fraction}")
    if not 0 <= val_fraction < 1 or test_fraction + val_fraction >= 1:
        raise AttentionSamplingError(f"--val-fraction must be >= 0 and leave images to train on "
                                     f"(with --test-fraction {test_fraction}), got {val_fraction}")
    rng = np.random.default_rng(seed)
    parts = {"train": [], "val": [], "test": []}
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        n = len(members)
        # With validation asked for, a class of 3 or more keeps an image for each of the three parts.
        keep = 2 if val_fraction > 0 and n >= 3 else 1
        n_test = min(max(int(round(n * test_fraction)), 1), n - keep) if n > 1 else 0
        n_val = min(max(int(round(n * val_fraction)), 1), n - n_test - 1) if val_fraction > 0 else 0
        parts["test"] += list(members[:n_test])
        parts["val"] += list(members[n_test:n_test + n_val])
        parts["train"] += list(members[n_test + n_val:])
    return Split(**{name: np.sort(np.array(indices, dtype=np.int64)) for name, indices in parts.items()})


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
def _source_pixels(index, size, crop_start, crop_size, flip):
    """Output row (or column) `index` of `size` -> (source index, next source index, weight of the next):
    the bilinear sample of the crop's pixel centres, as resize_bilinear takes it, mapped back through the
    flip (the flipped image's pixel p is the source's size - 1 - p)."""
    position = min(max((index + 0.5) * (crop_size / size) - 0.5, 0.0), crop_size - 1.0)
    first = int(np.floor(position))
    second = min(first + 1, crop_size - 1)
    first, second = crop_start + first, crop_start + second
    if flip:
        first, second = size - 1 - first, size - 1 - second
    return first, second, np.float32(position - np.floor(position))


@njit(cache=True, nogil=True)
def _between_rows(image, s0, s1, fr, t, k):
    """Channel k of column t, interpolated between source rows s0 and s1 (weight fr of s1)."""
    return np.float32(image[s0, t, k]) * (1 - fr) + np.float32(image[s1, t, k]) * fr


@njit(cache=True, nogil=True)
def _finish_pixel(left, right, fc, factor, mean):
    """Two _between_rows values -> the augmented value in [0, 1]: interpolated between them (weight fc of the
    right), its contrast (v - mean) * factor + mean, clipped to [0, 255] and scaled."""
    value = left * (1 - fc) + right * fc
    value = (value - mean) * factor + mean
    return min(max(value, np.float32(0)), np.float32(255)) * np.float32(1 / 255)


@njit(cache=True, nogil=True)
def _augmented_pixel(image, s0, s1, fr, t0, t1, fc, k, factor, mean):
    """One augmented value in [0, 1]: the bilinear sample between source rows s0, s1 (weight fr of s1) and
    columns t0, t1 (weight fc of t1) of channel k, its contrast, clipped and scaled. The one place this
    arithmetic lives, with its two halves (augmented.py cuts views and patches with it; its view kernel
    takes the halves apart to interpolate each source row once)."""
    return _finish_pixel(_between_rows(image, s0, s1, fr, t0, k), _between_rows(image, s0, s1, fr, t1, k), fc,
                         factor, mean)


@njit(cache=True, nogil=True)  # runs in the loader thread beside the training step
def _augment_into(image, flip_rows, flip_columns, factor, mean, top, left, crop_h, crop_w, out):
    """out (H, W, C) float32 in [0, 1] = clip(contrast(zoom(flip(image))), 0, 255) / 255 in one pass.

    Flips are index changes; the zoom samples the crop's pixel centres bilinearly as resize_bilinear does;
    the contrast (v - mean) * factor + mean commutes with that interpolation (its weights sum to one), so it
    is applied to each interpolated value, with the whole flipped image's mean, as the reference does."""
    h, w, c = image.shape
    for i in range(h):
        s0, s1, fr = _source_pixels(i, h, top, crop_h, flip_rows)
        for j in range(w):
            t0, t1, fc = _source_pixels(j, w, left, crop_w, flip_columns)
            for k in range(c):
                out[i, j, k] = _augmented_pixel(image, s0, s1, fr, t0, t1, fc, k, factor, mean[k])
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


def _read_at(dataset, index, height, width):
    """One decoded image in [0, 255], resized bilinearly to height x width when it is not that size."""
    image = dataset.read(index)
    if image.shape[:2] != (height, width):
        image = resize_bilinear(image.astype(np.float32), height, width)
    return image


def load_batch(dataset, indices, shape, augment=None, rng=None, scale=None):
    """Indices into the data set -> (N, H, W, 3) float32 in [0, 1], every image brought to `shape`.

    Pixels are augmented in [0, 255], clipped to that range, then scaled to [0, 1] as in the paper.
    A lazy data set (whole-slide images) gives a slides.SlideBatch instead, whose view (read now when
    `scale` is given) and patches are read from the files; its slides must be of `shape`.
    With a `scale` (the training loader, the evaluation) plain images give an augmented.AugmentedImages:
    the decoded images and their draws (none without an augmentation), its attention view computed now, its
    patches when the step asks, the same numbers as the full-size (augmented) batch without ever making it.
    """
    if getattr(dataset, "lazy", False):
        batch = load_slides([dataset.paths[i] for i in indices], augment, rng, dataset.max_pixels)
        for slide in batch.slides:
            if (slide.height, slide.width) != tuple(shape):
                batch.close()
                raise AttentionSamplingError(f"{slide.path}: slide of {slide.height}x{slide.width}, not the run's "
                                             f"{shape[0]}x{shape[1]} (slides are not resized)")
        if scale is not None:
            batch.view(scale)
        return batch
    height, width = shape
    if scale is not None:
        from .augmented import AugmentedImages  # it builds on this module's pixel arithmetic

        images = [_read_at(dataset, index, height, width) for index in indices]
        if augment is None:
            return AugmentedImages.plain(images, view_scale=scale)
        # The draws in augment_into's order: the same numbers for the same seed on either path.
        draws = [augment.draw(rng, height, width) for _ in images]
        return AugmentedImages(images, draws, contrast=augment.contrast > 0, view_scale=scale)
    batch = np.empty((len(indices), height, width, 3), dtype=np.float32)
    for slot, index in enumerate(indices):
        image = _read_at(dataset, index, height, width)
        if augment is not None:
            augment_into(image, augment, rng, batch[slot])
        else:
            np.clip(image, 0, 255, out=batch[slot], casting="unsafe")
            batch[slot] *= np.float32(1 / 255)
    return batch
