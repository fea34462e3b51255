"""Image folders: every file format becomes (H, W, 3) uint8; the split, the resize, augmentation, batches, and
the loader threads' priority."""
import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import imageio.v3 as iio
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

import attention_sampling.application.data as data
from attention_sampling.application.data import (LOADER_NICENESS, Augmentation, ImageFolder, augment_into, load_batch,
                                                 lower_thread_priority, read_image, resize_bilinear, stratified_split,
                                                 to_rgb8)
from attention_sampling.application.augmentation import bilinear_source, source_pixels, source_table
from attention_sampling.application.errors import AttentionSamplingError
from attention_sampling.application.slides import source_axis

HEIGHT, WIDTH = 12, 10


def ramp():
    """(12, 10) uint8 with 120 distinct values 0, 2, ..., 238: a mistake in rows, columns or scale shows."""
    return (np.arange(HEIGHT * WIDTH).reshape(HEIGHT, WIDTH) * 2).astype(np.uint8)


def rgb():
    grey = ramp()
    return np.stack([grey, 255 - grey, grey // 2], axis=-1)


def write_palette_png(path):
    """A PIL 'P' image: indices 0..3 into a four-colour palette -> the RGB the palette names."""
    palette = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [10, 20, 30]], dtype=np.uint8)
    indices = (ramp() // 2 % 4).astype(np.uint8)
    image = Image.fromarray(indices, mode="P")
    image.putpalette(palette.ravel().tolist())
    image.save(path)
    return palette[indices]


# name -> (write the file, expected (H, W, 3) uint8, lossy). Lossless formats must match exactly.
def lossless(array):
    return lambda path: iio.imwrite(path, array)


CASES = {
    "rgb.png": (lossless(rgb()), rgb(), 0),
    "rgb.tif": (lossless(rgb()), rgb(), 0),
    "rgb.bmp": (lossless(rgb()), rgb(), 0),
    "grey.png": (lossless(ramp()), np.repeat(ramp()[..., None], 3, axis=2), 0),
    "grey.tiff": (lossless(ramp()), np.repeat(ramp()[..., None], 3, axis=2), 0),
    "rgba.png": (lossless(np.dstack([rgb(), 255 - ramp()])), rgb(), 0),
    "rgba.tif": (lossless(np.dstack([rgb(), 255 - ramp()])), rgb(), 0),
    "grey_alpha.png": (lossless(np.dstack([ramp(), 255 - ramp()])), np.repeat(ramp()[..., None], 3, axis=2), 0),
    # 16-bit: v * 257 + 100 keeps the top byte v, so it must come back as v.
    "grey16.png": (lossless(ramp().astype(np.uint16) * 257 + 100), np.repeat(ramp()[..., None], 3, axis=2), 0),
    "grey16.tif": (lossless(ramp().astype(np.uint16) * 257 + 100), np.repeat(ramp()[..., None], 3, axis=2), 0),
    # JPEG is lossy (and halves the colour resolution): close on average, never far off.
    "rgb.jpg": (lambda path: iio.imwrite(path, rgb(), quality=95), rgb(), True),
    "grey.jpeg": (lambda path: iio.imwrite(path, ramp(), quality=95), np.repeat(ramp()[..., None], 3, axis=2), True),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_format_loads_as_rgb8(tmp_path, name):
    write, expected, lossy = CASES[name]
    path = str(tmp_path / name)
    write(path)
    image = read_image(path)
    assert image.shape == (HEIGHT, WIDTH, 3)
    assert image.dtype == np.uint8
    if lossy:
        difference = np.abs(image.astype(int) - expected.astype(int))
        assert difference.mean() <= 3 and difference.max() <= 32, f"{name}: off by {difference.mean():.1f} on average"
    else:
        np.testing.assert_array_equal(image, expected)


def test_palette_png_loads_as_its_colours(tmp_path):
    path = str(tmp_path / "palette.png")
    expected = write_palette_png(path)
    image = read_image(path)
    assert image.dtype == np.uint8
    np.testing.assert_array_equal(image, expected)


def test_one_bit_image_loads_as_black_and_white(tmp_path):
    path = str(tmp_path / "mask.png")
    mask = ramp() > 100
    Image.fromarray(mask).save(path)
    np.testing.assert_array_equal(read_image(path), np.repeat(np.where(mask, 255, 0)[..., None], 3, axis=2))


def test_first_page_of_a_multi_page_tiff(tmp_path):
    path = str(tmp_path / "pages.tif")
    iio.imwrite(path, np.stack([rgb(), rgb()[::-1]]))
    np.testing.assert_array_equal(read_image(path), rgb())


def test_16_bit_data_widened_to_int32_is_not_black():
    """Pillow's 'I' mode (how older Pillow opens 16-bit grey PNGs) holds 16-bit values in int32."""
    widened = ramp().astype(np.int32) * 257
    np.testing.assert_array_equal(to_rgb8(widened)[..., 0], ramp())


def test_floats_are_taken_as_zero_to_one():
    np.testing.assert_array_equal(to_rgb8(np.array([[0.0, 0.5, 1.0, 2.0]]))[0, :, 0], [0, 128, 255, 255])


def test_unreadable_file_names_itself(tmp_path):
    path = tmp_path / "broken.png"
    path.write_bytes(b"not a png")
    with pytest.raises(AttentionSamplingError, match="broken.png"):
        read_image(str(path))


def make_folder(root, counts):
    """ROOT/<class>/<i>.png for {class: count}, each image filled with its class's index in sorted order."""
    for label, name in enumerate(sorted(counts)):
        os.makedirs(root / name)
        for i in range(counts[name]):
            iio.imwrite(root / name / f"{i:02d}.png", np.full((8, 6, 3), 10 * label + i, dtype=np.uint8))


def test_scan_sorts_classes_and_labels_every_file(tmp_path):
    make_folder(tmp_path, {"tumour": 2, "benign": 3, "other": 1})
    (tmp_path / "tumour" / "notes.txt").write_text("not an image")
    os.makedirs(tmp_path / ".thumbnails")
    dataset = ImageFolder.scan(str(tmp_path))
    assert dataset.classes == ["benign", "other", "tumour"]
    assert len(dataset) == 6
    np.testing.assert_array_equal(dataset.labels, [0, 0, 0, 1, 2, 2])
    for path, label in zip(dataset.paths, dataset.labels):
        assert os.path.basename(os.path.dirname(path)) == dataset.classes[label]
    assert dataset.image_shape() == (8, 6)
    assert dataset.read(4)[0, 0, 0] == 20  # tumour/00.png


def test_scan_errors_name_the_folder(tmp_path):
    with pytest.raises(AttentionSamplingError, match="--data .*missing"):
        ImageFolder.scan(str(tmp_path / "missing"))
    make_folder(tmp_path / "one", {"only": 2})
    with pytest.raises(AttentionSamplingError, match="two class folders"):
        ImageFolder.scan(str(tmp_path / "one"))
    make_folder(tmp_path / "two", {"a": 1})
    os.makedirs(tmp_path / "two" / "empty")
    with pytest.raises(AttentionSamplingError, match="empty"):
        ImageFolder.scan(str(tmp_path / "two"))


def test_stratified_split_by_hand():
    labels = np.array([0] * 10 + [1] * 20 + [2] * 7)
    train, _, test = stratified_split(labels, 0.3, seed=0)
    # round(10 * 0.3) = 3, round(20 * 0.3) = 6, round(7 * 0.3) = 2.
    assert [int(np.sum(labels[test] == c)) for c in range(3)] == [3, 6, 2]
    assert [int(np.sum(labels[train] == c)) for c in range(3)] == [7, 14, 5]


@settings(max_examples=40)
@given(st.lists(st.integers(1, 12), min_size=1, max_size=4), st.floats(0.05, 0.95), st.integers(0, 2**32 - 1))
def test_stratified_split_is_disjoint_complete_per_class_and_seeded(counts, fraction, seed):
    labels = np.random.default_rng(seed).permutation(np.repeat(np.arange(len(counts)), counts))
    train, val, test = stratified_split(labels, fraction, seed)
    assert val.size == 0
    assert np.intersect1d(train, test).size == 0
    np.testing.assert_array_equal(np.sort(np.concatenate([train, test])), np.arange(len(labels)))
    for label, n in enumerate(counts):
        n_test = int(np.sum(labels[test] == label))
        if n == 1:
            assert n_test == 0  # a lone image has to be trained on
            continue
        # Each class keeps its fraction to the nearest image, leaving at least one image on each side.
        assert 1 <= n_test <= n - 1
        if 1 <= n * fraction - 0.5 and n * fraction + 0.5 <= n - 1:
            assert abs(n_test - n * fraction) <= 0.5 + 1e-9
    again = stratified_split(labels, fraction, seed)
    np.testing.assert_array_equal(again.train, train)
    np.testing.assert_array_equal(again.test, test)


def test_stratified_split_depends_on_the_seed():
    labels = np.repeat(np.arange(3), 20)
    splits = {tuple(stratified_split(labels, 0.3, seed).test) for seed in range(5)}
    assert len(splits) > 1


@pytest.mark.parametrize("fraction", [0, 1, 1.5, -0.1])
def test_stratified_split_refuses_a_fraction_outside_zero_one(fraction):
    with pytest.raises(AttentionSamplingError, match="--test-fraction"):
        stratified_split(np.array([0, 0, 1, 1]), fraction, 0)


def test_validation_split_by_hand_keeps_the_test_images_of_a_split_without_it():
    """70 / 15 / 15 as the reference: round(20 * 0.15) = 3 per class to each of test and validation;
    the test images are those a run without validation holds out, so old runs keep their test split."""
    labels = np.repeat(np.arange(3), 20)
    split = stratified_split(labels, 0.15, seed=4, val_fraction=0.15)
    assert [int(np.sum(labels[split.test] == c)) for c in range(3)] == [3, 3, 3]
    assert [int(np.sum(labels[split.val] == c)) for c in range(3)] == [3, 3, 3]
    np.testing.assert_array_equal(split.test, stratified_split(labels, 0.15, seed=4).test)


@settings(max_examples=40)
@given(st.lists(st.integers(1, 30), min_size=1, max_size=4), st.floats(0.05, 0.5), st.floats(0.01, 0.45),
       st.integers(0, 2**32 - 1))
def test_three_way_split_is_disjoint_complete_stratified_and_trains_on_every_class(counts, test_fraction,
                                                                                   val_fraction, seed):
    labels = np.random.default_rng(seed).permutation(np.repeat(np.arange(len(counts)), counts))
    split = stratified_split(labels, test_fraction, seed, val_fraction)
    everything = np.concatenate(split)
    np.testing.assert_array_equal(np.sort(everything), np.arange(len(labels)))
    for label, n in enumerate(counts):
        sizes = [int(np.sum(labels[part] == label)) for part in split]
        assert sizes[0] >= 1  # every class is trained on
        if n >= 3:
            assert sizes[1] >= 1 and sizes[2] >= 1  # and, when it can, validated and tested
        if n >= 20 and test_fraction * n >= 1 and val_fraction * n >= 1:
            assert abs(sizes[2] - n * test_fraction) <= 0.5 + 1e-9
            assert abs(sizes[1] - n * val_fraction) <= 0.5 + 1e-9 or sizes[0] == 1


@pytest.mark.parametrize("val_fraction", [-0.1, 0.7, 1.0])
def test_stratified_split_refuses_a_validation_fraction_that_leaves_nothing_to_train(val_fraction):
    with pytest.raises(AttentionSamplingError, match="--val-fraction"):
        stratified_split(np.arange(20) % 2, 0.3, 0, val_fraction)


@settings(max_examples=30)
@given(st.integers(1, 20), st.integers(1, 20), st.integers(1, 30), st.integers(1, 30), st.floats(0, 255))
def test_resize_of_a_constant_image_is_constant(h, w, height, width, value):
    image = np.full((h, w, 3), value, dtype=np.float32)
    resized = resize_bilinear(image, height, width)
    assert resized.shape == (height, width, 3)
    np.testing.assert_allclose(resized, value, rtol=1e-6, atol=1e-4)


@settings(max_examples=20)
@given(st.integers(1, 16), st.integers(1, 16), st.integers(0, 2**32 - 1))
def test_resize_to_the_same_size_is_the_identity(h, w, seed):
    image = np.random.default_rng(seed).random((h, w, 3), dtype=np.float32) * 255
    np.testing.assert_array_equal(resize_bilinear(image, h, w), image)


def test_resize_interpolates_between_pixel_centres():
    # Two pixels 0 and 1 stretched to four: centres at -0.25, 0.25, 0.75, 1.25 in the old pixel grid,
    # clamped to the edge pixels -> 0, 0.25, 0.75, 1.
    image = np.array([[[0.0], [1.0]]], dtype=np.float32)
    np.testing.assert_allclose(resize_bilinear(image, 1, 4)[0, :, 0], [0, 0.25, 0.75, 1])


sides = st.integers(1, 40)


@given(size=sides, source_size=sides)
def test_bilinear_source_is_the_clamped_centre_of_each_output_pixel(size, source_size):
    """Output pixel i's centre i + 1/2 lands at (i + 1/2) s / n in the source, whose pixel centres are at
    j + 1/2: the samples are the two source pixels around it, the edges clamped (bit for bit in float64)."""
    position = np.clip((np.arange(size) + 0.5) * (source_size / size) - 0.5, 0, source_size - 1)
    sources = [bilinear_source(index, size, source_size) for index in range(size)]
    assert [first for first, _, _ in sources] == np.floor(position).astype(int).tolist()
    assert [second for _, second, _ in sources] == np.minimum(np.floor(position) + 1, source_size - 1).tolist()
    assert [fraction for _, _, fraction in sources] == (position - np.floor(position)).tolist()


@settings(max_examples=40)
@given(h=sides, w=sides, height=sides, width=sides, dtype=st.sampled_from([np.float32, np.float64]),
       seed=st.integers(0, 2**32 - 1))
def test_resize_is_bilinear_source_pixel_by_pixel(h, w, height, width, dtype, seed):
    image = (np.random.default_rng(seed).random((h, w, 2)) * 255).astype(dtype)
    expected = np.empty((height, width, 2), dtype)
    for i in range(height):
        r0, r1, fr = bilinear_source(i, height, h)
        vertical = image[r0] * (1 - dtype(fr)) + image[r1] * dtype(fr)
        for j in range(width):
            c0, c1, fc = bilinear_source(j, width, w)
            expected[i, j] = vertical[c0] * (1 - dtype(fc)) + vertical[c1] * dtype(fc)
    resized = resize_bilinear(image, height, width)
    assert resized.dtype == dtype
    np.testing.assert_array_equal(resized, expected)


@st.composite
def axis_maps(draw):
    """An axis of `length` pixels, a crop (start, size) inside it, a flip, and indices into it or -1."""
    length = draw(sides)
    size = draw(st.integers(1, length))
    start = draw(st.integers(0, length - size))
    indices = draw(st.lists(st.integers(-1, length - 1), max_size=12))
    return length, (start, size), draw(st.booleans()), np.array(indices, dtype=np.int64)


@given(case=axis_maps())
def test_source_table_and_the_slides_axis_map_are_source_pixels_of_each_index(case):
    length, (start, size), flip, indices = case
    expected = [source_pixels(int(index), length, start, size, flip) for index in indices]
    firsts, seconds, weights = source_table(indices, length, start, size, flip)
    assert list(zip(firsts.tolist(), seconds.tolist(), weights.tolist())) == [
        (first, second, float(weight)) for first, second, weight in expected]
    assert weights.dtype == np.float32
    first, second, weight = source_axis(indices, length, crop=(start, size), flip=flip)
    valid = indices >= 0
    assert (first[~valid] == -1).all() and (second[~valid] == -1).all()
    assert first[valid].tolist() == firsts[valid].tolist() and second[valid].tolist() == seconds[valid].tolist()
    np.testing.assert_array_equal(weight[valid], weights[valid])
    assert ((0 <= first[valid]) & (first[valid] < length) & (0 <= second[valid]) & (second[valid] < length)).all()


def test_augmentation_with_everything_off_is_the_identity():
    image = np.random.default_rng(0).random((9, 7, 3), dtype=np.float32) * 255
    augment = Augmentation(flip=False, contrast=0, zoom=0)
    np.testing.assert_array_equal(augment(image, np.random.default_rng(1)), image)


def test_contrast_keeps_each_channels_mean_and_flips_are_permutations():
    image = np.random.default_rng(0).random((9, 7, 3), dtype=np.float32) * 255
    contrasted = Augmentation(flip=False, contrast=0.3, zoom=0)(image, np.random.default_rng(1))
    np.testing.assert_allclose(contrasted.mean(axis=(0, 1)), image.mean(axis=(0, 1)), rtol=1e-4)
    for seed in range(4):
        flipped = Augmentation(flip=True, contrast=0, zoom=0)(image, np.random.default_rng(seed))
        assert any(np.array_equal(flipped, candidate) for candidate in
                   (image, image[::-1], image[:, ::-1], image[::-1, ::-1]))


def test_load_batch_is_float32_in_zero_one(tmp_path):
    make_folder(tmp_path, {"a": 2, "b": 2})
    iio.imwrite(tmp_path / "b" / "02.png", np.full((16, 12, 3), 255, dtype=np.uint8))  # another size
    dataset = ImageFolder.scan(str(tmp_path))
    batch = load_batch(dataset, [0, 3, 4], (8, 6))
    assert batch.shape == (3, 8, 6, 3) and batch.dtype == np.float32
    np.testing.assert_allclose(batch[0], 0 / 255)
    np.testing.assert_allclose(batch[1], 11 / 255, rtol=1e-6)  # b/01.png, filled with 10 * 1 + 1
    np.testing.assert_allclose(batch[2], 1.0)                   # resized to (8, 6)
    # Strong augmentation pushes pixels past [0, 255]; the batch is clipped back into [0, 1].
    strong = Augmentation(flip=True, contrast=5.0, zoom=0.5)
    augmented = load_batch(dataset, [0, 1, 2, 3, 4], (8, 6), strong, np.random.default_rng(0))
    assert augmented.dtype == np.float32
    assert augmented.min() >= 0 and augmented.max() <= 1


def test_kept_images_are_decoded_once_read_only_and_give_the_same_batches(tmp_path, monkeypatch):
    make_folder(tmp_path, {"a": 3, "b": 3})
    plain, kept = ImageFolder.scan(str(tmp_path)), ImageFolder.scan(str(tmp_path))
    assert not kept.keep_decoded(6 * 8 * 6 * 3 - 1)  # all or nothing: one byte short keeps none
    assert kept.keep_decoded(6 * 8 * 6 * 3)
    decoded = []
    monkeypatch.setattr(data, "read_image", lambda path, *args: decoded.append(path) or read_image(path, *args))
    first = kept.read(4)
    assert kept.read(4) is first and not first.flags.writeable and len(decoded) == 1
    with pytest.raises(ValueError):
        first[0, 0, 0] = 1  # nothing downstream may change what the next epoch reads
    strong = Augmentation(flip=True, contrast=0.5, zoom=0.3)
    for epoch in range(2):
        batches = [load_batch(dataset, range(6), (8, 6), strong, np.random.default_rng(epoch), scale=2)
                   for dataset in (plain, kept)]
        np.testing.assert_array_equal(batches[0].view(2), batches[1].view(2))
        cells = np.zeros((6, 2, 2), dtype=np.int64)
        cells[:, 1] = [3, 2]
        np.testing.assert_array_equal(batches[0].patches(cells, 4, 2, "reflect"),
                                      batches[1].patches(cells, 4, 2, "reflect"))
    # Each file decoded three times: once for the kept folder, once per epoch for the plain one.
    assert sorted(decoded) == sorted(plain.paths * 3)
    subset = data.replace(kept, paths=kept.paths[:2], labels=kept.labels[:2])
    assert subset.cache_bytes == kept.cache_bytes and not subset._cache  # other paths: a cache of its own


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 24), st.integers(1, 24), st.booleans(), st.floats(0, 0.9), st.floats(0, 1.0),
       st.sampled_from([np.uint8, np.float32]), st.integers(0, 2**32 - 1))
