"""Image-folder data sets: scanning, checking, splitting and loading batches.

ROOT/<class name>/<image files>: classes are the sub-folders sorted by name. Images are decoded lazily,
one batch at a time, so memory does not grow with the data set; every image becomes 8-bit RGB (decode.py),
augmented by augmentation.py's arithmetic (augmented.py when a batch is read as a view and patches).

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

import numpy as np
from tqdm import tqdm

from .errors import AttentionSamplingError
from .settings import Training
# The data layer's entry points, also reachable from here: decoding one file (decode.py) and augmenting one
# image (augmentation.py).
from .augmentation import Augmentation, augment_into, resize_bilinear  # noqa: F401
from .augmented import AugmentedImages
from .decode import DEFAULT_MAX_PIXELS, check_pixels, image_size, read_image, to_rgb8  # noqa: F401
from .slides import SLIDE_EXTENSIONS, average_pool, check_source, is_slide, load_slides, slide_shape

IMAGE_EXTENSIONS = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp") + SLIDE_EXTENSIONS
# Decoded images are kept in memory when all of them fit in this (ImageFolder.keep_decoded; train.py --cache-mb).
DEFAULT_CACHE_BYTES = 256 * 2**20
# How many bad files a stop message names before it says "and N more".
LISTED = 10


# How much nicer than the step the trainer's loader thread runs: enough that it runs in the step's serial
# gaps instead of stalling a parallel region, not so much that the step waits for its batch
# (python -m benchmarks.bench_epoch --no-torch; docs/performance.md).
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

    def validate(self, size=1, scale=1, on_bad="stop", progress=False, workers=None, tissue_minimum=0):
        """Decode every image once -> (the data set to train on, Validation).

        A file is bad if it cannot be decoded (truncated, corrupt, not an image, empty), has more than
        max_pixels pixels, NaN pixels, or is smaller than the patch `size` or the `scale` factor; with
        tissue_minimum > 0 (--tissue auto), also if its attention view holds fewer cells of tissue.
        on_bad 'stop': AttentionSamplingError naming the bad files (the first LISTED of them); 'skip': they
        are left out (a class left with none is an error). Good images of another size than the most common
        one are kept and listed: load_batch resizes them.
        """
        if on_bad not in ("stop", "skip"):
            raise AttentionSamplingError(f"--bad-images must be stop or skip, got {on_bad!r}")

        def check(path):
            if self.lazy:  # a slide: its header, its tiles' offsets and the view's level, never level 0 whole
                try:
                    return check_source(path, size, scale, self.max_pixels, tissue_minimum), None
                except AttentionSamplingError as error:
                    return None, str(error)
            try:
                image = read_image(path, self.max_pixels)
            except AttentionSamplingError as error:
                return None, str(error)
            height, width = image.shape[:2]
            side = min(height, width)
            if side < size or side < scale:
                limits = [f"--size {size}"] * (side < size) + [f"--scale {scale}"] * (side < scale)
                return None, f"{path}: image of {height}x{width} is smaller than {' and '.join(limits)}"
            if tissue_minimum:
                from .tissue import check_tissue, tissue_cells

                try:
                    view = average_pool(np.clip(image, 0, 255).astype(np.float32) * np.float32(1 / 255), scale)
                    check_tissue(path, tissue_cells(view), scale, tissue_minimum)
                except AttentionSamplingError as error:
                    return None, str(error)
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
    run = Training.from_dict(config)
    return stratified_split(labels, run.test_fraction, run.seed, run.val_fraction)


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
