"""One image file decoded to 8-bit RGB, or a one-line error naming it: the header's size checked against a
pixel limit before anything is decoded (decompression bombs), every dtype and channel layout converted."""
import os
import threading

import imageio.v3 as iio
import numpy as np
from PIL import Image

from .errors import AttentionSamplingError
from .errors import one_line as _one_line

# Width x height above which an image is refused unread: a 100-megapixel RGB image already takes 1.2 GB
# as float32 in a batch. A few bytes of PNG or TIFF can declare billions of pixels (a decompression bomb).
DEFAULT_MAX_PIXELS = 100_000_000

# Image.MAX_IMAGE_PIXELS is one global of Pillow's; the header probe lifts it for a moment (our own
# limit is checked right after), so probes in several threads take turns.
_PROBE_LOCK = threading.Lock()


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
