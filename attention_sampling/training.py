"""One training step and inference for attention sampling, on a batch of full-resolution images."""
from dataclasses import dataclass

import numpy as np

import nn
from .objective import (attention_entropy, entropy_gradient, estimator_weights, expectation_backward,
                        expectation_logits, expected_logits, expected_logits_backward, patch_rewards,
                        reinforce_gradient, scatter_to_cells, standardised_advantage)
from .patches import extract_patches
from .sampling import sample_cells


@dataclass
class Sampled:
    """What one look at a batch produced: attention, where it sampled, and what it saw there."""

    log_attention: np.ndarray  # (N, h, w)
    cells: np.ndarray          # (N, K, 2) with K = replicas * P
    weights: np.ndarray        # (N, K) attention a_i of each sampled cell
    patches: np.ndarray        # (N, K, S, S, C)


def look(model, images, rng, n_looks, training, replace=True):
    """(N, H, W, C) images -> Sampled with K = n_looks * P draws per image: the attention net once per
    image, then n_looks independent looks of P cells each (distinct within a look when replace=False)."""
    p = model.n_patches
    # Inference runs the fused evaluation path: same numbers, fewer passes, nothing cached for a backward.
    log_attention = model.attention.forward(images, True) if training else model.attention.infer(images)
    attention = np.exp(log_attention)
    n = images.shape[0]
    if replace:
        cells = sample_cells(attention, n_looks * p, rng)
    else:
        cells = sample_cells(np.repeat(attention, n_looks, axis=0), p, rng, replace=False)
        cells = cells.reshape(n, n_looks * p, 2)
    weights = attention[np.arange(n)[:, None], cells[..., 0], cells[..., 1]]
    patches = extract_patches(images, cells, model.patch_size, model.scale)
    return Sampled(log_attention, cells, weights, patches)


def classify_patches(model, patches, weights, training):
    """(M, P, S, S, C) patches, (M, P) weights -> features (M, P, C) and logits (M, C) of eq. 1."""
    m, p = weights.shape
    flat = patches.reshape((m * p,) + patches.shape[2:])
    features = model.features.forward(flat, True) if training else model.features.infer(flat)
    features = features.reshape(m, p, -1)
    return features, expected_logits(features, weights)


def feature_loss_backward(model, features, weights, labels, loss_fn):
    """Backpropagate the cross-entropy of eq. 1 into the feature network (fills its grads)."""
    m, p, c = features.shape
    grad_features = expected_logits_backward(loss_fn.backward(), weights)
    model.features.backward(grad_features.reshape(m * p, c))


