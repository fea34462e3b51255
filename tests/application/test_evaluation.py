"""The numbers a person reads off predictions, checked against hand counts; and seeded prediction."""
import math

import numpy as np
import pytest

from attention_sampling.application.evaluation import (attention_summary, classification_report, confusion_matrix,
                                                       cross_entropy, predict_dataset, uniform_entropy)
from attention_sampling.models import AttentionSamplingModel

# Ten images of three classes. Counting by hand, (true, predicted):
#   class 0: (0,0) (0,0) (0,1) (0,2)      -> 4 images, 2 right
#   class 1: (1,1) (1,1) (1,1)            -> 3 images, 3 right
#   class 2: (2,0) (2,1) (2,2)            -> 3 images, 1 right
LABELS = np.array([0, 0, 0, 0, 1, 1, 1, 2, 2, 2])
PREDICTIONS = np.array([0, 0, 1, 2, 1, 1, 1, 0, 1, 2])


def test_confusion_matrix_counts_true_rows_and_predicted_columns():
    expected = np.array([[2, 1, 1],
                         [0, 3, 0],
                         [1, 1, 1]])
    np.testing.assert_array_equal(confusion_matrix(LABELS, PREDICTIONS, 3), expected)


def test_classification_report_matches_a_hand_count():
    report = classification_report(LABELS, PREDICTIONS, 3)
    # 2 + 3 + 1 right out of 10.
    assert report["accuracy"] == pytest.approx(6 / 10)
    # Precision: right / predicted as the class; column sums are 3, 5, 2.
    np.testing.assert_allclose(report["precision"], [2 / 3, 3 / 5, 1 / 2])
    # Recall: right / images of the class; row sums are 4, 3, 3.
    np.testing.assert_allclose(report["recall"], [2 / 4, 3 / 3, 1 / 3])
    assert report["confusion"].sum() == 10


def test_classification_report_is_zero_for_a_class_never_predicted_or_absent():
    # (true, predicted) = (0,0) (0,1) (2,0): class 2 is never predicted (precision 0, not NaN),
    # class 1 never occurs (recall 0, not NaN).
    report = classification_report(np.array([0, 0, 2]), np.array([0, 1, 0]), 3)
    np.testing.assert_allclose(report["precision"], [1 / 2, 0, 0])
    np.testing.assert_allclose(report["recall"], [1 / 2, 0, 0])
    assert report["accuracy"] == pytest.approx(1 / 3)


def test_cross_entropy_is_the_mean_negative_log_probability_of_the_label():
    probabilities = np.array([[0.5, 0.5, 0.0],
                              [0.1, 0.2, 0.7],
                              [0.25, 0.25, 0.5]])
    labels = np.array([0, 2, 1])
    expected = -(math.log(0.5) + math.log(0.7) + math.log(0.25)) / 3
    assert cross_entropy(probabilities, labels) == pytest.approx(expected)


def test_cross_entropy_of_a_confident_mistake_stays_finite():
    assert cross_entropy(np.array([[1.0, 0.0]]), np.array([1])) == pytest.approx(-math.log(1e-12))
    assert cross_entropy(np.array([[0.0, 1.0]]), np.array([1])) == 0.0


class InMemoryImages:
    """The two things predict_dataset asks of a data set: read(index) and labels."""

    def __init__(self, images, labels):
        self.images, self.labels = images, labels

    def read(self, index):
        return self.images[index]


@pytest.fixture(scope="module")
def tiny_model_and_images():
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, (5, 24, 32, 3), dtype=np.uint8)
    model = AttentionSamplingModel(3, scale=4, patch_size=8, n_patches=3, seed=1)
    return model, InMemoryImages(images, np.array([0, 1, 2, 0, 1]))


def test_predict_dataset_is_reproducible_from_its_seed(tiny_model_and_images):
    model, dataset = tiny_model_and_images
    indices = np.array([4, 0, 2, 3])
    first = predict_dataset(model, dataset, indices, (24, 32), batch_size=3, seed=7)
    again = predict_dataset(model, dataset, indices, (24, 32), batch_size=3, seed=7)
    assert first.shape == (4, 3)
    np.testing.assert_array_equal(first, again)
    np.testing.assert_allclose(first.sum(axis=1), 1, rtol=1e-6)


