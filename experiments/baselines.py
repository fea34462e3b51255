"""Two baselines that show what the attention buys.

- uniform attention: the same model with the attention network replaced by a flat map, so patches are
  random crops;
- a downscaled CNN: the feature network run over the whole image, average-pooled to a size a CNN can
  afford, with no patches at all.
"""
import time

import numpy as np

import nn
from attention_sampling.application.data import load_batch
from attention_sampling.application.errors import AttentionSamplingError
from attention_sampling.models import FeatureNetwork


class UniformAttention:
    """(N, H, W, C) images -> (N, H // c, W // c) log attention of a flat map; nothing to learn."""

    def __init__(self, scale):
        self.scale = scale
        self.params, self.grads, self.buffers = {}, {}, {}

    def forward(self, images, training=True, mask=None):
        h, w = images.shape[1] // self.scale, images.shape[2] // self.scale
        return self.forward_view(np.zeros((images.shape[0], h, w, 1), dtype=images.dtype), training, mask)

    def infer(self, images, mask=None):
        return self.forward(images, training=False, mask=mask)

    def forward_view(self, view, training=True, mask=None):
        """(N, h, w, C) attention view, (N, h, w) bool mask or None -> (N, h, w): flat over the allowed cells,
        as forward (a batch that reads its own view)."""
        if mask is None:
            return np.full(view.shape[:3], -np.log(view.shape[1] * view.shape[2]), dtype=view.dtype)
        return nn.log_softmax(np.where(mask, 0, -np.inf).astype(view.dtype), axis=(1, 2))

    def infer_view(self, view, mask=None):
        return self.forward_view(view, training=False, mask=mask)

    def backward(self, grad_log_attention):
        """Nothing upstream learns."""

    def num_parameters(self):
        return 0

    def load_state_dict(self, state):
        self.check_state_dict(state)

    def check_state_dict(self, state):
        if state:
            raise ValueError(f"uniform attention has no state, got {sorted(state)[:3]}")
        return {}

    def astype(self, dtype):
        return self


class DownscaledCNN:
    """(N, H, W, 3) -> (N, C) logits: average-pool by `factor`, then the feature network's layers."""

    def __init__(self, n_classes, factor, seed=0):
        self.pool = nn.AvgPool2d(factor)
        self.network = FeatureNetwork(n_classes, rng=seed)

    def forward(self, images, training=True):
        return self.network.forward(self.pool.forward(images, training), training)


def train_downscaled(dataset, train_indices, test_indices, config, log=print, val_indices=()):
    """Train DownscaledCNN with the run's settings -> dict(test_accuracy, train_accuracy, seconds, best_epoch).

    With validation images, both held-out splits are scored after every epoch and the test accuracy is the
    one of the epoch of the highest validation accuracy (the first of ties), as train.py reports; without,
    the last epoch's."""
    if getattr(dataset, "lazy", False):
        raise AttentionSamplingError(f"{dataset.root}: the downscaled-CNN baseline decodes whole images; "
                                     "it does not take whole-slide images")
    rng = np.random.default_rng(config["seed"])
    model = DownscaledCNN(len(dataset.classes), config["downscale"], seed=config["seed"])
    optimizer = nn.Adam(config["lr"])
    loss_fn = nn.CrossEntropyLoss()
    shape = tuple(config["image_shape"])
    started = time.perf_counter()

    def accuracy(indices):
        hits = 0
        for start in range(0, len(indices), config["batch_size"]):
            batch = indices[start:start + config["batch_size"]]
            logits = model.forward(load_batch(dataset, batch, shape), training=False)
            hits += int(np.sum(logits.argmax(axis=1) == dataset.labels[batch]))
        return hits / max(1, len(indices))

    best = (-1.0, 0, None)  # (validation accuracy, epoch, test accuracy)
    for epoch in range(config["epochs"]):
        order = rng.permutation(train_indices)
        correct = 0
        for start in range(0, len(order), config["batch_size"]):
            batch = order[start:start + config["batch_size"]]
            logits = model.forward(load_batch(dataset, batch, shape), training=True)
            loss_fn.forward(logits, dataset.labels[batch])
            model.network.backward(loss_fn.backward())
            optimizer.step(model.network.params, model.network.grads)
            correct += int(np.sum(logits.argmax(axis=1) == dataset.labels[batch]))
        log(f"epoch {epoch + 1:3d}  train acc {correct / len(order):.3f}")
        if len(val_indices):
            val = accuracy(val_indices)
            if val > best[0]:
                best = (val, epoch + 1, accuracy(test_indices))
    seconds = time.perf_counter() - started
    if best[2] is None:
        best = (None, config["epochs"], accuracy(test_indices))
    return {"train_accuracy": accuracy(train_indices), "test_accuracy": best[2], "best_epoch": best[1], "seconds": seconds}
