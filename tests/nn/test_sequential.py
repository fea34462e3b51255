"""Sequential: the chain rule through several layers, and the flat '<index>.<name>' views."""
import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import nn.conv
from nn import (AvgPool2d, BatchNorm2d, Conv2d, Dense, GlobalAvgPool2d, GlobalMaxPool2d, L2Normalize,
                LeakyReLU, Sequential, SpatialLogSoftmax)
from tests.gradcheck import check_layer_gradients, clear_of_kinks
from tests.strategies import normal_array, seeds


def small_network(channels, hidden, classes, kernel_size, seed, head="avg"):
    """Conv -> BatchNorm -> LeakyReLU -> AvgPool -> Conv -> global pool -> Dense -> L2Normalize."""
    return Sequential(
        Conv2d(channels, hidden, kernel_size, "same", rng=seed),
        BatchNorm2d(hidden),
        LeakyReLU(0.1),
        AvgPool2d(2),
        Conv2d(hidden, hidden, 2, "valid", rng=seed + 1),
        GlobalAvgPool2d() if head == "avg" else GlobalMaxPool2d(),
        Dense(hidden, classes, rng=seed + 2),
        L2Normalize(),
    )


def randomise_parameters(network, seed):
    """Non-trivial values for every parameter (biases and batch-norm gamma/beta start at 0 and 1)."""
    rng = np.random.default_rng(seed)
    for value in network.params.values():
        value[...] = rng.uniform(0.5, 1.5, value.shape) * rng.choice([-1, 1], value.shape)


@settings(max_examples=20)
@given(batch=st.integers(1, 2), side=st.integers(4, 5), channels=st.integers(1, 2), hidden=st.integers(1, 3),
       classes=st.integers(2, 3), kernel_size=st.sampled_from([2, 3, (1, 3)]),
       head=st.sampled_from(["avg", "max"]), seed=seeds, training=st.booleans())
def test_gradients_match_finite_differences(batch, side, channels, hidden, classes, kernel_size, head, seed,
                                            training):
    """Input and every layer's parameter gradients of a whole network equal central differences."""
    network = small_network(channels, hidden, classes, kernel_size, seed, head).astype(np.float64)
    randomise_parameters(network, seed)
    x = normal_array(seed + 3, (batch, side, side, channels))
    check_layer_gradients(network, x, training=training, seed=seed)


def test_parameters_are_exposed_flat_with_layer_index():
    """params, grads and buffers are '<index>.<name>' views of the layers' own arrays (no copies)."""
    network = Sequential(Conv2d(1, 2, 3, rng=0), BatchNorm2d(2), LeakyReLU(), Dense(2, 3, rng=1))
    assert list(network.params) == ["0.weight", "0.bias", "1.gamma", "1.beta", "3.weight", "3.bias"]
    assert list(network.grads) == list(network.params)
    assert list(network.buffers) == ["1.running_mean", "1.running_var"]
    assert network.params["3.weight"] is network[3].params["weight"]
    assert network.buffers["1.running_var"] is network[1].buffers["running_var"]
    assert network.num_parameters() == 2 * 9 + 2 + 2 + 2 + 2 * 3 + 3
    assert len(network) == 4


def test_astype_and_zero_grads_reach_every_layer():
    """astype casts every layer's parameters and buffers; zero_grads clears every layer's gradients."""
    network = Sequential(Conv2d(1, 2, 3, rng=0), BatchNorm2d(2), Dense(2, 3, rng=1)).astype(np.float64)
    assert all(v.dtype == np.float64 for v in {**network.params, **network.buffers}.values())
    x = normal_array(0, (2, 4, 4, 1))
    network.backward(np.ones_like(network.forward(x)))
    assert any(np.any(g != 0) for g in network.grads.values())
    network.zero_grads()
    assert all(np.all(g == 0) and g.shape == network.params[k].shape for k, g in network.grads.items())


INFER_INPUT_HW = (6, 7)


