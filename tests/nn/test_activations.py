"""LeakyReLU: forward definition and backward against finite differences."""
import numpy as np
from hypothesis import given, settings

from nn import LeakyReLU
from nn.activations import (leaky_relu_backward_and_sum, leaky_relu_backward_at,
                            leaky_relu_backward_from_output)
from tests.gradcheck import check_layer_gradients
from tests.strategies import away_from_zero, image_shapes, leading_shapes, negative_slopes, seeds


@settings(max_examples=30)
@given(shape=image_shapes(max_side=4), seed=seeds, negative_slope=negative_slopes)
def test_gradient_matches_finite_differences(shape, seed, negative_slope):
    """dL/dx = g where x > 0 and slope * g elsewhere; inputs stay clear of the kink at 0."""
    x = away_from_zero(seed, shape)
    check_layer_gradients(LeakyReLU(negative_slope), x, seed=seed)


@settings(max_examples=30)
@given(shape=leading_shapes(max_dims=3), seed=seeds, negative_slope=negative_slopes)
def test_forward_is_identity_for_positive_and_scaled_for_negative(shape, seed, negative_slope):
    """y = x for x > 0 and slope * x otherwise, for any shape, keeping the dtype."""
    x = away_from_zero(seed, shape, dtype=np.float32)
    y = LeakyReLU(negative_slope).forward(x)
    assert y.dtype == np.float32
    np.testing.assert_array_equal(y[x > 0], x[x > 0])
    np.testing.assert_allclose(y[x < 0], negative_slope * x[x < 0], rtol=1e-6)


def test_gradient_at_zero_is_the_negative_slope():
    """x = 0 is not positive, so it takes the negative side's slope (the subgradient the code documents)."""
    layer = LeakyReLU(0.1)
    layer.forward(np.zeros(3))
    np.testing.assert_allclose(layer.backward(np.ones(3)), 0.1)


@settings(max_examples=30)
@given(shape=image_shapes(max_side=6), seed=seeds, negative_slope=negative_slopes)
def test_backward_and_sum_is_the_derivative_and_its_channel_sums(shape, seed, negative_slope):
    """leaky_relu_backward_and_sum = leaky_relu_backward_from_output, and its per-channel sums (float64)."""
    rng = np.random.default_rng(seed)
    output = rng.standard_normal(shape)
    output[rng.random(shape) < 0.2] = 0.0  # exactly at the kink: the slope applies
    grad = rng.standard_normal(shape)
    expected = leaky_relu_backward_from_output(grad.copy(), negative_slope, output)
    fused, sums = leaky_relu_backward_and_sum(grad.copy(), negative_slope, output)
    np.testing.assert_array_equal(fused, expected)
    np.testing.assert_allclose(sums, expected.reshape(-1, shape[-1]).sum(axis=0), rtol=1e-12, atol=1e-12)


@settings(max_examples=30)
@given(shape=image_shapes(max_side=6), seed=seeds, negative_slope=negative_slopes)
def test_backward_at_positions_is_the_derivative_on_those_rows(shape, seed, negative_slope):
    """leaky_relu_backward_at on rows at some positions = leaky_relu_backward_from_output on the map that is
    zero elsewhere, read at those positions."""
    rng = np.random.default_rng(seed)
    output = rng.standard_normal(shape)
    output[rng.random(shape) < 0.2] = 0.0
    channels = shape[-1]
    positions = np.flatnonzero(rng.random(output[..., 0].size) < 0.5)
    rows = rng.standard_normal((positions.size, channels))
    dense = np.zeros(shape)
    dense.reshape(-1, channels)[positions] = rows
    expected = leaky_relu_backward_from_output(dense, negative_slope, output).reshape(-1, channels)[positions]
    np.testing.assert_array_equal(leaky_relu_backward_at(rows, negative_slope, output, positions), expected)
