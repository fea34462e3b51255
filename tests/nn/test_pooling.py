"""AvgPool2d, GlobalMaxPool2d, GlobalAvgPool2d: forward definitions and backward against finite differences."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nn import AvgPool2d, GlobalAvgPool2d, GlobalMaxPool2d
from tests.gradcheck import check_layer_gradients
from tests.strategies import batch_sizes, channel_counts, distinct_values, image_shapes, normal_array, seeds


@st.composite
def pooling_cases(draw, remainder=None):
    """(factor, (N, H, W, C)) with H, W >= factor; `remainder=True` forces H % factor and W % factor != 0."""
    factor = draw(st.integers(2, 3) if remainder else st.integers(1, 3))
    def side():
        if remainder:
            return factor * draw(st.integers(1, 2)) + draw(st.integers(1, factor - 1))
        return draw(st.integers(factor, 2 * factor + 1))
    return factor, (draw(batch_sizes), side(), side(), draw(channel_counts))


def reference_average_pool(x, factor):
    """Mean of each whole factor x factor block, by loops; leftover rows and columns are ignored."""
    n, h, w, c = x.shape
    y = np.zeros((n, h // factor, w // factor, c))
    for p in range(h // factor):
        for q in range(w // factor):
            y[:, p, q, :] = x[:, p * factor:(p + 1) * factor, q * factor:(q + 1) * factor, :].mean(axis=(1, 2))
    return y


@settings(max_examples=30)
@given(case=pooling_cases(), seed=seeds)
def test_average_pool_gradient_matches_finite_differences(case, seed):
    """AvgPool2d: dL/dx spreads g / f^2 over each block, for any H, W (multiples of f or not)."""
    factor, shape = case
    check_layer_gradients(AvgPool2d(factor), normal_array(seed, shape), seed=seed)


@settings(max_examples=20)
@given(case=pooling_cases(remainder=True), seed=seeds)
def test_average_pool_gradient_with_leftover_rows_and_columns(case, seed):
    """H, W not multiples of f: the dropped rows and columns get exactly zero gradient, the rest is checked."""
    factor, shape = case
    layer = AvgPool2d(factor)
    x = normal_array(seed, shape)
    check_layer_gradients(layer, x, seed=seed)
    y = layer.forward(x)
    grad_x = layer.backward(np.ones_like(y))
    kept_h, kept_w = y.shape[1] * factor, y.shape[2] * factor
    assert np.all(grad_x[:, kept_h:, :, :] == 0) and np.all(grad_x[:, :, kept_w:, :] == 0)
    np.testing.assert_allclose(grad_x[:, :kept_h, :kept_w, :], 1.0 / factor**2)


@settings(max_examples=30)
@given(case=pooling_cases(), seed=seeds)
def test_average_pool_forward_matches_block_means(case, seed):
    """AvgPool2d: (N, H, W, C) -> (N, H // f, W // f, C), each the mean of its f x f block."""
    factor, shape = case
    x = normal_array(seed, shape)
    np.testing.assert_allclose(AvgPool2d(factor).forward(x), reference_average_pool(x, factor), rtol=1e-12)


def test_average_pool_rejects_factor_below_one():
    """A pooling factor of 0 is refused when the layer is built."""
    with pytest.raises(ValueError, match="factor"):
        AvgPool2d(0)


@settings(max_examples=30)
@given(shape=image_shapes(max_side=4), seed=seeds)
def test_global_max_pool_gradient_matches_finite_differences(shape, seed):
    """GlobalMaxPool2d: the gradient goes to the maximum only; distinct values keep the argmax stable."""
    check_layer_gradients(GlobalMaxPool2d(), distinct_values(seed, shape), seed=seed)


@settings(max_examples=30)
@given(shape=image_shapes(), seed=seeds)
def test_global_max_pool_forward_is_spatial_maximum(shape, seed):
    """GlobalMaxPool2d: (N, H, W, C) -> (N, C), the maximum over H and W."""
    x = normal_array(seed, shape)
    np.testing.assert_array_equal(GlobalMaxPool2d().forward(x), x.max(axis=(1, 2)))


def test_global_max_pool_tie_sends_gradient_to_first_argmax():
    """With ties the whole gradient goes to the first maximal position (row-major), as documented."""
    layer = GlobalMaxPool2d()
    x = np.zeros((1, 2, 2, 1))
    layer.forward(x)
    grad_x = layer.backward(np.array([[3.0]]))
    np.testing.assert_array_equal(grad_x[0, :, :, 0], [[3.0, 0.0], [0.0, 0.0]])


@settings(max_examples=30)
@given(shape=image_shapes(max_side=4), seed=seeds)
def test_global_average_pool_gradient_matches_finite_differences(shape, seed):
    """GlobalAvgPool2d: dL/dx = g / (H W) at every position."""
    check_layer_gradients(GlobalAvgPool2d(), normal_array(seed, shape), seed=seed)


@settings(max_examples=30)
@given(shape=image_shapes(), seed=seeds)
def test_global_average_pool_forward_is_spatial_mean(shape, seed):
    """GlobalAvgPool2d: (N, H, W, C) -> (N, C), the mean over H and W."""
    x = normal_array(seed, shape)
    np.testing.assert_allclose(GlobalAvgPool2d().forward(x), x.mean(axis=(1, 2)), rtol=1e-12)


@pytest.mark.parametrize("layer, shape", [(AvgPool2d(3), (1, 2, 5, 1)), (AvgPool2d(2), (1, 4, 1, 2)),
                                          (GlobalMaxPool2d(), (2, 0, 3, 1)), (GlobalAvgPool2d(), (2, 3, 0, 1))])
def test_an_empty_map_in_or_out_is_a_clear_error(layer, shape):
    with pytest.raises(ValueError, match="a spatial map needs at least one row and one column"):
        layer.forward(np.zeros(shape))
    with pytest.raises(ValueError, match="a spatial map needs at least one row and one column"):
        layer.infer(np.zeros(shape))