def test_predict_dataset_keeps_the_explanation_of_chosen_positions(tiny_model_and_images):
    model, dataset = tiny_model_and_images
    indices = np.array([4, 0, 2, 3])
    plain = predict_dataset(model, dataset, indices, (24, 32), batch_size=3, seed=7)
    probabilities, kept = predict_dataset(model, dataset, indices, (24, 32), batch_size=3, seed=7, keep={1, 3})
    # Keeping explanations changes no number; positions straddle the two batches.
    np.testing.assert_array_equal(probabilities, plain)
    assert set(kept) == {1, 3}
    for position, explanation in kept.items():
        np.testing.assert_array_equal(explanation["probabilities"], probabilities[position])
        assert explanation["attention"].shape == (6, 8)
        np.testing.assert_allclose(explanation["attention"].sum(), 1, rtol=1e-5)
        assert explanation["cells"].shape == (3, 2)
        assert explanation["weights"].shape == (3,)
        assert explanation["patches"].shape == (3, 8, 8, 3)
        cells = explanation["cells"]
        np.testing.assert_allclose(explanation["weights"], explanation["attention"][cells[:, 0], cells[:, 1]])


def test_attention_summary_tells_a_collapsed_attention_from_a_spread_one():
    """One image whose attention is one cell, every draw that cell; one uniform over 4 x 5 cells whose look
    hit 3 distinct cells out of 4 draws."""
    attention = np.zeros((2, 4, 5))
    attention[0, 2, 3] = 1
    attention[1] = 1 / 20
    cells = np.array([[[2, 3]] * 4, [[0, 0], [3, 4], [0, 0], [1, 4]]])
    summary = attention_summary(attention, cells)
    np.testing.assert_allclose(summary["entropy"], [0, math.log(20)])
    np.testing.assert_allclose(summary["largest"], [1, 1 / 20])
    np.testing.assert_array_equal(summary["distinct_cells"], [1, 3])


def test_uniform_entropy_is_that_of_the_cells_the_attention_may_choose():
    attention = np.full((2, 4, 5), 1 / 20)
    np.testing.assert_allclose(uniform_entropy(attention), [math.log(20)] * 2)
    mask = np.zeros((2, 4, 5), bool)
    mask[0, :2, :3], mask[1, 3, 4] = True, True
    np.testing.assert_allclose(uniform_entropy(attention, mask), [math.log(6), 0])


def test_under_tissue_auto_the_uniform_entropy_is_per_image_over_its_tissue():
    """Each image's tissue (tests/application/test_tissue.py's images) bounds its attention's entropy; without
    a mask the bound is log(h w) for every image."""
    from attention_sampling.application.tissue import tissue_cells
    from tests.application.test_tissue import pooled, tissue_image

    images = np.stack([tissue_image(seed)[0] for seed in range(3)])
    dataset = InMemoryImages(images, np.array([0, 1, 2]))
    dataset.paths = [f"image{seed}.png" for seed in range(3)]
    model = AttentionSamplingModel(3, scale=8, patch_size=8, n_patches=3, seed=1)
    entropies = {}
    for tissue in ("auto", "none"):
        uniform, summaries = [], []

        def summarise(start, prediction):
            summaries.append(attention_summary(prediction.attention, prediction.cells))

        predict_dataset(model, dataset, np.arange(3), (192, 256), batch_size=2, seed=0, tissue=tissue,
                        uniform=uniform, on_batch=summarise)
        entropies[tissue] = np.concatenate([summary["entropy"] for summary in summaries])
        uniform = np.concatenate(uniform)
        expected = [np.log(tissue_cells(pooled(image)).sum()) for image in images] if tissue == "auto" else \
            [np.log(24 * 32)] * 3
        np.testing.assert_allclose(uniform, expected, rtol=1e-12)
        assert np.all(entropies[tissue] <= uniform + 1e-6)
    assert np.all(entropies["auto"] < np.log(24 * 32) - 0.5)  # the image-wide bound would hide the spread
