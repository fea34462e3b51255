"""Whole-slide images: tiled, pyramidal TIFF files read only where attention sampling looks.

A slide of 10^9 to 10^10 pixels is never decoded whole. The method needs two reads of it, and a
`SlideBatch` (the core's LazyImages, attention_sampling/images.py) makes exactly those:
- the attention view, the slide average-pooled by c: read from the coarsest pyramid level whose
  downsample d divides c, and average-pooled by c / d one chunk of tiles at a time (level 0, d = 1,
  when no coarser level fits). A level of d = c is the view itself, as the file's writer pooled it;
- S x S patches of level 0 around the sampled cells, with the border modes of patches.py: each a region
  read through zarr (tifffile's aszarr), which decodes only the tiles the region touches.
Memory is the view, one chunk of a level (VIEW_CHUNK) and the patches, whatever the slide's size.

Any file tifffile reads as a series with levels works: pyramidal TIFF (SubIFDs or reduced pages),
OME-TIFF, Aperio SVS, Hamamatsu NDPI, Leica SCN, Ventana BIF (JPEG-compressed tiles through imagecodecs, a
dependency). A tiled TIFF without levels is a slide of one level.
What tifffile cannot open (3DHistech MRXS, Hamamatsu VMS, ...) is read through OpenSlide when it is
installed (pip install 'attention-sampling-numpy[openslide]', which brings its library as a wheel).

Augmentations are coordinate maps here. The patches are exactly what the array path (augmentation.augment_into)
would cut from the augmented full image: each output pixel is the same bilinear sample of the same two
source rows and columns. The view is the un-augmented view resampled bilinearly at the augmented cells'
centres: exact for flips when H and W are multiples of c, an approximation of "pool the zoomed image"
for zoom. Contrast uses the view's channel means (the array path uses the full image's).
"""
import logging
import os
import time

import numpy as np

from ..patches import patch_offset, reflect_indices
from .augmentation import source_table
from .errors import AttentionSamplingError
from .errors import one_line as _one_line
from .decode import read_image, to_rgb8
from .pooling import average_pool

SLIDE_EXTENSIONS = (".svs", ".ndpi", ".scn", ".bif", ".mrxs", ".vms", ".vmu", ".svslide")
TIFF_EXTENSIONS = (".tif", ".tiff")
OPENSLIDE_ONLY = (".mrxs", ".vms", ".vmu", ".svslide")
# tifffile logs what it cannot parse (a truncated tag list, ...) and goes on; the slide's own checks then
# name the file in one line, and the log lines would only break the one-line promise of the programs.
logging.getLogger("tifffile").setLevel(logging.CRITICAL)
# Level pixels per chunk side when pooling a level into the view: 512 x 4096 RGB as float32 is 25 MB.
VIEW_CHUNK = (512, 4096)


def is_slide(path):
    """True for a whole-slide file: a vendor extension, or a TIFF that is tiled or has pyramid levels.
    Strip TIFFs (the usual microscope or scanner output) are plain images, decoded whole. Reads the
    header only; a file tifffile cannot open is no slide (read_image then names the problem)."""
    extension = os.path.splitext(path)[1].lower()
    if extension in SLIDE_EXTENSIONS:
        return True
    if extension not in TIFF_EXTENSIONS:
        return False
    import tifffile

    try:
        with tifffile.TiffFile(path) as tiff:
            series = tiff.series[0]
            return bool(series.levels[0].keyframe.is_tiled or len(series.levels) > 1)
    except Exception:
        return False


class ReadCounter:
    """Tiles decoded, pixels read and seconds spent reading them, summed over regions read."""

    def __init__(self):
        self.tiles, self.seconds, self.pixels = 0, 0.0, 0

    def add(self, tiles, seconds, pixels):
        self.tiles += tiles
        self.seconds += seconds
        self.pixels += pixels


# Every slide read of this process, for benchmarks (bench_slide.py): what the reads cost, wherever they happen.
TOTAL = ReadCounter()


