"""The Numba kernels behind the pools, batch norm and in-place leaky ReLU, against plain NumPy.

Each reference is the textbook NumPy expression the kernel replaces (a reshape-mean, argmax, the
batch-norm formulas with full-size temporaries), in float64; the kernels run in float32 and float64.
The layer options that skip work (Conv2d(input_gradient=False), LeakyReLU(inplace=True)) are checked to
give the same numbers as the plain layers, and their gradients against finite differences.
"""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import nn
from nn import AvgPool2d, BatchNorm2d, Conv2d, GlobalMaxPool2d, LeakyReLU, Sequential
from nn.batchnorm import channel_moments
from nn.pooling import first_argmax
from tests.gradcheck import assert_gradients_close, check_layer_gradients, numerical_gradient
from tests.strategies import (away_from_zero, conv_cases, distinct_values, float_dtypes, image_shapes,
                              negative_slopes, normal_array, seeds)

TOLERANCE = {np.float32: dict(rtol=1e-5, atol=1e-5), np.float64: dict(rtol=1e-12, atol=1e-12)}


@st.composite
def pooled_shapes(draw):
    """(factor, (N, H, W, C)) with any remainder rows and columns, C up to 8."""
    factor = draw(st.integers(1, 5))
    shape = (draw(st.integers(1, 3)), draw(st.integers(factor, 4 * factor + 3)),
             draw(st.integers(factor, 4 * factor + 3)), draw(st.integers(1, 8)))
    return factor, shape


@settings(max_examples=40)
@given(case=pooled_shapes(), seed=seeds, dtype=float_dtypes)
def test_average_pool_kernels_match_numpy(case, seed, dtype):
    """Forward: the reshape-mean over whole blocks; backward: g / f^2 broadcast over them, zeros beyond."""
    factor, (n, h, w, c) = case
    x = normal_array(seed, (n, h, w, c), dtype=dtype)
    ho, wo = h // factor, w // factor
    expected = x[:, :ho * factor, :wo * factor].astype(np.float64).reshape(n, ho, factor, wo, factor, c).mean(
        axis=(2, 4))
    layer = AvgPool2d(factor)
    y = layer.forward(x)
    assert y.dtype == dtype
    np.testing.assert_allclose(y, expected, **TOLERANCE[dtype])

    grad_out = normal_array(seed + 1, y.shape, dtype=dtype)
    expected_grad = np.zeros((n, h, w, c))
    expected_grad[:, :ho * factor, :wo * factor] = np.repeat(np.repeat(grad_out / factor**2, factor, 1), factor, 2)
    grad_in = layer.backward(grad_out)
    assert grad_in.dtype == dtype
    np.testing.assert_allclose(grad_in, expected_grad, **TOLERANCE[dtype])


@settings(max_examples=40)
@given(shape=image_shapes(max_side=7), seed=seeds, dtype=float_dtypes, ties=st.booleans())
def test_global_max_pool_kernel_matches_numpy_argmax(shape, seed, dtype, ties):
    """Maximum and first argmax per (image, channel), as x.max and np.argmax give, ties included."""
    n, h, w, c = shape
    x = normal_array(seed, shape, dtype=dtype)
    if ties:  # few distinct values: the first of several maxima must win
        x = np.round(x).astype(dtype)
    layer = GlobalMaxPool2d()
    maxima = layer.forward(x)
    np.testing.assert_array_equal(maxima, x.max(axis=(1, 2)))
    argmax = first_argmax(x.reshape(n, h * w, c), maxima)
    np.testing.assert_array_equal(argmax, x.reshape(n, h * w, c).argmax(axis=1))
    # The gradient lands on exactly those positions, and nowhere else.
    grad_out = np.arange(1, n * c + 1, dtype=dtype).reshape(n, c)
    expected = np.zeros((n, h * w, c), dtype=dtype)
    np.put_along_axis(expected, argmax[:, None, :], grad_out[:, None, :], axis=1)
    np.testing.assert_array_equal(layer.backward(grad_out), expected.reshape(shape))


