"""Predictions over a data set and the numbers a person reads off them."""
import numpy as np

from .data import load_batch
from .tissue import dataset_mask
from ..objective import attention_entropy
from ..training import distinct_cells, on_mask, predict


def predict_dataset(model, dataset, indices, shape, batch_size=8, seed=0, keep=None, estimator=None,
                    replace=None, on_batch=None, tissue="none", on_tissue=None, uniform=None):
    """Predict every image in `indices` with a generator seeded by `seed` (reproducible test numbers).

    tissue "auto" samples each image on its tissue only (tissue.py); `on_tissue`, a list, then receives the
    share of each batch's patches on tissue and the batch's size. `uniform`, a list, receives each batch's
    uniform_entropy (the entropy the attention would have spread evenly over the cells it may choose).

    Returns probabilities (N, C); with `keep` a set of positions, also {position: Prediction of that image}.
    on_batch(start, prediction), if given, sees each batch's training.Prediction (positions start, start + 1, ...).
    """
    rng = np.random.default_rng(seed)
    probabilities = np.empty((len(indices), model.n_classes), dtype=np.float64)
    kept = {}
    for start in range(0, len(indices), batch_size):
        # Lazy: the view pooled and the patches cut from the decoded images, no full-size float32 batch.
        # (Reading the next batch in a thread meanwhile measured no faster: 37-39 against 37-41 ms per image.)
        batch = indices[start:start + batch_size]
        images = load_batch(dataset, batch, shape, scale=model.scale)
        try:
            mask = dataset_mask(tissue, images, model, dataset, batch)
            prediction = predict(model, images, rng, estimator=estimator, replace=replace, mask=mask)
            if mask is not None and on_tissue is not None:
                on_tissue.append((on_mask(prediction.cells, mask), len(batch)))
            if uniform is not None:
                uniform.append(uniform_entropy(prediction.attention, mask))
        finally:
            _close(images)
        count = prediction.probabilities.shape[0]
        probabilities[start:start + count] = prediction.probabilities
        if on_batch is not None:
            on_batch(start, prediction)
        for offset in range(count):
            if keep is not None and start + offset in keep:
                kept[start + offset] = {name: getattr(prediction, name)[offset] for name in
                                        ("probabilities", "attention", "cells", "weights", "patches")}
    return (probabilities, kept) if keep is not None else probabilities


def repeated_accuracy(model, dataset, indices, shape, batch_size, seeds, estimator=None, replace=None, tissue="none"):
    """The accuracy of scoring `indices` once per seed (each image from one look of P patches every time) -> list.

    The model is stochastic (which P patches it sees), and on a few dozen images one scoring moves by several
    points from seed to seed: the mean over seeds measures the model, one scoring also the draw's luck. Each
    look is classified alone, so this is the P-patch model's accuracy, not an ensemble's (prediction's looks).
    """
    labels = dataset.labels[indices]
    return [float(np.mean(predict_dataset(model, dataset, indices, shape, batch_size, seed=seed, estimator=estimator,
                                          replace=replace, tissue=tissue).argmax(axis=1) == labels)) for seed in seeds]


def _close(images):
    """Close a batch that holds open files (slides.SlideBatch); arrays and decoded images hold none."""
    close = getattr(images, "close", None)
    if close is not None:
        close()


def attention_summary(attention, cells):
    """(N, h, w) attention maps and (N, P, 2) cells of one look each -> how concentrated the attention is, per
    image: its entropy (nats; a uniform map has log(h w), uniform_entropy), its largest cell's weight, and the distinct cells
    among the look's P draws (1: every patch the same)."""
    flat = attention.reshape(len(attention), -1).astype(np.float64)
    with np.errstate(divide="ignore"):
        log_attention = np.log(flat)
    # 0 log 0 = 0: a cell of weight 0 adds nothing
    entropy = attention_entropy(np.where(flat > 0, log_attention, 0.0)[:, None, :])
    return {"entropy": entropy, "largest": flat.max(axis=1), "distinct_cells": distinct_cells(cells)}


def uniform_entropy(attention, mask=None):
    """(N, h, w) attention, (N, h, w) bool mask or None -> (N,) the entropy of a uniform attention over the
    cells each image may choose: log(h w), or log of its allowed (tissue) cells, the most its attention can
    reach there."""
    n = len(attention)
    cells = np.full(n, attention[0].size) if mask is None else mask.reshape(n, -1).sum(axis=1)
    return np.log(cells.astype(np.float64))


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