@st.composite
def fusable_chains(draw):
    """A chain mixing every fusion case: Conv alone, Conv-BN, Conv-LeakyReLU, Conv-BN-LeakyReLU (in place
    or not, any slope), a BN or LeakyReLU with no Conv before it, and non-fusable layers between."""
    seed = draw(seeds)
    # Channel counts from a few values: each count compiles its own batch-norm and convolution kernels (about
    # 5 s a count and dtype); 1 and 3 are the template's edge and an odd count, 8 the model's, 9 one past a block.
    channels = draw(st.sampled_from([1, 3]))
    layers, c = [], channels
    height, width = INFER_INPUT_HW
    for index in range(draw(st.integers(1, 4))):
        if draw(st.booleans()):
            out, kernel = draw(st.sampled_from([1, 3, 8, 9])), draw(st.sampled_from([1, 2, 3]))
            # 'valid' only where the map keeps a row and a column: an empty map is an error (tested in
            # test_conv.py), not a chain to compare.
            padding = draw(st.sampled_from(["same", "valid"])) if min(height, width) >= kernel else "same"
            layers.append(Conv2d(c, out, kernel, padding, bias=draw(st.booleans()), rng=seed + index))
            if padding == "valid":
                height, width = height - kernel + 1, width - kernel + 1
            c = out
        if draw(st.booleans()):
            layers.append(BatchNorm2d(c))
        if draw(st.booleans()):
            slope = draw(st.sampled_from([0.0, 0.01, 0.3, -0.5]))
            layers.append(LeakyReLU(slope, inplace=slope >= 0 and draw(st.booleans())))
        if draw(st.booleans()):
            layers.append(AvgPool2d(1))
    layers.append(GlobalMaxPool2d())
    return Sequential(*layers), channels, seed


@settings(max_examples=60)
@given(chain=fusable_chains(), dtype=st.sampled_from([np.float64, np.float32]))
def test_infer_equals_forward_in_evaluation_mode(chain, dtype):
    """infer fuses Conv -> [BN] -> [LeakyReLU] into one kernel; it must give what the layers give one by
    one in evaluation mode, with the batch norms' running statistics (made non-trivial here)."""
    network, channels, seed = chain
    network.astype(dtype)
    randomise_parameters(network, seed)
    rng = np.random.default_rng(seed)
    for layer in network.layers:
        if isinstance(layer, BatchNorm2d):
            layer.buffers["running_mean"][...] = rng.standard_normal(layer.buffers["running_mean"].shape)
            layer.buffers["running_var"][...] = rng.uniform(0.1, 3.0, layer.buffers["running_var"].shape)
    x = normal_array(seed, (2, *INFER_INPUT_HW, channels), dtype=dtype)
    original = x.copy()
    expected = network.forward(x.copy(), training=False)
    result = network.infer(x)
    first = network.layers[0]
    if not (isinstance(first, LeakyReLU) and first.inplace):  # which overwrites its input, by design
        np.testing.assert_array_equal(x, original)
    assert result.dtype == dtype
    tolerance = 1e-12 if dtype == np.float64 else 2e-5
    np.testing.assert_allclose(result, expected, rtol=tolerance, atol=tolerance * np.abs(expected).max())


def test_a_chain_that_empties_the_map_raises_instead_of_returning_garbage():
    """Three 'valid' 3x3 convolutions on 6 x 7 leave 0 rows: both paths stop at the layer that empties it
    (a global max over no positions would otherwise return whatever memory held)."""
    network = Sequential(*[Conv2d(1, 1, 3, "valid", rng=i) for i in range(3)], GlobalMaxPool2d())
    x = normal_array(0, (2, 6, 7, 1))
    for run in (lambda: network.forward(x.copy(), training=False), lambda: network.infer(x.copy())):
        with pytest.raises(ValueError, match="gives a 0x1 output"):
            run()


def expected_fusions(layers):
    """{skipped layer: the layer it runs inside}, as the rule says: Conv2d or BatchNorm2d -> in-place
    LeakyReLU, and a Conv2d's -> GlobalMaxPool2d after that."""
    fusions, i = {}, 0
    while i < len(layers) - 1:
        layer, following = layers[i], layers[i + 1]
        if isinstance(layer, (Conv2d, BatchNorm2d)) and isinstance(following, LeakyReLU) and following.inplace:
            fusions[i + 1] = i
            span = 2
            if isinstance(layer, Conv2d) and i + 2 < len(layers) and isinstance(layers[i + 2], GlobalMaxPool2d):
                fusions[i + 2] = i
                span = 3
            i += span
        else:
            i += 1
    return fusions


