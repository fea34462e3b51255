"""L2Normalize: unit vectors, finite at x = 0, backward against finite differences."""
import numpy as np
from hypothesis import given, settings

from nn import L2Normalize
from tests.gradcheck import check_layer_gradients
from tests.strategies import away_from_zero, feature_counts, float_dtypes, leading_shapes, normal_array, seeds


@settings(max_examples=30)
@given(leading=leading_shapes(), features=feature_counts, seed=seeds)
def test_gradient_matches_finite_differences(leading, features, seed):
    """dL/dx = (g - y (y . g)) / |x|: central differences agree away from x = 0."""
    x = away_from_zero(seed, (*leading, features))
    check_layer_gradients(L2Normalize(), x, seed=seed)


@settings(max_examples=30)
@given(leading=leading_shapes(), features=feature_counts, seed=seeds, dtype=float_dtypes)
def test_output_has_unit_norm_and_the_input_direction(leading, features, seed, dtype):
    """y = x / sqrt(|x|^2 + eps): norm 1 up to eps / |x|^2 (< 1e-9 here) and pointing along x."""
    x = away_from_zero(seed, (*leading, features), dtype=dtype)
    y = L2Normalize().forward(x)
    assert y.dtype == dtype
    tolerance = 1e-5 if dtype == np.float32 else 1e-9
    np.testing.assert_allclose(np.linalg.norm(y, axis=-1), 1.0, rtol=tolerance)
    np.testing.assert_allclose(y * np.linalg.norm(x, axis=-1, keepdims=True), x, rtol=tolerance, atol=tolerance)


@settings(max_examples=20)
@given(leading=leading_shapes(), features=feature_counts, seed=seeds, dtype=float_dtypes)
def test_zero_vector_gives_zero_output_and_finite_gradient(leading, features, seed, dtype):
    """At x = 0 the eps under the square root keeps y = 0 and dL/dx finite (no 0 / 0)."""
    layer = L2Normalize()
    x = np.zeros((*leading, features), dtype=dtype)
    y = layer.forward(x)
    np.testing.assert_array_equal(y, 0.0)
    grad_x = layer.backward(normal_array(seed, x.shape, dtype=dtype))
    assert np.all(np.isfinite(grad_x))
