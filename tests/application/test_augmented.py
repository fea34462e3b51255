"""Augmentation composed into the attention view and the patch reads (application/augmented.py): the same
view and patches as augmenting the whole image first, then pooling it and cutting from it."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import nn
from attention_sampling.application.augmented import AugmentedImages
from attention_sampling.application.augmentation import Augmentation, augment_into, contrast_centre
from attention_sampling.patches import BORDERS, extract_patches


def whole_then_cut(images, augment, seed):
    """Today's path: the full-size augmented batch, and the draws it used (same rng, same order)."""
    rng = np.random.default_rng(seed)
    batch = np.empty((len(images),) + images[0].shape, np.float32)
    for slot, image in enumerate(images):
        augment_into(image, augment, rng, batch[slot])
    rng = np.random.default_rng(seed)  # augment_into takes exactly augment.draw's numbers, image by image
    draws = [augment.draw(rng, *image.shape[:2]) for image in images]
    return batch, draws


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 3), st.integers(3, 30), st.integers(3, 30), st.integers(1, 4), st.integers(1, 12),
       st.sampled_from(BORDERS), st.booleans(), st.floats(0, 0.9), st.floats(0, 1.0),
       st.sampled_from([np.uint8, np.float32]), st.integers(0, 2**32 - 1))
def test_view_and_patches_equal_augment_then_pool_and_cut(n, height, width, scale, size, border, flip, contrast,
                                                          zoom, dtype, seed):
    scale = min(scale, height, width)
    rng = np.random.default_rng(seed)
    images = [(rng.random((height, width, 3)) * 255).astype(dtype) for _ in range(n)]
    augment = Augmentation(flip=flip, contrast=contrast, zoom=zoom)
    batch, draws = whole_then_cut(images, augment, seed)
    lazy = AugmentedImages(images, draws, contrast=contrast > 0, view_scale=scale)
    assert lazy.shape == batch.shape

    expected_view = nn.AvgPool2d(scale).forward(batch, training=False)
    np.testing.assert_allclose(lazy.view(scale), expected_view, rtol=0, atol=3e-6)

    h, w = height // scale, width // scale
    cells = np.stack([rng.integers(0, h, (n, 7)), rng.integers(0, w, (n, 7))], axis=-1)
    cells[:, 0] = 0                       # a corner cell in every batch: the border rules at work
    cells[:, 1] = (h - 1, w - 1)
    np.testing.assert_array_equal(lazy.patches(cells, size, scale, border),
                                  extract_patches(batch, cells, size, scale, border))


def test_without_augmentation_the_reads_are_the_plain_ones():
    """No flip, a factor of 1 and the whole image as the crop: the view is the pooled image / 255 and the
    patches are cut from it (up to the last bit: x * (1 / 255) against x / 255)."""
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (12, 16, 3)).astype(np.uint8)
    lazy = AugmentedImages([image], [(False, False, 1.0, (0, 0, 12, 16))], contrast=False)
    plain = image[None].astype(np.float32) / 255
    np.testing.assert_allclose(lazy.view(4), nn.AvgPool2d(4).forward(plain, training=False), atol=2e-7)
    cells = np.array([[[1, 2], [2, 3]]])
    np.testing.assert_allclose(lazy.patches(cells, 6, 4, "reflect"), extract_patches(plain, cells, 6, 4, "reflect"),
                               rtol=0, atol=1e-7)


def test_a_training_step_on_the_composed_reads_matches_the_full_batch():
    """train_step on AugmentedImages and on the full augmented batch, same model, same draws: the same loss
    and the same gradients, to float32 rounding of the pooled view. (Compared before Adam: the biases of the
    convolutions before a batch norm have gradients of rounding size, which Adam would turn into steps of
    lr either way; every gradient here is 0.09 to 1.7 or such a rounding, and the two paths differ by < 1e-6.)"""
    import copy

    from attention_sampling import AttentionSamplingModel, train_step

    rng = np.random.default_rng(5)
    images = [rng.integers(0, 256, (40, 48, 3)).astype(np.uint8) for _ in range(3)]
    augment = Augmentation(flip=True, contrast=0.3, zoom=0.2)
    batch, draws = whole_then_cut(images, augment, 11)
    model = AttentionSamplingModel(3, scale=4, patch_size=12, n_patches=3, seed=0, temperature=3.0, border="reflect")
    twin = copy.deepcopy(model)
    labels = np.array([0, 1, 2])
    results = []
    for network, data in ((model, batch), (twin, AugmentedImages(images, draws, view_scale=4))):
        optimizer = nn.Adam(lr=0.0)
        results.append(train_step(network, optimizer, data, labels, np.random.default_rng(3), replicas=2,
                                  entropy_weight=0.05))
    assert results[0]["loss"] == pytest.approx(results[1]["loss"], rel=1e-5)
    for key, value in model.grads.items():
        np.testing.assert_allclose(twin.grads[key], value, rtol=1e-5, atol=1e-6, err_msg=key)


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 3), st.integers(3, 30), st.integers(3, 30), st.integers(1, 4), st.integers(1, 12),
       st.sampled_from(BORDERS), st.sampled_from([np.uint8, np.float32]), st.integers(0, 2**32 - 1))
def test_plain_images_read_as_the_plain_batch(n, height, width, scale, size, border, dtype, seed):
    """AugmentedImages.plain (evaluation, --no-augment): the view is the plain batch's average pool and the
    patches are cut from it bit for bit, the batch made as load_batch makes it without a scale (clipped to
    [0, 255], times 1 / 255); float pixels outside that range are clipped on both paths."""
    scale = min(scale, height, width)
    rng = np.random.default_rng(seed)
    low, high = (0, 256) if dtype == np.uint8 else (-20, 280)
    images = [rng.uniform(low, high, (height, width, 3)).astype(dtype) for _ in range(n)]
    batch = np.empty((n, height, width, 3), np.float32)
    for slot, image in enumerate(images):
        np.clip(image, 0, 255, out=batch[slot], casting="unsafe")
        batch[slot] *= np.float32(1 / 255)
    lazy = AugmentedImages.plain(images, view_scale=scale)
    np.testing.assert_allclose(lazy.view(scale), nn.AvgPool2d(scale).forward(batch, training=False), rtol=0,
                               atol=1e-6)
    h, w = height // scale, width // scale
    cells = np.stack([rng.integers(0, h, (n, 7)), rng.integers(0, w, (n, 7))], axis=-1)
    cells[:, 0] = 0
    cells[:, 1] = (h - 1, w - 1)
    np.testing.assert_array_equal(lazy.patches(cells, size, scale, border),
                                  extract_patches(batch, cells, size, scale, border))


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 40), st.integers(1, 40), st.integers(1, 4), st.sampled_from([np.uint8, np.float32]),
       st.integers(0, 2**32 - 1))
def test_contrast_centre_is_the_channel_means(height, width, channels, dtype, seed):
    """The contrast's centre (the compiled per-channel mean of the decoded image) against NumPy's mean."""
    image = (np.random.default_rng(seed).random((height, width, channels)) * 255).astype(dtype)
    np.testing.assert_allclose(contrast_centre(image, True), image.astype(np.float64).mean(axis=(0, 1)),
                               rtol=1e-6)
    assert not contrast_centre(image, False).any()
