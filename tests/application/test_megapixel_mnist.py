"""Megapixel MNIST: canvases of the class drawn three times, from digit pools no two splits share; and the
object tally that tells how much of the attention finds the digits."""
import json
import os

import imageio.v3 as iio
import numpy as np
import pytest

from attention_sampling.application.data import ImageFolder, stratified_split
from attention_sampling.application.megapixel_mnist import DIGIT, build, digit_pools, mnist_digits
from attention_sampling.application.objects import ObjectTally, object_cells, patches_on_objects, read_objects


def fake_digits(per_class=10, seed=0):
    """(10 per_class, 28, 28) uint8 digits, each instance a distinct random pattern, labels 0..9 in blocks."""
    rng = np.random.default_rng(seed)
    digits = rng.integers(1, 256, (10 * per_class, DIGIT, DIGIT), dtype=np.uint8)
    return digits, np.repeat(np.arange(10), per_class)


def test_the_digit_pools_are_disjoint_cover_every_instance_and_hold_every_class():
    labels = np.repeat(np.arange(10), 50)
    pools = digit_pools(labels)
    names = ("train", "val", "test")
    for a in names:
        for b in names:
            if a < b:
                assert not set(pools[a]) & set(pools[b])
        assert sorted(np.unique(labels[pools[a]])) == list(range(10))
    assert sorted(np.concatenate([pools[n] for n in names])) == list(range(500))
    assert [len(pools[n]) for n in names] == [300, 100, 100]


def test_mnist_digits_come_from_the_installed_wheel():
    digits, labels = mnist_digits()
    assert digits.shape == (5000, DIGIT, DIGIT) and digits.dtype == np.uint8
    assert np.bincount(labels).tolist() == [500] * 10
    assert digits.max() == 255 and digits.min() == 0


@pytest.fixture(scope="module")
def small_set(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("mm") / "set")
    source = fake_digits()
    build(root, height=120, width=140, n_noise=4, n_per_class=6, test_fraction=0.34, val_fraction=0.34, seed=3,
          source=source)
    return root, source


def test_a_canvas_holds_three_digits_of_its_class_and_two_of_others_where_objects_json_says(small_set):
    root, (digits, digit_labels) = small_set
    with open(os.path.join(root, "objects.json")) as handle:
        table = json.load(handle)
    assert table["columns"] == ["top", "left", "height", "width", "digit", "instance", "counts"]
    dataset = ImageFolder.scan(root)
    assert dataset.classes == [str(d) for d in range(10)] and len(dataset.paths) == 60
    for path, label in zip(dataset.paths, dataset.labels):
        canvas = iio.imread(path)
        assert canvas.shape == (120, 140, 3)
        rows = table["objects"][os.path.relpath(path, root).replace(os.sep, "/")]
        assert len(rows) == 5
        assert [r[6] for r in rows] == [1, 1, 1, 0, 0]
        assert [r[4] for r in rows[:3]] == [label] * 3
        assert label not in [r[4] for r in rows[3:]] and rows[3][4] != rows[4][4]
        for top, left, height, width, digit, instance, _ in rows:
            assert digit_labels[instance] == digit
            assert np.array_equal(canvas[top:top + height, left:left + width, 0], digits[instance])
        # No two digits overlap (a digit's pixels are all its own, checked above, only if none covers another).
        corners = [(r[0], r[1]) for r in rows]
        for i, (t1, l1) in enumerate(corners):
            for t2, l2 in corners[i + 1:]:
                assert abs(t1 - t2) >= DIGIT or abs(l1 - l2) >= DIGIT


def test_the_runs_test_canvases_hold_only_test_digits(small_set):
    root, (_, digit_labels) = small_set
    with open(os.path.join(root, "objects.json")) as handle:
        objects = json.load(handle)["objects"]
    dataset = ImageFolder.scan(root)
    split = stratified_split(dataset.labels, 0.34, 3, 0.34)
    pools = digit_pools(digit_labels)
    for name in ("train", "val", "test"):
        used = {row[5] for i in getattr(split, name)
                for row in objects[os.path.relpath(dataset.paths[i], root).replace(os.sep, "/")]}
        assert used and used <= set(pools[name].tolist()), name


def test_read_objects_keeps_the_label_carrying_boxes_in_the_order_of_the_paths(small_set):
    root, _ = small_set
    dataset = ImageFolder.scan(root)
    boxes = read_objects(root, dataset.paths[::-1])
    assert len(boxes) == len(dataset.paths) and all(b.shape == (3, 4) for b in boxes)
    assert read_objects(os.path.dirname(root), dataset.paths) is None  # no objects.json: nothing to tally


def test_object_cells_and_patches_on_objects():
    boxes = np.array([[8, 4, 28, 28]])  # rows 8..35, columns 4..31
    mask = object_cells(boxes, 8, (6, 6))
    assert mask[1:5, 0:4].all() and mask.sum() == 16
    # The patch of cell (r, c) has its top-left at 8 r + (8 - 20) // 2 = 8 r - 6 and side 20; the box's centre
    # is (22, 18): inside the patch of cell (2, 2) (rows 10..29, columns 10..29), not of cell (0, 0).
    hits = patches_on_objects(np.array([[2, 2], [0, 0], [4, 4]]), boxes, 8, 20)
    assert hits.tolist() == [True, False, False]
    assert patches_on_objects(np.array([[2, 2]]), np.zeros((0, 4), dtype=np.int64), 8, 20).tolist() == [False]


def test_the_tally_is_the_attention_mass_on_objects_and_the_share_of_patches_and_looks_that_hold_one():
    boxes = [np.array([[8, 4, 28, 28]]), np.zeros((0, 4), dtype=np.int64)]
    tally = ObjectTally(boxes, scale=8, patch_size=20)
    attention = np.full((2, 6, 6), 1 / 36)
    cells = np.array([[[2, 2], [0, 0]], [[2, 2], [2, 2]]])
    tally.add(np.array([0, 1]), attention, cells)
    row = tally.row()
    assert row["object_attention"] == pytest.approx((16 / 36 + 0) / 2)
    assert row["object_patches"] == pytest.approx((0.5 + 0) / 2)
    assert row["object_looks"] == pytest.approx((1 + 0) / 2)
    assert all(np.isnan(v) for v in ObjectTally(boxes, 8, 20).row().values())


def test_training_on_megapixel_mnist_logs_how_much_attention_falls_on_the_digits(tmp_path, small_set):
    from attention_sampling.application.settings import TRAINING_DEFAULTS
    from attention_sampling.application.trainer import Trainer

    root, _ = small_set
    dataset = ImageFolder.scan(root)
    config = dict(TRAINING_DEFAULTS, data=root, classes=dataset.classes, image_shape=[120, 140], epochs=1,
                  patches=3, size=28, scale=8, replicas=2, batch_size=4, seed=3, augment=False,
                  val_fraction=0.34, test_fraction=0.34)
    trainer = Trainer(dataset, str(tmp_path / "run"), config, log=lambda line: None, progress=False)
    trainer.fit()
    row = trainer.history[-1]
    assert 0 < row["object_attention"] < 1 and 0 <= row["object_patches"] <= row["object_looks"] <= 1
    with open(tmp_path / "run" / "metrics.csv") as handle:
        assert handle.readline().strip().split(",")[-3:] == ["object_attention", "object_patches", "object_looks"]
