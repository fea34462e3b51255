"""extract_patches and patch_boxes against the mapping written in patches.py's module docstring.

Cell (r, q) of the map pooled by c gives the S x S patch whose top-left pixel is
    top = r c + floor((c - S) / 2),   left = q c + floor((c - S) / 2),
with zeros wherever the patch leaves the image (border="zero"), the image mirrored there ("reflect"), or
the patch shifted inside ("inside"). The reference below applies those sentences pixel by pixel.
"""
import math
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from attention_sampling.patches import (BORDERS, extract_patches, outside_image, patch_boxes, patch_offset,
                                       reflect_index, reflect_indices)
from tests.strategies import seeds

IMAGE_DTYPES = [np.float32, np.uint8]


# ----------------------------------------------------------------------------- strategies

@dataclass(frozen=True)
class PatchCase:
    images: np.ndarray  # (N, H, W, C), no zero pixels, so padding is told apart from image content
    cells: np.ndarray   # (N, P, 2) in the pooled grid of h = H // scale rows, w = W // scale columns
    patch_size: int
    scale: int


def image_values(seed, shape, dtype):
    """Non-zero pixels: 1..255 for uint8, [1, 2) for float32."""
    rng = np.random.default_rng(seed)
    if dtype == np.uint8:
        return rng.integers(1, 256, size=shape, dtype=np.uint8)
    return (1.0 + rng.random(shape)).astype(dtype)


@st.composite
def patch_cases(draw, max_scale=5, max_cells_per_side=4, max_patches=4):
    """Images of any size (H, W not always multiples of c), patches smaller, equal or larger than a cell.

    Cell coordinates are drawn with the extremes 0 and h - 1 (w - 1) as explicit choices, so corner and
    border patches appear in most examples, not only when Hypothesis happens to find them.
    """
    scale = draw(st.integers(1, max_scale), label="scale")
    h, w = draw(st.integers(1, max_cells_per_side)), draw(st.integers(1, max_cells_per_side))
    height = h * scale + draw(st.integers(0, scale - 1))  # leftover rows pooling drops
    width = w * scale + draw(st.integers(0, scale - 1))
    patch_size = draw(st.integers(1, 2 * scale + 3), label="patch_size")
    n, p = draw(st.integers(1, 2)), draw(st.integers(1, max_patches))
    channels = draw(st.sampled_from([1, 3]))
    dtype = draw(st.sampled_from(IMAGE_DTYPES))

    def coordinate(size):
        return st.one_of(st.sampled_from([0, size - 1]), st.integers(0, size - 1))

    cells = np.array([[[draw(coordinate(h)), draw(coordinate(w))] for _ in range(p)] for _ in range(n)],
                     dtype=np.int64).reshape(n, p, 2)
    images = image_values(draw(seeds), (n, height, width, channels), dtype)
    return PatchCase(images, cells, patch_size, scale)


# ----------------------------------------------------------------------------- reference

def reflect_by_walking(index, length):
    """Mirror at the edges without repeating them, as numpy.pad(mode="reflect") does, by walking."""
    if length == 1:
        return 0
    while not 0 <= index < length:
        index = -index if index < 0 else 2 * (length - 1) - index
    return index


def reference_extract_patches(images, cells, patch_size, scale, border="zero"):
    """The docstring's mapping, one pixel at a time: (N, H, W, C), (N, P, 2) -> (N, P, S, S, C)."""
    n, height, width, channels = images.shape
    offset = math.floor((scale - patch_size) / 2)
    patches = np.zeros((n, cells.shape[1], patch_size, patch_size, channels), dtype=images.dtype)
    for image in range(n):
        for draw, (row, column) in enumerate(cells[image].tolist()):
            top, left = row * scale + offset, column * scale + offset
            if border == "inside":
                top = max(0, min(top, height - patch_size))
                left = max(0, min(left, width - patch_size))
            for i in range(patch_size):
                for j in range(patch_size):
                    y, x = top + i, left + j
                    if border == "reflect":
                        y, x = reflect_by_walking(y, height), reflect_by_walking(x, width)
                    if 0 <= y < height and 0 <= x < width:
                        patches[image, draw, i, j, :] = images[image, y, x, :]
    return patches


# ----------------------------------------------------------------------------- extract_patches

@settings(max_examples=60)
@given(case=patch_cases(), border=st.sampled_from(BORDERS))
def test_extract_patches_equals_pixel_loop_reference(case, border):
    """Any H, W, c, odd or even S (smaller or larger than c, or than the image), corner cells, 1 or 3
    channels, float32 or uint8, each border mode."""
    patches = extract_patches(case.images, case.cells, case.patch_size, case.scale, border)
    n, p = case.cells.shape[:2]
    assert patches.shape == (n, p, case.patch_size, case.patch_size, case.images.shape[3])
    assert patches.dtype == case.images.dtype
    np.testing.assert_array_equal(patches, reference_extract_patches(case.images, case.cells,
                                                                     case.patch_size, case.scale, border))