def train_step(model, optimizer, images, labels, rng, replicas=4, entropy_weight=0.01,
               estimator="reinforce", replace=True):
    """One update of both networks on (N, H, W, C) images with (N,) integer labels -> dict of metrics.

    Each image is looked at `replicas` times with fresh samples (P each); the attention network runs
    once per image. estimator="reinforce" (the paper): eq. 1 with weights a_i / sum a, REINFORCE for the
    attention with a per-image baseline over all replicas' patches. estimator="expectation": the
    unbiased estimate of E_a[f] differentiated directly (objective.expectation_backward).
    """
    if estimator not in ("reinforce", "expectation"):
        raise ValueError(f"estimator must be 'reinforce' or 'expectation', got {estimator!r}")
    n = images.shape[0]
    p = model.n_patches
    labels = np.asarray(labels, dtype=np.int64)
    sampled = look(model, images, rng, replicas, training=True, replace=replace)
    map_shape = sampled.log_attention.shape[1:]

    replica_labels = np.repeat(labels, replicas)
    attention_values = sampled.weights.reshape(n * replicas, p)
    patches = sampled.patches.reshape((n * replicas, p) + sampled.patches.shape[2:])
    draw_weights = estimator_weights(attention_values, replace)
    loss_fn = nn.CrossEntropyLoss()

    if estimator == "reinforce":
        # Feature network: cross-entropy of eq. 1 per (image, replica), by backprop.
        features, logits = classify_patches(model, patches, attention_values, training=True)
        loss = loss_fn.forward(logits, replica_labels)
        grad_features = expected_logits_backward(loss_fn.backward(), attention_values)
        # Attention network: REINFORCE with a per-image baseline.
        rewards = patch_rewards(features, replica_labels).reshape(n, replicas * p)
        advantage = standardised_advantage(rewards)
        # The attention loss is the surrogate's mean over the n images.
        grad_log_attention = reinforce_gradient(advantage, sampled.cells, map_shape,
                                                None if replace else (p * draw_weights).reshape(n, -1)) / n
    else:
        m = n * replicas
        features = model.features.forward(patches.reshape((m * p,) + patches.shape[2:]), True).reshape(m, p, -1)
        logits = expectation_logits(features, draw_weights)
        loss = loss_fn.forward(logits, replica_labels)
        grad_features, grad_per_draw = expectation_backward(loss_fn.backward(), features, draw_weights)
        rewards = patch_rewards(features, replica_labels).reshape(n, replicas * p)
        # The cross-entropy is already a mean over the n * replicas looks: its gradient needs no scaling.
        grad_log_attention = scatter_to_cells(grad_per_draw.reshape(n, -1), sampled.cells, map_shape)

    entropy = attention_entropy(sampled.log_attention)
    # Minimise -lambda H(a): spreading the attention is rewarded, so it does not collapse early.
    grad_log_attention -= entropy_weight * entropy_gradient(sampled.log_attention) / n
    # The two backward passes are independent; the attention network's goes first so that its activations
    # (image-sized at small c), freed as it goes, are gone before the feature network's gradients exist.
    model.attention.backward(grad_log_attention.astype(sampled.log_attention.dtype))
    model.features.backward(grad_features.reshape(-1, grad_features.shape[-1]))

    optimizer.step(model.params, model.grads)

    predictions = logits.argmax(axis=1)
    return {
        "loss": loss,
        "accuracy": float(np.mean(predictions == replica_labels)),
        "reward": float(rewards.mean()),
        "entropy": float(entropy.mean()),
    }


@dataclass
class Prediction:
    """Class probabilities and the explanation: where the model looked and with what weight."""

    probabilities: np.ndarray  # (N, C)
    attention: np.ndarray      # (N, h, w), sums to 1 per image
    cells: np.ndarray          # (N, P, 2)
    weights: np.ndarray        # (N, P)
    patches: np.ndarray        # (N, P, S, S, C)


def predict(model, images, rng, n_patches=None, estimator="reinforce", replace=True):
    """(N, H, W, C) images -> Prediction, with batch-norm running statistics (evaluation mode).

    The classification follows the estimator the model was trained with: eq. 1 (weights a_i / sum a)
    for REINFORCE, the unbiased expectation weights for the expectation estimator.
    """
    if n_patches is not None and n_patches != model.n_patches:
        model = _with_patches(model, n_patches)
    sampled = look(model, images, rng, 1, training=False, replace=replace)
    if estimator == "expectation":
        weights = estimator_weights(sampled.weights, replace)
        m, p = weights.shape
        features = model.features.infer(sampled.patches.reshape((m * p,) + sampled.patches.shape[2:]))
        logits = expectation_logits(features.reshape(m, p, -1), weights)
    else:
        _, logits = classify_patches(model, sampled.patches, sampled.weights, training=False)
    return Prediction(nn.softmax(logits, axis=-1), np.exp(sampled.log_attention), sampled.cells,
                      sampled.weights, sampled.patches)


def _with_patches(model, n_patches):
    """A shallow copy of the model that samples a different number of patches (same networks)."""
    copy = object.__new__(type(model))
    copy.__dict__.update(model.__dict__)
    copy.config = {**model.config, "n_patches": int(n_patches)}
    return copy
