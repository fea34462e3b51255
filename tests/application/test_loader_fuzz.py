"""Fuzzing the image loader: whatever bytes a file holds, read_image returns (H, W, 3) uint8 or raises
AttentionSamplingError, never anything else (no decoder's own exception, no crash, no huge allocation).

Three sources of bytes: random ones, valid small files of every format and pixel type truncated or with
bytes overwritten (most fuzzing finds nothing in pure noise: decoders reject it at the magic number), and
valid headers whose width and height fields are set to random, possibly huge, values.
"""
import io
import os
import struct
import tempfile
import zlib

import imageio.v3 as iio
import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from PIL import Image

from attention_sampling.application.data import read_image
from attention_sampling.application.errors import AttentionSamplingError

EXTENSIONS = (".png", ".tif", ".jpg", ".bmp", ".jpeg", ".tiff")
# Small enough that an accepted header never makes a fuzz case allocate much; the limit's own tests are
# in tests/test_robustness.py.
MAX_PIXELS = 1_000_000


def encoded(array, extension, **options):
    # Through a real file: imageio's vendored tifffile cannot write to a BytesIO under NumPy 2.
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "image" + extension)
        iio.imwrite(path, array, **options)
        with open(path, "rb") as handle:
            return handle.read()


def palette_png():
    image = Image.fromarray(np.arange(48, dtype=np.uint8).reshape(6, 8) % 4, mode="P")
    image.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255, 9, 9, 9])
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def seeds():
    """Valid little files: every format, and the pixel types a folder may hold."""
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
    grey16 = rng.integers(0, 65536, (6, 8), dtype=np.uint16)
    return {
        "rgb.png": encoded(rgb, ".png"),
        "rgba.png": encoded(np.dstack([rgb, rgb[..., :1]]), ".png"),
        "grey16.png": encoded(grey16, ".png"),
        "palette.png": palette_png(),
        "rgb.tif": encoded(rgb, ".tif"),
        "grey16.tif": encoded(grey16, ".tif"),
        "float.tif": encoded(rng.random((6, 8)).astype(np.float32), ".tif"),
        "pages.tif": encoded(np.stack([rgb, rgb]), ".tif"),
        "rgb.jpg": encoded(rgb, ".jpg", quality=90),
        "grey.jpg": encoded(rgb[..., 0], ".jpg"),
        "rgb.bmp": encoded(rgb, ".bmp"),
    }


SEEDS = seeds()


def png_with_size(width, height, depth, colour):
    header = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)

    def chunk(kind, payload):
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 100))
            + chunk(b"IEND", b""))


def bmp_with_size(width, height, bits):
    return (struct.pack("<2sIHHI", b"BM", 70, 0, 0, 54)
            + struct.pack("<IiiHHIIiiII", 40, width, height, 1, bits, 0, 0, 2835, 2835, 0, 0) + b"\0" * 16)


def tiff_with_size(width, height):
    entries = [(256, width), (257, height), (258, 8), (259, 1), (262, 1), (273, 8), (277, 1), (278, height),
               (279, 16)]
    ifd = struct.pack("<H", len(entries)) + b"".join(struct.pack("<HHII", tag, 4, 1, value) for tag, value in entries)
    return b"II*\0" + struct.pack("<I", 24) + b"\0" * 16 + ifd + struct.pack("<I", 0)


@st.composite
def mutated(draw):
    """A valid seed file, truncated and/or with a few bytes overwritten; saved under any extension."""
    name = draw(st.sampled_from(sorted(SEEDS)))
    content = bytearray(SEEDS[name])
    for _ in range(draw(st.integers(0, 4))):
        position = draw(st.integers(0, len(content) - 1))
        content[position] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        content = content[:draw(st.integers(0, len(content)))]
    extension = draw(st.sampled_from([name[name.index("."):], *EXTENSIONS]))
    return bytes(content), extension


@st.composite
def declared_sizes(draw):
    """A header claiming any size, from 0 pixels to 4 billion, with data for a few bytes."""
    side = st.integers(0, 2**32 - 1) | st.integers(0, 3000)
    width, height = draw(side), draw(side)
    kind = draw(st.sampled_from(["png", "bmp", "tif"]))
    if kind == "png":
        depth, colour = draw(st.sampled_from([(8, 0), (8, 2), (16, 0), (16, 2), (8, 3), (1, 0), (8, 6)]))
        return png_with_size(width, height, depth, colour), ".png"
    if kind == "bmp":
        return bmp_with_size(min(width, 2**31 - 1), min(height, 2**31 - 1), draw(st.sampled_from([1, 8, 24, 32]))), \
            ".bmp"
    return tiff_with_size(width, height), ".tif"


def check(tmp_path_factory, content, extension):
    path = tmp_path_factory.mktemp("fuzz") / f"image{extension}"
    path.write_bytes(content)
    try:
        image = read_image(str(path), max_pixels=MAX_PIXELS)
    except AttentionSamplingError as error:
        assert str(path) in str(error) and "\n" not in str(error)
        return
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    assert image.shape[0] > 0 and image.shape[1] > 0


@pytest.mark.filterwarnings("ignore")  # decoders warn about what they repair; only exceptions count
@settings(max_examples=80)
@given(content=st.binary(max_size=600), extension=st.sampled_from(EXTENSIONS))
def test_random_bytes_are_refused_with_our_error(tmp_path_factory, content, extension):
    check(tmp_path_factory, content, extension)


# Found by this fuzzer: a TIFF whose page series is empty decoded to shape (0, 6, 8, 3), and taking its
# first page raised IndexError.
EMPTY_SERIES_TIFF = bytes.fromhex(
    "49492a00080000001200fe000400010000000000000000010400010000000800000001010400010000000600000002010300"
    "03000000e60000000301030001000000010000000601030001000000020000000e01020018000000ec000000110104000100"
    "0000800100001501030001000000030000001601040001000000060000001701040001000000900000001a01050001000000"
    "440100001b010500010000004c0100001c0103000100000001000000280103000100000001000000310102000c0000005401"
    "0000320102001400000060010000530103000300000074010000a0020000080008000800")


@pytest.mark.filterwarnings("ignore")
@settings(max_examples=160)
@given(case=mutated())
@example(case=(EMPTY_SERIES_TIFF, ".tif"))
def test_damaged_valid_files_load_or_are_refused_with_our_error(tmp_path_factory, case):
    check(tmp_path_factory, *case)


@pytest.mark.filterwarnings("ignore")
@settings(max_examples=60)
@given(case=declared_sizes())
def test_headers_declaring_any_size_load_or_are_refused_with_our_error(tmp_path_factory, case):
    check(tmp_path_factory, *case)


@pytest.mark.parametrize("name", sorted(SEEDS))
def test_the_seed_files_themselves_load(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(SEEDS[name])
    assert read_image(str(path)).shape == (6, 8, 3)
