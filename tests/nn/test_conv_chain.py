"""The fused inference of a convolution chain ending in a global max pool (nn/conv_chain.py) against the plain
padded sums layer by layer, and nn.Sequential.infer with it against infer layer by layer."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from attention_sampling.models import FeatureNetwork
from nn import conv_chain, conv_kernels, winograd
from nn import sequential

from ..strategies import float_dtypes, seeds
from .test_conv_kernels import reference_correlate, tolerance


def leaky(values, slope):
    return values if slope is None else np.where(values > 0, values, values * slope)


def reference_chain_max(x, weights, biases, slopes):
    """Each 3x3 "same" layer as a padded sum in float64, its leaky ReLU, then the maximum over positions."""
    h = x
    for weight, bias, slope in zip(weights, biases, slopes):
        h = leaky(reference_correlate(h, weight, bias, 1, 1, x.shape[1], x.shape[2]), slope)
    return h.max(axis=(1, 2))


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 5), st.integers(1, 9), st.integers(1, 9), st.integers(1, 4), st.sampled_from(winograd.CHANNELS),
       st.integers(2, 4), seeds, float_dtypes, st.sampled_from([None, 0.0, 0.01]))
def test_chain_max_matches_the_padded_sums(n, height, width, c_in, channels, depth, seed, dtype, slope):
    """Odd and even sizes, a single pixel, fewer images than threads, two to four layers; and bit for bit the
    kernels one layer at a time."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, height, width, c_in)).astype(dtype)
    weights = [rng.standard_normal((3, 3, c_in, channels)).astype(dtype) / 3]
    weights += [rng.standard_normal((3, 3, channels, channels)).astype(dtype) / channels for _ in range(depth - 1)]
    biases = [rng.standard_normal(channels).astype(dtype) for _ in range(depth)]
    slopes = [slope] * depth
    out = conv_chain.chain_max(x, weights, biases, slopes)
    expected = reference_chain_max(x, weights, biases, slopes)
    assert out.dtype == dtype and out.shape == (n, channels)
    # Winograd's transforms round a few more times than the direct sum (tests/nn/test_winograd.py), per layer.
    np.testing.assert_allclose(out, expected, rtol=0, atol=tolerance(dtype, 9 * channels) * 10 * depth)
    h = conv_kernels.correlate(x, weights[0], biases[0], 1, 1, height, width, slope)
    for weight, bias in zip(weights[1:-1], biases[1:-1]):
        h = conv_kernels.correlate(h, weight, bias, 1, 1, height, width, slope)
    np.testing.assert_array_equal(out, conv_kernels.correlate_max(h, weights[-1], biases[-1], 1, 1, height, width,
                                                                  slope)[0])


@pytest.mark.parametrize("x_shape, weight_shapes, expected", [
    ((2, 5, 6, 3), [(3, 3, 3, 16), (3, 3, 16, 16)], True),
    ((2, 5, 6, 3), [(3, 3, 3, 8), (3, 3, 8, 8), (3, 3, 8, 8)], True),
    ((2, 5, 6, 3), [(3, 3, 3, 16)], False),                  # one layer: correlate_max alone
    ((2, 5, 6, 3), [(3, 3, 3, 12), (3, 3, 12, 12)], False),  # no Winograd kernel for 12 channels
    ((2, 5, 6, 3), [(3, 3, 3, 16), (3, 3, 16, 8)], False),   # unequal channel counts
    ((2, 5, 6, 3), [(5, 5, 3, 16), (3, 3, 16, 16)], False),  # 5x5
    ((2, 5, 6, 4), [(3, 3, 3, 16), (3, 3, 16, 16)], False),  # an input that does not match the weight
    ((1, 5, 6, 3), [(3, 3, 3, 16), (3, 3, 16, 16)], False),  # fewer images than threads
    ((2, 260, 347, 3), [(3, 3, 3, 16), (3, 3, 16, 16)], False),  # maps larger than a cache
])
def test_chain_applies_to_3x3_chains_of_winograd_channels_only(x_shape, weight_shapes, expected, monkeypatch):
    monkeypatch.setattr(conv_chain.numba, "get_num_threads", lambda: 2)
    weights = [np.zeros(shape) for shape in weight_shapes]
    assert conv_chain.applies(x_shape, weights) is expected
    monkeypatch.setattr(conv_chain.numba, "get_num_threads", lambda: 1)  # one thread: the layer path
    assert not conv_chain.applies(x_shape, weights)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_feature_network_infer_matches_infer_layer_by_layer(dtype, monkeypatch):
    """The feature network of the model, fused chain and then dense and L2, bit for bit the same infer with
    every convolution run alone; and forward(training=False) up to rounding."""
    network = FeatureNetwork(3, rng=0, dtype=dtype)
    rng = np.random.default_rng(1)
    for layer in network.layers:  # biases away from zero: the leaky ReLUs' both sides are used
        if "bias" in layer.params:
            layer.params["bias"][...] = rng.standard_normal(layer.params["bias"].shape) * 0.1
    patches = rng.random((7, 50, 50, 3)).astype(dtype)
    monkeypatch.setattr(sequential, "FUSED_CHAIN", True)
    monkeypatch.setattr(conv_chain.numba, "get_num_threads", lambda: 2)
    calls = []
    original = conv_chain.chain_max
    monkeypatch.setattr(conv_chain, "chain_max", lambda *args: calls.append(1) or original(*args))
    fused = network.infer(patches)
    assert calls  # the chain computed it
    monkeypatch.setattr(sequential, "FUSED_CHAIN", False)
    layer_by_layer = network.infer(patches)
    forward = network.forward(patches, training=False)
    np.testing.assert_array_equal(fused, layer_by_layer)
    np.testing.assert_allclose(fused, forward, rtol=0, atol=1e-12 if dtype == np.float64 else 2e-5)


def test_attention_network_infer_does_not_take_the_chain(monkeypatch):
    """No global max pool there: the attention network's infer never calls the chain."""
    from attention_sampling.models import AttentionNetwork

    monkeypatch.setattr(sequential, "FUSED_CHAIN", True)
    monkeypatch.setattr(conv_chain, "chain_max", lambda *args: pytest.fail("chain taken"))
    network = AttentionNetwork(4, rng=0)
    network.infer(np.random.default_rng(0).random((1, 40, 48, 3), dtype=np.float32))
