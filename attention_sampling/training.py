"""One training step and inference for attention sampling, on a batch of full-resolution images."""
from dataclasses import dataclass

import numpy as np

import nn
from .objective import (attention_entropy, entropy_gradient, estimator_weights, expectation_backward,
                        expectation_baseline, expectation_logits, expected_logits, expected_logits_backward,
                        floored_attention, floored_attention_backward, look_reinforce_gradient, look_rewards,
                        patch_rewards, reinforce_gradient, scatter_to_cells, standardised_advantage)
from .images import is_lazy
from .models import ESTIMATORS, REWARDS
from .patches import extract_patches, outside_image
from .sampling import sample_cells


@dataclass
class Sampled:
    """What one look at a batch produced: attention, where it sampled, and what it saw there."""

    log_attention: np.ndarray  # (N, h, w) the attention network's output
    log_sampling: np.ndarray   # (N, h, w) the distribution sampled: log a, or log a_s with a floor
    cells: np.ndarray          # (N, K, 2) with K = replicas * P
    weights: np.ndarray        # (N, K) probability a_i (a_s,i with a floor) of each sampled cell
    patches: np.ndarray        # (N, K, S, S, C)


def _no_lap(name):
    """The default `lap`: train_step's phases go untimed."""


def look(model, images, rng, n_looks, training, replace=True, lap=_no_lap, mask=None):
    """(N, H, W, C) images, (N, h, w) bool mask or None -> Sampled with K = n_looks * P draws per image: the
    attention net once per image, then n_looks independent looks of P cells each (distinct within a look
    when replace=False). Cells the mask leaves out (glass on a slide) have probability zero: never drawn.

    `images` is an array, or a LazyImages batch that reads its own attention view and patches (images.py).
    With the model's floor eps > 0 the cells come from a_s = (1 - eps) a + eps / (h w) instead of a; the
    patches are cut with the model's border mode (patches.py)."""
    p = model.n_patches
    lazy = is_lazy(images)
    # Inference runs the fused evaluation path: same numbers, fewer passes, nothing cached for a backward.
    if lazy:
        view = images.view(model.scale)
        log_attention = model.attention.forward_view(view, True, mask) if training else \
            model.attention.infer_view(view, mask)
        del view  # the attention network keeps what its backward needs
    else:
        log_attention = model.attention.forward(images, True, mask) if training else \
            model.attention.infer(images, mask)
    lap("attention net forward")
    log_sampling = floored_attention(log_attention, model.floor)
    attention = np.exp(log_sampling)
    if not replace:
        # A peaked map underflows to zero in float32 outside its few heaviest cells (log a < -104), and P
        # distinct cells must still be drawable: the smallest normal float stands for those probabilities.
        # The sum does not move in float32, and the weights below are gathered from this same map. Masked
        # cells (log a = -inf) stay at zero.
        np.maximum(attention, np.finfo(attention.dtype).tiny, out=attention, where=log_sampling > -np.inf)
    n = images.shape[0]
    if replace:
        cells = sample_cells(attention, n_looks * p, rng)
    else:
        cells = sample_cells(np.repeat(attention, n_looks, axis=0), p, rng, replace=False)
        cells = cells.reshape(n, n_looks * p, 2)
    lap("sample cells")
    weights = attention[np.arange(n)[:, None], cells[..., 0], cells[..., 1]]
    lap("gather a_i")
    if lazy:
        patches = images.patches(cells, model.patch_size, model.scale, model.border)
    else:
        patches = extract_patches(images, cells, model.patch_size, model.scale, model.border)
    lap("extract patches")
    return Sampled(log_attention, log_sampling, cells, weights, patches)


def patch_features(model, patches, training, draws=None):
    """(M, P, S, S, C) patches -> (M, P, C) feature vectors f_i: the feature network on every patch at once
    (caching for a backward when training; the fused evaluation path otherwise). With `draws`, the
    DistinctDraws of these patches, it runs once per distinct patch and copies the result to its repeats."""
    m, p = patches.shape[:2]
    flat = patches.reshape((m * p,) + patches.shape[2:])
    merge = draws is not None and not draws.all_distinct
    if merge:
        flat = flat[draws.first]
    features = model.features.forward(flat, True) if training else model.features.infer(flat)
    if merge:
        features = features[draws.inverse]
    return features.reshape(m, p, -1)