@settings(max_examples=60)
@given(chain=fusable_chains(), threshold=st.sampled_from([0.0, 1.0]))
def test_training_fusions_equal_the_layers_one_by_one(chain, threshold):
    """forward/backward fuse each Conv2d or BatchNorm2d -> in-place LeakyReLU (the layer applies the activation
    as it stores its output and its derivative in backward, on the sparse path at the active rows only). They
    must give what the layers give called one by one, output, input gradient and every parameter gradient,
    through the dense (threshold 0) and the sparse (threshold 1) backward alike."""
    network, channels, seed = chain
    network.astype(np.float64)
    randomise_parameters(network, seed)
    x = normal_array(seed, (2, *INFER_INPUT_HW, channels))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(nn.conv, "SPARSE_FRACTION", threshold)
        one_by_one = x.copy()
        for layer in network.layers:
            one_by_one = layer.forward(one_by_one, training=True)
        grad = normal_array(seed + 1, one_by_one.shape)
        grad_one_by_one = grad.copy()
        for layer in reversed(network.layers):
            grad_one_by_one = layer.backward(grad_one_by_one)
        grads_one_by_one = {key: value.copy() for key, value in network.grads.items()}

        fused = network.forward(x.copy(), training=True)
        assert network.fused == expected_fusions(network.layers)
        grad_fused = network.backward(grad.copy())
    np.testing.assert_allclose(fused, one_by_one, rtol=1e-12, atol=1e-12)
    if grad_one_by_one is None:
        assert grad_fused is None
    else:
        np.testing.assert_allclose(grad_fused, grad_one_by_one, rtol=1e-10, atol=1e-12)
    for key, value in grads_one_by_one.items():
        np.testing.assert_allclose(network.grads[key], value, rtol=1e-10, atol=1e-12, err_msg=key)


@settings(max_examples=20)
@given(batch=st.integers(1, 2), side=st.integers(4, 6), channels=st.integers(1, 2), hidden=st.integers(1, 3),
       seed=seeds)
def test_gradients_through_fused_conv_and_leaky_relu_match_finite_differences(batch, side, channels, hidden, seed):
    """The feature network's pattern, [Conv2d, in-place LeakyReLU] x 2, global max pool, dense: fused in
    training, its gradients equal central differences (the in-place layer overwrites its input, so each
    evaluation gets a fresh copy)."""
    network = Sequential(Conv2d(channels, hidden, 3, rng=seed), LeakyReLU(0.1, inplace=True),
                         Conv2d(hidden, hidden, 3, rng=seed + 1), LeakyReLU(0.1, inplace=True),
                         GlobalMaxPool2d(), Dense(hidden, 2, rng=seed + 2)).astype(np.float64)
    randomise_parameters(network, seed)
    x = normal_array(seed + 3, (batch, side, side, channels))
    # Central differences are wrong across a kink: a draw that comes within 1e-4 of one is discarded.
    assume(clear_of_kinks(network, x, margin=1e-4))
    check_layer_gradients(network, x, seed=seed)
    assert network.fused == {1: 0, 3: 2, 4: 2}


@settings(max_examples=20)
@given(batch=st.integers(1, 2), side=st.integers(3, 5), channels=st.integers(1, 2), hidden=st.integers(1, 3),
       seed=seeds)
def test_gradients_through_fused_batch_norm_and_leaky_relu_match_finite_differences(batch, side, channels, hidden,
                                                                                   seed):
    """The attention network's pattern, [Conv2d, BatchNorm2d, in-place LeakyReLU] x 2, a 1x1 convolution and a
    log-softmax over the cells: each batch norm fused with its leaky ReLU in training (the derivative applied
    inside the batch norm's backward sums and input gradient), its gradients equal central differences."""
    network = Sequential(Conv2d(channels, hidden, 3, rng=seed), BatchNorm2d(hidden), LeakyReLU(0.1, inplace=True),
                         Conv2d(hidden, hidden, 3, rng=seed + 1), BatchNorm2d(hidden), LeakyReLU(0.1, inplace=True),
                         Conv2d(hidden, 1, 1, rng=seed + 2), SpatialLogSoftmax()).astype(np.float64)
    randomise_parameters(network, seed)
    x = normal_array(seed + 3, (batch, side, side, channels))
    assume(clear_of_kinks(network, x, margin=1e-4))
    check_layer_gradients(network, x, seed=seed)
    assert network.fused == {2: 1, 5: 4}


@settings(max_examples=40)
@given(batch=st.integers(1, 3), side=st.integers(2, 6), channels=st.integers(1, 4), out=st.integers(1, 18),
       kernel=st.sampled_from([1, 2, 3]), padding=st.sampled_from(["same", "valid"]),
       slope=st.sampled_from([0.0, 0.01, 0.3]), tie=st.booleans(), dtype=st.sampled_from([np.float64, np.float32]),
       seed=seeds)