class Slide:
    """One slide file, opened with tifffile: its levels, and regions of them read through zarr.

    `levels` lists (downsample d, level index, height, width) for the levels whose downsample is an
    integer (within a pixel of H / d and W / d: writers round odd sizes either way)."""

    def __init__(self, path, counter=None):
        import tifffile

        self.path = path
        self.counter = counter or ReadCounter()
        self._arrays = {}
        try:
            self._tiff = tifffile.TiffFile(path)
        except Exception as error:
            raise AttentionSamplingError(f"{path}: cannot read slide ({_one_line(error)})") from None
        try:
            series = self._tiff.series[0]
            self._series = series.levels
            self.axes = series.axes
        except Exception as error:
            self.close()
            raise AttentionSamplingError(f"{path}: cannot read slide ({_one_line(error)})") from None
        if self.axes not in ("YX", "YXS"):
            self.close()
            raise AttentionSamplingError(f"{path}: slide of axes {self.axes} (shape {series.shape}) is not a 2-D "
                                         "grey or colour image (unknown or unsupported layout)")
        self.height, self.width = (int(v) for v in self._series[0].shape[:2])
        self.levels = []
        for index, level in enumerate(self._series):
            if level.axes != self.axes:
                continue
            h, w = (int(v) for v in level.shape[:2])
            d = max(1, round(self.height / max(h, 1)))
            if abs(self.height / d - h) <= 1 and abs(self.width / d - w) <= 1:
                self.levels.append((d, index, h, w))

    def close(self):
        for store in self._arrays.values():
            store[1].close()
        self._arrays = {}
        self._tiff.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _array(self, index):
        if index not in self._arrays:
            import zarr

            store = self._tiff.aszarr(level=index)
            self._arrays[index] = (zarr.open(store, mode="r"), store)
        return self._arrays[index][0]

    def check_tiles(self, indices):
        """AttentionSamplingError if a tile of these levels lies past the end of the file (a truncated
        download or copy): found from the offsets in the header, before a pixel is decoded."""
        size = os.path.getsize(self.path)
        for index in indices:
            for page in self._series[index].pages:
                if page is None:
                    continue
                ends = np.asarray(page.dataoffsets, dtype=np.int64) + np.asarray(page.databytecounts, dtype=np.int64)
                if ends.size and ends.max() > size:
                    raise AttentionSamplingError(
                        f"{self.path}: truncated slide: level {index} has tiles past the end of the file "
                        f"({int(ends.max()):,} > {size:,} bytes)")

    def region(self, index, top, bottom, left, right):
        """Level `index`'s rows [top, bottom) and columns [left, right) -> (h, w, 3) uint8; only the tiles
        that the region touches are decoded."""

        array = self._array(index)
        started = time.perf_counter()
        try:
            pixels = np.asarray(array[top:bottom, left:right])
        except Exception as error:  # a corrupt tile: zlib, JPEG, ... each raise their own type
            raise AttentionSamplingError(f"{self.path}: cannot decode the tiles of level {index} "
                                         f"({_one_line(error)})") from None
        seconds = time.perf_counter() - started
        tile_h, tile_w = array.chunks[:2]
        tiles = ((bottom - 1) // tile_h - top // tile_h + 1) * ((right - 1) // tile_w - left // tile_w + 1)
        for counter in (self.counter, TOTAL):
            counter.add(tiles, seconds, pixels.shape[0] * pixels.shape[1])
        return to_rgb8(pixels, self.path)


class OpenSlideSlide:
    """A slide read through OpenSlide (openslide-python): the formats tifffile does not read. Same interface
    as Slide; OpenSlide decodes the tiles of each region itself (they are not counted).

    Where a scanner left an area unscanned OpenSlide returns transparent pixels; they are composited onto
    white (glass), so that the edge of a scan is not a black band a patch could recognise."""

    def __init__(self, path, counter=None):
        try:
            import openslide

            self._slide = openslide.OpenSlide(path)
        except Exception as error:
            raise AttentionSamplingError(f"{path}: cannot read slide ({_one_line(error)})") from None
        self.path = path
        self.counter = counter or ReadCounter()
        self.width, self.height = (int(v) for v in self._slide.dimensions)
        self.levels, self._downsamples = [], {}
        for index, ((w, h), downsample) in enumerate(zip(self._slide.level_dimensions, self._slide.level_downsamples)):
            d = max(1, round(downsample))
            if abs(self.height / d - h) <= 1 and abs(self.width / d - w) <= 1:
                self.levels.append((d, index, int(h), int(w)))
                self._downsamples[index] = downsample

    def region(self, index, top, bottom, left, right):
        downsample = self._downsamples[index]
        started = time.perf_counter()
        try:
            # OpenSlide places a region by its level-0 coordinates, reads it at the level's resolution.
            rgba = np.asarray(self._slide.read_region((round(left * downsample), round(top * downsample)), index,
                                                      (right - left, bottom - top)))
        except Exception as error:
            raise AttentionSamplingError(f"{self.path}: cannot decode the tiles of level {index} "
                                         f"({_one_line(error)})") from None
        alpha = rgba[..., 3:].astype(np.uint16)
        pixels = ((rgba[..., :3] * alpha + 255 * (255 - alpha) + 127) // 255).astype(np.uint8)
        seconds = time.perf_counter() - started
        for counter in (self.counter, TOTAL):
            counter.add(0, seconds, pixels.shape[0] * pixels.shape[1])
        return pixels

    def check_tiles(self, indices):
        pass  # OpenSlide reads the file's index lazily: a bad tile is found when a region needs it

    def close(self):
        self._slide.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class ArraySlide:
    """A plain image decoded whole, read through the same interface as a Slide (one level)."""

    def __init__(self, image, path="image"):
        self.image, self.path = image, path
        self.height, self.width = image.shape[:2]
        self.levels = [(1, 0, self.height, self.width)]
        self.counter = ReadCounter()

    def region(self, index, top, bottom, left, right):
        return self.image[top:bottom, left:right]

    def check_tiles(self, indices):
        pass

    def close(self):
        pass


def view_level(slide, scale, max_pixels=None):
    """-> (d, level index): the coarsest level whose downsample d divides c and whose pixels read for the
    view, (H // c · c / d) x (W // c · c / d), are within max_pixels. AttentionSamplingError if none is:
    a slide without the level the scale needs (a 10^9-pixel slide of one level cannot be pooled)."""
    h, w = slide.height // scale, slide.width // scale
    fitting = [(d, index) for d, index, level_h, level_w in slide.levels
               if scale % d == 0 and level_h >= h * (scale // d) and level_w >= w * (scale // d)]
    within = [(d, index) for d, index in fitting
              if not max_pixels or (h * scale // d) * (w * scale // d) <= max_pixels]
    if not within:
        have = ", ".join(str(d) for d, *_ in slide.levels) or "none"
        raise AttentionSamplingError(
            f"{slide.path}: slide of {slide.height}x{slide.width} has no pyramid level whose downsample divides "
            f"--scale {scale} and whose view decodes within --max-pixels {max_pixels:,} (levels' downsamples: {have})")
    return max(within)


def read_view(slide, scale, max_pixels=None):
    """-> (H // c, W // c, 3) float32 in [0, 1]: the slide average-pooled by c, from view_level's level,
    pooled by k = c / d one chunk at a time (so from level 0 it is the array path's view to the last bit)."""
    d, index = view_level(slide, scale, max_pixels)
    k = scale // d
    h, w = slide.height // scale, slide.width // scale
    view = np.empty((h, w, 3), dtype=np.float32)
    rows, columns = max(1, VIEW_CHUNK[0] // k), max(1, VIEW_CHUNK[1] // k)
    for r0 in range(0, h, rows):
        r1 = min(h, r0 + rows)
        for q0 in range(0, w, columns):
            q1 = min(w, q0 + columns)
            pixels = slide.region(index, r0 * k, r1 * k, q0 * k, q1 * k).astype(np.float32)
            pixels *= np.float32(1 / 255)
            view[r0:r1, q0:q1] = average_pool(pixels, k) if k > 1 else pixels
    return view


def patch_axis(start, patch_size, length, border):
    """A patch's rows (or columns) in the image -> (S,) indices into [0, length), or -1 where the patch sees
    zeros: patches.py's border modes along one axis."""
    if border == "inside":
        start = max(0, min(start, length - patch_size))
    indices = start + np.arange(patch_size)
    if border == "reflect":
        return reflect_indices(indices, length)
    return np.where((indices >= 0) & (indices < length), indices, -1)


def source_axis(indices, length, crop=None, flip=False):
    """Indices into the augmented image's axis -> (first, second, weight): the two source pixels and the
    bilinear weight of the second, augmentation.source_table's (zoom into crop = (start, size), then
    the flip); -1 stays -1. Without augmentation, first = second = index and weight 0."""
    if crop is None and not flip:
        return indices, indices, np.zeros(len(indices), dtype=np.float32)
    start, size = crop if crop is not None else (0, length)
    first, second, weight = source_table(np.asarray(indices, dtype=np.int64), length, start, size, flip)
    invalid = indices < 0
    return np.where(invalid, -1, first), np.where(invalid, -1, second), weight


def read_patch(slide, rows, columns, contrast=None):
    """(first, second, weight) maps of the patch's rows and columns -> (S, S, 3) float32 in [0, 1]: one level-0
    region around them, sampled bilinearly (the same float32 operations as augmentation._augment_into), zeros where
    a map is -1. contrast = (factor, (3,) channel means in [0, 255]) or None."""
    (r0, r1, fr), (c0, c1, fc) = rows, columns
    valid_rows, valid_columns = r0 >= 0, c0 >= 0
    out = np.zeros((len(r0), len(c0), 3), dtype=np.float32)
    if not valid_rows.any() or not valid_columns.any():
        return out
    used_rows = np.concatenate([r0[valid_rows], r1[valid_rows]])
    used_columns = np.concatenate([c0[valid_columns], c1[valid_columns]])
    top, left = used_rows.min(), used_columns.min()
    region = slide.region(0, top, used_rows.max() + 1, left, used_columns.max() + 1).astype(np.float32)
    r0, r1 = r0[valid_rows] - top, r1[valid_rows] - top
    c0, c1 = c0[valid_columns] - left, c1[valid_columns] - left
    fr = fr[valid_rows][:, None, None]
    fc = fc[valid_columns][None, :, None]
    first, second = region[r0], region[r1]
    upper = first[:, c0] * (1 - fr) + second[:, c0] * fr
    lower = first[:, c1] * (1 - fr) + second[:, c1] * fr
    value = upper * (1 - fc) + lower * fc
    if contrast is not None:
        factor, mean = contrast
        value = (value - mean) * np.float32(factor) + mean
    np.clip(value, 0, 255, out=value)
    value *= np.float32(1 / 255)
    out[np.ix_(valid_rows, valid_columns)] = value
    return out


def augment_view(view, scale, shape, draw, mean):
    """(h, w, 3) un-augmented view -> the view of the augmented slide, approximately: each cell is the
    bilinear sample of the view at the source position of the augmented cell's centre (the same map as
    the patches), with the contrast applied. Exact for flips when H and W are multiples of c."""
    flip_rows, flip_columns, factor, (top, left, crop_h, crop_w) = draw
    height, width = shape
    h, w = view.shape[:2]

    def axis(cells, length, start, size, flip, limit):
        centre = cells * scale + (scale - 1) / 2
        position = np.clip((centre + 0.5) * (size / length) - 0.5, 0.0, size - 1.0) + start
        if flip:
            position = length - 1 - position
        position = np.clip((position + 0.5) / scale - 0.5, 0, limit - 1)
        first = np.floor(position).astype(np.int64)
        return first, np.minimum(first + 1, limit - 1), (position - first).astype(np.float32)

    r0, r1, fr = axis(np.arange(h), height, top, crop_h, flip_rows, h)
    c0, c1, fc = axis(np.arange(w), width, left, crop_w, flip_columns, w)
    fr, fc = fr[:, None, None], fc[None, :, None]
    upper = view[r0][:, c0] * (1 - fr) + view[r1][:, c0] * fr
    lower = view[r0][:, c1] * (1 - fr) + view[r1][:, c1] * fr
    pixels = (upper * (1 - fc) + lower * fc) * np.float32(255)
    pixels = (pixels - mean) * np.float32(factor) + mean
    np.clip(pixels, 0, 255, out=pixels)
    return pixels * np.float32(1 / 255)


class SlideBatch:
    """LazyImages (attention_sampling/images.py) over N slides of one size: the view and the patches read
    on demand, each slide with its own augmentation draw (or none)."""

    def __init__(self, slides, draws=None, max_pixels=None):
        first = slides[0]
        for slide in slides[1:]:
            if (slide.height, slide.width) != (first.height, first.width):
                raise AttentionSamplingError(
                    f"{slide.path}: slide of {slide.height}x{slide.width}, not the batch's {first.height}x{first.width} "
                    "(slides are read where they are, not resized: a batch needs one size)")
        self.slides = slides
        self.draws = draws or [None] * len(slides)
        self.max_pixels = max_pixels
        self.shape = (len(slides), slides[0].height, slides[0].width, 3)
        self._views = {}
        self._means = None

    def unaugmented_view(self, scale):
        if scale not in self._views:
            views = np.stack([read_view(slide, scale, self.max_pixels) for slide in self.slides])
            # The contrast's centre: the channel means of the slide, from its view (in [0, 255]).
            self._means = views.mean(axis=(1, 2), dtype=np.float64).astype(np.float32) * np.float32(255)
            self._views[scale] = views
        return self._views[scale]

    def view(self, scale):
        views = self.unaugmented_view(scale)
        if all(draw is None for draw in self.draws):
            return views
        key = ("augmented", scale)
        if key not in self._views:
            self._views[key] = np.stack([
                view if draw is None else augment_view(view, scale, self.shape[1:3], draw, mean)
                for view, draw, mean in zip(views, self.draws, self._means)])
        return self._views[key]

    def patches(self, cells, patch_size, scale, border):
        n, k = cells.shape[:2]
        height, width = self.shape[1:3]
        out = np.empty((n, k, patch_size, patch_size, 3), dtype=np.float32)
        offset = patch_offset(patch_size, scale)
        if any(draw is not None for draw in self.draws):
            self.unaugmented_view(scale)  # the contrast's channel means
        done = {}
        for image, (slide, draw) in enumerate(zip(self.slides, self.draws)):
            if draw is None:
                maps, contrast = ({}, {}), None
            else:
                flip_rows, flip_columns, factor, (top, left, crop_h, crop_w) = draw
                maps = ({"crop": (top, crop_h), "flip": flip_rows}, {"crop": (left, crop_w), "flip": flip_columns})
                contrast = (factor, self._means[image])
            for draw_index in range(k):
                cell = (image, int(cells[image, draw_index, 0]), int(cells[image, draw_index, 1]))
                if cell in done:  # sampling with replacement draws a cell many times: read it once
                    out[image, draw_index] = out[done[cell]]
                    continue
                rows = source_axis(patch_axis(cell[1] * scale + offset, patch_size, height, border), height, **maps[0])
                columns = source_axis(patch_axis(cell[2] * scale + offset, patch_size, width, border), width,
                                      **maps[1])
                out[image, draw_index] = read_patch(slide, rows, columns, contrast)
                done[cell] = (image, draw_index)
        return out

    def close(self):
        for slide in self.slides:
            slide.close()


def open_source(path, max_pixels=None):
    """A Slide for a slide file (an OpenSlideSlide for one tifffile cannot read, when OpenSlide is
    installed), else the plain image decoded whole as an ArraySlide."""
    if is_slide(path):
        try:
            return Slide(path)
        except AttentionSamplingError as error:
            try:
                import openslide  # noqa: F401  (optional: pip install 'attention-sampling-numpy[openslide]')
            except ImportError:
                if os.path.splitext(path)[1].lower() in OPENSLIDE_ONLY:
                    raise AttentionSamplingError(f"{error}; this format needs OpenSlide: pip install "
                                                 "'attention-sampling-numpy[openslide]'") from None
                raise error from None
            try:
                return OpenSlideSlide(path)
            except AttentionSamplingError:
                raise error from None

    return ArraySlide(read_image(path, max_pixels), path)


def check_source(path, size, scale, max_pixels=None, tissue_minimum=0):
    """Open a slide (or a plain image) and make sure training can read it -> (H, W); AttentionSamplingError
    naming the file otherwise: unreadable, truncated, smaller than the patch or the scale, without the
    pyramid level the scale needs, whose view does not decode, or (tissue_minimum > 0, --tissue auto) whose
    view holds fewer cells of tissue."""
    source = open_source(path, max_pixels)
    try:
        side = min(source.height, source.width)
        if side < size or side < scale:
            limits = [f"--size {size}"] * (side < size) + [f"--scale {scale}"] * (side < scale)
            raise AttentionSamplingError(f"{path}: image of {source.height}x{source.width} is smaller than "
                                         f"{' and '.join(limits)}")
        source.check_tiles([index for _, index, _, _ in source.levels])  # truncation first: it also loses levels
        d, index = view_level(source, scale, max_pixels)
        view = read_view(source, scale, max_pixels)  # every tile of the view's level decodes
        if tissue_minimum:
            from .tissue import check_tissue, tissue_cells

            check_tissue(path, tissue_cells(view), scale, tissue_minimum)
        return source.height, source.width
    finally:
        source.close()


def slide_shape(path):
    """(H, W) of a slide or plain image from its header (a plain image is decoded if its format has none)."""
    source = open_source(path)
    try:
        return source.height, source.width
    finally:
        source.close()


def load_slides(paths, augment=None, rng=None, max_pixels=None, scale=None):
    """Paths -> a SlideBatch, each slide with its augmentation drawn from rng in order (as load_batch
    draws them); with `scale` the view is read now (in the loader's thread), not at the first look."""
    slides = []
    try:
        for path in paths:
            slides.append(open_source(path, max_pixels))
        draws = [augment.draw(rng, slide.height, slide.width) for slide in slides] if augment is not None else None
        batch = SlideBatch(slides, draws, max_pixels)
        if scale is not None:
            batch.view(scale)
        return batch
    except BaseException:
        for slide in slides:
            slide.close()
        raise