class DistinctDraws:
    """Which of the draws of a look are the same patch: the same cell of the same image.

    Every replica (look) of an image sees the same image, so two draws of one cell cut the same pixels and
    the feature network gives them the same f_i; where the attention is concentrated, most of a batch's
    draws repeat a few cells. Running the network once per distinct patch is the same computation: the
    forward values are copied, and the backward, which is linear in dL/df at a fixed input, takes the sum of
    the repeats' dL/df once (J^T g_1 + J^T g_2 = J^T (g_1 + g_2)), for the same parameter gradients up to
    the order of float additions. This holds because the feature network sees each patch on its own (no
    batch statistics: a batch norm there would see a different batch).

    (N, K, 2) cells with N images of K draws each (all looks), map_shape (h, w) ->
        first (U,): one flat draw index per distinct (image, cell); inverse (N K,): each draw's distinct index
        (both the identity when no cell repeats: all_distinct, and nothing is gathered)
    """

    def __init__(self, cells, map_shape):
        n, k, _ = cells.shape
        h, w = map_shape
        codes = (np.arange(n, dtype=np.int64)[:, None] * h + cells[..., 0]) * w + cells[..., 1]
        _, self.first, self.inverse = np.unique(codes.ravel(), return_index=True, return_inverse=True)
        self.all_distinct = len(self.first) == n * k
        if self.all_distinct:
            self.first = self.inverse = np.arange(n * k)

    def __len__(self):
        return len(self.first)

    def gradient(self, grad_features):
        """(..., C) dL/df of every draw -> (U, C) dL/df of each distinct patch: the sum over its repeats."""
        grad_features = grad_features.reshape(-1, grad_features.shape[-1])
        if self.all_distinct:
            return grad_features
        summed = np.zeros((len(self.first), grad_features.shape[-1]), dtype=grad_features.dtype)
        np.add.at(summed, self.inverse, grad_features)
        return summed


def classification_weights(model, attention_values, draw_weights):
    """(M, P) a_i of the drawn cells, (M, P) estimator weights -> (M, P) weights w of REINFORCE's classifier
    softmax(T sum_i w_i f_i / sum_i w_i).

    model.aggregate "attention" is eq. 1, w = a_i: with replacement a cell drawn k times counts k a_i, so
    a heavy cell's share grows as a_i^2 and a peaked attention classifies by its one heaviest patch.
    "mean" uses the estimator weights (1 / P with replacement): the Monte-Carlo mean of the sampled
    features, an estimate of E_a[f] in which a cell counts as often as it is drawn, not more.
    """
    return attention_values if model.aggregate == "attention" else draw_weights


def classify_patches(model, patches, weights, training):
    """(M, P, S, S, C) patches, (M, P) weights -> features (M, P, C) and logits (M, C) of eq. 1."""
    features = patch_features(model, patches, training)
    return features, expected_logits(features, weights, model.temperature)


