"""The Winograd F(2x2, 3x3) correlation (nn/winograd.py) against the plain padded sum and the direct kernel,
and Conv2d's gradients when its forward pass takes it."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nn import Conv2d, conv_kernels, winograd

from ..gradcheck import check_layer_gradients
from ..strategies import float_dtypes, normal_array, seeds
from .test_conv_kernels import reference_correlate, tolerance


original = winograd.correlate


def leaky(values, slope):
    return values if slope is None else np.where(values > 0, values, values * slope)


@settings(max_examples=40)
@given(st.integers(1, 3), st.integers(1, 9), st.integers(1, 11), st.sampled_from(winograd.CHANNELS), seeds,
       float_dtypes, st.sampled_from([None, 0.0, 0.01]))
def test_winograd_matches_the_padded_sum_and_the_direct_kernel(n, height, width, channels, seed, dtype, slope):
    """Odd and even sizes, a single pixel, fewer tiles than a task takes: every output of the 2 x 2 tiles that
    lies inside the image, zero padding outside, bias and leaky ReLU as the direct kernel applies them."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, height, width, channels)).astype(dtype)
    weight = rng.standard_normal((3, 3, channels, channels)).astype(dtype)
    bias = rng.standard_normal(channels).astype(dtype)
    assert winograd.applies(x.shape, weight.shape, 1, 1, height, width)
    calls = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(winograd, "correlate", lambda *args: calls.append(1) or original(*args))
        out = conv_kernels.correlate(x, weight, bias, 1, 1, height, width, slope)
    assert calls  # the Winograd kernel computed it
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(conv_kernels, "WINOGRAD", False)
        direct = conv_kernels.correlate(x, weight, bias, 1, 1, height, width, slope)
    expected = leaky(reference_correlate(x, weight, bias, 1, 1, height, width), slope)
    assert out.dtype == dtype and out.shape == expected.shape
    # The transforms add and subtract up to 9 input values before the products: a few more roundings than the
    # direct sum, well inside the tolerance of its 9 x C terms.
    atol = tolerance(dtype, 9 * channels) * 10
    np.testing.assert_allclose(out, expected, rtol=0, atol=atol)
    np.testing.assert_allclose(out, direct, rtol=0, atol=atol)


@settings(max_examples=40)
@given(st.sampled_from(["reflect", "edge"]), st.integers(1, 2), st.integers(1, 9), st.integers(1, 11),
       st.sampled_from(winograd.CHANNELS), seeds, float_dtypes, st.sampled_from([None, 0.01]))
