"""The tissue mask (--tissue auto): found where generated images and slides hold their tissue, and every patch
drawn on it."""
import numpy as np
import pytest

from attention_sampling import AttentionSamplingModel, predict, train_step
from attention_sampling.application.errors import AttentionSamplingError
from attention_sampling.application.slides import load_slides
from attention_sampling.application.slidewriter import BACKGROUND, NUCLEUS, STROMA, write_image_pyramid
from attention_sampling.application.tissue import tissue_cells, tissue_mask
from attention_sampling.training import on_mask
import nn

SCALE = 8


def tissue_image(seed, cells=(24, 32), scale=SCALE):
    """-> ((h c, w c, 3) uint8 image, (h, w) bool truth): glass with noise and a dust speck, two regions of
    H&E-like tissue (an ellipse with a small hole, a rectangle), each cell all glass or all tissue."""
    rng = np.random.default_rng(seed)
    h, w = cells
    rows, columns = np.mgrid[0:h, 0:w]
    truth = ((rows - 9) / 6.5) ** 2 + ((columns - 10) / 8.5) ** 2 <= 1
    truth[(rows == 9) & (columns == 10)] = False  # a hole of one cell: filled by the mask, and so truth
    truth |= (rows >= 14) & (rows < 21) & (columns >= 21) & (columns < 29)
    pixels = np.repeat(np.repeat(truth, scale, axis=0), scale, axis=1)
    mix = rng.uniform(0, 0.6, size=pixels.shape)[..., None]
    tissue = STROMA + mix * (NUCLEUS - STROMA)
    image = np.where(pixels[..., None], tissue, BACKGROUND) + rng.normal(0, 4, size=pixels.shape + (3,))
    image[4 * scale:4 * scale + 2, 26 * scale:26 * scale + 2] = 90  # dust: a dark grey speck on glass
    truth[9, 10] = True
    return np.clip(np.rint(image), 0, 255).astype(np.uint8), truth


def pooled(image, scale=SCALE):
    h, w = image.shape[0] // scale, image.shape[1] // scale
    return image.reshape(h, scale, w, scale, 3).astype(np.float32).mean(axis=(1, 3)) / 255


def within_cells(mask, truth, cells):
    """Every cell where mask and truth differ is within `cells` cells (Chebyshev) of the truth's boundary."""
    from scipy.ndimage import binary_dilation, binary_erosion

    structure = np.ones((3, 3), dtype=bool)
    inner = binary_erosion(truth, structure, iterations=cells)
    outer = binary_dilation(truth, structure, iterations=cells)
    return bool(np.all(mask[inner]) and not np.any(mask[~outer]))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_mask_is_the_tissue_within_a_cell_specks_and_holes_cleaned(seed):
    image, truth = tissue_image(seed)
    mask = tissue_cells(pooled(image))
    assert mask.shape == truth.shape and mask.dtype == bool
    assert within_cells(mask, truth, 1)
    assert np.mean(mask != truth) < 0.03
    assert not mask[4, 26] and mask[9, 10]  # the speck is gone, the hole filled


def test_glass_alone_and_tissue_alone_are_not_cut_in_two():
    rng = np.random.default_rng(0)
    glass = (BACKGROUND + rng.normal(0, 1, size=(20, 20, 3))) / 255  # a cell averages the pixel noise
    tissue = (STROMA + rng.uniform(0, 0.6, size=(20, 20, 1)) * (NUCLEUS - STROMA)) / 255
    assert not tissue_cells(np.clip(glass, 0, 1)).any()
    assert tissue_cells(np.clip(tissue, 0, 1)).all()


def model(sampling="with", patches=6):
    return AttentionSamplingModel(2, scale=SCALE, patch_size=8, n_patches=patches, seed=0, sampling=sampling)