@pytest.mark.parametrize("border", ["reflect", "inside"])
@settings(max_examples=30)
@given(case=patch_cases())
def test_no_zero_pixel_when_the_image_is_at_least_a_patch(border, case):
    """With reflect or inside, a patch that fits in the image holds image pixels only (none are zero)."""
    assume(case.images.shape[1] >= case.patch_size and case.images.shape[2] >= case.patch_size)
    patches = extract_patches(case.images, case.cells, case.patch_size, case.scale, border)
    assert np.all(patches != 0)


def test_reflect_index_matches_numpy_pad():
    row = np.arange(5)
    padded = np.pad(row, 23, mode="reflect")
    for reflect in (reflect_by_walking, reflect_index):
        np.testing.assert_array_equal([row[reflect(i, 5)] for i in range(-23, 28)], padded)
        assert reflect(-4, 1) == 0


lengths = st.integers(1, 40)
# As far outside as a patch larger than the image reaches, and much farther.
indices = st.one_of(st.integers(-200, 240), st.integers(-2**40, 2**40))


@given(length=lengths, index=st.integers(-200, 240), folds=st.integers(-2**30, 2**30))
def test_reflect_index_is_the_walk_back_and_forth_and_repeats_every_two_lengths(length, index, folds):
    """The mirror folds an index back as many times as it takes: period 2 (length - 1)."""
    assert reflect_index(index, length) == reflect_by_walking(index, length)
    assert reflect_index(index + folds * 2 * (length - 1), length) == reflect_index(index, length)


