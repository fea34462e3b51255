"""One training step and inference for attention sampling, on a batch of full-resolution images."""
from dataclasses import dataclass

import numpy as np

import nn
from .objective import (attention_entropy, entropy_gradient, expected_logits, expected_logits_backward,
                        patch_rewards, reinforce_gradient, standardised_advantage)
from .patches import extract_patches
from .sampling import sample_cells


@dataclass
class Sampled:
    """What one look at a batch produced: attention, where it sampled, and what it saw there."""

    log_attention: np.ndarray  # (N, h, w)
    cells: np.ndarray          # (N, K, 2) with K = replicas * P
    weights: np.ndarray        # (N, K) attention a_i of each sampled cell
    patches: np.ndarray        # (N, K, S, S, C)


def look(model, images, rng, n_samples, training):
    """(N, H, W, C) images -> Sampled: the attention net once per image, then K cells and their patches."""
    log_attention = model.attention.forward(images, training)
    attention = np.exp(log_attention)
    cells = sample_cells(attention, n_samples, rng)
    n = images.shape[0]
    weights = attention[np.arange(n)[:, None], cells[..., 0], cells[..., 1]]
    patches = extract_patches(images, cells, model.patch_size, model.scale)
    return Sampled(log_attention, cells, weights, patches)


def classify_patches(model, patches, weights, training):
    """(M, P, S, S, C) patches, (M, P) weights -> features (M, P, C) and logits (M, C) of eq. 1."""
    m, p = weights.shape
    features = model.features.forward(patches.reshape((m * p,) + patches.shape[2:]), training)
    features = features.reshape(m, p, -1)
    return features, expected_logits(features, weights)


def feature_loss_backward(model, features, weights, labels, loss_fn):
    """Backpropagate the cross-entropy of eq. 1 into the feature network (fills its grads)."""
    m, p, c = features.shape
    grad_features = expected_logits_backward(loss_fn.backward(), weights)
    model.features.backward(grad_features.reshape(m * p, c))


def train_step(model, optimizer, images, labels, rng, replicas=4, entropy_weight=0.01):
    """One update of both networks on (N, H, W, C) images with (N,) integer labels -> dict of metrics.

    Each image is looked at `replicas` times with fresh samples (P each); the attention network runs
    once per image, and its REINFORCE baseline is taken over all replicas' patches of that image.
    """
    n = images.shape[0]
    p = model.n_patches
    labels = np.asarray(labels, dtype=np.int64)
    sampled = look(model, images, rng, replicas * p, training=True)

    # Feature network: cross-entropy of eq. 1 per (image, replica), by backprop.
    replica_labels = np.repeat(labels, replicas)
    weights = sampled.weights.reshape(n * replicas, p)
    patches = sampled.patches.reshape((n * replicas, p) + sampled.patches.shape[2:])
    features, logits = classify_patches(model, patches, weights, training=True)
    loss_fn = nn.CrossEntropyLoss()
    loss = loss_fn.forward(logits, replica_labels)
    feature_loss_backward(model, features, weights, replica_labels, loss_fn)

    # Attention network: REINFORCE with a per-image baseline, plus the entropy bonus.
    rewards = patch_rewards(features, replica_labels).reshape(n, replicas * p)
    advantage = standardised_advantage(rewards)
    map_shape = sampled.log_attention.shape[1:]
    grad_log_attention = reinforce_gradient(advantage, sampled.cells, map_shape)
    entropy = attention_entropy(sampled.log_attention)
    # Minimise -lambda H(a): spreading the attention is rewarded, so it does not collapse early.
    grad_log_attention -= entropy_weight * entropy_gradient(sampled.log_attention)
    model.attention.backward((grad_log_attention / n).astype(sampled.log_attention.dtype))

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


def predict(model, images, rng, n_patches=None):
    """(N, H, W, C) images -> Prediction, with batch-norm running statistics (evaluation mode)."""
    p = n_patches or model.n_patches
    sampled = look(model, images, rng, p, training=False)
    _, logits = classify_patches(model, sampled.patches, sampled.weights, training=False)
    return Prediction(nn.softmax(logits, axis=-1), np.exp(sampled.log_attention), sampled.cells,
                      sampled.weights, sampled.patches)
