"""Attention sampling (Katharopoulos & Fleuret, 2019) built on the nn/ layer library: the method alone.

    models      AttentionNetwork a(x), FeatureNetwork f, and AttentionSamplingModel holding both
    sampling    sample_cells: P cells drawn from the attention distribution (Numba)
    images      LazyImages: a batch that reads its own attention view and patches (a slide, not an array)
    patches     extract_patches: S x S full-resolution patches around those cells (Numba)
    objective   eq. 1, the rewards, REINFORCE, the entropy bonus, the expectation estimator
    training    train_step (one update of both networks) and predict

The application that runs it (image folders, the trainer and its run folder, evaluation, figures,
experiments) is in attention_sampling.application; nothing here reads a file or parses a flag.
"""
import nn.numba_cache  # noqa: F401  (the samplers' kernels are cached the safe way too)

from .images import LazyImages, is_lazy
from .models import AttentionNetwork, AttentionSamplingModel, FeatureNetwork
from .objective import (attention_entropy, entropy_gradient, estimator_weights, expectation_backward,
                        expectation_baseline, expectation_logits, expected_logits, expected_logits_backward,
                        patch_rewards, reinforce_gradient, standardised_advantage)
from .patches import extract_patches, patch_boxes
from .sampling import sample_cells
from .training import Prediction, Sampled, classify_patches, look, patch_features, predict, train_step

__all__ = [
    "AttentionNetwork", "AttentionSamplingModel", "FeatureNetwork", "LazyImages", "is_lazy",
    "sample_cells", "extract_patches", "patch_boxes",
    "expected_logits", "expected_logits_backward", "patch_rewards", "standardised_advantage",
    "reinforce_gradient", "attention_entropy", "entropy_gradient",
    "estimator_weights", "expectation_logits", "expectation_backward", "expectation_baseline",
    "look", "patch_features", "classify_patches", "train_step", "predict", "Sampled", "Prediction",
]
