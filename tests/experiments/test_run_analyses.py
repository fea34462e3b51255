"""The analyses of a trained run: its feature network on single digits (digit_patches --run), eq. 1 against
the mean over the same draws (aggregate), and a window of its epochs (windows); and the feature network trained
on perfect looks (bag_reading)."""
import csv

import numpy as np
import pytest

from attention_sampling.application.data import ImageFolder, stratified_split
from attention_sampling.application.megapixel_mnist import build
from attention_sampling.application.settings import TRAINING_DEFAULTS
from attention_sampling.application.trainer import Trainer
from experiments import aggregate, bag_reading, digit_patches, windows
from tests.application.test_megapixel_mnist import fake_digits


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """-> (data root, run folder, dataset) of a 1-epoch run on small Megapixel MNIST canvases."""
    root, run = tmp_path_factory.mktemp("mm") / "set", tmp_path_factory.mktemp("mm") / "run"  # both new folders
    build(str(root), height=120, width=140, n_noise=4, n_per_class=6, test_fraction=0.34, val_fraction=0.34,
          seed=0, source=fake_digits())
    dataset = ImageFolder.scan(str(root))
    config = dict(TRAINING_DEFAULTS, data=str(root), classes=dataset.classes, image_shape=[120, 140], epochs=1,
                  patches=3, size=28, scale=8, replicas=2, batch_size=4, seed=0, augment=False,
                  val_fraction=0.34, test_fraction=0.34)
    Trainer(dataset, str(run), config, log=lambda line: None, progress=False).fit()
    return str(root), str(run), dataset


def test_a_runs_feature_network_is_scored_on_the_test_canvases_digits_label_and_others_apart(trained, capsys):
    root, run, dataset = trained
    digit_patches.main([root, "--run", run, "--size", "28", "--test-fraction", "0.34", "--val-fraction", "0.34"])
    lines = capsys.readouterr().out.strip().splitlines()
    n_test = len(stratified_split(np.array(dataset.labels), 0.34, 0, 0.34).test)
    assert [line.split(": ")[1].split(",")[0] for line in lines] == ["the label's digits", "the other digits"]
    assert [int(line.split(", ")[1].split()[0]) for line in lines] == [3 * n_test, 2 * n_test]
    assert all(0 <= float(line.rsplit(" ", 1)[1]) <= 1 for line in lines)


def test_eq1_and_the_mean_are_scored_on_the_same_draws_and_agree_with_one_patch():
    from attention_sampling.models import AttentionSamplingModel  # one patch: both classifiers are that patch's

    model = AttentionSamplingModel(n_classes=3, scale=4, patch_size=8, n_patches=1, seed=0)
    images = np.random.default_rng(1).random((5, 32, 32, 3), dtype=np.float32)
    hits = aggregate.accuracies(model, images, np.arange(5) % 3, np.random.default_rng(2))
    assert set(hits) == set(aggregate.KEYS)
    for key in aggregate.KEYS:
        assert hits[key].shape == (5, aggregate.LOOKS)
        np.testing.assert_array_equal(hits[key] if key != "single" else hits[key] == 1, hits["eq1"], err_msg=key)


def test_aggregate_prints_both_splits(trained, capsys):
    _, run, _ = trained
    aggregate.main([run])
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split(":")[0].rsplit(" ", 1)[1] for line in lines] == ["val", "test"]
    assert all(0 <= float(part.split()[1]) <= 1 for line in lines for part in line.split(": ")[1].split(", "))


def test_a_window_averages_its_epochs_and_picks_the_best_inside_it(tmp_path):
    keys = ["epoch", "train_accuracy", "val_accuracy", "val_loss", "test_accuracy", "entropy", "distinct_cells"]
    with open(tmp_path / "metrics.csv", "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(keys)
        for epoch, val in ((1, 0.9), (2, 0.5), (3, 0.7), (4, 0.7)):
            writer.writerow([epoch, 0.1 * epoch, val, 1.0 / epoch, val / 2, 2.0, 9.0])
    line = windows.window(str(tmp_path), 2, 4)
    assert "epochs 2-4" in line and "validation 0.633" in line and "train 0.300" in line
    assert "validation-best 0.700 at epoch 4 (test 0.350)" in line  # equal accuracy: the lower loss
    assert windows.window(str(tmp_path), 7, 9).endswith("no epochs in 7-9")


def test_a_perfect_look_holds_every_digit_whole_and_then_random_crops():
    canvas = np.zeros((60, 80), dtype=np.uint8)
    boxes = [(5, 7, 10, 10, 3), (40, 60, 12, 9, 1)]
    for top, left, h, w, _ in boxes:
        canvas[top:top + h, left:left + w] = 255
    crops = bag_reading.bag(canvas, boxes, 4, 20, np.random.default_rng(0))
    assert crops.shape == (4, 20, 20)
    assert [int(crop.sum()) // 255 for crop in crops[:2]] == [100, 108]  # each crop holds its whole digit


@pytest.mark.parametrize("head", ["class", "paper"])
def test_bag_reading_trains_either_head_and_reports_both_accuracies(trained, capsys, head):
    root, _, _ = trained
    bag_reading.main([root, "--head", head, "--steps", "3", "--size", "28", "--patches", "6", "--batch", "2",
                      "--test-fraction", "0.34", "--val-fraction", "0.34"])
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("step 3 ")
    assert all(0 <= float(last.split(name)[1].split()[0]) <= 1 for name in ("test bags", "test digits"))


def test_the_votes_count_each_patchs_class_where_the_mean_follows_the_strongest(monkeypatch):
    """Three of five patches lean to class 2, two point firmly at class 0: the mean reads 0, the votes 2."""
    from attention_sampling import training
    from attention_sampling.models import AttentionSamplingModel

    model = AttentionSamplingModel(n_classes=3, scale=4, patch_size=8, n_patches=5, seed=0)
    leaning, firm = np.array([0.6, 0.0, 0.8]), np.array([1.0, 0.0, 0.0])
    monkeypatch.setattr(training, "patch_features",
                        lambda model, patches, training: np.broadcast_to(
                            np.stack([leaning] * 3 + [firm] * 2), (len(patches), 5, 3)).astype(np.float32))
    images = np.random.default_rng(1).random((2, 32, 32, 3), dtype=np.float32)
    hits = aggregate.accuracies(model, images, np.array([2, 2]), np.random.default_rng(2))
    assert hits["votes"].all() and not hits["mean"].any()
    np.testing.assert_allclose(hits["single"], 0.6)