def test_conv_leaky_relu_global_max_pool_fused_equals_the_layers_one_by_one(batch, side, channels, out, kernel,
                                                                          padding, slope, tie, dtype, seed):
    """Conv2d -> in-place LeakyReLU -> GlobalMaxPool2d runs as one convolution that keeps only the maxima and
    their first positions, and its backward starts from those. Output, dL/dx and the parameter gradients equal
    the three layers called one by one, ties included: with an image of ones and positive weights every
    position whose taps all fall inside the image gives the same maximum, and dL/dx shows which one the
    gradient went to (the first, as GlobalMaxPool2d sends it)."""
    assume(padding == "same" or side >= kernel)  # a valid convolution needs a kernel that fits
    network = Sequential(Conv2d(channels, out, kernel, padding, rng=seed), LeakyReLU(slope, inplace=True),
                         GlobalMaxPool2d()).astype(dtype)
    randomise_parameters(network, seed)
    x = normal_array(seed, (batch, side, side, channels)).astype(dtype)
    if tie:
        x[...] = 1
        np.abs(network.layers[0].params["weight"], out=network.layers[0].params["weight"])
    one_by_one = x.copy()
    for layer in network.layers:
        one_by_one = layer.forward(one_by_one, training=True)
    grad = normal_array(seed + 1, one_by_one.shape).astype(dtype)
    grad_one_by_one = grad.copy()
    for layer in reversed(network.layers):
        grad_one_by_one = layer.backward(grad_one_by_one)
    grads_one_by_one = {key: value.copy() for key, value in network.grads.items()}

    fused = network.forward(x.copy(), training=True)
    assert network.fused == {1: 0, 2: 0}
    grad_fused = network.backward(grad.copy())
    tolerance = 1e-10 if dtype == np.float64 else 1e-4
    np.testing.assert_array_equal(fused, one_by_one)
    np.testing.assert_allclose(grad_fused, grad_one_by_one, rtol=tolerance, atol=tolerance)
    for key, value in grads_one_by_one.items():
        np.testing.assert_allclose(network.grads[key], value, rtol=tolerance, atol=tolerance, err_msg=key)


@pytest.mark.parametrize("layers, owner, slope", [
    (lambda: [Conv2d(2, 3, 3, rng=1), LeakyReLU(0.1, inplace=True)], 0, None),
    (lambda: [Conv2d(2, 3, 3, rng=1), BatchNorm2d(3), LeakyReLU(0.1, inplace=True)], 1, None),
    (lambda: [Conv2d(2, 3, 3, rng=1), LeakyReLU(0.1, inplace=True), GlobalMaxPool2d()], 0, 0.1),
], ids=["conv-leaky", "batch-norm-leaky", "conv-leaky-max-pool"])
def test_a_layer_forward_between_a_fused_forward_and_its_backward_is_an_error(layers, owner, slope):
    """The layer's own forward undoes the fusion; Sequential.backward would otherwise skip the leaky ReLU's
    derivative (or the max pool's positions) and return a wrong gradient without a word. For the max pool
    the layer's own forward keeps a leaky ReLU, and still the maxima's positions are gone."""
    network = Sequential(*layers()).astype(np.float64)
    x = normal_array(0, (1, 5, 5, 2))
    grad = np.ones_like(network.forward(x.copy()))
    layer_input = x.copy() if owner == 0 else network.layers[0].forward(x.copy())
    network.layers[owner].forward(layer_input, negative_slope=slope)
    with pytest.raises(RuntimeError, match=f"layer {owner} ran forward on its own"):
        network.backward(grad.copy())
    network.forward(x.copy())
    assert network.backward(grad.copy()).shape == x.shape and network.fused == {}

@settings(max_examples=5, deadline=None)
@given(seed=seeds)
def test_a_sparse_gradient_passes_between_convolutions_as_rows(seed):
    """The feature network's gradient behind its global max pool is nonzero at a few positions, widened by each
    3x3 kernel below: Sequential hands it from convolution to convolution as a SparseGradient (rows at those
    positions, no map-sized array), and every gradient equals the dense backward's (float64)."""
    from attention_sampling.models import FeatureNetwork
    from nn.conv import SparseGradient

    x = normal_array(seed, (2, 50, 50, 3))  # 50 x 50: at most 16 x 25 positions reach the second layer
    grad = normal_array(seed + 1, (2, 3))
    results = []
    for threshold in (nn.conv.SPARSE_FRACTION, 0.0):  # 0: every backward dense
        network = FeatureNetwork(3, rng=seed).astype(np.float64)
        randomise_parameters(network, seed)
        received = []
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(nn.conv, "SPARSE_FRACTION", threshold)
            original = Conv2d.backward
            patch.setattr(Conv2d, "backward", lambda self, grad_out, keep_sparse=False:
                          received.append(type(grad_out)) or original(self, grad_out, keep_sparse))
            network.forward(x, training=True)
            network.backward(grad.copy())
        results.append(({k: v.copy() for k, v in network.grads.items()}, received))
    (sparse_grads, sparse_received), (dense_grads, _) = results
    # Backward order: the fused global max pool's conv gets dL/d(maxima), the three below it rows.
    assert sparse_received[1:] == [SparseGradient] * 3
    for key, value in dense_grads.items():
        np.testing.assert_allclose(sparse_grads[key], value, rtol=1e-10, atol=1e-12, err_msg=key)
