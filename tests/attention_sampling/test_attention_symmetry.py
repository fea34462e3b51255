"""The attention network with mirror-symmetric kernels (symmetry "flips"): it commutes with flips of the view,
its gradient is the loss's along symmetric kernels, and training keeps the kernels symmetric."""
import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import nn
from attention_sampling import AttentionSamplingModel, train_step
from attention_sampling.models import AttentionNetwork, mirror_symmetric

from ..gradcheck import clear_of_kinks
from ..strategies import seeds


def symmetric_network(seed, padding="reflect"):
    return AttentionNetwork(1, rng=np.random.default_rng(seed), dtype=np.float64, padding=padding, symmetry="flips")


def views(seed, n, height, width):
    return np.random.default_rng(seed + 1).random((n, height, width, 3))


def kernels(network):
    return [layer.params["weight"] for layer in network.layers
            if isinstance(layer, nn.Conv2d) and layer.kernel_size == (3, 3)]


@settings(max_examples=30, deadline=None)
@given(seeds, st.integers(1, 3), st.integers(1, 13), st.integers(1, 13), st.sampled_from(["reflect", "edge"]),
       st.sampled_from([(1,), (2,), (1, 2)]), st.booleans())
def test_the_attention_of_a_flipped_view_is_the_flipped_attention(seed, n, height, width, padding, axes, training):
    """Flipping the view up-down, left-right or both flips the log attention the same way, in training (batch
    statistics) and in the fused inference path, single rows and columns included."""
    network = symmetric_network(seed, padding)
    view = views(seed, n, height, width)
    run = (lambda v: network.forward_view(v, training=True)) if training else network.infer_view
    flipped = run(np.ascontiguousarray(np.flip(view, axes)))
    np.testing.assert_allclose(flipped, np.flip(run(view), [axis for axis in axes]), rtol=0, atol=1e-12)


def test_free_kernels_do_not_commute_with_flips():
    """The property is the symmetry's: the same network drawn freely attends to a flipped view differently."""
    network = AttentionNetwork(1, rng=np.random.default_rng(0), dtype=np.float64, padding="reflect")
    view = views(0, 1, 9, 11)
    assert np.abs(network.infer_view(view[:, ::-1].copy()) - network.infer_view(view)[:, ::-1]).max() > 1e-3


@settings(max_examples=15, deadline=None)
@given(seeds, st.integers(3, 8), st.integers(3, 8))
def test_the_gradient_is_the_loss_derivative_along_symmetric_kernels(seed, height, width):
    """backward's kernel gradients are mirror-symmetric, and along any symmetric direction d of every kernel at
    once the central difference of the loss <g, log a> equals sum <grad, d> (float64)."""
    network = symmetric_network(seed)
    view = views(seed, 2, height, width)
    g = np.random.default_rng(seed + 2).standard_normal((2, height, width))
    assume(clear_of_kinks(network, view, margin=1e-4))  # central differences step over no leaky ReLU's kink

    def loss():
        return float(np.sum(g * network.forward_view(view, training=True)))

    loss()
    network.zero_grads()
    network.backward(g)
    weights = kernels(network)
    grads = [layer.grads["weight"].copy() for layer in network.layers
             if isinstance(layer, nn.Conv2d) and layer.kernel_size == (3, 3)]
    for grad in grads:
        np.testing.assert_array_equal(grad, mirror_symmetric(grad))
    rng = np.random.default_rng(seed + 3)
    directions = [mirror_symmetric(rng.standard_normal(w.shape)) for w in weights]
    eps = 1e-6
    for w, d in zip(weights, directions):
        w += eps * d
    up = loss()
    for w, d in zip(weights, directions):
        w -= 2 * eps * d
    down = loss()
    for w, d in zip(weights, directions):
        w += eps * d
    expected = sum(float(np.sum(grad * d)) for grad, d in zip(grads, directions))
    assert (up - down) / (2 * eps) == pytest.approx(expected, rel=1e-5, abs=1e-7)


def test_training_keeps_the_kernels_mirror_symmetric():
    """Drawn symmetric, they stay exactly so through Adam's steps (its updates are elementwise)."""
    model = AttentionSamplingModel(3, scale=4, patch_size=8, n_patches=3, seed=0, attention_padding="reflect",
                                   attention_symmetry="flips")
    rng = np.random.default_rng(0)
    images = rng.random((2, 32, 40, 3), dtype=np.float32)
    optimizer = nn.Adam(1e-2)
    before = [w.copy() for w in kernels(model.attention)]
    for _ in range(3):
        train_step(model, optimizer, images, np.array([0, 2]), rng, replicas=2, entropy_weight=0.01)
    for old, weight in zip(before, kernels(model.attention)):
        assert np.abs(weight - old).max() > 0
        np.testing.assert_array_equal(weight, mirror_symmetric(weight))


def test_an_unknown_symmetry_is_refused():
    with pytest.raises(ValueError, match="symmetry"):
        AttentionNetwork(1, symmetry="rotations")