def test_winograd_reads_a_mirrored_or_repeated_border_as_numpy_pads_it(border, n, height, width, channels, seed,
                                                                       dtype, slope):
    """border "reflect" / "edge": the tiles that reach past the image read it mirrored or repeated by one pixel,
    the same map as np.pad's padded input under a "valid" correlation, by the plain sum and the direct kernel;
    a single row or column, odd sizes (a last tile half outside) included."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, height, width, channels)).astype(dtype)
    weight = rng.standard_normal((3, 3, channels, channels)).astype(dtype)
    bias = rng.standard_normal(channels).astype(dtype)
    assert conv_kernels.border_applies(x.shape, weight.shape)
    out = conv_kernels.correlate(x, weight, bias, 1, 1, height, width, slope, border=border)
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode=border)
    expected = leaky(reference_correlate(padded, weight, bias, 0, 0, height, width), slope)
    direct = conv_kernels.correlate(padded, weight, bias, 0, 0, height, width, slope)
    atol = tolerance(dtype, 9 * channels) * 10
    assert out.dtype == dtype and out.shape == expected.shape
    np.testing.assert_allclose(out, expected, rtol=0, atol=atol)
    np.testing.assert_allclose(out, direct, rtol=0, atol=atol)


def test_a_border_other_than_zeros_needs_the_winograd_kernel():
    """The direct kernel reads zeros outside the image only: a mirrored border there is refused, not ignored."""
    x, weight = np.ones((1, 4, 4, 3)), np.ones((3, 3, 3, 8))
    assert not conv_kernels.border_applies(x.shape, weight.shape)
    with pytest.raises(ValueError, match="border 'reflect'"):
        conv_kernels.correlate(x, weight, np.zeros(8), 1, 1, 4, 4, border="reflect")


@settings(max_examples=10)
@given(st.sampled_from(["reflect", "edge"]), st.integers(1, 2), st.integers(1, 5), st.integers(1, 6),
       st.sampled_from(winograd.CHANNELS), seeds)
def test_a_reflect_or_edge_conv2d_takes_winograd_in_forward_and_infer(padding, n, height, width, channels, seed):
    """Conv2d with "reflect" / "edge" padding, 3x3 and C_in = C_out in CHANNELS: forward and the fused infer
    (batch-norm affine, leaky ReLU) go through the Winograd kernel and equal the padded copy's direct "valid"
    correlation; the backward, on the padded input, still agrees with central differences in float64."""
    layer = Conv2d(channels, channels, 3, padding=padding, rng=seed).astype(np.float64)
    layer.params["bias"][...] = normal_array(seed + 1, (channels,))
    x = normal_array(seed + 2, (n, height, width, channels))
    scale, shift = normal_array(seed + 3, (channels,)), normal_array(seed + 4, (channels,))
    calls = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(winograd, "correlate", lambda *args: calls.append(1) or original(*args))
        forward, fused = layer.forward(x, training=False, negative_slope=0.01), layer.infer(x, scale, shift, 0.01)
    assert len(calls) == 2
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(conv_kernels, "WINOGRAD", False)
        direct, direct_fused = layer.forward(x, training=False, negative_slope=0.01), layer.infer(x, scale, shift, 0.01)
    np.testing.assert_allclose(forward, direct, rtol=0, atol=1e-12)
    np.testing.assert_allclose(fused, direct_fused, rtol=0, atol=1e-12)
    check_layer_gradients(layer, x, seed=seed % 1000)


@pytest.mark.parametrize("x_shape, weight_shape, top, left, out_hw, expected", [
    ((2, 5, 6, 16), (3, 3, 16, 16), 1, 1, (5, 6), True),
    ((2, 5, 6, 8), (3, 3, 8, 8), 1, 1, (5, 6), True),
    ((2, 5, 6, 3), (3, 3, 3, 16), 1, 1, (5, 6), False),   # the first layer: 3 channels in
    ((2, 5, 6, 16), (3, 3, 16, 8), 1, 1, (5, 6), False),  # unequal channel counts
    ((2, 5, 6, 16), (3, 3, 16, 16), 0, 0, (3, 4), False),  # "valid"
    ((2, 5, 6, 16), (5, 5, 16, 16), 2, 2, (5, 6), False),  # 5x5
    ((2, 5, 6, 8), (1, 1, 8, 8), 0, 0, (5, 6), False),    # 1x1
    ((2, 5, 6, 8), (3, 3, 16, 16), 1, 1, (5, 6), False),  # an input that does not match the weight
])
def test_winograd_applies_to_3x3_same_correlations_with_equal_channels_only(x_shape, weight_shape, top, left,
                                                                            out_hw, expected):
    assert winograd.applies(x_shape, weight_shape, top, left, *out_hw) is expected


@settings(max_examples=10)
@given(st.integers(1, 2), st.integers(1, 5), st.integers(1, 6), st.sampled_from(winograd.CHANNELS), seeds)
def test_conv2d_gradients_with_the_winograd_forward(n, height, width, channels, seed):
    """The layer's forward takes the Winograd path (and so does its dL/dx, the same correlation with the kernel
    flipped; dL/dw is the direct kernel's): the same function as the direct one, so central differences in
    float64 agree with the backward."""
    layer = Conv2d(channels, channels, 3, rng=seed).astype(np.float64)
    layer.params["bias"][...] = normal_array(seed + 1, (channels,))
    x = normal_array(seed + 2, (n, height, width, channels))
    check_layer_gradients(layer, x, seed=seed % 1000)