def test_fused_augmentation_equals_the_step_by_step_reference(height, width, flip, contrast, zoom, dtype, seed):
    """augment_into (one pass: flips as indices, the zoom's bilinear samples, contrast, clip, / 255) gives
    what flipping, contrasting, zooming, clipping and scaling one after the other give, from the same draws."""
    rng = np.random.default_rng(seed)
    image = (rng.random((height, width, 3)) * 255).astype(dtype)
    augment = Augmentation(flip=flip, contrast=contrast, zoom=zoom)
    expected = np.clip(augment(image.astype(np.float32), np.random.default_rng(seed + 1)), 0, 255) / np.float32(255)
    out = np.empty((height, width, 3), np.float32)
    augment_into(image, augment, np.random.default_rng(seed + 1), out)
    np.testing.assert_allclose(out, expected, rtol=0, atol=2e-5)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice values are Linux's")
def test_the_loader_thread_runs_nicer_than_the_step():
    """lower_thread_priority changes the calling thread's nice value only (Linux threads have their own):
    the loader's, not the step's, which keeps the cores its kernels run on."""
    def nice_of_this_thread():
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    before = nice_of_this_thread()
    with ThreadPoolExecutor(max_workers=1, initializer=lower_thread_priority) as loader:
        loader_nice = loader.submit(nice_of_this_thread).result()
    assert loader_nice == min(19, before + LOADER_NICENESS)
    assert nice_of_this_thread() == before
