"""Whole-slide images read lazily (slides.py) against the array path on the same pixels decoded whole.

Every slide here is a small pyramidal tiled TIFF written by tifffile in tmp_path, with tiles smaller
than the image so that views and patches cross tile edges. The array path is the reference: the
attention view is nn.AvgPool2d of the decoded image, the patches are extract_patches, the augmentations
augmentation.augment_into.
"""
import numpy as np
import pytest
import tifffile
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import nn
from attention_sampling import AttentionSamplingModel, is_lazy, predict, train_step
from attention_sampling.application import augmentation
from attention_sampling.application.data import Augmentation, ImageFolder, augment_into, load_batch
from attention_sampling.application.errors import AttentionSamplingError
from attention_sampling.application.slides import (ArraySlide, Slide, SlideBatch, check_source, is_slide, read_view,
                                                   view_level)
from attention_sampling.application.slidewriter import Tissue, pooled_levels, write_image_pyramid
from attention_sampling.patches import BORDERS, extract_patches
from tests.strategies import seeds

HEIGHT, WIDTH = 203, 301  # neither a multiple of any scale nor of the tiles: leftovers everywhere


def as_float(image):
    """The array path's pixels: float32(uint8) * float32(1 / 255), as load_batch makes them."""
    return image.astype(np.float32) * np.float32(1 / 255)


def array_view(image, scale):
    pixels = as_float(image)[None]
    return (nn.AvgPool2d(scale).infer(pixels) if scale > 1 else pixels)[0]