@given(length=lengths, values=st.lists(indices, max_size=12), rows=st.sampled_from([1, 2]))
def test_reflect_indices_is_reflect_index_of_each(length, values, rows):
    values = values[:len(values) // rows * rows]
    array = np.array(values, dtype=np.int64).reshape(rows, -1)
    mirrored = reflect_indices(array, length)
    assert mirrored.shape == array.shape and mirrored.dtype == np.int64
    assert mirrored.ravel().tolist() == [reflect_index(value, length) for value in values]
    assert ((0 <= mirrored) & (mirrored < length)).all()


def test_hand_worked_border_examples():
    """The 5x7 image below (pixel (y, x) holds 10 y + x), c = 2, S = 4, cell (0, 0) starts at (-1, -1).
    reflect: row/column -1 mirror to 1. inside: the patch moves to (0, 0)."""
    image = (10 * np.arange(5)[:, None] + np.arange(7)[None, :]).astype(np.float32)[None, :, :, None]
    cells = np.array([[[0, 0]]])
    reflected = extract_patches(image, cells, 4, 2, "reflect")[0, 0, :, :, 0]
    np.testing.assert_array_equal(reflected, [[11, 10, 11, 12], [1, 0, 1, 2], [11, 10, 11, 12], [21, 20, 21, 22]])
    shifted = extract_patches(image, cells, 4, 2, "inside")[0, 0, :, :, 0]
    np.testing.assert_array_equal(shifted, image[0, :4, :4, 0])
    # The bottom-right cell (1, 2) starts at (1, 3), inside already: every mode gives the same patch.
    last = np.array([[[1, 2]]])
    for border in BORDERS:
        np.testing.assert_array_equal(extract_patches(image, last, 4, 2, border)[0, 0, :, :, 0], image[0, 1:5, 3:7, 0])


def test_hand_worked_examples():
    """Three patches worked out on paper from the docstring, on a 5x7 image whose pixel (y, x) holds 10 y + x.

    c = 2, S = 4: offset floor(-1) = -1. Cell (0, 0) starts at (-1, -1): one zero row and column, then
    pixels 0..2. Cell (1, 2) starts at (1, 3): wholly inside. The pooled grid is 2x3; cell (1, 2) covers
    pixels (2..3, 4..5), so the leftover row 4 and column 6 enter the patch although no cell covers them.
    c = 3, S = 1: offset 1, the centre pixel of each 3x3 cell.
    """
    image = (10 * np.arange(5)[:, None] + np.arange(7)[None, :]).astype(np.float32)[None, :, :, None]

    corner, inside = extract_patches(image, np.array([[[0, 0], [1, 2]]]), patch_size=4, scale=2)[0, :, :, :, 0]
    expected_corner = np.zeros((4, 4), dtype=np.float32)
    expected_corner[1:, 1:] = [[0, 1, 2], [10, 11, 12], [20, 21, 22]]
    np.testing.assert_array_equal(corner, expected_corner)
    np.testing.assert_array_equal(inside, [[13, 14, 15, 16], [23, 24, 25, 26], [33, 34, 35, 36],
                                           [43, 44, 45, 46]])

    centres = extract_patches(image, np.array([[[0, 0], [0, 1]]]), patch_size=1, scale=3)[0, :, 0, 0, 0]
    np.testing.assert_array_equal(centres, [11, 14])


def test_patch_larger_than_the_image_is_the_image_framed_by_zeros():
    """A 1x1-cell image with S = 3c + 2: the whole image sits inside the patch, everything else is zero."""
    scale, patch_size = 2, 8
    images = image_values(0, (1, 2, 2, 3), np.uint8)
    patch = extract_patches(images, np.zeros((1, 1, 2), dtype=np.int64), patch_size, scale)[0, 0]
    offset = patch_offset(patch_size, scale)  # -3
    expected = np.zeros((patch_size, patch_size, 3), dtype=np.uint8)
    expected[-offset:-offset + 2, -offset:-offset + 2] = images[0]
    np.testing.assert_array_equal(patch, expected)


@settings(max_examples=50)
@given(patch_size=st.integers(1, 64), scale=st.integers(1, 64))
def test_patch_offset_centres_the_patch_on_the_cell(patch_size, scale):
    """offset = floor((c - S) / 2): the patch centre top + S/2 is the cell centre r c + c/2 when S and c
    have the same parity (the docstring says so for even S and c; it holds for odd ones too), and half
    a pixel up and left of it when they do not."""
    offset = patch_offset(patch_size, scale)
    assert offset == math.floor((scale - patch_size) / 2)
    shift = scale / 2 - (offset + patch_size / 2)
    assert shift == (0.0 if (scale - patch_size) % 2 == 0 else 0.5)


# ----------------------------------------------------------------------------- patch_boxes

@settings(max_examples=40)
@given(case=patch_cases())
def test_patch_boxes_agree_with_extract_patches(case):
    """Box (top, left, bottom, right), bottom and right exclusive: its in-image part is the patch's
    non-padded part, pixel for pixel, and the rest of the patch is zero."""
    images, size = case.images, case.patch_size
    boxes = patch_boxes(case.cells, size, case.scale)
    patches = extract_patches(images, case.cells, size, case.scale)
    assert boxes.shape == case.cells.shape[:2] + (4,)
    height, width = images.shape[1:3]
    for image in range(case.cells.shape[0]):
        for draw in range(case.cells.shape[1]):
            top, left, bottom, right = boxes[image, draw].tolist()
            assert bottom - top == size and right - left == size
            y0, y1 = max(top, 0), min(bottom, height)
            x0, x1 = max(left, 0), min(right, width)
            patch = patches[image, draw]
            inside = np.zeros(patch.shape[:2], dtype=bool)
            if y0 < y1 and x0 < x1:
                inside[y0 - top:y1 - top, x0 - left:x1 - left] = True
                np.testing.assert_array_equal(patch[y0 - top:y1 - top, x0 - left:x1 - left],
                                              images[image, y0:y1, x0:x1])
            assert np.all(patch[~inside] == 0)


@settings(max_examples=40)
@given(case=patch_cases())
def test_inside_boxes_and_outside_flags_agree_with_the_patches(case):
    """patch_boxes(border="inside") is where the inside patch was cut; outside_image flags exactly the
    draws whose zero-border patch has padding (some zero pixel, the images having none)."""
    images, size = case.images, case.patch_size
    height, width = images.shape[1:3]
    boxes = patch_boxes(case.cells, size, case.scale, (height, width), "inside")
    patches = extract_patches(images, case.cells, size, case.scale, "inside")
    zero_padded = extract_patches(images, case.cells, size, case.scale, "zero")
    flags = outside_image(case.cells, size, case.scale, (height, width))
    for image in range(case.cells.shape[0]):
        for draw in range(case.cells.shape[1]):
            top, left, bottom, right = boxes[image, draw].tolist()
            if size <= height and size <= width:
                np.testing.assert_array_equal(patches[image, draw], images[image, top:bottom, left:right])
            assert flags[image, draw] == np.any(zero_padded[image, draw] == 0)


@pytest.mark.parametrize("leading", [(), (5,), (2, 3)])
def test_patch_boxes_keeps_leading_axes(leading):
    """(..., 2) -> (..., 4) for any leading shape, each box the cell's top-left pixel plus the offset."""
    cells = np.arange(2 * int(np.prod(leading, dtype=int))).reshape(leading + (2,))
    boxes = patch_boxes(cells, patch_size=5, scale=4)
    assert boxes.shape == leading + (4,)
    top_left = cells * 4 + math.floor((4 - 5) / 2)
    np.testing.assert_array_equal(boxes, np.concatenate([top_left, top_left + 5], axis=-1))
