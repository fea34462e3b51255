"""Softmax, LogSoftmax and their spatial versions: gradients, normalisation, stability at +-1e4."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nn import LogSoftmax, Softmax, SpatialLogSoftmax, SpatialSoftmax, log_softmax, softmax
from tests.gradcheck import check_layer_gradients
from tests.strategies import (batch_sizes, channel_counts, extreme_logits, feature_counts, float_dtypes,
                              leading_shapes, normal_array, scales, seeds, spatial_sizes)

SPATIAL_AXES = (1, 2)


@st.composite
def class_shapes(draw):
    """(..., K): classes on the last axis."""
    return (*draw(leading_shapes()), draw(feature_counts))


@st.composite
def spatial_shapes(draw):
    """(N, H, W) or (N, H, W, C): a distribution over the H x W positions (per channel)."""
    shape = (draw(batch_sizes), draw(spatial_sizes), draw(spatial_sizes))
    return shape + (draw(channel_counts),) if draw(st.booleans()) else shape


LAYERS = [
    pytest.param(Softmax, class_shapes(), -1, id="Softmax"),
    pytest.param(LogSoftmax, class_shapes(), -1, id="LogSoftmax"),
    pytest.param(SpatialSoftmax, spatial_shapes(), SPATIAL_AXES, id="SpatialSoftmax"),
    pytest.param(SpatialLogSoftmax, spatial_shapes(), SPATIAL_AXES, id="SpatialLogSoftmax"),
]
PROBABILITY_LAYERS = [LAYERS[0], LAYERS[2]]


@pytest.mark.parametrize("layer_class, shapes, axis", LAYERS)
@settings(max_examples=25)
@given(data=st.data())
def test_gradient_matches_finite_differences(layer_class, shapes, axis, data):
    """Softmax: dL/dx = y (g - sum(g y)); LogSoftmax: dL/dx = g - softmax(x) sum(g); sums over `axis`."""
    shape, seed, scale = data.draw(shapes), data.draw(seeds), data.draw(scales)
    check_layer_gradients(layer_class(), normal_array(seed, shape, scale), seed=seed)


@pytest.mark.parametrize("layer_class, shapes, axis", LAYERS)
@settings(max_examples=25)
@given(data=st.data())
def test_forward_matches_the_definition(layer_class, shapes, axis, data):
    """Softmax = exp(x) / sum exp(x) and LogSoftmax = its log, over the class axis or over H and W together."""
    x = normal_array(data.draw(seeds), data.draw(shapes), data.draw(scales))
    probabilities = np.exp(x) / np.sum(np.exp(x), axis=axis, keepdims=True)
    expected = np.log(probabilities) if "Log" in layer_class.__name__ else probabilities
    np.testing.assert_allclose(layer_class().forward(x), expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("layer_class, shapes, axis", LAYERS)
@settings(max_examples=25)
@given(data=st.data())
def test_extreme_logits_stay_finite(layer_class, shapes, axis, data):
    """Logits of +-1e4 (exp overflows) give finite outputs and finite input gradients, in float32 and float64."""
    dtype = data.draw(float_dtypes)
    x = data.draw(extreme_logits(shapes, dtype))
    layer = layer_class()
    y = layer.forward(x)
    grad_x = layer.backward(normal_array(data.draw(seeds), x.shape, dtype=dtype))
    assert y.dtype == dtype and grad_x.dtype == dtype
    assert np.all(np.isfinite(y)), "forward"
    assert np.all(np.isfinite(grad_x)), "backward"


@pytest.mark.parametrize("layer_class, shapes, axis", PROBABILITY_LAYERS)
@settings(max_examples=25)
@given(data=st.data())
def test_extreme_logits_give_a_distribution(layer_class, shapes, axis, data):
    """Softmax of logits up to +-1e4: entries in [0, 1] summing to 1 over `axis`."""
    dtype = data.draw(float_dtypes)
    y = layer_class().forward(data.draw(extreme_logits(shapes, dtype)))
    assert np.all((y >= 0) & (y <= 1))
    np.testing.assert_allclose(y.sum(axis=axis), 1.0, rtol=1e-5 if dtype == np.float32 else 1e-12)


@settings(max_examples=25)
@given(x=extreme_logits(class_shapes()))
def test_log_softmax_is_log_of_a_distribution_at_extremes(x):
    """log_softmax(x) <= 0 and logsumexp(log_softmax(x)) = 0 even where softmax(x) underflows to 0."""
    log_probabilities = log_softmax(x)
    assert np.all(log_probabilities <= 0)
    top = log_probabilities.max(axis=-1, keepdims=True)
    log_total = top[..., 0] + np.log(np.sum(np.exp(log_probabilities - top), axis=-1))
    np.testing.assert_allclose(log_total, 0.0, atol=1e-12)
    np.testing.assert_allclose(np.exp(log_probabilities), softmax(x), rtol=1e-12, atol=1e-300)


@settings(max_examples=25)
@given(data=st.data())
def test_masked_log_softmax_is_the_distribution_over_the_allowed_positions_and_its_gradient_matches(data):
    """mask=False positions: log-probability -inf, the rest log softmax over the allowed ones alone; the
    gradient (whatever reaches the masked outputs, even NaN, ignored) equals central differences in float64
    and is 0 at the masked inputs."""
    from tests.gradcheck import assert_gradients_close, numerical_gradient

    shape, seed, scale = data.draw(spatial_shapes()), data.draw(seeds), data.draw(scales)
    x = normal_array(seed, shape, scale)
    rng = np.random.default_rng(seed)
    mask = rng.random(shape) < 0.6
    flat = mask.reshape(shape[0], shape[1] * shape[2], -1)
    flat[:, 0] = True  # every distribution keeps a position
    layer = SpatialLogSoftmax()
    y = layer.forward(x, mask=mask)
    assert np.all(y[~mask] == -np.inf)
    np.testing.assert_allclose(np.exp(y).sum(axis=SPATIAL_AXES), 1.0, rtol=1e-12)
    np.testing.assert_allclose(y[mask], log_softmax(np.where(mask, x, -np.inf), SPATIAL_AXES)[mask], rtol=1e-12)
    projection = rng.standard_normal(shape)

    def loss():
        return float(np.sum(np.where(mask, SpatialLogSoftmax().forward(x, mask=mask) * projection, 0)))

    grad = layer.backward(np.where(mask, projection, np.nan))
    assert np.all(grad[~mask] == 0)
    assert_gradients_close(grad, numerical_gradient(loss, x), rtol=1e-5, atol=1e-7)