def poolable_image(seed, height=HEIGHT, width=WIDTH):
    """(H, W, 3) uint8 whose average pools by 2, 4 and 8 are integers: constant on 8 x 8 blocks plus a
    checkerboard of +-k, so the pyramid's rounded levels are its exact pools."""
    rng = np.random.default_rng(seed)
    base = rng.integers(20, 236, size=(height // 8 + 1, width // 8 + 1, 3))
    base = np.repeat(np.repeat(base, 8, axis=0), 8, axis=1)[:height, :width]
    rows, columns = np.mgrid[0:height, 0:width]
    sign = np.where((rows + columns) % 2 == 0, 1, -1)[..., None]
    return (base + sign * rng.integers(0, 20, size=3)).astype(np.uint8)


@pytest.fixture(scope="module")
def pyramid(tmp_path_factory):
    """A poolable image as a pyramid of downsamples 1, 2, 4, 8 in 32 x 48 tiles -> (path, image)."""
    image = poolable_image(0)
    path = tmp_path_factory.mktemp("slides") / "pyramid.tif"
    write_image_pyramid(str(path), image, (1, 2, 4, 8), tile=32)
    return str(path), image


@pytest.fixture(scope="module")
def noisy(tmp_path_factory):
    """Random pixels (levels are rounded pools, not exact) -> (path, image)."""
    image = np.random.default_rng(1).integers(0, 256, size=(HEIGHT, WIDTH, 3), dtype=np.uint8)
    path = tmp_path_factory.mktemp("slides") / "noisy.tif"
    write_image_pyramid(str(path), image, (1, 2, 4), tile=32)
    return str(path), image


def test_a_pyramidal_or_tiled_tiff_is_a_slide_and_a_strip_tiff_is_not(pyramid, tmp_path):
    tifffile.imwrite(tmp_path / "strips.tif", pyramid[1])
    tifffile.imwrite(tmp_path / "tiled.tif", pyramid[1], tile=(32, 32))
    assert is_slide(pyramid[0]) and is_slide(str(tmp_path / "tiled.tif"))
    assert not is_slide(str(tmp_path / "strips.tif"))
    with Slide(pyramid[0]) as slide:
        assert (slide.height, slide.width) == (HEIGHT, WIDTH)
        assert [d for d, *_ in slide.levels] == [1, 2, 4, 8]


@pytest.mark.parametrize("scale, level", [(1, 1), (2, 2), (3, 1), (4, 4), (6, 2), (8, 8), (16, 8), (24, 8)])
def test_the_view_is_the_average_pool_of_level_0_read_from_the_coarsest_level_dividing_c(pyramid, scale, level):
    """Where a level matches c it is read as the view; else the coarsest level whose downsample divides c
    is pooled by c / d. Exact pyramids give the array path's view (float rounding apart)."""
    path, image = pyramid
    with Slide(path) as slide:
        assert view_level(slide, scale)[0] == level
        view = read_view(slide, scale)
    np.testing.assert_allclose(view, array_view(image, scale), rtol=0, atol=1e-6)


def test_the_view_pooled_from_level_0_is_the_array_paths_to_the_last_bit(pyramid):
    path, image = pyramid
    for scale in (3, 5, 7):
        with Slide(path) as slide:
            assert np.array_equal(read_view(slide, scale), array_view(image, scale))


@pytest.mark.parametrize("scale", [2, 4, 8])
def test_a_view_from_rounded_levels_is_within_half_a_grey_level(noisy, scale):
    path, image = noisy
    with Slide(path) as slide:
        view = read_view(slide, scale)
    assert np.abs(view - array_view(image, scale)).max() <= 0.5 / 255 + 1e-6


def corner_and_random_cells(rng, h, w, count=12):
    cells = np.stack([rng.integers(0, h, count), rng.integers(0, w, count)], axis=-1)
    corners = np.array([[0, 0], [0, w - 1], [h - 1, 0], [h - 1, w - 1], [0, w // 2], [h // 2, w - 1]])
    return np.concatenate([corners, cells])[None]


@pytest.mark.parametrize("border", BORDERS)
@pytest.mark.parametrize("scale, patch_size", [(4, 9), (4, 12), (3, 2), (5, 40), (8, 8)])
def test_every_patch_is_the_region_cut_from_the_decoded_image_at_the_borders_too(pyramid, border, scale, patch_size):
    path, image = pyramid
    cells = corner_and_random_cells(np.random.default_rng(scale), HEIGHT // scale, WIDTH // scale)
    with Slide(path) as slide:
        patches = SlideBatch([slide]).patches(cells, patch_size, scale, border)
    assert np.array_equal(patches, extract_patches(as_float(image)[None], cells, patch_size, scale, border))


@pytest.mark.parametrize("seed", range(4))
def test_augmented_patches_are_those_of_the_augmented_decoded_image(pyramid, seed):
    """Flips and zoom are coordinate maps on the reads: the same bilinear samples as augment_into; the
    contrast is centred on the view's channel means (given to the reference here)."""
    path, image = pyramid
    augment = Augmentation()
    draw = augment.draw(np.random.default_rng(seed), HEIGHT, WIDTH)
    with Slide(path) as slide:
        batch = SlideBatch([slide], [draw])
        batch.unaugmented_view(4)
        mean = batch._means[0]
        cells = corner_and_random_cells(np.random.default_rng(seed), HEIGHT // 4, WIDTH // 4)
        for border in BORDERS:
            patches = batch.patches(cells, 10, 4, border)
            reference = np.empty((HEIGHT, WIDTH, 3), np.float32)
            flip_rows, flip_columns, factor, (top, left, crop_h, crop_w) = draw
            augmentation._augment_into(image, flip_rows, flip_columns, np.float32(factor), mean, top, left, crop_h, crop_w,
                               reference)
            expected = extract_patches(reference[None], cells, 10, 4, border)
            np.testing.assert_allclose(patches, expected, rtol=0, atol=2e-6)


def test_flipped_views_are_the_views_of_the_flipped_image_when_c_divides_the_sides(tmp_path):
    image = poolable_image(3, 96, 128)
    path = str(tmp_path / "even.tif")
    write_image_pyramid(path, image, (1, 2, 4), tile=32)
    no_zoom = Augmentation(flip=True, contrast=0.0, zoom=0.0)
    for seed in range(4):
        draw = no_zoom.draw(np.random.default_rng(seed), 96, 128)
        with Slide(path) as slide:
            view = SlideBatch([slide], [draw]).view(4)[0]
        flipped = np.empty((96, 128, 3), np.float32)
        augment_into(image, no_zoom, np.random.default_rng(seed), flipped)
        np.testing.assert_allclose(view, nn.AvgPool2d(4).infer(flipped[None])[0], rtol=0, atol=1e-6)


def test_a_zoomed_view_approximates_the_view_of_the_zoomed_image(tmp_path):
    """Resampling the view is not pooling the resampled image (it cannot be, without reading level 0):
    on tissue-like content the difference is a few grey levels on average, a third or less of what the
    un-augmented view would be off by."""

    path = str(tmp_path / "tissue.tif")
    image = Tissue(256, 384, seed=2, spots="horizontal", spot_size=24)(1, 0, 0, 256, 384)
    write_image_pyramid(path, image, (1, 2, 4), tile=64)
    augment = Augmentation(flip=True, contrast=0.2, zoom=0.2)
    for seed in range(4):
        draw = augment.draw(np.random.default_rng(seed), 256, 384)
        with Slide(path) as slide:
            batch = SlideBatch([slide], [draw])
            view, unaugmented, mean = batch.view(4)[0], batch.unaugmented_view(4)[0], batch._means[0]
        flip_rows, flip_columns, factor, (top, left, crop_h, crop_w) = draw
        reference = np.empty((256, 384, 3), np.float32)
        augmentation._augment_into(image, flip_rows, flip_columns, np.float32(factor), mean, top, left, crop_h, crop_w,
                           reference)
        expected = nn.AvgPool2d(4).infer(reference[None])[0]
        difference = np.abs(view - expected).mean()
        assert difference < 0.025 and difference < 0.35 * np.abs(unaugmented - expected).mean()


def test_max_pixels_applies_to_what_is_decoded_not_to_the_nominal_size(pyramid, tmp_path):
    """A slide of 61,103 pixels is read under --max-pixels 1,000: its view at c = 8 decodes 25 x 37 pixels
    of the level of downsample 8. Without that level (a tiled TIFF of one level) it is refused, naming it."""
    path, image = pyramid
    assert check_source(path, 16, 8, max_pixels=1000) == (HEIGHT, WIDTH)
    flat = str(tmp_path / "one-level.tif")
    tifffile.imwrite(flat, image, tile=(32, 32))
    with pytest.raises(AttentionSamplingError, match="one-level.tif.*no pyramid level.*--max-pixels 1,000"):
        check_source(flat, 16, 8, max_pixels=1000)
    assert check_source(flat, 16, 8, max_pixels=100_000) == (HEIGHT, WIDTH)  # level 0 pooled, within the limit


def test_a_truncated_slide_and_an_unknown_format_are_one_error_naming_the_file(pyramid, tmp_path):
    path, _ = pyramid
    content = open(path, "rb").read()
    truncated = tmp_path / "truncated.tif"
    truncated.write_bytes(content[:len(content) // 2])
    unknown = tmp_path / "scanner.svs"
    unknown.write_bytes(b"VENDOR-FORMAT\0" + bytes(range(256)) * 8)
    for bad in (truncated, unknown):
        with pytest.raises(AttentionSamplingError) as error:
            check_source(str(bad), 8, 4)
        assert str(bad) in str(error.value) and "\n" not in str(error.value)


def test_a_training_step_and_a_prediction_run_on_a_slide_batch(pyramid):
    """The core takes a SlideBatch where it takes an array: same shapes, finite numbers, and without
    augmentation the same prediction as the array path for the same draws."""
    path, image = pyramid
    model = AttentionSamplingModel(2, scale=4, patch_size=10, n_patches=3, border="reflect")
    dataset = ImageFolder("root", ["a", "b"], [path, path], np.array([0, 1]), lazy=True)
    batch = load_batch(dataset, [0, 1], (HEIGHT, WIDTH), Augmentation(), np.random.default_rng(0), scale=4)
    assert is_lazy(batch) and batch.shape == (2, HEIGHT, WIDTH, 3)
    metrics = train_step(model, nn.Adam(1e-3), batch, dataset.labels, np.random.default_rng(0), replicas=2)
    assert all(np.isfinite(value) for value in metrics.values())
    lazy = predict(model, load_batch(dataset, [0], (HEIGHT, WIDTH)), np.random.default_rng(5), looks=2)
    array = predict(model, as_float(image)[None], np.random.default_rng(5), looks=2)
    assert np.array_equal(lazy.cells, array.cells) and np.array_equal(lazy.patches, array.patches)
    np.testing.assert_allclose(lazy.probabilities, array.probabilities, rtol=1e-5, atol=1e-6)


def test_plain_images_in_a_slide_data_set_are_read_through_the_same_interface(pyramid):
    path, image = pyramid
    plain = ArraySlide(image, "plain.png")
    cells = corner_and_random_cells(np.random.default_rng(0), HEIGHT // 4, WIDTH // 4)
    with Slide(path) as slide:
        batch = SlideBatch([slide, plain])
        np.testing.assert_allclose(batch.view(4)[0], batch.view(4)[1], rtol=0, atol=1e-6)
        patches = batch.patches(np.concatenate([cells, cells]), 9, 4, "reflect")
    assert np.array_equal(patches[0], patches[1])


def test_slides_of_another_size_are_refused_in_a_batch_naming_the_file(pyramid, tmp_path):
    other = str(tmp_path / "other.tif")
    write_image_pyramid(other, poolable_image(4, 96, 128), (1, 2), tile=32)
    dataset = ImageFolder("root", ["a", "b"], [pyramid[0], other], np.array([0, 1]), lazy=True)
    with pytest.raises(AttentionSamplingError, match="other.tif.*96x128.*not resized"):
        load_batch(dataset, [0, 1], (HEIGHT, WIDTH))


@settings(max_examples=25)
@given(seed=seeds, height=st.integers(8, 90), width=st.integers(8, 90), scale=st.integers(1, 6),
       patch_size=st.integers(1, 20), border=st.sampled_from(BORDERS), tile=st.sampled_from([16, 32]))
def test_views_and_patches_of_any_slide_match_the_decoded_image(tmp_path_factory, seed, height, width, scale,
                                                                 patch_size, border, tile):
    """Any size (not multiples of the tiles or of c), any patch size against c, cells at the corners."""
    assume(min(height, width) >= scale)
    image = np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    path = str(tmp_path_factory.mktemp("any") / "slide.tif")
    write_image_pyramid(path, image, (1, 2), tile=tile)
    cells = corner_and_random_cells(np.random.default_rng(seed), height // scale, width // scale, count=4)
    with Slide(path) as slide:
        batch = SlideBatch([slide])
        view = batch.view(scale)[0]
        patches = batch.patches(cells, patch_size, scale, border)
    tolerance = 0.5 / 255 + 1e-6 if scale % 2 == 0 else 0  # from the rounded level of downsample 2
    np.testing.assert_allclose(view, array_view(image, scale), rtol=0, atol=tolerance)
    assert np.array_equal(patches, extract_patches(as_float(image)[None], cells, patch_size, scale, border))


def chain_pyramid(path, image, downsamples=(1, 2, 4), tile=32):
    """The pyramid as OpenSlide's generic TIFF wants it: every level a tiled page of the main chain."""
    levels = pooled_levels(image, downsamples)
    with tifffile.TiffWriter(path) as tiff:
        for index, d in enumerate(downsamples):
            tiff.write(levels[d], tile=(tile, tile), photometric="rgb", compression="zlib",
                       **({} if index == 0 else {"subfiletype": 1}))


def test_openslide_reads_the_same_views_and_patches(pyramid, tmp_path):
    """The optional OpenSlide reader (formats tifffile does not open) against the array path."""
    pytest.importorskip("openslide")
    from attention_sampling.application.slides import OpenSlideSlide

    _, image = pyramid
    path = str(tmp_path / "chain.tif")
    chain_pyramid(path, image)
    cells = corner_and_random_cells(np.random.default_rng(0), HEIGHT // 4, WIDTH // 4)
    with OpenSlideSlide(path) as slide:
        assert [d for d, *_ in slide.levels] == [1, 2, 4]
        for scale in (2, 3, 4, 8):
            np.testing.assert_allclose(read_view(slide, scale), array_view(image, scale), rtol=0, atol=1e-6)
        for border in BORDERS:
            patches = SlideBatch([slide]).patches(cells, 9, 4, border)
            assert np.array_equal(patches, extract_patches(as_float(image)[None], cells, 9, 4, border))


def test_a_slide_tifffile_cannot_open_goes_to_openslide(pyramid, tmp_path, monkeypatch):
    pytest.importorskip("openslide")
    from attention_sampling.application import slides

    path = str(tmp_path / "chain.tif")
    chain_pyramid(path, pyramid[1])

    def refuse(path, counter=None):
        raise AttentionSamplingError(f"{path}: cannot read slide (a format tifffile does not know)")

    monkeypatch.setattr(slides, "Slide", refuse)
    source = slides.open_source(path)
    assert isinstance(source, slides.OpenSlideSlide) and (source.height, source.width) == (HEIGHT, WIDTH)
    source.close()


def test_a_jpeg_tiled_slide_reads_after_the_plain_install(tmp_path):
    """JPEG tiles, what most vendor slides (Aperio SVS) hold, decode with the installed dependencies (imagecodecs):
    the view and patches are those of the image tifffile decodes whole from the same file."""
    rows, columns = np.mgrid[0:HEIGHT, 0:WIDTH]
    image = np.stack([rows * 255 // HEIGHT, columns * 255 // WIDTH, (rows + columns) % 256], axis=-1).astype(np.uint8)
    path = str(tmp_path / "jpeg.tif")
    with tifffile.TiffWriter(path) as tiff:
        tiff.write(image, tile=(32, 32), photometric="rgb", compression="jpeg")
    decoded = tifffile.imread(path)
    assert np.abs(decoded.astype(int) - image).mean() < 8  # lossy, but the same picture
    cells = corner_and_random_cells(np.random.default_rng(0), HEIGHT // 4, WIDTH // 4)
    with Slide(path) as slide:
        batch = SlideBatch([slide])
        assert np.allclose(batch.view(4)[0], array_view(decoded, 4), atol=1e-6)
        assert np.array_equal(batch.patches(cells, 16, 4, "reflect"),
                              extract_patches(as_float(decoded)[None], cells, 16, 4, "reflect"))
