"""pooling.py: the attention view of a read image is nn.AvgPool2d's to the bit, an array batch that keeps its view
(PooledImages) predicts exactly as the array itself, and an image read for prediction is scaled as training scales it."""
import numpy as np
import pytest

from attention_sampling import AttentionSamplingModel, predict
from attention_sampling.application.pooling import PooledImages, average_pool
from attention_sampling.application.tissue import batch_mask
from nn import AvgPool2d
from tests.application.test_tissue import tissue_image


@pytest.mark.parametrize("shape, scale", [((16, 24, 3), 4), ((19, 30, 3), 4), ((64, 80, 3), 8), ((9, 9, 1), 3)])
def test_average_pool_is_avgpool2d_to_the_bit(shape, scale):
    pixels = np.random.default_rng(0).random(shape, dtype=np.float32)
    np.testing.assert_array_equal(average_pool(pixels, scale), AvgPool2d(scale).forward(pixels[None], False)[0])


@pytest.mark.parametrize("tissue", ["auto", "none"])
@pytest.mark.parametrize("sampling", ["with", "without"])
def test_pooled_images_predict_as_the_array_does(tissue, sampling):
    """The tissue mask and every field of the prediction are the same bits, the view pooled once."""
    images = np.stack([tissue_image(seed)[0] for seed in (7, 8)]).astype(np.float32) / np.float32(255)
    model = AttentionSamplingModel(2, scale=8, patch_size=8, n_patches=4, seed=0, sampling=sampling)
    pooled = PooledImages(images)
    mask = batch_mask(tissue, images, model, ["a.png", "b.png"])
    np.testing.assert_array_equal(batch_mask(tissue, pooled, model, ["a.png", "b.png"]), mask)
    plain = predict(model, images, np.random.default_rng(0), looks=3, mask=mask)
    kept = predict(model, pooled, np.random.default_rng(0), looks=3, mask=mask)
    for name in vars(plain):
        np.testing.assert_array_equal(getattr(kept, name), getattr(plain, name), err_msg=name)
    assert pooled.view(8) is pooled.view(8)  # pooled once, for the mask and the attention network


@pytest.mark.parametrize("size", [(12, 16), (10, 20)])
def test_an_image_read_for_prediction_is_the_bytes_scaled_as_training_scales_them(tmp_path, size):
    """read_for_run's one pass from uint8 gives the numbers of converting, clipping and scaling in three, and a
    resized image is resized from float32 as training resizes it."""
    import imageio.v3 as iio

    from attention_sampling.application.data import resize_bilinear
    from attention_sampling.application.prediction import read_for_run

    pixels = np.random.default_rng(0).integers(0, 256, (12, 16, 3), dtype=np.uint8)
    path = str(tmp_path / "image.png")
    iio.imwrite(path, pixels)
    image = pixels.astype(np.float32)
    if image.shape[:2] != size:
        image = resize_bilinear(image, *size)
    expected = (np.clip(image, 0, 255) * np.float32(1 / 255))[None]
    read = read_for_run(path, {"image_shape": list(size)})
    assert read.dtype == np.float32
    np.testing.assert_array_equal(read, expected)
