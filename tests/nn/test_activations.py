"""LeakyReLU: forward definition and backward against finite differences."""
import numpy as np
from hypothesis import given, settings

from nn import LeakyReLU
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
