"""Predictions over a data set and the numbers a person reads off them."""
import numpy as np

from .data import load_batch
from ..training import predict


def predict_dataset(model, dataset, indices, shape, batch_size=8, seed=0, keep=None, estimator="reinforce",
                    replace=True):
    """Predict every image in `indices` with a generator seeded by `seed` (reproducible test numbers).

    Returns probabilities (N, C); with `keep` a set of positions, also {position: Prediction of that image}.
    """
    rng = np.random.default_rng(seed)
    probabilities = np.empty((len(indices), model.n_classes), dtype=np.float64)
    kept = {}
    for start in range(0, len(indices), batch_size):
        batch_indices = indices[start:start + batch_size]
        # Lazy: the view pooled and the patches cut from the decoded images, no full-size float32 batch.
        images = load_batch(dataset, batch_indices, shape, scale=model.scale)
        prediction = predict(model, images, rng, estimator=estimator,
                             replace=replace)
        probabilities[start:start + len(batch_indices)] = prediction.probabilities
        for offset in range(len(batch_indices)):
            if keep is not None and start + offset in keep:
                kept[start + offset] = {name: getattr(prediction, name)[offset] for name in
                                        ("probabilities", "attention", "cells", "weights", "patches")}
    return (probabilities, kept) if keep is not None else probabilities


def cross_entropy(probabilities, labels):
    """Mean -log p[y], with p floored at 1e-12 so a confident mistake stays finite."""
    picked = probabilities[np.arange(len(labels)), labels]
    return float(-np.mean(np.log(np.maximum(picked, 1e-12))))


def confusion_matrix(labels, predictions, n_classes):
    """-> (C, C) counts, rows the true class, columns the predicted one."""
    matrix = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(matrix, (labels, predictions), 1)
    return matrix


def classification_report(labels, predictions, n_classes):
    """-> dict(accuracy, precision (C,), recall (C,), confusion (C, C)); 0 where a class is never predicted."""
    matrix = confusion_matrix(labels, predictions, n_classes)
    true_positives = np.diag(matrix).astype(np.float64)
    predicted = matrix.sum(axis=0)
    actual = matrix.sum(axis=1)
    precision = np.divide(true_positives, predicted, out=np.zeros(n_classes), where=predicted > 0)
    recall = np.divide(true_positives, actual, out=np.zeros(n_classes), where=actual > 0)
    accuracy = float(true_positives.sum() / max(1, matrix.sum()))
    return {"accuracy": accuracy, "precision": precision, "recall": recall, "confusion": matrix}