@settings(max_examples=40)
@given(shape=image_shapes(max_side=6, min_positions=2), seed=seeds, offset=st.sampled_from([0.0, 1e3]))
def test_channel_moments_match_numpy_mean_and_var(shape, seed, offset):
    """Two float64 passes give the mean and biased variance of np.mean / np.var, even far from zero."""
    x = normal_array(seed, shape) + offset
    mean, var = channel_moments(x.reshape(-1, shape[-1]))
    np.testing.assert_allclose(mean, x.mean(axis=(0, 1, 2)), rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(var, x.var(axis=(0, 1, 2)), rtol=1e-10, atol=1e-13)


def reference_batchnorm(x, grad_out, gamma, beta, mean, var, eps, training):
    """The layer's formulas with NumPy temporaries (the implementation the kernels replace), float64."""
    x, grad_out = x.astype(np.float64), grad_out.astype(np.float64)
    inv_std = 1.0 / np.sqrt(var + eps)
    x_hat = (x - mean) * inv_std
    y = x_hat * gamma + beta
    grad_gamma, grad_beta = (grad_out * x_hat).sum(axis=(0, 1, 2)), grad_out.sum(axis=(0, 1, 2))
    g_hat = grad_out * gamma * inv_std
    if training:
        m = x.size // x.shape[-1]
        g_hat = g_hat - grad_beta * gamma * inv_std / m - x_hat * grad_gamma * gamma * inv_std / m
    return y, g_hat, grad_gamma, grad_beta


@settings(max_examples=40)
@given(shape=image_shapes(max_side=6, min_positions=2), seed=seeds, dtype=float_dtypes, training=st.booleans())
def test_batchnorm_kernels_match_numpy_formulas(shape, seed, dtype, training):
    """Output, dL/dx, dL/dgamma and dL/dbeta of the fused passes equal the NumPy formulas."""
    c = shape[-1]
    rng = np.random.default_rng(seed)
    layer = BatchNorm2d(c).astype(dtype)
    layer.params["gamma"][...] = rng.uniform(0.5, 2.0, c)
    layer.params["beta"][...] = rng.standard_normal(c)
    layer.buffers["running_var"][...] = rng.uniform(0.5, 2.0, c)
    running = {k: v.astype(np.float64) for k, v in layer.buffers.items()}
    x = (normal_array(seed + 1, shape) * 3 + 2).astype(dtype)
    grad_out = normal_array(seed + 2, shape, dtype=dtype)
    if training:
        mean, var = x.astype(np.float64).mean(axis=(0, 1, 2)), x.astype(np.float64).var(axis=(0, 1, 2))
    else:
        mean, var = running["running_mean"], running["running_var"]
    expected = reference_batchnorm(x, grad_out, layer.params["gamma"].astype(np.float64),
                                   layer.params["beta"].astype(np.float64), mean, var, layer.eps, training)
    y = layer.forward(x, training)
    grad_x = layer.backward(grad_out)
    assert y.dtype == grad_x.dtype == dtype
    # float32: relative to the size of the values (a dL/dx entry can be a near-cancelling difference).
    tolerance = TOLERANCE[dtype] if dtype == np.float64 else dict(rtol=1e-4, atol=1e-4 * (1 + np.abs(grad_out).max()))
    for name, actual, wanted in zip(["y", "dL/dx", "dL/dgamma", "dL/dbeta"],
                                    [y, grad_x, layer.grads["gamma"], layer.grads["beta"]], expected):
        np.testing.assert_allclose(actual, wanted, err_msg=name, **tolerance)


@settings(max_examples=30)
@given(shape=image_shapes(), seed=seeds, negative_slope=negative_slopes, dtype=float_dtypes)
def test_inplace_leaky_relu_matches_the_plain_layer(shape, seed, negative_slope, dtype):
    """inplace=True: the same output and dL/dx, written over the input and over the incoming gradient."""
    x = away_from_zero(seed, shape, dtype=dtype)
    grad_out = normal_array(seed + 1, shape, dtype=dtype)
    plain = LeakyReLU(negative_slope)
    y, grad_x = plain.forward(x), plain.backward(grad_out)
    inplace = LeakyReLU(negative_slope, inplace=True)
    x_inplace, grad_inplace = x.copy(), grad_out.copy()
    y_inplace = inplace.forward(x_inplace)
    assert y_inplace is x_inplace
    grad_x_inplace = inplace.backward(grad_inplace)
    assert grad_x_inplace is grad_inplace
    np.testing.assert_array_equal(y_inplace, y)
    np.testing.assert_array_equal(grad_x_inplace, grad_x)


@settings(max_examples=20)
@given(shape=image_shapes(), seed=seeds, negative_slope=negative_slopes)
def test_inplace_leaky_relu_gradient_matches_finite_differences(shape, seed, negative_slope):
    """Behind a conv (whose fresh output it may overwrite), the in-place layer's gradients are exact."""
    network = Sequential(Conv2d(shape[-1], 2, 3, rng=seed), LeakyReLU(negative_slope, inplace=True)).astype(
        np.float64)
    network[0].params["bias"][...] = normal_array(seed + 1, (2,))
    check_layer_gradients(network, normal_array(seed + 2, shape), seed=seed)


def test_inplace_leaky_relu_refuses_a_negative_slope():
    """With slope < 0 the output's sign no longer says where x > 0: refused when the layer is built."""
    with pytest.raises(ValueError, match="negative_slope"):
        LeakyReLU(-0.5, inplace=True)


def test_inplace_leaky_relu_leaves_a_read_only_input_alone():
    """An input it may not write (a read-only view) is not overwritten: it falls back to a fresh output."""
    x = np.array([[-1.0, 2.0]])
    x.flags.writeable = False
    y = LeakyReLU(0.1, inplace=True).forward(x)
    np.testing.assert_array_equal(x, [[-1.0, 2.0]])
    np.testing.assert_allclose(y, [[-0.1, 2.0]])


@settings(max_examples=30)
@given(case=conv_cases())
def test_conv_without_input_gradient_fills_the_same_parameter_gradients(case):
    """input_gradient=False: backward returns None, and dL/dw, dL/db are the full layer's, exact in float64."""
    x = normal_array(case.seed + 2, case.input_shape)
    full = Conv2d(case.in_channels, case.out_channels, case.kernel_size, case.padding, bias=case.bias,
                  rng=case.seed).astype(np.float64)
    first = Conv2d(case.in_channels, case.out_channels, case.kernel_size, case.padding, bias=case.bias,
                   rng=case.seed, input_gradient=False).astype(np.float64)
    grad_out = normal_array(case.seed + 3, (case.batch, *case.output_hw, case.out_channels))
    full.forward(x)
    full.backward(grad_out)
    first.forward(x)
    assert first.backward(grad_out) is None

    def loss():
        return float(np.sum(first.forward(x) * grad_out))

    for key, value in first.params.items():
        np.testing.assert_allclose(first.grads[key], full.grads[key], rtol=1e-12, atol=1e-12, err_msg=key)
        assert_gradients_close(first.grads[key], numerical_gradient(loss, value), name=key)


@settings(max_examples=30)
@given(case=conv_cases(), density=st.sampled_from([0.0, 0.02, 0.1, 0.5]))
def test_a_layer_without_input_gradient_goes_sparse_below_its_own_threshold(case, density):
    """Without dL/dx the dense path is the weight gradient alone, so the sparse one is taken only below
    SPARSE_FRACTION_WEIGHTS_ONLY of nonzero positions (not SPARSE_FRACTION); either way dL/dw and dL/db are
    the full layer's."""
    x = normal_array(case.seed + 2, case.input_shape)
    full = Conv2d(case.in_channels, case.out_channels, case.kernel_size, case.padding, bias=case.bias,
                  rng=case.seed).astype(np.float64)
    first = Conv2d(case.in_channels, case.out_channels, case.kernel_size, case.padding, bias=case.bias,
                   rng=case.seed, input_gradient=False).astype(np.float64)
    keep = np.random.default_rng(case.seed + 4).random((case.batch, *case.output_hw, 1)) < density
    grad_out = normal_array(case.seed + 3, (case.batch, *case.output_hw, case.out_channels)) * keep
    calls = []
    with pytest.MonkeyPatch.context() as patch:
        original = nn.conv.Conv2d._sparse_backward
        patch.setattr(nn.conv.Conv2d, "_sparse_backward", lambda self, *args: calls.append(1) or original(self, *args))
        full.forward(x)
        full.backward(grad_out.copy())
        first.forward(x)
        first.backward(grad_out.copy())
    nonzero = int(keep.sum())
    assert len(calls) == int(nonzero <= int(nn.conv.SPARSE_FRACTION * keep.size)) + int(
        nonzero <= int(nn.conv.SPARSE_FRACTION_WEIGHTS_ONLY * keep.size))
    for key in first.params:
        np.testing.assert_allclose(first.grads[key], full.grads[key], rtol=1e-12, atol=1e-12, err_msg=key)


@settings(max_examples=20)
@given(shape=image_shapes(), seed=seeds, c_out=st.integers(1, 3), dtype=float_dtypes)
def test_pointwise_conv_weight_gradient_is_x_transpose_g(shape, seed, c_out, dtype):
    """A 1x1 kernel's dL/dw (one matrix product) equals the sum over positions of x^T g."""
    layer = Conv2d(shape[-1], c_out, 1, rng=seed).astype(dtype)
    x = normal_array(seed + 1, shape, dtype=dtype)
    grad_out = normal_array(seed + 2, shape[:-1] + (c_out,), dtype=dtype)
    layer.forward(x)
    layer.backward(grad_out)
    expected = np.einsum("nhwi,nhwo->io", x.astype(np.float64), grad_out.astype(np.float64))[None, None]
    assert layer.grads["weight"].dtype == dtype
    np.testing.assert_allclose(layer.grads["weight"], expected, **TOLERANCE[dtype])


@settings(max_examples=15)
@given(seed=seeds, n=st.integers(1, 2), side=st.integers(3, 6))
def test_feature_network_parameter_gradients_match_finite_differences(seed, n, side):
    """The project's feature net (first conv without dL/dx, in-place leaky ReLUs) in float64."""
    from attention_sampling.models import FeatureNetwork

    network = FeatureNetwork(3, hidden=3, depth=2, rng=seed).astype(np.float64)
    rng = np.random.default_rng(seed)
    for key, value in network.params.items():
        if key.endswith("bias"):  # off the leaky ReLU's kink where the input is zero
            value[...] = rng.standard_normal(value.shape) * 0.1
    x = distinct_values(seed, (n, side, side, 3), spacing=0.01)
    projection = rng.standard_normal((n, 3))

    def loss():
        return float(np.sum(network.forward(x) * projection))

    network.forward(x)
    assert network.backward(projection.copy()) is None
    analytic = {k: v.copy() for k, v in network.grads.items()}
    for key, value in network.params.items():
        assert_gradients_close(analytic[key], numerical_gradient(loss, value), rtol=1e-5, atol=1e-8, name=key)