def look_statistics(cells, n_looks, patch_size, scale, image_shape):
    """(N, K, 2) cells of n_looks looks of P per image -> (mean number of distinct cells per look of P,
    share of draws whose patch reaches past the image border): how spread, and how border-bound, the
    sampling is. A collapsed attention gives 1 distinct cell per look."""
    n, k, _ = cells.shape
    distinct = distinct_cells(cells.reshape(n * n_looks, k // n_looks, 2))
    outside = outside_image(cells, patch_size, scale, image_shape)
    return float(distinct.mean()), float(outside.mean())


def on_mask(cells, mask):
    """(N, K, 2) cells, (N, h, w) bool mask or None -> the share of the draws on cells the mask allows."""
    if mask is None:
        return 1.0
    return float(np.asarray(mask)[np.arange(len(cells))[:, None], cells[..., 0], cells[..., 1]].mean())


def distinct_cells(looks):
    """(M, P, 2) cells of M looks -> (M,) the number of distinct cells in each (1: P copies of one patch)."""
    codes = np.sort(looks[..., 0] * (looks[..., 1].max(initial=0) + 1) + looks[..., 1], axis=1)
    return 1 + np.count_nonzero(np.diff(codes, axis=1), axis=1)


def train_step(model, optimizer, images, labels, rng, replicas=4, entropy_weight=0.01,
               estimator=None, replace=None, lap=_no_lap, mask=None, reward="patch"):
    """One update of both networks on (N, H, W, C) images with (N,) integer labels -> dict of metrics.

    Each image is looked at `replicas` times with fresh samples (P each); the attention network runs
    once per image. estimator="reinforce" (the paper): eq. 1 with weights a_i / sum a (or the features'
    mean, model.aggregate: classification_weights), REINFORCE for the
    attention with a per-image baseline over all replicas' patches (reward="patch": each patch's reward
    softmax(T f_i)[y]; reward="look": each look's, its probability of the true class, the baseline then
    over the image's looks, objective.look_reinforce_gradient). estimator="expectation": the
    unbiased estimate of E_a[f] differentiated directly (objective.expectation_backward).

    The model's own settings shape the step: its temperature T (the classifier is softmax(T x eq. 1), the
    rewards softmax(T f_i)[y]), its border mode (what a patch sees past the image edge) and its floor eps
    (cells drawn from a_s = (1 - eps) a + eps / (h w); the estimators score a_s, and their gradient
    reaches a through the mixing, objective.floored_attention_backward).
    Metrics: loss, accuracy, reward, entropy (of a), distinct_cells (mean distinct cells per look of P),
    outside (share of draws whose patch reaches past the border, patches.outside_image).

    estimator and replace default to the model's own (model.estimator, model.replace: the settings it was
    built with). mask (N, h, w) bool, or None: the cells the attention may choose (look); the estimators are
    then unbiased for the distribution over those cells alone, and the metric `on_mask` (given with a mask
    only) is the share of draws on them.

    `lap(name)` is called after each phase ("attention net forward", ..., "optimizer"), so that a
    benchmark can time this very function piece by piece (benchmarks/bench_step.py).
    """
    estimator = model.estimator if estimator is None else estimator
    replace = model.replace if replace is None else replace
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}")
    if reward not in REWARDS:
        raise ValueError(f"reward must be one of {REWARDS}, got {reward!r}")
    n = images.shape[0]
    p = model.n_patches
    labels = np.asarray(labels, dtype=np.int64)
    sampled = look(model, images, rng, replicas, training=True, replace=replace, lap=lap, mask=mask)
    map_shape = sampled.log_attention.shape[1:]

    replica_labels = np.repeat(labels, replicas)
    attention_values = sampled.weights.reshape(n * replicas, p)
    patches = sampled.patches.reshape((n * replicas, p) + sampled.patches.shape[2:])
    draw_weights = estimator_weights(attention_values, replace)

    # The feature network on every distinct patch of every (image, replica), then the classification: eq. 1
    # (or the mean, model.aggregate) for REINFORCE, the unbiased estimate of E_a[f] for the expectation estimator.
    draws = DistinctDraws(sampled.cells, map_shape)
    features = patch_features(model, patches, training=True, draws=draws)
    lap("feature net forward")
    loss_fn = nn.CrossEntropyLoss()
    temperature = model.temperature
    class_weights = classification_weights(model, attention_values, draw_weights)
    logits = expected_logits(features, class_weights, temperature) if estimator == "reinforce" else \
        expectation_logits(features, draw_weights, temperature)
    loss = loss_fn.forward(logits, replica_labels)
    lap("eq.1 + cross-entropy")
    if reward == "look":
        rewards = look_rewards(logits, replica_labels).reshape(n, replicas)
    else:
        rewards = patch_rewards(features, replica_labels, temperature).reshape(n, replicas * p)

    if estimator == "reinforce":
        # Feature network by backprop (the weights a_i are constants for it); attention by REINFORCE
        # with a per-image baseline.
        grad_features = expected_logits_backward(loss_fn.backward(), class_weights, temperature)
        advantage = standardised_advantage(rewards)
        lap("rewards + advantage")
        # The attention loss is the surrogate's mean over the n images.
        if reward == "look":
            grad_log_attention = look_reinforce_gradient(advantage, sampled.cells, attention_values, map_shape,
                                                         replace) / n
        else:
            grad_log_attention = reinforce_gradient(advantage, sampled.cells, map_shape,
                                                    None if replace else (p * draw_weights).reshape(n, -1)) / n
        lap("REINFORCE gradient")
    else:
        # Each look's baseline is the image's other looks' estimate of E_a[f] (objective.expectation_baseline).
        baseline = expectation_baseline(features, draw_weights, replicas)
        grad_features, grad_per_draw = expectation_backward(loss_fn.backward(), features, draw_weights,
                                                            temperature, baseline)
        # The cross-entropy is already a mean over the n * replicas looks: its gradient needs no scaling.
        grad_log_attention = scatter_to_cells(grad_per_draw.reshape(n, -1), sampled.cells, map_shape)
        lap("expectation gradient")

    # Both estimators differentiate the distribution sampled; the floor's mixing carries that to log a.
    grad_log_attention = floored_attention_backward(grad_log_attention, sampled.log_attention,
                                                    sampled.log_sampling, model.floor)
    entropy = attention_entropy(sampled.log_attention)
    # Minimise -lambda H(a): spreading the attention is rewarded, so it does not collapse early.
    grad_log_attention -= entropy_weight * entropy_gradient(sampled.log_attention) / n
    lap("entropy gradient")
    # The two backward passes are independent; the attention network's goes first so that its activations
    # (image-sized at small c), freed as it goes, are gone before the feature network's gradients exist.
    model.attention.backward(grad_log_attention.astype(sampled.log_attention.dtype))
    lap("attention net backward")
    model.features.backward(draws.gradient(grad_features))
    lap("feature backward")

    optimizer.step(model.params, model.grads)
    lap("optimizer")

    predictions = logits.argmax(axis=1)
    distinct_cells, outside = look_statistics(sampled.cells, replicas, model.patch_size, model.scale,
                                              images.shape[1:3])
    metrics = {
        "loss": loss,
        "accuracy": float(np.mean(predictions == replica_labels)),
        "reward": float(rewards.mean()),
        "entropy": float(entropy.mean()),
        "distinct_cells": distinct_cells,
        "outside": outside,
    }
    if mask is not None:
        metrics["on_mask"] = on_mask(sampled.cells, mask)
    return metrics


@dataclass
class Prediction:
    """Class probabilities and the explanation: where the model looked and with what weight."""

    probabilities: np.ndarray       # (N, C), the mean over the looks
    attention: np.ndarray           # (N, h, w), sums to 1 per image
    patches: np.ndarray             # (N, P, S, S, C) of the first look
    look_probabilities: np.ndarray  # (N, K, C), each look's own
    look_cells: np.ndarray          # (N, K, P, 2) every look's cells
    look_weights: np.ndarray        # (N, K, P)

    @property
    def cells(self):
        """(N, P, 2) the first look's cells, those of the explanation."""
        return self.look_cells[:, 0]

    @property
    def weights(self):
        """(N, P) the first look's weights."""
        return self.look_weights[:, 0]


def predict(model, images, rng, n_patches=None, estimator=None, replace=None, looks=1, mask=None):
    """(N, H, W, C) images -> Prediction, with batch-norm running statistics (evaluation mode).

    The classification follows the estimator the model was trained with: eq. 1 (weights a_i / sum a, or the
    mean with model.aggregate "mean") for REINFORCE, the unbiased expectation weights for the expectation
    estimator; the model's temperature,
    border and floor as in train_step. Prediction.attention is the network's a; with a floor the cells are
    drawn from a_s, and Prediction.weights are a_s there.

    estimator and replace default to the model's own (model.estimator, model.replace), those it was trained with.

    looks = K > 1 averages the class probabilities of K independent looks of P patches each (the
    attention network still runs once per image): a steadier prediction at K times the feature network's
    cost. The explanation (cells, weights, patches) is the first look's; look_cells and look_weights hold
    every look's, for outputs that show each look (the patches are not kept: K times the memory).

    mask (N, h, w) bool, or None: the cells the attention may choose (look); the others get attention 0.
    """
    estimator = model.estimator if estimator is None else estimator
    replace = model.replace if replace is None else replace
    if n_patches is not None and n_patches != model.n_patches:
        model = _with_patches(model, n_patches)
    n, p = images.shape[0], model.n_patches
    sampled = look(model, images, rng, looks, training=False, replace=replace, mask=mask)
    patches = sampled.patches.reshape((n * looks, p) + sampled.patches.shape[2:])
    weights = sampled.weights.reshape(n * looks, p)
    features = patch_features(model, patches, training=False,
                              draws=DistinctDraws(sampled.cells, sampled.log_attention.shape[1:]))
    per_look = nn.softmax(look_logits(model, features, weights, estimator, replace), axis=-1).reshape(n, looks, -1)
    return Prediction(per_look.mean(axis=1), np.exp(sampled.log_attention), sampled.patches[:, :p], per_look,
                      sampled.cells.reshape(n, looks, p, 2), sampled.weights.reshape(n, looks, p))


def look_logits(model, features, weights, estimator, replace):
    """(M, P, C) features of M looks, (M, P) a_i of their drawn cells -> (M, C) logits, as `estimator` classifies
    a look drawn with or without replacement: the unbiased expectation weights, or REINFORCE's classifier
    (classification_weights)."""
    draw_weights = estimator_weights(weights, replace)
    if estimator == "expectation":
        return expectation_logits(features, draw_weights, model.temperature)
    return expected_logits(features, classification_weights(model, weights, draw_weights), model.temperature)


def _with_patches(model, n_patches):
    """A shallow copy of the model that samples a different number of patches (same networks)."""
    copy = object.__new__(type(model))
    copy.__dict__.update(model.__dict__)
    copy.config = {**model.config, "n_patches": int(n_patches)}
    return copy
