"""BatchNorm2d: gradients in training (batch-coupled) and eval mode; running statistics."""
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from nn import BatchNorm2d
from tests.gradcheck import check_layer_gradients
from tests.strategies import image_shapes, normal_array, seeds

momenta = st.sampled_from([0.1, 0.5, 1.0])


def make_batchnorm(channels, seed, momentum=0.1):
    """A float64 BatchNorm2d with random gamma, beta and running statistics (not the trivial 1, 0, 0, 1)."""
    layer = BatchNorm2d(channels, momentum=momentum).astype(np.float64)
    rng = np.random.default_rng(seed)
    layer.params["gamma"][...] = rng.uniform(0.5, 2.0, channels) * rng.choice([-1, 1], channels)
    layer.params["beta"][...] = rng.standard_normal(channels)
    layer.buffers["running_mean"][...] = rng.standard_normal(channels)
    layer.buffers["running_var"][...] = rng.uniform(0.5, 2.0, channels)
    return layer


@settings(max_examples=40)
@given(shape=image_shapes(max_side=4, min_positions=2), seed=seeds)
def test_training_gradients_match_finite_differences(shape, seed):
    """In training mode every output depends on the whole batch through mean and var; dL/dx includes that."""
    layer = make_batchnorm(shape[-1], seed)
    x = normal_array(seed + 1, shape) + normal_array(seed + 2, shape[-1:])
    check_layer_gradients(layer, x, training=True, seed=seed)


@settings(max_examples=25)
@given(shape=image_shapes(max_side=4), seed=seeds)
def test_eval_gradients_match_finite_differences(shape, seed):
    """In eval mode the running statistics are constants, so the layer is affine per channel."""
    layer = make_batchnorm(shape[-1], seed)
    x = normal_array(seed + 1, shape)
    check_layer_gradients(layer, x, training=False, seed=seed)


@settings(max_examples=25)
@given(shape=image_shapes(max_side=4), seed=seeds)
def test_eval_uses_running_statistics_and_leaves_them_alone(shape, seed):
    """Eval: y = gamma (x - running_mean) / sqrt(running_var + eps) + beta; the buffers do not move."""
    layer = make_batchnorm(shape[-1], seed)
    buffers = {k: v.copy() for k, v in layer.buffers.items()}
    x = normal_array(seed + 1, shape)
    y = layer.forward(x, training=False)
    expected = ((x - buffers["running_mean"]) / np.sqrt(buffers["running_var"] + layer.eps)
                * layer.params["gamma"] + layer.params["beta"])
    np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-12)
    for key, value in buffers.items():
        np.testing.assert_array_equal(layer.buffers[key], value, err_msg=key)


@settings(max_examples=25)
@given(shape=image_shapes(max_side=4, min_positions=2), seed=seeds)
def test_training_normalises_each_channel_with_batch_statistics(shape, seed):
    """Training: per channel, (y - beta) / gamma has mean 0 and (biased) variance var / (var + eps)."""
    layer = make_batchnorm(shape[-1], seed)
    x = normal_array(seed + 1, shape, scale=3.0) + 5.0
    y = layer.forward(x, training=True)
    x_hat = (y - layer.params["beta"]) / layer.params["gamma"]
    var = x.var(axis=(0, 1, 2))
    np.testing.assert_allclose(x_hat.mean(axis=(0, 1, 2)), 0.0, atol=1e-10)
    np.testing.assert_allclose(x_hat.var(axis=(0, 1, 2)), var / (var + layer.eps), rtol=1e-10)


@settings(max_examples=25)
@given(shape=image_shapes(max_side=4, min_positions=2), seed=seeds, momentum=momenta,
       steps=st.integers(1, 3))
def test_running_statistics_follow_momentum_and_unbiased_variance(shape, seed, momentum, steps):
    """running = (1 - momentum) running + momentum * batch statistic, the variance with ddof=1 (as PyTorch)."""
    layer = make_batchnorm(shape[-1], seed, momentum)
    running_mean = layer.buffers["running_mean"].copy()
    running_var = layer.buffers["running_var"].copy()
    for step in range(steps):
        x = normal_array(seed + 1 + step, shape, scale=2.0) + step
        layer.forward(x, training=True)
        running_mean = (1 - momentum) * running_mean + momentum * x.mean(axis=(0, 1, 2))
        running_var = (1 - momentum) * running_var + momentum * x.var(axis=(0, 1, 2), ddof=1)
    np.testing.assert_allclose(layer.buffers["running_mean"], running_mean, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(layer.buffers["running_var"], running_var, rtol=1e-10, atol=1e-12)


def test_float32_input_keeps_float32_buffers():
    """The float32 training path keeps output and running statistics in float32."""
    layer = BatchNorm2d(3)
    x = normal_array(0, (2, 4, 4, 3), dtype=np.float32)
    assert layer.forward(x, training=True).dtype == np.float32
    assert layer.buffers["running_mean"].dtype == np.float32
    assert layer.buffers["running_var"].dtype == np.float32