@pytest.mark.parametrize("sampling", ["with", "without"])
def test_every_patch_of_a_slide_is_on_its_tissue(tmp_path, sampling):
    """A generated pyramidal slide: its mask, read from the view, is its tissue, and training and prediction
    draw every patch there (a fresh attention network left alone would not)."""
    image, truth = tissue_image(3)
    path = str(tmp_path / "slide.tif")
    write_image_pyramid(path, image, downsamples=(1, 2, 4, 8))
    batch = load_slides([path], scale=SCALE)
    try:
        mask = tissue_mask(batch, SCALE, [path], minimum=6)
        assert within_cells(mask[0], truth, 1)
        rng = np.random.default_rng(0)
        prediction = predict(model(sampling), batch, rng, looks=3, mask=mask)
        assert mask[0][prediction.cells[0, :, 0], prediction.cells[0, :, 1]].all()
        assert np.all(prediction.attention[~mask] == 0)
        np.testing.assert_allclose(prediction.attention.sum(), 1, rtol=1e-5)
        unmasked = predict(model(sampling), batch, np.random.default_rng(0), looks=20)
        assert on_mask(unmasked.cells, mask) < 1
        trained = model(sampling)
        metrics = train_step(trained, nn.Adam(1e-3), batch, np.array([1]), rng, replicas=2, mask=mask)
        assert metrics["on_mask"] == 1.0 and np.isfinite(metrics["loss"]) and np.isfinite(metrics["entropy"])
    finally:
        batch.close()


def test_a_floor_keeps_every_patch_on_tissue():
    image, truth = tissue_image(4)
    images = (image.astype(np.float32) / 255)[None]
    mask = tissue_mask(images, SCALE, ["image.png"])
    floored = AttentionSamplingModel(2, scale=SCALE, patch_size=8, n_patches=30, seed=0, floor=0.5)
    prediction = predict(floored, images, np.random.default_rng(0), mask=mask)
    assert mask[0][prediction.cells[0, :, 0], prediction.cells[0, :, 1]].all()


def test_an_all_true_mask_changes_nothing():
    """Behaviour with a mask that allows every cell is that without one, to the bit."""
    image, _ = tissue_image(5)
    images = (image.astype(np.float32) / 255)[None]
    everywhere = np.ones((1,) + images.shape[1:3], dtype=bool)[:, ::SCALE, ::SCALE]
    first = predict(model(), images, np.random.default_rng(1), looks=2)
    second = predict(model(), images, np.random.default_rng(1), looks=2, mask=everywhere)
    np.testing.assert_array_equal(first.probabilities, second.probabilities)
    np.testing.assert_array_equal(first.cells, second.cells)


def test_no_tissue_is_one_error_naming_the_file():
    glass = np.clip(BACKGROUND / 255 + np.zeros((1, 64, 64, 3), dtype=np.float32), 0, 1)
    with pytest.raises(AttentionSamplingError, match=r"^glass\.svs: no tissue found.*--tissue none"):
        tissue_mask(glass, SCALE, ["glass.svs"])


def test_fewer_tissue_cells_than_distinct_patches_is_one_error_naming_the_file():
    image, truth = tissue_image(0)
    images = (image.astype(np.float32) / 255)[None]
    with pytest.raises(AttentionSamplingError, match=r"^small\.tif: \d+ cells of tissue .* fewer than the 10000"):
        tissue_mask(images, SCALE, ["small.tif"], minimum=10000)


def test_the_trainers_mask_and_attention_net_share_one_pooled_view(monkeypatch):
    """A loader's batch (augmented.AugmentedImages, what the trainer's _load gets) keeps its view: the tissue
    mask is found on the very array the attention network reads, pooled once per image, and that mask is the
    one found on the average-pooled float image."""
    from attention_sampling.application import augmented
    from attention_sampling.application.tissue import batch_mask

    image, _ = tissue_image(6)
    pooled_views = []
    plain_view = augmented._plain_view
    monkeypatch.setattr(augmented, "_plain_view", lambda *arguments: pooled_views.append(1) or plain_view(*arguments))
    batch = augmented.AugmentedImages.plain([image], view_scale=SCALE)
    trained = model()
    mask = batch_mask("auto", batch, trained, ["image.png"])
    seen = []
    forward_view = trained.attention.forward_view
    monkeypatch.setattr(trained.attention, "forward_view", lambda view, *rest: seen.append(view) or
                        forward_view(view, *rest))
    metrics = train_step(trained, nn.Adam(1e-3), batch, np.array([1]), np.random.default_rng(0), replicas=2, mask=mask)
    assert len(pooled_views) == 1 and len(seen) == 1 and seen[0] is batch.view(SCALE)
    np.testing.assert_array_equal(mask, tissue_mask((image.astype(np.float32) / 255)[None], SCALE, ["image.png"]))
    assert metrics["on_mask"] == 1.0
